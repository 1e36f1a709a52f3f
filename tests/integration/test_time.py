"""Time rules end to end: the worker against a real database and receiver. Outages are simulated
by moving the rows' times into the past (as a stopped daemon would find them), never by waiting."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from support import db_now, drain, fast_settings, inserted_before_the_outage, row_by_ref

from reminderd.cli import main
from reminderd.housekeeping import RecurringPlanner
from reminderd.metrics import Metrics
from reminderd.schedule import (
    Holidays,
    Timing,
    calendars_version,
    first_occurrence,
    known_calendars,
    to_instant,
)
from reminderd.schedule.cron import next_fire
from reminderd.schedule.wallclock import wall
from reminderd.store import Store
from reminderd.testing import Receiver


async def ended_in(db: asyncpg.Connection, ref: str, status: str, event: str | None = None) -> asyncpg.Record:
    """The ref's newest row once the worker is idle, asserted to be in `status` after its last
    event `event`."""
    row = await row_by_ref(db, ref)
    assert row["status"] == status, (ref, row["status"])
    assert event is None or row["last_event"] == event, (ref, row["last_event"])
    return row


# Outage backfill ----------------------------------------------------------------------------------

async def test_after_a_six_hour_outage_no_customer_gets_stale_messages(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    # An hourly schedule whose latest occurrence was 40 minutes ago; the daemon stopped 6 hours
    # before that, leaving every row at the occurrence it was due then.
    now = await db_now(db)
    latest = (now - timedelta(minutes=40)).replace(second=0, microsecond=0)
    stale = latest - timedelta(hours=6)
    cron = f"{latest.minute} * * * *"
    for ref, policy in [("hourly-send", "send"), ("hourly-latest", "latest"), ("hourly-skip", "skip")]:
        await db.execute(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, cron, fire_at, backfill) "
            "VALUES ('acme', $1, $2, $3, $4)", ref, cron, stale, policy,
        )
    async with inserted_before_the_outage(db):
        await db.execute(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at) VALUES "
            "('acme', 'booking-stale', $1), ('acme', 'booking-recent', now() - interval '10 minutes')", stale,
        )

    await drain(fast_settings(database_url))
    assert len(receiver.received) == 2
    send = await ended_in(db, "hourly-send", "pending", "expired")
    skip = await ended_in(db, "hourly-skip", "pending", "expired")
    expired = await ended_in(db, "booking-stale", "expired")
    latest_row = await ended_in(db, "hourly-latest", "pending", "fired")

    # Exactly two callbacks: the recent one-off, and the latest occurrence of the "latest" row.
    got = receiver.by_ref()
    assert sorted(got) == ["booking-recent", "hourly-latest"]
    (only,) = got["hourly-latest"]
    assert datetime.fromisoformat(only.message["scheduled_for"]) == latest
    assert latest_row["fire_at"] == latest + timedelta(hours=1)
    # The rest expired with reasons and wait for their next occurrence.
    next_hour = latest + timedelta(hours=1)
    assert (send["status"], send["fire_at"]) == ("pending", next_hour)
    assert "missed 7 occurrence(s)" in send["last_error"] and "(backfill=send)" in send["last_error"]
    assert (skip["status"], skip["fire_at"]) == ("pending", next_hour)
    assert "(backfill=skip)" in skip["last_error"]
    assert expired["last_error"].startswith("missed: due ") and "6h 40m late" in expired["last_error"]
    # The audit trail says so, and no delivery attempt was logged for what was held back.
    events = await db.fetch(
        "SELECT ref_id, event FROM reminderd.events WHERE event IN ('expired', 'missed_skipped') "
        "ORDER BY ref_id"
    )
    assert [(e["ref_id"], e["event"]) for e in events] == [
        ("booking-stale", "expired"), ("hourly-latest", "missed_skipped"), ("hourly-send", "expired"),
        ("hourly-skip", "expired"),
    ]
    assert await db.fetchval("SELECT count(*) FROM reminderd.deliveries") == 2


async def test_occurrences_older_than_the_lookback_are_never_sent_whatever_the_policy(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, backfill) "
        "VALUES ('acme', 'ancient', now() - interval '3 hours', 'latest')"
    )
    await drain(fast_settings(database_url, lookback_s=3600))
    row = await ended_in(db, "ancient", "expired")
    assert "REMINDERD_LOOKBACK" in row["last_error"]
    assert receiver.received == []


# Quiet hours --------------------------------------------------------------------------------------

async def test_quiet_hours_defer_marketing_and_let_transactional_through(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    now = await db_now(db)
    start, end = (now - timedelta(hours=1)).time(), (now + timedelta(hours=1)).replace(microsecond=0).time()
    await db.execute("UPDATE reminderd.tenants SET quiet_start = $1, quiet_end = $2", start, end)
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, category) VALUES "
        "('acme', 'promo', now(), 'marketing'), ('acme', 'otp', now(), 'transactional')"
    )
    await drain(fast_settings(database_url))
    await ended_in(db, "otp", "sent")
    promo = await ended_in(db, "promo", "pending", "deferred")

    assert [r.message["ref_id"] for r in receiver.received] == ["otp"]
    window_end = datetime.combine(now.date(), end, UTC)
    window_end += timedelta(days=1) if window_end < now else timedelta()
    assert (promo["status"], promo["fire_at"], promo["attempts"]) == ("pending", window_end, 0)
    assert promo["last_error"].startswith(f"deferred from {now:%H:%M} to {end:%H:%M} UTC (quiet hours ")
    assert promo["scheduled_for"] is not None  # the same occurrence waits: the same webhook-id later
    deferrals = "SELECT count(*) FROM reminderd.events WHERE ref_id = 'promo' AND event = 'deferred'"
    assert await db.fetchval(deferrals) == 1

    # Time moves on to the window's end (the row's fire_at): it goes out as its first attempt,
    # with the webhook-id of its original occurrence.
    await db.execute("UPDATE reminderd.tenants SET quiet_start = NULL, quiet_end = NULL")
    await db.execute("UPDATE reminderd.scheduled_messages SET fire_at = now() WHERE ref_id = 'promo'")
    await drain(fast_settings(database_url))
    sent = await ended_in(db, "promo", "sent")
    (delivered,) = receiver.by_ref()["promo"]
    assert delivered.message["attempt"] == 1 and sent["attempts"] == 1
    assert delivered.webhook_id == f"msg_{sent['id']}_{round(promo['scheduled_for'].timestamp() * 1000)}"


async def test_a_tenant_may_exempt_marketing_from_quiet_hours(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    await db.execute(
        "UPDATE reminderd.tenants SET quiet_start = '00:00', quiet_end = '23:59:59', "
        "quiet_exempt = '{transactional,marketing}'"
    )
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, category) VALUES "
        "('acme', 'promo', now(), 'marketing'), ('acme', 'survey', now(), 'survey')"
    )
    await drain(fast_settings(database_url))
    await ended_in(db, "promo", "sent")
    await ended_in(db, "survey", "pending", "deferred")


# Holidays -----------------------------------------------------------------------------------------

async def test_holidays_move_a_one_off_and_skip_a_recurring_occurrence(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    # The holiday is judged by the day the message is due (fire_at), not by when it is claimed,
    # so a claim just after midnight does not change the outcome.
    now = (await db_now(db)).replace(microsecond=0)
    await db.execute(
        "INSERT INTO reminderd.tenant_holidays (tenant_id, day, name) VALUES ('acme', $1, 'Founders Day')",
        now.date(),
    )
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, cron, holiday_rule) VALUES "
        "('acme', 'invoice', $1, NULL, NULL), ('acme', 'daily', $1, $2, NULL), "
        "('acme', 'urgent', $1, NULL, 'send')",
        now, f"{now.minute} {now.hour} * * *",
    )
    await drain(fast_settings(database_url))
    await ended_in(db, "urgent", "sent")
    invoice = await ended_in(db, "invoice", "pending", "holiday_skipped")
    daily = await ended_in(db, "daily", "pending", "holiday_skipped")

    tomorrow = now + timedelta(days=1)
    assert [r.message["ref_id"] for r in receiver.received] == ["urgent"]
    assert (invoice["status"], invoice["fire_at"], invoice["scheduled_for"]) == ("pending", tomorrow, now)
    assert invoice["last_error"] == (
        f"moved from {now:%Y-%m-%d %H:%M:%S} UTC (Founders Day) to {tomorrow:%Y-%m-%d %H:%M:%S} UTC"
    ).replace(":00 UTC", " UTC")
    assert (daily["status"], daily["fire_at"]) == ("pending", tomorrow.replace(second=0))
    assert "Founders Day" in daily["last_error"]

    # Tomorrow comes (moved by hand here): the one-off goes out once, with its original webhook-id.
    await db.execute("UPDATE reminderd.scheduled_messages SET fire_at = now() WHERE ref_id = 'invoice'")
    await db.execute("DELETE FROM reminderd.tenant_holidays")
    await drain(fast_settings(database_url))
    sent = await ended_in(db, "invoice", "sent")
    (delivered,) = receiver.by_ref()["invoice"]
    assert delivered.webhook_id == f"msg_{sent['id']}_{round(now.timestamp() * 1000)}"
    assert delivered.message["attempt"] == 1


async def test_an_unknown_calendar_dead_letters_the_row_with_its_reason(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    # A database whose holiday calendars were never loaded (migration 0035) accepts it; the daemon
    # then refuses it when it fires.
    await db.execute("DELETE FROM reminderd.holiday_calendars")
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, calendar) "
        "VALUES ('acme', 'nowhere', now(), 'XX')"
    )
    await drain(fast_settings(database_url))
    row = await ended_in(db, "nowhere", "dead")
    assert row["last_error"].startswith('unknown holiday calendar "XX"')
    assert receiver.received == []


async def test_a_typo_in_the_tenants_calendar_does_not_dead_letter_its_messages(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    await db.execute("DELETE FROM reminderd.holiday_calendars")  # never loaded: the database cannot tell
    await db.execute("UPDATE reminderd.tenants SET calendar = 'XX'")
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at) VALUES ('acme', 'a', now())"
    )
    await drain(fast_settings(database_url))
    await ended_in(db, "a", "sent")


UNKNOWN_CALENDAR = 'unknown holiday calendar "{}" of {}: {}'
NO_COUNTRY = "no public holidays known for country ZZ"


async def test_a_calendar_the_holidays_package_does_not_know_is_refused_when_written(
    db: asyncpg.Connection, tenant: str
) -> None:
    """Never a dead-on-arrival row: schedule(), a plain INSERT or UPDATE, a tenant's calendar and a
    broadcast's are refused a calendar reminderd migrate did not load (migration 0035)."""
    version, codes = calendars_version(), known_calendars()
    assert await db.fetchval("SELECT array_agg(code ORDER BY code) FROM reminderd.holiday_calendars") == codes
    assert await db.fetchval(
        "SELECT version FROM reminderd.reference_versions WHERE source = 'holidays'") == version
    assert {"IN", "GB", "US", "US-CA"} <= set(codes) and "ZZ" not in codes

    in_a_day = "now() + interval '1 day'"
    refused = [
        (f"SELECT reminderd.schedule('acme', 'zz', {in_a_day}, calendar => 'ZZ')",
         "calendar_known", UNKNOWN_CALENDAR.format("ZZ", "message acme / zz", NO_COUNTRY)),
        ("INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, calendar) "
         f"VALUES ('acme', 'us-zz', {in_a_day}, 'US-ZZ')", "calendar_known",
         UNKNOWN_CALENDAR.format("US-ZZ", "message acme / us-zz", "US has no subdivision ZZ")),
        ("UPDATE reminderd.scheduled_messages SET calendar = 'ZZ' WHERE ref_id = 'fine'",
         "calendar_known", UNKNOWN_CALENDAR.format("ZZ", "message acme / fine", NO_COUNTRY)),
        ("UPDATE reminderd.tenants SET calendar = 'ZZ' WHERE id = 'acme'",
         "tenant_calendar_known", UNKNOWN_CALENDAR.format("ZZ", 'tenant "acme"', NO_COUNTRY)),
        ("SELECT reminderd.schedule_cron('acme', 'daily', '0 9 * * *', 'UTC', calendar => 'GB-ZZZ')",
         "calendar_known",
         UNKNOWN_CALENDAR.format("GB-ZZZ", "message acme / daily", "GB has no subdivision ZZZ")),
    ]
    await db.execute(f"SELECT reminderd.schedule('acme', 'fine', {in_a_day}, calendar => 'US-CA')")
    for statement, constraint, message in refused:
        with pytest.raises(asyncpg.CheckViolationError) as caught:
            await db.execute(statement)
        assert (caught.value.constraint_name, caught.value.message) == (constraint, message)
        assert caught.value.sqlstate == "23514"
        assert caught.value.hint.startswith(
            f"The holidays package {version} (loaded by reminderd migrate) knows {len(codes)} calendars;"
            " see them: SELECT code FROM reminderd.holiday_calendars WHERE country = ")
        assert caught.value.detail is None
    fine = "SELECT calendar FROM reminderd.scheduled_messages WHERE ref_id = 'fine'"
    assert await db.fetchval(fine) == "US-CA"
    assert await db.fetchval("SELECT calendar FROM reminderd.tenants WHERE id = 'acme'") is None

    # Known codes pass; a row keeping a calendar a newer package dropped is not checked again until
    # the calendar itself changes.
    await db.execute("UPDATE reminderd.tenants SET calendar = 'IN' WHERE id = 'acme'")
    await db.execute("DELETE FROM reminderd.holiday_calendars WHERE code = 'US-CA'")
    await db.execute("UPDATE reminderd.scheduled_messages SET payload = '{\"n\": 1}' WHERE ref_id = 'fine'")
    await db.execute("UPDATE reminderd.scheduled_messages SET calendar = 'US-CA' WHERE ref_id = 'fine'")
    await db.execute("UPDATE reminderd.scheduled_messages SET calendar = NULL WHERE ref_id = 'fine'")
    with pytest.raises(asyncpg.CheckViolationError, match="US has no subdivision CA"):
        await db.execute("UPDATE reminderd.scheduled_messages SET calendar = 'US-CA' WHERE ref_id = 'fine'")
    with pytest.raises(asyncpg.CheckViolationError) as caught:  # a bad shape: its format check says so
        await db.execute("UPDATE reminderd.tenants SET calendar = 'india' WHERE id = 'acme'")
    assert caught.value.constraint_name == "tenant_calendar_format"


async def test_calendar_codes_are_checked_for_shape_on_insert(db: asyncpg.Connection, tenant: str) -> None:
    with pytest.raises(asyncpg.CheckViolationError) as caught:
        await db.execute(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, calendar) "
            "VALUES ('acme', 'x', now(), 'united states')"
        )
    assert caught.value.constraint_name == "calendar_format"


# End conditions, seconds and RRULE ---------------------------------------------------------------

async def test_max_runs_ends_a_six_field_cron_row_finished(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    await db.execute("SELECT reminderd.schedule_cron('acme', 'twice', '* * * * * *', max_runs => 2)")
    await drain(fast_settings(database_url), due_within_s=2)  # it fires every second
    row = await ended_in(db, "twice", "finished")

    got = receiver.by_ref()["twice"]
    assert len(got) == 2 and len({g.webhook_id for g in got}) == 2
    occurrences = [datetime.fromisoformat(g.message["scheduled_for"]) for g in got]
    assert occurrences[1] - occurrences[0] == timedelta(seconds=1)
    assert (row["runs"], row["last_error"]) == (2, "finished: ran 2 time(s) (max_runs)")


async def test_until_ends_a_row_finished(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    until = await db.fetchval("SELECT date_trunc('second', now()) + interval '2 seconds'")
    await db.execute("SELECT reminderd.schedule_cron('acme', 'briefly', '* * * * * *', until => $1)", until)
    await drain(fast_settings(database_url), due_within_s=2)  # it fires every second
    row = await ended_in(db, "briefly", "finished")
    got = receiver.by_ref()["briefly"]
    assert 1 <= len(got) <= 2
    assert all(datetime.fromisoformat(g.message["scheduled_for"]) <= until for g in got)
    assert row["last_error"].startswith("finished: no occurrence left before until")


async def test_rrule_rows_are_anchored_and_planned_in_their_timezone(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    message_id = await db.fetchval(
        "SELECT reminderd.schedule_rrule('acme', 'first-monday', "
        "'FREQ=MONTHLY;BYDAY=1MO;BYHOUR=9;BYMINUTE=0;BYSECOND=0', 'Asia/Kolkata', category => 'marketing')"
    )
    stored = await db.fetchrow("SELECT rrule, now() AS now FROM reminderd.scheduled_messages WHERE id = $1",
                               message_id)
    local_midnight = stored["now"].astimezone(ZoneInfo("Asia/Kolkata")).strftime("%Y%m%dT000000")
    assert stored["rrule"] == f"DTSTART:{local_midnight}\nFREQ=MONTHLY;BYDAY=1MO;BYHOUR=9;BYMINUTE=0;BYSECOND=0"

    await drain(fast_settings(database_url))
    row = await ended_in(db, "first-monday", "pending", "planned")
    expected = Timing(rrule=stored["rrule"], timezone="Asia/Kolkata").occurrence_after(row["updated_at"])
    assert row["fire_at"] == expected
    local = row["fire_at"].astimezone(ZoneInfo("Asia/Kolkata"))
    assert (local.weekday(), local.day <= 7, local.hour, local.minute) == (0, True, 9, 0)


async def test_an_invalid_rrule_dead_letters_with_its_reason(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    await db.execute("SELECT reminderd.schedule_rrule('acme', 'bad', 'FREQ=MONTHLY;BYDAY=XX')")
    await drain(fast_settings(database_url))
    row = await ended_in(db, "bad", "dead")
    assert row["last_error"].startswith("cannot schedule: invalid RRULE")


async def test_the_planners_dead_letters_and_ends_are_counted_as_callbacks_are(
    database_url: str, db: asyncpg.Connection, store: Store, tenant: str
) -> None:
    """A row the planner dead-letters (an RRULE the daemon cannot read) or finishes (a COUNT
    all past: SQL lists no occurrences) is in reminderd_callbacks_total, as docs/operations.md
    promises: the dead-letter alert sees it."""
    await db.execute("SELECT reminderd.schedule_rrule('acme', 'bad', 'FREQ=MONTHLY;BYDAY=XX')")
    await db.execute("SELECT reminderd.schedule_rrule('acme', 'over', "
                     "E'DTSTART:20200101T090000\\nRRULE:FREQ=DAILY;COUNT=3')")
    metrics = Metrics()
    assert await RecurringPlanner(fast_settings(database_url), store, metrics).run_once() == 2
    assert (await row_by_ref(db, "bad"))["status"] == "dead"
    assert (await row_by_ref(db, "over"))["status"] == "finished"
    counted = {outcome: metrics.registry.get_sample_value(
        "reminderd_callbacks_total", {"outcome": outcome, "tenant": "acme"})
        for outcome in ("dead_lettered", "finished")}
    assert counted == {"dead_lettered": 1.0, "finished": 1.0}


async def test_an_rrule_with_count_needs_its_own_dtstart(db: asyncpg.Connection, tenant: str) -> None:
    with pytest.raises(asyncpg.InvalidParameterValueError, match="has COUNT but no DTSTART"):
        await db.execute("SELECT reminderd.schedule_rrule('acme', 'thrice', 'FREQ=DAILY;COUNT=3')")
    await db.execute(
        "SELECT reminderd.schedule_rrule('acme', 'thrice', "
        "E'DTSTART:20261201T090000\\nRRULE:FREQ=DAILY;COUNT=3')"
    )


async def test_cron_and_rrule_are_alternatives(db: asyncpg.Connection, tenant: str) -> None:
    with pytest.raises(asyncpg.CheckViolationError) as caught:
        await db.execute(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, cron, rrule) "
            "VALUES ('acme', 'both', '0 9 * * *', 'FREQ=DAILY')"
        )
    assert caught.value.constraint_name == "one_recurrence"


# The first occurrence, in SQL or by the planner ------------------------------------------------------

async def plan_once(database_url: str, store: Store) -> int:
    """One step of the daemon's recurring planner (housekeeping), as the NOTIFY 'plan' triggers it."""
    return await RecurringPlanner(fast_settings(database_url), store, Metrics()).run_once()


@pytest.mark.parametrize(
    ("cron", "zone"),
    [
        ("0 9 * * *", "UTC"),
        ("30 2 * * *", "America/New_York"),
        ("0 9 * * MON-FRI", "Asia/Kolkata"),
        ("*/15 * * * *", "Australia/Lord_Howe"),
        ("0 0 9 * * MON-FRI", "Europe/London"),
        ("0 9 * * *", "CET"),
        ("@monthly", "Asia/Kathmandu"),
        ("0 9 L * *", "Europe/Dublin"),
        ("0 *,5 * * *", "America/Sao_Paulo"),
        ("0 9 * * 1#1", "Pacific/Chatham"),
    ],
)
async def test_schedule_cron_is_due_at_the_first_occurrence_the_daemon_would_plan(
    database_url: str, db: asyncpg.Connection, store: Store, tenant: str, cron: str, zone: str
) -> None:
    row = await db.fetchrow(
        "SELECT reminderd.schedule_cron('acme', 'digest', $1, $2) AS id, now() AS at", cron, zone
    )
    expected, _ = first_occurrence(Timing(cron=cron, timezone=zone), row["at"])
    assert expected is not None
    assert (await row_by_ref(db, "digest"))["fire_at"] == expected
    in_sql = await db.fetchval("SELECT reminderd.first_occurrence($1, NULL, $2, $3)", cron, zone, row["at"])
    assert in_sql == expected
    assert await plan_once(database_url, store) == 0  # nothing left for the planner


async def test_an_rrule_scheduled_in_sql_is_left_to_the_planner(
    database_url: str, db: asyncpg.Connection, store: Store, tenant: str
) -> None:
    await db.execute("SELECT reminderd.schedule_rrule('acme', 'payday', "
                     "'FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1;BYHOUR=17;BYMINUTE=0', 'Europe/London')")
    unplanned = await row_by_ref(db, "payday")
    assert unplanned["fire_at"] is None
    assert await plan_once(database_url, store) == 1
    planned = await ended_in(db, "payday", "pending", "planned")
    timing = Timing(rrule=unplanned["rrule"], timezone="Europe/London")
    assert planned["fire_at"] == first_occurrence(timing, planned["updated_at"])[0]


@pytest.mark.parametrize("whose", ["row", "tenant"])
async def test_with_a_public_calendar_the_planner_times_the_first_occurrence(
    database_url: str, db: asyncpg.Connection, store: Store, tenant: str, whose: str
) -> None:
    """SQL cannot know public holidays (the holidays package's): the planner skips them."""
    if whose == "tenant":
        await db.execute("UPDATE reminderd.tenants SET calendar = 'GB' WHERE id = 'acme'")
    await db.execute(
        "SELECT reminderd.schedule_cron('acme', 'digest', '0 9 * * *', 'Europe/London', calendar => $1)",
        "GB" if whose == "row" else None,
    )
    assert (await row_by_ref(db, "digest"))["fire_at"] is None
    assert await plan_once(database_url, store) == 1
    planned = await ended_in(db, "digest", "pending", "planned")
    timing = Timing(cron="0 9 * * *", timezone="Europe/London", holidays=Holidays.of("GB"))
    assert planned["fire_at"] == first_occurrence(timing, planned["updated_at"])[0]


async def test_a_public_calendar_under_holiday_rule_send_does_not_stop_sql(
    db: asyncpg.Connection, tenant: str
) -> None:
    row = await db.fetchrow("SELECT reminderd.schedule_cron('acme', 'digest', '0 9 * * *', 'Europe/London', "
                            "calendar => 'GB', holiday_rule => 'send') AS id, now() AS at")
    assert (await row_by_ref(db, "digest"))["fire_at"] == next_fire("0 9 * * *", "Europe/London", row["at"])


async def test_a_tenant_day_off_on_the_first_occurrence_is_skipped_by_the_planner(
    database_url: str, db: asyncpg.Connection, store: Store, tenant: str
) -> None:
    # 01:30 on 1 January in Kolkata is 20:00 UTC on 31 December: the day off is the local day.
    cron, zone = "30 1 1 1 *", "Asia/Kolkata"
    first = next_fire(cron, zone, await db_now(db))
    new_year = first.astimezone(ZoneInfo(zone)).date()
    schedule = f"SELECT reminderd.schedule_cron('acme', 'new-year', '{cron}', '{zone}')"

    await db.execute("INSERT INTO reminderd.tenant_holidays VALUES ('acme', $1, 'Company day')",
                     new_year + timedelta(days=1))
    await db.execute(schedule)
    assert (await row_by_ref(db, "new-year"))["fire_at"] == first  # that day off is not this one's

    await db.execute("INSERT INTO reminderd.tenant_holidays VALUES ('acme', $1, 'Company day')", new_year)
    await db.execute(schedule)
    assert (await row_by_ref(db, "new-year"))["fire_at"] is None
    assert await plan_once(database_url, store) == 1
    planned = await ended_in(db, "new-year", "pending", "planned")
    assert planned["fire_at"] == next_fire(cron, zone, first)  # a year on
    assert "holidays skipped: " in planned["last_error"]


# Local wall times in SQL ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("local", "zone"),
    [
        ("2026-12-24 09:00", "Asia/Kolkata"),
        ("2026-12-24 09:00", "Asia/Kathmandu"),
        ("2026-03-08 02:30", "America/New_York"),  # skipped: the jump, 03:00 EDT
        ("2026-11-01 01:30", "America/New_York"),  # repeated: the first, EDT
        ("2026-03-29 01:30", "Europe/London"),  # skipped
        ("2026-10-25 01:30", "Europe/London"),  # repeated
        ("2026-04-05 02:30", "Australia/Sydney"),  # repeated (southern autumn)
        ("2026-10-04 02:30", "Australia/Sydney"),  # skipped (southern spring)
        ("2026-10-04 02:10", "Australia/Lord_Howe"),  # a 30-minute jump
        # Zones PostgreSQL's AT TIME ZONE reads as fixed abbreviations, without their summer time.
        ("2026-07-01 12:00", "CET"),
        ("2026-07-01 12:00", "EET"),
        ("2026-07-01 12:00", "MET"),
        ("2026-07-01 12:00", "WET"),
        ("2026-01-15 12:00", "CET"),
        ("2026-10-25 02:30", "CET"),  # repeated
    ],
)
async def test_sql_local_instant_agrees_with_the_daemon(db: asyncpg.Connection, local: str, zone: str) -> None:
    wall = datetime.fromisoformat(local)
    in_sql = await db.fetchval("SELECT reminderd.local_instant($1, $2)", wall, zone)
    assert in_sql == to_instant(wall, ZoneInfo(zone))


@pytest.mark.parametrize(
    ("instant", "zone"),
    [
        ("2026-07-01T22:30:00Z", "CET"),  # 00:30 on 2 July: CET's summer time (the abbreviation says 23:30)
        ("2026-07-01T22:30:00Z", "WET"),
        ("2026-12-31T20:00:00Z", "Asia/Kolkata"),  # already 1 January there
        ("2026-11-01T05:30:00Z", "America/New_York"),  # the first 01:30
        ("2026-11-01T06:30:00Z", "America/New_York"),  # the second
    ],
)
async def test_sql_wall_time_agrees_with_the_daemon(db: asyncpg.Connection, instant: str, zone: str) -> None:
    at = datetime.fromisoformat(instant)
    await db.execute("SET TimeZone = 'Asia/Tokyo'")
    assert await db.fetchval("SELECT reminderd.wall_time($1, $2)", at, zone) == wall(at, ZoneInfo(zone))
    assert await db.fetchval("SHOW TimeZone") == "Asia/Tokyo"  # the session's, as it was


async def test_schedule_at_a_local_wall_time_stores_the_instant_and_the_timezone(
    db: asyncpg.Connection, tenant: str
) -> None:
    message_id = await db.fetchval(
        "SELECT reminderd.schedule('acme', 'xmas', "
        "local_time => now()::date + time '09:00' + interval '1 day', timezone => 'Asia/Kolkata')"
    )
    row = await db.fetchrow(
        "SELECT fire_at, timezone FROM reminderd.scheduled_messages WHERE id = $1", message_id
    )
    local = row["fire_at"].astimezone(ZoneInfo("Asia/Kolkata"))
    assert (local.hour, local.minute, row["timezone"]) == (9, 0, "Asia/Kolkata")
    with pytest.raises(asyncpg.InvalidParameterValueError, match="exactly one of fire_at"):
        await db.execute("SELECT reminderd.schedule('acme', 'x', now(), local_time => '2026-12-24 09:00')")


# The CLI ----------------------------------------------------------------------------------------------

def test_cli_schedules_with_the_new_options_and_sets_tenant_rules(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    said: list[str] = []

    def cli(*args: str) -> str:
        assert main(["--database-url", database_url, *args]) == 0, capsys.readouterr().err
        out, err = capsys.readouterr()
        said.append(err.strip())
        return out.strip()

    cli("tenant", "add", "acme", "--callback-url", "https://hooks.example/cb")
    # Dates relative to today: a fixed one would expire (a one-off must be ahead, within the horizon).
    xmas_day, next_year = (datetime.now(UTC) + timedelta(days=30)).date(), datetime.now(UTC).year + 1
    assert cli("tenant", "set", "acme", "--calendar", "IN", "--quiet", "21:00-09:00",
               "--quiet-exempt", "transactional,otp") == (
        "tenant acme: calendar IN, holidays skip, quiet hours 21:00-09:00 (exempt: transactional, otp)"
    )
    assert cli("tenant", "holiday", "add", "acme", "2026-12-31", "Company day") == (
        "tenant acme: 2026-12-31 is a holiday (Company day)"
    )
    digest = int(cli("schedule", "acme", "digest", "--every", "weekdays at 9am", "--tz", "Asia/Kolkata",
                     "--max-runs", "5", "--until", f"{next_year}-06-01T00:00", "--category", "marketing",
                     "--backfill", "latest", "--max-lateness", "10m"))
    xmas = int(cli("schedule", "acme", "xmas", "--at", f"{xmas_day} 09:00 in Asia/Kolkata",
                   "--holiday-rule", "send"))
    monthly = int(cli("schedule", "acme", "monthly", "--rrule", "FREQ=MONTHLY;BYDAY=1MO;BYHOUR=9"))
    # What it understood, and (new in 0005) the first occurrence it stored as fire_at.
    first = dict(asyncio.run(_fetch(database_url, "SELECT ref_id, fire_at FROM reminderd.scheduled_messages"
                                                  " WHERE ref_id <> 'xmas'")))
    kolkata, utc = first["digest"].astimezone(ZoneInfo("Asia/Kolkata")), first["monthly"].astimezone(UTC)
    assert said[-3:] == [
        '"weekdays at 9am" = cron "0 9 * * 1-5": At 09:00, Monday through Friday (Asia/Kolkata); '
        f"first {kolkata:%a %Y-%m-%d} 09:00:00 IST ({first['digest'].astimezone(UTC):%Y-%m-%dT%H:%M:%SZ})",
        "",
        f"monthly on the first Monday at 09:00 (UTC); first {utc:%a %Y-%m-%d} 09:00:00 UTC "
        f"({utc:%Y-%m-%dT%H:%M:%SZ})",
    ]
    assert kolkata.weekday() < 5 and utc.weekday() == 0 and utc.day <= 7
    assert cli("tenant", "set", "acme", "--calendar", "none", "--quiet", "none") == (
        "tenant acme: calendar none, holidays skip, quiet hours none (exempt: transactional, otp)"
    )

    async def rows() -> dict[int, asyncpg.Record]:
        connection = await asyncpg.connect(database_url)
        try:
            found = await connection.fetch("SELECT * FROM reminderd.scheduled_messages ORDER BY id")
            holidays = await connection.fetch("SELECT day, name FROM reminderd.tenant_holidays")
        finally:
            await connection.close()
        assert [(h["day"].isoformat(), h["name"]) for h in holidays] == [("2026-12-31", "Company day")]
        return {row["id"]: row for row in found}

    stored = asyncio.run(rows())
    assert (stored[digest]["cron"], stored[digest]["timezone"], stored[digest]["max_runs"]) == (
        "0 9 * * 1-5", "Asia/Kolkata", 5)
    assert stored[digest]["until"] == datetime(next_year, 5, 31, 18, 30, tzinfo=UTC)  # midnight in Kolkata
    assert (stored[digest]["category"], stored[digest]["backfill"], stored[digest]["max_lateness"]) == (
        "marketing", "latest", timedelta(minutes=10))
    assert (stored[xmas]["fire_at"], stored[xmas]["timezone"], stored[xmas]["holiday_rule"]) == (
        datetime(xmas_day.year, xmas_day.month, xmas_day.day, 3, 30, tzinfo=UTC), "Asia/Kolkata", "send")
    assert stored[monthly]["rrule"].endswith("\nFREQ=MONTHLY;BYDAY=1MO;BYHOUR=9")


async def _fetch(database_url: str, query: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(database_url)
    try:
        return list(await connection.fetch(query))
    finally:
        await connection.close()
