"""(2) reminderd delivering due rows as fast as it can, and (6) the daemon's peak RSS.

Three runs of the same load: log level warning, the default info with stdout to /dev/null (how
operators run it), and warning with the audit triggers disabled (what the audit trail costs).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from bench.harness import (
    CONCURRENCY,
    PAYLOAD_SQL,
    TENANT,
    Bench,
    CpuMeter,
    Databases,
    bench_daemon,
    daemon_counters,
    describe_cpu,
    describe_per_delivery,
    finish_py_spy,
    memory_kb,
    noisy,
    received_at_least,
    sent_at_least,
    start_py_spy,
    tenant_database,
    wait_for_quiet,
    wait_idle,
    wait_until,
)
from bench.report import fmt_rate, say, section

RUNS = (  # log level, stdout to /dev/null, audit triggers on, title
    ("warning", False, True, "REMINDERD_LOG_LEVEL=warning"),
    ("info", True, True, "default info logging, stdout to /dev/null"),
    ("warning", False, False, "REMINDERD_LOG_LEVEL=warning, audit triggers disabled"),
)
TIMEOUT_S = 180  # per run


@dataclass
class DeliveryResult:
    rate: float
    first_to_last_rate: float
    elapsed_s: float
    vm_hwm_kb: int
    vm_rss_kb: int
    noisy: bool


async def run(bench: Bench, dbs: Databases, ceiling: float | None) -> None:
    """Each of RUNS, reported against the targets (and as a ratio to the HTTP `ceiling`, if known)."""
    report = bench.report
    for log_level, to_devnull, audit, title in RUNS:
        n = bench.sizes.deliver_n
        section(f"(2) reminderd delivering {n:,} due rows, concurrency {CONCURRENCY}, {title}")
        label = log_level if audit else "noaudit"
        try:
            result = await asyncio.wait_for(
                deliver(bench, dbs, n, log_level=log_level, to_devnull=to_devnull, label=label, audit=audit),
                TIMEOUT_S,
            )
        except Exception as exc:
            report.error(f"(2) delivery, {label}", exc)
            continue
        tag = "warning" if log_level == "warning" else "info>/dev/null"
        tag += "" if audit else ", no audit"
        mark = " (noisy)" if result.noisy else ""
        report.add(f"(2) reminderd deliveries/s (log {tag})", fmt_rate(result.rate) + mark, "> 3,000/s",
                   result.rate > 3000)
        report.add(f"(2) reminderd first->last receipt/s (log {tag})", fmt_rate(result.first_to_last_rate))
        if ceiling:
            ratio = result.rate / ceiling
            say(f"ratio to the HTTP ceiling: {ratio:.2f}")
            # Information: (1) is the HTTP client alone now (reminderd.http1), several times the rate
            # of the whole pipeline, whose database work shares these cores (bench/README.md).
            report.add(f"(2) ratio to HTTP ceiling (log {tag})", f"{ratio:.2f}{mark}")
        report.add(f"(6) daemon peak RSS VmHWM (log {tag})", f"{result.vm_hwm_kb / 1024:.1f} MB",
                   "< 100 MB", result.vm_hwm_kb < 100 * 1024)


async def deliver(bench: Bench, dbs: Databases, n: int, *, log_level: str, to_devnull: bool,
                  label: str, profile_to: Path | None = None, audit: bool = True) -> DeliveryResult:
    """`n` rows due now, inserted once the daemon idles; timed from the insert's commit until the
    receiver has them all and every row is sent. With `profile_to`, py-spy records the daemon there
    and pg_stat_statements' top statements are printed."""
    receiver = bench.receiver
    statements: list[asyncpg.Record] = []
    async with tenant_database(dbs, receiver, label) as (name, url, db):
        if not audit:  # what the audit trail (reminderd.events) costs: the same run without it
            # The insert's events are written by scheduled_messages_record_insert, which also wakes
            # the daemons: off too, and the wake-up sent by hand after the insert.
            await db.execute(
                "ALTER TABLE reminderd.scheduled_messages DISABLE TRIGGER scheduled_messages_record_insert, "
                "DISABLE TRIGGER scheduled_messages_audit_update"
            )
        if profile_to is not None:
            await db.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        async with bench_daemon(bench, url, log_level=log_level, to_devnull=to_devnull) as daemon:
            ready_s = await wait_idle(daemon, dbs.admin, name)
            spy = None
            if profile_to is not None:
                spy = await start_py_spy(daemon.pid, profile_to)
                await asyncio.sleep(1.0)  # let py-spy attach before the load starts
            await wait_for_quiet(receiver.pid, dbs.postmaster_pid)
            if profile_to is not None:
                await db.execute("SELECT pg_stat_statements_reset()")
            meter = CpuMeter(daemon.pid, receiver.pid, dbs.postmaster_pid)
            before_insert = time.time()
            await db.execute(
                "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, payload) "
                f"SELECT '{TENANT}', 'deliver:' || i, now(), {PAYLOAD_SQL.format(i='i')} "
                "FROM generate_series(1, $1) AS i",
                n,
            )
            if not audit:
                await db.execute("SELECT pg_notify('reminderd_due', extract(epoch FROM now())::text)")
            committed = time.time()  # the rows exist for the daemon from here on

            all_received = received_at_least(receiver, n)
            all_sent = sent_at_least(db, n)

            async def progress() -> str:
                statuses = await db.fetch(
                    "SELECT status, count(*) FROM reminderd.scheduled_messages GROUP BY status")
                return f"received {receiver.count()}, rows by status {dict(statuses)}"

            deadline = committed + 120
            await wait_until("all received", all_received, deadline, daemon, progress)
            await wait_until("all rows sent", all_sent, deadline, daemon, progress, interval_s=0.02)
            wall, used = meter.stop()
            memory = memory_kb(daemon.pid)
            last_sent: float = await db.fetchval(
                "SELECT extract(epoch FROM max(sent_at))::float8 FROM reminderd.scheduled_messages")
            deliveries: int = await db.fetchval("SELECT count(*) FROM reminderd.deliveries")
            durations = await db.fetchrow(
                "SELECT avg(duration_ms)::float8 AS mean, "
                "percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50, "
                "percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99 FROM reminderd.deliveries")
            counters = await daemon_counters(daemon)
            if spy is not None:
                await daemon.stop()
                await finish_py_spy(spy)
                statements = await db.fetch(
                    "SELECT calls, total_exec_time, rows, query FROM pg_stat_statements "
                    "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                    "AND query NOT ILIKE '%pg_stat_statements%' ORDER BY total_exec_time DESC LIMIT 12")
        arrivals = receiver.dump()

    times = [row[0] for row in arrivals]
    ids = Counter(row[1] for row in arrivals)
    duplicates = sum(count - 1 for count in ids.values() if count > 1)
    first, last = min(times), max(times)
    done = max(last, last_sent)
    elapsed = done - committed
    rate = n / elapsed
    first_to_last = (n - 1) / (last - first) if last > first else float("inf")
    say(f"daemon listening {ready_s:.2f}s after spawn; rows inserted in {committed - before_insert:.3f}s")
    say(f"commit -> first receipt {1000 * (first - committed):.1f} ms; commit -> last receipt "
        f"{last - committed:.3f}s; commit -> all rows 'sent' {last_sent - committed:.3f}s")
    say(f"received {len(arrivals):,} ({len(ids):,} distinct webhook-ids, {duplicates} duplicates), "
        f"deliveries rows {deliveries:,}")
    say(f"throughput commit -> all sent: {fmt_rate(rate)}; first -> last receipt: {fmt_rate(first_to_last)}")
    say(describe_cpu(wall, used))
    say(describe_per_delivery(n, used))
    say("callback latency as the daemon measured it (deliveries.duration_ms): "
        f"mean {durations['mean']:.1f} ms, "
        f"p50 {durations['p50']:.0f} ms, p99 {durations['p99']:.0f} ms")
    claims = counters.get("reminderd_claim_batch_size_count")
    if claims:
        rows = counters.get("reminderd_claim_batch_size_sum", 0.0)
        say(f"claim queries (daemon metrics, whole run incl. idle polls): {claims:.0f}, "
            f"{rows / claims:.1f} rows per claim on average")
    say(f"daemon memory at the end: VmHWM {memory['VmHWM'] / 1024:.1f} MB, "
        f"VmRSS {memory['VmRSS'] / 1024:.1f} MB")
    if statements:
        say("PostgreSQL time by statement during the run (pg_stat_statements: server execution time, "
            "triggers included in their statement):")
        say(f"  {'calls':>6} {'total ms':>9} {'ms/call':>8} {'rows':>7}  statement")
        for row in statements:
            text = " ".join(row["query"].split())
            total_ms, calls = row["total_exec_time"], row["calls"]
            say(f"  {calls:>6} {total_ms:>9.1f} {total_ms / calls:>8.3f} {row['rows']:>7}  {text[:110]}")
    if duplicates or len(ids) != n or deliveries != n:
        raise RuntimeError(f"delivery was not exactly once: {len(ids)} ids, {duplicates} duplicates, "
                           f"{deliveries} deliveries rows for {n} messages")
    if noisy(wall, used):
        say(f"warning: other processes used {100 * used['other'] / wall:.0f}% of a core during this run: "
            "the rate above is pessimistic")
    return DeliveryResult(rate, first_to_last, elapsed, memory["VmHWM"], memory["VmRSS"], noisy(wall, used))
