"""Losing the database is not fatal: the worker backs off, reconnects and carries on."""

from __future__ import annotations

import asyncio
import time

import asyncpg
from support import fast_settings, poll_until, running_worker, settled

from reminderd.callback import CallbackClient
from reminderd.store import Store
from reminderd.testing import Cluster, Receiver
from reminderd.worker import Worker


async def test_worker_survives_a_database_restart(
    database_url: str, receiver: Receiver, tenant: str, pg_cluster: Cluster
) -> None:
    async with running_worker(fast_settings(database_url)) as worker:
        db = await asyncpg.connect(database_url)
        await db.execute("SELECT reminderd.schedule('acme', 'before', now())")
        await poll_until(settled(db, "before", "sent"))
        await db.close()

        pg_cluster.stop("fast")  # every connection, the LISTEN one included, is cut
        ticks_before_restart = worker.ticks
        pg_cluster.start()

        db = await asyncpg.connect(database_url)
        await db.execute("SELECT reminderd.schedule('acme', 'after', now() + interval '200 milliseconds')")
        after = await poll_until(settled(db, "after", "sent"), timeout_s=30)
        await db.close()

    assert worker.ticks > ticks_before_restart
    assert after["attempts"] == 1
    assert [r.message["ref_id"] for r in receiver.received] == ["before", "after"]


async def test_stop_during_a_database_outage_still_exits_within_the_shutdown_timeout(
    database_url: str, receiver: Receiver, tenant: str, pg_cluster: Cluster
) -> None:
    receiver.delay_s = 1.0
    db = await asyncpg.connect(database_url)
    await db.execute("SELECT reminderd.schedule('acme', 'in-flight', now())")
    await db.close()
    settings = fast_settings(database_url, shutdown_timeout_s=2)
    store = await Store.connect(database_url)
    client = CallbackClient(settings)
    worker = Worker(settings, store, client)
    running = asyncio.create_task(worker.run())
    try:
        await receiver.wait_for(lambda got: len(got) == 1)
        pg_cluster.stop("fast")
        worker.stop()
        started = time.monotonic()
        await asyncio.wait_for(running, 30)
        took_s = time.monotonic() - started
    finally:
        pg_cluster.start()
        await client.close()
        await store.close()
    assert took_s < 15  # shutdown timeout 2 s plus bounded retries, not "until the database is back"
