"""(12) The dashboard's pages at size, and (13) its live feed held open by 50 browsers.

(12) On bench/dashboard_data.py's database (1,000,000 messages and 5,000,000 deliveries, each with
the change it made; --quick: a tenth), the real `reminderd serve` renders each page for an operator
(every tenant) and for one tenant's key; the server time of each (its Server-Timing header: from
the request to the last byte of HTML, database included) is the median of several requests, and
the target is under 200 ms. The overview is measured cold (its 2-second cache expired before each
request) as well as warm.

(13) An idle daemon fires messages due at random instants over the next seconds (as (3) does) with
no dashboard open, then again with 50 Server-Sent Events streams of the live feed open on
`reminderd serve`; the lateness of the two runs is compared, and every stream must have received
every fire.

(13b) What the dashboard costs the daemon's write path even with nobody looking (the triggers that
keep its aggregates and notify the feed): a burst of rows due at one instant drained with those
triggers, and with them disabled.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import statistics
import time
from collections import Counter
from collections.abc import Sequence

import aiohttp
import asyncpg

from bench.dashboard_data import load
from bench.harness import (
    PAYLOAD_SQL,
    TENANT,
    Bench,
    CpuMeter,
    Databases,
    bench_daemon,
    received_at_least,
    sent_at_least,
    tenant_database,
    wait_for_quiet,
    wait_idle,
    wait_until,
)
from bench.report import percentile, say, section
from reminderd.testing import DaemonProcess, add_api_key, daemon_env, free_port, running_daemon

TARGET_MS = 200.0
SAMPLES = 7
STREAMS = 50
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
TIMING = re.compile(r"app;dur=([0-9.]+)")


def _serve(url: str, port: int) -> contextlib.AbstractAsyncContextManager[DaemonProcess]:
    """The real `reminderd serve` (its dashboard included) on `port`."""
    env = daemon_env(url, REMINDERD_API_PORT=str(port), REMINDERD_LOG_LEVEL="warning",
                     REMINDERD_SESSION_SECRET="bench-dashboard-session-secret")
    return running_daemon(env, command="serve", keep_lines=50, stdout_to_devnull=True)


async def _listening(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reminderd serve did not listen on {port} within {timeout_s} s") from None
            await asyncio.sleep(0.05)


async def sign_in(session: aiohttp.ClientSession, base: str, key: str) -> None:
    async with session.get(f"{base}/login") as page:
        token = CSRF.search(await page.text())
    assert token is not None, "no sign-in form"
    form = {"key": key, "csrf": token[1], "next": "/dashboard/"}
    async with session.post(f"{base}/login", data=form) as answer:
        if answer.status != 200 or "/login" in str(answer.url):
            raise RuntimeError(f"signing in failed: HTTP {answer.status}")


async def _server_ms(session: aiohttp.ClientSession, url: str) -> float:
    async with session.get(url, allow_redirects=False) as answer:
        await answer.read()
        if answer.status != 200:
            raise RuntimeError(f"{url}: HTTP {answer.status}")
        found = TIMING.search(answer.headers.get("Server-Timing", ""))
    if found is None:
        raise RuntimeError(f"{url}: no Server-Timing")
    return float(found[1])


async def _measure(session: aiohttp.ClientSession, url: str, *, cold: bool = False) -> list[float]:
    await _server_ms(session, url)  # warm the server's statement cache and the database's buffers
    samples = []
    for _ in range(SAMPLES):
        if cold:
            await asyncio.sleep(2.1)  # past the overview's cache
        samples.append(await _server_ms(session, url))
    return samples


async def pages(bench: Bench, dbs: Databases) -> None:
    report = bench.report
    messages = bench.sizes.backlog_n
    deliveries = 5 * messages
    section(f"(12) dashboard pages: server time on {messages:,} messages and {deliveries:,} deliveries "
            f"(median of {SAMPLES}; target < {TARGET_MS:.0f} ms each)")
    name, url = await dbs.fresh("dashboard")
    db = await asyncpg.connect(url)
    try:
        started = time.monotonic()
        counts = await load(db, messages=messages, deliveries=deliveries)
        loaded = ", ".join(f"{k} {v:,}" for k, v in counts.items())
        say(f"loaded in {time.monotonic() - started:.0f}s: {loaded}")
        operator = await add_api_key(db, None, name="bench-ops")
        tenant_key = await add_api_key(db, "t07", name="bench-t07")
        recurring = await db.fetchval(
            "SELECT message_id FROM reminderd.deliveries GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")
    finally:
        await db.close()
    port = free_port()
    base = f"http://127.0.0.1:{port}/dashboard"
    views = [
        ("overview, operator, cold", "/", True),
        ("overview, operator, warm", "/", False),
        ("overview, one tenant, cold", "/", True),
        ("upcoming, operator", "/upcoming", False),
        ("upcoming, one tenant", "/upcoming", False),
        ("upcoming, a bar's messages", "/upcoming?from={hour}&to={next_hour}", False),
        ("live feed, operator", "/feed", False),
        ("live feed, one tenant", "/feed", False),
        ("live feed, retries only", "/feed?status=retried", False),
        ("search, a ref prefix", "/messages?q=ref%3A1234&exact=0", False),
        ("message page, the recurring row with most attempts", f"/messages/{recurring}", False),
        ("dead letters, operator", "/dead", False),
        ("dead letters, error contains 503", "/dead?error=503", False),
    ]
    results: list[tuple[str, list[float]]] = []
    async with _serve(url, port):
        await _listening(port)
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as ops, aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True)
        ) as tenant:
            await sign_in(ops, base, operator)
            await sign_in(tenant, base, tenant_key)
            hour = time.strftime("%Y-%m-%dT%H:00:00%%2B00:00", time.gmtime(time.time() + 5 * 3600))
            next_hour = time.strftime("%Y-%m-%dT%H:00:00%%2B00:00", time.gmtime(time.time() + 6 * 3600))
            for title, path, cold in views:
                session = tenant if "one tenant" in title else ops
                samples = await _measure(session, base + path.format(hour=hour, next_hour=next_hour), cold=cold)
                results.append((title, samples))
                say(f"{title:55s} median {statistics.median(samples):7.1f} ms, max {max(samples):7.1f} ms")
    await dbs.admin.execute(f'DROP DATABASE "{name}"')
    for title, samples in results:
        median = statistics.median(samples)
        report.add(f"(12) {title}", f"{median:.1f} ms (max {max(samples):.0f})", f"< {TARGET_MS:.0f} ms",
                   median < TARGET_MS)


async def _fire_at_random(db: asyncpg.Connection, bench: Bench, label: str, n: int, span_s: float,
                          daemon: DaemonProcess) -> list[float]:
    """n messages due at random instants over the next span_s seconds; their lateness (ms)."""
    receiver = bench.receiver
    receiver.reset()
    rng = random.Random(20261201)
    base = time.time() + 1.0
    fire_at = {f"{label}:{k}": base + rng.uniform(0, span_s) for k in range(n)}
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, payload) "
        f"SELECT '{TENANT}', ref, to_timestamp(at), {PAYLOAD_SQL.format(i='0')} "
        "FROM unnest($1::text[], $2::float8[]) AS u(ref, at)",
        list(fire_at), list(fire_at.values()),
    )

    async def progress() -> str:
        return f"received {receiver.count()} of {n}"

    await wait_until(f"{label} messages received", received_at_least(receiver, n), max(fire_at.values()) + 15,
                     daemon, progress)
    seen: Counter[str] = Counter()
    lateness = []
    for arrived, _webhook_id, ref, _scheduled in receiver.dump():
        seen[ref] += 1
        if seen[ref] == 1:
            lateness.append(1000 * (arrived - fire_at[ref]))
    return lateness


class Tally:
    """Fires received per stream; `all_in` is set once every stream has `target` of them."""

    def __init__(self, streams: int) -> None:
        self.counts = [0] * streams
        self.target = 0
        self.all_in = asyncio.Event()

    def expect(self, target: int) -> None:
        self.target = target
        self.all_in.clear()

    def got(self, stream: int) -> None:
        self.counts[stream] += 1
        if self.target and min(self.counts) >= self.target:
            self.all_in.set()


async def _stream(session: aiohttp.ClientSession, url: str, tally: Tally, stream: int, ready: asyncio.Event
                  ) -> None:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as answer:
        if answer.status != 200:
            raise RuntimeError(f"feed stream: HTTP {answer.status}")
        async for line in answer.content:
            if line.startswith(b"retry:"):
                ready.set()
            elif line.startswith(b"event: fire"):
                tally.got(stream)


def _late(values: Sequence[float]) -> str:
    return f"p50 {percentile(list(values), 50):.1f} ms, p99 {percentile(list(values), 99):.1f} ms"


async def feed(bench: Bench, dbs: Databases) -> None:
    report = bench.report
    n, span = bench.sizes.timer_n, bench.sizes.timer_span_s
    section(f"(13) live feed: an idle daemon's lateness ({n} messages at random instants over {span:g}s), "
            f"without and then with {STREAMS} feed streams open")
    async with tenant_database(dbs, bench.receiver, "feed") as (name, url, db):
        operator = await add_api_key(db, None, name="bench-ops")
        port = free_port()
        base = f"http://127.0.0.1:{port}/dashboard"
        async with bench_daemon(bench, url) as daemon, _serve(url, port):
            await wait_idle(daemon, dbs.admin, name)
            await _listening(port)
            without = await _fire_at_random(db, bench, "alone", n, span, daemon)
            say(f"no feed open:        {_late(without)}")
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                             connector=aiohttp.TCPConnector(limit=STREAMS + 5)) as session:
                await sign_in(session, base, operator)
                tally = Tally(STREAMS)
                readies = [asyncio.Event() for _ in range(STREAMS)]
                streams = [asyncio.create_task(_stream(session, f"{base}/feed/stream", tally, i, readies[i]))
                           for i in range(STREAMS)]
                try:
                    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 30)
                    tally.expect(n)
                    with_feed = await _fire_at_random(db, bench, "watched", n, span, daemon)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(tally.all_in.wait(), 10)
                finally:
                    for task in streams:
                        task.cancel()
                    await asyncio.gather(*streams, return_exceptions=True)
            say(f"{STREAMS} feeds open:      {_late(with_feed)}")
            received = tally.counts
            say(f"fires each stream received: min {min(received)}, max {max(received)} (of {n})")
    p99_without, p99_with = percentile(without, 99), percentile(with_feed, 99)
    report.add("(13) lateness p99, no feed open", f"{p99_without:.1f} ms")
    report.add(f"(13) lateness p99, {STREAMS} feeds open", f"{p99_with:.1f} ms", "< 50 ms and not raised",
               p99_with < 50 and p99_with <= max(2 * p99_without, p99_without + 10))
    report.add(f"(13) fires every one of {STREAMS} streams received", f"{min(received)} of {n}", f"{n}",
               min(received) == n)


async def _burst_drain(bench: Bench, dbs: Databases, label: str, *, triggers: bool) -> tuple[float, float]:
    """(seconds from T to the last of a burst's rows `sent`, PostgreSQL CPU seconds over the burst),
    with the dashboard's counting triggers on or off (a fresh database each time)."""
    n = bench.sizes.burst_n
    receiver = bench.receiver
    async with tenant_database(dbs, receiver, label) as (name, url, db):
        if not triggers:
            await db.execute("ALTER TABLE reminderd.events DISABLE TRIGGER events_count_fires;"
                             "ALTER TABLE reminderd.deliveries DISABLE TRIGGER deliveries_count_fires")
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
            await asyncio.sleep(max(0.0, due - time.time() - 0.05))  # the meter covers the burst only
            meter = CpuMeter(daemon.pid, receiver.pid, dbs.postmaster_pid)

            async def progress() -> str:
                return f"received {receiver.count()} of {n}"

            await wait_until("burst rows sent", sent_at_least(db, n), due + 60, daemon, progress,
                             interval_s=0.02)
            _, used = meter.stop()
            last_sent: float = await db.fetchval(
                "SELECT extract(epoch FROM max(sent_at))::float8 FROM reminderd.scheduled_messages")
            counted = await db.fetchval("SELECT coalesce(sum(delivered), 0) FROM reminderd.fire_counts"
                                        " WHERE period = 'minute'")
        if counted != (n if triggers else 0):
            raise RuntimeError(f"fire_counts holds {counted} deliveries of {n}")
    return last_sent - due, used["postgres"]


async def trigger_cost(bench: Bench, dbs: Databases) -> None:
    """(13b) What the dashboard's counting triggers (and the feed's NOTIFY) cost the daemon: a burst
    drained with them and with them disabled, alternately, three times each; medians."""
    n = bench.sizes.burst_n
    section(f"(13b) the dashboard's triggers on the write path: {n:,} rows due at one instant, drained "
            "with and without them (3 times each)")
    on: list[tuple[float, float]] = []
    off: list[tuple[float, float]] = []
    for round_ in range(3):
        on.append(await _burst_drain(bench, dbs, f"counted{round_}", triggers=True))
        off.append(await _burst_drain(bench, dbs, f"uncounted{round_}", triggers=False))
    drain_on, drain_off = (statistics.median(d for d, _ in runs) for runs in (on, off))
    cpu_on, cpu_off = (1e6 * statistics.median(c for _, c in runs) / n for runs in (on, off))
    say(f"drained in {drain_on:.3f} s with the triggers ({n / drain_on:,.0f}/s), {drain_off:.3f} s without "
        f"({n / drain_off:,.0f}/s); PostgreSQL CPU per delivery {cpu_on:.0f} us with, {cpu_off:.0f} us without")
    bench.report.add("(13b) burst drain, counting triggers on / off", f"{drain_on:.2f} s / {drain_off:.2f} s")
    bench.report.add("(13b) PostgreSQL CPU per delivery, triggers on / off", f"{cpu_on:.0f} / {cpu_off:.0f} us",
                     "within 25 %", cpu_on <= 1.25 * cpu_off)
