"""The SQL API of migration 0002 against a real PostgreSQL: bulk cancel, pause and resume (per message
and per tenant), reschedule, requeue, schedule(... fire_in, max_attempts), the horizon, the payload
limit, and the SQLSTATE of every refusal (checked on the asyncpg exception's .sqlstate).

The module shares one clone of the migrated template, emptied (and its config reset) before each
test. Functions run as the test superuser here; tests/integration/test_tenant_isolation.py runs them
as real application roles under row-level security.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from support import (
    LOOKBACK_S,
    db_now,
    drain,
    fast_settings,
    near,
    poll_until,
    row_by_id,
    running_worker,
    settled,
)

from reminderd.lifecycle import Event, Status
from reminderd.outcome import AttemptResult, Outcome
from reminderd.store import Store
from reminderd.testing import Receiver

pytestmark = pytest.mark.shared_database


async def sqlstate_of(call: Awaitable[Any]) -> tuple[str, str]:
    """Run a statement that must fail; its SQLSTATE and message."""
    with pytest.raises(asyncpg.PostgresError) as failure:
        await call
    return failure.value.sqlstate, failure.value.args[0] if failure.value.args else ""


async def schedule(db: asyncpg.Connection, ref: str, when: str = "now() + interval '1 hour'",
                   tenant: str = "acme") -> int:
    """reminderd.schedule(tenant, ref, <when>); `when` is an SQL expression."""
    message_id: int = await db.fetchval(f"SELECT reminderd.schedule($1, $2, {when})", tenant, ref)
    return message_id


async def events_of(db: asyncpg.Connection, message_id: int) -> list[str]:
    rows = await db.fetch(
        "SELECT event FROM reminderd.trail WHERE message_id = $1 AND event IS NOT NULL"
        " ORDER BY at, event_id, delivery_id", message_id,
    )
    return [r["event"] for r in rows]


async def add_globex(db: asyncpg.Connection) -> None:
    await db.execute("INSERT INTO reminderd.tenants (id, callback_url) VALUES ('globex', 'https://g.example/cb')")


def arrived(receiver: Receiver, ref: str, count: int = 1) -> Callable[[list[Any]], bool]:
    return lambda got: len(receiver.by_ref().get(ref, [])) >= count


async def wait_ticks(worker: Any, ticks: int) -> None:
    """Let the claim loop come round `ticks` more times (it claims on every round)."""
    start = worker.ticks

    async def enough() -> bool:
        return bool(worker.ticks >= start + ticks)

    await poll_until(enough, timeout_s=10)


# cancel_matching ------------------------------------------------------------------------------


async def test_cancel_matching_cancels_every_reminder_of_one_booking_and_is_idempotent(
    db: asyncpg.Connection, tenant: str
) -> None:
    await add_globex(db)
    day = await schedule(db, "booking_b7d2:24h", "now() + interval '1 day'")
    hour = await schedule(db, "booking_b7d2:1h", "now() + interval '23 hours'")
    other_booking = await schedule(db, "booking_c9e1:24h")
    other_tenant = await schedule(db, "booking_b7d2:24h", tenant="globex")
    already_sent = await db.fetchval(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, status)"
        " VALUES ('acme', 'booking_b7d2:welcome', now() - interval '1 day', 'sent') RETURNING id"
    )

    assert await db.fetchval("SELECT reminderd.cancel_matching('acme', 'booking_b7d2:%')") == 2

    rows = await db.fetch("SELECT id, status FROM reminderd.scheduled_messages")
    statuses = {r["id"]: r["status"] for r in rows}
    assert statuses[day] == statuses[hour] == "cancelled"
    assert statuses[other_booking] == "pending" and statuses[other_tenant] == "pending"
    assert statuses[already_sent] == "sent"
    row = await row_by_id(db, day)
    assert row["last_error"] == "cancelled by pattern booking_b7d2:%" and row["last_event"] == "cancelled"
    assert await events_of(db, day) == ["created", "cancelled"]
    assert await db.fetchval("SELECT reminderd.cancel_matching('acme', 'booking_b7d2:%')") == 0


async def test_cancel_matching_refuses_an_empty_pattern_and_finds_nothing_for_an_unknown_tenant(
    db: asyncpg.Connection, tenant: str
) -> None:
    assert (await sqlstate_of(db.fetchval("SELECT reminderd.cancel_matching('acme', '')")))[0] == "22023"
    assert await db.fetchval("SELECT reminderd.cancel_matching('nope', 'x%')") == 0


# pause / resume -------------------------------------------------------------------------------


async def test_pause_and_resume_of_a_one_off(db: asyncpg.Connection, tenant: str) -> None:
    message_id = await schedule(db, "nudge")
    fire_at = (await row_by_id(db, message_id))["fire_at"]

    assert await db.fetchval("SELECT reminderd.pause('acme', 'nudge')") == 1
    row = await row_by_id(db, message_id)
    assert row["status"] == "paused" and row["paused_by"] == "message"
    assert await db.fetchval("SELECT reminderd.pause('acme', 'nudge')") == 0  # only pending rows pause

    assert await db.fetchval("SELECT reminderd.resume('acme', 'nudge')") == 1
    row = await row_by_id(db, message_id)
    assert row["status"] == "pending" and row["paused_by"] is None and row["fire_at"] == fire_at
    assert await db.fetchval("SELECT reminderd.resume('acme', 'nudge')") == 0
    assert await events_of(db, message_id) == ["created", "paused", "resumed"]


async def test_a_paused_row_is_not_claimed_by_a_running_worker_and_fires_once_resumed(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    async with running_worker(fast_settings(database_url)) as worker:
        async with db.transaction():  # due now, paused before any daemon can see it
            await schedule(db, "held", "now()")
            assert await db.fetchval("SELECT reminderd.pause('acme', 'held')") == 1
        await schedule(db, "control", "now()")  # proves the worker is claiming meanwhile
        await receiver.wait_for(arrived(receiver, "control"))
        await wait_ticks(worker, 3)
        assert "held" not in receiver.by_ref()
        assert (await settled(db, "held", "paused")()) is not None

        assert await db.fetchval("SELECT reminderd.resume('acme', 'held')") == 1
        await receiver.wait_for(arrived(receiver, "held"))
        await poll_until(settled(db, "held", "sent"))
    assert len(receiver.by_ref()["held"]) == 1


async def test_a_one_off_resumed_after_the_lookback_expires_instead_of_firing_late(
    db: asyncpg.Connection, store: Store, tenant: str
) -> None:
    message_id = await schedule(db, "late", "now() + interval '1 hour'")
    await db.execute("SELECT reminderd.pause('acme', 'late')")
    await db.execute(  # its time passed while paused
        "UPDATE reminderd.scheduled_messages SET fire_at = now() - interval '10 minutes' WHERE id = $1",
        message_id,
    )
    await db.execute("SELECT reminderd.resume('acme', 'late')")

    assert [r.id for r in await store.expire_missed(lookback_s=LOOKBACK_S)] == [message_id]
    assert (await row_by_id(db, message_id))["status"] == "expired"


async def test_pause_tenant_holds_pending_and_new_rows_and_resume_tenant_releases_only_those(
    db: asyncpg.Connection, tenant: str
) -> None:
    pending = await schedule(db, "pending")
    individually = await schedule(db, "individually")
    await db.execute("SELECT reminderd.pause('acme', 'individually')")
    finished = await db.fetchval(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, status)"
        " VALUES ('acme', 'done', now(), 'sent') RETURNING id"
    )

    assert await db.fetchval("SELECT reminderd.pause_tenant('acme')") == 1
    assert await db.fetchval("SELECT paused FROM reminderd.tenants WHERE id = 'acme'") is True
    by_function = await schedule(db, "new:function")
    by_insert = await db.fetchval(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
        " VALUES ('acme', 'new:insert', now()) RETURNING id"
    )

    for held in (pending, by_function, by_insert):
        row = await row_by_id(db, held)
        assert (row["status"], row["paused_by"]) == ("paused", "tenant"), row["ref_id"]
    assert (await row_by_id(db, individually))["paused_by"] == "message"
    assert (await row_by_id(db, finished))["status"] == "sent"
    reasons = await db.fetch(
        "SELECT message_id, event, reason FROM reminderd.events WHERE status = 'paused' ORDER BY id"
    )
    assert {(r["message_id"], r["event"], r["reason"]) for r in reasons} >= {
        (pending, "paused", "tenant paused"),
        (by_function, "created", "tenant is paused"),
        (by_insert, "created", "tenant is paused"),
    }

    assert await db.fetchval("SELECT reminderd.resume_tenant('acme')") == 3
    assert await db.fetchval("SELECT paused FROM reminderd.tenants WHERE id = 'acme'") is False
    for released in (pending, by_function, by_insert):
        assert (await row_by_id(db, released))["status"] == "pending"
    row = await row_by_id(db, individually)
    assert (row["status"], row["paused_by"]) == ("paused", "message")  # still paused by its own pause
    assert await db.fetchval("SELECT reminderd.resume_tenant('acme')") == 0


async def test_a_retry_of_a_message_in_flight_when_its_tenant_was_paused_is_held_too(
    db: asyncpg.Connection, store: Store, tenant: str
) -> None:
    """A callback in flight while the tenant is paused fails; its retry must not go out while the
    tenant stays paused (the point of pausing a tenant whose endpoint misbehaves)."""
    message_id = await schedule(db, "in-flight", "now()")
    [job] = await store.claim(lookback_s=LOOKBACK_S, batch_size=10, lease_s=300)
    assert await db.fetchval("SELECT reminderd.pause_tenant('acme')") == 0  # nothing pending: it is picked

    failed = AttemptResult(False, 503, "HTTP 503", 4)
    await store.record_outcomes([Outcome(
        job, failed, Event.RETRY_SCHEDULED, Status.PENDING, retry_in_s=0.0,
        next_scheduled_for=job.scheduled_for,
        last_error="attempt 1 failed: HTTP 503; retrying in 0.0s",
    )])

    row = await row_by_id(db, message_id)
    assert await store.claim(lookback_s=LOOKBACK_S, batch_size=10, lease_s=300) == [], (
        "the retry of a paused tenant's message was claimed for sending"
    )
    assert (row["status"], row["paused_by"]) == ("paused", "tenant")


async def test_a_message_resumed_while_its_tenant_is_paused_stays_held(
    db: asyncpg.Connection, tenant: str
) -> None:
    message_id = await schedule(db, "own-pause")
    await db.execute("SELECT reminderd.pause('acme', 'own-pause')")
    await db.execute("SELECT reminderd.pause_tenant('acme')")

    await db.execute("SELECT reminderd.resume('acme', 'own-pause')")

    row = await row_by_id(db, message_id)
    assert (row["status"], row["paused_by"]) == ("paused", "tenant"), (
        "resuming one message sent it although its whole tenant is paused"
    )


async def test_a_recurring_row_resumed_after_its_occurrence_passed_is_replanned_without_a_backlog_fire(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    message_id = await db.fetchval(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, cron, timezone, fire_at, attempts)"
        " VALUES ('acme', 'yearly', '0 0 1 1 *', 'UTC', now() + interval '1 hour', 0) RETURNING id"
    )
    await db.execute("SELECT reminderd.pause('acme', 'yearly')")
    # The occurrence passed while paused: 30 s ago is inside the lookback, so without re-planning
    # the daemon would fire it at once.
    await db.execute(
        "UPDATE reminderd.scheduled_messages SET fire_at = now() - interval '30 seconds', attempts = 2"
        " WHERE id = $1", message_id,
    )

    assert await db.fetchval("SELECT reminderd.resume('acme', 'yearly')") == 1
    worker = await drain(fast_settings(database_url))  # plans it, then finds nothing due

    row = await row_by_id(db, message_id)
    now = await db_now(db)
    assert row["fire_at"] is not None and worker.ticks >= 2
    assert row["status"] == "pending" and row["attempts"] == 0
    assert row["fire_at"] > now and (row["fire_at"].month, row["fire_at"].day, row["fire_at"].hour) == (1, 1, 0)
    assert receiver.received == []
    assert (await events_of(db, message_id))[-2:] == ["resumed", "planned"]


# reschedule -----------------------------------------------------------------------------------


async def test_reschedule_moves_fire_at_and_resets_attempts(db: asyncpg.Connection, tenant: str) -> None:
    message_id = await schedule(db, "move-me")
    await db.execute(
        "UPDATE reminderd.scheduled_messages SET attempts = 3, scheduled_for = now() - interval '1 minute',"
        " last_error = 'attempt 3 failed' WHERE id = $1", message_id,
    )

    assert await db.fetchval("SELECT reminderd.reschedule('acme', 'move-me', now() + interval '3 hours')") == 1

    row = await row_by_id(db, message_id)
    assert near(row["fire_at"], await db_now(db) + timedelta(hours=3))
    assert row["attempts"] == 0 and row["scheduled_for"] is None and row["last_error"] is None
    assert row["status"] == "pending"
    assert (await events_of(db, message_id))[-1] == "rescheduled"
    assert await db.fetchval("SELECT reminderd.reschedule('acme', 'no-such-ref', now())") == 0
    state, _ = await sqlstate_of(db.fetchval("SELECT reminderd.reschedule('acme', 'move-me', NULL)"))
    assert state == "22004"
    state, message = await sqlstate_of(
        db.fetchval("SELECT reminderd.reschedule('acme', 'move-me', now() + interval '100 days')")
    )
    assert state == "22008" and "90 days" in message


# requeue --------------------------------------------------------------------------------------


async def test_requeue_sends_a_dead_message_again_with_the_same_webhook_id(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    receiver.script["gone"] = [404]  # permanent: dead after its first attempt (410 disables the endpoint)
    message_id = await schedule(db, "gone", "now()")

    await drain(fast_settings(database_url))
    dead = await row_by_id(db, message_id)
    assert dead["status"] == "dead"
    [first] = receiver.by_ref()["gone"]
    dead_letter = await db.fetchrow("SELECT * FROM reminderd.dead_letters WHERE id = $1", message_id)
    async with db.transaction():  # the row as requeue leaves it, in the transaction's time
        assert await db.fetchval("SELECT reminderd.requeue($1)", message_id) == 1
        row = await row_by_id(db, message_id)
        assert row["status"] == "pending" and row["attempts"] == 0 and row["fire_at"] == await db_now(db)
        assert row["last_error"] == "requeued from: " + dead["last_error"]
    await drain(fast_settings(database_url))
    assert (await row_by_id(db, message_id))["status"] == "sent"

    again = receiver.by_ref()["gone"][-1]
    assert again.webhook_id == first.webhook_id and again.message["attempt"] == 1
    assert again.message["scheduled_for"] == first.message["scheduled_for"]
    assert dead_letter["scheduled_for"] == dead["fire_at"] and dead_letter["attempts"] == 1
    assert (await events_of(db, message_id))[-3:] == ["dead_lettered", "requeued", "fired"]


async def test_a_message_retried_before_it_died_keeps_its_occurrence_for_requeue(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    """The webhook-id derives from the occurrence; dead_letters shows it as scheduled_for. A row
    that was retried before being dead-lettered must keep it, or the requeued redelivery carries a
    new webhook-id and receivers cannot deduplicate it."""
    receiver.script["flaky"] = [503, 503]  # dead after its row's max_attempts of 2
    message_id = await db.fetchval("SELECT reminderd.schedule('acme', 'flaky', now(), max_attempts => 2)")
    occurrence = (await row_by_id(db, message_id))["fire_at"]

    await drain(fast_settings(database_url))
    assert (await row_by_id(db, message_id))["status"] == "dead"
    first_ids = {r.webhook_id for r in receiver.by_ref()["flaky"]}
    dead_letter = await db.fetchrow("SELECT * FROM reminderd.dead_letters WHERE id = $1", message_id)
    assert await db.fetchval("SELECT reminderd.requeue($1)", message_id) == 1
    await drain(fast_settings(database_url))
    assert (await row_by_id(db, message_id))["status"] == "sent"

    again = receiver.by_ref()["flaky"][-1]
    assert len(first_ids) == 1  # both attempts of the occurrence shared one id
    assert again.webhook_id in first_ids, "requeue after retries redelivered under a new webhook-id"
    assert dead_letter["scheduled_for"] == occurrence, (
        "dead_letters shows the last retry's time, not the occurrence"
    )


async def test_requeue_of_an_unknown_id_is_no_data_found_and_of_a_live_row_is_zero(
    db: asyncpg.Connection, tenant: str
) -> None:
    state, message = await sqlstate_of(db.fetchval("SELECT reminderd.requeue(424242)"))
    assert state == "P0002" and "424242" in message
    pending = await schedule(db, "alive")
    assert await db.fetchval("SELECT reminderd.requeue($1)", pending) == 0
    # A dead row whose ref has been scheduled again is not requeued next to the live one.
    dead = await db.fetchval(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, status)"
        " VALUES ('acme', 'alive', now() - interval '1 hour', 'dead') RETURNING id"
    )
    assert await db.fetchval("SELECT reminderd.requeue($1)", dead) == 0
    assert (await row_by_id(db, dead))["status"] == "dead"


async def test_requeue_dead_requeues_a_tenants_dead_rows_since_an_instant(
    db: asyncpg.Connection, tenant: str
) -> None:
    await add_globex(db)
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, status, attempts, updated_at)"
        " VALUES ('acme', 'd1', now() - interval '2 hours', 'dead', 8, now() - interval '1 hour'),"
        "        ('acme', 'd2', now() - interval '2 hours', 'dead', 8, now() - interval '10 minutes'),"
        "        ('acme', 'd-old', now() - interval '5 days', 'dead', 8, now() - interval '3 days'),"
        "        ('acme', 'sent', now() - interval '2 hours', 'sent', 1, now() - interval '1 hour'),"
        "        ('globex', 'd1', now() - interval '2 hours', 'dead', 8, now() - interval '1 hour')"
    )

    assert await db.fetchval("SELECT reminderd.requeue_dead('acme', now() - interval '1 day')") == 2

    everything = await db.fetch("SELECT * FROM reminderd.scheduled_messages")
    rows = {(r["tenant_id"], r["ref_id"]): r for r in everything}
    assert rows["acme", "d1"]["status"] == rows["acme", "d2"]["status"] == "pending"
    assert rows["acme", "d1"]["attempts"] == 0
    assert rows["acme", "d-old"]["status"] == "dead" and rows["globex", "d1"]["status"] == "dead"
    assert rows["acme", "sent"]["status"] == "sent"
    assert await db.fetchval("SELECT reminderd.requeue_dead('acme', now() - interval '1 day')") == 0
    assert (await sqlstate_of(db.fetchval("SELECT reminderd.requeue_dead('nope', now())")))[0] == "23503"


# schedule(... fire_in, max_attempts) -----------------------------------------------------------


async def test_schedule_with_fire_in_and_max_attempts(db: asyncpg.Connection, tenant: str) -> None:
    message_id = await db.fetchval(
        "SELECT reminderd.schedule('acme', 'cart:991', fire_in => interval '2 hours',"
        " payload => '{\"cart\": 991}', max_attempts => 3)"
    )
    row = await row_by_id(db, message_id)
    assert near(row["fire_at"], await db_now(db) + timedelta(hours=2))
    assert row["max_attempts"] == 3 and json.loads(row["payload"]) == {"cart": 991}
    assert row["status"] == "pending"
    # positional, as Store.schedule_at calls it: max_attempts stays NULL (the daemon's setting)
    positional = await db.fetchval(
        "SELECT reminderd.schedule('acme', 'p', now() + interval '1 minute', '{}', NULL)"
    )
    assert (await row_by_id(db, positional))["max_attempts"] is None


@pytest.mark.parametrize(
    "call",
    [
        "reminderd.schedule('acme', 'r', now(), fire_in => interval '1 hour')",
        "reminderd.schedule('acme', 'r')",
        "reminderd.schedule('acme', 'r', fire_in => interval '-5 minutes')",
    ],
    ids=["both", "neither", "negative-fire-in"],
)
async def test_schedule_needs_exactly_one_of_fire_at_and_fire_in(
    db: asyncpg.Connection, tenant: str, call: str
) -> None:
    state, _ = await sqlstate_of(db.fetchval(f"SELECT {call}"))
    assert state == "22023"
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages") == 0


async def test_max_attempts_must_be_positive(db: asyncpg.Connection, tenant: str) -> None:
    call = "SELECT reminderd.schedule('acme', 'r', now(), max_attempts => 0)"
    state, _ = await sqlstate_of(db.fetchval(call))
    assert state == "23514"


async def test_fire_at_beyond_the_horizon_is_refused_until_a_dba_widens_it(
    db: asyncpg.Connection, tenant: str
) -> None:
    state, message = await sqlstate_of(
        db.fetchval("SELECT reminderd.schedule('acme', 'far', now() + interval '91 days')")
    )
    assert state == "22008" and "horizon of 90 days" in message
    state, _ = await sqlstate_of(
        db.fetchval("SELECT reminderd.schedule('acme', 'far', fire_in => interval '100 days')")
    )
    assert state == "22008"
    assert await schedule(db, "near", "now() + interval '89 days'")

    await db.execute("UPDATE reminderd.config SET value = '400 days' WHERE key = 'horizon'")

    assert await schedule(db, "far", "now() + interval '300 days'")
    state, message = await sqlstate_of(
        db.fetchval("SELECT reminderd.schedule('acme', 'farther', now() + interval '401 days')")
    )
    assert state == "22008" and "400 days" in message


async def test_payload_over_256_kib_is_program_limit_exceeded(db: asyncpg.Connection, tenant: str) -> None:
    big = json.dumps({"blob": uuid.uuid4().hex * 8500})  # ~272 KB of incompressible-ish text
    state, message = await sqlstate_of(
        db.fetchval("SELECT reminderd.schedule('acme', 'big', now() + interval '1 hour', $1::jsonb)", big)
    )
    assert state == "54000" and "256 KiB" in message and "acme / big" in message
    state, _ = await sqlstate_of(db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, payload)"
        " VALUES ('acme', 'big', now(), $1::jsonb)", big,
    ))
    assert state == "54000"
    fits = json.dumps({"blob": "x" * 200_000})
    assert await db.fetchval(
        "SELECT reminderd.schedule('acme', 'fits', now() + interval '1 hour', $1::jsonb)", fits
    ) is not None


@pytest.mark.parametrize(
    "call",
    [
        "reminderd.schedule('nope', 'r', now())",
        "reminderd.pause('nope', 'r')",
        "reminderd.resume('nope', 'r')",
        "reminderd.reschedule('nope', 'r', now())",
        "reminderd.pause_tenant('nope')",
        "reminderd.resume_tenant('nope')",
        "reminderd.rotate_secret('nope')",
    ],
)
async def test_unknown_tenant_is_a_foreign_key_violation_naming_it(
    db: asyncpg.Connection, tenant: str, call: str
) -> None:
    state, message = await sqlstate_of(db.fetchval(f"SELECT {call}"))
    assert state == "23503" and 'unknown tenant "nope"' in message


@pytest.mark.parametrize(
    "call",
    [
        "reminderd.schedule('acme', '', now())",
        "reminderd.schedule('acme', NULL, now())",
        "reminderd.cancel('acme', '')",
    ],
)
async def test_empty_ref_is_an_invalid_parameter(db: asyncpg.Connection, tenant: str, call: str) -> None:
    state, message = await sqlstate_of(db.fetchval(f"SELECT {call}"))
    assert state == "22023" and "ref_id must not be empty" in message


# Retried schedule calls ------------------------------------------------------------------------


async def test_the_same_schedule_call_twice_returns_the_same_message(
    db: asyncpg.Connection, tenant: str
) -> None:
    call = "SELECT reminderd.schedule('acme', 'invoice:9', $1, '{\"n\": 1}')"
    fire_at = await db.fetchval("SELECT date_trunc('second', now()) + interval '1 hour'")
    first = await db.fetchval(call, fire_at)
    assert await db.fetchval(call, fire_at) == first
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages") == 1


async def test_a_retry_after_the_message_was_sent_does_not_send_it_again(
    db: asyncpg.Connection, tenant: str
) -> None:
    call = "SELECT reminderd.schedule('acme', 'invoice:9', $1, '{\"n\": 1}')"
    fire_at = await db.fetchval("SELECT date_trunc('second', now())")
    first = await db.fetchval(call, fire_at)
    await db.execute(
        "UPDATE reminderd.scheduled_messages SET status = 'sent', sent_at = now() WHERE id = $1", first
    )
    assert await db.fetchval(call, fire_at) == first
    statuses = await db.fetch("SELECT status FROM reminderd.scheduled_messages")
    assert [s["status"] for s in statuses] == ["sent"]


async def test_a_retried_fire_in_call_returns_the_same_message(db: asyncpg.Connection, tenant: str) -> None:
    call = "SELECT reminderd.schedule('acme', 'cart:1', fire_in => interval '2 hours')"
    first = await db.fetchval(call)
    assert await db.fetchval(call) == first


async def test_a_different_schedule_for_the_same_ref_still_replaces(
    db: asyncpg.Connection, tenant: str
) -> None:
    fire_at = await db.fetchval("SELECT date_trunc('second', now()) + interval '1 hour'")
    first = await db.fetchval("SELECT reminderd.schedule('acme', 'invoice:9', $1, '{\"n\": 1}')", fire_at)
    second = await db.fetchval("SELECT reminderd.schedule('acme', 'invoice:9', $1, '{\"n\": 2}')", fire_at)
    later = await db.fetchval(
        "SELECT reminderd.schedule('acme', 'invoice:9', $1, '{\"n\": 2}')", fire_at + timedelta(minutes=5)
    )
    assert len({first, second, later}) == 3
    assert (await row_by_id(db, first))["status"] == "cancelled"
    assert (await row_by_id(db, second))["status"] == "cancelled"
    assert (await row_by_id(db, later))["status"] == "pending"
