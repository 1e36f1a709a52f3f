"""A message that died after its receiver accepted it (reminderd.died_delivered) is not sent again by
a requeue made by mistake: reminderd.requeue refuses such a one-off (55000) unless resend => true
and moves such a recurring one to its next occurrence; requeue_dead and the dashboard skip them
and say how many; the HTTP API answers 409 without ?resend=true."""

from __future__ import annotations

import asyncpg
import pytest
from support import ApiClient, fast_settings, poll_until, row_by_id, running_worker

from reminderd.store import Store
from reminderd.testing import Receiver, add_api_key, add_tenant

DIED_DELIVERED = ("delivered (HTTP 200, attempt 1), but its outcome could not be recorded: refused by a "
                  "trigger; dead-lettered so that it is not sent again")


async def _dead(db: asyncpg.Connection, message_id: int, *, delivered: bool) -> None:
    """The row as the daemon leaves one dead after (or without) a delivery in its last claim: the
    schema's guards of picked_at and sent_at are triggers, not run here."""
    async with db.transaction():
        await db.execute("SET LOCAL session_replication_role = replica")
        await db.execute(
            "UPDATE reminderd.scheduled_messages SET status = 'dead', last_event = 'dead_lettered', "
            "picked_at = now() - interval '1 minute', "
            "sent_at = CASE WHEN $2 THEN now() ELSE sent_at END, "
            "scheduled_for = coalesce(scheduled_for, fire_at, now()), "
            "last_error = CASE WHEN $2 THEN $3 ELSE 'permanent failure: HTTP 404' END WHERE id = $1",
            message_id, delivered, DIED_DELIVERED)


async def _one_off(db: asyncpg.Connection, ref: str, *, delivered: bool) -> int:
    message_id: int = await db.fetchval("SELECT reminderd.schedule('acme', $1, now() + interval '1 hour')", ref)
    await _dead(db, message_id, delivered=delivered)
    return message_id


async def _died_delivered(db: asyncpg.Connection, message_id: int) -> bool:
    died: bool = await db.fetchval(
        "SELECT reminderd.died_delivered(m) FROM reminderd.scheduled_messages m WHERE m.id = $1", message_id)
    return died


@pytest.fixture
async def acme(db: asyncpg.Connection, receiver: Receiver) -> str:
    return await add_tenant(db, "acme", receiver.url)


async def test_requeue_refuses_a_one_off_that_died_delivered_unless_told_to_resend(
    db: asyncpg.Connection, acme: str
) -> None:
    delivered = await _one_off(db, "delivered", delivered=True)
    failed = await _one_off(db, "failed", delivered=False)
    assert [await _died_delivered(db, m) for m in (delivered, failed)] == [True, False]
    with pytest.raises(asyncpg.ObjectNotInPrerequisiteStateError) as refused:
        await db.fetchval("SELECT reminderd.requeue($1)", delivered)
    assert refused.value.args[0] == (f"message acme / delivered (id {delivered}) was delivered before it died: "
                                     "requeueing it would send it again")
    assert refused.value.detail == f"Its dead reason: {DIED_DELIVERED}"
    assert refused.value.hint == (f"Pass resend => true to send it again: "
                                  f"SELECT reminderd.requeue({delivered}, resend => true);")
    assert (await row_by_id(db, delivered))["status"] == "dead"
    assert await db.fetchval("SELECT reminderd.requeue($1)", failed) == 1  # the signature of before still works
    assert await db.fetchval("SELECT reminderd.requeue($1, resend => true)", delivered) == 1
    row = await row_by_id(db, delivered)
    assert (row["status"], row["last_error"]) == ("pending", f"requeued from: {DIED_DELIVERED}")
    assert not await _died_delivered(db, delivered)


async def test_requeue_moves_a_recurring_row_that_died_delivered_to_its_next_occurrence(
    database_url: str, db: asyncpg.Connection, acme: str, receiver: Receiver
) -> None:
    daily = await db.fetchval("SELECT reminderd.schedule_cron('acme', 'daily', '0 9 * * *')")
    await _dead(db, daily, delivered=True)
    assert await db.fetchval("SELECT reminderd.requeue($1)", daily) == 1
    row = await row_by_id(db, daily)
    assert (row["status"], row["fire_at"], row["scheduled_for"]) == ("pending", None, None)
    assert row["last_error"] == ("requeued to its next occurrence (the last was delivered) from: "
                                 + DIED_DELIVERED)
    async with running_worker(fast_settings(database_url)):  # the daemon plans it: by tomorrow's 09:00
        planned = await poll_until(lambda: db.fetchval(
            "SELECT fire_at FROM reminderd.scheduled_messages WHERE id = $1 AND fire_at > now()", daily))
    assert planned is not None and not receiver.received  # not sent again


async def test_requeue_dead_skips_the_one_offs_that_died_delivered_and_says_how_many(
    db: asyncpg.Connection, acme: str
) -> None:
    delivered = await _one_off(db, "delivered", delivered=True)
    failed = await _one_off(db, "failed", delivered=False)
    notices: list[asyncpg.PostgresLogMessage] = []
    db.add_log_listener(lambda _, message: notices.append(message))
    assert await db.fetchval("SELECT reminderd.requeue_dead('acme', now() - interval '1 hour')") == 1
    assert [(await row_by_id(db, m))["status"] for m in (delivered, failed)] == ["dead", "pending"]
    [notice] = [n for n in notices if "skipped" in n.message]
    assert notice.message == "1 dead message(s) of tenant acme skipped: delivered before they died"
    assert notice.hint == "Requeue one with reminderd.requeue(id, resend => true) to send it again."


async def test_the_dashboards_requeue_skips_those_that_died_delivered_and_counts_them(
    db: asyncpg.Connection, acme: str, store: Store
) -> None:
    delivered = await _one_off(db, "delivered", delivered=True)
    failed = await _one_off(db, "failed", delivered=False)
    done = await store.requeue_dead("acme", [delivered, failed], on_behalf_of="ops")
    assert (done.requeued, done.delivered) == (1, 1)
    again = await _one_off(db, "again", delivered=True)
    matching = await store.requeue_dead_matching("acme", min_age_s=0, max_age_s=1e9, error=None, limit=100,
                                                 on_behalf_of="ops")
    assert (matching.requeued, matching.delivered) == (0, 2)
    statuses = [(await row_by_id(db, m))["status"] for m in (delivered, failed, again)]
    assert statuses == ["dead", "pending", "dead"]


async def test_requeue_dead_matching_takes_its_limit_past_the_skipped_and_says_which_moved_onward(
    db: asyncpg.Connection, acme: str, store: Store
) -> None:
    skipped = [await _one_off(db, f"delivered:{n}", delivered=True) for n in range(3)]  # the lowest ids
    daily = await db.fetchval("SELECT reminderd.schedule_cron('acme', 'daily', '0 9 * * *')")
    await _dead(db, daily, delivered=True)
    failed = [await _one_off(db, f"failed:{n}", delivered=False) for n in range(2)]

    async def press(limit: int) -> tuple[int, int, int, int]:
        done = await store.requeue_dead_matching("acme", min_age_s=0, max_age_s=1e9, error=None, limit=limit,
                                                 on_behalf_of="ops")
        return done.requeued, done.onward, done.delivered, done.blocked

    assert await press(2) == (2, 1, 2, 0)  # daily (to its next occurrence) and failed:0; skipped counted to 2
    assert await press(2) == (1, 0, 2, 0)
    assert await press(5) == (0, 0, 3, 0)
    statuses = [(await row_by_id(db, m))["status"] for m in (*skipped, daily, *failed)]
    assert statuses == ["dead"] * 3 + ["pending"] * 3
    await _dead(db, failed[0], delivered=False)
    await db.fetchval("SELECT reminderd.schedule('acme', 'failed:0', now() + interval '1 hour')")  # live again
    done = await store.requeue_dead("acme", [skipped[0], failed[0]], on_behalf_of="ops")
    assert (done.requeued, done.onward, done.delivered, done.blocked) == (0, 0, 1, 1)


async def test_the_api_answers_409_for_one_that_died_delivered_unless_resend_is_true(
    http: ApiClient, db: asyncpg.Connection, acme: str
) -> None:
    key = await add_api_key(db, "acme")
    delivered = await _one_off(db, "delivered", delivered=True)
    path = f"/v1/messages/{delivered}/requeue"
    refused = await http.call("POST", path, key)
    assert refused.status == 409 and refused.headers["Content-Type"].startswith("application/problem+json")
    assert refused.json["type"] == "urn:reminderd:problem:conflict"
    assert refused.json["detail"] == (f"message {delivered} was delivered before it died: "
                                      "requeueing it would send it again")
    assert refused.json["hint"] == "add ?resend=true to send it again all the same"
    assert (await http.call("POST", path, key, params={"resend": "maybe"})).status == 400
    assert (await row_by_id(db, delivered))["status"] == "dead"
    again = await http.call("POST", path, key, params={"resend": "true"})
    assert again.status == 200 and again.json["status"] == "pending"
