"""Broadcasts (issue 14, docs/audiences.md) against a real PostgreSQL, and with a real worker for
delivery: one row per contact at the wall time in the contact's own zone, checked against Python's
zoneinfo for every zone (a time skipped by a clock change included); refused whole, with the
reason, counts and SQLSTATE, when a send would be in the past or beyond the horizon, over the
tenant's limit, or recurring more often than hourly; approval by a second person; progress counts
that always equal the rows; the broadcast.completed callback; recurring broadcasts staged one
occurrence at a time to the audience as it stands then."""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from standardwebhooks.webhooks import Webhook
from structlog.testing import capture_logs
from support import LOOKBACK_S, TEST_SECRET, db_now, drain, fast_settings, poll_until

from reminderd.housekeeping import BroadcastCompleter, BroadcastStager
from reminderd.jobs import Job
from reminderd.lifecycle import Event, Status
from reminderd.migrate import upgrade
from reminderd.outcome import AttemptResult, Outcome
from reminderd.queries import QUERIES
from reminderd.schedule import Waves, load_timezone, span, to_instant
from reminderd.store import NO_LIMIT, Store, _outcome_v1
from reminderd.testing import Receiver, add_tenant

pytestmark = pytest.mark.shared_database

ZONES = [
    "Pacific/Kiritimati", "Pacific/Auckland", "Australia/Sydney", "Asia/Tokyo", "Asia/Kolkata",
        "Asia/Kathmandu",
    "Asia/Dubai", "Europe/Moscow", "Europe/Berlin", "Europe/London", "America/Sao_Paulo", "America/New_York",
    "America/Los_Angeles", "Pacific/Honolulu",
]


async def contacts_in(db: asyncpg.Connection, zones: list[str], per_zone: int = 1,
                      tenant: str = "acme") -> list[str]:
    items = [{"contact_id": f"{zone.split('/')[-1].lower()}_{n}", "timezone": zone}
             for zone in zones for n in range(per_zone)]
    await db.execute("SELECT reminderd.upsert_contacts($1, $2::jsonb)", tenant, json.dumps(items))
    return [item["contact_id"] for item in items]


@pytest.fixture
async def acme(db: asyncpg.Connection) -> str:
    await add_tenant(db, "acme")
    await db.execute("UPDATE reminderd.tenants SET timezone = 'UTC' WHERE id = 'acme'")
    return "acme"


async def refusal(call: Any) -> asyncpg.PostgresError:
    with pytest.raises(asyncpg.PostgresError) as failure:
        await call
    return failure.value


async def broadcast(db: asyncpg.Connection, sql_args: str, *args: Any) -> int:
    broadcast_id: int = await db.fetchval(f"SELECT reminderd.broadcast('acme', {sql_args})", *args)
    return broadcast_id


def days_ahead(days: int, hour: int = 9) -> datetime:
    day = datetime.now(UTC).date() + timedelta(days=days)
    return datetime(day.year, day.month, day.day, hour)


def next_spring_forward(zone: str) -> datetime:
    """The first wall time skipped by the next forward clock change in `zone` (naive)."""
    tz = ZoneInfo(zone)
    instant = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    for _ in range(24 * 400):
        later = instant + timedelta(hours=1)
        if later.astimezone(tz).utcoffset() > instant.astimezone(tz).utcoffset():  # type: ignore[operator]
            return (instant.astimezone(tz).replace(tzinfo=None) + timedelta(hours=1)).replace(minute=30)
        instant = later
    raise AssertionError(f"no clock change in {zone} within 400 days")


async def counts_agree(db: asyncpg.Connection, broadcast_id: int) -> dict[str, int]:
    """The broadcast's counts, asserted equal to a count of its rows."""
    shown = await db.fetchrow("SELECT * FROM reminderd.broadcasts WHERE id = $1", broadcast_id)
    rows = await db.fetch(
        "SELECT reminderd.broadcast_state(status, last_event) AS state, count(*) FROM "
        "reminderd.scheduled_messages"
        " WHERE broadcast_id = $1 AND contact_id IS NOT NULL GROUP BY 1", broadcast_id)
    counted = {r["state"]: r["count"] for r in rows}
    states = ("waiting", "held", "sent", "failed", "expired", "cancelled")
    assert {state: shown[state] for state in states} == {state: counted.get(state, 0) for state in states}
    assert shown["staged"] == sum(counted.values())
    return {state: shown[state] for state in (*states, "staged")}


# Staging -----------------------------------------------------------------------------------------------


async def test_one_row_per_contact_at_the_wall_time_in_its_own_zone(db: asyncpg.Connection, acme: str) -> None:
    await db.execute("UPDATE reminderd.config SET value = '400 days' WHERE key = 'horizon'")
    await contacts_in(db, ZONES, per_zone=3)
    for local_time in (days_ahead(5), next_spring_forward("America/New_York"),
                       next_spring_forward("Australia/Sydney")):
        prefix = f"bf{local_time:%Y%m%d%H%M}"
        broadcast_id = await broadcast(db, "$1, $2, everyone => true, payload => '{\"offer\": 1}'", prefix,
                                       local_time)
        rows = await db.fetch("SELECT * FROM reminderd.scheduled_messages WHERE broadcast_id = $1",
                              broadcast_id)
        assert len(rows) == 3 * len(ZONES)
        for row in rows:
            expected = to_instant(local_time, load_timezone(row["timezone"]))
            assert row["fire_at"] == expected, (row["timezone"], local_time)
            assert row["ref_id"] == f"{prefix}:{row['contact_id']}"
            assert (row["category"], row["timezone_source"], row["local_time"], row["status"]) == (
                "marketing", "contact", local_time, "pending")
            assert json.loads(row["payload"]) == {"offer": 1}
        first = min(rows, key=lambda row: row["fire_at"])
        assert first["timezone"] == "Pacific/Kiritimati"  # the zone furthest ahead sends first
    # cancel_matching cancels a whole campaign by its prefix
    assert await db.fetchval("SELECT reminderd.cancel_matching('acme', $1)",
                             f"bf{days_ahead(5):%Y%m%d%H%M}:%") == 42


async def test_the_audience_is_a_list_these_contacts_or_everyone(db: asyncpg.Connection, acme: str) -> None:
    ids = await contacts_in(db, ["Asia/Tokyo", "Europe/Berlin", "America/Chicago"])
    await db.execute("SELECT reminderd.add_to_audience('acme', 'vip', $1)", ids[:2])
    by_list = await broadcast(db, "'a', $1, audience => 'vip'", days_ahead(3))
    by_ids = await broadcast(db, "'b', $1, contact_ids => $2", days_ahead(3), [ids[2], ids[2]])
    everyone = await broadcast(db, "'c', $1, everyone => true", days_ahead(3))
    reached = {b: await db.fetchval("SELECT array_agg(contact_id ORDER BY contact_id) FROM"
                                    " reminderd.scheduled_messages WHERE broadcast_id = $1", b)
               for b in (by_list, by_ids, everyone)}
    assert reached == {by_list: sorted(ids[:2]), by_ids: [ids[2]], everyone: sorted(ids)}
    preview = await db.fetch("SELECT * FROM reminderd.broadcast_preview('acme', $1, everyone => true)",
                             days_ahead(3))
    assert [(p["timezone"], p["contacts"], p["from_contact"]) for p in preview] == [
        ("Asia/Tokyo", 1, 1), ("Europe/Berlin", 1, 1), ("America/Chicago", 1, 1)]


async def test_the_same_call_again_is_the_same_broadcast_and_a_prefix_in_use_is_refused(
    db: asyncpg.Connection, acme: str
) -> None:
    await contacts_in(db, ["Asia/Tokyo"])
    first = await broadcast(db, "'bf', $1, everyone => true", days_ahead(3))
    assert await broadcast(db, "'bf', $1, everyone => true", days_ahead(3)) == first
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages") == 1
    failure = await refusal(broadcast(db, "'bf', $1, everyone => true", days_ahead(4)))
    assert (failure.sqlstate, failure.message) == (
        "23505", f'broadcast {first} of tenant "acme" already uses ref_prefix "bf" and is not done')
    await db.execute("SELECT reminderd.schedule('acme', 'promo:x', fire_in => '1 day')")
    failure = await refusal(broadcast(db, "'promo', $1, everyone => true", days_ahead(3)))
    assert failure.sqlstate == "23505"
    assert failure.message == '1 live messages of tenant "acme" already have refs "promo:…"'


async def test_a_send_in_the_past_refuses_the_whole_broadcast_naming_the_zones(
    db: asyncpg.Connection, acme: str
) -> None:
    await contacts_in(db, ["Pacific/Kiritimati", "Asia/Tokyo", "America/Los_Angeles"], per_zone=2)
    now = await db_now(db)
    # Two hours from now on Tokyo's clock: already past in Kiritimati (UTC+14), ahead elsewhere.
    local_time = now.astimezone(ZoneInfo("Asia/Tokyo")).replace(tzinfo=None, microsecond=0) + timedelta(hours=2)
    failure = await refusal(broadcast(db, "'bf', $1, everyone => true", local_time))
    assert failure.sqlstate == "22023"
    assert failure.message == (f'broadcast "bf" at {local_time:%Y-%m-%d %H:%M} would send 2 of its 6 messages '
                               "in the past (1 of its 3 zones)")
    assert failure.detail.startswith("Pacific/Kiritimati: 2 contacts at ")
    assert "later local_time" in failure.hint
    assert await db.fetchval("SELECT count(*) FROM reminderd.broadcast_requests") == 0  # nothing staged


async def test_beyond_the_horizon_is_refused(db: asyncpg.Connection, acme: str) -> None:
    await contacts_in(db, ["Asia/Tokyo"])
    failure = await refusal(broadcast(db, "'bf', $1, everyone => true", days_ahead(120)))
    assert failure.sqlstate == "22008"
    assert "beyond the horizon of 90 days" in failure.message


async def test_the_guards_refuse_with_the_count(db: asyncpg.Connection, acme: str) -> None:
    await contacts_in(db, ZONES, per_zone=2)
    await db.execute("UPDATE reminderd.tenants SET broadcast_limit = 20 WHERE id = 'acme'")
    failure = await refusal(broadcast(db, "'bf', $1, everyone => true", days_ahead(3)))
    assert (failure.sqlstate, failure.message) == (
        "54000", 'broadcast "bf" would send to 28 contacts; tenant "acme" allows at most 20 in one broadcast')
    assert failure.detail == "28 contacts over 14 zones."
    await db.execute("UPDATE reminderd.tenants SET broadcast_limit = NULL WHERE id = 'acme'")
    failure = await refusal(broadcast(db, "'bf', cron => '*/5 * * * *', everyone => true"))
    assert (failure.sqlstate, failure.message) == (
        "22023", "cron '*/5 * * * *' fires up to 12 times an hour: each occurrence would send to 28 contacts, "
                 "336 messages an hour")
    failure = await refusal(broadcast(db, "'bf', rrule => 'FREQ=HOURLY;BYMINUTE=0,30', everyone => true"))
    assert "the rrule fires up to 2 times an hour" in failure.message
    hourly = await broadcast(db, "'hourly', cron => '0 * * * *', everyone => true")
    assert hourly > 0  # once an hour is allowed
    failure = await refusal(broadcast(db, "'bf', $1, audience => 'nobody'", days_ahead(3)))
    assert (failure.sqlstate, failure.message) == ("P0002", 'unknown audience "nobody" of tenant "acme"')
    failure = await refusal(broadcast(db, "'bf', $1, contact_ids => ARRAY['tokyo_0', 'x']", days_ahead(3)))
    assert failure.message == '1 of the contact_ids are not contacts of tenant "acme": x'
    failure = await refusal(broadcast(db, "'bf', $1", days_ahead(3)))
    assert failure.message.startswith("give exactly one audience")


async def test_contacts_without_a_zone_refuse_it(db: asyncpg.Connection, acme: str) -> None:
    await db.execute("UPDATE reminderd.tenants SET timezone = NULL WHERE id = 'acme'")
    await db.execute("""SELECT reminderd.upsert_contacts('acme', '[{"contact_id": "a", "country": "US"},
                        {"contact_id": "b", "country": "IN"}]')""")
    failure = await refusal(broadcast(db, "'bf', $1, everyone => true", days_ahead(3)))
    assert (failure.sqlstate, failure.message) == (
        "22023", '1 of the 2 contacts have no timezone, and tenant "acme" has no default')


# Approval ------------------------------------------------------------------------------------------------


async def test_a_big_broadcast_waits_for_another_person(db: asyncpg.Connection, acme: str) -> None:
    await contacts_in(db, ["Asia/Tokyo", "Europe/Berlin"], per_zone=3)
    await db.execute("UPDATE reminderd.tenants SET approval_threshold = 5 WHERE id = 'acme'")
    broadcast_id = await broadcast(db, "'bf', $1, everyone => true, actor => 'alice'", days_ahead(3))
    assert await db.fetchval("SELECT array_agg(DISTINCT status) FROM reminderd.scheduled_messages") == [
        "awaiting_approval"]
    assert await db.fetchval("SELECT reason FROM reminderd.events LIMIT "
                             "1") == f"broadcast {broadcast_id} awaits approval"
    assert (await counts_agree(db, broadcast_id))["held"] == 6
    failure = await refusal(db.execute("SELECT reminderd.approve_broadcast('acme', $1, 'alice')", broadcast_id))
    assert (failure.sqlstate, failure.message) == (
        "42501", f"broadcast {broadcast_id} was created by alice: another person must approve it")
    assert await db.fetchval("SELECT reminderd.approve_broadcast('acme', $1, 'bob', 'checked the copy')",
                             broadcast_id) == 6
    assert await db.fetchval("SELECT reminderd.approve_broadcast('acme', $1, 'bob')",
                             broadcast_id) == 0  # again: 0
    failure = await refusal(db.execute("SELECT reminderd.approve_broadcast('acme', $1, 'alice')", broadcast_id))
    assert (failure.sqlstate, failure.message) == (  # the creator, approved or not
        "42501", f"broadcast {broadcast_id} was created by alice: another person must approve it")
    request = await db.fetchrow("SELECT * FROM reminderd.broadcasts WHERE id = $1", broadcast_id)
    assert (request["approval"], request["decided_by"], request["waiting"]) == ("approved", "bob", 6)
    events = await db.fetch("SELECT event, status, reason FROM reminderd.events WHERE event = 'approved'")
    assert len(events) == 6
    assert events[0]["reason"] == f"broadcast {broadcast_id} approved by bob: checked the copy"


async def test_rejecting_cancels_every_row(db: asyncpg.Connection, acme: str) -> None:
    await contacts_in(db, ["Asia/Tokyo"], per_zone=3)
    await db.execute("UPDATE reminderd.tenants SET approval_threshold = 0 WHERE id = 'acme'")
    broadcast_id = await broadcast(db, "'bf', $1, everyone => true", days_ahead(3))
    assert await db.fetchval("SELECT reminderd.reject_broadcast('acme', $1, 'carol', 'wrong offer')",
                             broadcast_id) == 3
    assert await db.fetchval("SELECT array_agg(DISTINCT status || ':' || last_event)"
                             " FROM reminderd.scheduled_messages") == ["cancelled:rejected"]
    shown = await db.fetchrow("SELECT * FROM reminderd.broadcasts WHERE id = $1", broadcast_id)
    assert (shown["approval"], shown["cancelled"], shown["done"]) == ("rejected", 3, True)
    failure = await refusal(db.execute("SELECT reminderd.approve_broadcast('acme', $1, 'dave')", broadcast_id))
    assert failure.sqlstate == "55000"
    again = await db.fetchval("SELECT reminderd.reject_broadcast('acme', $1, 'erin')", broadcast_id)
    assert again == 0  # the same decision again changes nothing
    decided_by = await db.fetchval("SELECT decided_by FROM reminderd.broadcasts WHERE id = $1", broadcast_id)
    assert decided_by == "carol"


async def test_cancelling_a_broadcast_awaiting_approval_ends_the_approval(
    db: asyncpg.Connection, acme: str
) -> None:
    """It still said "awaiting" (and ended_reason 'staged') with every row cancelled: the overview
    kept asking for an approval of nothing."""
    await contacts_in(db, ["Asia/Tokyo", "Europe/Berlin"], per_zone=3)
    await db.execute("UPDATE reminderd.tenants SET approval_threshold = 5 WHERE id = 'acme'")
    broadcast_id = await broadcast(db, "'bf', $1, everyone => true, actor => 'alice'", days_ahead(3))
    assert await db.fetchval("SELECT reminderd.cancel_broadcast('acme', $1)", broadcast_id) == 6
    shown = await db.fetchrow("SELECT * FROM reminderd.broadcasts WHERE id = $1", broadcast_id)
    assert (shown["approval"], shown["ended_reason"], shown["cancelled"], shown["done"]) == (
        "cancelled", "cancelled", 6, True)
    failure = await refusal(db.execute("SELECT reminderd.approve_broadcast('acme', $1, 'bob')", broadcast_id))
    assert failure.sqlstate == "55000"
    assert await db.fetchval("SELECT reminderd.cancel_broadcast('acme', $1)", broadcast_id) == 0  # again: 0


async def test_cancelling_a_sent_broadcast_keeps_how_it_ended(db: asyncpg.Connection, acme: str) -> None:
    await contacts_in(db, ["Asia/Tokyo"], per_zone=2)
    broadcast_id = await broadcast(db, "'bf', $1, everyone => true", days_ahead(3))
    await db.execute("UPDATE reminderd.scheduled_messages SET status = 'sent' WHERE broadcast_id = $1",
                     broadcast_id)
    assert await db.fetchval("SELECT reminderd.cancel_broadcast('acme', $1)", broadcast_id) == 0
    shown = await db.fetchrow("SELECT * FROM reminderd.broadcasts WHERE id = $1", broadcast_id)
    assert (shown["approval"], shown["ended_reason"]) == ("not_needed", "staged")  # nothing was cancelled


async def test_a_broadcast_whose_contacts_were_all_deleted_has_nothing_left_to_approve(
    db: asyncpg.Connection, acme: str
) -> None:
    contacts = await contacts_in(db, ["Asia/Tokyo"], per_zone=3)
    await db.execute("UPDATE reminderd.tenants SET approval_threshold = 2 WHERE id = 'acme'")
    broadcast_id = await broadcast(db, "'bf', $1, everyone => true, actor => 'alice'", days_ahead(3))
    await db.execute("SELECT reminderd.delete_contacts('acme', $1)", contacts)
    failure = await refusal(db.execute("SELECT reminderd.approve_broadcast('acme', $1, 'bob')", broadcast_id))
    assert (failure.sqlstate, failure.message) == (
        "55000", f"broadcast {broadcast_id} has nothing left to approve: none of its messages awaits approval")
    assert await db.fetchval("SELECT approval FROM reminderd.broadcast_requests WHERE id = $1",
                             broadcast_id) == "awaiting"  # unchanged: nothing was decided


async def test_a_database_at_0028_with_a_cancelled_broadcast_still_awaiting_upgrades_it_to_cancelled(
    empty_database_url: str
) -> None:
    await asyncio.to_thread(upgrade, empty_database_url, "0028")
    db = await asyncpg.connect(empty_database_url)
    try:
        await add_tenant(db, "acme")
        await contacts_in(db, ["Asia/Tokyo"], per_zone=3)
        await db.execute("UPDATE reminderd.tenants SET approval_threshold = 1 WHERE id = 'acme'")
        cancelled, waiting = [
            await broadcast(db, f"'{prefix}', $1, everyone => true, actor => 'alice'", days_ahead(3))
            for prefix in ("bf", "bg")]
        assert await db.fetchval("SELECT reminderd.cancel_broadcast('acme', $1)", cancelled) == 3
        before = await db.fetchval("SELECT approval FROM reminderd.broadcasts WHERE id = $1", cancelled)
        assert before == "awaiting"
        await asyncio.to_thread(upgrade, empty_database_url, "head")
        shown = {r["id"]: (r["approval"], r["ended_reason"])
                 for r in await db.fetch("SELECT * FROM reminderd.broadcasts")}
        assert shown == {cancelled: ("cancelled", "cancelled"), waiting: ("awaiting", "staged")}
    finally:
        await db.close()


async def test_rows_whose_time_passed_while_waiting_follow_their_backfill(
    db: asyncpg.Connection, acme: str, database_url: str, receiver: Receiver
) -> None:
    await db.execute("UPDATE reminderd.tenants SET callback_url = $1, approval_threshold = 0 WHERE id = 'acme'",
                     receiver.url)
    await contacts_in(db, ["Asia/Tokyo", "Europe/Berlin"])
    broadcast_id = await broadcast(db, "'bf', $1, everyone => true", days_ahead(3))
    # The approval came late: two hours after the rows' time (placed in the past, as waiting would).
    await db.execute("UPDATE reminderd.scheduled_messages SET fire_at = now() - interval '2 hours'")
    await db.execute("SELECT reminderd.approve_broadcast('acme', $1, 'bob')", broadcast_id)
    await drain(fast_settings(database_url))
    rows = await db.fetch("SELECT status, last_error FROM reminderd.scheduled_messages")
    assert {r["status"] for r in rows} == {"expired"}  # more than the default 30 min late: not sent
    assert all("2h late" in r["last_error"] for r in rows)
    assert receiver.received == []
    assert (await counts_agree(db, broadcast_id))["expired"] == 2


# Delivery, progress, completion -------------------------------------------------------------------------


async def test_a_wave_is_delivered_signed_with_its_contact_and_then_its_completion(
    db: asyncpg.Connection, acme: str, database_url: str, receiver: Receiver
) -> None:
    await db.execute("UPDATE reminderd.tenants SET callback_url = $1, signing_secret = $2 WHERE id = 'acme'",
                     receiver.url, TEST_SECRET)
    receiver.secret = TEST_SECRET
    await db.execute("""SELECT reminderd.upsert_contacts('acme', '[
                        {"contact_id": "ny", "phone": "+12125550100"},
                        {"contact_id": "utc"}, {"contact_id": "in", "country": "IN"}]')""")
    now = await db_now(db)
    # Due within seconds in each contact's zone: the same instant, written as each zone's wall time.
    soon = now + timedelta(seconds=2)
    ids = []
    for contact_id, zone in (("ny", "America/New_York"), ("utc", "UTC"), ("in", "Asia/Kolkata")):
        local_time = soon.astimezone(ZoneInfo(zone)).replace(tzinfo=None)
        ids.append(await broadcast(db, "$1, $2, contact_ids => ARRAY[$3], notify => true, category => 'promo'",
                                   f"bf_{contact_id}", local_time, contact_id))
    await drain(fast_settings(database_url), due_within_s=10)

    bodies = [got.message for got in receiver.received]
    assert all(got.verified for got in receiver.received)
    assert all(Webhook(TEST_SECRET).verify(got.body, got.headers) for got in receiver.received)
    sent = {body["contact_id"]: body for body in bodies if "contact_id" in body}
    assert {c: (b["timezone"], b["timezone_source"]) for c, b in sent.items()} == {
        "ny": ("America/New_York", "phone"), "utc": ("UTC", "tenant"), "in": ("Asia/Kolkata", "country")}
    assert sent["ny"]["broadcast_id"] == ids[0]
    completions = [body for body in bodies if body.get("event") == "broadcast.completed"]
    assert sorted(body["broadcast_id"] for body in completions) == sorted(ids)
    assert completions[0]["payload"]["counts"] == {"staged": 1, "sent": 1, "failed": 0, "expired": 0,
                                                   "cancelled": 0}
    assert completions[0]["ref_id"].endswith("#completed")
    for broadcast_id in ids:
        assert await counts_agree(db, broadcast_id) == {"waiting": 0, "held": 0, "sent": 1, "failed": 0,
                                                        "expired": 0, "cancelled": 0, "staged": 1}
        assert await db.fetchval("SELECT done FROM reminderd.broadcasts WHERE id = $1", broadcast_id)


async def test_the_counts_follow_every_change_of_the_rows(db: asyncpg.Connection, acme: str,
                                                          store: Store) -> None:
    await contacts_in(db, ZONES, per_zone=5)
    broadcast_id = await broadcast(db, "'bf', $1, everyone => true", days_ahead(3))
    assert (await counts_agree(db, broadcast_id))["waiting"] == 70
    await db.execute("SELECT reminderd.cancel_matching('acme', 'bf:tokyo%')")
    await db.execute("SELECT reminderd.pause_tenant('acme')")
    assert (await counts_agree(db, broadcast_id))["held"] == 65
    await db.execute("SELECT reminderd.resume_tenant('acme')")
    await db.execute("UPDATE reminderd.scheduled_messages SET status = 'picked' WHERE ref_id LIKE 'bf:berlin%'")
    await db.execute("UPDATE reminderd.scheduled_messages SET status = 'sent' WHERE ref_id LIKE 'bf:berlin%'")
    await db.execute("UPDATE reminderd.scheduled_messages SET status = 'dead' WHERE ref_id LIKE 'bf:london%'")
    await db.execute("UPDATE reminderd.scheduled_messages SET status = 'pending', last_event = 'deferred'"
                     " WHERE ref_id LIKE 'bf:dubai%'")
    counts = await counts_agree(db, broadcast_id)
    assert (counts["sent"], counts["failed"], counts["held"], counts["cancelled"]) == (5, 5, 5, 5)
    assert not await db.fetchval("SELECT done FROM reminderd.broadcasts WHERE id = $1", broadcast_id)
    # Folding the count rows changes no count; once every row ended the wave is completed.
    assert await db.fetchval("SELECT count(*) FROM reminderd.broadcast_counts") > 1
    assert await db.fetchval("SELECT count(*) FROM reminderd.complete_broadcasts(100, 1)") == 0
    assert await db.fetchval("SELECT count(*) FROM reminderd.broadcast_counts") == 1
    await counts_agree(db, broadcast_id)
    await db.execute("UPDATE reminderd.scheduled_messages SET status = 'sent'"
                     " WHERE status IN ('pending', 'paused') AND broadcast_id IS NOT NULL")
    assert await BroadcastCompleter(store).run_once() == 1
    assert await db.fetchval("SELECT done FROM reminderd.broadcasts WHERE id = $1", broadcast_id)
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages WHERE ref_id = "
                             "'bf#completed'") == 0


async def test_the_daemons_claim_and_attempts_count_once_per_batch_without_a_trigger_call(
    db: asyncpg.Connection, acme: str
) -> None:
    """The claim and the attempts' outcomes are the write path's hot statements (issue 13): the
    counting trigger is row-level and its WHEN clause lets through only the rows it must count. A
    claim of waiting rows calls nothing (one held back earlier, by quiet hours, is counted); the
    attempts' outcomes are counted by record_outcomes itself, one count row per wave and batch,
    and only rows held back before any request (no attempt recorded) call the trigger."""
    await contacts_in(db, ZONES[:5], per_zone=2)
    broadcast_id = await broadcast(db, "'bf', $1, everyone => true", days_ahead(3))
    await db.execute("UPDATE reminderd.scheduled_messages SET fire_at = now() - interval '1 second'"
                     " WHERE broadcast_id = $1", broadcast_id)
    await db.execute("UPDATE reminderd.scheduled_messages SET last_event = 'deferred'"
                     " WHERE ref_id = 'bf:tokyo_0'")
    assert (await counts_agree(db, broadcast_id))["held"] == 1
    counted_before = await db.fetchval("SELECT count(*) FROM reminderd.broadcast_counts")

    async with db.transaction():
        await db.execute("SET LOCAL track_functions = 'pl'")
        claimed = await db.fetch(QUERIES["claim"], LOOKBACK_S, 100, 300.0, "send", 1800.0, NO_LIMIT, None, None)
        jobs = sorted(map(Job.from_row, claimed), key=lambda job: job.ref_id)
        after_claim = await count_calls(db)
        outcomes = [Outcome(job, AttemptResult(True, 200, None, 5), Event.FIRED, Status.SENT)
                    for job in jobs[:4]]
        gone, busy = AttemptResult(False, 410, "HTTP 410", 5), AttemptResult(False, 503, "HTTP 503", 5)
        outcomes += [Outcome.dead(job, gone, "HTTP 410") for job in jobs[4:6]]
        outcomes += [Outcome(job, busy, Event.RETRY_SCHEDULED, Status.PENDING, retry_in_s=60.0,
                             next_scheduled_for=job.scheduled_for, last_error="HTTP 503")
                     for job in jobs[6:8]]
        outcomes += [Outcome(job, None, Event.DEFERRED, Status.PENDING, next_fire_at=job.scheduled_for
                             + timedelta(hours=9), refund_attempt=True, last_error="deferred: quiet hours")
                     for job in jobs[8:]]
        moved = await db.fetch(QUERIES["record_outcomes"], [_outcome_v1(outcome) for outcome in outcomes])
        after_record = await count_calls(db)
    counted = await db.fetchval("SELECT count(*) FROM reminderd.broadcast_counts") - counted_before

    assert len(jobs) == 10 and len(moved) == 10
    assert after_claim == 1  # bf:tokyo_0, held by quiet hours, now waiting again
    assert after_record == 1 + 2  # the two held back before any request
    assert counted == 1 + 1 + 2  # the claim's, the batch's (one wave), the two held rows'
    assert await counts_agree(db, broadcast_id) == {"waiting": 2, "held": 2, "sent": 4, "failed": 2,
                                                    "expired": 0, "cancelled": 0, "staged": 10}


async def count_calls(db: asyncpg.Connection) -> int:
    calls: int | None = await db.fetchval(
        "SELECT calls FROM pg_stat_xact_user_functions"
        " WHERE schemaname = 'reminderd' AND funcname = 'count_broadcast_update'"
    )
    return calls or 0


async def test_a_paused_tenants_broadcast_is_held_and_quiet_hours_hold_marketing(
    db: asyncpg.Connection, acme: str, database_url: str, receiver: Receiver
) -> None:
    await db.execute("UPDATE reminderd.tenants SET callback_url = $1 WHERE id = 'acme'", receiver.url)
    await contacts_in(db, ["UTC"], per_zone=2)
    await db.execute("SELECT reminderd.pause_tenant('acme')")
    paused = await broadcast(db, "'held', $1, everyone => true", days_ahead(3))
    assert await db.fetchval("SELECT array_agg(DISTINCT status || ':' || paused_by) FROM "
                             "reminderd.scheduled_messages"
                             " WHERE broadcast_id = $1", paused) == ["paused:tenant"]
    assert (await counts_agree(db, paused))["held"] == 2
    await db.execute("SELECT reminderd.resume_tenant('acme')")
    assert (await counts_agree(db, paused))["waiting"] == 2
    # Quiet hours around now on the contacts' clock: a marketing broadcast due now is deferred.
    now = await db_now(db)
    start = (now - timedelta(hours=1)).astimezone(UTC).time().replace(second=0, microsecond=0)
    end = (now + timedelta(hours=2)).astimezone(UTC).time().replace(second=0, microsecond=0)
    await db.execute("UPDATE reminderd.tenants SET quiet_start = $1, quiet_end = $2 WHERE id = 'acme'",
                     start, end)
    local_time = (now + timedelta(seconds=1)).astimezone(UTC).replace(tzinfo=None)
    quiet = await broadcast(db, "'quiet', $1, everyone => true", local_time)
    await drain(fast_settings(database_url), due_within_s=5)
    assert receiver.received == []
    assert (await counts_agree(db, quiet))["held"] == 2
    reasons = await db.fetch("SELECT reason FROM reminderd.contact_messages('acme', 'utc_0') WHERE "
                             "broadcast_id = $1",
                             quiet)
    assert "quiet hours" in reasons[0]["reason"]


# Recurring broadcasts --------------------------------------------------------------------------------------


async def test_each_occurrence_goes_to_the_audience_as_it_stands_then(
    db: asyncpg.Connection, acme: str, store: Store
) -> None:
    ids = await contacts_in(db, ["Asia/Tokyo", "America/New_York", "Europe/London"])
    await db.execute("SELECT reminderd.add_to_audience('acme', 'vip', $1)", ids[:2])
    broadcast_id = await broadcast(db,
                                   "'weekly', cron => '0 * * * *', audience => 'vip', stage_ahead => '3 hours'")
    stager = BroadcastStager(store)
    assert await stager.run_once() == 1  # planned: the first occurrence still ahead in every zone
    planned = await db.fetchval("SELECT next_occurrence FROM reminderd.broadcast_requests")
    tokyo_wall = (await db_now(db)).astimezone(ZoneInfo("Asia/Tokyo")).replace(tzinfo=None)
    assert planned > tokyo_wall
    assert await stager.run_once() == 2  # staged: stage_ahead covers it
    await db.execute("SELECT reminderd.add_to_audience('acme', 'vip', $1)", ids[2:])
    assert await stager.run_once() == 3  # the next occurrence (an hour later) reaches the new member too
    waves = await db.fetch("SELECT local_time, array_agg(contact_id ORDER BY contact_id) AS contacts"
                           " FROM reminderd.scheduled_messages WHERE broadcast_id = $1 GROUP BY 1 ORDER BY 1",
                           broadcast_id)
    assert [w["contacts"] for w in waves] == [sorted(ids[:2]), sorted(ids)]
    assert waves[1]["local_time"] - waves[0]["local_time"] == timedelta(hours=1)
    refs = await db.fetchval("SELECT array_agg(ref_id) FROM reminderd.scheduled_messages WHERE local_time = $1",
                             waves[0]["local_time"])
    assert sorted(refs) == sorted(f"weekly:{c}#{waves[0]['local_time']:%Y%m%dT%H%M}" for c in ids[:2])
    shown = await db.fetchrow("SELECT * FROM reminderd.broadcasts WHERE id = $1", broadcast_id)
    assert (shown["occurrences"], shown["staged"], shown["done"]) == (2, 5, False)
    assert await stager.run_once() in (0, 3)  # the third is staged only once within stage_ahead


async def test_a_missed_occurrence_is_passed_over_and_a_broken_recurrence_ends(
    db: asyncpg.Connection, acme: str, store: Store
) -> None:
    await contacts_in(db, ["Europe/London"])
    missed = await broadcast(db, "'daily', cron => '0 9 * * *', everyone => true")
    broken = await broadcast(db, "'broken', cron => '0 9 * * *', everyone => true")
    ended = await broadcast(db, "'ended', cron => '0 9 * * *', everyone => true")
    ending = await broadcast(db,
                             "'ending', cron => '0 9 * * *', everyone => true,"
                             " until => now() + interval '1 minute'")
    # As written before migration 0024 refused them at insert (no trigger checks these columns): the
    # stager still ends them, saying why.
    await db.execute("UPDATE reminderd.broadcast_requests SET cron = '61 * * * *' WHERE id = $1", broken)
    await db.execute("UPDATE reminderd.broadcast_requests SET until = now() - interval '1 day' WHERE id = $1",
                     ended)
    long_ago = datetime.now(UTC).replace(tzinfo=None, microsecond=0) - timedelta(days=3)
    await db.execute("UPDATE reminderd.broadcast_requests SET next_occurrence = $1 WHERE id = $2", long_ago,
                     missed)
    await BroadcastStager(store).run_once()
    rows = {r["id"]: r for r in await db.fetch("SELECT * FROM reminderd.broadcasts")}
    assert rows[missed]["last_error"].startswith(f"occurrence {long_ago:%Y-%m-%d %H:%M} missed")
    assert rows[missed]["next_occurrence"] > long_ago
    assert rows[broken]["ended_reason"] == ('cannot recur: invalid cron "61 * * * *": minute 61 is out of range'
                                            " 0\N{EN DASH}59")
    assert rows[ended]["ended_reason"] == "no occurrence ahead"
    assert rows[ending]["ended_reason"] == "no occurrence ahead"
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages") == 0


@pytest.mark.parametrize(
    ("args", "sqlstate", "message", "hint"),
    [
        ("cron => '61 * * * *'", "22023", 'invalid cron "61 * * * *": minute 61 is out of range 0\N{EN DASH}59',
         None),
        ("cron => '0 9 * *'", "23514",
         'cron "0 9 * *" of broadcast "b" of tenant "acme" is not five fields (minute hour day month weekday)',
         "Five fields like '0 9 * * 1-5', six with a leading seconds field, or @hourly, @daily, @weekly, "
         "@monthly, @yearly."),
        ("rrule => 'FREQ=DAILY;COUNT=3;BYHOUR=0;BYMINUTE=0'", "22023",
         'the rrule of broadcast "b" of tenant "acme" has COUNT but no DTSTART',
         "COUNT counts from DTSTART: give one (DTSTART:20261201T090000, a wall time on each contact's clock), "
         "or end it with until or UNTIL instead."),
        ("cron => '0 9 * * *', until => '2026-01-01 09:00Z'", "22008",
         'broadcast "b" of tenant "acme" ends before it starts: its until 2026-01-01T09:00:00Z is already past',
         "Give an until in the future, or none."),
        ("rrule => 'FREQ=DAILY;BYHOUR=9', until => now()", "22008", "ends before it starts", None),
        ("cron => '0 9 * * *', until => '-infinity'", "22008",  # as its trigger says it (0022)
         'until -infinity of broadcast "b" of tenant "acme" is not a finite time',
         "Give the time it ends at, or NULL for no end."),
    ],
)
async def test_a_recurrence_that_could_never_send_is_refused_at_insert(
    db: asyncpg.Connection, acme: str, args: str, sqlstate: str, message: str, hint: str | None
) -> None:
    # Migration 0024: as a message's recurrence is (the same call to schedule_cron or schedule_rrule is
    # refused), where the broadcast was accepted and then ended by the stager, having sent nothing.
    await contacts_in(db, ["Europe/London"])
    failure = await refusal(broadcast(db, f"'b', {args}, everyone => true"))
    assert failure.sqlstate == sqlstate and message in failure.message
    if hint is not None:
        assert failure.hint == hint
    assert await db.fetchval("SELECT count(*) FROM reminderd.broadcast_requests") == 0


async def test_a_count_with_its_own_dtstart_sends_that_many_times(
    db: asyncpg.Connection, acme: str, store: Store
) -> None:
    # COUNT counts from the rule's own DTSTART, even in the zone whose clock is furthest ahead.
    await contacts_in(db, ["Pacific/Kiritimati", "Pacific/Honolulu"])
    start = (datetime.now(UTC).astimezone(ZoneInfo("Pacific/Kiritimati")) + timedelta(days=1)).date()
    rule = f"DTSTART:{start:%Y%m%d}T000000\nRRULE:FREQ=DAILY;COUNT=3;BYHOUR=0;BYMINUTE=0"
    broadcast_id = await broadcast(db, "'c3', rrule => $1, everyone => true, stage_ahead => '5 days'", rule)
    stager = BroadcastStager(store)
    for _ in range(5):
        await stager.run_once()
    waves = await db.fetch("SELECT occurrence, contacts FROM reminderd.broadcast_occurrences ORDER BY 1")
    assert [(w["occurrence"].date(), w["contacts"]) for w in waves] == [
        (start + timedelta(days=n), 2) for n in range(3)]
    assert (await db.fetchrow("SELECT ended_reason FROM reminderd.broadcasts WHERE id = $1", broadcast_id))[
        "ended_reason"] == "no more occurrences"


async def test_an_rrules_until_in_utc_is_an_instant_for_contacts_west_and_east_of_utc(
    db: asyncpg.Connection, acme: str, store: Store
) -> None:
    # RFC 5545: UNTIL=…Z is an instant. Read as a UTC wall time on each contact's clock, Los Angeles
    # was sent 09:00 that day (17:00Z, after it) and Tokyo never 20:00 (11:00Z, before it).
    await contacts_in(db, ["America/Los_Angeles", "Asia/Tokyo"])
    day = (datetime.now(UTC) + timedelta(days=2)).date()
    until = datetime(day.year, day.month, day.day, 12, 0, tzinfo=UTC)
    rule = f"FREQ=DAILY;BYHOUR=9,20;BYMINUTE=0;UNTIL={day:%Y%m%d}T120000Z"
    ids = {zone: await broadcast(db, "$1, rrule => $2, contact_ids => $3, stage_ahead => '5 days'",
                                 zone.split("/")[-1].lower(), rule, [f"{zone.split('/')[-1].lower()}_0"])
           for zone in ("America/Los_Angeles", "Asia/Tokyo")}
    stager = BroadcastStager(store)
    for _ in range(12):
        if not await stager.run_once():
            break
    last: dict[str, datetime] = {}
    for zone, broadcast_id in ids.items():
        fires = [r["fire_at"] for r in await db.fetch(
            "SELECT fire_at FROM reminderd.scheduled_messages WHERE broadcast_id = $1 ORDER BY fire_at",
            broadcast_id)]
        assert fires and all(fire <= until for fire in fires), (zone, fires)
        last[zone] = fires[-1]
        ended = await db.fetchval("SELECT ended_reason FROM reminderd.broadcasts WHERE id = $1", broadcast_id)
        assert ended == "no more occurrences"
    previous = day - timedelta(days=1)
    assert last["America/Los_Angeles"] == to_instant(datetime(previous.year, previous.month, previous.day, 20),
                                                     load_timezone("America/Los_Angeles"))
    assert last["Asia/Tokyo"] == to_instant(datetime(day.year, day.month, day.day, 20),
                                            load_timezone("Asia/Tokyo"))


# With day one and the HTTP API (migrations 0005, 0006) ---------------------------------------------------


async def test_a_wave_staged_after_its_first_zones_instant_follows_each_rows_backfill(
    db: asyncpg.Connection, acme: str, database_url: str
) -> None:
    # No daemon ran at its first zone's instant: that row is staged late, not refused at insert as a
    # message of its own would be (check_arrival, 0005), and its backfill policy decides when claimed.
    await contacts_in(db, ["Pacific/Kiritimati", "Pacific/Honolulu"])
    broadcast_id = await broadcast(db, "'hourly', cron => '0 * * * *', everyone => true")
    now = await db_now(db)
    wall = (now - timedelta(hours=1)).astimezone(ZoneInfo("Pacific/Kiritimati")).replace(
        tzinfo=None, second=0, microsecond=0)
    await db.execute("UPDATE reminderd.broadcast_requests SET next_occurrence = $1 WHERE id = $2", wall,
                     broadcast_id)
    assert await db.fetchval("SELECT reminderd.stage_broadcast($1, $2)", broadcast_id, wall) == 2
    rows = {r["timezone"]: r for r in await db.fetch("SELECT * FROM reminderd.scheduled_messages")}
    assert rows["Pacific/Kiritimati"]["status"] == "pending" and rows["Pacific/Kiritimati"]["fire_at"] < now
    assert rows["Pacific/Honolulu"]["fire_at"] > now + timedelta(hours=22)
    await drain(fast_settings(database_url))
    late = await db.fetchrow("SELECT status, last_error FROM reminderd.scheduled_messages WHERE id = $1",
                             rows["Pacific/Kiritimati"]["id"])
    assert late["status"] == "expired" and "late" in late["last_error"]  # over the default 30 minutes
    assert (await counts_agree(db, broadcast_id))["expired"] == 1
    failure = await refusal(db.execute("SELECT reminderd.schedule('acme', 'late', now() - interval '1 hour')"))
    assert failure.sqlstate == "22008"  # a message of its own this late is refused at insert


async def test_the_apis_functions_see_a_message_awaiting_approval_as_live(
    db: asyncpg.Connection, acme: str
) -> None:
    await contacts_in(db, ["Asia/Tokyo"], per_zone=2)
    await db.execute("UPDATE reminderd.tenants SET approval_threshold = 0 WHERE id = 'acme'")
    broadcast_id = await broadcast(db, "'bf', $1, everyone => true, actor => 'alice'", days_ahead(3))
    first, second = await db.fetch("SELECT id, ref_id FROM reminderd.scheduled_messages ORDER BY id")
    item = ("ROW($1, now() + interval '1 day', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
            " NULL, NULL, NULL, NULL, NULL, NULL)::reminderd.schedule_item_v1")
    await db.execute("SET ROLE reminderd_api")  # reminderd serve's role: the counts' triggers write as it
    try:
        cancelled = await db.fetchval("SELECT reminderd.cancel_message('acme', $1)", first["id"])
        result = await db.fetchval(f"SELECT result FROM reminderd.schedule_item('acme', {item})",
                                   second["ref_id"])
        sent_now = await db.fetchval("SELECT reminderd.send_now('acme', $1)", second["ref_id"])
    finally:
        await db.execute("RESET ROLE")
    assert (cancelled, result) == (1, "replaced")
    assert sent_now is not None  # the new message, not the one awaiting approval
    statuses = {r["id"]: r["status"]
                for r in await db.fetch("SELECT id, status FROM reminderd.scheduled_messages")}
    assert (statuses[first["id"]], statuses[second["id"]]) == ("cancelled", "cancelled")
    assert (await counts_agree(db, broadcast_id))["cancelled"] == 2


@pytest.mark.parametrize(
    ("cron", "rrule", "per_hour"),
    [
        ("0 9 * * 1", None, 1), ("*/5 * * * *", None, 12), ("0,30 * * * *", None, 2), ("15-20 * * * *", None,
                                                                                       6),
        ("0-59/20 * * * *", None, 3), ("0 0 9 * * *", None, 1), ("*/10 5 * * * *", None, 6), ("@hourly",
                                                                                              None, 1),
        (None, "FREQ=MINUTELY;INTERVAL=90", 1), (None, "FREQ=MINUTELY;INTERVAL=45", 2),
        (None, "FREQ=SECONDLY", 3600), (None, "FREQ=DAILY;BYHOUR=9,10;BYMINUTE=0", 1),
        (None, "DTSTART:20261130T090000\nRRULE:FREQ=HOURLY;BYMINUTE=0,15,30,45", 4),
    ],
)
async def test_how_often_a_recurrence_fires_in_an_hour(
    db: asyncpg.Connection, cron: str | None, rrule: str | None, per_hour: int
) -> None:
    assert await db.fetchval("SELECT reminderd.fires_per_hour($1, $2)", cron, rrule) == per_hour


async def test_a_wave_grown_past_what_its_approval_covered_awaits_approval_again(
    db: asyncpg.Connection, acme: str, store: Store
) -> None:
    """The approval of a recurring request covers the size it had: a wave over the tenant's
    approval_threshold, of a request that needed none or was approved for fewer, is staged
    awaiting_approval and the request awaits approval again; a wave over broadcast_limit stages
    nothing and says why."""
    await db.execute("UPDATE reminderd.tenants SET approval_threshold = 2, broadcast_limit = 5"
                     " WHERE id = 'acme'")
    ids = await contacts_in(db, ["Asia/Tokyo", "America/New_York", "Europe/London"], per_zone=2)
    await db.execute("SELECT reminderd.add_to_audience('acme', 'tiny', $1)", ids[:2])
    broadcast_id = await broadcast(db, "'hourly', cron => '0 * * * *', audience => 'tiny',"
                                       " stage_ahead => '1 day', actor => 'alice'")

    async def approval() -> tuple[str, int | None]:
        row = await db.fetchrow("SELECT approval, approved_contacts FROM reminderd.broadcast_requests"
                                " WHERE id = $1", broadcast_id)
        return row["approval"], row["approved_contacts"]

    async def waves() -> list[tuple[int, list[str]]]:
        rows = await db.fetch("SELECT count(*) AS n, array_agg(DISTINCT status) AS statuses FROM"
                              " reminderd.scheduled_messages WHERE broadcast_id = $1 GROUP BY local_time"
                              " ORDER BY local_time", broadcast_id)
        return [(row["n"], row["statuses"]) for row in rows]

    assert await approval() == ("not_needed", None)
    stager = BroadcastStager(store)
    assert await stager.run_once() == 1  # planned
    assert await stager.run_once() == 2  # the first wave: two contacts, pending
    await db.execute("SELECT reminderd.add_to_audience('acme', 'tiny', $1)", ids[2:3])
    assert await stager.run_once() == 3  # three contacts: over the threshold, no approval given
    assert await waves() == [(2, ["pending"]), (3, ["awaiting_approval"])]
    assert await approval() == ("awaiting", None)
    assert await db.fetchval("SELECT reminderd.approve_broadcast('acme', $1, 'bob')", broadcast_id) == 3
    assert await approval() == ("approved", 3)
    assert await stager.run_once() == 3  # as many as approved: pending
    await db.execute("SELECT reminderd.add_to_audience('acme', 'tiny', $1)", ids[3:4])
    assert await stager.run_once() == 4  # more than approved: awaits approval again
    assert await waves() == [(2, ["pending"]), (3, ["pending"]), (3, ["pending"]), (4, ["awaiting_approval"])]
    assert await approval() == ("awaiting", 3)
    await db.execute("SELECT reminderd.add_to_audience('acme', 'tiny', $1)", ids[4:])
    await stager.run_once()  # six contacts: over the limit, passed over
    assert len(await waves()) == 4
    error = await db.fetchval("SELECT last_error FROM reminderd.broadcast_requests WHERE id = $1", broadcast_id)
    assert error.endswith("not staged: 6 contacts, over the tenant's limit of 5")
    assert await db.fetchval("SELECT reminderd.approve_broadcast('acme', $1, 'bob')", broadcast_id) == 4
    assert await approval() == ("approved", 4)
    await counts_agree(db, broadcast_id)


async def test_a_one_off_decides_approval_from_the_rows_it_stages(db: asyncpg.Connection, acme: str) -> None:
    """The count broadcast() reads first and the rows stage_broadcast() writes are two statements:
    whatever lands between them (here a request whose approval was decided on a smaller count,
    as a concurrent add_to_audience leaves it) is judged by the rows staged."""
    await db.execute("UPDATE reminderd.tenants SET approval_threshold = 2, broadcast_limit = 4"
                     " WHERE id = 'acme'")
    ids = await contacts_in(db, ["Asia/Tokyo", "Europe/London"], per_zone=3)
    await db.execute("SELECT reminderd.add_to_audience('acme', 'list', $1)", ids[:3])
    request = await db.fetchval(
        "INSERT INTO reminderd.broadcast_requests (tenant_id, ref_prefix, audience, local_time, approval,"
        " created_by) VALUES ('acme', 'raced', 'list', $1, 'not_needed', 'alice') RETURNING id", days_ahead(3))
    assert await db.fetchval("SELECT reminderd.stage_broadcast($1, $2)", request, days_ahead(3)) == 3
    assert await db.fetchval("SELECT array_agg(DISTINCT status) FROM reminderd.scheduled_messages"
                             " WHERE broadcast_id = $1", request) == ["awaiting_approval"]
    assert await db.fetchval("SELECT approval FROM reminderd.broadcast_requests WHERE id = $1",
                             request) == "awaiting"
    await db.execute("SELECT reminderd.add_to_audience('acme', 'list2', $1)", ids)
    over = await db.fetchval(
        "INSERT INTO reminderd.broadcast_requests (tenant_id, ref_prefix, audience, local_time, approval,"
        " created_by) VALUES ('acme', 'raced2', 'list2', $1, 'not_needed', 'alice') RETURNING id",
        days_ahead(3))
    error = await refusal(db.fetchval("SELECT reminderd.stage_broadcast($1, $2)", over, days_ahead(3)))
    assert error.sqlstate == "54000" and "would send to 6 contacts" in str(error)


@pytest.mark.parametrize(("joining", "outcome"), [(4, "awaiting_approval"), (47, "refused")])
async def test_contacts_joining_while_a_broadcast_is_made_are_judged_with_it(
    db: asyncpg.Connection, acme: str, database_url: str, joining: int, outcome: str
) -> None:
    """broadcast() counts the audience, then stages it in another statement (READ COMMITTED): an
    add_to_audience committed in between is in the rows, so approval and the limit are decided on
    them. The interleaving is forced: the other transaction holds the tenant's row, which the
    request's foreign key check (after the count, before the staging) waits for."""
    await db.execute("UPDATE reminderd.tenants SET approval_threshold = 5, broadcast_limit = 10"
                     " WHERE id = 'acme'")
    ids = await contacts_in(db, ["Europe/London"], per_zone=3 + joining)
    await db.execute("SELECT reminderd.add_to_audience('acme', 'tiny', $1)", ids[:3])
    other = await asyncpg.connect(database_url)
    caller = await asyncpg.connect(database_url)
    try:
        joins = other.transaction()
        await joins.start()
        await other.execute("SELECT reminderd.add_to_audience('acme', 'tiny', $1)", ids[3:])
        await other.execute("SELECT 1 FROM reminderd.tenants WHERE id = 'acme' FOR UPDATE")
        pid = caller.get_server_pid()
        made = asyncio.ensure_future(caller.fetchval(
            "SELECT reminderd.broadcast('acme', 'raced', $1, audience => 'tiny', actor => 'alice')",
            days_ahead(3)))

        async def waiting() -> bool:
            return bool(await db.fetchval("SELECT wait_event_type = 'Lock' FROM pg_stat_activity"
                                          " WHERE pid = $1", pid))

        await poll_until(waiting)
        await joins.commit()
        if outcome == "refused":
            failure = await refusal(made)
            assert failure.sqlstate == "54000"
            assert str(failure).startswith(f'broadcast "raced" would send to {3 + joining} contacts')
            assert await db.fetchval("SELECT count(*) FROM reminderd.broadcast_requests") == 0
        else:
            broadcast_id = await made
            assert await db.fetchval("SELECT array_agg(DISTINCT status) || count(*)::text FROM"
                                     " reminderd.scheduled_messages WHERE broadcast_id = $1",
                                     broadcast_id) == ["awaiting_approval", "7"]
            assert await db.fetchval("SELECT approval FROM reminderd.broadcast_requests WHERE id = $1",
                                     broadcast_id) == "awaiting"
            await counts_agree(db, broadcast_id)
    finally:
        await other.close()
        await caller.close()


def test_0031_runs_forward_over_kept_answers_and_approved_broadcasts(empty_database_url: str) -> None:
    """A rotation's answer kept before loses its secret (kept: that it was done), every other kept
    answer stays byte for byte; an approved broadcast's creator is refused from then on."""
    from test_audience_cli import sql

    from reminderd.migrate import upgrade

    url = empty_database_url
    upgrade(url, "0028")
    sql(url, "INSERT INTO reminderd.tenants (id, callback_url, timezone) VALUES ('acme', 'https://example.com/cb',"
             " 'UTC')")
    rotated = b'{"secret":"whsec_c2VjcmV0c2VjcmV0","previous_secret_valid_until":null}'
    scheduled = b'{"id":1,"ref_id":"r","status":"pending"}'
    # A message's own payload may hold both strings the rotation's answer does: not a rotation.
    lookalike = b'{"id":2,"ref_id":"s","payload":{"secret":"whsec_not-ours"},"status":"pending"}'
    sql(url, "INSERT INTO reminderd.idempotency_keys (tenant_id, key, request_hash, status_code, content_type,"
             " response_body) VALUES ('acme', 'rot-1', '\\x01', 200, 'application/json', $1),"
             " ('acme', 'msg-1', '\\x02', 201, 'application/json', $2),"
             " ('acme', 'msg-2', '\\x03', 201, 'application/json', $3)", rotated, scheduled, lookalike)
    broadcast_id = sql(url, "INSERT INTO reminderd.broadcast_requests (tenant_id, ref_prefix, contact_ids,"
                            " local_time, approval, created_by, decided_by)"
                            " VALUES ('acme', 'b', '{}', '2027-06-01 09:00', 'approved', 'alice', 'bob')"
                            " RETURNING id")[0]["id"]
    before = sql(url, "SELECT reminderd.approve_broadcast('acme', $1, 'alice')", broadcast_id)
    assert before[0][0] == 0  # the bug: the creator's own approval answered
    assert upgrade(url, "0031")[-1] == "0031"
    kept = {row["key"]: (row["status_code"], row["content_type"], bytes(row["response_body"]))
            for row in sql(url, "SELECT * FROM reminderd.idempotency_keys")}
    assert kept == {"rot-1": (200, "reminderd/shown-once", b""), "msg-1": (201, "application/json", scheduled),
                    "msg-2": (201, "application/json", lookalike)}
    with pytest.raises(asyncpg.PostgresError) as refused:
        sql(url, "SELECT reminderd.approve_broadcast('acme', $1, 'alice')", broadcast_id)
    assert refused.value.sqlstate == "42501"
    assert sql(url, "SELECT reminderd.approve_broadcast('acme', $1, 'carol')", broadcast_id)[0][0] == 0


# Completion and hand edits (migration 0033) ----------------------------------------------------------------


async def test_a_wave_whose_completion_ref_is_taken_completes_without_stopping_the_others(
    db: asyncpg.Connection, acme: str, store: Store
) -> None:
    """acme's application has a live message of its own named bf#completed: acme's wave completes
    without its callback, saying why, and globex's completes with its own. (Neither order of
    writing them is accepted since 0035 and 0036: the message is one written before, or with the
    triggers off.)"""
    await add_tenant(db, "globex")
    await db.execute("UPDATE reminderd.tenants SET timezone = 'UTC' WHERE id = 'globex'")
    for tenant in ("acme", "globex"):
        await db.execute("""SELECT reminderd.upsert_contacts($1, '[{"contact_id": "u1"}]')""", tenant)
    mine = await broadcast(db, "'bf', $1, contact_ids => ARRAY['u1'], notify => true", days_ahead(3))
    await db.execute("SET session_replication_role = replica")
    taken = await db.fetchval("SELECT reminderd.schedule('acme', 'bf#completed', now() + interval '1 day')")
    await db.execute("RESET session_replication_role")
    theirs = await db.fetchval("SELECT reminderd.broadcast('globex', 'gx', $1, contact_ids => ARRAY['u1'],"
                               " notify => true)", days_ahead(3))
    await db.execute("SELECT reminderd.cancel_broadcast('acme', $1)", mine)
    await db.execute("SELECT reminderd.cancel_broadcast('globex', $1)", theirs)

    assert await BroadcastCompleter(store).run_once() == 2
    waves = {r["broadcast_id"]: r for r in await db.fetch(
        "SELECT broadcast_id, completed_at, completion_message_id FROM reminderd.broadcast_occurrences")}
    assert all(wave["completed_at"] is not None for wave in waves.values())
    assert waves[mine]["completion_message_id"] is None
    callback = await db.fetchrow("SELECT ref_id, status FROM reminderd.scheduled_messages WHERE id = $1",
                                 waves[theirs]["completion_message_id"])
    assert (callback["ref_id"], callback["status"]) == ("gx#completed", "pending")
    assert await db.fetchval("SELECT last_error FROM reminderd.broadcast_requests WHERE id = $1", mine) == (
        f"broadcast.completed callback of occurrence {days_ahead(3):%Y-%m-%dT%H:%M:%S} not queued:"
        ' duplicate key value violates unique constraint "scheduled_messages_live_ref"')
    query = "SELECT status FROM reminderd.scheduled_messages WHERE id = $1"
    assert await db.fetchval(query, taken) == "pending"
    assert await BroadcastCompleter(store).run_once() == 0


async def test_a_wave_whose_callback_meets_a_passing_error_waits_for_the_next_round(
    db: asyncpg.Connection, acme: str, database_url: str
) -> None:
    """A lock timeout (or a deadlock, a serialization failure) says nothing about the callback: the
    wave is not completed without it, the error is the round's, and the next round queues it."""
    await contacts_in(db, ["UTC"])
    broadcast_id = await broadcast(db, "'bf', $1, everyone => true, notify => true", days_ahead(3))
    await db.execute("SELECT reminderd.cancel_broadcast('acme', $1)", broadcast_id)
    other = await asyncpg.connect(database_url)
    try:
        holding = other.transaction()
        await holding.start()  # a live bf#completed not yet committed: the callback's insert waits on it
        # (written with triggers off: an ordinary row may no longer take the ref, migration 0035)
        await other.execute("SET session_replication_role = replica")
        await other.execute("SELECT reminderd.schedule('acme', 'bf#completed', now() + interval '1 day')")
        await db.execute("SET lock_timeout = '200ms'")
        with pytest.raises(asyncpg.PostgresError) as passing:
            await db.fetch("SELECT * FROM reminderd.complete_broadcasts()")
        assert passing.value.sqlstate == "55P03"
        await db.execute("RESET lock_timeout")
        await holding.rollback()
    finally:
        await other.close()
    assert await db.fetchval("SELECT last_error FROM reminderd.broadcast_requests WHERE id = $1",
                             broadcast_id) is None
    completed = await db.fetch("SELECT message_id FROM reminderd.complete_broadcasts()")
    assert len(completed) == 1 and completed[0]["message_id"] is not None
    assert await db.fetchval("SELECT ref_id FROM reminderd.scheduled_messages WHERE id = $1",
                             completed[0]["message_id"]) == "bf#completed"


async def test_an_ordinary_message_cannot_take_a_broadcasts_completion_ref(
    db: asyncpg.Connection, acme: str, store: Store
) -> None:
    """Once broadcast bf (notify) exists, acme's own rows cannot take bf#completed (or a recurring
    wave's bf#completed#…) by schedule(), INSERT or UPDATE, so its wave keeps its callback; other
    refs with #completed, other tenants and broadcasts without notify are not concerned."""
    await add_tenant(db, "globex")
    await db.execute("""SELECT reminderd.upsert_contacts('acme', '[{"contact_id": "u1"}]')""")
    mine = await broadcast(db, "'bf', $1, contact_ids => ARRAY['u1'], notify => true", days_ahead(3))
    await broadcast(db, "'quiet', $1, contact_ids => ARRAY['u1']", days_ahead(3))
    await db.execute("SELECT reminderd.schedule('acme', 'own', now() + interval '1 day')")
    for statement in (
        "SELECT reminderd.schedule('acme', 'bf#completed', now() + interval '1 day')",
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
        " VALUES ('acme', 'bf#completed#20371127T0900', now() + interval '1 day')",
        "UPDATE reminderd.scheduled_messages SET ref_id = 'bf#completed' WHERE ref_id = 'own'",
    ):
        with pytest.raises(asyncpg.CheckViolationError) as refused:
            await db.execute(statement)
        assert refused.value.constraint_name == "completion_ref_reserved"
        assert refused.value.message.startswith('ref "bf#completed')
        assert refused.value.message.endswith('is the broadcast.completed callback\'s of broadcast "bf"')
        assert refused.value.hint.endswith("give this message another ref.")
    for tenant, ref in (("globex", "bf#completed"), ("acme", "quiet#completed"), ("acme", "bf#completed-x"),
                        ("acme", "bf#completedness"), ("acme", "x#bf#completed")):
        await db.execute("SELECT reminderd.schedule($1, $2, now() + interval '1 day')", tenant, ref)

    await db.execute("SELECT reminderd.cancel_broadcast('acme', $1)", mine)
    assert await BroadcastCompleter(store).run_once() == 1  # bf's wave; quiet is still waiting
    completion = await db.fetchval("SELECT completion_message_id FROM reminderd.broadcast_occurrences"
                                   " WHERE broadcast_id = $1", mine)
    assert await db.fetchval("SELECT ref_id FROM reminderd.scheduled_messages WHERE id = $1",
                             completion) == "bf#completed"


async def test_a_paused_tenants_completion_callback_is_created_paused(
    db: asyncpg.Connection, acme: str, store: Store
) -> None:
    await contacts_in(db, ["UTC"])
    broadcast_id = await broadcast(db, "'bf', $1, everyone => true, notify => true", days_ahead(3))
    await db.execute("SELECT reminderd.pause_tenant('acme')")
    await db.execute("SELECT reminderd.cancel_broadcast('acme', $1)", broadcast_id)
    assert await BroadcastCompleter(store).run_once() == 1
    query = "SELECT status, paused_by FROM reminderd.scheduled_messages WHERE ref_id = 'bf#completed'"
    assert tuple(await db.fetchrow(query)) == ("paused", "tenant")
    await db.execute("SELECT reminderd.resume_tenant('acme')")
    assert tuple(await db.fetchrow(query)) == ("pending", None)


async def test_a_hand_update_of_a_broadcasts_row_is_checked_as_any_rows(
    db: asyncpg.Connection, acme: str
) -> None:
    await contacts_in(db, ["UTC"])
    broadcast_id = await broadcast(db, "'bf', $1, everyone => true", days_ahead(3))
    failure = await refusal(db.execute("UPDATE reminderd.scheduled_messages SET timezone = 'Mars/Olympus'"
                                       " WHERE broadcast_id = $1", broadcast_id))
    assert (failure.sqlstate, failure.message) == (
        "22023", 'unknown timezone "Mars/Olympus" for message acme / bf:utc_0')
    failure = await refusal(db.execute(
        "UPDATE reminderd.scheduled_messages SET category = 'Promo!' WHERE broadcast_id = $1", broadcast_id))
    assert failure.sqlstate == "23514"
    assert failure.message == 'category "Promo!" of message acme / bf:utc_0 is not a category name'
    await db.execute("UPDATE reminderd.scheduled_messages SET timezone = 'Europe/Paris', category = 'promo'"
                     " WHERE broadcast_id = $1", broadcast_id)


async def test_a_contacts_zone_the_daemon_cannot_read_does_not_stop_the_waves_plan(
    db: asyncpg.Connection, acme: str, store: Store
) -> None:
    """A zone written before the database checked contacts' zones (0033), or unknown to the
    daemon's tz database: the stager plans the broadcast over the zones it can read, saying which
    it passed over, instead of failing the whole step at every round."""
    await contacts_in(db, ["Europe/London", "Asia/Tokyo"])
    await db.execute("ALTER TABLE reminderd.contacts DISABLE TRIGGER contacts_check_zones_update")
    await db.execute("UPDATE reminderd.contacts SET resolved_timezone = 'Mars/Base'"
                     " WHERE contact_id = 'tokyo_0'")
    await db.execute("ALTER TABLE reminderd.contacts ENABLE TRIGGER contacts_check_zones_update")
    broadcast_id = await broadcast(db, "'wk', cron => '0 9 * * 1', everyone => true")
    with capture_logs() as logs:
        assert await BroadcastStager(store).run_once() == 1
    assert await db.fetchval("SELECT next_occurrence FROM reminderd.broadcast_requests WHERE id = $1",
                             broadcast_id) is not None
    assert [(e["event"], e["zones"]) for e in logs if e["log_level"] == "warning"] == [
        ("broadcast_zones_unreadable", ["Mars/Base"])]
    assert not [e for e in logs if e["event"] == "broadcast_step_failed"]


# Deciding with nothing left to decide; a completion ref already taken; one completion per wave (0036)


async def decision_refused(db: asyncpg.Connection, decision: str, broadcast_id: int) -> asyncpg.PostgresError:
    call = f"SELECT reminderd.{decision}_broadcast('acme', $1, 'bob')"
    failure = await refusal(db.execute(call, broadcast_id))
    assert failure.sqlstate == "55000", (decision, failure.message)
    assert failure.detail and failure.hint, (decision, failure.message)  # what it is, and what to do
    return failure


@pytest.mark.parametrize("state", ["not_needed", "sent", "cancelled", "emptied", "rejected"])
async def test_rejecting_with_nothing_left_to_reject_is_refused_as_approving_is(
    db: asyncpg.Connection, acme: str, state: str
) -> None:
    """Both decisions on a broadcast past deciding are 55000 with a DETAIL and a HINT. Rejecting one
    awaiting approval whose rows were all gone (its contacts deleted) answered 0 and marked it
    rejected, where approving it was refused; the same decision again stays no error (0)."""
    contacts = await contacts_in(db, ["Asia/Tokyo"], per_zone=3)
    threshold = 10 if state == "not_needed" else 2
    await db.execute("UPDATE reminderd.tenants SET approval_threshold = $1 WHERE id = 'acme'", threshold)
    broadcast_id = await broadcast(db, "'bf', $1, everyone => true, actor => 'alice'", days_ahead(3))
    if state == "sent":
        await db.execute("SELECT reminderd.approve_broadcast('acme', $1, 'carol')", broadcast_id)
        await db.execute("UPDATE reminderd.scheduled_messages SET status = 'sent' WHERE broadcast_id = $1",
                         broadcast_id)
    elif state == "cancelled":
        await db.execute("SELECT reminderd.cancel_broadcast('acme', $1)", broadcast_id)
    elif state == "emptied":
        await db.execute("SELECT reminderd.delete_contacts('acme', $1)", contacts)
    elif state == "rejected":
        await db.execute("SELECT reminderd.reject_broadcast('acme', $1, 'carol')", broadcast_id)
    before = await db.fetchrow("SELECT approval, decided_by, ended_reason FROM reminderd.broadcast_requests"
                               " WHERE id = $1", broadcast_id)
    same_again = {"sent": "approve", "rejected": "reject"}.get(state)  # no error: 0, nothing changes
    refused = {}
    for decision in ("approve", "reject"):
        if decision == same_again:
            again = f"SELECT reminderd.{decision}_broadcast('acme', $1, 'dave')"
            assert await db.fetchval(again, broadcast_id) == 0
        else:
            refused[decision] = await decision_refused(db, decision, broadcast_id)
    if len(refused) == 2:  # the same sentence, each naming its own decision
        assert refused["reject"].message == refused["approve"].message.replace("approve", "reject")
    after = await db.fetchrow("SELECT approval, decided_by, ended_reason FROM reminderd.broadcast_requests"
                              " WHERE id = $1", broadcast_id)
    assert after == before  # nothing decided
    if state == "emptied":
        assert refused["approve"].message == (
            f"broadcast {broadcast_id} has nothing left to approve: none of its messages awaits approval")


async def test_a_broadcast_awaiting_approval_whose_rows_are_all_gone_is_done_and_completes(
    db: asyncpg.Connection, acme: str, store: Store
) -> None:
    """Reported as a defect ("awaiting approval with no rows"), it is not one: the broadcast says
    done, the overview no longer counts it as awaiting, and its wave completes with its callback."""
    contacts = await contacts_in(db, ["Asia/Tokyo"], per_zone=3)
    await db.execute("UPDATE reminderd.tenants SET approval_threshold = 2 WHERE id = 'acme'")
    broadcast_id = await broadcast(db, "'bf', $1, everyone => true, notify => true, actor => 'alice'",
                                   days_ahead(3))
    await db.execute("SELECT reminderd.delete_contacts('acme', $1)", contacts)
    shown = await db.fetchrow("SELECT * FROM reminderd.broadcasts WHERE id = $1", broadcast_id)
    assert (shown["approval"], shown["done"], shown["held"], shown["cancelled"]) == ("awaiting", True, 0, 3)
    progress = (await store.broadcasts("acme", broadcast_id))[0]
    assert progress.done and not progress.awaiting_approval
    assert await BroadcastCompleter(store).run_once() == 1
    completion = await db.fetchval("SELECT completion_message_id FROM reminderd.broadcast_occurrences"
                                   " WHERE broadcast_id = $1", broadcast_id)
    payload = await db.fetchval("SELECT payload FROM reminderd.scheduled_messages WHERE id = $1", completion)
    assert json.loads(payload)["counts"] == {"staged": 3, "sent": 0, "failed": 0, "expired": 0, "cancelled": 3}


@pytest.mark.parametrize("ref", ["bf#completed", "bf#completed#20371127T0900"])
async def test_a_notify_broadcast_cannot_take_a_completion_ref_an_ordinary_message_holds(
    db: asyncpg.Connection, acme: str, ref: str
) -> None:
    """The reverse of completion_ref_reserved: acme's live message bf#completed (or a recurring
    wave's) was there first, and a broadcast bf with notify was accepted, its wave to complete
    without its callback. Refused (23505 completion_ref_free), by broadcast(), INSERT or UPDATE;
    without notify, for a message no longer live, or another tenant's, it is accepted."""
    await add_tenant(db, "globex")
    for tenant in ("acme", "globex"):
        await db.execute("SELECT reminderd.upsert_contacts($1, $2)", tenant,
                         '[{"contact_id": "u1", "timezone": "UTC"}]')
    held = await db.fetchval("SELECT reminderd.schedule('acme', $1, now() + interval '1 day')", ref)
    when = days_ahead(3)
    for statement, args in (
        ("SELECT reminderd.broadcast('acme', 'bf', $1, contact_ids => ARRAY['u1'], notify => true)", (when,)),
        ("SELECT reminderd.broadcast('acme', 'bf', cron => '0 9 * * *', contact_ids => ARRAY['u1'],"
         " notify => true)", ()),
        ("INSERT INTO reminderd.broadcast_requests (tenant_id, ref_prefix, local_time, everyone, notify,"
         " created_by) VALUES ('acme', 'bf', $1, true, true, 'dba')", (when,)),
    ):
        with pytest.raises(asyncpg.UniqueViolationError) as refused:
            await db.execute(statement, *args)
        assert refused.value.constraint_name == "completion_ref_free"
        assert refused.value.message == (
            f'broadcast "bf" of tenant "acme" would notify with ref "{ref}", which live message {held}'
            f' (acme / {ref}) has')
        assert refused.value.hint.startswith("Give the broadcast another ref_prefix")
    assert await db.fetchval("SELECT count(*) FROM reminderd.broadcast_requests") == 0
    quiet = await broadcast(db, "'bf', $1, contact_ids => ARRAY['u1']", when)
    with pytest.raises(asyncpg.UniqueViolationError) as refused:
        await db.execute("UPDATE reminderd.broadcast_requests SET notify = true WHERE id = $1", quiet)
    assert refused.value.constraint_name == "completion_ref_free"
    await db.execute("SELECT reminderd.cancel_broadcast('acme', $1)", quiet)
    await db.fetchval("SELECT reminderd.broadcast('globex', 'bf', $1, contact_ids => ARRAY['u1'],"
                      " notify => true)", when)
    await db.execute("SELECT reminderd.cancel('acme', $1)", ref)
    assert await broadcast(db, "'bf', $1, contact_ids => ARRAY['u1'], notify => true", when)


@pytest.mark.parametrize("first", ["message", "broadcast"])
async def test_a_completion_ref_goes_to_one_of_two_racing_writers(
    db: asyncpg.Connection, acme: str, database_url: str, first: str
) -> None:
    """A message bf#completed and a notify broadcast bf written at once, from two connections: each
    check read before the other committed, and both were accepted. The second waits for the first
    (the lock broadcast() takes on its tenant and prefix) and is refused."""
    await db.execute("""SELECT reminderd.upsert_contacts('acme', '[{"contact_id": "u1"}]')""")
    message = "SELECT reminderd.schedule('acme', 'bf#completed', now() + interval '1 day')"
    made = "SELECT reminderd.broadcast('acme', 'bf', $1, contact_ids => ARRAY['u1'], notify => true)"
    statements = {"message": (message,), "broadcast": (made, days_ahead(3))}
    second = "broadcast" if first == "message" else "message"
    holder = await asyncpg.connect(database_url)
    racer = await asyncpg.connect(database_url)
    try:
        holding = holder.transaction()
        await holding.start()
        await holder.execute(*statements[first])
        pid = racer.get_server_pid()
        racing = asyncio.ensure_future(racer.execute(*statements[second]))

        async def waiting() -> bool:
            return bool(await db.fetchval("SELECT wait_event_type = 'Lock' FROM pg_stat_activity"
                                          " WHERE pid = $1", pid))

        await poll_until(waiting)
        await holding.commit()
        failure = await refusal(racing)
    finally:
        await holder.close()
        await racer.close()
    expected = (("23505", "completion_ref_free") if second == "broadcast"
                else ("23514", "completion_ref_reserved"))
    assert (failure.sqlstate, failure.constraint_name) == expected
    assert await db.fetchval("SELECT count(*) FROM reminderd.broadcast_requests") == (first == "broadcast")
    ordinary = "SELECT count(*) FROM reminderd.scheduled_messages WHERE broadcast_id IS NULL"
    assert await db.fetchval(ordinary) == (first == "message")


async def completion_rows(db: asyncpg.Connection, broadcast_id: int) -> int:
    rows: int = await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages"
                                  " WHERE broadcast_id = $1 AND contact_id IS NULL", broadcast_id)
    return rows


async def test_a_wave_gets_one_completion_row_however_often_completion_runs(
    db: asyncpg.Connection, acme: str, database_url: str
) -> None:
    """Run twice, from two connections at once (the second while the first has not committed, then
    again once it has), and after a DBA reopened the wave by hand (completed_at = NULL, to have a
    callback that was not queued queued): exactly one completion row, the wave linked to it."""
    await contacts_in(db, ["UTC"])
    broadcast_id = await broadcast(db, "'bf', $1, everyone => true, notify => true", days_ahead(3))
    await db.execute("SELECT reminderd.cancel_broadcast('acme', $1)", broadcast_id)
    one, two = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        first, second = one.transaction(), two.transaction()
        await first.start()
        await second.start()
        assert len(await one.fetch("SELECT * FROM reminderd.complete_broadcasts()")) == 1
        assert await two.fetch("SELECT * FROM reminderd.complete_broadcasts()") == []  # one caller at a time
        await first.commit()
        assert await two.fetch("SELECT * FROM reminderd.complete_broadcasts()") == []
        await second.commit()
    finally:
        await one.close()
        await two.close()
    assert await db.fetch("SELECT * FROM reminderd.complete_broadcasts()") == []
    assert await completion_rows(db, broadcast_id) == 1
    linked = await db.fetchval("SELECT completion_message_id FROM reminderd.broadcast_occurrences"
                               " WHERE broadcast_id = $1", broadcast_id)
    await db.execute("UPDATE reminderd.scheduled_messages SET status = 'sent' WHERE id = $1", linked)
    await db.execute("UPDATE reminderd.broadcast_occurrences SET completed_at = NULL,"
                     " completion_message_id = NULL WHERE broadcast_id = $1", broadcast_id)
    again = await db.fetch("SELECT * FROM reminderd.complete_broadcasts()")
    assert [r["message_id"] for r in again] == [linked]  # the one it has, not a second
    assert await completion_rows(db, broadcast_id) == 1


async def test_a_database_at_0035_with_a_notify_broadcast_beside_its_ref_upgrades_and_completes_it(
    empty_database_url: str
) -> None:
    """0036 runs forward over rows 0035 accepted: the message that took bf#completed first and the
    notify broadcast written after it stay, and the wave completes without its callback, saying why."""
    await asyncio.to_thread(upgrade, empty_database_url, "0035")
    db = await asyncpg.connect(empty_database_url)
    try:
        await add_tenant(db, "acme")
        await contacts_in(db, ["Asia/Tokyo"])
        taken = await db.fetchval("SELECT reminderd.schedule('acme', 'bf#completed', now() + interval '1 day')")
        broadcast_id = await broadcast(db, "'bf', $1, everyone => true, notify => true", days_ahead(3))
        await asyncio.to_thread(upgrade, empty_database_url, "head")
        await db.execute("SELECT reminderd.cancel_broadcast('acme', $1)", broadcast_id)
        completed = await db.fetch("SELECT * FROM reminderd.complete_broadcasts()")
        assert [(r["broadcast_id"], r["message_id"]) for r in completed] == [(broadcast_id, None)]
        status = "SELECT status FROM reminderd.scheduled_messages WHERE id = $1"
        assert await db.fetchval(status, taken) == "pending"
        last_error = await db.fetchval("SELECT last_error FROM reminderd.broadcast_requests WHERE id = $1",
                                       broadcast_id)
        assert last_error.endswith('violates unique constraint "scheduled_messages_live_ref"')
    finally:
        await db.close()


# A recurring broadcast's until ends each contact by their own instant (migration 0038) ----------------

UNTIL_ZONES = ["Pacific/Kiritimati", "Europe/London", "Pacific/Pago_Pago"]  # UTC+14, UTC+0/+1, UTC-11


@pytest.mark.parametrize("ending", ["until", "rrule UNTIL=…Z"])
async def test_an_until_ends_each_contacts_waves_by_that_contacts_own_instant(
    db: asyncpg.Connection, acme: str, store: Store, ending: str
) -> None:
    """09:00 every day on each contact's clock, until 12:00Z on day D: Kiritimati's 09:00 on D
    (19:00Z the day before) and London's (08:00 or 09:00Z) are before it, Pago Pago's (20:00Z) is
    after it, so Pago Pago's last is D-1. Compared with the first zone's instant for everyone, Pago
    Pago was sent D too, 8 hours after the until. The stager (the daemon's plan) and stage_broadcast
    agree on who each wave reaches."""
    await contacts_in(db, UNTIL_ZONES)
    day = (datetime.now(UTC) + timedelta(days=3)).date()
    until = datetime(day.year, day.month, day.day, 12, 0, tzinfo=UTC)
    if ending == "until":
        broadcast_id = await broadcast(db, "'daily', cron => '0 9 * * *', until => $1, everyone => true,"
                                           " stage_ahead => '5 days'", until)
    else:
        broadcast_id = await broadcast(db, "'daily', rrule => $1, everyone => true, stage_ahead => '5 days'",
                                       f"FREQ=DAILY;BYHOUR=9;BYMINUTE=0;UNTIL={day:%Y%m%d}T120000Z")
    stager = BroadcastStager(store)
    for _ in range(15):
        if not await stager.run_once():
            break
    assert await db.fetchval("SELECT ended_reason FROM reminderd.broadcasts WHERE id = $1",
                             broadcast_id) == "no more occurrences"
    rows = await db.fetch("SELECT timezone, local_time, fire_at FROM reminderd.scheduled_messages"
                          " WHERE broadcast_id = $1", broadcast_id)
    assert all(r["fire_at"] <= until for r in rows), [r for r in rows if r["fire_at"] > until]
    last = {zone: max(r["local_time"] for r in rows if r["timezone"] == zone) for zone in UNTIL_ZONES}
    d_9 = datetime(day.year, day.month, day.day, 9)
    assert last == {"Pacific/Kiritimati": d_9, "Europe/London": d_9,
                    "Pacific/Pago_Pago": d_9 - timedelta(days=1)}
    waves = Waves.parse(cron="0 9 * * *", rrule=None, until=until)
    for wave in await db.fetch("SELECT * FROM reminderd.broadcast_occurrences WHERE broadcast_id = $1",
                               broadcast_id):
        reached = waves.reached(wave["occurrence"], UNTIL_ZONES)
        staged = {r["timezone"] for r in rows if r["local_time"] == wave["occurrence"]}
        assert staged == set(reached), wave["occurrence"]
        assert (wave["first_fire_at"], wave["last_fire_at"]) == span(wave["occurrence"], reached)


async def test_an_until_without_z_ends_every_contact_on_the_same_wall_time(
    db: asyncpg.Connection, acme: str, store: Store
) -> None:
    # A floating UNTIL is compared with the occurrence on each contact's clock (RFC 5545): D's 09:00
    # is everyone's last, whatever its instant.
    await contacts_in(db, UNTIL_ZONES)
    day = (datetime.now(UTC) + timedelta(days=3)).date()
    broadcast_id = await broadcast(db, "'daily', rrule => $1, everyone => true, stage_ahead => '5 days'",
                                   f"FREQ=DAILY;BYHOUR=9;BYMINUTE=0;UNTIL={day:%Y%m%d}T235959")
    stager = BroadcastStager(store)
    for _ in range(15):
        if not await stager.run_once():
            break
    rows = await db.fetch("SELECT timezone, local_time FROM reminderd.scheduled_messages"
                          " WHERE broadcast_id = $1", broadcast_id)
    d_9 = datetime(day.year, day.month, day.day, 9)
    assert {zone: max(r["local_time"] for r in rows if r["timezone"] == zone) for zone in UNTIL_ZONES} == {
        zone: d_9 for zone in UNTIL_ZONES}


# A contact whose zone this server's tz database cannot read (migration 0038) -------------------------


async def contact_in_a_zone_this_server_lacks(db: asyncpg.Connection, contact_id: str,
                                              zone: str = "America/Nuevo_Lugar") -> None:
    """How such a row comes to be: the contacts' triggers check every zone written (0033), but
    logical replication applies rows with session_replication_role = replica, firing no trigger,
    and a subscriber's PostgreSQL (built --with-system-tzdata on an older OS) may lack a zone its
    primary's tzdata has (America/Ciudad_Juarez came in 2022g); a dump restored into such a server,
    or a row written before 0033, is the same. Written here as replication writes it, as the owner."""
    await db.execute("SET session_replication_role = replica")
    try:
        await db.execute(
            "INSERT INTO reminderd.contacts"
            " (tenant_id, contact_id, timezone, resolved_timezone, timezone_source)"
            " VALUES ('acme', $1, $2, $2, 'contact')", contact_id, zone)
    finally:
        await db.execute("SET session_replication_role = DEFAULT")


async def test_a_contact_in_a_zone_this_server_cannot_read_is_staged_dead_and_the_others_sent(
    db: asyncpg.Connection, acme: str
) -> None:
    await contacts_in(db, ["Europe/London", "Asia/Tokyo"])
    await contact_in_a_zone_this_server_lacks(db, "lost_0")
    wall = days_ahead(3)
    broadcast_id = await broadcast(db, "'bf', $1, everyone => true", wall)
    rows = {r["contact_id"]: r for r in await db.fetch(
        "SELECT * FROM reminderd.scheduled_messages WHERE broadcast_id = $1", broadcast_id)}
    assert {c: r["status"] for c, r in rows.items()} == {"london_0": "pending", "tokyo_0": "pending",
                                                         "lost_0": "dead"}
    assert rows["lost_0"]["last_error"] == (
        'timezone "America/Nuevo_Lugar" of contact lost_0 is unknown to this database server\'s tz database: '
        f"{wall:%Y-%m-%d %H:%M} has no instant there; correct the contact's timezone, or update the server's "
        "tzdata")
    assert rows["tokyo_0"]["fire_at"] == to_instant(wall, load_timezone("Asia/Tokyo"))
    event = await db.fetchrow("SELECT event, status, reason FROM reminderd.events WHERE message_id = $1",
                              rows["lost_0"]["id"])
    assert (event["status"], event["reason"]) == ("dead", rows["lost_0"]["last_error"])
    wave = await db.fetchrow("SELECT * FROM reminderd.broadcast_occurrences WHERE broadcast_id = $1",
                             broadcast_id)
    assert (wave["contacts"], wave["first_fire_at"], wave["last_fire_at"]) == (
        3, rows["tokyo_0"]["fire_at"], rows["london_0"]["fire_at"])
    shown = await db.fetchrow("SELECT staged, failed FROM reminderd.broadcasts WHERE id = $1", broadcast_id)
    assert (shown["staged"], shown["failed"]) == (3, 1)
    preview = {r["timezone"]: r for r in await db.fetch(
        "SELECT * FROM reminderd.broadcast_preview('acme', $1, everyone => true)", wall)}
    assert preview["America/Nuevo_Lugar"]["fire_at"] is None and preview["America/Nuevo_Lugar"]["contacts"] == 1
    assert preview["Asia/Tokyo"]["fire_at"] == rows["tokyo_0"]["fire_at"]


async def test_a_recurring_wave_stages_a_contact_in_an_unreadable_zone_dead_and_goes_on(
    db: asyncpg.Connection, acme: str, store: Store
) -> None:
    await contacts_in(db, ["Europe/London"])
    await contact_in_a_zone_this_server_lacks(db, "lost_0")
    broadcast_id = await broadcast(db, "'daily', cron => '0 9 * * *', everyone => true,"
                                       " stage_ahead => '2 days'")
    with capture_logs() as logs:
        stager = BroadcastStager(store)
        assert await stager.run_once() == 1  # planned
        assert await stager.run_once() == 2  # staged: London pending, lost_0 dead
    assert not [e for e in logs if e["event"] == "broadcast_step_failed"]
    unreadable = [e["zones"] for e in logs if e["event"] == "broadcast_zones_unreadable"]
    assert unreadable == [["America/Nuevo_Lugar"]]
    rows = {r["contact_id"]: r for r in await db.fetch(
        "SELECT * FROM reminderd.scheduled_messages WHERE broadcast_id = $1", broadcast_id)}
    assert {c: r["status"] for c, r in rows.items()} == {"london_0": "pending", "lost_0": "dead"}
    assert rows["lost_0"]["last_error"].startswith(
        'timezone "America/Nuevo_Lugar" of contact lost_0 is unknown')
    assert await db.fetchval("SELECT next_occurrence FROM reminderd.broadcast_requests WHERE id = $1",
                             broadcast_id) > rows["london_0"]["local_time"]


def test_0038_runs_forward_over_a_staged_wave(empty_database_url: str) -> None:
    """A wave staged under 0035 keeps its rows; the broadcast's next wave is staged by 0038's rules
    (its until ends each contact by their own instant)."""
    from test_audience_cli import sql

    from reminderd.migrate import upgrade

    url = empty_database_url
    upgrade(url, "0035")
    sql(url, "INSERT INTO reminderd.tenants (id, callback_url, timezone) VALUES ('acme', 'https://example.com/cb',"
             " 'UTC')")
    sql(url, "SELECT reminderd.upsert_contacts('acme', $1::jsonb)", json.dumps(
        [{"contact_id": "kiritimati_0", "timezone": "Pacific/Kiritimati"},
         {"contact_id": "pago_pago_0", "timezone": "Pacific/Pago_Pago"}]))
    day = (datetime.now(UTC) + timedelta(days=3)).date()
    until = datetime(day.year, day.month, day.day, 12, 0, tzinfo=UTC)
    broadcast_id = sql(url, "SELECT reminderd.broadcast('acme', 'daily', cron => '0 9 * * *', until => $1,"
                            " everyone => true)", until)[0][0]
    d_9 = datetime(day.year, day.month, day.day, 9)
    eve = d_9 - timedelta(days=1)
    sql(url, "UPDATE reminderd.broadcast_requests SET next_occurrence = $1 WHERE id = $2", eve, broadcast_id)
    assert sql(url, "SELECT reminderd.stage_broadcast($1, $2, $3)", broadcast_id, eve, d_9)[0][0] == 2
    before = sql(url, "SELECT * FROM reminderd.scheduled_messages ORDER BY id")
    assert upgrade(url, "0038") == ["0036", "0037", "0038"]
    assert sql(url, "SELECT * FROM reminderd.scheduled_messages ORDER BY id") == before
    assert sql(url, "SELECT reminderd.stage_broadcast($1, $2, NULL)", broadcast_id, d_9)[0][0] == 1
    assert [r["contact_id"] for r in sql(url, "SELECT contact_id FROM reminderd.scheduled_messages"
                                              " WHERE local_time = $1", d_9)] == ["kiritimati_0"]


async def test_an_until_moved_before_the_planned_occurrence_ends_the_broadcast_unsent(
    db: asyncpg.Connection, acme: str, store: Store
) -> None:
    # A DBA moves the until of a planned broadcast before its next occurrence's first instant: no
    # contact is sent it, and the broadcast ends (it was staged for everyone).
    await contacts_in(db, ["Europe/London", "Pacific/Pago_Pago"])
    broadcast_id = await broadcast(db, "'daily', cron => '0 9 * * *', everyone => true,"
                                       " stage_ahead => '2 days'")
    stager = BroadcastStager(store)
    assert await stager.run_once() == 1  # planned
    occurrence = await db.fetchval("SELECT next_occurrence FROM reminderd.broadcast_requests WHERE id = $1",
                                   broadcast_id)
    first = to_instant(occurrence, load_timezone("Europe/London"))
    await db.execute("UPDATE reminderd.broadcast_requests SET until = $1 WHERE id = $2",
                     first - timedelta(minutes=1), broadcast_id)
    assert await stager.run_once() == 1
    assert await db.fetchval("SELECT ended_reason FROM reminderd.broadcasts WHERE id = $1",
                             broadcast_id) == "no more occurrences"
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages") == 0


async def test_two_batches_of_completion_refs_in_opposite_orders_do_not_deadlock(
    db: asyncpg.Connection, acme: str, database_url: str
) -> None:
    """Two batches with the completion refs of prefixes p and q, in opposite orders, written at
    once: each row's trigger took its prefix's broadcast lock in the batch's order, so one batch held
    p's and waited for q's while the other held q's and waited for p's (40P01; schedule_many hid it
    by writing the items one by one). schedule_set takes them all, in one order, before writing:
    the second waits for the first, and both are written."""
    keys = [await db.fetchval("SELECT hashtextextended('acme' || chr(31) || '#broadcast' || chr(31) || $1, 0)",
                              prefix) for prefix in ("p", "q")]
    # schedule_set itself: schedule_many would undo a deadlock and write the items one by one.
    batch = ("SELECT count(*) FILTER (WHERE s.result = 'created') FROM reminderd.schedule_set('acme', ("
             "SELECT array_agg(jsonb_populate_record(NULL::reminderd.schedule_item_v2,"
             " jsonb_build_object('ref_id', r, 'fire_in', '1 day')) ORDER BY n)"
             " FROM unnest(ARRAY[$1, $2]) WITH ORDINALITY AS u(r, n))) AS s")
    holder = await asyncpg.connect(database_url)
    first = await asyncpg.connect(database_url)
    second = await asyncpg.connect(database_url)
    try:
        holding = holder.transaction()
        await holding.start()  # holds both prefixes' locks, as two broadcasts being written would
        await holder.execute("SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k", keys)

        async def waiting(pid: int) -> bool:
            return bool(await db.fetchval("SELECT wait_event_type = 'Lock' FROM pg_stat_activity"
                                          " WHERE pid = $1", pid))

        one = asyncio.ensure_future(first.fetchval(batch, "p#completed#20370101T0900",
                                                   "q#completed#20370101T0900"))
        await poll_until(lambda: waiting(first.get_server_pid()))
        other = asyncio.ensure_future(second.fetchval(batch, "q#completed#20370102T0900",
                                                      "p#completed#20370102T0900"))
        await poll_until(lambda: waiting(second.get_server_pid()))
        await holding.commit()
        results = await asyncio.gather(one, other, return_exceptions=True)
    finally:
        await holder.close()
        await first.close()
        await second.close()
    assert list(results) == [2, 2]
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages"
                             " WHERE ref_id LIKE '_#completed#%' AND status = 'pending'") == 4


async def test_a_completion_ref_written_after_a_row_a_broadcast_waits_for_is_refused_not_deadlocked(
    db: asyncpg.Connection, acme: str, database_url: str
) -> None:
    """A transaction wrote p:c1, not yet committed, and broadcast('p') (holding its prefix's lock)
    waits to stage p:c1 after it. The transaction then writes p#completed: its trigger waited for
    the broadcast's lock, a deadlock (40P01), where before 0036 the broadcast was refused 23505.
    It is refused at once (55P03, to try again), and the broadcast goes ahead."""
    await db.execute("""SELECT reminderd.upsert_contacts('acme', '[{"contact_id": "c1"}]')""")
    writer = await asyncpg.connect(database_url)
    broadcaster = await asyncpg.connect(database_url)
    try:
        writing = writer.transaction()
        await writing.start()
        await writer.execute("SELECT reminderd.schedule('acme', 'p:c1', now() + interval '1 day')")
        made = asyncio.ensure_future(broadcaster.fetchval(
            "SELECT reminderd.broadcast('acme', 'p', $1, contact_ids => ARRAY['c1'])", days_ahead(3)))
        pid = broadcaster.get_server_pid()

        async def waiting() -> bool:
            return bool(await db.fetchval("SELECT wait_event_type = 'Lock' FROM pg_stat_activity"
                                          " WHERE pid = $1", pid))

        await poll_until(waiting)
        refused = await refusal(writer.execute(
            "SELECT reminderd.schedule('acme', 'p#completed', now() + interval '1 day')"))
        await writing.rollback()
        broadcast_id = await made
    finally:
        await writer.close()
        await broadcaster.close()
    assert refused.sqlstate == "55P03"
    assert refused.message == ('ref "p#completed" of message acme / p#completed cannot be checked now:'
                               ' broadcast "p" of tenant "acme" is being written')
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages WHERE broadcast_id = $1",
                             broadcast_id) == 1


async def stage_daily_waves(db: asyncpg.Connection, waves: int) -> tuple[int, list[datetime]]:
    """A daily broadcast to everyone, its next `waves` occurrences staged one after the other."""
    broadcast_id = await broadcast(db, "'daily', cron => '0 9 * * *', everyone => true")
    days = [days_ahead(2 + n).replace(tzinfo=None) for n in range(waves + 1)]
    await db.execute("UPDATE reminderd.broadcast_requests SET next_occurrence = $1 WHERE id = $2",
                     days[0], broadcast_id)
    for day, following in itertools.pairwise(days):
        await db.execute("SELECT reminderd.stage_broadcast($1, $2, $3)", broadcast_id, day, following)
    return broadcast_id, days[:waves]


async def test_a_contact_in_an_unreadable_zone_is_staged_dead_once_not_at_every_wave(
    db: asyncpg.Connection, acme: str
) -> None:
    """A daily broadcast with one contact in a zone this server cannot read made one new dead letter
    a day (the dead-letter alert kept firing). It is staged dead at the first wave only; the later
    waves pass over it, and the broadcast's last_error says so."""
    await contacts_in(db, ["Europe/London"])
    await contact_in_a_zone_this_server_lacks(db, "lost_0")
    broadcast_id, days = await stage_daily_waves(db, 3)
    rows = await db.fetch("SELECT contact_id, status, local_time FROM reminderd.scheduled_messages"
                          " WHERE broadcast_id = $1 ORDER BY local_time, contact_id", broadcast_id)
    assert [(r["contact_id"], r["status"]) for r in rows] == [
        ("london_0", "pending"), ("lost_0", "dead"), ("london_0", "pending"), ("london_0", "pending")]
    assert [w["contacts"] for w in await db.fetch(
        "SELECT contacts FROM reminderd.broadcast_occurrences WHERE broadcast_id = $1 ORDER BY occurrence",
        broadcast_id)] == [2, 1, 1]
    assert await db.fetchval("SELECT last_error FROM reminderd.broadcast_requests WHERE id = $1",
                             broadcast_id) == (
        f"occurrence {days[2]:%Y-%m-%d %H:%M} staged without 1 contacts in a zone this database server cannot"
        " read: each was staged dead once, at an earlier occurrence (correct their timezone, or update the"
        " server's tzdata)")


async def test_contacts_in_an_unreadable_zone_count_toward_neither_approval_nor_the_limit(
    db: asyncpg.Connection, acme: str
) -> None:
    """Approval and broadcast_limit count the rows a wave sends: a dead row is sent nothing. Two
    contacts, one in a zone this server cannot read, with a threshold and a limit of 1: it went to
    approval (a recurring wave: awaiting), or was refused over the limit (54000)."""
    await contacts_in(db, ["Europe/London"])
    await contact_in_a_zone_this_server_lacks(db, "lost_0")
    await db.execute("UPDATE reminderd.tenants SET approval_threshold = 1, broadcast_limit = 1"
                     " WHERE id = 'acme'")
    one_off = await broadcast(db, "'bf', $1, everyone => true", days_ahead(3))
    broadcast_id, _ = await stage_daily_waves(db, 2)
    for made in (one_off, broadcast_id):
        assert await db.fetchval("SELECT approval FROM reminderd.broadcast_requests WHERE id = $1",
                                 made) == "not_needed"
        statuses = await db.fetch("SELECT contact_id, status FROM reminderd.scheduled_messages"
                                  " WHERE broadcast_id = $1 ORDER BY id", made)
        assert [(r["contact_id"], r["status"]) for r in statuses][:2] == [
            ("london_0", "pending"), ("lost_0", "dead")]
    assert await db.fetchval("SELECT count(*) FROM reminderd.broadcast_occurrences WHERE broadcast_id = $1",
                             broadcast_id) == 2


async def test_a_row_staged_dead_in_an_unreadable_zone_is_not_requeued_to_be_sent_at_once(
    db: asyncpg.Connection, acme: str
) -> None:
    """Requeued, a row staged dead (its zone unreadable) was due at once: fire_at was when it was
    staged, not the contact's local time. While its zone is unreadable requeue refuses it, saying
    why (22023), and requeue_dead passes over it saying how many; once readable, it goes to its
    wall time's instant in its zone."""
    await contacts_in(db, ["Europe/London"])
    await contact_in_a_zone_this_server_lacks(db, "lost_0")
    wall = days_ahead(3)
    broadcast_id = await broadcast(db, "'bf', $1, everyone => true", wall)
    dead = await db.fetchval("SELECT id FROM reminderd.scheduled_messages WHERE broadcast_id = $1"
                             " AND status = 'dead'", broadcast_id)
    refused = await refusal(db.execute("SELECT reminderd.requeue($1)", dead))
    assert refused.sqlstate == "22023"
    assert refused.message == (
        f'message acme / bf:lost_0 (id {dead}) is in timezone "America/Nuevo_Lugar", which this database'
        " server's tz database cannot read: requeued, it would be sent at no instant of its local time")
    assert refused.hint == ("Correct the timezone of contact lost_0 (its next messages use it), or update the"
                            " server's tzdata and requeue it then.")
    notices: list[str] = []
    db.add_log_listener(lambda _connection, message: notices.append(message.message))
    assert await db.fetchval("SELECT reminderd.requeue_dead('acme', '-infinity')") == 0
    assert notices == ["1 dead message(s) of tenant acme skipped: in a zone this database server cannot read"]
    skipped = await db.fetchrow(QUERIES["requeue_dead_ids"], "acme", [dead])  # the dashboard's
    assert dict(skipped) == {"requeued": 0, "onward": 0, "blocked": 0, "delivered": 0, "unreadable": 1}
    # The server's tzdata updated (here: the row's zone made one it reads): placed, not sent now.
    await db.execute("UPDATE reminderd.scheduled_messages SET timezone = 'Asia/Tokyo' WHERE id = $1", dead)
    assert await db.fetchval("SELECT reminderd.requeue($1)", dead) == 1
    row = await db.fetchrow("SELECT status, fire_at, scheduled_for FROM reminderd.scheduled_messages"
                            " WHERE id = $1", dead)
    assert (row["status"], row["fire_at"], row["scheduled_for"]) == (
        "pending", to_instant(wall, load_timezone("Asia/Tokyo")), None)
