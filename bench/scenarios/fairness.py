"""(17) Fairness between tenants (issue 15), and what the fair, bounded claim costs.

(17a) Tenant A has `fair_n` marketing rows due at T, tenant B 100 transactional rows due at T and
     100 at T+2 s: B's p99 lateness (target < 250 ms) and A's throughput against (17b), the same
     run without B (target: within 10 %).
(17c) EXPLAIN (ANALYZE, BUFFERS) of the claim at 1,000,000 due rows: one tenant; over 1,000
     tenants; and 100 due rows beside 1,000,000 future ones (the hot path: only one tenant due),
     each against the claim before issue 15 (BASELINE_CLAIM), custom and generic plans, and the
     claim's round trip as the daemon makes it (a prepared statement).
(17d) The daemon's throughput on the hot path (one tenant, `deliver_n` due rows), this code against
     the code of BASELINE_REVISION, in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import asyncpg

from bench import ROOT
from bench.harness import (
    PAYLOAD_SQL,
    TENANT,
    Bench,
    Databases,
    bench_daemon,
    received_at_least,
    tenant_database,
    wait_for_quiet,
    wait_idle,
    wait_until,
)
from bench.report import fmt_rate, percentile, say, section
from bench.scenarios.claim_cost import explain_rolled_back
from reminderd.queries import QUERIES, load
from reminderd.store import DAEMON_SESSION
from reminderd.testing import add_tenant, daemon_env, running_daemon

# main before issue 15 (with the write path of issue 13 and the audiences of issue 14): its claim
# and its daemon are the baseline of (17c) and (17d).
BASELINE_REVISION = "95afa84"
CLAIM_ARGS = (86400.0, 100, 300.0, "send", 1800.0, 64, None, None)  # ... $7 no scan cursor, $8 no daemon
BASELINE_CLAIM_ARGS = (*CLAIM_ARGS[:5], None)  # its $6: no daemon


def baseline_claim() -> str:  # a fast git call, before any timing
    text = subprocess.run(
        ["git", "show", f"{BASELINE_REVISION}:reminderd/sql/queries.sql"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return load(text)["claim"]


async def run(bench: Bench, dbs: Databases, parts: str = "abcd") -> None:
    if "a" in parts:
        await fairness(bench, dbs)
    if "c" in parts:
        await claim_plans(bench, dbs)
    if "d" in parts:
        await hot_path_throughput(bench, dbs)


# (17a), (17b) ---------------------------------------------------------------------------------------


async def fairness(bench: Bench, dbs: Databases) -> None:
    n = bench.sizes.fair_n
    section(f"(17a/b) fairness: A has {n:,} marketing rows due at T; B 100 transactional at T and 100 at T+2 s")
    alone = await wave(bench, dbs, n, with_b=False)
    shared = await wave(bench, dbs, n, with_b=True)
    ratio = shared.a_rate / alone.a_rate
    assert shared.b_lateness_s is not None
    p99_ms = 1000 * percentile(shared.b_lateness_s, 99)
    say(f"A alone: {fmt_rate(alone.a_rate)}; A beside B: {fmt_rate(shared.a_rate)} ({100 * ratio:.0f} %)")
    say(
        f"B's lateness: p50 {1000 * percentile(shared.b_lateness_s, 50):.0f} ms, p99 {p99_ms:.0f} ms, "
        f"max {1000 * max(shared.b_lateness_s):.0f} ms (200 rows)"
    )
    bench.report.add("(15) B's p99 lateness beside A's wave", f"{p99_ms:.0f} ms", "< 250 ms", p99_ms < 250)
    bench.report.add("(15) A's throughput beside B / alone", f"{100 * ratio:.0f} %", ">= 90 %", ratio >= 0.9)


class Wave:
    def __init__(self, a_rate: float, b_lateness_s: list[float] | None) -> None:
        self.a_rate = a_rate
        self.b_lateness_s = b_lateness_s


async def wave(bench: Bench, dbs: Databases, n: int, *, with_b: bool) -> Wave:
    receiver = bench.receiver
    async with tenant_database(dbs, receiver, "fair_b" if with_b else "fair_a") as (name, url, db):
        await add_tenant(db, "a", receiver.url)
        await add_tenant(db, "b", receiver.url)
        async with bench_daemon(bench, url) as daemon:
            await wait_idle(daemon, dbs.admin, name)
            await wait_for_quiet(receiver.pid, dbs.postmaster_pid)
            due = time.time() + 4 + n / 20_000  # room for the insert
            await db.execute(
                "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, category, payload) "
                f"SELECT 'a', 'a:' || i, to_timestamp($2), 'marketing', {PAYLOAD_SQL.format(i='i')} "
                "FROM generate_series(1, $1) AS i",
                n,
                due,
            )
            total = n
            if with_b:
                await db.execute(
                    "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at) "
                    "SELECT 'b', 'b:' || i, to_timestamp($1) + CASE WHEN i > 100 THEN interval '2 seconds'"
                    " ELSE interval '0' END FROM generate_series(1, 200) AS i",
                    due,
                )
                total += 200
            if time.time() > due:
                raise RuntimeError("the insert took longer than the headroom before T")

            async def progress() -> str:
                return f"received {receiver.count()} of {total}"

            await wait_until("wave received", received_at_least(receiver, total), due + 300, daemon, progress)
        arrivals = receiver.dump()
    a_times = [arrived for arrived, _, ref, _ in arrivals if ref.startswith("a:")]
    a_rate = len(a_times) / (max(a_times) - due)
    if not with_b:
        return Wave(a_rate, None)
    lateness = [
        arrived - datetime.fromisoformat(scheduled.replace("Z", "+00:00")).timestamp()
        for arrived, _, ref, scheduled in arrivals
        if ref.startswith("b:")
    ]
    return Wave(a_rate, lateness)


# (17c) ---------------------------------------------------------------------------------------------

SHAPES = {
    "one tenant, 100 due + 1,000,000 future (the hot path)": (
        "INSERT INTO reminderd.tenants (id, callback_url) VALUES ('t0', 'http://127.0.0.1:9/');"
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
        " SELECT 't0', 'due' || i, now() - interval '1 second' FROM generate_series(1, 100) i;"
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
        " SELECT 't0', 'f' || i, now() + interval '1 hour' + i * interval '1 second'"
        " FROM generate_series(1, 1000000) i"
    ),
    "one tenant, 1,000,000 due": (
        "INSERT INTO reminderd.tenants (id, callback_url) VALUES ('t0', 'http://127.0.0.1:9/');"
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, category)"
        " SELECT 't0', 'r' || i, now() - interval '10 minutes' + (i % 600) * interval '1 second',"
        " CASE WHEN i % 3 = 0 THEN 'marketing' ELSE 'transactional' END FROM generate_series(1, 1000000) i"
    ),
    "1,000 tenants, 1,000,000 due": (
        "INSERT INTO reminderd.tenants (id, callback_url)"
        " SELECT 't' || lpad(i::text, 5, '0'), 'http://127.0.0.1:9/' || i FROM generate_series(1, 1000) i;"
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, category)"
        " SELECT 't' || lpad((1 + i % 1000)::text, 5, '0'), 'r' || i,"
        " now() - interval '10 minutes' + (i % 600) * interval '1 second',"
        " CASE WHEN i % 3 = 0 THEN 'marketing' ELSE 'transactional' END FROM generate_series(1, 1000000) i"
    ),
}


async def claim_plans(bench: Bench, dbs: Databases) -> None:
    section("(17c) the claim at 1,000,000 rows: this claim against the claim before issue 15")
    old = baseline_claim()
    for title, setup in SHAPES.items():
        _name, url = await dbs.fresh("fairclaim")
        # As the daemon runs it (reminderd.store.DAEMON_SESSION: no JIT, a plan for each run).
        db = await asyncpg.connect(url, command_timeout=900, server_settings=DAEMON_SESSION)
        try:
            started = time.time()
            await db.execute("ALTER TABLE reminderd.scheduled_messages DISABLE TRIGGER USER")
            await db.execute(setup)
            await db.execute("ALTER TABLE reminderd.scheduled_messages ENABLE TRIGGER USER")
            await db.execute("UPDATE reminderd.endpoints SET max_in_flight = 1000000")  # measure the claim
            await db.execute("VACUUM ANALYZE reminderd.scheduled_messages")
            say(f"{title}: loaded in {time.time() - started:.0f}s")
            variants = (
                ("before", old, BASELINE_CLAIM_ARGS),
                ("now, no limits (claim_fair)", QUERIES["claim_fair"], CLAIM_ARGS),
                ("now, bounded (claim)", QUERIES["claim"], CLAIM_ARGS),
            )
            for label, sql, args in variants:
                await db.execute(f"PREPARE fair_claim AS {sql}")
                execute = f"EXECUTE fair_claim({', '.join(_literal(a) for a in args)})"
                for mode in ("custom", "generic"):
                    stats = await explain_rolled_back(
                        db, execute, setup=f"SET LOCAL plan_cache_mode = force_{mode}_plan"
                    )
                    seq = stats.seq_scans("scheduled_messages")
                    say(
                        f"  {label} {mode}: {stats.execution_ms:.2f} ms, "
                        f"planning {stats.planning_ms:.2f} ms, "
                        f"buffers {stats.buffers}, rows {stats.rows}" + (f", SEQ SCAN {seq}" if seq else "")
                    )
                    if label.startswith("now") and mode == "custom":
                        say("    plan (COSTS OFF, TIMING OFF):")
                        for line in stats.text.splitlines():
                            say(f"      {line}")
                await db.execute("DEALLOCATE fair_claim")
                round_trip_ms = await _round_trip_ms(db, sql, args)
                say(f"  {label} round trip, prepared: {round_trip_ms:.2f} ms (median of 30)")
                bench.report.add(f"(17c) claim round trip {label}: {title}", f"{round_trip_ms:.2f} ms")
        finally:
            await db.close()


def _literal(value: object) -> str:
    if value is None:
        return "NULL"
    return f"'{value}'" if isinstance(value, str) else str(value)


async def _round_trip_ms(db: asyncpg.Connection, sql: str, args: tuple[object, ...]) -> float:
    statement = await db.prepare(sql)
    times = []
    for _ in range(40):
        transaction = db.transaction()
        await transaction.start()
        started = time.perf_counter()
        await statement.fetch(*args)
        times.append(1000 * (time.perf_counter() - started))
        await transaction.rollback()
    return statistics.median(times[10:])


# (17d) ---------------------------------------------------------------------------------------------


async def hot_path_throughput(bench: Bench, dbs: Databases) -> None:
    n = bench.sizes.deliver_n
    section(f"(17d) the hot path: one tenant, {n:,} due rows, this daemon against {BASELINE_REVISION}'s")
    with tempfile.TemporaryDirectory(prefix="reminderd-baseline-") as baseline:
        await asyncio.to_thread(_extract, BASELINE_REVISION, Path(baseline))
        rates: dict[str, list[float]] = {}
        for label, code in (
            ("before", Path(baseline)),
            ("now", ROOT),
            ("before", Path(baseline)),
            ("now", ROOT),
        ):
            rate = await _deliver(bench, dbs, n, code)
            rates.setdefault(label, []).append(rate)
            say(f"  {label:>6}: {fmt_rate(rate)}")
    before, now = max(rates["before"]), max(rates["now"])
    say(f"best of two each: before {fmt_rate(before)}, now {fmt_rate(now)} ({100 * now / before:.0f} %)")
    bench.report.add(
        "(17d) hot-path deliveries/s now / before issue 15",
        f"{100 * now / before:.0f} %",
        ">= 90 %",
        now >= 0.9 * before,
    )


def _extract(revision: str, into: Path) -> None:
    """The code of `revision` (git archive), to run its daemon beside this one."""
    archive = subprocess.run(["git", "archive", revision], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    # The package finds its migrations as reminderd.migrations, which pyproject.toml maps to the
    # top-level migrations/ on install: without this link the installed checkout's would be found.
    (into / "reminderd" / "migrations").symlink_to("../migrations")


@contextlib.asynccontextmanager
async def _database_of(
    bench: Bench, dbs: Databases, code: Path
) -> AsyncIterator[tuple[str, str, asyncpg.Connection]]:
    """This code's own clone, or for the baseline an empty database migrated by the baseline's own
    `reminderd migrate` (its daemon refuses a schema newer than its own), holding the bench tenant."""
    if code == ROOT:
        async with tenant_database(dbs, bench.receiver, "hotpath") as made:
            yield made
        return
    name = "bench_hotpath_baseline"
    await dbs.drop(name)
    await dbs.admin.execute(f'CREATE DATABASE "{name}"')
    url = dbs.cluster.url(name)
    env = {**os.environ, "PYTHONPATH": str(code), "REMINDERD_DATABASE_URL": url}
    await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "reminderd.cli", "migrate"], env=env, cwd=code, check=True,
        capture_output=True,
    )
    await dbs.admin.execute("CHECKPOINT")
    db = await asyncpg.connect(url)
    try:
        await add_tenant(db, TENANT, bench.receiver.url)
        bench.receiver.reset()
        yield name, url, db
    finally:
        await db.close()
        await dbs.drop(name)


async def _deliver(bench: Bench, dbs: Databases, n: int, code: Path) -> float:
    receiver = bench.receiver
    async with _database_of(bench, dbs, code) as (name, url, db):
        env = daemon_env(
            url, REMINDERD_CONCURRENCY="64", REMINDERD_LOG_LEVEL="warning", REMINDERD_HTTP_PORT="0"
        )
        env["PYTHONPATH"] = str(code)
        async with running_daemon(env, keep_lines=50, cwd=code) as daemon:
            await wait_idle(daemon, dbs.admin, name)
            await wait_for_quiet(receiver.pid, dbs.postmaster_pid)
            await db.execute(
                "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, payload) "
                f"SELECT '{TENANT}', 'hot:' || i, now(), {PAYLOAD_SQL.format(i='i')} "
                "FROM generate_series(1, $1) AS i",
                n,
            )
            started = time.time()

            async def progress() -> str:
                return f"received {receiver.count()} of {n}"

            await wait_until(
                "hot path received", received_at_least(receiver, n), started + 120, daemon, progress
            )
        arrivals = receiver.dump()
    times = sorted(arrived for arrived, *_ in arrivals)
    return n / (times[-1] - started)


if __name__ == "__main__":  # alone: .venv/bin/python -m bench.scenarios.fairness [--quick] [--parts acd]
    import uvloop

    from bench.harness import FULL, QUICK
    from bench.receiver import ReceiverProcess
    from bench.report import Report
    from reminderd.testing import throwaway_cluster

    async def alone() -> None:
        sizes = QUICK if "--quick" in sys.argv else FULL
        receiver = ReceiverProcess()
        report = Report()
        try:
            with throwaway_cluster() as cluster:
                dbs = Databases(cluster)
                await dbs.setup()
                try:
                    parts = sys.argv[sys.argv.index("--parts") + 1] if "--parts" in sys.argv else "abcd"
                    await run(Bench(sizes, receiver, report, {}), dbs, parts)
                finally:
                    await dbs.close()
        finally:
            receiver.stop()
            report.print_summary()

    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    uvloop.run(alone())
