"""(1) HTTP ceiling: what one Python process can push at the receiver, signing every body, with the
daemon's own HTTP client (reminderd.http1) and nothing else: no database, no CallbackClient."""

from __future__ import annotations

import asyncio
import ipaddress
import time

from yarl import URL

from bench.harness import CONCURRENCY, Bench, CpuMeter, describe_cpu, describe_per_delivery, wait_for_quiet
from bench.receiver import ReceiverProcess
from bench.report import fmt_rate, percentile, say, section
from reminderd.http1 import Http1Client
from reminderd.signing import generate_secret, sign

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)

BODY_FORMAT = (
    b'{"id":%d,"tenant_id":"bench","ref_id":"ceiling:%d","scheduled_for":"2026-11-23T09:30:00.000Z",'
    b'"attempt":1,"payload":{"to": "alice@example.com", "kind": "reminder", "text": "Your table for two '
    b'is booked for 19:30 tomorrow.", "channel": "email", "user_id": %d}}'
)


async def run(bench: Bench, runs: int = 3) -> float:
    """The median rate of `runs` runs, in POSTs per second."""
    n, receiver = bench.sizes.ceiling_n, bench.receiver
    section(f"(1) HTTP ceiling: reminderd.http1 alone, {n:,} signed POSTs, concurrency {CONCURRENCY}, "
            f"median of {runs} runs")
    say(f"body {len(BODY_FORMAT % (0, 0, 0))} bytes, signed with reminderd.signing.sign per request")
    rates = []
    for run_number in range(1, runs + 1):
        await wait_for_quiet(receiver.pid, None)
        rate, wall, used = await asyncio.wait_for(_ceiling_run(receiver, n), 120)
        rates.append(rate)
        say(f"run {run_number}: {n:,} POSTs in {n / rate:.3f}s -> {fmt_rate(rate)}; {describe_cpu(wall, used)}")
        say(f"       {describe_per_delivery(n, used)}")
    rate = percentile(rates, 50)
    say(f"HTTP ceiling (median): {fmt_rate(rate)}")
    bench.report.add("(1) HTTP ceiling (reminderd.http1 -> receiver)", fmt_rate(rate))
    return rate


async def _ceiling_run(receiver: ReceiverProcess, n: int) -> tuple[float, float, dict[str, float]]:
    receiver.reset()
    secret = generate_secret()
    failures = 0
    ids = iter(range(1, n + 1))
    url = URL(receiver.url)
    client = Http1Client(LOOPBACK, headers=(("User-Agent", "reminderd-bench"),
                                            ("Content-Type", "application/json")))
    try:

        async def worker() -> None:
            nonlocal failures
            for i in ids:
                body = BODY_FORMAT % (i, i, i)
                webhook_id = f"msg_{i}_1795426200000"
                timestamp_s = int(time.time())
                headers = (
                    ("webhook-id", webhook_id),
                    ("webhook-timestamp", str(timestamp_s)),
                    ("webhook-signature", sign(secret, webhook_id, timestamp_s, body)),
                )
                response = await client.post(url, body, headers, 10.0)
                if response.status != 200:
                    failures += 1

        meter = CpuMeter(None, receiver.pid, None)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - started
        wall, used = meter.stop()
    finally:
        await client.close()
    received = receiver.count()
    if failures or received != n:
        raise RuntimeError(f"{failures} non-200 answers, receiver counted {received} of {n}")
    return n / elapsed, wall, used
