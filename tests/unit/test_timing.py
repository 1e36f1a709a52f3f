"""Unit tests for reminderd.schedule.timing: backfill after an outage, holidays, quiet hours and end
conditions, all by moving an injected `now`, never by waiting."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import utc

from reminderd.schedule.calendars import Holidays
from reminderd.schedule.quiet import QuietHours
from reminderd.schedule.timing import Timing, first_occurrence, following, hold
from reminderd.schedule.wallclock import InvalidSchedule

NOW = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)  # a Wednesday
OUTAGE = timedelta(hours=6)


def every_15_minutes(**changes: Any) -> Timing:
    return Timing(cron="*/15 * * * *", **changes)


# Backfill after the daemon was stopped for 6 hours -------------------------------------------------

def test_send_policy_expires_the_stale_occurrences_and_resumes_within_max_lateness() -> None:
    missed = NOW - OUTAGE  # the occurrence the row was left at when the daemon stopped
    held = hold(every_15_minutes(), occurrence=missed, due_at=missed, attempt=1, now=NOW)

    assert held is not None
    assert (held.event, held.status) == ("expired", "pending")
    # 06:00 … 11:30 is 23 occurrences older than the 30 minutes allowed; 11:45 is still on time.
    assert held.fire_at == utc(2026, 6, 10, 11, 45)
    assert held.occurrence is None and not held.keeps_attempt_count
    assert "missed 23 occurrence(s) from 2026-06-10 06:00 UTC, 6h late" in held.reason
    assert "more than the 30m allowed (backfill=send)" in held.reason


def test_send_policy_sends_an_occurrence_late_by_at_most_max_lateness() -> None:
    due = NOW - timedelta(minutes=29)
    assert hold(every_15_minutes(), occurrence=due, due_at=due, attempt=1, now=NOW) is None
    assert hold(Timing(), occurrence=due, due_at=due, attempt=1, now=NOW) is None


def test_latest_policy_sends_only_the_most_recent_missed_occurrence() -> None:
    missed = NOW - OUTAGE
    held = hold(every_15_minutes(backfill="latest"), occurrence=missed, due_at=missed, attempt=1, now=NOW)

    assert held is not None
    assert (held.event, held.status, held.fire_at, held.occurrence) == ("missed_skipped", "pending", NOW, NOW)
    assert "24 missed occurrence(s) from 2026-06-10 06:00 UTC skipped" in held.reason
    # Claimed again at its new occurrence, it is sent.
    assert hold(every_15_minutes(backfill="latest"), occurrence=NOW, due_at=NOW, attempt=1, now=NOW) is None


def test_latest_policy_sends_a_late_one_off() -> None:
    due = NOW - OUTAGE
    assert hold(Timing(backfill="latest"), occurrence=due, due_at=due, attempt=1, now=NOW) is None


def test_skip_policy_sends_nothing_late() -> None:
    due = NOW - timedelta(minutes=5)
    one_off = hold(Timing(backfill="skip"), occurrence=due, due_at=due, attempt=1, now=NOW)
    quarter = NOW - timedelta(minutes=15)
    recurring = hold(every_15_minutes(backfill="skip"), occurrence=quarter, due_at=quarter, attempt=1, now=NOW)

    assert one_off is not None and (one_off.event, one_off.status) == ("expired", "expired")
    assert one_off.reason == (
        "missed: due 2026-06-10T11:55:00Z, 5m late, more than the 1m allowed (backfill=skip)"
    )
    assert recurring is not None and (recurring.status, recurring.fire_at) == ("pending", NOW)  # on time
    # On time (within a minute) it is sent.
    assert hold(Timing(backfill="skip"), occurrence=due, due_at=NOW - timedelta(seconds=30), attempt=1,
                now=NOW) is None


def test_lateness_counts_from_the_retry_time_not_the_occurrence() -> None:
    occurrence = NOW - timedelta(hours=2)  # retried for two hours
    assert hold(Timing(), occurrence=occurrence, due_at=NOW - timedelta(seconds=5), attempt=4, now=NOW) is None


def test_one_off_late_beyond_max_lateness_expires_with_the_reason() -> None:
    due = NOW - OUTAGE
    held = hold(Timing(max_lateness_s=600), occurrence=due, due_at=due, attempt=1, now=NOW)
    assert held is not None and (held.event, held.status) == ("expired", "expired")
    assert held.reason == "missed: due 2026-06-10T06:00:00Z, 6h late, more than the 10m allowed (backfill=send)"


def test_dense_schedules_count_missed_occurrences_up_to_a_limit() -> None:
    missed = NOW - OUTAGE
    held = hold(Timing(cron="* * * * * *"), occurrence=missed, due_at=missed, attempt=1, now=NOW)
    assert held is not None and "missed more than 100 occurrence(s)" in held.reason
    latest = hold(Timing(cron="*/10 * * * * *", backfill="latest"), occurrence=missed, due_at=missed,
                  attempt=1, now=NOW + timedelta(seconds=3))
    assert latest is not None and latest.occurrence == NOW


# Holidays ----------------------------------------------------------------------------------------

CHRISTMAS = Holidays.of(None, [(date(2026, 12, 25), "Christmas"), (date(2026, 12, 26), "Boxing Day")])


def test_recurring_occurrence_on_a_holiday_moves_to_the_next_non_holiday_occurrence() -> None:
    timing = Timing(cron="0 9 * * *", timezone="Europe/London", holidays=CHRISTMAS)
    occurrence = utc(2026, 12, 25, 9)
    held = hold(timing, occurrence=occurrence, due_at=occurrence, attempt=1, now=occurrence)

    assert held is not None
    assert (held.event, held.status, held.fire_at) == ("holiday_skipped", "pending", utc(2026, 12, 27, 9))
    assert held.reason == (
        "skipped 2026-12-25 09:00 Europe/London: Christmas; next 2026-12-27 09:00 Europe/London "
        "(holidays skipped: 2026-12-26 09:00 Europe/London: Boxing Day)"
    )


def test_one_off_on_a_holiday_moves_to_the_same_wall_time_on_the_next_working_day() -> None:
    # 09:00 in Kolkata is 03:30 UTC; the holiday is the recipient's local day.
    timing = Timing(timezone="Asia/Kolkata", holidays=CHRISTMAS)
    due = utc(2026, 12, 25, 3, 30)
    held = hold(timing, occurrence=due, due_at=due, attempt=1, now=due)

    assert held is not None
    assert (held.event, held.fire_at, held.occurrence) == ("holiday_skipped", utc(2026, 12, 27, 3, 30), due)
    assert held.keeps_attempt_count  # the same message waits: same webhook-id
    assert held.reason == (
        "moved from 2026-12-25 09:00 Asia/Kolkata (Christmas, 2026-12-26: Boxing Day) to 2026-12-27 09:00 "
        "Asia/Kolkata"
    )


def test_the_holiday_is_the_recipients_local_day() -> None:
    # 23:30 UTC on 24 December is already 25 December in Sydney, still the 24th in New York.
    due = utc(2026, 12, 24, 23, 30)
    assert hold(Timing(timezone="Australia/Sydney", holidays=CHRISTMAS), occurrence=due, due_at=due, attempt=1,
                now=due) is not None
    assert hold(Timing(timezone="America/New_York", holidays=CHRISTMAS), occurrence=due, due_at=due, attempt=1,
                now=due) is None


def test_public_holiday_calendars_come_from_the_holidays_package() -> None:
    timing = Timing(cron="0 9 * * *", timezone="Asia/Kolkata", holidays=Holidays.of("IN"))
    republic_day = utc(2026, 1, 26, 3, 30)
    held = hold(timing, occurrence=republic_day, due_at=republic_day, attempt=1, now=republic_day)
    assert held is not None and held.fire_at == utc(2026, 1, 27, 3, 30)
    assert "Republic Day (IN)" in held.reason


def test_retries_are_not_moved_by_holidays() -> None:
    due = utc(2026, 12, 25, 9)
    assert hold(Timing(holidays=CHRISTMAS), occurrence=due, due_at=due, attempt=2, now=due) is None


def test_planning_skips_holidays() -> None:
    timing = Timing(cron="0 9 * * *", timezone="Europe/London", holidays=CHRISTMAS)
    assert first_occurrence(timing, utc(2026, 12, 24, 10)) == (
        utc(2026, 12, 27, 9),
        "holidays skipped: 2026-12-25 09:00 Europe/London: Christmas; "
        "2026-12-26 09:00 Europe/London: Boxing Day",
    )


# Quiet hours -------------------------------------------------------------------------------------

def test_a_send_inside_quiet_hours_is_deferred_to_the_window_end() -> None:
    quiet = QuietHours(time(21), time(9))
    due = utc(2026, 6, 10, 21, 30)  # 22:30 in London (BST)
    held = hold(Timing(timezone="Europe/London", quiet=quiet), occurrence=due, due_at=due, attempt=1, now=due)

    assert held is not None
    assert (held.event, held.status, held.fire_at) == ("deferred", "pending", utc(2026, 6, 11, 8))
    assert held.occurrence == due
    assert held.keeps_attempt_count
    assert held.reason == "deferred from 22:30 to 09:00 Europe/London (quiet hours 21:00-09:00)"
    # At the window's end it goes out, and is not "late".
    resumed = utc(2026, 6, 11, 8)
    assert hold(Timing(timezone="Europe/London", quiet=quiet), occurrence=due, due_at=resumed, attempt=1,
                now=resumed) is None


def test_quiet_hours_are_checked_when_sending_not_at_the_occurrence() -> None:
    quiet = QuietHours(time(21), time(9))
    due = utc(2026, 6, 10, 19, 59)  # 20:59 in London: fine when due, but the send happens at 21:05
    held = hold(Timing(timezone="Europe/London", quiet=quiet), occurrence=due, due_at=due, attempt=1,
                now=utc(2026, 6, 10, 20, 5))
    assert held is not None and held.event == "deferred"


# End conditions ----------------------------------------------------------------------------------

def test_max_runs_finishes_the_row_after_its_last_run() -> None:
    timing = Timing(cron="0 9 * * *", max_runs=3, runs=1)
    assert following(timing, utc(2026, 6, 10, 9)) == (utc(2026, 6, 11, 9), None)
    last = Timing(cron="0 9 * * *", max_runs=3, runs=2)
    assert following(last, utc(2026, 6, 11, 9)) == (None, "finished: ran 3 time(s) (max_runs)")
    assert first_occurrence(Timing(cron="0 9 * * *", max_runs=3, runs=3), NOW)[0] is None


def test_until_finishes_the_row() -> None:
    timing = Timing(cron="0 9 * * *", until=utc(2026, 6, 11, 12))
    assert following(timing, utc(2026, 6, 10, 9)) == (utc(2026, 6, 11, 9), None)
    assert following(timing, utc(2026, 6, 11, 9)) == (
        None, "finished: no occurrence left before until 2026-06-11T12:00:00Z"
    )
    held = hold(timing, occurrence=utc(2026, 6, 12, 9), due_at=utc(2026, 6, 12, 9), attempt=1, now=NOW)
    assert held is not None and (held.event, held.status) == ("finished", "finished")


def test_an_rrule_with_count_finishes() -> None:
    timing = Timing(rrule="DTSTART:20260601T090000\nRRULE:FREQ=DAILY;COUNT=2")
    assert following(timing, utc(2026, 6, 1, 9)) == (utc(2026, 6, 2, 9), None)
    assert following(timing, utc(2026, 6, 2, 9)) == (None, "finished: the RRULE has no more occurrences")


def test_rrule_rows_follow_the_rows_timezone_across_dst() -> None:
    # First Sunday of the month at 01:30 in New York; 1 November 2026 has 01:30 twice: the first counts.
    timing = Timing(rrule="DTSTART:20261001T000000\nRRULE:FREQ=MONTHLY;BYDAY=1SU;BYHOUR=1;BYMINUTE=30",
                    timezone="America/New_York")
    assert timing.occurrence_after(utc(2026, 10, 10)) == utc(2026, 11, 1, 5, 30)  # 01:30 EDT


# Checking a row ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("timing", "message"),
    [
        (Timing(cron="0 9 * * *", timezone="Mars/Olympus_Mons"), 'unknown timezone "Mars/Olympus_Mons"'),
        (Timing(cron="61 * * * *"), 'invalid cron "61 * * * *"'),
        (Timing(rrule="DTSTART:20260101T000000\nRRULE:FREQ=FORTNIGHTLY"), "FORTNIGHTLY"),
        (Timing(holidays=Holidays.of("XX")), 'unknown holiday calendar "XX"'),
        (Timing(backfill="eventually"), 'unknown backfill policy "eventually"'),
    ],
)
def test_check_names_what_is_wrong(timing: Timing, message: str) -> None:
    with pytest.raises(InvalidSchedule, match=re.escape(message)):
        timing.check()


def test_a_one_off_with_nothing_to_read_in_its_timezone_does_not_need_a_valid_one() -> None:
    Timing(timezone="Not/A_Zone").check()


def test_from_row_reads_effective_values_and_never_raises_on_bad_ones() -> None:
    row = {
        "timezone": "Nowhere/Land", "cron": "bad", "rrule": None, "until": None, "max_runs": 2, "runs": 1,
        "calendar": "XX", "calendar_from_tenant": False, "holiday_rule": "skip",
        "holiday_days": [date(2026, 12, 31)],
        "holiday_names": ["Company day"], "quiet_start": time(21), "quiet_end": time(9),
        "backfill": "latest", "max_lateness_s": 60.0,
    }
    timing = Timing.from_row(row)
    assert timing.holidays.custom == ((date(2026, 12, 31), "Company day"),)
    assert timing.quiet == QuietHours(time(21), time(9))
    assert (timing.backfill, timing.max_lateness_s, timing.max_runs, timing.runs) == ("latest", 60.0, 2, 1)
    sent_anyway = Timing.from_row({**row, "holiday_rule": "send", "quiet_start": None, "quiet_end": None})
    assert not sent_anyway.holidays and sent_anyway.quiet is None


# Properties over every zone the system knows, 2024-2030 ----------------------------------------

ALL_ZONES = sorted(z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/")))
DAILY_AT_0230 = {
    "cron": Timing(cron="30 2 * * *"),
    "cron with seconds": Timing(cron="0 30 2 * * *"),
    "rrule": Timing(rrule="DTSTART:20240101T000000\nRRULE:FREQ=DAILY;BYHOUR=2;BYMINUTE=30;BYSECOND=0"),
}


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(ALL_ZONES),
    st.sampled_from(sorted(DAILY_AT_0230)),
    st.datetimes(datetime(2024, 1, 2), datetime(2030, 6, 1), timezones=st.just(UTC)),
)
def test_a_daily_wall_time_fires_once_a_local_day_in_order_in_every_zone(
    zone: str, kind: str, start: datetime
) -> None:
    timing = replace(DAILY_AT_0230[kind], timezone=zone)
    tz = ZoneInfo(zone)
    fires, after = [], start
    for _ in range(40):
        fire = timing.occurrence_after(after)
        assert fire is not None
        fires.append(fire)
        after = fire
    assert fires[0] > start
    assert all(a < b for a, b in pairwise(fires))  # never earlier than its predecessor, never twice
    days = [f.astimezone(tz).date() for f in fires]
    assert days == [days[0] + timedelta(i) for i in range(40)]  # one per local day: none lost
    for fire in fires:  # at 02:30, or at the jump when 02:30 did not exist that day
        local = fire.astimezone(tz)
        if local.time() != time(2, 30):
            before = (fire - timedelta(seconds=1)).astimezone(tz)
            assert before.time() < time(2, 30) < local.time() or before.date() < local.date()


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(ALL_ZONES),
    st.datetimes(datetime(2024, 1, 1), datetime(2030, 12, 31), timezones=st.just(UTC)),
)
def test_quiet_hours_always_resume_outside_the_window_within_a_day(zone: str, instant: datetime) -> None:
    quiet = QuietHours(time(21), time(9))
    resume, why = quiet.defer(instant, zone)
    assert resume >= instant and resume - instant <= timedelta(hours=13)
    assert not quiet.contains(resume.astimezone(ZoneInfo(zone)))
    assert (why is None) == (resume == instant)


def test_recurring_occurrences_in_quiet_hours_go_out_once_at_the_end() -> None:
    # Hourly marketing, quiet 21:00-09:00 UTC: the 21:00 occurrence waits until 09:00 and carries
    # the 09:00 occurrence with it, so 09:00 sees one message and the next is 10:00 (no burst).
    timing = Timing(cron="0 * * * *", quiet=QuietHours(time(21), time(9)))
    nine_pm = utc(2026, 6, 10, 21)
    held = hold(timing, occurrence=nine_pm, due_at=nine_pm, attempt=1, now=nine_pm)
    assert held is not None and (held.fire_at, held.occurrence) == (utc(2026, 6, 11, 9), utc(2026, 6, 11, 9))
    assert held.reason == (
        "deferred from 21:00 to 09:00 UTC (quiet hours 21:00-09:00); "
        "its 13 occurrences up to then are sent once, as 2026-06-11 09:00 UTC"
    )
    assert held.occurrence is not None
    assert following(timing, held.occurrence) == (utc(2026, 6, 11, 10), None)
    # A retry keeps its occurrence (and its webhook-id).
    retry = hold(timing, occurrence=nine_pm, due_at=nine_pm, attempt=2, now=nine_pm)
    assert retry is not None and retry.occurrence == nine_pm


def test_a_recurring_occurrence_is_judged_by_its_own_day_not_when_it_is_claimed() -> None:
    timing = Timing(cron="0 23 * * *", holidays=CHRISTMAS)
    eve = utc(2026, 12, 24, 23)  # a deferral or hand-back may make it due on the 25th: still sent
    claimed = utc(2026, 12, 25, 0, 5)
    assert hold(timing, occurrence=eve, due_at=claimed, attempt=1, now=claimed) is None


def test_why_a_row_finished_names_until_or_the_rrule() -> None:
    counted = Timing(rrule="DTSTART:20260601T090000\nRRULE:FREQ=DAILY;COUNT=2", until=utc(2030, 1, 1))
    assert following(counted, utc(2026, 6, 2, 9)) == (None, "finished: the RRULE has no more occurrences")


def test_an_unknown_tenant_calendar_is_ignored_not_fatal_while_a_rows_own_is_refused() -> None:
    row: dict[str, Any] = {
        "timezone": "UTC", "cron": None, "rrule": None, "until": None, "max_runs": None, "runs": 0,
        "calendar": "XX", "calendar_from_tenant": True, "holiday_rule": "skip", "holiday_days": [],
        "holiday_names": [], "quiet_start": None, "quiet_end": None, "backfill": "send",
        "max_lateness_s": 1800.0,
    }
    tenants = Timing.from_row(row)
    assert (tenants.ignored_calendar, tenants.holidays.calendar) == ("XX", None)
    tenants.check()
    own = Timing.from_row({**row, "calendar_from_tenant": False})
    with pytest.raises(InvalidSchedule, match='unknown holiday calendar "XX"'):
        own.check()


def test_a_dense_schedule_skips_a_holiday_a_day_at_a_time() -> None:
    timing = Timing(cron="*/2 * * * *", timezone="Europe/London", holidays=Holidays.of("GB"))
    following_one, note = following(timing, utc(2025, 12, 24, 23, 58))
    assert following_one == utc(2025, 12, 27)
    assert note == (
        "holidays skipped: 2025-12-25 00:00 Europe/London: Christmas Day (GB); "
        "2025-12-26 00:00 Europe/London: Boxing Day (GB)"
    )


def test_the_latest_occurrence_of_a_dense_schedule_is_found_by_bisection() -> None:
    weekdays = Timing(cron="* 9-17 * * MON-FRI", timezone="Europe/London")
    assert weekdays.latest_at_or_before(utc(2026, 6, 15, 7)) == utc(2026, 6, 12, 16, 59)  # Fri 17:59 BST
    mondays = Timing(cron="* * * * * MON", backfill="latest")
    held = hold(mondays, occurrence=utc(2026, 6, 15, 10), due_at=utc(2026, 6, 15, 10), attempt=1,
                now=utc(2026, 6, 16, 2))
    assert held is not None and held.occurrence == utc(2026, 6, 15, 23, 59, 59)


def test_quiet_hours_never_carry_an_occurrence_onto_a_holiday() -> None:
    timing = Timing(cron="0 * * * *", quiet=QuietHours(time(21), time(9)),
                    holidays=Holidays.of(None, [(date(2026, 12, 25), "Christmas")]))
    ten_pm = utc(2026, 12, 24, 22)
    held = hold(timing, occurrence=ten_pm, due_at=ten_pm, attempt=1, now=ten_pm)
    assert held is not None and held.occurrence == utc(2026, 12, 24, 23)  # the last one before the holiday
    nine_am = utc(2026, 12, 25, 9)
    assert hold(timing, occurrence=utc(2026, 12, 24, 23), due_at=nine_am, attempt=1, now=nine_am) is None
