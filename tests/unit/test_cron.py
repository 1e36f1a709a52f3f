"""Unit tests for reminderd.schedule.cron: exact UTC fire times, DST edges, validation."""

import functools
import re
from datetime import UTC, datetime, time, timedelta, timezone
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import utc

from reminderd.schedule.cron import InvalidSchedule, load_timezone, next_fire, validate_cron

NY = "America/New_York"


def chain(expr: str, tz: str, after: datetime, count: int) -> list[datetime]:
    """The next `count` fire times of `expr` after `after`."""
    fires: list[datetime] = []
    for _ in range(count):
        after = next_fire(expr, tz, after)
        fires.append(after)
    return fires


# Plain schedules


def test_utc_daily() -> None:
    assert chain("0 9 * * *", "UTC", utc(2026, 1, 1, 10), 2) == [
        utc(2026, 1, 2, 9),
        utc(2026, 1, 3, 9),
    ]


def test_utc_hourly() -> None:
    assert chain("0 * * * *", "UTC", utc(2026, 1, 1, 10, 15), 2) == [
        utc(2026, 1, 1, 11),
        utc(2026, 1, 1, 12),
    ]


@pytest.mark.parametrize(
    ("tz", "expected"),
    [
        ("Asia/Kolkata", utc(2026, 1, 1, 3, 30)),  # +05:30
        ("Asia/Kathmandu", utc(2026, 1, 1, 3, 15)),  # +05:45
    ],
)
def test_fractional_offset_zones(tz: str, expected: datetime) -> None:
    assert next_fire("0 9 * * *", tz, utc(2026, 1, 1)) == expected


def test_result_is_utc_whatever_the_zone_of_after() -> None:
    tokyo_midnight = datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=9)))
    fire = next_fire("0 9 * * *", "Asia/Kolkata", tokyo_midnight)
    assert fire == utc(2026, 1, 1, 3, 30)
    assert fire.tzinfo is UTC


def test_names_and_aliases() -> None:
    # 2026-01-01 is a Thursday.
    assert next_fire("0 9 * JAN MON", "UTC", utc(2026, 1, 1)) == utc(2026, 1, 5, 9)
    assert next_fire("@daily", "UTC", utc(2026, 1, 1, 1)) == utc(2026, 1, 2)
    assert next_fire("@hourly", "UTC", utc(2026, 1, 1, 1, 1)) == utc(2026, 1, 1, 2)


def test_naive_after_is_rejected() -> None:
    with pytest.raises(ValueError, match="aware"):
        next_fire("0 9 * * *", "UTC", datetime(2026, 1, 1))


# America/New_York: spring forward 2026-03-08 02:00 EST -> 03:00 EDT (07:00 UTC)


def test_ny_skipped_fixed_time_fires_at_the_jump_once() -> None:
    assert chain("30 2 * * *", NY, utc(2026, 3, 7, 12), 3) == [
        utc(2026, 3, 8, 7),  # 02:30 does not exist: 03:00 EDT
        utc(2026, 3, 9, 6, 30),  # 02:30 EDT
        utc(2026, 3, 10, 6, 30),
    ]


def test_ny_spring_forward_every_15_minutes_has_no_duplicates() -> None:
    # From 01:45 EST: 02:00..02:45 all collapse onto 03:00 EDT, which fires once.
    assert chain("*/15 * * * *", NY, utc(2026, 3, 8, 6, 45), 2) == [
        utc(2026, 3, 8, 7),
        utc(2026, 3, 8, 7, 15),
    ]


# America/New_York: fall back 2026-11-01 02:00 EDT -> 01:00 EST (06:00 UTC)


def test_ny_fall_back_fixed_time_fires_once_despite_croniter7_repeat_bug() -> None:
    # croniter 7 with a tz-aware start yields 01:30 EDT *and* 01:30 EST here.
    assert chain("30 1 * * *", NY, utc(2026, 10, 31, 12), 2) == [
        utc(2026, 11, 1, 5, 30),  # 01:30 EDT, the first 01:30
        utc(2026, 11, 2, 6, 30),  # 01:30 EST the next day
    ]
    # Asking from the first 01:30, or from inside the repeated hour, skips the repeat.
    assert next_fire("30 1 * * *", NY, utc(2026, 11, 1, 5, 30)) == utc(2026, 11, 2, 6, 30)
    assert next_fire("30 1 * * *", NY, utc(2026, 11, 1, 6, 10)) == utc(2026, 11, 2, 6, 30)


def test_ny_fall_back_hourly_fires_in_both_one_oclocks() -> None:
    assert chain("0 * * * *", NY, utc(2026, 11, 1, 4, 30), 3) == [
        utc(2026, 11, 1, 5),  # 01:00 EDT
        utc(2026, 11, 1, 6),  # 01:00 EST
        utc(2026, 11, 1, 7),  # 02:00 EST
    ]


@pytest.mark.parametrize("hours", ["*,5", "5,*", "0-11,12-23", "*,0-23", "0-23", "*/1", "12-11"])
def test_an_hour_field_covering_every_hour_fires_in_both_one_oclocks_as_star_does(hours: str) -> None:
    # croniter lists "*,5" as ["*", 5] and "*,0-23" as ["*", 0, ..., 23]: each is every hour all the same.
    assert chain(f"0 {hours} * * *", NY, utc(2026, 11, 1, 4, 30), 3) == [
        utc(2026, 11, 1, 5), utc(2026, 11, 1, 6), utc(2026, 11, 1, 7),
    ]


def test_an_hour_field_short_of_one_hour_fires_at_the_first_one_oclock_only() -> None:
    assert chain("0 0-22 * * *", NY, utc(2026, 11, 1, 4, 30), 2) == [utc(2026, 11, 1, 5), utc(2026, 11, 1, 7)]


def test_ny_fall_back_every_30_minutes_keeps_every_real_half_hour() -> None:
    start = utc(2026, 11, 1, 4, 45)  # 00:45 EDT
    expected = [start + timedelta(minutes=15 + 30 * i) for i in range(6)]
    assert chain("*/30 * * * *", NY, start, 6) == expected
    # Starting in the second 01:xx (EST), nothing from the first pass comes back.
    assert next_fire("*/30 * * * *", NY, utc(2026, 11, 1, 6, 10)) == utc(2026, 11, 1, 6, 30)


# Europe/London: 2026-03-29 01:00 GMT -> 02:00 BST; 2026-10-25 02:00 BST -> 01:00 GMT


def test_london_spring_forward() -> None:
    assert chain("30 1 * * *", "Europe/London", utc(2026, 3, 28, 12), 2) == [
        utc(2026, 3, 29, 1),  # 01:30 does not exist: 02:00 BST
        utc(2026, 3, 30, 0, 30),  # 01:30 BST
    ]


def test_london_fall_back() -> None:
    assert chain("30 1 * * *", "Europe/London", utc(2026, 10, 24, 12), 2) == [
        utc(2026, 10, 25, 0, 30),  # 01:30 BST only
        utc(2026, 10, 26, 1, 30),
    ]
    assert chain("0 * * * *", "Europe/London", utc(2026, 10, 24, 22, 30), 4) == [
        utc(2026, 10, 24, 23),  # 00:00 BST
        utc(2026, 10, 25, 0),  # 01:00 BST
        utc(2026, 10, 25, 1),  # 01:00 GMT
        utc(2026, 10, 25, 2),  # 02:00 GMT
    ]


# Australia/Sydney: 2026-04-05 03:00 AEDT -> 02:00 AEST; 2026-10-04 02:00 AEST -> 03:00 AEDT


def test_sydney_fall_back_in_april() -> None:
    assert chain("30 2 * * *", "Australia/Sydney", utc(2026, 4, 4), 2) == [
        utc(2026, 4, 4, 15, 30),  # 02:30 AEDT only
        utc(2026, 4, 5, 16, 30),  # 02:30 AEST
    ]
    assert chain("0 * * * *", "Australia/Sydney", utc(2026, 4, 4, 14, 30), 3) == [
        utc(2026, 4, 4, 15),  # 02:00 AEDT
        utc(2026, 4, 4, 16),  # 02:00 AEST
        utc(2026, 4, 4, 17),  # 03:00 AEST
    ]


def test_sydney_spring_forward_in_october() -> None:
    assert chain("30 2 * * *", "Australia/Sydney", utc(2026, 10, 3), 2) == [
        utc(2026, 10, 3, 16),  # 02:30 does not exist: 03:00 AEDT
        utc(2026, 10, 4, 15, 30),  # 02:30 AEDT
    ]


def test_lord_howe_half_hour_shift_keeps_every_real_quarter_hour() -> None:
    # 2026-04-05 02:00 (+11) -> 01:30 (+10:30), at 15:00 UTC.
    start = utc(2026, 4, 4, 14, 20)
    expected = [start + timedelta(minutes=10 + 15 * i) for i in range(6)]
    assert chain("*/15 * * * *", "Australia/Lord_Howe", start, 6) == expected


def test_a_skipped_calendar_day_fires_once_at_the_jump() -> None:
    # Samoa skipped 2011-12-30 entirely (-10:00 -> +14:00 at 10:00 UTC).
    assert chain("0 9 * * *", "Pacific/Apia", utc(2011, 12, 29), 3) == [
        utc(2011, 12, 29, 19),  # 29th 09:00 -10:00
        utc(2011, 12, 30, 10),  # 30th 09:00 does not exist: 31st 00:00 +14:00
        utc(2011, 12, 30, 19),  # 31st 09:00 +14:00
    ]


# Strictly after


@pytest.mark.parametrize(
    ("expr", "tz", "occurrence", "following"),
    [
        ("0 9 * * *", "UTC", utc(2026, 1, 1, 9), utc(2026, 1, 2, 9)),
        ("*/15 * * * *", NY, utc(2026, 3, 8, 7), utc(2026, 3, 8, 7, 15)),
        ("30 2 * * *", NY, utc(2026, 3, 8, 7), utc(2026, 3, 9, 6, 30)),
        ("0 * * * *", NY, utc(2026, 11, 1, 5), utc(2026, 11, 1, 6)),
        ("0 * * * *", NY, utc(2026, 11, 1, 6), utc(2026, 11, 1, 7)),
    ],
)
def test_an_occurrence_is_never_returned_for_itself(
    expr: str, tz: str, occurrence: datetime, following: datetime
) -> None:
    assert next_fire(expr, tz, occurrence - timedelta(microseconds=1)) == occurrence
    assert next_fire(expr, tz, occurrence) == following


# Validation


@pytest.mark.parametrize(
    "expr",
    [
        "61 * * * *",
        "* 24 * * *",
        "* * * *",
        "0 0 * * * * 2030",  # 7 fields (year)
        "60 0 9 * * *",  # seconds go up to 59
        "@reboot",
        "",
        "every day",
        "0 0 * * FUNDAY",
        "R * * * *",  # random: would differ between processes
        "H * * * *",  # hashed: needs an id
    ],
)
def test_invalid_cron(expr: str) -> None:
    with pytest.raises(InvalidSchedule, match=re.escape(f'invalid cron "{expr}": ')):
        validate_cron(expr)
    with pytest.raises(InvalidSchedule, match=re.escape(f'invalid cron "{expr}": ')):
        next_fire(expr, "UTC", utc(2026, 1, 1))


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ("61 * * * *", "minute 61 is out of range 0–59"),
        ("60 0 9 * * *", "second 60 is out of range 0–59"),
        ("* 24 * * *", "hour 24 is out of range 0–23"),
        ("0 9 0 * *", "day of month 0 is out of range 1–31"),
        ("0 9 32 * *", "day of month 32 is out of range 1–31"),
        ("0 9 * 13 *", "month 13 is out of range 1–12"),
        ("0 9 * * 8", "day of week 8 is out of range 0–7"),
        ("0 1-25 * * *", 'hour 25 in "1-25" is out of range 0–23'),
        ("-1 * * * *", "minute -1 is out of range 0–59"),
        ("*/0 * * * *", 'minute "*/0": the step must be at least 1'),
        ("*/x * * * *", 'minute "*/x": the step after / must be a whole number, like */5'),
        ("1,,2 * * * *", 'minute "1,,2" has an empty item in its list'),
        ("1- * * * *", 'minute "1-" is missing a value (0–59)'),
        ("1.5 * * * *", 'minute "1.5" is not a number: use 0–59'),
        ("0 9 * FOO *", 'month "FOO" is not a month: use 1–12 or JAN–DEC'),
        ("0 0 * * FUNDAY", 'day of week "FUNDAY" is not a day: use 0–7 or SUN–SAT'),
        ("0 9 32W * *", 'day of month 32 in "32W" is out of range 1–31'),
        ("0 9 LW * *", 'day of month "LW": W (nearest weekday) follows a day number, like 15W'),
        ("0 9 1W,15 * *", 'day of month "1W,15": W (nearest weekday) takes one day, not a list'),
        ("0 9 * * 1#6", 'day of week "1#6": week 6 is out of range 1–5'),
        ("0 9 * * 8#1", 'day of week 8 in "8#1" is out of range 0–7'),
        ("0 9 * * 1#x", 'day of week "1#x": # is followed by the week of the month, 1–5 '
                        "(1#1: the first Monday)"),
        ("0 9 * * L", 'day of week "L": L takes one day number 0–7, like 5L (the last Friday of the month)'),
        ("0 9 * * FRIL", 'day of week "FRIL": L takes one day number 0–7, like 5L '
                         "(the last Friday of the month)"),
        ("0 9 * * 1,L5", 'day of week "1,L5" mixes plain days with # or L, which cron cannot combine: '
                         "write one or the other"),
        ("0 9 5,? * *", 'day of month "5,?": ? (any) stands alone, not in a list'),
    ],
)
def test_a_cron_error_names_the_field_and_what_it_allows(expr: str, reason: str) -> None:
    with pytest.raises(InvalidSchedule) as refused:
        validate_cron(expr)
    assert str(refused.value) == f'invalid cron "{expr}": {reason}'


CRON_TOKENS = [
    "*", "?", "L", "W", "#", "-", "/", ",", "0", "1", "5", "7", "8", "12", "13", "15", "23", "24", "31", "32",
    "59", "60", "61", "MON", "FRI", "SUN", "JAN", "DEC", "FOO", "l", "w", "1#1", "5L", "L5", "15W", "2#6",
]


@settings(max_examples=3000, deadline=None)
@given(st.sampled_from([5, 6]), st.data())
def test_every_cron_croniter_refuses_is_explained_by_its_field(fields: int, data: st.DataObject) -> None:
    """Whatever croniter would refuse, the field check refuses first, in its own words: a user never
    sees croniter's "[61 * * * *] is not acceptable, out of range"."""
    parts = ["*"] * fields
    position = data.draw(st.integers(0, fields - 1))
    parts[position] = "".join(data.draw(st.lists(st.sampled_from(CRON_TOKENS), min_size=1, max_size=4)))
    expr = " ".join(parts)
    try:
        validate_cron(expr)
    except InvalidSchedule as exc:
        reason = str(exc).removeprefix(f'invalid cron "{expr}": ')
        assert "not acceptable" not in reason and "[" not in reason, reason
        assert reason == "it never fires" or reason.startswith(
            ("second", "minute", "hour", "day of month", "month", "day of week", "random")
        ), reason


def test_never_firing_cron() -> None:
    expected = re.escape('invalid cron "0 0 30 2 *": it never fires')
    with pytest.raises(InvalidSchedule, match=expected):
        validate_cron("0 0 30 2 *")
    with pytest.raises(InvalidSchedule, match=expected):
        next_fire("0 0 30 2 *", "UTC", utc(2026, 1, 1))


@pytest.mark.parametrize(
    "expr",
    [
        "*/5 * * * *", "0 9 * * MON-FRI", "0 0 29 2 *", "0 0 L * *", "@yearly", "@weekly",
        "0 0 9 * * MON-FRI", "*/30 * * * * *", "0 9 15W * *", "0 9 * * 1#1", "0 9 * * L5", "0 9 * * 5L",
    ],
)
def test_valid_cron(expr: str) -> None:
    validate_cron(expr)


# Seconds, L, W and #

def test_six_fields_lead_with_seconds() -> None:
    assert chain("30 0 9 * * MON-FRI", "UTC", utc(2026, 1, 2, 9, 1), 2) == [
        datetime(2026, 1, 5, 9, 0, 30, tzinfo=UTC),  # Friday 09:00:30 is past: Monday next
        datetime(2026, 1, 6, 9, 0, 30, tzinfo=UTC),
    ]
    assert chain("*/20 * * * * *", "UTC", utc(2026, 1, 1), 3) == [
        datetime(2026, 1, 1, 0, 0, 20, tzinfo=UTC),
        datetime(2026, 1, 1, 0, 0, 40, tzinfo=UTC),
        datetime(2026, 1, 1, 0, 1, 0, tzinfo=UTC),
    ]


def test_seconds_in_a_skipped_hour_fire_once_at_the_jump() -> None:
    # New York, 8 March 2026: 02:00 EST jumps to 03:00 EDT (07:00 UTC).
    fires = chain("15 30 2 * * *", NY, utc(2026, 3, 8, 6), 2)
    assert fires == [utc(2026, 3, 8, 7), datetime(2026, 3, 9, 6, 30, 15, tzinfo=UTC)]


def test_every_30_seconds_through_fall_back_keeps_every_real_instant() -> None:
    # New York, 1 November 2026: 01:00-02:00 happens twice (05:00-07:00 UTC).
    fires = chain("*/30 * * * * *", NY, utc(2026, 11, 1, 5, 59), 4)
    assert [f - utc(2026, 11, 1, 5, 59) for f in fires] == [timedelta(seconds=s) for s in (30, 60, 90, 120)]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("0 9 L * *", [utc(2026, 1, 31, 9), utc(2026, 2, 28, 9), utc(2026, 3, 31, 9)]),
        ("0 9 15W * *", [utc(2026, 1, 15, 9), utc(2026, 2, 16, 9), utc(2026, 3, 16, 9)]),  # 15 Feb: Sunday
        ("0 9 * * 1#1", [utc(2026, 1, 5, 9), utc(2026, 2, 2, 9), utc(2026, 3, 2, 9)]),
        ("0 9 * * L5", [utc(2026, 1, 30, 9), utc(2026, 2, 27, 9), utc(2026, 3, 27, 9)]),
        ("0 9 * * 5L", [utc(2026, 1, 30, 9), utc(2026, 2, 27, 9), utc(2026, 3, 27, 9)]),  # Quartz spelling
    ],
)
def test_last_nearest_weekday_and_nth(expr: str, expected: list[datetime]) -> None:
    assert chain(expr, "UTC", utc(2026, 1, 1), 3) == expected


@pytest.mark.parametrize("name", ["Mars/Base", "", "America", "../etc/passwd", "utc"])
def test_unknown_timezone(name: str) -> None:
    with pytest.raises(InvalidSchedule, match=re.escape(f'unknown timezone "{name}"')):
        load_timezone(name)
    with pytest.raises(InvalidSchedule, match=re.escape(f'unknown timezone "{name}"')):
        next_fire("0 9 * * *", name, utc(2026, 1, 1))


def test_load_timezone() -> None:
    assert load_timezone(NY) == ZoneInfo(NY)


# Properties over many zones and start instants

ZONES = [
    NY,
    "Europe/London",
    "Australia/Sydney",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",  # 30-minute DST shift
]
DAILY = {"30 1 * * *": time(1, 30), "30 2 * * *": time(2, 30)}
PERIODIC = {"0 * * * *": timedelta(hours=1), "*/15 * * * *": timedelta(minutes=15)}
WEEKLY = "0 9 * * MON"


@functools.cache
def transition_days(tz_name: str) -> list[datetime]:
    """UTC midnights of days (2024-2030) during which `tz_name` changes offset."""
    tz = ZoneInfo(tz_name)

    def offset(instant: datetime) -> timedelta | None:
        return instant.astimezone(tz).utcoffset()

    days = [utc(2024, 1, 1) + timedelta(days=i) for i in range(7 * 366)]
    return [d for d in days if offset(d) != offset(d + timedelta(days=1))]


@st.composite
def zone_and_start(draw: st.DrawFn) -> tuple[str, datetime]:
    """A zone and an instant, often within a day or so of a clock change."""
    tz = draw(st.sampled_from(ZONES))
    anywhere = st.datetimes(datetime(2024, 1, 1), datetime(2030, 12, 31), timezones=st.just(UTC))
    starts = anywhere
    if transition_days(tz):
        near = st.builds(
            lambda day, seconds: day + timedelta(seconds=seconds),
            st.sampled_from(transition_days(tz)),
            st.integers(-12 * 3600, 24 * 3600),
        )
        starts = anywhere | near
    return tz, draw(starts)


def check_daily_fire(fire: datetime, at: time, tz: ZoneInfo) -> None:
    """`fire` is at the first `at` of its local day or, if `at` was skipped, at the jump."""
    local = datetime.combine(fire.astimezone(tz).date(), at, tz)
    if local.astimezone(UTC).astimezone(tz).time() == at:
        assert fire == local.astimezone(UTC)  # fold=0: the first of a repeated time
    else:
        assert (fire - timedelta(seconds=1)).astimezone(tz).time() < at < fire.astimezone(tz).time()


@settings(max_examples=150, deadline=None)
@given(zone_and_start(), st.sampled_from([*DAILY, *PERIODIC, WEEKLY]))
def test_chained_fires(zone_start: tuple[str, datetime], expr: str) -> None:
    tz_name, start = zone_start
    tz = ZoneInfo(tz_name)
    fires = chain(expr, tz_name, start, 50)

    assert fires[0] > start
    assert all(a < b for a, b in pairwise(fires))  # so never the same instant twice

    if expr in DAILY:
        days = [f.astimezone(tz).date() for f in fires]
        assert days == [days[0] + timedelta(i) for i in range(50)]  # one per day, none lost
        for fire in fires:
            check_daily_fire(fire, DAILY[expr], tz)
    elif expr in PERIODIC:
        # Clock changes may shorten or stretch one gap by the shift, never more.
        gaps = [b - a for a, b in pairwise(fires)]
        assert max(gaps) <= PERIODIC[expr] + timedelta(minutes=30)
    else:
        assert all(f.astimezone(tz).weekday() == 0 for f in fires)
        assert all(f.astimezone(tz).time() == time(9) for f in fires)


@pytest.mark.parametrize(
    ("zone", "after", "fire"),
    [
        # The clock goes back on 3 November, between the last fire of 1 November and the next,
        # 1 December: that reading is in the era after the change, weeks away. It used to end.
        ("America/New_York", utc(2024, 11, 2, 3, 14), utc(2024, 12, 1, 5)),
        ("America/St_Johns", utc(2024, 11, 2, 2, 14), utc(2024, 12, 1, 3, 30)),
    ],
)
def test_an_hourly_cron_of_one_day_a_month_goes_on_past_a_clock_change_weeks_away(
    zone: str, after: datetime, fire: datetime
) -> None:
    assert next_fire("0 * 1 * *", zone, after) == fire
