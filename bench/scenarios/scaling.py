"""(11) Daemons on one database: the same due rows delivered by 1, 2 and 3 `reminderd run` processes
sharing one PostgreSQL and one receiver, on this machine's cores. Every row exactly once."""

from __future__ import annotations

import contextlib
import time
from collections import Counter

from bench.harness import (
    CONCURRENCY,
    PAYLOAD_SQL,
    TENANT,
    Bench,
    CpuMeter,
    Databases,
    bench_daemon,
    cpu_seconds,
    received_at_least,
    sent_at_least,
    tenant_database,
    wait_for_quiet,
    wait_idle,
    wait_until,
)
from bench.report import fmt_rate, say, section

DAEMONS = (1, 2, 3)


async def run(bench: Bench, dbs: Databases) -> None:
    n = 2 * bench.sizes.deliver_n
    section(f"(11) daemons on one database: {n:,} due rows, 1, 2 and 3 daemons "
            f"(concurrency {CONCURRENCY} each)")
    rates: dict[int, float] = {}
    for count in DAEMONS:
        rates[count] = await deliver_with(bench, dbs, n, count)
    for count in DAEMONS[1:]:
        bench.report.add(f"(11) {count} daemons on one database", fmt_rate(rates[count]) +
                         f" ({rates[count] / rates[1]:.2f}x one daemon)")
    bench.report.add("(11) 1 daemon on the same load", fmt_rate(rates[1]))


async def deliver_with(bench: Bench, dbs: Databases, n: int, count: int) -> float:
    receiver = bench.receiver
    async with tenant_database(dbs, receiver, f"scaling{count}") as (name, url, db), \
            contextlib.AsyncExitStack() as stack:
        daemons = [await stack.enter_async_context(bench_daemon(bench, url, log_level="info", to_devnull=True))
                   for _ in range(count)]
        for daemon in daemons:
            await wait_idle(daemon, dbs.admin, name)
        await wait_for_quiet(receiver.pid, dbs.postmaster_pid)
        meter = CpuMeter(None, receiver.pid, dbs.postmaster_pid)
        before = {daemon.pid: cpu_seconds(daemon.pid) for daemon in daemons}
        await db.execute(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, payload) "
            f"SELECT '{TENANT}', 'scale:' || i, now(), {PAYLOAD_SQL.format(i='i')} "
            "FROM generate_series(1, $1) AS i",
            n,
        )
        committed = time.time()

        async def progress() -> str:
            return f"received {receiver.count()} of {n}"

        await wait_until("all received", received_at_least(receiver, n), committed + 180, daemons[0], progress)
        await wait_until("all rows sent", sent_at_least(db, n), committed + 180, daemons[0], progress,
                         interval_s=0.02)
        done = time.time()
        wall, used = meter.stop()
        daemon_s = [cpu_seconds(daemon.pid) - before[daemon.pid] for daemon in daemons]
        arrivals = receiver.dump()
    ids = Counter(row[1] for row in arrivals)
    if len(ids) != n or any(c > 1 for c in ids.values()):
        raise RuntimeError(f"{count} daemons: {len(ids)} distinct ids for {n} rows, "
                           f"{sum(c - 1 for c in ids.values())} duplicates")
    rate = n / (done - committed)
    per_job = {"daemons": 1e6 * sum(daemon_s) / n, "postgres": 1e6 * used["postgres"] / n,
               "receiver": 1e6 * used["receiver"] / n}
    busy = sum(daemon_s) + used["postgres"] + used["receiver"] + used["other"]
    say(f"{count} daemon(s): {fmt_rate(rate)}; CPU per callback (µs): "
        + ", ".join(f"{k} {v:.0f}" for k, v in per_job.items())
        + f"; each daemon {', '.join(f'{s:.2f}s' for s in daemon_s)}; other processes "
        f"{100 * used['other'] / wall:.0f}% of a core; machine busy {100 * busy / wall:.0f}% of one core")
    return rate
