"""Losing the database is not fatal: the worker backs off, reconnects and carries on."""

from __future__ import annotations

import asyncpg
from support import Receiver, fast_settings, poll_until, running_worker, settled

from reminderd.pgcluster import Cluster


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
