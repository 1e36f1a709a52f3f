"""Unit tests for reminderd.schedule.rrule: RFC 5545 recurrences listed as naive wall-clock times."""

import doctest
from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise
from zoneinfo import ZoneInfo

import pytest
from dateutil.rrule import rrulestr
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import reminderd.schedule.rrule
from reminderd.schedule.rrule import RRule, parse_rrule
from reminderd.schedule.wallclock import InvalidSchedule, next_instant

TZ = "Europe/Berlin"
JAN_1 = datetime(2026, 1, 1)


def rule(text: str, tz: str = TZ, default_start: datetime | None = JAN_1) -> RRule:
    return parse_rrule(text, tz, default_start)


def walls(recurrence: RRule, after: datetime = datetime(2025, 12, 31), limit: int = 100) -> list[datetime]:
    return list(islice(recurrence.walls_after(after), limit))


def on(days: list[str], hour: int, minute: int = 0) -> list[datetime]:
    return [datetime.fromisoformat(day).replace(hour=hour, minute=minute) for day in days]


# Calendars cron cannot express


def test_first_monday_of_each_month_in_2026() -> None:
    first_mondays = rule("DTSTART:20260101T000000\nRRULE:FREQ=MONTHLY;BYDAY=1MO;BYHOUR=9;BYMINUTE=0")
    assert walls(first_mondays, limit=12) == on(
        [
            "2026-01-05", "2026-02-02", "2026-03-02", "2026-04-06", "2026-05-04", "2026-06-01",
            "2026-07-06", "2026-08-03", "2026-09-07", "2026-10-05", "2026-11-02", "2026-12-07",
        ],
        9,
    )  # fmt: skip


def test_last_business_day_of_the_month() -> None:
    last_weekday = rule("FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1;BYHOUR=17;BYMINUTE=0")
    # January and May 2026 end on a Saturday and a Sunday; March ends on a Tuesday.
    assert walls(last_weekday, limit=5) == on(
        ["2026-01-30", "2026-02-27", "2026-03-31", "2026-04-30", "2026-05-29"], 17
    )


def test_seconds_default_to_dtstart_and_times_come_from_by_parts() -> None:
    first_mondays = rule("DTSTART:20260101T000000\nRRULE:FREQ=MONTHLY;BYDAY=1MO;BYHOUR=9;BYMINUTE=0")
    assert walls(first_mondays, limit=1) == [datetime(2026, 1, 5, 9, 0, 0)]
    assert walls(rule("FREQ=DAILY", default_start=datetime(2026, 1, 1, 7, 15, 30)), limit=1) == [
        datetime(2026, 1, 1, 7, 15, 30)
    ]


# EXDATE and RDATE


def test_exdate_removes_one_exact_wall_time() -> None:
    daily = rule("RRULE:FREQ=DAILY;BYHOUR=9\nEXDATE:20260102T090000")
    assert walls(daily, limit=2) == on(["2026-01-01", "2026-01-03"], 9)


def test_exdate_of_another_time_that_day_removes_nothing() -> None:
    daily = rule("RRULE:FREQ=DAILY;BYHOUR=9\nEXDATE:20260102T100000")
    assert walls(daily, limit=2) == on(["2026-01-01", "2026-01-02"], 9)


def test_exdate_value_date_removes_a_whole_day_of_an_hourly_rule() -> None:
    hourly = rule("RRULE:FREQ=HOURLY\nEXDATE;VALUE=DATE:20260102")
    listed = walls(hourly, after=datetime(2026, 1, 1, 22), limit=3)
    assert listed == [datetime(2026, 1, 1, 23), datetime(2026, 1, 3, 0), datetime(2026, 1, 3, 1)]


def test_rdate_adds_a_wall_time_in_order() -> None:
    weekly = rule("DTSTART:20260105T090000\nRRULE:FREQ=WEEKLY\nRDATE:20260107T120000")
    assert walls(weekly, limit=3) == [
        datetime(2026, 1, 5, 9),
        datetime(2026, 1, 7, 12),
        datetime(2026, 1, 12, 9),
    ]


def test_rdate_equal_to_an_occurrence_is_listed_once() -> None:
    weekly = rule("DTSTART:20260105T090000\nRRULE:FREQ=WEEKLY\nRDATE:20260112T090000")
    assert walls(weekly, limit=2) == [datetime(2026, 1, 5, 9), datetime(2026, 1, 12, 9)]


def test_exdate_also_removes_an_rdate() -> None:
    weekly = rule("DTSTART:20260105T090000\nRRULE:FREQ=WEEKLY\nRDATE:20260107T120000\nEXDATE:20260107T120000")
    assert walls(weekly, limit=2) == [datetime(2026, 1, 5, 9), datetime(2026, 1, 12, 9)]


# Anchors and ends


def test_every_second_week_counts_from_dtstart() -> None:
    text = "RRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=MO;BYHOUR=9"
    from_week_1 = rule(f"DTSTART:20260105T000000\n{text}")
    from_week_2 = rule(f"DTSTART:20260112T000000\n{text}")
    assert walls(from_week_1, limit=3) == on(["2026-01-05", "2026-01-19", "2026-02-02"], 9)
    assert walls(from_week_2, limit=3) == on(["2026-01-12", "2026-01-26", "2026-02-09"], 9)
    # Far from DTSTART the phase is kept too: 2030-01-07 is 209 weeks after 2026-01-05.
    assert walls(from_week_1, after=datetime(2030, 1, 1), limit=2) == on(["2030-01-14", "2030-01-28"], 9)
    assert walls(from_week_2, after=datetime(2030, 1, 1), limit=2) == on(["2030-01-07", "2030-01-21"], 9)


def test_count_ends_the_iterator() -> None:
    three = rule("FREQ=DAILY;BYHOUR=9;COUNT=3")
    assert three.count == 3
    assert walls(three) == on(["2026-01-01", "2026-01-02", "2026-01-03"], 9)
    assert walls(three, after=datetime(2026, 1, 2, 9)) == [datetime(2026, 1, 3, 9)]
    assert walls(three, after=datetime(2026, 1, 3, 9)) == []
    assert rule("FREQ=DAILY").count is None


def test_count_counts_excluded_occurrences() -> None:
    three = rule("RRULE:FREQ=DAILY;BYHOUR=9;COUNT=3\nEXDATE:20260102T090000")
    assert walls(three) == on(["2026-01-01", "2026-01-03"], 9)


def test_floating_until_is_inclusive() -> None:
    until = rule("FREQ=DAILY;BYHOUR=9;UNTIL=20260103T090000")
    assert walls(until) == on(["2026-01-01", "2026-01-02", "2026-01-03"], 9)
    assert walls(until, after=datetime(2027, 1, 1)) == []


def test_until_date_covers_that_whole_day() -> None:
    until = rule("FREQ=DAILY;BYHOUR=23;UNTIL=20260102")
    assert walls(until) == on(["2026-01-01", "2026-01-02"], 23)


def test_utc_until_is_read_as_the_wall_time_in_the_rows_zone() -> None:
    # 03:30 UTC is 09:00 in Kolkata (UTC+05:30), so the 09:00 occurrence on the 10th is included.
    until = rule("FREQ=DAILY;BYHOUR=9;BYMINUTE=0;UNTIL=20260110T033000Z", tz="Asia/Kolkata")
    listed = walls(until)
    assert len(listed) == 10
    assert listed[-1] == datetime(2026, 1, 10, 9)
    one_second_earlier = rule("FREQ=DAILY;BYHOUR=9;BYMINUTE=0;UNTIL=20260110T032959Z", tz="Asia/Kolkata")
    assert walls(one_second_earlier)[-1] == datetime(2026, 1, 9, 9)
    assert until.until_instant == datetime(2026, 1, 10, 3, 30, tzinfo=UTC)


def test_utc_until_as_an_instant_bounds_no_wall_time() -> None:
    # For a rule read on many clocks (a broadcast's): the caller compares instants with it.
    text = "FREQ=DAILY;BYHOUR=9;BYMINUTE=0;UNTIL=20260110T033000Z"
    unbounded = parse_rrule(text, "UTC", JAN_1, until_as_instant=True)
    assert unbounded.until_instant == datetime(2026, 1, 10, 3, 30, tzinfo=UTC)
    assert len(walls(unbounded, limit=20)) == 20
    assert rule("FREQ=DAILY;UNTIL=20260110T033000", tz="UTC").until_instant is None  # a wall time
    floating = parse_rrule("FREQ=DAILY;BYHOUR=9;UNTIL=20260103T090000", "UTC", JAN_1, until_as_instant=True)
    assert walls(floating) == on(["2026-01-01", "2026-01-02", "2026-01-03"], 9)  # still bounds the walls


def test_ended_by_names_an_until_or_a_count_left_with_no_occurrence() -> None:
    """Read on the rule's own clock: 09:00 on the 10th in Kolkata is 03:30 UTC."""
    until = rule("FREQ=DAILY;BYHOUR=9;BYMINUTE=0;UNTIL=20260110T033000Z", tz="Asia/Kolkata")
    assert until.ended_by(datetime(2026, 1, 10, 3, 29, 59, tzinfo=UTC)) is None
    assert until.ended_by(datetime(2026, 1, 10, 3, 30, tzinfo=UTC)) == (
        "its UNTIL 20260110T033000Z is already past")
    floating = rule("FREQ=DAILY;BYHOUR=23;until=20260102", tz="America/Los_Angeles")
    assert floating.ended_by(datetime(2026, 1, 3, 6, 59, tzinfo=UTC)) is None  # 22:59 on the 2nd there
    assert floating.ended_by(datetime(2026, 1, 3, 7, 0, tzinfo=UTC)) == "its UNTIL 20260102 is already past"
    three = rule("FREQ=DAILY;BYHOUR=9;COUNT=3")  # Berlin: the last is 08:00 UTC on the 3rd
    assert three.ended_by(datetime(2026, 1, 3, 7, 59, tzinfo=UTC)) is None
    assert three.ended_by(datetime(2026, 1, 3, 8, 0, tzinfo=UTC)) == (
        "its COUNT 3 occurrences from DTSTART 2026-01-01T00:00:00 are all already past")
    with_rdate = rule("RRULE:FREQ=DAILY;BYHOUR=9;UNTIL=20260102\nRDATE:20270101T090000")
    assert with_rdate.ended_by(datetime(2026, 6, 1, tzinfo=UTC)) is None  # its RDATE is still ahead
    assert rule("FREQ=DAILY").ended_by(datetime(2999, 1, 1, tzinfo=UTC)) is None


def test_walls_after_is_strictly_after() -> None:
    daily = rule("FREQ=DAILY;BYHOUR=9")
    assert walls(daily, after=datetime(2026, 1, 2, 9), limit=1) == [datetime(2026, 1, 3, 9)]
    assert walls(daily, after=datetime(2026, 1, 2, 8, 59, 59), limit=1) == [datetime(2026, 1, 2, 9)]


def test_walls_after_refuses_an_aware_start() -> None:
    with pytest.raises(ValueError, match="naive"):
        rule("FREQ=DAILY").walls_after(datetime(2026, 1, 1, tzinfo=UTC))


def test_minutely_rule_far_in_the_future_is_not_listed_from_dtstart() -> None:
    # Listing ten years of minutes one by one would take minutes; this must answer at once.
    minutely = rule("FREQ=MINUTELY;INTERVAL=7")
    after = datetime(2036, 1, 1)
    listed = walls(minutely, after=after, limit=3)
    offset_minutes = int((after - JAN_1).total_seconds() // 60) % 7
    first = after + timedelta(minutes=7 - offset_minutes)
    assert listed == [first, first + timedelta(minutes=7), first + timedelta(minutes=14)]


def test_works_with_next_instant() -> None:
    first_mondays = rule("FREQ=MONTHLY;BYDAY=1MO;BYHOUR=9")
    fire = next_instant(first_mondays, ZoneInfo(TZ), datetime(2026, 1, 1, tzinfo=UTC))
    assert fire == datetime(2026, 1, 5, 8, tzinfo=UTC)  # 09:00 CET


# every_hour


@pytest.mark.parametrize(
    ("text", "every_hour"),
    [
        ("FREQ=HOURLY", True),
        ("FREQ=HOURLY;BYMINUTE=0,30", True),
        ("FREQ=HOURLY;BYHOUR=" + ",".join(str(hour) for hour in range(24)), True),
        ("FREQ=HOURLY;INTERVAL=2", False),
        ("FREQ=HOURLY;BYHOUR=9,10,11", False),
        ("FREQ=MINUTELY", True),
        ("FREQ=MINUTELY;INTERVAL=45", True),
        ("FREQ=MINUTELY;INTERVAL=60", True),  # the same minute every hour, like cron "0 * * * *"
        ("FREQ=MINUTELY;INTERVAL=30;BYMINUTE=0", True),
        ("FREQ=MINUTELY;INTERVAL=7;BYMINUTE=0", False),  # minute 0 only every 7 hours
        ("FREQ=MINUTELY;BYHOUR=9", False),
        ("FREQ=DAILY;BYHOUR=" + ",".join(str(hour) for hour in range(24)), True),
        ("FREQ=DAILY;BYHOUR=9", False),
        ("FREQ=MONTHLY;BYDAY=1MO", False),
    ],
)
def test_every_hour(text: str, every_hour: bool) -> None:
    assert rule(text).every_hour is every_hour


# Timezones and DTSTART


def test_dtstart_with_the_rows_tzid() -> None:
    kolkata = rule("DTSTART;TZID=Asia/Kolkata:20260101T090000\nRRULE:FREQ=DAILY", tz="Asia/Kolkata")
    assert kolkata.start == datetime(2026, 1, 1, 9)
    assert walls(kolkata, limit=1) == [datetime(2026, 1, 1, 9)]


def test_dtstart_with_another_zones_tzid_names_both() -> None:
    with pytest.raises(InvalidSchedule, match=r'TZID "Europe/Paris".*"Asia/Kolkata"'):
        rule("DTSTART;TZID=Europe/Paris:20260101T090000\nRRULE:FREQ=DAILY", tz="Asia/Kolkata")


@pytest.mark.parametrize(
    "line", ["DTSTART:20260101T090000Z", "EXDATE:20260102T090000Z", "RDATE:20260102T090000Z"]
)
def test_utc_date_times_are_refused(line: str) -> None:
    with pytest.raises(InvalidSchedule, match="write the wall time in Asia/Kolkata without Z"):
        rule(f"{line}\nRRULE:FREQ=DAILY", tz="Asia/Kolkata")


def test_without_dtstart_or_default_start() -> None:
    with pytest.raises(InvalidSchedule, match="needs a DTSTART"):
        parse_rrule("FREQ=DAILY", TZ)


def test_without_dtstart_the_default_start_is_used() -> None:
    daily = parse_rrule("FREQ=DAILY", TZ, datetime(2026, 3, 4, 6, 30))
    assert daily.start == datetime(2026, 3, 4, 6, 30)
    assert walls(daily, limit=2) == [datetime(2026, 3, 4, 6, 30), datetime(2026, 3, 5, 6, 30)]


def test_dtstart_wins_over_the_default_start() -> None:
    daily = parse_rrule("DTSTART:20260201T080000\nRRULE:FREQ=DAILY", TZ, datetime(2026, 3, 4))
    assert daily.start == datetime(2026, 2, 1, 8)


def test_layout_is_forgiving() -> None:
    text = "  \r\n dtstart:20260101T090000 \r\n\r\n rrule:freq=daily;count=2 \r\n"
    daily = parse_rrule(text, TZ)
    assert daily.text == text.strip()
    assert daily.tz_name == TZ
    assert walls(daily) == on(["2026-01-01", "2026-01-02"], 9)
    assert parse_rrule("FREQ=DAILY;COUNT=2", TZ, datetime(2026, 1, 1, 9)) == parse_rrule(
        "FREQ=DAILY;COUNT=2", TZ, datetime(2026, 1, 1, 9)
    )


# Errors


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("BYDAY=MO", r'^invalid RRULE "BYDAY=MO": FREQ is missing'),
        ("FREQ=FORTNIGHTLY", 'unknown FREQ "FORTNIGHTLY"'),
        ("FREQ=SECONDLY", "FREQ=SECONDLY is not supported; use cron with a seconds field"),
        ("FREQ=MONTHLY;BYDAYS=MO", 'unknown part "BYDAYS"'),
        ("FREQ=DAILY;BYHOUR=25", 'bad BYHOUR value "25"'),
        ("FREQ=DAILY;BYMINUTE=x", 'bad BYMINUTE value "x"'),
        ("FREQ=MONTHLY;BYDAY=XX", 'bad BYDAY value "XX"'),
        ("FREQ=MONTHLY;BYDAY=0MO", 'bad BYDAY value "0MO"'),
        ("FREQ=MONTHLY;BYMONTHDAY=0", 'bad BYMONTHDAY value "0"'),
        ("FREQ=DAILY;INTERVAL=0", 'bad INTERVAL value "0"'),
        ("FREQ=DAILY;COUNT=-1", 'bad COUNT value "-1"'),
        ("FREQ=DAILY;UNTIL=tomorrow", 'bad UNTIL value "tomorrow"'),
        ("FREQ=DAILY;UNTIL=20261340", 'bad UNTIL value "20261340"'),
        ("FREQ=WEEKLY;WKST=XX", 'bad WKST value "XX"'),
        ("FREQ=DAILY;BYHOUR", 'part "BYHOUR" has no value'),
        ("FREQ=DAILY;BYHOUR=9;BYHOUR=10", "BYHOUR is given twice"),
        ("FREQ=DAILY;COUNT=3;UNTIL=20270101T000000", "COUNT and UNTIL cannot both be given"),
        ("FREQ=MONTHLY;BYSETPOS=-1", "BYSETPOS needs another BY part"),
        ("FREQ=WEEKLY;BYDAY=1MO", 'BYDAY "1MO" has a number'),
        ("FREQ=MONTHLY;BYWEEKNO=3", "BYWEEKNO needs FREQ=YEARLY"),
        ("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", "never fires"),
        ("FREQ=YEARLY;INTERVAL=4;BYMONTH=2;BYMONTHDAY=29", "never fires"),  # 2026, 2030, ... are not leap
        ("FREQ=MONTHLY;BYDAY=MO;BYSETPOS=6", "never fires"),
        ("FREQ=MINUTELY;BYYEARDAY=1;BYMONTH=2", "never fires"),
        ("FREQ=DAILY;INTERVAL=7;BYDAY=MO", "never fires"),  # 2026-01-01 is a Thursday
        ("FREQ=HOURLY;INTERVAL=6;BYHOUR=3", "never fires"),
        ("FREQ=DAILY;BYHOUR=9;BYSETPOS=2", "never fires"),
        ("FREQ=DAILY;UNTIL=20251231T000000", "never fires"),
        (
            "RRULE:FREQ=DAILY;COUNT=1\nEXDATE:20260101T000000",
            "^invalid recurrence: EXDATE removes every occurrence",
        ),
        ("VEVENT:FREQ=DAILY", '^invalid recurrence: unknown line "VEVENT:FREQ=DAILY"'),
        ("RRULE:FREQ=DAILY\nRRULE:FREQ=WEEKLY", "more than one RRULE line"),
        ("DTSTART:20260101T000000\nDTSTART:20260102T000000\nRRULE:FREQ=DAILY", "more than one DTSTART line"),
        ("DTSTART:20260101T000000", "no RRULE line"),
        ("", "no RRULE line"),
        ("DTSTART:2026-01-01\nRRULE:FREQ=DAILY", 'bad DTSTART value "2026-01-01"'),
        ("DTSTART:20260230T000000\nRRULE:FREQ=DAILY", 'bad DTSTART value "20260230T000000"'),
        ("DTSTART;VALUE=DATE:20260101\nRRULE:FREQ=DAILY", "DTSTART;VALUE=DATE is not supported"),
        ("RDATE;VALUE=DATE:20260101\nRRULE:FREQ=DAILY", "RDATE;VALUE=DATE is not supported"),
        ("EXDATE:20260101\nRRULE:FREQ=DAILY", "EXDATE;VALUE=DATE:20260101"),
        ("EXDATE;VALUE=DATE:2026\nRRULE:FREQ=DAILY", 'bad EXDATE date "2026"'),
        ("EXDATE;FOO=BAR:20260101T000000\nRRULE:FREQ=DAILY", 'unknown EXDATE parameter "FOO"'),
    ],
)
def test_errors_name_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(InvalidSchedule, match=message) as raised:
        rule(text)
    text_of_error = str(raised.value)
    assert "\n" not in text_of_error
    assert "datetime(" not in text_of_error and "'" not in text_of_error  # no Python reprs


def test_unknown_timezone() -> None:
    with pytest.raises(InvalidSchedule, match=r'^invalid recurrence: unknown timezone "Mars/Olympus"'):
        parse_rrule("FREQ=DAILY", "Mars/Olympus", JAN_1)


def test_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="FREQ is missing"):
        rule("INTERVAL=2")


# describe()


@pytest.mark.parametrize(
    ("text", "description"),
    [
        ("FREQ=MONTHLY;BYDAY=1MO;BYHOUR=9;BYMINUTE=0", "monthly on the first Monday at 09:00"),
        (
            "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,TH;BYHOUR=18;BYMINUTE=30",
            "every 2 weeks on Monday and Thursday at 18:30",
        ),
        ("FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1;BYHOUR=17", "monthly on the last weekday at 17:00"),
        ("FREQ=YEARLY;BYMONTH=12;BYMONTHDAY=24;BYHOUR=9", "yearly on 24 December at 09:00"),
        ("FREQ=DAILY;BYHOUR=9;COUNT=3", "daily at 09:00, 3 times"),
        ("FREQ=DAILY;BYHOUR=9;COUNT=1", "daily at 09:00, once"),
        ("FREQ=DAILY;BYHOUR=9;UNTIL=20270131T235959", "daily at 09:00 until 2027-01-31"),
        ("FREQ=DAILY;BYHOUR=9;UNTIL=20270131", "daily at 09:00 until 2027-01-31"),
        ("FREQ=DAILY;BYHOUR=9;UNTIL=20270131T080000", "daily at 09:00 until 2027-01-31 08:00"),
        (
            "RRULE:FREQ=DAILY;BYHOUR=9\nEXDATE:20260102T090000\nEXDATE;VALUE=DATE:20260105",
            "daily at 09:00, except 2 dates",
        ),
        ("RRULE:FREQ=DAILY;BYHOUR=9\nRDATE:20260102T120000", "daily at 09:00, plus 1 extra date"),
        ("FREQ=DAILY;BYDAY=MO,TU,WE,TH,FR;BYHOUR=8;BYMINUTE=30", "daily on weekdays at 08:30"),
        ("FREQ=DAILY;BYHOUR=9,17", "daily at 09:00 and 17:00"),
        ("FREQ=WEEKLY", "weekly on Thursday at 00:00"),  # from DTSTART 2026-01-01
        ("FREQ=MONTHLY;BYMONTHDAY=1,15,-1;BYHOUR=6", "monthly on the 1st, the 15th and the last day at 06:00"),
        ("FREQ=MONTHLY;BYDAY=1MO,3MO;BYHOUR=9", "monthly on the first and third Monday at 09:00"),
        (
            "FREQ=MONTHLY;BYDAY=-1FR;BYMONTH=3,6,9,12;BYHOUR=9",
            "monthly on the last Friday in March, June, September and December at 09:00",
        ),
        ("FREQ=YEARLY;BYMONTH=5;BYDAY=-1MO;BYHOUR=10", "yearly on the last Monday of May at 10:00"),
        ("FREQ=HOURLY;BYMINUTE=15", "hourly at minute 15"),
        ("FREQ=HOURLY;BYMINUTE=0,30;BYHOUR=9,10,11,12,13", "hourly at minutes 0 and 30 from 09:00 to 13:59"),
        ("FREQ=MINUTELY;INTERVAL=15", "every 15 minutes"),
        ("FREQ=YEARLY;BYWEEKNO=20", "RRULE: FREQ=YEARLY;BYWEEKNO=20"),
    ],
)
def test_describe(text: str, description: str) -> None:
    assert rule(text).describe() == description


# Properties

_FREQ_OFFSETS = {
    "YEARLY": 3 * 366,
    "MONTHLY": 3 * 366,
    "WEEKLY": 2 * 366,
    "DAILY": 366,
    "HOURLY": 40,
    "MINUTELY": 2,
}
_DAYS = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"]


@st.composite
def recurrences(draw: st.DrawFn) -> tuple[str, datetime, datetime]:
    """(RRULE line, DTSTART, a start for walls_after a little later than DTSTART)."""
    freq = draw(st.sampled_from(list(_FREQ_OFFSETS)))
    parts = [f"FREQ={freq}", f"INTERVAL={draw(st.integers(1, 5))}", f"WKST={draw(st.sampled_from(_DAYS))}"]
    days = draw(st.lists(st.sampled_from(_DAYS), min_size=1, max_size=4, unique=True) | st.none())
    if days:
        if freq in ("MONTHLY", "YEARLY") and draw(st.booleans()):
            days = [f"{draw(st.sampled_from([1, 2, -1]))}{day}" for day in days]
        elif freq in ("MONTHLY", "YEARLY") and draw(st.booleans()):
            parts.append(f"BYSETPOS={draw(st.sampled_from([1, 2, -1]))}")
        parts.append("BYDAY=" + ",".join(days))
    if freq not in ("WEEKLY", "YEARLY") and not days and draw(st.booleans()):
        parts.append(f"BYMONTHDAY={draw(st.sampled_from([1, 15, 29, 31, -1]))}")
    if freq != "YEARLY" and draw(st.booleans()):
        parts.append(
            "BYMONTH=" + ",".join(map(str, draw(st.lists(st.integers(1, 12), min_size=1, max_size=4))))
        )
    if draw(st.booleans()):
        hours = draw(st.lists(st.integers(0, 23), min_size=1, max_size=3, unique=True))
        parts.append("BYHOUR=" + ",".join(map(str, hours)))
    if freq in ("HOURLY", "DAILY") and draw(st.booleans()):
        parts.append(f"BYMINUTE={draw(st.integers(0, 59))}")
    dtstart = draw(st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2027, 1, 1)))
    dtstart = dtstart.replace(microsecond=0)
    offset_days = draw(st.floats(min_value=-3, max_value=_FREQ_OFFSETS[freq]))
    return ";".join(parts), dtstart, dtstart + timedelta(days=offset_days)


@settings(max_examples=150, deadline=None)
@given(recurrences())
def test_walls_are_increasing_and_after_the_start(recurrence: tuple[str, datetime, datetime]) -> None:
    line, dtstart, start = recurrence
    try:
        parsed = parse_rrule(line, TZ, dtstart)
    except InvalidSchedule:
        assume(False)
        raise
    listed = list(islice(parsed.walls_after(start), 40))
    assert all(wall > start for wall in listed)
    assert all(a < b for a, b in pairwise(listed))


@settings(max_examples=150, deadline=None)
@given(recurrences())
def test_walls_match_listing_from_dtstart(recurrence: tuple[str, datetime, datetime]) -> None:
    """Starting the listing near `start` instead of at DTSTART changes nothing."""
    line, dtstart, start = recurrence
    try:
        parsed = parse_rrule(line, TZ, dtstart)
    except InvalidSchedule:
        assume(False)
        raise
    from_dtstart = rrulestr(line, dtstart=dtstart)
    assert list(islice(parsed.walls_after(start), 10)) == list(islice(from_dtstart.xafter(start), 10))


def test_module_docstring_example() -> None:
    assert doctest.testmod(reminderd.schedule.rrule).failed == 0
