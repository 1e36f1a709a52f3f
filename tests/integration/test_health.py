"""/healthz, /readyz and /metrics served by a running worker."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import aiohttp
import asyncpg
from prometheus_client.parser import text_string_to_metric_families
from support import drain, fast_settings, poll_until, row_by_ref, running_worker

from reminderd.health import HealthServer
from reminderd.migrate import head_revision
from reminderd.settings import Settings
from reminderd.store import Store
from reminderd.testing import Receiver
from reminderd.worker import Worker

HEAD = head_revision("postgresql://unused")


@asynccontextmanager
async def serving(settings: Settings, worker: Worker, head: str | None = HEAD) -> AsyncIterator[str]:
    store = await Store.connect(settings.database_url, max_size=1)
    server = HealthServer(replace(settings, http_port=0), worker, store, head)
    await server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.stop()
        await store.close()


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_healthz_follows_the_claim_loop(database_url: str, tenant: str) -> None:
    settings = fast_settings(database_url)
    async with running_worker(settings) as worker, serving(settings, worker) as base:
        assert (await get(f"{base}/healthz"))[0] == 200
        worker.loop_deadline = time.monotonic() - 1  # as if the loop had stopped coming round
        status, body = await get(f"{base}/healthz")
    assert status == 503 and "wedged" in body


async def test_readyz_needs_the_schema_at_head_and_not_shutting_down(
    database_url: str, db: asyncpg.Connection, tenant: str
) -> None:
    settings = fast_settings(database_url)
    async with running_worker(settings) as worker, serving(settings, worker) as base:
        ready = await get(f"{base}/readyz")
        await db.execute("UPDATE reminderd.alembic_version SET version_num = '0000'")
        behind = await get(f"{base}/readyz")
        await db.execute("UPDATE reminderd.alembic_version SET version_num = $1", HEAD)
        worker.stop()
        stopping = await get(f"{base}/readyz")
    assert ready[0] == 200
    assert behind[0] == 503 and "migrations pending" in behind[1]
    assert stopping[0] == 503 and "shutting down" in stopping[1]


async def test_readyz_when_the_database_is_unreachable(database_url: str, tenant: str) -> None:
    settings = fast_settings(database_url)
    async with running_worker(settings) as worker:
        store = await Store.connect(database_url, max_size=1)
        await store.close()  # a closed pool: every query fails like a lost database
        server = HealthServer(replace(settings, http_port=0), worker, store, HEAD)
        await server.start()
        try:
            status, body = await get(f"http://127.0.0.1:{server.port}/readyz")
        finally:
            await server.stop()
    assert status == 503 and "database unreachable" in body


async def test_metrics_count_outcomes_by_tenant_and_time_them(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    receiver.script["flaky"] = [503]
    await db.execute("SELECT reminderd.schedule('acme', 'flaky', now())")
    await db.execute("SELECT reminderd.schedule('acme', 'ssrf', now(), '{}', 'http://10.0.0.1/x')")
    settings = fast_settings(database_url)
    worker = await drain(settings)
    assert (await row_by_ref(db, "flaky"))["status"] == "sent"
    assert (await row_by_ref(db, "ssrf"))["status"] == "dead"
    async with serving(settings, worker) as base:
        status, text = await get(f"{base}/metrics")
    got = samples(text)
    assert status == 200
    assert got[("reminderd_callbacks_total", (("outcome", "fired"), ("tenant", "acme")))] == 1
    assert got[("reminderd_callbacks_total", (("outcome", "retry_scheduled"), ("tenant", "acme")))] == 1
    assert got[("reminderd_callbacks_total", (("outcome", "refused"), ("tenant", "acme")))] == 1
    assert got[("reminderd_fire_lateness_seconds_count", ())] == 1
    assert got[("reminderd_callback_duration_seconds_count", ())] == 2
    assert got[("reminderd_claim_batch_size_count", ())] >= 1
    assert 0 <= got[("reminderd_last_poll_age_seconds", ())] < 5
    assert got[("reminderd_callbacks_in_flight", ())] == 0
    assert got[("reminderd_database_up", ())] == 1


async def test_tenant_labels_can_be_turned_off(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    await db.execute("SELECT reminderd.schedule('acme', 'one', now())")
    settings = fast_settings(database_url, metrics_tenant_labels=False)
    worker = await drain(settings)
    assert (await row_by_ref(db, "one"))["status"] == "sent"
    async with serving(settings, worker) as base:
        _, text = await get(f"{base}/metrics")
    assert samples(text)[("reminderd_callbacks_total", (("outcome", "fired"),))] == 1
    assert "tenant=" not in text


async def test_queue_depth_is_refreshed_from_the_database(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at) "
        "SELECT 'acme', 'later:' || i, now() + interval '1 hour' FROM generate_series(1, 7) AS i"
    )
    settings = fast_settings(database_url)
    async with running_worker(settings) as worker, serving(settings, worker) as base:

        async def pending_depth() -> float | None:
            got = samples((await get(f"{base}/metrics"))[1])
            return got.get(("reminderd_queue_depth", (("status", "pending"),)))

        assert await poll_until(pending_depth) == 7

