"""(9) Start-up: `reminderd run` from its spawn to its first claim, on a migrated database."""

from __future__ import annotations

import asyncio
import time

from bench.harness import Bench, Databases, bench_daemon, wait_for_quiet
from bench.report import percentile, say, section

RUNS = 5


async def run(bench: Bench, dbs: Databases) -> None:
    section(f"(9) start-up: spawn of `reminderd run` to its first claim, {RUNS} runs")
    _name, url = await dbs.fresh("startup")
    times_ms = []
    await wait_for_quiet(bench.receiver.pid, dbs.postmaster_pid)
    for _ in range(RUNS):
        started = time.perf_counter()
        # The probe server is on (a free port), as it is by default: it starts after the claim.
        async with bench_daemon(bench, url, log_level="info") as daemon:
            await asyncio.wait_for(daemon.wait_logged("ready"), 30)  # logged after the first claim
            times_ms.append(1000 * (time.perf_counter() - started))
    median = percentile(times_ms, 50)
    say("spawn to first claim (ms): " + ", ".join(f"{t:.0f}" for t in times_ms))
    bench.report.add(f"(9) start-up: spawn to first claim (median of {RUNS})", f"{median:.0f} ms", "< 300 ms",
                     median < 300)
