"""A contact's (or its tenant's) zone changing around an attempt (docs/audiences.md, "When a
contact's zone changes"), against a real PostgreSQL and the worker: a message being sent keeps its
zone for that attempt and takes the new one after it (its next occurrence is planned in the new
zone); a message already attempted for its occurrence keeps its attempts and its webhook-id; a
plain DELETE of a contact cancels its live messages as reminderd.delete_contacts does."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from support import fast_settings, poll_until, row_by_id, running_worker

from reminderd.schedule.cron import next_fire
from reminderd.testing import Received, Receiver


async def upsert(db: asyncpg.Connection, contact: dict[str, str]) -> None:
    await db.execute("SELECT reminderd.upsert_contacts('acme', $1::jsonb)", json.dumps([contact]))


def gate(release: asyncio.Event) -> Receiver:
    """A receiver holding each callback until `release` is set."""
    async def hold(_: Received) -> None:
        await release.wait()
    return Receiver(before_answer=hold)


async def next_occurrence_after_an_attempt_in_flight(
    database_url: str, db: asyncpg.Connection, change: str
) -> asyncpg.Record:
    """A daily 09:00 message for contact p1 (Chicago, from its phone), due now; `change` runs while
    its callback is in flight; the row once the daemon has planned its next occurrence."""
    release = asyncio.Event()
    async with gate(release) as receiver:
        await db.execute("INSERT INTO reminderd.tenants (id, callback_url, timezone) "
                         "VALUES ('acme', $1, 'Europe/London')", receiver.url)
        await upsert(db, {"contact_id": "p1", "phone": "+1 312 555 0100"})
        message_id = await db.fetchval(
            "SELECT reminderd.schedule_cron('acme', 'daily', '0 9 * * *', contact_id => 'p1')")
        await db.execute("UPDATE reminderd.scheduled_messages SET fire_at = now() WHERE id = $1", message_id)
        async with running_worker(fast_settings(database_url)):
            await receiver.wait_for(lambda got: len(got) == 1)
            assert (await row_by_id(db, message_id))["status"] == "picked"
            await db.execute(change)
            in_flight = await row_by_id(db, message_id)
            # for that attempt
            assert (in_flight["status"], in_flight["timezone"]) == ("picked", "America/Chicago")
            release.set()

            async def planned() -> asyncpg.Record | None:
                row = await row_by_id(db, message_id)
                return row if row["status"] == "pending" and row["fire_at"] is not None else None

            row = await poll_until(planned)
        assert json.loads(receiver.received[0].body)["timezone"] == "America/Chicago"
    return row


async def test_a_recurring_message_in_flight_takes_its_contacts_new_zone_after_the_attempt(
    database_url: str, db: asyncpg.Connection
) -> None:
    row = await next_occurrence_after_an_attempt_in_flight(
        database_url, db,
        """SELECT reminderd.upsert_contacts('acme', '[{"contact_id": "p1", "timezone": "Asia/Tokyo"}]')""")
    assert (row["timezone"], row["timezone_source"]) == ("Asia/Tokyo", "contact")
    assert row["fire_at"] == next_fire("0 9 * * *", "Asia/Tokyo", datetime.now(UTC) - timedelta(minutes=1))
    assert row["fire_at"].astimezone(ZoneInfo("Asia/Tokyo")).hour == 9
    assert row["scheduled_for"] is None and row["attempts"] == 0


async def test_a_recurring_message_in_flight_takes_its_tenants_new_default_after_the_attempt(
    database_url: str, db: asyncpg.Connection
) -> None:
    row = await next_occurrence_after_an_attempt_in_flight(
        database_url, db,
        # p1 loses its phone: its zone is now the tenant's; then the tenant's default moves
        """SELECT reminderd.upsert_contacts('acme', '[{"contact_id": "p2"}]');
           UPDATE reminderd.contacts SET phone = NULL WHERE contact_id = 'p1';
           UPDATE reminderd.tenants SET timezone = 'Asia/Kolkata' WHERE id = 'acme'""")
    assert (row["timezone"], row["timezone_source"]) == ("Asia/Kolkata", "tenant")
    assert row["fire_at"].astimezone(ZoneInfo("Asia/Kolkata")).hour == 9


async def test_a_message_already_attempted_keeps_its_attempts_and_webhook_id_when_its_zone_moves(
    database_url: str, db: asyncpg.Connection, receiver: Receiver
) -> None:
    await db.execute("INSERT INTO reminderd.tenants (id, callback_url, timezone) VALUES ('acme', $1, "
                     "'Europe/London')", receiver.url)
    await upsert(db, {"contact_id": "q1", "timezone": "Asia/Kolkata"})
    wall = (datetime.now(UTC) + timedelta(hours=1)).astimezone(ZoneInfo("Asia/Kolkata")).replace(tzinfo=None)
    message_id = await db.fetchval(
        "SELECT reminderd.schedule('acme', 'once', local_time => $1, contact_id => 'q1')", wall)
    await db.execute("UPDATE reminderd.scheduled_messages SET fire_at = now() WHERE id = $1", message_id)
    receiver.script["once"] = [503]
    settings = fast_settings(database_url, retry_base_s=3600, retry_cap_s=3600)  # the retry waits
    async with running_worker(settings):
        async def retrying() -> asyncpg.Record | None:
            row = await row_by_id(db, message_id)
            return row if row["status"] == "pending" and row["attempts"] == 1 else None

        waiting = await poll_until(retrying)
        await upsert(db, {"contact_id": "q1", "timezone": "Asia/Kathmandu"})
        moved = await row_by_id(db, message_id)
        assert (moved["timezone"], moved["timezone_source"]) == ("Asia/Kathmandu", "contact")
        assert (moved["attempts"], moved["scheduled_for"], moved["fire_at"]) == (
            1, waiting["scheduled_for"], waiting["fire_at"])  # the same occurrence, its retry at its time
        assert moved["last_event"] == "replanned"
        await db.execute("UPDATE reminderd.scheduled_messages SET fire_at = now() WHERE id = $1", message_id)
        await receiver.wait_for(lambda got: len(got) == 2)

        async def sent() -> bool:
            return bool((await row_by_id(db, message_id))["status"] == "sent")

        await poll_until(sent)
    first, second = (json.loads(r.body) for r in receiver.received)
    assert receiver.received[0].webhook_id == receiver.received[1].webhook_id
    assert (first["attempt"], second["attempt"]) == (1, 2)
    assert first["scheduled_for"] == second["scheduled_for"]
    assert (first["timezone"], second["timezone"]) == ("Asia/Kolkata", "Asia/Kathmandu")


async def test_a_tenants_new_default_keeps_an_attempted_occurrence_too(db: asyncpg.Connection) -> None:
    await db.execute("INSERT INTO reminderd.tenants (id, callback_url, timezone) VALUES ('acme', "
                     "'https://example.com/cb', 'Europe/London')")
    await upsert(db, {"contact_id": "c1"})
    wall = (datetime.now(UTC) + timedelta(days=2)).astimezone(ZoneInfo("Europe/London")).replace(tzinfo=None)
    attempted = await db.fetchval("SELECT reminderd.schedule('acme', 'a', local_time => $1, contact_id => "
                                  "'c1')", wall)
    fresh = await db.fetchval("SELECT reminderd.schedule('acme', 'b', local_time => $1, contact_id => 'c1')",
                              wall)
    # as the daemon leaves a row after a failed attempt: its occurrence kept, its retry in 10 minutes
    await db.execute("UPDATE reminderd.scheduled_messages SET attempts = 1, scheduled_for = fire_at, "
                     "fire_at = now() + interval '10 minutes' WHERE id = $1", attempted)
    before = await row_by_id(db, attempted)
    await db.execute("UPDATE reminderd.tenants SET timezone = 'America/Denver' WHERE id = 'acme'")
    after = await row_by_id(db, attempted)
    assert after["timezone"] == "America/Denver"
    assert (after["attempts"], after["scheduled_for"], after["fire_at"]) == (
        1, before["scheduled_for"], before["fire_at"])
    assert (await row_by_id(db, fresh))["fire_at"] == wall.replace(tzinfo=ZoneInfo("America/Denver"))


async def test_a_requeued_occurrence_keeps_its_webhook_id_when_its_zone_moves(db: asyncpg.Connection) -> None:
    await db.execute("INSERT INTO reminderd.tenants (id, callback_url, timezone) VALUES ('acme', "
                     "'https://example.com/cb', 'Europe/London')")
    await upsert(db, {"contact_id": "c1", "timezone": "Asia/Kolkata"})
    wall = (datetime.now(UTC) + timedelta(days=2)).astimezone(ZoneInfo("Asia/Kolkata")).replace(tzinfo=None)
    message_id = await db.fetchval("SELECT reminderd.schedule('acme', 'a', local_time => $1, contact_id => "
                                   "'c1')", wall)
    # requeued after it died: attempts 0, its occurrence kept; the receiver has seen it (a delivery)
    occurrence = await db.fetchval(
        "UPDATE reminderd.scheduled_messages SET scheduled_for = fire_at, "
        "fire_at = now() + interval '1 minute' "
        "WHERE id = $1 RETURNING scheduled_for", message_id)
    await db.execute("INSERT INTO reminderd.deliveries (message_id, tenant_id, ref_id, webhook_id, attempt, "
                     "scheduled_for, status_code, duration_ms) "
                     "VALUES ($1, 'acme', 'a', 'msg_x', 1, $2, 503, 5)",
                     message_id, occurrence)
    await upsert(db, {"contact_id": "c1", "timezone": "Asia/Kathmandu"})
    row = await row_by_id(db, message_id)
    assert (row["timezone"], row["scheduled_for"]) == ("Asia/Kathmandu", occurrence)


async def test_a_plain_delete_of_a_contact_cancels_its_live_messages(db: asyncpg.Connection) -> None:
    await db.execute("INSERT INTO reminderd.tenants (id, callback_url, timezone) VALUES ('acme', "
                     "'https://example.com/cb', 'Europe/London')")
    await upsert(db, {"contact_id": "c1", "timezone": "Asia/Kolkata"})
    await upsert(db, {"contact_id": "c2", "timezone": "Asia/Kolkata"})
    gone = await db.fetchval("SELECT reminderd.schedule('acme', 'a', fire_in => '1 day', contact_id => 'c1')")
    kept = await db.fetchval("SELECT reminderd.schedule('acme', 'b', fire_in => '1 day', contact_id => 'c2')")
    await db.execute("DELETE FROM reminderd.contacts WHERE contact_id = 'c1'")
    row = await row_by_id(db, gone)
    assert (row["status"], row["last_event"], row["last_error"]) == (
        "cancelled", "cancelled", "contact c1 deleted")
    assert (await row_by_id(db, kept))["status"] == "pending"
    # back again, with another zone: the cancelled message stays cancelled, in its old zone
    await upsert(db, {"contact_id": "c1", "timezone": "Asia/Tokyo"})
    row = await row_by_id(db, gone)
    assert (row["status"], row["timezone"]) == ("cancelled", "Asia/Kolkata")
    assert await db.fetchval("SELECT reminderd.delete_contacts('acme', ARRAY['c2'])") == 1
    assert (await row_by_id(db, kept))["last_error"] == "contact c2 deleted"


async def test_a_message_held_or_reaped_after_its_zone_moved_takes_the_new_zone(db: asyncpg.Connection) -> None:
    await db.execute("INSERT INTO reminderd.tenants (id, callback_url, timezone) VALUES ('acme', "
                     "'https://example.com/cb', 'Europe/London')")
    await upsert(db, {"contact_id": "c1", "timezone": "Asia/Kolkata"})
    held = await db.fetchval("SELECT reminderd.schedule_cron('acme', 'held', '0 9 * * *', contact_id => 'c1')")
    reaped = await db.fetchval(
        "SELECT reminderd.schedule_cron('acme', 'reaped', '0 9 * * *', contact_id => 'c1')")
    plain = await db.fetchval("SELECT reminderd.schedule_cron('acme', 'plain', '0 9 * * *', timezone => 'UTC')")
    # claimed as the daemon claims: picked, the attempt counted, the occurrence a minute ago
    await db.execute("UPDATE reminderd.scheduled_messages SET status = 'picked', "
                     "picked_at = clock_timestamp(), fire_at = now() - interval '1 minute', attempts = 1, "
                     "scheduled_for = now() - interval '1 minute'")
    await upsert(db, {"contact_id": "c1", "timezone": "Asia/Tokyo"})
    assert (await row_by_id(db, held))["timezone"] == "Asia/Kolkata"  # for the attempt in flight
    # held back before any request, as record_outcomes leaves a deferral: the attempt refunded
    await db.execute("UPDATE reminderd.scheduled_messages SET status = 'pending', last_event = 'deferred', "
                     "attempts = 0, fire_at = now() + interval '1 hour' WHERE id = $1", held)
    # the lease runs out, as reap_expired_leases leaves a row: the same occurrence, to redeliver
    await db.execute("UPDATE reminderd.scheduled_messages SET status = 'pending', last_event = 'lease_expired' "
                     "WHERE id <> $1", held)
    rows = {m: await row_by_id(db, m) for m in (held, reaped, plain)}
    assert all(rows[m]["timezone"] == "Asia/Tokyo" for m in (held, reaped))
    assert (rows[held]["fire_at"], rows[held]["scheduled_for"]) == (None, None)  # planned again, in Tokyo
    assert rows[reaped]["attempts"] == 1 and rows[reaped]["scheduled_for"] is not None  # its webhook-id kept
    assert rows[reaped]["fire_at"] is not None
    assert rows[plain]["timezone"] == "UTC"
    assert "-> Asia/Tokyo (contact) after the attempt" in rows[held]["last_error"]


async def test_truncating_contacts_is_refused_saying_to_delete_them(db: asyncpg.Connection) -> None:
    """TRUNCATE fires no DELETE trigger: it would leave live messages for contacts that are gone.
    Refused (0A000) with a hint to delete instead; nothing is removed."""
    await db.execute("INSERT INTO reminderd.tenants (id, callback_url, timezone) VALUES ('acme', "
                     "'https://example.com/cb', 'Europe/London')")
    await upsert(db, {"contact_id": "c1", "timezone": "Asia/Kolkata"})
    live = await db.fetchval("SELECT reminderd.schedule('acme', 'a', fire_in => '1 day', contact_id => 'c1')")
    for statement in ("TRUNCATE reminderd.contacts CASCADE",
                      "TRUNCATE reminderd.audience_members, reminderd.contacts"):
        with pytest.raises(asyncpg.FeatureNotSupportedError) as refused:
            await db.execute(statement)
        assert refused.value.message in {  # audience_members, truncated with it, is refused too (0034)
            "reminderd.contacts cannot be truncated: its contacts' live messages would be left pointing"
            " at nobody",
            "reminderd.audience_members cannot be truncated: the audiences' member counts would be left wrong"}
        assert refused.value.hint is not None and refused.value.hint.startswith("Delete them instead")
    assert await db.fetchval("SELECT count(*) FROM reminderd.contacts") == 1
    assert (await row_by_id(db, live))["status"] == "pending"


async def test_changing_a_contacts_id_is_refused_its_id_is_its_identity(db: asyncpg.Connection) -> None:
    """A contact's messages and memberships name it by its id: moving the id would leave them
    pointing at nobody. Refused (0A000) naming the contact, with a hint; other changes stay free."""
    await db.execute("INSERT INTO reminderd.tenants (id, callback_url, timezone) VALUES ('acme', "
                     "'https://example.com/cb', 'Europe/London')")
    await upsert(db, {"contact_id": "c1", "timezone": "Asia/Kolkata"})
    live = await db.fetchval("SELECT reminderd.schedule('acme', 'a', fire_in => '1 day', contact_id => 'c1')")
    with pytest.raises(asyncpg.FeatureNotSupportedError) as refused:
        await db.execute("UPDATE reminderd.contacts SET contact_id = 'c9' WHERE contact_id = 'c1'")
    assert refused.value.message == (
        "contact acme / c1 cannot change its contact_id to c9: the id is its identity")
    assert refused.value.hint is not None and "delete" in refused.value.hint
    await db.execute("UPDATE reminderd.contacts SET contact_id = 'c1', timezone = 'Asia/Tokyo' "
                     "WHERE contact_id = 'c1'")
    row = await row_by_id(db, live)
    assert (row["status"], row["contact_id"], row["timezone"]) == ("pending", "c1", "Asia/Tokyo")
