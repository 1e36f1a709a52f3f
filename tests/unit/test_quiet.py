"""Unit tests for reminderd.schedule.quiet: quiet-hour windows and deferral across midnight and DST."""

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import utc

from reminderd.schedule.cron import InvalidSchedule
from reminderd.schedule.quiet import QuietHours

NIGHT = QuietHours(time(21), time(9))
LUNCH = QuietHours(time(13), time(14))


def at(clock: str) -> datetime:
    return datetime.combine(datetime(2026, 1, 1), time.fromisoformat(clock))


# Parsing


@pytest.mark.parametrize(
    ("text", "window"),
    [
        ("21:00-09:00", NIGHT),
        (" 21:00 - 09:00 ", NIGHT),
        ("13:00-14:00", LUNCH),
        ("9:30-17:45", QuietHours(time(9, 30), time(17, 45))),
        ("23:59-00:00", QuietHours(time(23, 59), time(0))),
    ],
)
def test_parse(text: str, window: QuietHours) -> None:
    assert QuietHours.parse(text) == window


def test_str_is_what_parse_reads() -> None:
    assert str(NIGHT) == "21:00-09:00"
    assert QuietHours.parse(str(LUNCH)) == LUNCH


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "expected HH:MM-HH:MM, like 21:00-09:00"),
        ("21:00", "expected HH:MM-HH:MM"),
        ("9pm-9am", "expected HH:MM-HH:MM"),
        ("21:00-09:00-10:00", "expected HH:MM-HH:MM"),
        ("25:00-09:00", "hour must be in 0..23"),
        ("24:00-09:00", "hour must be in 0..23"),
        ("21:60-09:00", "minute must be in 0..59"),
        ("21:00-21:00", "start and end must differ"),
    ],
)
def test_parse_errors_name_the_text(text: str, why: str) -> None:
    with pytest.raises(ValueError) as info:
        QuietHours.parse(text)
    assert str(info.value).startswith(f'invalid quiet hours "{text}": ')
    assert why in str(info.value)


def test_empty_window_is_rejected_however_built() -> None:
    with pytest.raises(ValueError, match="start and end must differ"):
        QuietHours(time(22), time(22))


# contains: start inclusive, end exclusive


@pytest.mark.parametrize(
    ("clock", "quiet"),
    [
        ("20:59:59", False),
        ("21:00", True),
        ("23:59", True),
        ("00:00", True),
        ("08:59:59.999999", True),
        ("09:00", False),
        ("12:00", False),
    ],
)
def test_window_wrapping_midnight(clock: str, quiet: bool) -> None:
    assert NIGHT.contains(at(clock)) is quiet


@pytest.mark.parametrize(
    ("clock", "quiet"),
    [
        ("00:00", False),
        ("12:59", False),
        ("13:00", True),
        ("13:59:59", True),
        ("14:00", False),
        ("23:00", False),
    ],
)
def test_window_within_a_day(clock: str, quiet: bool) -> None:
    assert LUNCH.contains(at(clock)) is quiet


def test_contains_reads_the_wall_clock_of_an_aware_datetime() -> None:
    assert NIGHT.contains(datetime(2026, 1, 1, 22, tzinfo=ZoneInfo("Asia/Kolkata")))
    assert not NIGHT.contains(datetime(2026, 1, 1, 10, tzinfo=UTC))


# defer


def test_not_quiet_is_left_alone() -> None:
    instant = utc(2026, 6, 1, 12)
    assert NIGHT.defer(instant, "Europe/London") == (instant, None)


def test_deferral_across_midnight_to_the_next_morning() -> None:
    # 22:30 BST on 1 June -> 09:00 BST on 2 June.
    assert NIGHT.defer(utc(2026, 6, 1, 21, 30), "Europe/London") == (
        utc(2026, 6, 2, 8),
        "deferred from 22:30 to 09:00 Europe/London (quiet hours 21:00-09:00)",
    )


def test_deferral_after_midnight_is_to_the_same_morning() -> None:
    resume, reason = NIGHT.defer(utc(2026, 1, 2, 3), "Europe/London")
    assert resume == utc(2026, 1, 2, 9)
    assert reason == "deferred from 03:00 to 09:00 Europe/London (quiet hours 21:00-09:00)"


def test_deferral_within_a_day() -> None:
    assert LUNCH.defer(utc(2026, 1, 1, 13, 30), "UTC") == (
        utc(2026, 1, 1, 14),
        "deferred from 13:30 to 14:00 UTC (quiet hours 13:00-14:00)",
    )


def test_start_is_deferred_end_is_not() -> None:
    assert NIGHT.defer(utc(2026, 1, 1, 21), "UTC")[0] == utc(2026, 1, 2, 9)
    assert NIGHT.defer(utc(2026, 1, 1, 9), "UTC") == (utc(2026, 1, 1, 9), None)


def test_any_aware_instant_is_read_in_the_recipient_zone() -> None:
    # 04:00 in Tokyo is 19:00 UTC the day before: not quiet in London.
    tokyo = datetime(2026, 1, 2, 4, tzinfo=ZoneInfo("Asia/Tokyo"))
    assert NIGHT.defer(tokyo, "Europe/London") == (tokyo, None)


def test_fractional_offset_kathmandu() -> None:
    # 16:00 UTC is 21:45 in Kathmandu (+05:45); 09:00 there is 03:15 UTC.
    assert NIGHT.defer(utc(2026, 1, 1, 16), "Asia/Kathmandu") == (
        utc(2026, 1, 2, 3, 15),
        "deferred from 21:45 to 09:00 Asia/Kathmandu (quiet hours 21:00-09:00)",
    )


# America/New_York: spring forward 2026-03-08 02:00 EST -> 03:00 EDT (07:00 UTC)


def test_ny_spring_forward_night_ends_at_nine_new_time() -> None:
    # 23:00 EST on 7 March -> 09:00 EDT (13:00 UTC), not 09:00 EST.
    assert NIGHT.defer(utc(2026, 3, 8, 4), "America/New_York")[0] == utc(2026, 3, 8, 13)


def test_ny_spring_forward_skipped_end_resumes_after_the_gap() -> None:
    # 02:30 does not exist: the window ends at 03:00 EDT, the first instant after the gap.
    quiet = QuietHours.parse("22:00-02:30")
    assert quiet.defer(utc(2026, 3, 8, 5), "America/New_York") == (
        utc(2026, 3, 8, 7),
        "deferred from 00:00 to 03:00 America/New_York (quiet hours 22:00-02:30)",
    )


def test_ny_spring_forward_gap_skipping_start_and_end_waits_for_the_next_end() -> None:
    # Both 02:30 and 02:45 are skipped: 03:00 is already quiet again, so wait for tomorrow's 02:30.
    quiet = QuietHours.parse("02:45-02:30")
    assert quiet.defer(utc(2026, 3, 8, 6, 50), "America/New_York")[0] == utc(2026, 3, 9, 6, 30)


# America/New_York: fall back 2026-11-01 02:00 EDT -> 01:00 EST (06:00 UTC)


def test_ny_fall_back_night_ends_at_nine_new_time() -> None:
    # 23:00 EDT on 31 October -> 09:00 EST (14:00 UTC).
    assert NIGHT.defer(utc(2026, 11, 1, 3), "America/New_York")[0] == utc(2026, 11, 1, 14)


def test_ny_fall_back_repeated_end_resumes_at_its_first_reading() -> None:
    quiet = QuietHours.parse("22:00-01:30")
    assert quiet.defer(utc(2026, 11, 1, 5), "America/New_York") == (
        utc(2026, 11, 1, 5, 30),  # 01:30 EDT
        "deferred from 01:00 to 01:30 America/New_York (quiet hours 22:00-01:30)",
    )


def test_ny_fall_back_inside_the_repeat_resumes_at_the_second_reading_never_earlier() -> None:
    # 01:10 EST is quiet again by the wall clock; the first 01:30 (EDT) is already past.
    quiet = QuietHours.parse("22:00-01:30")
    assert quiet.defer(utc(2026, 11, 1, 6, 10), "America/New_York")[0] == utc(2026, 11, 1, 6, 30)


# Australia/Sydney: fall back 2026-04-05 03:00 AEDT -> 02:00 AEST (16:00 UTC on 4 April);
# spring forward 2026-10-04 02:00 AEST -> 03:00 AEDT (16:00 UTC on 3 October).


def test_sydney_fall_back_repeated_end_resumes_at_its_first_reading() -> None:
    quiet = QuietHours.parse("23:00-02:30")
    # 01:00 AEDT -> the first 02:30, still AEDT (+11).
    assert quiet.defer(utc(2026, 4, 4, 14), "Australia/Sydney")[0] == utc(2026, 4, 4, 15, 30)


def test_sydney_spring_forward_skipped_end_resumes_after_the_gap() -> None:
    quiet = QuietHours.parse("23:00-02:30")
    assert quiet.defer(utc(2026, 10, 3, 15), "Australia/Sydney") == (
        utc(2026, 10, 3, 16),  # 03:00 AEDT
        "deferred from 01:00 to 03:00 Australia/Sydney (quiet hours 23:00-02:30)",
    )


def test_sydney_night_across_spring_forward() -> None:
    # 22:00 AEST on 3 October -> 09:00 AEDT (22:00 UTC).
    assert NIGHT.defer(utc(2026, 10, 3, 12), "Australia/Sydney")[0] == utc(2026, 10, 3, 22)


def test_naive_instant_and_unknown_zone_are_rejected() -> None:
    with pytest.raises(ValueError, match="aware"):
        NIGHT.defer(datetime(2026, 1, 1, 22), "UTC")
    with pytest.raises(InvalidSchedule, match="Mars/Olympus"):
        NIGHT.defer(utc(2026, 1, 1, 22), "Mars/Olympus")


# Properties near every kind of clock change

ZONES = ["America/New_York", "Europe/London", "Australia/Sydney", "Australia/Lord_Howe", "Asia/Kathmandu"]
CHANGES = [
    utc(2026, 3, 8, 7),
    utc(2026, 11, 1, 6),
    utc(2026, 3, 29, 1),
    utc(2026, 10, 25, 1),
    utc(2026, 4, 4, 16),
    utc(2026, 10, 3, 16),
    utc(2026, 4, 4, 15),
    utc(2026, 10, 3, 15, 30),
]
CLOCKS = st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45, 59]))


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(ZONES),
    st.sampled_from(CHANGES),
    st.integers(-36 * 60, 36 * 60),
    CLOCKS,
    CLOCKS,
)
def test_deferred_instant_is_the_first_one_outside_the_window(
    zone: str, change: datetime, minutes: int, start: time, end: time
) -> None:
    if start == end:
        return
    quiet, tz = QuietHours(start, end), ZoneInfo(zone)
    instant = change + timedelta(minutes=minutes)
    resume, reason = quiet.defer(instant, zone)
    assert resume.utcoffset() == timedelta()
    if reason is None:
        assert resume == instant
        assert not quiet.contains(instant.astimezone(tz))
    else:
        assert quiet.contains(instant.astimezone(tz))
        assert instant < resume <= instant + timedelta(days=2)
        assert not quiet.contains(resume.astimezone(tz))
        assert quiet.contains((resume - timedelta(seconds=1)).astimezone(tz))


@pytest.mark.parametrize(
    ("zone", "start", "end", "resume"),
    [
        # 18:29 AEDT on the day before the clock goes back at 03:00: the window's next end,
        # 17:30, is read only under AEST (+10), an era that begins 8.5 hours later.
        ("Australia/Sydney", time(17, 45), time(17, 30), utc(2026, 4, 5, 7, 30)),
        ("Australia/Lord_Howe", time(18, 15), time(18, 0), utc(2026, 4, 5, 7, 30)),
    ],
)
def test_a_window_ending_after_a_clock_change_a_day_away_ends_there(
    zone: str, start: time, end: time, resume: datetime
) -> None:
    """Found by the property below: the next end lies beyond a backward clock change more than a
    few hours away, so it is read under the offset that change brings (it used to raise)."""
    deferred, reason = QuietHours(start, end).defer(utc(2026, 4, 4, 7, 29), zone)
    assert (deferred, reason is not None) == (resume, True)
