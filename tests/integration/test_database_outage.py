"""Losing the database is not fatal: the worker backs off, reconnects and carries on, and says so
in JSON lines only."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs
from support import fast_daemon_env, fast_settings, poll_until, running_worker, settled

from reminderd.callback import CallbackClient
from reminderd.store import Store
from reminderd.testing import Cluster, Received, Receiver, running_daemon
from reminderd.worker import Worker

# The daemon's sessions (its pool's and its LISTEN one): what a PostgreSQL or PgBouncer restart, or
# a failover, does to them.
TERMINATE_DAEMONS = ("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                     " WHERE datname = current_database() AND application_name LIKE 'reminderd%'")


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


@pytest.mark.parametrize("failover", [False, True], ids=["sessions-terminated", "read-only-for-a-while"])
async def test_an_outcome_is_written_through_lost_sessions_not_dropped_and_sent_again(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str, failover: bool
) -> None:
    """The daemon's sessions are cut while a callback is in flight (and, failing over, the next
    ones are read-only for a while): writing its outcome may fail (asyncpg's InternalClientError
    when the query meets a session being terminated, then the read-only node's 25006), and is
    retried until the database takes it. The callback is sent once, its attempt logged once."""
    name = await db.fetchval("SELECT current_database()")
    cut = asyncio.Event()
    cutter = await asyncpg.connect(database_url)  # its own session: `db` polls meanwhile

    async def cut_the_sessions(_request: Received) -> None:
        if not cut.is_set():
            cut.set()
            if failover:
                await cutter.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
            await cutter.execute(TERMINATE_DAEMONS)

    receiver.before_answer = cut_the_sessions
    await db.execute("SELECT reminderd.schedule('acme', 'once', now())")
    try:
        with capture_logs() as logs:
            async with running_worker(fast_settings(database_url, lease_s=6)):
                if failover:  # the new sessions refuse writes until the node is promoted
                    await poll_until(lambda: _refused_or_recorded(db, logs), timeout_s=10)
                    await cutter.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = off')
                    await cutter.execute(TERMINATE_DAEMONS)
                row = await poll_until(settled(db, "once", "sent", "pending", "dead"), timeout_s=20)
    finally:
        await cutter.close()
    assert cut.is_set()
    assert (row["status"], row["attempts"]) == ("sent", 1), [(e["event"], e.get("error")) for e in logs]
    assert [r.message["ref_id"] for r in receiver.received] == ["once"]  # sent once, not again at its lease
    deliveries = await db.fetch("SELECT attempt, status_code, event FROM reminderd.deliveries")
    assert [tuple(d) for d in deliveries] == [(1, 200, "fired")]
    assert [e for e in logs if e["event"] == "record_rejected"] == []


async def _refused_or_recorded(db: asyncpg.Connection, logs: Sequence[Mapping[str, Any]]) -> bool:
    """Writing the outcome met the read-only node (retried, or rejected: the defect this guards
    against, which the assertions then show), or it was written (by a session that began before
    the database turned read-only, and was not terminated yet)."""
    if any(e["event"] == "record_rejected" or (e["event"] == "record_failed"
                                               and "ReadOnlySQLTransactionError" in str(e["error"]))
           for e in logs):
        return True
    status: str = await db.fetchval("SELECT status FROM reminderd.scheduled_messages WHERE ref_id = 'once'")
    return status != "picked"


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


async def test_during_an_outage_every_line_the_daemon_writes_is_json(
    database_url: str, pg_cluster: Cluster
) -> None:
    """asyncpg's pool (and any library) logs through the standard logging module: those records
    come out as JSON lines like the daemon's own, exception summarised, no traceback, and the same
    message at most once per REPEAT_S while the outage lasts, on stdout and nowhere else."""
    env = fast_daemon_env(database_url)
    async with running_daemon(env) as daemon:
        await daemon.wait_logged("ready")
        pg_cluster.stop("fast")
        try:
            await daemon.wait_logged("claim_failed")
            # The pool keeps trying to restore its minimum size: asyncpg logs that with a traceback.
            await daemon.wait_for_log(lambda log: any(line.get("logger") == "asyncpg.pool" for line in log))
        finally:
            pg_cluster.start()
        db = await asyncpg.connect(database_url)
        await db.close()
    lines = list(daemon.lines)
    assert lines
    not_json = [line for line in lines if not _is_json_object(line)]
    assert not_json == []
    pool = [line for line in daemon.log if line.get("logger") == "asyncpg.pool"]
    assert pool and all(line["level"] == "warning" and "traceback" not in line for line in pool)
    # Refused, not yet accepting, or (under load, a connection caught by the stopping server) reset.
    failures = ("CannotConnectNowError", "ConnectionRefusedError", "ConnectionResetError", "OSError")
    assert all(str(line["error"]).startswith(failures) for line in pool), [line["error"] for line in pool]
    by_message = Counter((line["event"], str(line["error"]).partition(":")[0]) for line in pool)
    assert max(by_message.values()) == 1  # rate-limited: once per REPEAT_S (30 s) each


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False
