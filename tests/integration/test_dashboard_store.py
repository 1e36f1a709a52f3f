"""What the dashboard reads, against a real database: the aggregates the triggers of migration 0011
keep (fire_counts, lateness_counts) equal what the trail (reminderd.trail: events, and the
attempts in deliveries, each with the change it made) and the attempts say; counting never
deadlocks two writers; the live feed's NOTIFY names each fire as it is recorded, in whichever
table; an action done for an API key says so in the audit trail; and the store's dashboard
queries scope every read to the tenants in view."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from support import (
    API_ROLE,
    api_role_url,
    drain,
    fast_settings,
    inserted_before_the_outage,
    poll_until,
    row_by_ref,
)

from reminderd.dashboard_rows import FEED_START, FIRES, FeedCursor, FeedEntry, FireTotals
from reminderd.exceptions import DatabaseRefused
from reminderd.housekeeping import CountsPruner, Housekeeping
from reminderd.metrics import Metrics
from reminderd.migrate import upgrade
from reminderd.panels import LATENESS_BOUNDS_MS
from reminderd.queries import QUERIES
from reminderd.store import Store
from reminderd.testing import Receiver, add_tenant

WINDOW_1H = "at >= date_trunc('minute', now(), 'UTC') - interval '59 minutes'"
WINDOW_24H = "at >= date_trunc('hour', now(), 'UTC') - interval '23 hours'"


async def audit_counts(db: asyncpg.Connection, tenant: str, window: str) -> FireTotals:
    """The fires of a tenant in a window, counted from the trail itself (events and attempts)."""
    row = await db.fetchrow(
        "SELECT count(*) FILTER (WHERE event = 'fired') AS delivered,"
        " count(*) FILTER (WHERE event = 'retry_scheduled') AS retried,"
        " count(*) FILTER (WHERE event = 'dead_lettered') AS dead,"
        " count(*) FILTER (WHERE event IN ('expired', 'missed_skipped')) AS expired,"
        " count(*) FILTER (WHERE event IN ('deferred', 'holiday_skipped')) AS held"
        f" FROM reminderd.trail WHERE tenant_id = $1 AND {window}", tenant,
    )
    return FireTotals(*row.values())


async def test_fire_counts_equal_the_audit_trail_through_the_worker(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str, store: Store
) -> None:
    await add_tenant(db, "other", receiver.url)
    receiver.script["flaky"] = [503]
    receiver.script["gone"] = [404]  # permanent, and the endpoint stays enabled (410 disables it: issue 15)
    await db.execute(
        "UPDATE reminderd.tenants SET quiet_start = '00:00', quiet_end = '23:59:59' WHERE id = 'acme'"
    )
    await db.execute(
        "SELECT reminderd.schedule('acme', 'ok:' || g, now()) FROM generate_series(1, 3) g;"
        "SELECT reminderd.schedule('acme', 'flaky', now());"
        "SELECT reminderd.schedule('acme', 'gone', now());"
        "SELECT reminderd.schedule('acme', 'promo', now(), category => 'marketing');"
        "SELECT reminderd.schedule('other', 'ok', now());"
    )
    async with inserted_before_the_outage(db):  # the database refuses a row this late at insert
        # Due too long ago for the default 30 minutes of lateness: expired at the claim.
        await db.execute(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
            " VALUES ('other', 'stale', now() - interval '2 hours')"
        )
    await drain(fast_settings(database_url, lookback_s=86400))

    assert (await row_by_ref(db, "promo"))["status"] == "pending"  # deferred to the end of quiet hours
    fires = {f.tenant_id: f for f in await store.overview_fires(None)}
    assert fires["acme"].last_hour == FireTotals(delivered=4, retried=1, dead=1, held=1)
    assert fires["other"].last_hour == FireTotals(delivered=1, expired=1)
    for name in ("acme", "other"):
        assert fires[name].last_hour == await audit_counts(db, name, WINDOW_1H)
        assert fires[name].last_day == await audit_counts(db, name, WINDOW_24H)
    # Only the tenants asked for.
    assert [f.tenant_id for f in await store.overview_fires("other")] == ["other"]


async def test_lateness_counts_every_delivered_attempt_in_its_bucket(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str, store: Store
) -> None:
    receiver.script["flaky"] = [503]
    await db.execute(
        "SELECT reminderd.schedule('acme', 'now:' || g, now()) FROM generate_series(1, 5) g;"
        "SELECT reminderd.schedule('acme', 'flaky', now());"
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
        " VALUES ('acme', 'late', now() - interval '10 minutes')"
    )
    await drain(fast_settings(database_url))

    bounds = await store.lateness_bounds_ms()
    counts = await store.overview_lateness("acme")
    for last_hour in (True, False):
        delivered = {c.bucket: c.delivered for c in counts if c.last_hour is last_hour}
        assert sum(delivered.values()) == 7  # every 2xx attempt, the retried one's second included
        # The one due ten minutes ago lies in [5 min, 15 min); nothing else is that late.
        ten_minutes = next(i for i, bound in enumerate(bounds, start=1) if bound > 600_000) - 1
        assert delivered.get(ten_minutes) == 1
        assert sum(n for bucket, n in delivered.items() if bucket > ten_minutes) == 0
    expected = await db.fetch(
        "SELECT width_bucket(extract(epoch FROM created_at - scheduled_for)::float8 * 1000,"
        " reminderd.lateness_bounds_ms()) AS bucket, count(*) FROM reminderd.deliveries"
        " WHERE status_code BETWEEN 200 AND 299 GROUP BY 1"
    )
    assert {c.bucket: c.delivered for c in counts if c.last_hour} == {r["bucket"]: r["count"] for r in expected}


async def test_counting_concurrent_batches_of_many_tenants_does_not_deadlock(
    database_url: str, db: asyncpg.Connection, tenant: str
) -> None:
    tenants = [f"t{i}" for i in range(6)]
    for name in tenants:
        await add_tenant(db, name)
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
        " SELECT t, 'r', now() FROM unnest($1::text[]) t", tenants,
    )
    ids = dict(await db.fetch("SELECT tenant_id, id FROM reminderd.scheduled_messages"))

    async def writer(order: list[str]) -> None:
        """As record_outcomes writes: attempts carrying their changes, then held rows' audit events,
        in one statement each round."""
        connection = await asyncpg.connect(database_url)
        try:
            for _ in range(30):
                async with connection.transaction():
                    await connection.execute(
                        "INSERT INTO reminderd.deliveries (message_id, tenant_id, ref_id, webhook_id, attempt,"
                        " scheduled_for, status_code, duration_ms, event, status)"
                        " SELECT m, t, 'r', 'w', 1, now(), 200, 1, 'fired', 'sent'"
                        " FROM unnest($1::bigint[], $2::text[]) AS u(m, t)",
                        [ids[t] for t in order], order,
                    )
                    await connection.execute(
                        "INSERT INTO reminderd.events (message_id, tenant_id, ref_id, event, status, actor)"
                        " SELECT m, t, 'r', 'deferred', 'pending', current_user"
                        " FROM unnest($1::bigint[], $2::text[]) AS u(m, t)",
                        [ids[t] for t in order], order,
                    )
        finally:
            await connection.close()

    await asyncio.gather(writer(tenants), writer(tenants[::-1]), writer(tenants[2:] + tenants[:2]))
    total = await db.fetchval("SELECT sum(delivered) FROM reminderd.fire_counts WHERE period = 'minute'")
    late = await db.fetchval("SELECT sum(delivered) FROM reminderd.lateness_counts WHERE period = 'hour'")
    held = await db.fetchval("SELECT sum(held) FROM reminderd.fire_counts WHERE period = 'hour'")
    assert total == late == held == 3 * 30 * len(tenants)


async def test_counting_attempts_then_held_rows_one_by_one_does_not_deadlock(
    database_url: str, db: asyncpg.Connection, tenant: str
) -> None:
    """A batch's attempts are counted in one statement, but the events of its held rows one row at a
    time (the audit trigger is row-level): each count locks its rows in key order, not all of a
    transaction's counts together. Two writers whose attempts are of the tenants the other holds
    back would each hold what the other waits for, but for the one lock every count takes first."""
    tenants = [f"t{i}" for i in range(6)]
    for name in tenants:
        await add_tenant(db, name)
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
        " SELECT t, 'r', now() FROM unnest($1::text[]) t", tenants,
    )
    ids = dict(await db.fetch("SELECT tenant_id, id FROM reminderd.scheduled_messages"))

    async def writer(attempted: list[str], held: list[str]) -> None:
        connection = await asyncpg.connect(database_url)
        try:
            for _ in range(30):
                async with connection.transaction():
                    await connection.execute(
                        "INSERT INTO reminderd.deliveries (message_id, tenant_id, ref_id, webhook_id, attempt,"
                        " scheduled_for, status_code, duration_ms, event, status)"
                        " SELECT m, t, 'r', 'w', 1, now(), 200, 1, 'fired', 'sent'"
                        " FROM unnest($1::bigint[], $2::text[]) AS u(m, t)",
                        [ids[t] for t in attempted], attempted,
                    )
                    for name in held:
                        await connection.execute(
                            "INSERT INTO reminderd.events (message_id, tenant_id, ref_id, event, status, actor)"
                            " VALUES ($1, $2, 'r', 'deferred', 'pending', current_user)", ids[name], name,
                        )
        finally:
            await connection.close()

    first, second = tenants[:3], tenants[3:]
    await asyncio.gather(writer(first, second[::-1]), writer(second, first[::-1]))
    counts = await db.fetchrow(
        "SELECT sum(delivered) AS delivered, sum(held) AS held"
        " FROM reminderd.fire_counts WHERE period = 'minute'"
    )
    assert (counts["delivered"], counts["held"]) == (2 * 30 * 3, 2 * 30 * 3)


async def test_each_recorded_fire_is_notified_to_the_feed_by_id(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str, store: Store
) -> None:
    listener = await asyncpg.connect(database_url)
    got: list[str] = []
    await listener.add_listener("reminderd_feed", lambda *args: got.append(args[3]))
    try:
        await db.execute(
            "SELECT reminderd.schedule('acme', 'a', now()); SELECT reminderd.schedule('acme', 'b', now())"
        )
        await drain(fast_settings(database_url))
        await poll_until(lambda: at_least(got, 1))
    finally:
        await listener.close()

    # The attempts' changes are on their deliveries rows (migration 0007): the notifications name them.
    assert all(payload.startswith("deliveries:") for payload in got)
    notified = [int(i) for payload in got for i in payload.removeprefix("deliveries:").split(",")]
    fired = await db.fetch(
        "SELECT delivery_id, ref_id FROM reminderd.trail WHERE event = 'fired' ORDER BY delivery_id")
    assert notified == [r["delivery_id"] for r in fired]  # scheduling them was not notified: nothing fired
    entries = await store.feed_entries([], notified)
    # In the order they were recorded (two callbacks in flight at once may finish either way round).
    assert [(e.ref_id, e.event) for e in entries] == [(r["ref_id"], "fired") for r in fired]
    assert sorted(e.ref_id for e in entries) == ["a", "b"]


async def test_a_fire_held_back_is_notified_as_an_event(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str, store: Store
) -> None:
    await db.execute(
        "UPDATE reminderd.tenants SET quiet_start = '00:00', quiet_end = '23:59:59' WHERE id = 'acme'"
    )
    listener = await asyncpg.connect(database_url)
    got: list[str] = []
    await listener.add_listener("reminderd_feed", lambda *args: got.append(args[3]))
    try:
        await db.execute("SELECT reminderd.schedule('acme', 'promo', now(), category => 'marketing')")
        await drain(fast_settings(database_url))
        await poll_until(lambda: at_least(got, 1))
    finally:
        await listener.close()

    deferred = await db.fetchval("SELECT id FROM reminderd.events WHERE event = 'deferred'")
    assert got == [f"events:{deferred}"]
    (entry,) = await store.feed_entries([deferred], [])
    assert (entry.event_id, entry.delivery_id, entry.ref_id) == (deferred, None, "promo")
    assert entry.event == "deferred"


async def at_least(items: list[str], count: int) -> bool:
    return len(items) >= count


async def test_a_statement_recording_many_fires_notifies_them_500_to_a_payload(
    database_url: str, db: asyncpg.Connection, tenant: str
) -> None:
    listener = await asyncpg.connect(database_url)
    got: list[str] = []
    await listener.add_listener("reminderd_feed", lambda *args: got.append(args[3]))
    try:
        await db.execute(
            "INSERT INTO reminderd.events (message_id, tenant_id, ref_id, event, status, actor)"
            " SELECT g, 'acme', 'r' || g, 'fired', 'sent', current_user FROM generate_series(1, 1200) g"
        )
        await poll_until(lambda: at_least(got, 3))
    finally:
        await listener.close()
    assert [len(payload.split(",")) for payload in got] == [500, 500, 200]
    assert all(len(payload) < 8000 and payload.startswith("events:") for payload in got)


async def test_the_feed_lists_fires_newest_first_filtered_and_scoped(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str, store: Store
) -> None:
    await add_tenant(db, "other", receiver.url)
    receiver.script["booking:2"] = [503]
    await db.execute(
        "SELECT reminderd.schedule('acme', 'booking:' || g, now()) FROM generate_series(1, 3) g;"
        "SELECT reminderd.schedule('acme', 'cart:1', now());"
        "SELECT reminderd.schedule('other', 'booking:9', now())"
    )
    await drain(fast_settings(database_url))

    everything = await store.feed_recent(None)
    assert [e.created_at for e in everything] == sorted((e.created_at for e in everything), reverse=True)
    attempts = [e.delivery_id for e in everything]  # the attempts' changes: deliveries rows
    assert None not in attempts and attempts == sorted(attempts, reverse=True)  # type: ignore[type-var]
    assert len(everything) == 6  # five delivered, one retried
    acme = await store.feed_recent("acme")
    assert {e.tenant_id for e in acme} == {"acme"} and len(acme) == 5
    retried = await store.feed_recent("acme", kinds=["retry_scheduled"], look_back=100)
    assert [(e.ref_id, e.event) for e in retried] == [("booking:2", "retry_scheduled")]
    assert "503" in (retried[0].reason or "")
    bookings = await store.feed_recent(None, ref_range=("booking:", "booking;"))
    assert {e.ref_id for e in bookings} == {"booking:1", "booking:2", "booking:3", "booking:9"}
    newest = everything[0]
    assert await store.feed_recent(None, after=cursor_past(everything)) == []
    assert await store.feed_recent(None, after=cursor_past(everything[1:])) == [newest]
    assert await store.feed_newest() == cursor_past(everything)
    assert len(await store.feed_recent(None, limit=2)) == 2


def cursor_past(entries: list[FeedEntry]) -> FeedCursor:
    cursor = FEED_START
    for entry in entries:
        cursor = cursor.past(entry)
    return cursor


async def test_the_feed_reads_fires_of_both_tables_past_a_cursor_of_both(
    db: asyncpg.Connection, tenant: str, store: Store
) -> None:
    """Fires held back are events, attempts' changes deliveries rows: one feed, newest first, and
    a cursor that holds an id of each table."""
    await db.execute(
        "INSERT INTO reminderd.events (message_id, tenant_id, ref_id, event, status, actor, created_at)"
        " VALUES (1, 'acme', 'held:1', 'deferred', 'pending', current_user, now() - interval '3 seconds');"
        "INSERT INTO reminderd.deliveries (message_id, tenant_id, ref_id, webhook_id, attempt, scheduled_for,"
        " status_code, duration_ms, event, status, created_at)"
        " VALUES (2, 'acme', 'sent:2', 'w2', 1, now(), 200, 1, 'fired', 'sent', now() - interval '2 seconds'),"
        "        (3, 'acme', 'lost:3', 'w3', 1, now(), 200, 1, NULL, NULL, now() - interval '2 seconds');"
        "INSERT INTO reminderd.events (message_id, tenant_id, ref_id, event, status, actor, created_at)"
        " VALUES (4, 'acme', 'held:4', 'expired', 'expired', current_user, now() - interval '1 second'),"
        "        (5, 'acme', 'made:5', 'created', 'pending', current_user, now())"
    )
    everything = await store.feed_recent("acme")
    assert [e.ref_id for e in everything] == ["held:4", "sent:2", "held:1"]  # not a non-fire, nor an attempt
    assert [e.key[0] for e in everything] == ["e", "d", "e"]                 # that changed nothing
    assert await store.feed_recent(None) == everything
    past_first = cursor_past(everything[2:])
    assert [e.ref_id for e in await store.feed_recent(None, after=past_first)] == ["held:4", "sent:2"]
    assert [e.ref_id for e in await store.feed_recent(None, after=FeedCursor(past_first.event_id, 10**9))] == [
        "held:4"]


async def test_an_action_for_an_api_key_is_audited_with_it_and_with_the_role(
    db: asyncpg.Connection, tenant: str, store: Store
) -> None:
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, status, last_error)"
        " VALUES ('acme', 'dead:1', now(), 'dead', 'HTTP 410'), ('acme', 'dead:2', now(), 'dead', 'HTTP 410')"
    )
    ids = [r["id"] for r in await db.fetch("SELECT id FROM reminderd.scheduled_messages ORDER BY id")]
    who = "rk_abcdefghijkl (alice)"

    assert (await store.requeue_dead("other", ids, on_behalf_of=who)).requeued == 0  # not in view
    assert (await store.requeue_dead("acme", ids[:1], on_behalf_of=who)).requeued == 1
    await db.execute("SELECT reminderd.requeue($1)", ids[1])  # by hand: for nobody else

    trail = await db.fetch(
        "SELECT message_id, actor, on_behalf_of, current_user AS me FROM reminderd.events"
        " WHERE event = 'requeued' ORDER BY message_id"
    )
    assert [(r["message_id"], r["on_behalf_of"]) for r in trail] == [(ids[0], who), (ids[1], None)]
    assert {r["actor"] for r in trail} == {trail[0]["me"]}
    # The setting lasted the action's transaction only.
    assert await db.fetchval("SELECT nullif(current_setting('reminderd.on_behalf_of', true), '')") is None


async def test_dashboard_actions_change_only_the_tenants_given(
    db: asyncpg.Connection, tenant: str, store: Store
) -> None:
    await db.execute("SELECT reminderd.schedule('acme', 'later', now() + interval '1 hour')")
    message_id = (await row_by_ref(db, "later"))["id"]
    who = "rk_abcdefghijkl (ops)"

    assert await store.pause_as("acme", "later", on_behalf_of=who) == 1
    assert await store.resume_as("acme", "later", on_behalf_of=who) == 1
    assert await store.send_now_as("acme", "later", on_behalf_of=who) == message_id
    assert await store.cancel_as("other", message_id, on_behalf_of=who) == 0
    assert await store.cancel_as("acme", message_id, on_behalf_of=who) == 1
    trail = await db.fetch("SELECT event, on_behalf_of FROM reminderd.events WHERE message_id = $1 ORDER BY id",
                           message_id)
    assert [(r["event"], r["on_behalf_of"]) for r in trail] == [
        ("created", None), ("paused", who), ("resumed", who), ("sent_now", who), ("cancelled", who),
    ]


async def test_the_store_reads_one_message_only_among_the_tenants_in_view(
    db: asyncpg.Connection, tenant: str, store: Store
) -> None:
    await add_tenant(db, "other")
    await db.execute(
        "SELECT reminderd.schedule('acme', 'booking:1', now() + interval '1 hour');"
        "SELECT reminderd.schedule('acme', 'booking:2', now() + interval '1 hour');"
        "SELECT reminderd.schedule('other', 'booking:1', now() + interval '1 hour')"
    )
    acme_id = (await db.fetchval("SELECT id FROM reminderd.scheduled_messages WHERE tenant_id = 'acme'"
                                 " ORDER BY id LIMIT 1"))
    assert await store.message_by_id("other", acme_id) is None
    assert await store.message_story("other", acme_id) is None
    found = await store.message_story("acme", acme_id)
    assert found is not None and found[0].ref_id == "booking:1" and [e.event for e in found[2]] == ["created"]
    by_ref = await store.messages_by_ref(None, ("booking:", "booking;"), limit=10)
    assert sorted((m.tenant_id, m.ref_id) for m in by_ref) == [
        ("acme", "booking:1"), ("acme", "booking:2"), ("other", "booking:1")]
    assert [m.ref_id for m in await store.messages_by_ref("other", ("booking:", "booking;"), limit=10)] == [
        "booking:1"]


async def test_a_message_story_tells_its_events_and_its_attempts_changes_in_order(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str, store: Store
) -> None:
    receiver.script["flaky"] = [503]
    await db.execute("SELECT reminderd.schedule('acme', 'flaky', now())")
    message_id = (await row_by_ref(db, "flaky"))["id"]
    await drain(fast_settings(database_url))

    found = await store.message_story("acme", message_id)
    assert found is not None
    _, attempts, trail = found
    assert [a.status_code for a in attempts] == [503, 200]
    assert [(e.event, e.status) for e in trail] == [
        ("created", "pending"), ("retry_scheduled", "pending"), ("fired", "sent")]
    assert [e.delivery_id for e in trail[1:]] == [a.id for a in attempts]  # the attempts' own rows
    assert trail[0].event_id is not None and trail[0].delivery_id is None
    assert "503" in (trail[1].reason or "") and trail[2].actor == trail[1].actor


async def test_dead_letters_filter_by_tenant_error_and_age_and_page_newest_first(
    db: asyncpg.Connection, tenant: str, store: Store
) -> None:
    await add_tenant(db, "other")
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, status, last_error, updated_at)"
        " VALUES ('acme', 'a', now(), 'dead', 'HTTP 410 Gone', now() - interval '2 hours'),"
        "        ('acme', 'b', now(), 'dead', 'connection refused', now() - interval '10 minutes'),"
        "        ('acme', 'c', now(), 'dead', 'HTTP 410 Gone', now() - interval '3 days'),"
        "        ('other', 'd', now(), 'dead', 'HTTP 410 Gone', now())"
    )
    forever = (await db.fetchval("SELECT 'infinity'::timestamptz"), 0)

    async def refs(tenants: str | None, *, min_age_s: float = 0, max_age_s: float = 1e9,
                   error: str | None = None) -> list[str]:
        rows = await store.dead_letters(tenants, min_age_s=min_age_s, max_age_s=max_age_s, error=error,
                                        before=forever, limit=10)
        assert await store.dead_letters_count(tenants, min_age_s=min_age_s, max_age_s=max_age_s,
                                              error=error) == len(rows)
        return [r.ref_id for r in rows]

    assert await refs(None) == ["d", "b", "a", "c"]
    assert await refs("acme") == ["b", "a", "c"]
    assert await refs("acme", error="410 gone") == ["a", "c"]
    assert await refs("acme", min_age_s=3600) == ["a", "c"]
    assert await refs("acme", max_age_s=86400) == ["b", "a"]
    first = await store.dead_letters("acme", min_age_s=0, max_age_s=1e9, error=None, before=forever, limit=1)
    assert [r.ref_id for r in first] == ["b", "a"]  # one more than asked: a next page exists
    after = await store.dead_letters("acme", min_age_s=0, max_age_s=1e9, error=None,
                                     before=(first[0].updated_at, first[0].id), limit=5)
    assert [r.ref_id for r in after] == ["a", "c"]
    done = await store.requeue_dead_matching("acme", min_age_s=3600, max_age_s=1e9, error="410",
                                             limit=100, on_behalf_of="x")
    assert (done.requeued, done.delivered) == (2, 0)
    assert await refs(None) == ["d", "b"]


async def test_upcoming_counts_pending_messages_by_hour_and_minute(
    db: asyncpg.Connection, tenant: str, store: Store
) -> None:
    await add_tenant(db, "other")
    now = await store.database_now()
    hour = now.replace(minute=0, second=0, microsecond=0)
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
        " SELECT 'acme', 'h' || g, $1::timestamptz + interval '2 hours' + g * interval '1 second'"
        " FROM generate_series(1, 3) g", hour,
    )
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at) VALUES"
        " ('other', 'o', $1::timestamptz + interval '2 hours 30 minutes'),"
        " ('acme', 'soon', $1::timestamptz + interval '1 hour 5 minutes')", hour,
    )
    end = hour + timedelta(hours=48)
    everyone = await store.upcoming(None, start=hour, end=end, unit="hour", timezone="UTC")
    assert [(b.starts_at - hour, b.messages) for b in everyone] == [
        (timedelta(hours=1), 1), (timedelta(hours=2), 4)]
    acme = await store.upcoming("acme", start=hour, end=end, unit="hour", timezone="UTC")
    assert [b.messages for b in acme] == [1, 3]
    minutes = await store.upcoming("acme", start=hour + timedelta(hours=1), end=hour + timedelta(hours=2),
                                   unit="minute", timezone="UTC")
    assert [(b.starts_at - hour, b.messages) for b in minutes] == [(timedelta(hours=1, minutes=5), 1)]
    # Kolkata's hours start at :30 UTC.
    kolkata = await store.upcoming(None, start=hour, end=end, unit="hour", timezone="Asia/Kolkata")
    assert [(b.starts_at - hour, b.messages) for b in kolkata] == [
        (timedelta(minutes=30), 1), (timedelta(hours=1, minutes=30), 3), (timedelta(hours=2, minutes=30), 1)]
    listed = await store.upcoming_messages("acme", start=hour + timedelta(hours=2),
                                           end=hour + timedelta(hours=3), limit=2)
    assert [m.ref_id for m in listed] == ["h1", "h2"]


async def test_overview_counts_live_and_dead_messages_and_the_backlog_per_tenant(
    db: asyncpg.Connection, tenant: str, store: Store
) -> None:
    await add_tenant(db, "other")
    await add_tenant(db, "idle")
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, status) VALUES"
        " ('acme', 'due1', now() - interval '1 minute', 'pending'),"
        " ('acme', 'due2', now() - interval '2 minutes', 'pending'),"
        " ('acme', 'later', now() + interval '1 hour', 'pending'),"
        " ('acme', 'busy', now(), 'picked'), ('acme', 'held', now(), 'paused'),"
        " ('acme', 'gone', now(), 'dead'), ('acme', 'done', now(), 'sent'),"
        " ('other', 'x', now() + interval '1 day', 'pending')"
    )
    counts = {c.tenant_id: c for c in await store.overview_counts(None)}
    acme = counts["acme"]
    assert (acme.pending, acme.picked, acme.paused, acme.dead, acme.due) == (3, 1, 1, 1, 2)
    assert acme.oldest_due is not None
    assert (counts["other"].pending, counts["other"].due) == (1, 0)
    assert (counts["idle"].pending, counts["idle"].oldest_due) == (0, None)
    assert [c.tenant_id for c in await store.overview_counts("other")] == ["other"]


async def test_the_python_names_of_the_fires_are_the_schemas(db: asyncpg.Connection) -> None:
    for index in ("events_fires", "events_tenant_fires", "deliveries_fires", "deliveries_tenant_fires"):
        predicate = await db.fetchval(
            "SELECT pg_get_expr(indpred, indrelid) FROM pg_index WHERE indexrelid = $1::regclass",
            f"reminderd.{index}",
        )
        assert sorted(FIRES) == sorted(predicate.split("'")[1::2]), index


async def test_a_database_at_0006_with_history_upgrades_to_0011(empty_database_url: str) -> None:
    await asyncio.to_thread(upgrade, empty_database_url, "0006")
    db = await asyncpg.connect(empty_database_url)
    try:
        await add_tenant(db, "acme")
        await db.execute(
            "SELECT reminderd.schedule('acme', 'r' || g, now() + interval '1 hour')"
            " FROM generate_series(1, 50) g"
        )
        await db.execute(
            "INSERT INTO reminderd.events (message_id, tenant_id, ref_id, event, status, actor)"
            " SELECT id, tenant_id, ref_id, 'fired', 'sent', current_user FROM reminderd.scheduled_messages"
        )
        await asyncio.to_thread(upgrade, empty_database_url, "0011")
        assert await db.fetchval("SELECT count(*) FROM reminderd.events WHERE on_behalf_of IS NULL") == 100
        # History before the aggregates is not in them; what is recorded from now on is.
        assert await db.fetchval("SELECT count(*) FROM reminderd.fire_counts") == 0
        await db.execute(
            "INSERT INTO reminderd.events (message_id, tenant_id, ref_id, event, status, actor)"
            " VALUES (1, 'acme', 'r1', 'dead_lettered', 'dead', current_user)"
        )
        assert await db.fetchval("SELECT dead FROM reminderd.fire_counts WHERE period = 'hour'") == 1
        await db.execute(
            "INSERT INTO reminderd.deliveries (message_id, tenant_id, ref_id, webhook_id, attempt,"
            " scheduled_for, status_code, duration_ms, event, status)"
            " VALUES (2, 'acme', 'r2', 'w', 1, now(), 200, 3, 'fired', 'sent')"
        )
        assert await db.fetchval("SELECT delivered FROM reminderd.fire_counts WHERE period = 'hour'") == 1
    finally:
        await db.close()


async def test_the_daemons_housekeeping_prunes_the_aggregates_past_their_use(
    db: asyncpg.Connection, database_url: str, store: Store
) -> None:
    await db.execute(
        "INSERT INTO reminderd.fire_counts (period, starts_at, tenant_id, delivered) VALUES"
        " ('minute', now() - interval '4 hours', 'acme', 1),"
        " ('minute', now() - interval '2 hours', 'acme', 1),"
        " ('hour', now() - interval '9 days', 'acme', 1), ('hour', now() - interval '7 days', 'acme', 1);"
        "INSERT INTO reminderd.lateness_counts (period, starts_at, tenant_id, bucket, delivered) VALUES"
        " ('minute', now() - interval '4 hours', 'acme', 3, 1),"
        " ('hour', now() - interval '1 day', 'acme', 3, 1)"
    )
    pruner = next(s for s in Housekeeping.for_daemon(fast_settings(database_url), store, Metrics()).services
                  if isinstance(s, CountsPruner))
    assert await pruner.run_once() == 3
    kept = await db.fetch("SELECT period, now() - starts_at AS age FROM reminderd.fire_counts ORDER BY 1")
    ages = [(r["period"], round(r["age"].total_seconds() / 3600)) for r in kept]
    assert ages == [("hour", 168), ("minute", 2)]
    assert await db.fetchval("SELECT count(*) FROM reminderd.lateness_counts") == 1


async def test_the_lateness_buckets_are_the_same_in_python_and_in_sql(store: Store) -> None:
    assert await store.lateness_bounds_ms() == LATENESS_BOUNDS_MS


async def test_the_api_role_reads_the_daemon_registry_the_overview_shows(
    db: asyncpg.Connection, database_url: str
) -> None:
    """reminderd serve's role (reminderd_api) reads reminderd.daemons through daemon_overview
    (granted by migration 0011): each daemon, its state and its last claim."""
    await db.execute(
        "INSERT INTO reminderd.daemons (id, host, pid, version, heartbeat_at, settings, last_claim_at)"
        " VALUES ('00000000-0000-4000-8000-000000000001', 'host-a', 101, '0.1.0', now(), '{}',"
        "         now() - interval '5 seconds')"
    )
    api = await Store.connect(await api_role_url(db, database_url))
    try:
        (daemon,) = await api.daemons()
    finally:
        await api.close()
    assert (daemon.host, daemon.pid, daemon.state, daemon.held) == ("host-a", 101, "alive", 0)
    assert daemon.last_claim_at is not None and daemon.last_claim_at < daemon.heartbeat_at


# Broadcasts (issue 14 in the dashboard, migration 0015) ----------------------------------------------


async def broadcast_awaiting(db: asyncpg.Connection, tenant: str, prefix: str, *, contacts: int = 3,
                             created_by: str = "alice") -> int:
    """A broadcast of `tenant` to `contacts` contacts in Tokyo and Berlin, over its approval threshold."""
    items = [{"contact_id": f"{prefix}_{n}", "timezone": ("Asia/Tokyo", "Europe/Berlin")[n % 2]}
             for n in range(contacts)]
    await db.execute("SELECT reminderd.upsert_contacts($1, $2::jsonb)", tenant, json.dumps(items))
    await db.execute("UPDATE reminderd.tenants SET approval_threshold = 1 WHERE id = $1", tenant)
    day = datetime.now(UTC).date() + timedelta(days=3)
    broadcast_id: int = await db.fetchval(
        "SELECT reminderd.broadcast($1, $2, $3, contact_ids => $4, actor => $5)",
        tenant, prefix, datetime(day.year, day.month, day.day, 9), [i["contact_id"] for i in items], created_by)
    return broadcast_id


async def test_the_api_role_reads_broadcasts_only_among_the_tenants_in_view_and_pages_them(
    db: asyncpg.Connection, database_url: str, tenant: str
) -> None:
    await add_tenant(db, "other")
    first = await broadcast_awaiting(db, "acme", "bf")
    theirs = await broadcast_awaiting(db, "other", "sale", contacts=2)
    await db.execute("UPDATE reminderd.tenants SET approval_threshold = NULL WHERE id = 'acme'")
    running = await db.fetchval("SELECT reminderd.broadcast('acme', 'weekly', cron => '0 9 * * 1',"
                                " contact_ids => ARRAY['bf_0'], actor => 'carol')")
    api = await Store.connect(await api_role_url(db, database_url))
    try:
        newest = 2**63 - 1
        assert [b.id for b in await api.dashboard_broadcasts(None, before=newest, limit=50)] == [
            running, theirs, first]
        acme = await api.dashboard_broadcasts("acme", before=newest, limit=50)
        assert [b.id for b in acme] == [running, first]
        assert [b.id for b in await api.dashboard_broadcasts("acme", before=newest, limit=50,
                                                             awaiting_only=True)] == [first]
        # A page is `limit` and one more (so the page knows another follows), below the cursor.
        assert [b.id for b in await api.dashboard_broadcasts(None, before=newest, limit=1)] == [running, theirs]
        assert [b.id for b in await api.dashboard_broadcasts(None, before=theirs, limit=1)] == [first]
        shown = {b.id: b for b in acme}[first]
        view = await db.fetchrow("SELECT * FROM reminderd.broadcasts WHERE id = $1", first)
        assert (shown.staged, shown.held, shown.sent, shown.approval, shown.created_by) == (
            view["staged"], view["held"], view["sent"], "awaiting", "alice") == (3, 3, 0, "awaiting", "alice")
        assert shown.awaiting_approval and shown.when.endswith("09:00 on each contact's clock")
        assert {b.id: b for b in acme}[running].when == 'cron "0 9 * * 1"'

        assert await api.dashboard_broadcast("other", first) is None  # another tenant's: none
        detail = await api.dashboard_broadcast(None, first)
        assert detail is not None and detail.progress == shown and detail.payload == "{}"
        waves = await api.broadcast_waves(first)
        assert [(w.contacts, w.held, w.sent, w.completed_at) for w in waves] == [(3, 3, 0, None)]
        # What it would send per UTC hour: the rows awaiting approval, by the hour they fire in.
        hours = await api.awaiting_hours([first, theirs])
        expected = await db.fetch(
            "SELECT broadcast_id, date_trunc('hour', fire_at, 'UTC') AS hour, count(*) AS sends"
            " FROM reminderd.scheduled_messages WHERE status = 'awaiting_approval' GROUP BY 1, 2 ORDER BY 1, 2")
        assert [(h.broadcast_id, h.hour, h.sends) for h in hours] == [tuple(r) for r in expected]
        assert [h.sends for h in hours if h.broadcast_id == first] == [2, 1]  # Tokyo's hour, then Berlin's

        counts = {c.tenant_id: c for c in await api.overview_counts(None)}
        assert (counts["acme"].awaiting, counts["acme"].awaiting_broadcasts) == (3, 1)
        assert (counts["other"].awaiting, counts["other"].awaiting_broadcasts) == (2, 1)
        assert counts["acme"].pending == 0  # awaiting approval is not pending: nothing fires
        (one,) = await api.overview_counts("other")
        assert (one.tenant_id, one.awaiting, one.awaiting_broadcasts) == ("other", 2, 1)
    finally:
        await api.close()


async def test_the_api_role_approves_rejects_and_cancels_in_the_name_of_the_key(
    db: asyncpg.Connection, database_url: str, tenant: str
) -> None:
    approved = await broadcast_awaiting(db, "acme", "a")
    rejected = await broadcast_awaiting(db, "acme", "r")
    cancelled = await broadcast_awaiting(db, "acme", "c")
    own = await broadcast_awaiting(db, "acme", "o", created_by="rk_abcdefghijkl (alice)")
    await db.execute("SELECT reminderd.approve_broadcast('acme', $1, 'bob')", cancelled)
    who = "rk_abcdefghijkl (alice)"
    api = await Store.connect(await api_role_url(db, database_url))
    try:
        assert await api.approve_broadcast_as("acme", approved, on_behalf_of=who, note="checked") == 3
        assert await api.reject_broadcast_as("acme", rejected, on_behalf_of=who, note=None) == 3
        assert await api.cancel_broadcast_as("acme", cancelled, on_behalf_of=who) == 3
        with pytest.raises(DatabaseRefused) as refused:  # the creator approving their own
            await api.approve_broadcast_as("acme", own, on_behalf_of=who, note=None)
        assert refused.value.sqlstate == "42501" and refused.value.hint is not None
        assert refused.value.message == f"broadcast {own} was created by {who}: another person must approve it"
        with pytest.raises(DatabaseRefused) as refused:  # decided already
            await api.approve_broadcast_as("acme", rejected, on_behalf_of="rk_zzzzzzzzzzzz (bob)", note=None)
        assert refused.value.sqlstate == "55000"
        with pytest.raises(DatabaseRefused) as refused:  # another tenant's broadcast is not found
            await api.cancel_broadcast_as("other", approved, on_behalf_of=who)
        assert refused.value.sqlstate in ("23503", "P0002")
    finally:
        await api.close()
    decided = {r["id"]: tuple(r)[1:] for r in await db.fetch(
        "SELECT id, approval, decided_by FROM reminderd.broadcasts ORDER BY id")}
    assert decided[approved] == ("approved", who) and decided[rejected] == ("rejected", who)
    assert decided[own] == ("awaiting", None)
    rows = {r["broadcast_id"]: r["statuses"] for r in await db.fetch(
        "SELECT broadcast_id, array_agg(DISTINCT status) AS statuses FROM reminderd.scheduled_messages"
        " GROUP BY 1")}
    assert rows == {approved: ["pending"], rejected: ["cancelled"], cancelled: ["cancelled"],
                    own: ["awaiting_approval"]}
    trail = await db.fetch(
        "SELECT m.broadcast_id, e.event, e.actor, e.on_behalf_of FROM reminderd.events e"
        " JOIN reminderd.scheduled_messages m ON m.id = e.message_id"
        " WHERE e.event IN ('approved', 'rejected', 'cancelled') ORDER BY e.id")
    me = await db.fetchval("SELECT current_user")
    assert {(r["broadcast_id"], r["event"], r["actor"], r["on_behalf_of"]) for r in trail} == {
        (approved, "approved", API_ROLE, who), (rejected, "rejected", API_ROLE, who),
        (cancelled, "approved", me, None),  # by hand, before the test: for nobody else
        (cancelled, "cancelled", API_ROLE, who)}
    assert len(trail) == 12  # each row's own event


async def test_an_application_role_still_acts_as_itself_only(db: asyncpg.Connection, tenant: str) -> None:
    """Migration 0015 lets reminderd serve's role name whom it acts for; an application's role
    still may not, so an app cannot approve its own broadcast under another name."""
    waiting = await broadcast_awaiting(db, "acme", "bf")
    await db.execute("SET ROLE reminderd_app")
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError) as refused:
            await db.execute("SELECT reminderd.acting_as('bob')")
        assert refused.value.message == 'role reminderd_app may not act as "bob"'
    finally:
        await db.execute("RESET ROLE")
    await db.execute("SET ROLE reminderd_api")
    try:
        named = await db.fetchval("SELECT reminderd.acting_as('rk_abcdefghijkl (bob)')")
        assert named == "rk_abcdefghijkl (bob)"
    finally:
        await db.execute("RESET ROLE")
    assert await db.fetchval("SELECT approval FROM reminderd.broadcasts WHERE id = $1", waiting) == "awaiting"


async def test_the_overview_asks_for_no_approval_of_a_cancelled_broadcast_or_of_one_with_nothing_left(
    db: asyncpg.Connection, store: Store, tenant: str
) -> None:
    """It said "1 broadcast awaiting approval (0 messages held)" after the broadcast was cancelled,
    and after its contacts were all deleted."""
    cancelled = await broadcast_awaiting(db, "acme", "bf")
    emptied_out = await broadcast_awaiting(db, "acme", "bg", contacts=2)
    waiting = await broadcast_awaiting(db, "acme", "bh", contacts=2)
    await db.execute("SELECT reminderd.cancel_broadcast('acme', $1)", cancelled)
    await db.execute("SELECT reminderd.delete_contacts('acme', ARRAY['bg_0', 'bg_1'])")
    for scope in (None, "acme"):
        (counts,) = await store.overview_counts(scope)
        assert (counts.awaiting, counts.awaiting_broadcasts) == (2, 1), scope
    shown = {b.id: b for b in await store.dashboard_broadcasts("acme", before=2**63 - 1, limit=50,
                                                               awaiting_only=False)}
    assert [b for b in shown if shown[b].awaiting_approval] == [waiting]
    assert (shown[emptied_out].approval, shown[emptied_out].done) == ("awaiting", True)
    assert (shown[cancelled].approval, shown[cancelled].ended_reason) == ("cancelled", "cancelled")
    asked = await store.dashboard_broadcasts("acme", before=2**63 - 1, limit=50, awaiting_only=True)
    assert [b.id for b in asked] == [waiting]


async def test_the_broadcast_pages_queries_read_indexes(db: asyncpg.Connection, tenant: str) -> None:
    """Each statement of the broadcasts page and the overview's awaiting count can be an index
    range (on an almost empty table the planner may scan instead, so scans are made expensive)."""
    waiting = await broadcast_awaiting(db, "acme", "bf")
    expected = {
        "overview_awaiting_all": ("scheduled_messages_tenant_status", "broadcast_requests_awaiting"),
        "overview_awaiting_tenant": ("scheduled_messages_tenant_status", "broadcast_requests_awaiting"),
        "dashboard_broadcasts_all": ("broadcast_requests_pkey", "broadcast_counts_occurrence"),
        "dashboard_broadcasts_tenant": ("broadcast_requests_tenant", "broadcast_counts_occurrence"),
        "dashboard_broadcast": ("broadcast_requests_pkey",),
        "dashboard_broadcast_waves": ("broadcast_occurrences_pkey", "broadcast_counts_occurrence"),
        "dashboard_awaiting_hours": ("scheduled_messages_broadcast",),
    }
    arguments: dict[str, tuple[Any, ...]] = {
        "overview_awaiting_all": (), "overview_awaiting_tenant": ("acme",),
        "dashboard_broadcasts_all": (2**63 - 1, 50, False),
        "dashboard_broadcasts_tenant": (2**63 - 1, 50, False, "acme"),
        "dashboard_broadcast": (None, waiting), "dashboard_broadcast_waves": (waiting,),
        "dashboard_awaiting_hours": ([waiting],),
    }
    await db.execute("SET enable_seqscan = off")
    try:
        for name, indexes in expected.items():
            plan = "\n".join(r[0] for r in await db.fetch(f"EXPLAIN {QUERIES[name]}", *arguments[name]))
            assert "Seq Scan on scheduled_messages" not in plan, name
            assert "Seq Scan on broadcast_requests" not in plan, name
            for index in indexes:
                assert index in plan, (name, index, plan)
    finally:
        await db.execute("RESET enable_seqscan")


async def test_a_database_at_0012_with_a_broadcast_awaiting_approval_upgrades_to_0015(
    empty_database_url: str
) -> None:
    """Migration 0015 runs forward on a database whose broadcasts already wait: reminderd serve's
    role then reads them and approves one in the name of its key."""
    await asyncio.to_thread(upgrade, empty_database_url, "0012")
    db = await asyncpg.connect(empty_database_url)
    try:
        await add_tenant(db, "acme")
        waiting = await broadcast_awaiting(db, "acme", "bf", contacts=4)
        await asyncio.to_thread(upgrade, empty_database_url, "0015")
        api = await Store.connect(await api_role_url(db, empty_database_url))
        try:
            (shown,) = await api.dashboard_broadcasts("acme", before=2**63 - 1, limit=50, awaiting_only=True)
            assert (shown.id, shown.held) == (waiting, 4)
            (counts,) = await api.overview_counts("acme")
            assert (counts.awaiting, counts.awaiting_broadcasts) == (4, 1)
            assert await api.approve_broadcast_as("acme", waiting, on_behalf_of="rk_abcdefghijkl (bob)",
                                                  note=None) == 4
        finally:
            await api.close()
        assert await db.fetchval("SELECT decided_by FROM reminderd.broadcasts WHERE id = $1",
                                 waiting) == "rk_abcdefghijkl (bob)"
    finally:
        await db.close()
