"""(3) Timer precision: how late an idle daemon fires messages due at random instants."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

from bench.harness import (
    PAYLOAD_SQL,
    TENANT,
    Bench,
    Databases,
    bench_daemon,
    received_at_least,
    tenant_database,
    wait_idle,
    wait_until,
)
from bench.report import percentile, say, section


async def run(bench: Bench, dbs: Databases) -> None:
    n, span = bench.sizes.timer_n, bench.sizes.timer_span_s
    receiver, report = bench.receiver, bench.report
    section(f"(3) timer precision: {n} messages at random instants over the next {span:g}s, "
            "idle daemon, default poll interval 2s")
    async with tenant_database(dbs, receiver, "timer") as (name, url, db):
        async with bench_daemon(bench, url) as daemon:
            await wait_idle(daemon, dbs.admin, name)
            rng = random.Random(20261123)
            base = time.time() + 1.0  # headroom for the insert itself
            fire_at = {f"timer:{k}": base + rng.uniform(0, span) for k in range(n)}
            await db.execute(
                "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, payload) "
                f"SELECT '{TENANT}', ref, to_timestamp(at), {PAYLOAD_SQL.format(i='0')} "
                "FROM unnest($1::text[], $2::float8[]) AS u(ref, at)",
                list(fire_at), list(fire_at.values()),
            )
            inserted = time.time()
            if inserted > min(fire_at.values()):
                raise RuntimeError("the insert took longer than the headroom before the first message")

            all_received = received_at_least(receiver, n)

            async def progress() -> str:
                return f"received {receiver.count()} of {n}"

            await wait_until("all timer messages received", all_received, max(fire_at.values()) + 15,
                             daemon, progress)
            await asyncio.sleep(0.3)  # anything arriving twice would show up now
        arrivals = receiver.dump()

    lateness_ms = []
    seen: Counter[str] = Counter()
    for arrived, _webhook_id, ref, _scheduled in arrivals:
        seen[ref] += 1
        if seen[ref] == 1:
            lateness_ms.append(1000 * (arrived - fire_at[ref]))
    early = sum(1 for late in lateness_ms if late < 0)
    duplicates = sum(count - 1 for count in seen.values())
    p50, p99, worst = percentile(lateness_ms, 50), percentile(lateness_ms, 99), max(lateness_ms)
    say(f"received {len(arrivals)} ({duplicates} duplicates, {early} early)")
    say(f"lateness (receipt - fire_at): min {min(lateness_ms):.1f} ms, p50 {p50:.1f} ms, p90 "
        f"{percentile(lateness_ms, 90):.1f} ms, p99 {p99:.1f} ms, max {worst:.1f} ms")
    report.add("(3) timer lateness p50", f"{p50:.1f} ms")
    report.add("(3) timer lateness p99", f"{p99:.1f} ms", "< 10 ms", p99 < 10)
    report.add("(3) timer lateness max", f"{worst:.1f} ms")
    report.add("(3) delivered early / twice", f"{early} / {duplicates}", "0 / 0",
               early == 0 and duplicates == 0)
