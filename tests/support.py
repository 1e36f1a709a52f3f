"""Test helpers: a real HTTP receiver that records callbacks and answers as scripted."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web

from reminderd.callback import CallbackClient
from reminderd.jobs import Job
from reminderd.settings import Settings
from reminderd.store import Store
from reminderd.worker import Worker

TEST_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SOME_OCCURRENCE = datetime(2026, 12, 24, 3, 30, tzinfo=UTC)


def make_job(**changes: Any) -> Job:
    """A claimed one-off message, as the claim query would return it, with `changes` applied."""
    base = Job(
        id=42,
        tenant_id="acme",
        ref_id="invoice-7",
        payload_json='{"amount": 12.5, "currency": "EUR"}',
        callback_url="https://hooks.example/cb",
        scheduled_for=SOME_OCCURRENCE,
        attempt=1,
        max_attempts=None,
        signing_secret=TEST_SECRET,
    )
    return replace(base, **changes)


@dataclass
class Received:
    webhook_id: str
    timestamp: str
    signature: str
    body: bytes
    headers: dict[str, str]
    received_at: float  # time.time()

    @property
    def message(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    """Answers 200 unless `script[ref_id]` lists statuses to answer first (one per request).

    `delay_s` holds every request before answering (to keep callbacks in flight); requests are
    recorded on arrival.
    """

    script: dict[str, list[int | tuple[int, dict[str, str]] | tuple[int, dict[str, str], bytes]]] = field(
        default_factory=dict
    )
    delay_s: float = 0.0
    received: list[Received] = field(default_factory=list)
    url: str = ""
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _runner: web.AppRunner | None = None

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/callbacks"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        item = Received(
            webhook_id=request.headers.get("webhook-id", ""),
            timestamp=request.headers.get("webhook-timestamp", ""),
            signature=request.headers.get("webhook-signature", ""),
            body=body,
            headers=dict(request.headers),
            received_at=time.time(),
        )
        ref = item.message.get("ref_id", "") if body else ""
        answers = self.script.get(ref)
        answer = answers.pop(0) if answers else 200
        if not isinstance(answer, tuple):
            answer = (answer, {})
        status, headers, body_out = (*answer, b"scripted answer")[:3]
        async with self._changed:
            self.received.append(item)  # on arrival: in flight counts as received
            self._changed.notify_all()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)  # holding the request open is what is under test
        return web.Response(status=status, headers=headers, body=body_out)

    async def wait_for(self, predicate: Callable[[list[Received]], bool], timeout_s: float = 15) -> None:
        """Wait until `predicate(received)` holds; fail with what arrived if it never does."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: predicate(self.received)), timeout_s)
            except TimeoutError:
                got = len(self.received)
                raise AssertionError(f"receiver got {got} callbacks: condition not met") from None

    def by_ref(self) -> dict[str, list[Received]]:
        grouped: dict[str, list[Received]] = defaultdict(list)
        for item in self.received:
            grouped[item.message["ref_id"]].append(item)
        return grouped


async def poll_until(check: Callable[[], Any], timeout_s: float = 15, interval_s: float = 0.05) -> Any:
    """Evaluate the async `check` until it returns something truthy; bounded, never a blind sleep."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s (last value {value!r})")
        await asyncio.sleep(interval_s)


LOCALHOST = (ipaddress.ip_network("127.0.0.0/8"),)


def fast_settings(database_url: str, **overrides: Any) -> Settings:
    base = Settings(
        database_url=database_url,
        poll_interval_s=0.2,
        retry_base_s=0.05,
        retry_cap_s=0.2,
        callback_timeout_s=2,
        lease_s=10,
        shutdown_timeout_s=5,
        allowed_callback_networks=LOCALHOST,
    )
    return replace(base, **overrides)


@asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[Worker]:
    store = await Store.connect(settings.database_url)
    client = CallbackClient(settings)
    worker = Worker(settings, store, client)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.ready.wait(), 10)
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 20)
        await client.close()
        await store.close()


async def drain(settings: Settings, *, due_within_s: float | None = None, timeout_s: float = 30) -> Worker:
    """Run a worker in burst mode, `Worker.run(until_idle=True)`: claim, send and record until
    nothing is left to do soon, then stop. No polling, no sleeps; bounded by `timeout_s`."""
    store = await Store.connect(settings.database_url)
    client = CallbackClient(settings)
    worker = Worker(settings, store, client)
    try:
        await asyncio.wait_for(worker.run(until_idle=True, due_within_s=due_within_s), timeout_s)
    except TimeoutError:
        raise AssertionError(f"the worker was not idle within {timeout_s}s") from None
    finally:
        await client.close()
        await store.close()
    return worker


async def status_of(db: asyncpg.Connection, ref: str) -> asyncpg.Record:
    return await db.fetchrow(
        "SELECT * FROM reminderd.scheduled_messages WHERE ref_id = $1 ORDER BY id DESC LIMIT 1", ref
    )


def settled(db: asyncpg.Connection, ref: str, *statuses: str) -> Callable[[], Any]:
    async def check() -> asyncpg.Record | None:
        row = await status_of(db, ref)
        return row if row is not None and row["status"] in statuses else None

    return check
