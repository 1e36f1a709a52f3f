"""(1b) reminderd's CallbackClient alone: the daemon's own send (URL check, signing, headers,
guarded connector) without the database, which splits the gap between (1) and (2) into an HTTP
side and a pipeline side."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from bench.harness import (
    CONCURRENCY,
    TENANT,
    Bench,
    CpuMeter,
    describe_cpu,
    describe_per_delivery,
    wait_for_quiet,
)
from bench.report import fmt_rate, say, section
from reminderd.callback import CallbackClient
from reminderd.jobs import Job
from reminderd.settings import Settings
from reminderd.signing import generate_secret


class _Row(dict[str, Any]):
    """A claim row for Job.from_row: columns this bench does not know about read as NULL."""

    def __missing__(self, key: str) -> None:
        return None


async def run(bench: Bench) -> float:
    """The rate of CallbackClient.send, in sends per second."""
    n, receiver = bench.sizes.ceiling_n, bench.receiver
    section(f"(1b) reminderd's CallbackClient alone (no database): {n:,} jobs, concurrency {CONCURRENCY}")
    settings = Settings.from_env({
        "REMINDERD_DATABASE_URL": "postgresql://bench@127.0.0.1/unused",
        "REMINDERD_ALLOWED_CALLBACK_NETWORKS": "127.0.0.0/8",
        "REMINDERD_CONCURRENCY": str(CONCURRENCY),
    })
    secret = generate_secret()
    occurrence = datetime.now(UTC)
    payload = ('{"to": "alice@example.com", "kind": "reminder", "text": "Your table for two is booked '
               'for 19:30 tomorrow.", "channel": "email", "user_id": 1}')
    jobs = [
        Job.from_row(_Row(id=i, tenant_id=TENANT, ref_id=f"client:{i}", payload=payload,
                          callback_url=receiver.url, scheduled_for=occurrence, cron=None, timezone="UTC",
                          attempts=1, max_attempts=None, signing_secret=secret))
        for i in range(1, n + 1)
    ]
    await wait_for_quiet(receiver.pid, None)
    receiver.reset()
    client = CallbackClient(settings)
    failures: list[str] = []
    try:
        queue = iter(jobs)

        async def worker() -> None:
            for job in queue:
                result = await client.send(job)
                if not result.delivered:
                    failures.append(result.error or "?")

        meter = CpuMeter(None, receiver.pid, None)
        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(CONCURRENCY))), 120)
        elapsed = time.perf_counter() - started
        wall, used = meter.stop()
    finally:
        await client.close()
    if failures or receiver.count() != n:
        raise RuntimeError(
            f"{len(failures)} failed ({failures[:3]}), receiver counted {receiver.count()} of {n}")
    rate = n / elapsed
    say(f"{n:,} sends in {elapsed:.3f}s -> {fmt_rate(rate)}; {describe_cpu(wall, used)}")
    say(describe_per_delivery(n, used))
    bench.report.add("(1b) CallbackClient.send alone (no DB)", fmt_rate(rate))
    return rate
