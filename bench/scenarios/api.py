"""(7) The HTTP API: `POST /v1/messages` one at a time at concurrency 32, and `POST
/v1/messages/batch` of 1,000, against the real `reminderd serve`; and, in the same run on the same
database, the SQL path the API calls (reminderd.schedule() at concurrency 32, schedule_many of
1,000), so the HTTP overhead is visible. The table holds 100,000 analyzed rows first, as a table in
use does (on an empty, unanalyzed one the planner's choices are not the ones production gets).

    .venv/bin/python bench/run.py --only api          # this scenario alone
    .venv/bin/python bench/run.py --only api --quick

The load comes from raw keep-alive HTTP/1.1 connections in this process (pre-built requests, the
answer's status line and length read: a few microseconds each), so the client's own cost stays
small beside the server's on this 2-core machine.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta

import asyncpg

from bench.harness import (
    TENANT,
    Bench,
    CpuMeter,
    Databases,
    cpu_seconds,
    describe_cpu,
    tenant_database,
    wait_for_quiet,
)
from bench.report import fmt_rate, percentile, say, section
from reminderd.store import Store, _schedule_item_v2
from reminderd.testing import DaemonProcess, add_api_key, daemon_env, free_port, running_daemon
from reminderd.validation import ScheduleRequest

CONCURRENCY = 32
BATCH = 1000
BACKLOG = 100_000
PLANNED_EMPTY_TARGET_US = 100  # PostgreSQL CPU per message; 740-1,000 before migration 0040, 34 after
SINGLE_TARGET_RPS = 2000
SINGLE_TARGET_P99_MS = 20
BATCH_TARGET_MPS = 20000
PAYLOAD = {
    "kind": "reminder",
    "user_id": 42,
    "channel": "email",
    "to": "alice@example.com",
    "text": "Your table for two is booked for 19:30 tomorrow.",
}


def _request(path: str, key: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def _load(
    port: int, requests: list[bytes], concurrency: int
) -> tuple[float, list[float], dict[int, int]]:
    """Send every request over `concurrency` keep-alive connections; (wall s, latencies ms, statuses)."""
    queue = iter(requests)
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for request in queue:
                started = time.perf_counter()
                status = await _exchange(reader, writer, request)
                latencies.append((time.perf_counter() - started) * 1000)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies, statuses


async def _backlog(db: asyncpg.Connection) -> None:
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, payload) "
        f"SELECT '{TENANT}', 'backlog:' || i, now() + interval '1 day' + i * interval '1 second', '{{}}' "
        "FROM generate_series(1, $1) AS i",
        BACKLOG,
    )
    await db.execute("VACUUM ANALYZE reminderd.scheduled_messages")


async def run(bench: Bench, dbs: Databases) -> None:
    report = bench.report
    n = 2_000 if bench.sizes.deliver_n < 10_000 else 10_000
    batches = 5 if n < 10_000 else 20
    section(
        f"(7) HTTP API: {n:,} single POST /v1/messages at concurrency {CONCURRENCY}, {batches} batches of "
        f"{BATCH:,}; the SQL path alike (table: {BACKLOG:,} rows)"
    )
    async with tenant_database(dbs, bench.receiver, "api") as (_, url, db):
        await _backlog(db)
        await db.execute("UPDATE reminderd.tenants SET api_rate_limit = 1000000")
        key = await add_api_key(db, TENANT, name="bench")
        port = free_port()
        env = daemon_env(
            url,
            REMINDERD_API_PORT=str(port),
            REMINDERD_LOG_LEVEL=bench.api_log_level,
            REMINDERD_API_POOL_SIZE="16",
        )
        body = json.dumps({"fire_in": "2h", "payload": PAYLOAD})
        async with running_daemon(env, command="serve", keep_lines=50, stdout_to_devnull=True) as api:
            await _wait_listening(api, port)
            await _measure_http(bench, dbs, api, port, key, body, n, batches)
        await _measure_sql(bench, dbs, url, n, batches)
    await _measure_planned_empty(bench, dbs, batches)
    _ = report


async def _wait_listening(api: DaemonProcess, port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        api.check_alive()
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reminderd serve did not listen within 30 s:\n{api.output()}") from None
            await asyncio.sleep(0.05)


async def _measure_http(
    bench: Bench, dbs: Databases, api: DaemonProcess, port: int, key: str, body: str, n: int, batches: int
) -> None:
    report = bench.report
    warm = [
        _request("/v1/messages", key, body.replace("{", f'{{"ref_id": "warm:{i}", ', 1).encode())
        for i in range(500)
    ]
    await _load(port, warm, CONCURRENCY)
    singles = [
        _request("/v1/messages", key, body.replace("{", f'{{"ref_id": "single:{i}", ', 1).encode())
        for i in range(n)
    ]
    await wait_for_quiet(bench.receiver.pid, dbs.postmaster_pid)
    meter = CpuMeter(api.pid, bench.receiver.pid, dbs.postmaster_pid)
    wall, latencies, statuses = await _load(port, singles, CONCURRENCY)
    cpu_wall, used = meter.stop()
    rps = n / wall
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    say(f"HTTP single: {fmt_rate(rps)} requests, p50 {p50:.1f} ms, p99 {p99:.1f} ms; statuses {statuses}")
    say("  " + describe_cpu(cpu_wall, _as_serve(used)))
    say("  " + _cpu_per(n, "request", _as_serve(used)))
    report.add(
        "API POST /v1/messages (c=32)",
        fmt_rate(rps),
        f">= {SINGLE_TARGET_RPS}/s",
        rps >= SINGLE_TARGET_RPS and statuses == {201: n},
    )
    report.add(
        "API POST /v1/messages p99", f"{p99:.1f} ms", f"< {SINGLE_TARGET_P99_MS} ms", p99 < SINGLE_TARGET_P99_MS
    )
    items = [
        json.dumps(
            {
                "messages": [
                    {"ref_id": f"batch:{b}:{i}", "fire_in": "2h", "payload": PAYLOAD} for i in range(BATCH)
                ]
            }
        ).encode()
        for b in range(batches)
    ]
    requests = [_request("/v1/messages/batch", key, item) for item in items]
    await _load(port, requests[:1], 1)
    meter = CpuMeter(api.pid, bench.receiver.pid, dbs.postmaster_pid)
    wall, latencies, statuses = await _load(port, requests[1:], 2)
    cpu_wall, used = meter.stop()
    mps = (batches - 1) * BATCH / wall
    say(
        f"HTTP batch of {BATCH}: {fmt_rate(mps)} messages (2 at once), {percentile(latencies, 50):.0f} ms per "
        f"batch (p50); statuses {statuses}"
    )
    say("  " + describe_cpu(cpu_wall, _as_serve(used)))
    say("  " + _cpu_per((batches - 1) * BATCH, "message", _as_serve(used)))
    report.add(
        "API batch of 1,000",
        f"{fmt_rate(mps)} msgs",
        f">= {BATCH_TARGET_MPS}/s",
        mps >= BATCH_TARGET_MPS and statuses == {200: batches - 1},
    )


async def _measure_sql(bench: Bench, dbs: Databases, url: str, n: int, batches: int) -> None:
    """The same work through the SQL the API calls, from asyncpg directly: no HTTP, no JSON."""
    report = bench.report
    pool = await asyncpg.create_pool(url, min_size=CONCURRENCY, max_size=CONCURRENCY)
    payload = json.dumps(PAYLOAD)
    try:
        semaphore = asyncio.Semaphore(CONCURRENCY)
        latencies: list[float] = []

        async def one(i: int, prefix: str) -> None:
            async with semaphore:
                started = time.perf_counter()
                await pool.fetchval(
                    "SELECT reminderd.schedule($1, $2, fire_in => $3, payload => $4::jsonb)",
                    TENANT,
                    f"{prefix}:{i}",
                    timedelta(hours=2),
                    payload,
                )
                latencies.append((time.perf_counter() - started) * 1000)

        await asyncio.gather(*(one(i, "sqlwarm") for i in range(500)))
        latencies.clear()
        meter = CpuMeter(None, bench.receiver.pid, dbs.postmaster_pid)
        started = time.perf_counter()
        await asyncio.gather(*(one(i, "sql") for i in range(n)))
        wall = time.perf_counter() - started
        cpu_wall, used = meter.stop()
        say(
            f"SQL reminderd.schedule() (c=32): {fmt_rate(n / wall)} calls, "
            f"p50 {percentile(latencies, 50):.1f} ms, "
            f"p99 {percentile(latencies, 99):.1f} ms"
        )
        say("  " + describe_cpu(cpu_wall, used))
        say("  " + _cpu_per(n, "call", used))
        report.add("SQL reminderd.schedule() (c=32)", fmt_rate(n / wall))
        store = Store(pool)
        requests = [
            [
                ScheduleRequest(TENANT, f"sqlbatch:{b}:{i}", payload, None, fire_in_s=7200.0)
                for i in range(BATCH)
            ]
            for b in range(batches)
        ]
        _ = _schedule_item_v2  # the composite type the Store sends
        await store.schedule_many(TENANT, requests[0], atomic=True)
        meter = CpuMeter(None, bench.receiver.pid, dbs.postmaster_pid)
        started = time.perf_counter()
        await asyncio.gather(*(_batch(store, chunk) for chunk in (requests[1::2], requests[2::2])))
        wall = time.perf_counter() - started
        cpu_wall, used = meter.stop()
        mps = (batches - 1) * BATCH / wall
        say(f"SQL reminderd.schedule_many() of {BATCH} (2 at once): {fmt_rate(mps)} messages")
        say("  " + describe_cpu(cpu_wall, used))
        say("  " + _cpu_per((batches - 1) * BATCH, "message", used))
        report.add("SQL schedule_many of 1,000", f"{fmt_rate(mps)} msgs")
    finally:
        await pool.close()


async def _measure_planned_empty(bench: Bench, dbs: Databases, batches: int) -> None:
    """schedule_many() of 1,000 on one connection whose generic plans (schedule_set's) were made
    on the empty table, as a new installation's pooled connections make them, the table then grown
    by the batches themselves: PostgreSQL's CPU per message over the second half. Before migration
    0040 each item's lookup walked the tenant's rows (740-1,000 us a message at 20,000 rows)."""
    async with tenant_database(dbs, bench.receiver, "api_planned_empty") as (_, url, _db):
        pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
        try:
            store = Store(pool)
            payload = json.dumps(PAYLOAD)
            requests = [[ScheduleRequest(TENANT, f"empty:{b}:{i}", payload, None, fire_in_s=7200.0)
                         for i in range(BATCH)] for b in range(batches)]
            half = batches // 2
            for chunk in requests[:half]:
                await store.schedule_many(TENANT, chunk, atomic=True)
            backend = await pool.fetchval("SELECT pg_backend_pid()")
            before = cpu_seconds(backend)
            started = time.perf_counter()
            for chunk in requests[half:]:
                await store.schedule_many(TENANT, chunk, atomic=True)
            wall = time.perf_counter() - started
            used_us = 1e6 * (cpu_seconds(backend) - before) / ((batches - half) * BATCH)
        finally:
            await pool.close()
    rows = batches * BATCH
    say(f"SQL schedule_many() of {BATCH} on a connection that planned on the empty table, grown to {rows:,} "
        f"rows: {fmt_rate((batches - half) * BATCH / wall)} messages, "
        f"PostgreSQL {used_us:.0f} us a message (serial)")
    bench.report.add("SQL schedule_many, planned on an empty table", f"{used_us:.0f} us/msg (PG)",
                     f"< {PLANNED_EMPTY_TARGET_US} us", used_us < PLANNED_EMPTY_TARGET_US)


async def _batch(store: Store, chunks: list[list[ScheduleRequest]]) -> None:
    for chunk in chunks:
        await store.schedule_many(TENANT, chunk, atomic=True)


def _cpu_per(n: int, unit: str, used: dict[str, float]) -> str:
    """CPU per request (or message, or call) by process, in microseconds."""
    parts = [f"{name} {1e6 * seconds / n:.0f}" for name, seconds in used.items()
             if name not in ("other", "receiver") and seconds > 0]
    return f"CPU per {unit} (us): " + ", ".join(parts)


def _as_serve(used: dict[str, float]) -> dict[str, float]:
    """The CPU meter's "daemon" is `reminderd serve` here."""
    return {("serve" if name == "daemon" else name): seconds for name, seconds in used.items()}
