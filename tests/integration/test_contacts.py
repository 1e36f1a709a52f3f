"""Contacts (issue 14, docs/audiences.md) against a real PostgreSQL: upsert_contacts and plain SQL
resolve a contact's zone in the order asked (its timezone, its phone, its country, the tenant's);
a message naming a contact gets that zone and records why; when a contact's zone changes its
pending wall-clock messages are placed again in the same statement and audited; contact_messages
shows a contact's whole picture; audiences; an app role sees only its own tenant's contacts."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from reminderd.schedule.cron import next_fire
from reminderd.testing import add_tenant

pytestmark = pytest.mark.shared_database


@pytest.fixture
async def acme(db: asyncpg.Connection) -> str:
    await add_tenant(db, "acme")
    await db.execute("UPDATE reminderd.tenants SET timezone = 'Europe/London' WHERE id = 'acme'")
    return "acme"


async def upsert(db: asyncpg.Connection, *contacts: dict[str, Any], tenant: str = "acme") -> int:
    written: int = await db.fetchval("SELECT reminderd.upsert_contacts($1, $2::jsonb)", tenant,
                                     json.dumps(contacts))
    return written


async def contact(db: asyncpg.Connection, contact_id: str) -> asyncpg.Record:
    row: asyncpg.Record = await db.fetchrow(
        "SELECT * FROM reminderd.contacts WHERE tenant_id = 'acme' AND contact_id = $1", contact_id)
    return row


async def refusal(call: Any) -> asyncpg.PostgresError:
    with pytest.raises(asyncpg.PostgresError) as failure:
        await call
    return failure.value


def next_local(zone: str, days: int, hour: int = 9) -> datetime:
    """A wall time `days` ahead at `hour`, naive."""
    day = (datetime.now(UTC).astimezone(ZoneInfo(zone)) + timedelta(days=days)).date()
    return datetime(day.year, day.month, day.day, hour)


# Resolution ----------------------------------------------------------------------------------------


async def test_the_zone_comes_from_the_timezone_then_the_phone_then_the_country(
    db: asyncpg.Connection, acme: str
) -> None:
    assert await upsert(
        db,
        {"contact_id": "own", "timezone": "Asia/Tokyo", "phone": "+12125550100", "country": "US"},
        {"contact_id": "by_phone", "phone": "+1 312 555 0100", "country": "GB"},
        {"contact_id": "uk_mobile", "phone": "+447911123456", "country": "gb"},  # no place: its country
        {"contact_id": "invalid", "phone": "+1 212 000 0000", "country": "IN"},  # falls through
        {"contact_id": "multi_country", "country": "US"},  # several zones: the tenant's
        {"contact_id": "nothing"},
    ) == 6
    got = {r["contact_id"]: (r["resolved_timezone"], r["timezone_source"])
           for r in await db.fetch("SELECT * FROM reminderd.contacts")}
    assert got == {
        "own": ("Asia/Tokyo", "contact"), "by_phone": ("America/Chicago", "phone"),
        "uk_mobile": ("Europe/London", "country"), "invalid": ("Asia/Kolkata", "country"),
        "multi_country": (None, None), "nothing": (None, None),
    }
    assert (await contact(db, "uk_mobile"))["country"] == "GB"


async def test_plain_sql_writes_resolve_through_the_trigger(db: asyncpg.Connection, acme: str) -> None:
    await db.execute("INSERT INTO reminderd.contacts (tenant_id, contact_id, phone) VALUES ('acme', 'c1', "
                     "'+61 7 3224 4000')")
    assert (await contact(db, "c1"))["resolved_timezone"] == "Australia/Brisbane"
    await db.execute("UPDATE reminderd.contacts SET country = 'DE', phone = NULL WHERE contact_id = 'c1'")
    row = await contact(db, "c1")
    assert (row["resolved_timezone"], row["timezone_source"]) == ("Europe/Berlin", "country")
    failure = await refusal(db.execute(
        "UPDATE reminderd.contacts SET timezone = 'Mars/Olympus' WHERE contact_id = 'c1'"))
    assert (failure.sqlstate, failure.message) == ("22023",
                                                   'unknown timezone "Mars/Olympus" for contact acme / c1')


async def test_fields_left_out_are_kept_null_clears_and_the_last_of_a_contact_wins(
    db: asyncpg.Connection, acme: str
) -> None:
    await upsert(db, {"contact_id": "c1", "phone": "+12125550100", "attributes": {"plan": "gold"}})
    await upsert(db, {"contact_id": "c1", "country": "IN"})
    row = await contact(db, "c1")
    assert (row["phone"], row["country"], json.loads(row["attributes"])) == ("+12125550100", "IN",
                                                                             {"plan": "gold"})
    assert row["timezone_source"] == "phone"  # the phone still wins over the country
    await upsert(db, {"contact_id": "c1", "phone": None}, {"contact_id": "c1", "timezone": "Asia/Dubai"})
    row = await contact(db, "c1")
    assert (row["phone"], row["resolved_timezone"], row["timezone_source"]) == ("+12125550100", "Asia/Dubai",
                                                                                   "contact")
    assert await upsert(db, {"contact_id": "c1", "timezone": "Asia/Dubai"}) == 0  # nothing changed: not written


@pytest.mark.parametrize(
    ("contacts", "message"),
    [
        ([{"contact_id": "ok"}, {"phone": "+1"}],
         'contact 2 of the batch (contact_id missing) has no "contact_id" string'),
        ([{"contact_id": "a b"}],
         "contact 1 of the batch (contact_id \"a b\") has a contact_id with characters other"),
        ([{"contact_id": "c", "email": "x@y"}],
         'contact 1 of the batch (contact_id "c") has unknown fields (email)'),
        ([{"contact_id": "c", "country": "Germany"}], "is not a two-letter ISO 3166 code"),
        ([{"contact_id": "c", "attributes": [1]}], '"attributes" is not a JSON object'),
        ([{"contact_id": "c", "timezone": "Mars/Olympus"}],
         'contact 1 of the batch (contact_id "c") has unknown timezone "Mars/Olympus"'),
        ([{"contact_id": "c", "country": "XX"}],
         'contact 1 of the batch (contact_id "c") has unknown country "XX"'),
        ([{"contact_id": "a", "country": "GB"}, {"contact_id": "b", "country": "zz"}, {"contact_id": "c"}],
         'contact 2 of the batch (contact_id "b") has unknown country "ZZ"'),
        ([{"contact_id": "a", "timezone": "Europe/Paris"}, {"contact_id": "b", "country": "GB"},
          {"contact_id": "c", "timezone": "right/Europe/Paris"}, {"contact_id": "d", "country": "QQ"}],
         'contact 3 of the batch (contact_id "c") has unknown timezone "right/Europe/Paris"'),
    ],
)
async def test_a_bad_element_refuses_the_whole_batch_naming_it(
    db: asyncpg.Connection, acme: str, contacts: list[dict[str, Any]], message: str
) -> None:
    failure = await refusal(upsert(db, *contacts))
    assert failure.sqlstate == "22023"
    assert message in failure.message
    assert failure.detail == "Nothing in this batch was changed."
    assert await db.fetchval("SELECT count(*) FROM reminderd.contacts") == 0


async def test_contacts_of_an_unknown_tenant_are_refused(db: asyncpg.Connection) -> None:
    failure = await refusal(upsert(db, {"contact_id": "c"}, tenant="nobody"))
    assert (failure.sqlstate, failure.message) == ("23503", 'unknown tenant "nobody"')


# Messages for a contact ------------------------------------------------------------------------------


async def test_a_message_naming_a_contact_gets_its_zone_and_says_why(db: asyncpg.Connection, acme: str) -> None:
    await upsert(db, {"contact_id": "chicago", "phone": "+1 312 555 0100"}, {"contact_id": "londoner"})
    wall = next_local("America/Chicago", 10)
    message_id = await db.fetchval(
        "SELECT reminderd.schedule('acme', 'r1', local_time => $1, contact_id => 'chicago')", wall)
    row = await db.fetchrow("SELECT * FROM reminderd.scheduled_messages WHERE id = $1", message_id)
    assert (row["timezone"], row["timezone_source"], row["contact_id"], row["local_time"]) == (
        "America/Chicago", "phone", "chicago", wall)
    assert row["fire_at"] == wall.replace(tzinfo=ZoneInfo("America/Chicago"))
    await db.execute("SELECT reminderd.schedule('acme', 'r2', fire_in => '1 hour', contact_id => 'londoner')")
    await db.execute("SELECT reminderd.schedule('acme', 'r3', fire_in => '1 hour', contact_id => 'chicago',"
                     " timezone => 'Asia/Tokyo')")
    zones = {r["ref_id"]: (r["timezone"], r["timezone_source"])
             for r in await db.fetch("SELECT * FROM reminderd.scheduled_messages WHERE ref_id IN ('r2', 'r3')")}
    assert zones == {"r2": ("Europe/London", "tenant"),
                     "r3": ("Asia/Tokyo", "message")}  # the message's own zone wins
    created = await db.fetchval("SELECT reason FROM reminderd.events WHERE message_id = $1", message_id)
    assert created == "contact chicago: timezone America/Chicago (phone)"  # the audit trail says why


async def test_a_recurring_message_for_a_contact(db: asyncpg.Connection, acme: str) -> None:
    await upsert(db, {"contact_id": "c1", "country": "IN"})
    message_id = await db.fetchval("SELECT reminderd.schedule_cron('acme', 'weekly', '0 9 * * 1', "
                                   "contact_id => 'c1')")
    row = await db.fetchrow("SELECT *, now() AS scheduled_at FROM reminderd.scheduled_messages WHERE id = $1",
                            message_id)
    assert (row["timezone"], row["timezone_source"]) == ("Asia/Kolkata", "country")
    # Its first occurrence is timed in SQL when it is scheduled (migration 0005), in the contact's zone.
    assert row["fire_at"] == next_fire("0 9 * * 1", "Asia/Kolkata", row["scheduled_at"])


async def test_an_extra_occurrence_sent_now_is_the_contacts_message_too(
    db: asyncpg.Connection, acme: str
) -> None:
    await upsert(db, {"contact_id": "c1", "country": "IN"})
    schedule_id = await db.fetchval("SELECT reminderd.schedule_cron('acme', 'weekly', '0 9 * * 1', "
                                    "contact_id => 'c1')")
    extra = await db.fetchval("SELECT reminderd.send_now('acme', 'weekly')")  # the HTTP API's (0006)
    row = await db.fetchrow("SELECT extra_of, contact_id, timezone, timezone_source"
                            " FROM reminderd.scheduled_messages WHERE id = $1", extra)
    assert tuple(row) == (schedule_id, "c1", "Asia/Kolkata", "country")
    listed = await db.fetch("SELECT id FROM reminderd.contact_messages('acme', 'c1')")
    assert {r["id"] for r in listed} == {schedule_id, extra}


async def test_a_tenants_default_zone_is_one_the_daemon_reads(db: asyncpg.Connection, acme: str) -> None:
    failure = await refusal(
        db.execute("UPDATE reminderd.tenants SET timezone = 'europe/london' WHERE id = 'acme'"))
    assert (failure.sqlstate, failure.message) == (
        "22023", 'unknown timezone "europe/london" for tenant "acme"')
    assert failure.hint == "Timezone names are case-sensitive: Europe/London."
    failure = await refusal(
        db.execute("UPDATE reminderd.tenants SET callback_url = 'ftp://x' WHERE id = 'acme'"))
    assert failure.constraint_name == "tenant_callback_url_is_http"  # day one's checks stand beside it


async def test_unknown_contacts_and_contacts_without_a_zone_are_refused(db: asyncpg.Connection,
                                                                        acme: str) -> None:
    failure = await refusal(db.execute("SELECT reminderd.schedule('acme', 'r', fire_in => '1h', contact_id "
                                       "=> 'x')"))
    assert (failure.sqlstate, failure.message) == ("P0002", 'unknown contact "x" of tenant "acme"')
    await db.execute("UPDATE reminderd.tenants SET timezone = NULL WHERE id = 'acme'")
    await upsert(db, {"contact_id": "zoneless", "country": "US"})
    failure = await refusal(db.execute(
        "SELECT reminderd.schedule('acme', 'r', fire_in => '1h', contact_id => 'zoneless')"))
    assert failure.sqlstate == "22023"
    assert "has no timezone" in failure.message
    assert "reminderd tenant set TENANT --timezone" in failure.hint


async def test_a_plain_insert_naming_a_contact_reads_it_in_the_contacts_zone(
    db: asyncpg.Connection, acme: str
) -> None:
    await upsert(db, {"contact_id": "c1", "timezone": "Asia/Tokyo"})
    await db.execute("INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, contact_id)"
                     " VALUES ('acme', 'p1', now() + interval '1 hour', 'c1')")
    await db.execute("INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, contact_id,"
                     " timezone) VALUES ('acme', 'p2', now() + interval '1 hour', 'c1', 'UTC')")  # its own wins
    await db.execute("INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
                     " VALUES ('acme', 'p3', now() + interval '1 hour')")  # no contact: UTC, as before
    query = "SELECT ref_id, timezone, timezone_source FROM reminderd.scheduled_messages ORDER BY ref_id"
    assert [tuple(r) for r in await db.fetch(query)] == [
        ("p1", "Asia/Tokyo", "contact"), ("p2", "UTC", "message"), ("p3", "UTC", "message")]
    await upsert(db, {"contact_id": "c1", "timezone": "America/Chicago"})  # re-planned with the contact
    assert [tuple(r) for r in await db.fetch(query)] == [
        ("p1", "America/Chicago", "contact"), ("p2", "UTC", "message"), ("p3", "UTC", "message")]


async def test_a_plain_insert_naming_an_unknown_contact_is_refused(db: asyncpg.Connection, acme: str) -> None:
    for zone in ("DEFAULT", "'Asia/Tokyo'"):
        failure = await refusal(db.execute(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, contact_id, timezone)"
            f" VALUES ('acme', 'p1', now() + interval '1 hour', 'nobody', {zone})"))
        assert (failure.sqlstate, failure.message) == ("P0002", 'unknown contact "nobody" of tenant "acme"')
        assert "upsert_contacts" in failure.hint
    await db.execute("UPDATE reminderd.tenants SET timezone = NULL WHERE id = 'acme'")
    await upsert(db, {"contact_id": "zoneless", "country": "US"})
    failure = await refusal(db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, contact_id)"
        " VALUES ('acme', 'p1', now() + interval '1 hour', 'zoneless')"))
    assert (failure.sqlstate, failure.message.split(":")[0]) == (
        "22023", 'contact "zoneless" of tenant "acme" has no timezone')
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages") == 0


async def test_copy_resolves_the_rows_naming_a_contact(db: asyncpg.Connection, acme: str) -> None:
    await upsert(db, {"contact_id": "c1", "timezone": "Asia/Tokyo"}, {"contact_id": "c2"})
    due = datetime.now(UTC) + timedelta(hours=1)
    await db.copy_records_to_table(
        "scheduled_messages", schema_name="reminderd", columns=["tenant_id", "ref_id", "fire_at", "contact_id"],
        records=[("acme", "k1", due, "c1"), ("acme", "k2", due, "c2"), ("acme", "k3", due, None)])
    rows = await db.fetch("SELECT ref_id, timezone, timezone_source FROM reminderd.scheduled_messages"
                          " ORDER BY ref_id")
    assert [tuple(r) for r in rows] == [
        ("k1", "Asia/Tokyo", "contact"), ("k2", "Europe/London", "tenant"), ("k3", "UTC", "message")]
    failure = await refusal(db.copy_records_to_table(
        "scheduled_messages", schema_name="reminderd", columns=["tenant_id", "ref_id", "fire_at", "contact_id"],
        records=[("acme", "k4", due, None), ("acme", "k5", due, "nobody")]))
    assert failure.sqlstate == "P0002"


# Re-planning ------------------------------------------------------------------------------------------


async def test_a_new_zone_places_pending_wall_times_again_in_the_same_statement(
    db: asyncpg.Connection, acme: str
) -> None:
    await upsert(db, {"contact_id": "c1", "phone": "+1 212 555 0100"})
    wall = next_local("America/New_York", 10)
    one_off = await db.fetchval("SELECT reminderd.schedule('acme', 'wall', local_time => $1, contact_id => "
                                "'c1')", wall)
    instant = await db.fetchval("SELECT reminderd.schedule('acme', 'instant', fire_in => '3 days', "
                                "contact_id => 'c1')")
    recurring = await db.fetchval("SELECT reminderd.schedule_cron('acme', 'weekly', '0 9 * * 1', contact_id "
                                  "=> 'c1')")
    await db.execute("UPDATE reminderd.scheduled_messages SET fire_at = now() + interval '5 days' WHERE id "
                     "= $1",
                     recurring)  # as the daemon would have planned it
    pinned = await db.fetchval("SELECT reminderd.schedule('acme', 'pinned', local_time => $1, contact_id => "
                               "'c1',"
                               " timezone => 'America/New_York')", wall)
    instant_before = await db.fetchval("SELECT fire_at FROM reminderd.scheduled_messages WHERE id = $1",
                                       instant)

    await upsert(db, {"contact_id": "c1", "timezone": "Europe/Paris"})

    rows = {r["id"]: r for r in await db.fetch("SELECT * FROM reminderd.scheduled_messages")}
    assert rows[one_off]["fire_at"] == wall.replace(tzinfo=ZoneInfo("Europe/Paris"))
    assert (rows[one_off]["timezone"], rows[one_off]["timezone_source"]) == ("Europe/Paris", "contact")
    assert rows[instant]["fire_at"] == instant_before  # an instant stays; its zone (quiet hours) moves
    assert rows[instant]["timezone"] == "Europe/Paris"
    assert rows[recurring]["fire_at"] is None  # the daemon plans it again, in the new zone, from now
    assert rows[pinned]["timezone"] == "America/New_York"  # named its own zone: not the contact's
    events = await db.fetch("SELECT message_id, reason FROM reminderd.events WHERE event = 'replanned' "
                            "ORDER BY 1")
    assert {e["message_id"] for e in events} == {one_off, instant, recurring}
    assert events[0]["reason"] == "contact c1: timezone America/New_York (phone) -> Europe/Paris (contact)"


async def test_the_same_zone_from_another_source_is_recorded_without_replanning(
    db: asyncpg.Connection, acme: str
) -> None:
    await upsert(db, {"contact_id": "c1", "country": "IN"})
    message_id = await db.fetchval("SELECT reminderd.schedule('acme', 'r', fire_in => '1 day', contact_id "
                                   "=> 'c1')")
    await upsert(db, {"contact_id": "c1", "phone": "+919876543210"})
    row = await db.fetchrow("SELECT * FROM reminderd.scheduled_messages WHERE id = $1", message_id)
    assert (row["timezone"], row["timezone_source"], row["last_event"]) == ("Asia/Kolkata", "phone", None)
    assert await db.fetchval("SELECT count(*) FROM reminderd.events WHERE message_id = $1", message_id) == 1


async def test_a_message_being_sent_keeps_its_zone(db: asyncpg.Connection, acme: str) -> None:
    await upsert(db, {"contact_id": "c1", "country": "IN"})
    message_id = await db.fetchval("SELECT reminderd.schedule('acme', 'r', fire_in => '1 day', contact_id "
                                   "=> 'c1')")
    await db.execute("UPDATE reminderd.scheduled_messages SET status = 'picked' WHERE id = $1", message_id)
    await upsert(db, {"contact_id": "c1", "country": "DE"})
    assert await db.fetchval("SELECT timezone FROM reminderd.scheduled_messages WHERE id = $1",
                             message_id) == "Asia/Kolkata"


async def test_a_tenants_new_default_replans_the_messages_that_use_it(db: asyncpg.Connection,
                                                                      acme: str) -> None:
    await upsert(db, {"contact_id": "c1"}, {"contact_id": "c2", "country": "IN"})
    wall = next_local("Europe/London", 10)
    uses_default = await db.fetchval("SELECT reminderd.schedule('acme', 'a', local_time => $1, contact_id "
                                     "=> 'c1')",
                                     wall)
    own_zone = await db.fetchval("SELECT reminderd.schedule('acme', 'b', local_time => $1, contact_id => "
                                 "'c2')", wall)
    await db.execute("UPDATE reminderd.tenants SET timezone = 'America/Denver' WHERE id = 'acme'")
    rows = {r["id"]: r for r in await db.fetch("SELECT * FROM reminderd.scheduled_messages")}
    assert rows[uses_default]["fire_at"] == wall.replace(tzinfo=ZoneInfo("America/Denver"))
    assert rows[uses_default]["last_event"] == "replanned"
    assert rows[own_zone]["timezone"] == "Asia/Kolkata"
    failure = await refusal(db.execute("UPDATE reminderd.tenants SET timezone = NULL WHERE id = 'acme'"))
    assert failure.sqlstate == "22023"
    assert "cannot be cleared while its contacts' messages use it" in failure.message
    failure = await refusal(db.execute("UPDATE reminderd.tenants SET timezone = 'Nowhere/Land' WHERE id = "
                                       "'acme'"))
    assert (failure.sqlstate, failure.message) == ("22023", 'unknown timezone "Nowhere/Land" for tenant "acme"')


async def test_a_contact_may_not_lose_the_zone_its_messages_need(db: asyncpg.Connection, acme: str) -> None:
    await db.execute("UPDATE reminderd.tenants SET timezone = NULL WHERE id = 'acme'")
    await upsert(db, {"contact_id": "c1", "country": "IN"})
    await db.execute("SELECT reminderd.schedule('acme', 'r', fire_in => '1 day', contact_id => 'c1')")
    failure = await refusal(upsert(db, {"contact_id": "c1", "country": None}))
    assert failure.sqlstate == "22023"
    assert failure.message == ('contact 1 of the batch (contact_id "c1") would have no timezone, and 1 of its'
                               " messages need one")  # an element of the batch, as the others (0032)
    assert (failure.column_name, failure.constraint_name) == ("contacts[1]", "contact_zone_needed")
    failure = await refusal(db.execute("UPDATE reminderd.contacts SET country = NULL WHERE contact_id = 'c1'"))
    assert failure.sqlstate == "22023"
    assert failure.message == ('contact "c1" of tenant "acme" would have no timezone, and 1 of its messages '
                               "need one")


async def test_deleting_a_contact_cancels_its_live_messages(db: asyncpg.Connection, acme: str) -> None:
    await upsert(db, {"contact_id": "c1"}, {"contact_id": "c2"})
    await db.execute("SELECT reminderd.schedule('acme', 'r1', fire_in => '1 day', contact_id => 'c1')")
    await db.execute("SELECT reminderd.add_to_audience('acme', 'vip', ARRAY['c1', 'c2'])")
    assert await db.fetchval("SELECT reminderd.delete_contacts('acme', ARRAY['c1'])") == 1
    row = await db.fetchrow("SELECT status, last_error FROM reminderd.scheduled_messages WHERE ref_id = 'r1'")
    assert tuple(row) == ("cancelled", "contact c1 deleted")
    assert await db.fetchval("SELECT array_agg(contact_id) FROM reminderd.audience_members") == ["c2"]


# A contact's whole picture -----------------------------------------------------------------------------


async def test_contact_messages_lists_live_ones_soonest_first_then_recent_ones_with_reasons(
    db: asyncpg.Connection, acme: str
) -> None:
    await upsert(db, {"contact_id": "c1", "country": "IN"}, {"contact_id": "other"})
    later = await db.fetchval("SELECT reminderd.schedule('acme', 'later', fire_in => '3 days', contact_id "
                              "=> 'c1')")
    soon = await db.fetchval("SELECT reminderd.schedule('acme', 'soon', fire_in => '1 day', contact_id => "
                             "'c1')")
    paused = await db.fetchval("SELECT reminderd.schedule('acme', 'paused', fire_in => '2 days', contact_id "
                               "=> 'c1')")
    await db.execute("SELECT reminderd.pause('acme', 'paused')")
    done = await db.fetchval("SELECT reminderd.schedule('acme', 'done', fire_in => '1 day', contact_id => "
                             "'c1')")
    await db.execute("SELECT reminderd.cancel('acme', 'done')")
    old = await db.fetchval("SELECT reminderd.schedule('acme', 'old', fire_in => '1 day', contact_id => 'c1')")
    await db.execute("UPDATE reminderd.scheduled_messages SET status = 'sent', updated_at = now() - "
                     "interval '30 days'"
                     " WHERE id = $1", old)
    await db.execute("SELECT reminderd.schedule('acme', 'theirs', fire_in => '1 day', contact_id => 'other')")
    rows = await db.fetch("SELECT * FROM reminderd.contact_messages('acme', 'c1')")
    assert [r["id"] for r in rows] == [soon, paused, later, done]
    by_id = {r["id"]: r for r in rows}
    assert by_id[paused]["status"] == "paused"
    assert by_id[done]["reason"] == "cancelled"
    local = by_id[soon]["local_fire_at"]
    assert local == by_id[soon]["fire_at"].astimezone(ZoneInfo("Asia/Kolkata")).replace(tzinfo=None)
    limited = await db.fetch("SELECT * FROM reminderd.contact_messages('acme', 'c1', '60 days', 2)")
    assert [r["id"] for r in limited] == [soon, paused]


async def test_contact_messages_reads_the_contacts_rows_only(db: asyncpg.Connection, acme: str) -> None:
    plan = "\n".join(r[0] for r in await db.fetch(
        "EXPLAIN SELECT * FROM reminderd.scheduled_messages m WHERE m.tenant_id = 'acme' AND m.contact_id = "
        "'c1'"
        " AND (m.status IN ('pending', 'picked', 'paused', 'awaiting_approval')"
        " OR m.updated_at >= now() - interval '7 days')"))
    assert "scheduled_messages_contact" in plan or "Seq Scan" in plan  # an empty table may be scanned
    await db.execute("SET enable_seqscan = off")
    explained = await db.fetch("EXPLAIN SELECT * FROM reminderd.contact_messages('acme', 'c1')")
    plan = "\n".join(r[0] for r in explained)
    await db.execute("RESET enable_seqscan")
    assert "scheduled_messages_contact" in plan


# Audiences -------------------------------------------------------------------------------------------


async def test_audiences_are_managed_from_sql(db: asyncpg.Connection, acme: str) -> None:
    await upsert(db, {"contact_id": "a"}, {"contact_id": "b"}, {"contact_id": "c"})
    assert await db.fetchval("SELECT reminderd.add_to_audience('acme', 'vip', ARRAY['a', 'b', 'a'])") == 2
    assert await db.fetchval("SELECT reminderd.add_to_audience('acme', 'vip', ARRAY['b', 'c'])") == 1
    assert await db.fetchval("SELECT reminderd.remove_from_audience('acme', 'vip', ARRAY['a', 'zz'])") == 1
    members = await db.fetchval("SELECT array_agg(contact_id ORDER BY contact_id) FROM "
                                "reminderd.audience_members")
    assert members == ["b", "c"]
    failure = await refusal(db.execute("SELECT reminderd.add_to_audience('acme', 'vip', ARRAY['b', 'x', 'y'])"))
    assert (failure.sqlstate, failure.message) == ("P0002",
                                                   '2 of these are not contacts of tenant "acme": x, y')
    failure = await refusal(db.execute("SELECT reminderd.add_to_audience('acme', 'bad name', ARRAY['b'])"))
    assert failure.sqlstate == "22023"
    assert await db.fetchval("SELECT reminderd.drop_audience('acme', 'vip')") == 1
    assert await db.fetchval("SELECT count(*) FROM reminderd.audience_members") == 0
    assert await db.fetchval("SELECT count(*) FROM reminderd.contacts") == 3


# Row-level security ------------------------------------------------------------------------------------


def as_role(url: str, role: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{role}@{rest.rpartition('@')[2]}"


async def test_each_app_role_upserts_and_sees_only_its_own_tenants_contacts(
    db: asyncpg.Connection, database_url: str, acme: str
) -> None:
    await add_tenant(db, "globex")
    roles = {tenant: f"app_{tenant}_{uuid.uuid4().hex[:8]}" for tenant in ("acme", "globex")}
    connections = []
    try:
        for tenant, role in roles.items():
            await db.execute(f"CREATE ROLE {role} LOGIN IN ROLE reminderd_app")
            await db.execute("INSERT INTO reminderd.tenant_members (role_name, tenant_id) VALUES ($1, $2)",
                             role, tenant)
        app_a = await asyncpg.connect(as_role(database_url, roles["acme"]))
        app_b = await asyncpg.connect(as_role(database_url, roles["globex"]))
        connections += [app_a, app_b]
        assert await upsert(app_a, {"contact_id": "c1", "phone": "+12125550100"}) == 1
        assert await upsert(app_b, {"contact_id": "c1", "country": "IN"}, tenant="globex") == 1
        failure = await refusal(upsert(app_a, {"contact_id": "c2"}, tenant="globex"))
        assert failure.sqlstate == "23503"  # another tenant is one it cannot see
        seen = await app_a.fetch("SELECT tenant_id, contact_id, resolved_timezone FROM reminderd.contacts")
        assert [tuple(r) for r in seen] == [("acme", "c1", "America/New_York")]
        assert await app_b.fetchval("SELECT count(*) FROM reminderd.contacts WHERE tenant_id = 'acme'") == 0
        failure = await refusal(app_a.execute("SELECT reminderd.approve_broadcast('acme', 1, actor => "
                                              "'someone')"))
        assert failure.sqlstate == "42501"  # an app role acts as itself, never under another name
    finally:
        for connection in connections:
            await connection.close()
        for role in roles.values():
            await db.execute(f"DROP OWNED BY {role}")
            await db.execute(f"DROP ROLE {role}")


async def test_an_explicit_etc_universal_is_the_messages_zone_not_the_contacts(
    db: asyncpg.Connection, acme: str
) -> None:
    """The column's default, 'Etc/Universal', stands for a zone left out (admit_message): one a
    caller gives is stored as 'UTC', the same zone, so it stays the message's and its time with it."""
    await upsert(db, {"contact_id": "tok", "timezone": "Asia/Tokyo"})
    wall = next_local("UTC", 10)
    once = await db.fetchval("SELECT reminderd.schedule('acme', 'u1', local_time => $1,"
                             " timezone => 'Etc/Universal', contact_id => 'tok')", wall)
    daily = await db.fetchval("SELECT reminderd.schedule_cron('acme', 'u2', '0 9 * * *',"
                              " timezone => 'Etc/Universal', contact_id => 'tok')")
    rows = {r["id"]: r
            for r in await db.fetch("SELECT *, now() AS scheduled_at FROM reminderd.scheduled_messages")}
    assert (rows[once]["timezone"], rows[once]["timezone_source"]) == ("UTC", "message")
    assert rows[once]["fire_at"] == wall.replace(tzinfo=UTC)
    assert (rows[daily]["timezone"], rows[daily]["timezone_source"]) == ("UTC", "message")
    assert rows[daily]["fire_at"] == next_fire("0 9 * * *", "UTC", rows[daily]["scheduled_at"])
