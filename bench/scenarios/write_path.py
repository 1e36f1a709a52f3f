"""(10) The write path: PostgreSQL CPU per delivered callback for the claim and the recording of its
outcome, through the daemon's own Store and queries, without HTTP: the lean claim (claim_fair, the
daemon's when no tenant or endpoint has a limit) and the bounded one (claim, with the budgets);
with the statistics as they are after the insert, and after ANALYZE saw the table full of pending
rows (the plan flip of issue 13 doubled the recording's cost then). Also the insert's share: each
message's row, written by one INSERT … SELECT with its triggers (validation, arrival, the audit
trail), as an application or the shared peer harness writes them."""

from __future__ import annotations

import asyncio

import asyncpg

from bench.harness import PAYLOAD_SQL, TENANT, Bench, Databases
from bench.report import say, section
from reminderd.lifecycle import Event, Status
from reminderd.outcome import AttemptResult, Outcome
from reminderd.store import Store
from reminderd.testing import add_tenant

BATCH = 128  # the harness's REMINDERD_BATCH_SIZE
FLIP_LIMIT = 1.3  # after ANALYZE, at most this much dearer than before


def backend_cpu_ns(pid: int) -> int:
    """CPU time of one PostgreSQL backend, in ns (/proc/<pid>/schedstat: exact, not in ticks)."""
    with open(f"/proc/{pid}/schedstat", encoding="ascii") as handle:
        return int(handle.read().split()[0])


async def measure(
    dbs: Databases, n: int, *, analyze: bool, bounded: bool = False,
) -> tuple[float, float, float]:
    """(insert, claim, record) backend CPU per job, in µs, for n due rows inserted in one statement,
    then claimed (the bounded claim, or the lean one) and delivered in batches."""
    name, url = await dbs.fresh("write_path")
    db = await asyncpg.connect(url)
    try:
        await add_tenant(db, TENANT, "http://127.0.0.1:9/unused")
        inserting: int = await db.fetchval("SELECT pg_backend_pid()")
        before_insert = backend_cpu_ns(inserting)
        await db.execute(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, payload) "
            f"SELECT '{TENANT}', 'w:' || i, now(), {PAYLOAD_SQL.format(i='i')} "
            "FROM generate_series(1, $1) AS i", n,
        )
        insert_ns = backend_cpu_ns(inserting) - before_insert
        if analyze:
            await db.execute("ANALYZE reminderd.scheduled_messages")
        await db.execute("CHECKPOINT")
    finally:
        await db.close()
    store = await Store.connect(url, max_size=1)
    try:
        backend: int = await dbs.admin.fetchval(  # the pool's one connection
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = 'reminderd'", name
        )
        claim_ns = record_ns = done = 0
        while done < n:
            before = backend_cpu_ns(backend)
            jobs = (await store.claim_due(lookback_s=120, batch_size=BATCH, lease_s=300, bounded=bounded)).jobs
            claimed = backend_cpu_ns(backend)
            if not jobs:
                break
            await store.record_outcomes(
                [Outcome(job, AttemptResult(True, 200, None, 3), Event.FIRED, Status.SENT) for job in jobs]
            )
            claim_ns += claimed - before
            record_ns += backend_cpu_ns(backend) - claimed
            done += len(jobs)
    finally:
        await store.close()
    if done != n:
        raise RuntimeError(f"claimed {done} of {n} rows")
    return insert_ns / n / 1000, claim_ns / n / 1000, record_ns / n / 1000


async def run(bench: Bench, dbs: Databases) -> None:
    n = bench.sizes.write_path_n
    section(f"(10) write path: PostgreSQL CPU per delivered callback, claim + record of {n:,} due rows in "
            f"batches of {BATCH}, no HTTP")
    fresh = await asyncio.wait_for(measure(dbs, n, analyze=False), 300)
    analyzed = await asyncio.wait_for(measure(dbs, n, analyze=True), 300)
    bounded = await asyncio.wait_for(measure(dbs, n, analyze=False, bounded=True), 300)
    for label, (insert_us, claim_us, record_us) in (
        ("as inserted", fresh), ("after ANALYZE", analyzed), ("bounded claim", bounded),
    ):
        say(f"{label:>14}: claim {claim_us:.1f} µs + record {record_us:.1f} µs = {claim_us + record_us:.1f} µs "
            f"per callback (the backend's CPU); its insert {insert_us:.1f} µs")
    total, after = sum(fresh[1:]), sum(analyzed[1:])
    bench.report.add("(10) PostgreSQL CPU per callback: claim + record", f"{fresh[1]:.0f} + {fresh[2]:.0f} µs")
    bench.report.add("(10) the same with the bounded claim (a limit set)",
                     f"{bounded[1]:.0f} + {bounded[2]:.0f} µs")
    bench.report.add("(10) the same after ANALYZE (no plan flip)", f"{after:.0f} µs ({after / total:.2f}x)",
                     f"<= {FLIP_LIMIT}x", after <= FLIP_LIMIT * total)
    bench.report.add("(10) PostgreSQL CPU per message inserted (INSERT … SELECT)", f"{fresh[0]:.0f} µs")
