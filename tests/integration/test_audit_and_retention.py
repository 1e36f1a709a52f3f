"""The audit trail (reminderd.trail: the events the triggers write, and each attempt's row in
reminderd.deliveries with the change it made) and retention (reminderd.prune, run by the daemon)
against a real PostgreSQL.

The trail must answer "why didn't this reminder fire?" from one query on (tenant_id, ref_id); the
pruner must delete exactly what is past its retention, in batches, one pruner at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from support import LOOKBACK_S, drain, fast_settings, inserted_before_the_outage, row_by_ref

from reminderd.housekeeping import Pruner
from reminderd.store import Pruned, Store
from reminderd.testing import Receiver

pytestmark = pytest.mark.shared_database

# The one query a DBA runs: everything that happened to a reference, in order.
WHY_DIDNT_IT_FIRE = """
SELECT t.message_id, t.event, t.status, t.fire_at, t.reason, t.actor, t.at AS created_at
FROM reminderd.trail t
WHERE t.tenant_id = $1 AND t.ref_id = $2
ORDER BY t.at, t.event_id, t.delivery_id
"""


async def trail(db: asyncpg.Connection, ref: str, tenant_id: str = "acme") -> list[asyncpg.Record]:
    return list(await db.fetch(WHY_DIDNT_IT_FIRE, tenant_id, ref))


def names(events: list[asyncpg.Record]) -> list[str]:
    return [e["event"] for e in events]


# The audit trail ------------------------------------------------------------------------------


async def test_created_replaced_then_cancelled_reads_as_one_story(db: asyncpg.Connection, tenant: str) -> None:
    me = await db.fetchval("SELECT current_user")
    first = await db.fetchval("SELECT reminderd.schedule('acme', 'booking:b7d2:24h', now() + interval '1 day')")
    second = await db.fetchval(
        "SELECT reminderd.schedule('acme', 'booking:b7d2:24h', now() + interval '2 days')"
    )
    assert await db.fetchval("SELECT reminderd.cancel('acme', 'booking:b7d2:24h')") == 1

    events = await trail(db, "booking:b7d2:24h")

    assert [(e["message_id"], e["event"], e["status"]) for e in events] == [
        (first, "created", "pending"),
        (first, "replaced", "cancelled"),
        (second, "created", "pending"),
        (second, "cancelled", "cancelled"),
    ]
    assert [e["reason"] for e in events] == [None, "replaced by a new schedule", None, "cancelled"]
    assert {e["actor"] for e in events} == {me}
    second_fire_at = await db.fetchval("SELECT fire_at FROM reminderd.scheduled_messages WHERE id = $1", second)
    assert events[2]["fire_at"] == events[3]["fire_at"] == second_fire_at


async def test_worker_outcomes_are_events_but_claims_are_not(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    receiver.script["flaky"] = [503]
    receiver.script["gone"] = [404]  # permanent (a 410 would disable the endpoint)
    await db.execute("SELECT reminderd.schedule('acme', 'flaky', now())")
    await db.execute("SELECT reminderd.schedule('acme', 'gone', now())")

    await drain(fast_settings(database_url))
    assert (await row_by_ref(db, "flaky"))["status"] == "sent"
    assert (await row_by_ref(db, "gone"))["status"] == "dead"

    flaky = await trail(db, "flaky")
    assert names(flaky) == ["created", "retry_scheduled", "fired"]
    assert [e["status"] for e in flaky] == ["pending", "pending", "sent"]
    assert flaky[1]["reason"].startswith("attempt 1 failed: HTTP 503")
    assert flaky[2]["reason"] is None
    gone = await trail(db, "gone")
    assert names(gone) == ["created", "dead_lettered"]
    assert gone[1]["status"] == "dead" and gone[1]["reason"].startswith("permanent failure: HTTP 404")
    assert await db.fetchval("SELECT count(*) FROM reminderd.trail WHERE status = 'picked'") == 0
    # The attempts themselves are in deliveries, one per claim.
    assert await db.fetchval("SELECT count(*) FROM reminderd.deliveries") == 3


async def test_a_message_missed_beyond_the_lookback_is_expired_with_the_reason(
    db: asyncpg.Connection, store: Store, tenant: str
) -> None:
    async with inserted_before_the_outage(db):
        await db.execute(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
            " VALUES ('acme', 'missed', '2026-01-01T09:00:00Z'::timestamptz)"
        )
    await db.execute("UPDATE reminderd.scheduled_messages SET updated_at = now() - interval '1 hour'")

    assert len(await store.expire_missed(lookback_s=LOOKBACK_S)) == 1

    events = await trail(db, "missed")
    assert names(events) == ["created", "expired"]
    assert events[1]["status"] == "expired"
    assert events[1]["reason"] == (
        "missed: due at 2026-01-01T09:00:00Z, more than 120 s before a daemon could send it"
        " (REMINDERD_LOOKBACK)"
    )


async def test_pause_resume_reschedule_requeue_and_lease_expiry_are_named(
    db: asyncpg.Connection, store: Store, tenant: str
) -> None:
    await db.execute("SELECT reminderd.schedule('acme', 'life', now() + interval '1 hour')")
    await db.execute("SELECT reminderd.pause('acme', 'life')")
    await db.execute("SELECT reminderd.resume('acme', 'life')")
    await db.execute("SELECT reminderd.reschedule('acme', 'life', now() - interval '1 second')")
    [job] = await store.claim(lookback_s=LOOKBACK_S, batch_size=10, lease_s=0.001)
    await db.execute("SELECT pg_sleep(0.01)")
    assert len(await store.reap_expired_leases()) == 1
    await db.execute("UPDATE reminderd.scheduled_messages SET status = 'dead', last_event = 'dead_lettered',"
                     " last_error = 'gave up', updated_at = now() WHERE id = $1", job.id)
    await db.execute("SELECT reminderd.requeue($1)", job.id)

    events = await trail(db, "life")
    assert names(events) == [
        "created", "paused", "resumed", "rescheduled", "lease_expired", "dead_lettered", "requeued",
    ]
    assert events[4]["reason"].startswith("lease expired after attempt 1")
    assert events[6]["reason"] == "requeued from: gave up"


async def test_a_dbas_plain_update_is_recorded_as_updated_with_the_status_change(
    db: asyncpg.Connection, tenant: str
) -> None:
    me = await db.fetchval("SELECT current_user")
    message_id = await db.fetchval("SELECT reminderd.schedule('acme', 'by-hand', now() + interval '1 hour')")

    assert await db.execute(
        "UPDATE reminderd.scheduled_messages SET status = 'cancelled' WHERE id = $1", message_id
    ) == "UPDATE 1"

    last = (await trail(db, "by-hand"))[-1]
    assert (last["event"], last["status"], last["reason"], last["actor"]) == (
        "updated", "cancelled", "status pending -> cancelled", me,
    )
    # A change of something the trail does not track (the payload) adds nothing.
    await db.execute("UPDATE reminderd.scheduled_messages SET payload = '{\"v\": 2}' WHERE id = $1", message_id)
    assert len(await trail(db, "by-hand")) == 2


async def test_a_500_row_insert_writes_500_created_events_in_one_trigger_call(
    db: asyncpg.Connection, tenant: str
) -> None:
    async with db.transaction():
        await db.execute("SET LOCAL track_functions = 'pl'")
        status = await db.execute(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
            " SELECT 'acme', 'bulk:' || g, now() + g * interval '1 minute' FROM generate_series(1, 500) g"
        )
        calls = await db.fetchval(
            "SELECT calls FROM pg_stat_xact_user_functions"
            " WHERE schemaname = 'reminderd' AND funcname = 'record_inserts'"
        )
    assert status == "INSERT 0 500"
    assert calls == 1
    counts = await db.fetchrow(
        "SELECT count(*) AS events, count(DISTINCT message_id) AS messages,"
        " bool_and(event = 'created' AND status = 'pending') AS all_created FROM reminderd.events"
    )
    assert tuple(counts) == (500, 500, True)


# Retention --------------------------------------------------------------------------------------


async def arrange_history(db: asyncpg.Connection) -> dict[str, int]:
    """Finished and live rows of various ages, plus deliveries and events of various ages."""
    rows = await db.fetch(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, status, updated_at)"
        " SELECT 'acme', ref, now() - age - interval '1 minute', status, now() - age FROM (VALUES"
        "   ('sent-8d', 'sent', interval '8 days'),"
        "   ('sent-1d', 'sent', interval '1 day'),"
        "   ('dead-20d', 'dead', interval '20 days'),"
        "   ('dead-40d', 'dead', interval '40 days'),"
        "   ('cancelled-10d', 'cancelled', interval '10 days'),"
        "   ('expired-10d', 'expired', interval '10 days'),"
        "   ('cancelled-6d', 'cancelled', interval '6 days')"
        " ) AS v(ref, status, age)"
        " RETURNING id, ref_id"
    )
    ids = {r["ref_id"]: r["id"] for r in rows}
    live = await db.fetch(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, status, paused_by, updated_at)"
        " VALUES ('acme', 'pending-60d', now() + interval '1 day', 'pending', NULL,"
        "         now() - interval '60 days'),"
        "        ('acme', 'paused-60d', now() + interval '1 day', 'paused', 'message',"
        "         now() - interval '60 days')"
        " RETURNING id, ref_id"
    )
    ids |= {r["ref_id"]: r["id"] for r in live}
    await db.execute(
        "INSERT INTO reminderd.deliveries (message_id, tenant_id, ref_id, webhook_id, attempt, scheduled_for,"
        " status_code, duration_ms, created_at)"
        " SELECT m, 'acme', 'ref-' || m, 'msg_' || m || '_' || n, n, now(), 200, 5, now() - age FROM (VALUES"
        "   ($1::bigint, 1, interval '40 days'), ($1, 2, interval '1 day'),"  # kept message: old one pruned
        "   ($2::bigint, 1, interval '1 day'),"  # pruned message: its attempt stays (the trail)
        "   ($3::bigint, 1, interval '29 days')"  # dead-20d: kept
        " ) AS v(m, n, age)",
        ids["sent-1d"], ids["sent-8d"], ids["dead-20d"],
    )
    await db.execute(
        "INSERT INTO reminderd.events (message_id, tenant_id, ref_id, event, status, actor, created_at)"
        " VALUES (999, 'acme', 'long-gone', 'fired', 'sent', current_user, now() - interval '40 days'),"
        "        (998, 'acme', 'long-gone-2', 'created', 'pending', current_user, now() - interval '31 days'),"
        "        (997, 'acme', 'recent', 'fired', 'sent', current_user, now() - interval '29 days')"
    )
    return ids


async def remaining_refs(db: asyncpg.Connection) -> set[str]:
    return {r["ref_id"] for r in await db.fetch("SELECT ref_id FROM reminderd.scheduled_messages")}


async def test_prune_deletes_exactly_what_is_past_its_retention(
    database_url: str, db: asyncpg.Connection, store: Store, tenant: str
) -> None:
    ids = await arrange_history(db)
    events_before = await db.fetchval("SELECT count(*) FROM reminderd.events")
    settings = fast_settings(database_url)
    keep = (settings.retention_days, settings.dead_retention_days, settings.history_retention_days)
    assert keep == (7, 30, 30)
    pruned = await Pruner(settings, store).prune()

    assert await remaining_refs(db) == {"sent-1d", "dead-20d", "cancelled-6d", "pending-60d", "paused-60d"}
    assert pruned.messages == 4  # sent-8d, dead-40d, cancelled-10d, expired-10d
    deliveries = await db.fetch("SELECT message_id, attempt FROM reminderd.deliveries ORDER BY id")
    assert [(d["message_id"], d["attempt"]) for d in deliveries] == [
        (ids["sent-1d"], 2), (ids["sent-8d"], 1), (ids["dead-20d"], 1),
    ]
    # The 40-day-old one. Attempts are the trail, like events: sent-8d's stays after its message.
    assert pruned.deliveries == 1
    # Events: the two older than 30 days go; the trail of pruned messages stays (no foreign key).
    assert pruned.events == 2
    assert await db.fetchval("SELECT count(*) FROM reminderd.events") == events_before - 2
    assert await db.fetchval("SELECT count(*) FROM reminderd.events WHERE message_id = $1", ids["sent-8d"]) == 1

    assert await Pruner(settings, store).prune() == Pruned(0, 0, 0)


async def test_prune_works_through_a_backlog_in_batches(
    database_url: str, db: asyncpg.Connection, store: Store, tenant: str
) -> None:
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, status, updated_at)"
        " SELECT 'acme', 'old:' || g, now() - interval '9 days', 'sent', now() - interval '8 days'"
        " FROM generate_series(1, 2500) g"
    )
    # One call of the function deletes at most a batch (1000 by default)...
    first = await store.prune_batch(keep_finished_days=7, keep_dead_days=30, keep_history_days=30)
    assert first == Pruned(1000, 0, 0)
    # ...and the daemon calls it again while batches come back full.
    assert await Pruner(fast_settings(database_url), store).prune() == Pruned(1500, 0, 0)
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages") == 0


@pytest.fixture
async def second_connection(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


async def test_a_second_pruner_prunes_nothing_while_another_holds_the_lock(
    db: asyncpg.Connection, second_connection: asyncpg.Connection, store: Store, tenant: str
) -> None:
    await arrange_history(db)
    before = await remaining_refs(db)

    # Another session holds the pruning lock in an open transaction.
    holder = second_connection.transaction()
    await holder.start()
    await second_connection.execute("SELECT pg_advisory_xact_lock(hashtext('reminderd.prune'))")
    try:
        # Returns at once (it does not wait for the lock), having pruned nothing.
        batch = await asyncio.wait_for(
            store.prune_batch(keep_finished_days=7, keep_dead_days=30, keep_history_days=30), 5
        )
        assert batch == Pruned(0, 0, 0)
        assert await remaining_refs(db) == before
    finally:
        await holder.rollback()

    # Another pruner mid-batch: its open transaction holds the lock (and the rows it deleted).
    holder = second_connection.transaction()
    await holder.start()
    in_flight = await second_connection.fetchrow(
        "SELECT * FROM reminderd.prune('7 days', '30 days', '30 days')"
    )
    assert in_flight["messages"] == 4
    try:
        batch = await asyncio.wait_for(
            store.prune_batch(keep_finished_days=7, keep_dead_days=30, keep_history_days=30), 5
        )
        assert batch == Pruned(0, 0, 0)
    finally:
        await holder.commit()
    assert await remaining_refs(db) == before - {"sent-8d", "dead-40d", "cancelled-10d", "expired-10d"}
    again = await store.prune_batch(keep_finished_days=7, keep_dead_days=30, keep_history_days=30)
    assert again == Pruned(0, 0, 0)
