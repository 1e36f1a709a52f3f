"""(4) Burst: many rows due at one instant T, inserted while the daemon idles."""

from __future__ import annotations

import time

from bench.harness import (
    PAYLOAD_SQL,
    TENANT,
    Bench,
    CpuMeter,
    Databases,
    bench_daemon,
    describe_cpu,
    received_at_least,
    sent_at_least,
    tenant_database,
    wait_for_quiet,
    wait_idle,
    wait_until,
)
from bench.report import fmt_rate, percentile, say, section


async def run(bench: Bench, dbs: Databases) -> None:
    n = bench.sizes.burst_n
    receiver, report = bench.receiver, bench.report
    section(f"(4) burst: {n:,} rows due at the same instant T, inserted while the daemon idles")
    async with tenant_database(dbs, receiver, "burst") as (name, url, db):
        async with bench_daemon(bench, url) as daemon:
            await wait_idle(daemon, dbs.admin, name)
            await wait_for_quiet(receiver.pid, dbs.postmaster_pid)
            due = time.time() + 2.5
            await db.execute(
                "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, payload) "
                f"SELECT '{TENANT}', 'burst:' || i, to_timestamp($2), {PAYLOAD_SQL.format(i='i')} "
                "FROM generate_series(1, $1) AS i",
                n, due,
            )
            inserted = time.time()
            if inserted > due:
                raise RuntimeError("the insert took longer than the headroom before T")
            meter = CpuMeter(daemon.pid, receiver.pid, dbs.postmaster_pid)

            all_received = received_at_least(receiver, n)
            all_sent = sent_at_least(db, n)

            async def progress() -> str:
                return f"received {receiver.count()} of {n}"

            await wait_until("burst received", all_received, due + 60, daemon, progress)
            await wait_until("burst rows sent", all_sent, due + 60, daemon, progress, interval_s=0.02)
            wall, used = meter.stop()
            last_sent: float = await db.fetchval(
                "SELECT extract(epoch FROM max(sent_at))::float8 FROM reminderd.scheduled_messages")
        arrivals = receiver.dump()
    times = sorted(row[0] for row in arrivals)
    first, last = times[0] - due, times[-1] - due
    distinct = len({row[1] for row in arrivals})
    say(f"inserted {due - inserted:.2f}s before T; received {len(times):,} ({distinct:,} distinct ids)")
    say(f"first receipt T+{1000 * first:.1f} ms; median T+{percentile([t - due for t in times], 50):.3f}s; "
        f"last receipt T+{last:.3f}s; all rows 'sent' T+{last_sent - due:.3f}s")
    say(f"drain rate over the burst: {fmt_rate(n / (times[-1] - due))}")
    say(describe_cpu(wall, used) + " (window includes the idle wait until T)")
    if first < 0:
        raise RuntimeError(f"a burst message arrived {-1000 * first:.1f} ms before T")
    report.add("(4) burst first receipt after T", f"{1000 * first:.1f} ms")
    report.add("(4) burst last receipt after T", f"{last:.3f} s", "< 1.5 s", last < 1.5)
