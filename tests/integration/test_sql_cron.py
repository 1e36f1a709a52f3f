# ruff: noqa: RUF001 - the expected messages write ranges with an en dash, as issue 10 does
"""reminderd.next_cron_occurrence() (migration 0005, reminderd/sql/schema.sql) against the daemon's
time core: next_instant(parse_cron(cron), load_timezone(zone), after) from reminderd/schedule. A
table of known answers (clock changes, seconds, L/W/#, names, croniter's readings), a property test
over generated crons x zones x instants, one-line errors, and a check that both read one tz database.

The module runs in its own clone of the migrated database; the property test sends its comparisons
in batches, one round trip each.
"""

from __future__ import annotations

import asyncio
import functools
import os
import zoneinfo
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reminderd.schedule import InvalidSchedule, load_timezone, parse_cron
from reminderd.schedule.wallclock import load_iana_timezone, next_instant, not_an_iana_zone

# Per-case errors come back as values, so one bad cron does not fail a whole batch.
ATTEMPT = """
CREATE FUNCTION pg_temp.attempt(cron text, zone text, after timestamptz,
                                OUT fire timestamptz, OUT state text, OUT message text)
LANGUAGE plpgsql AS $$
BEGIN
    fire := reminderd.next_cron_occurrence(cron, zone, after);
EXCEPTION WHEN OTHERS THEN
    state := SQLSTATE;
    message := SQLERRM;
END
$$;
CREATE FUNCTION pg_temp.wall_in(zone text, instant timestamptz) RETURNS timestamp
LANGUAGE plpgsql SET TimeZone = 'UTC' AS $$
BEGIN
    PERFORM set_config('TimeZone', zone, true);
    RETURN instant::timestamp;
END
$$;
"""
BATCH = """
SELECT r.fire, r.state, r.message
FROM unnest($1::text[], $2::text[], $3::timestamptz[]) WITH ORDINALITY AS t (cron, zone, after, n)
CROSS JOIN LATERAL pg_temp.attempt(t.cron, t.zone, t.after) AS r
ORDER BY t.n
"""


@dataclass(frozen=True)
class Failed:
    """What the SQL function raised."""

    state: str
    message: str


Case = tuple[str, str, datetime]  # cron, zone, after
T = TypeVar("T")


class SqlCron:
    """One connection to the module's database, on its own event loop, for plain (and hypothesis)
    tests."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.connection: asyncpg.Connection = self.loop.run_until_complete(asyncpg.connect(url))
        self.run(self.connection.execute(ATTEMPT))

    def run(self, awaitable: Awaitable[T]) -> T:
        return self.loop.run_until_complete(awaitable)

    def many(self, cases: Sequence[Case]) -> list[datetime | Failed]:
        rows = self.run(self.connection.fetch(
            BATCH, [c for c, _, _ in cases], [z for _, z, _ in cases], [a for _, _, a in cases]
        ))
        return [row["fire"] if row["state"] is None else Failed(row["state"], row["message"]) for row in rows]

    def one(self, cron: str, zone: str, after: datetime) -> datetime | Failed:
        return self.many([(cron, zone, after)])[0]

    def error(self, cron: str, zone: str, after: datetime) -> asyncpg.PostgresError:
        with pytest.raises(asyncpg.PostgresError) as caught:
            self.run(self.connection.fetchval(
                "SELECT reminderd.next_cron_occurrence($1, $2, $3)", cron, zone, after
            ))
        return caught.value

    def close(self) -> None:
        self.run(self.connection.close())
        self.loop.close()


@pytest.fixture(scope="module")
def sql(module_database_url: str) -> Iterator[SqlCron]:
    cron_sql = SqlCron(module_database_url)
    yield cron_sql
    cron_sql.close()


def python_next(cron: str, zone: str, after: datetime) -> datetime | Exception | None:
    """The daemon's answer, or what it raised (InvalidSchedule, or croniter's own ValueError)."""
    try:
        return next_instant(parse_cron(cron), load_timezone(zone), after)
    except ValueError as exc:
        return exc


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# (1) Known answers ---------------------------------------------------------------------------------
KNOWN = [
    # New York, 8 March 2026: 02:00 EST jumps to 03:00 EDT (07:00Z);
    # 1 November: 02:00 EDT goes back to 01:00 EST (06:00Z).
    ("30 2 * * *", "America/New_York", at(2026, 3, 8), at(2026, 3, 8, 7)),  # skipped: at the jump
    ("30 * * * *", "America/New_York", at(2026, 3, 8, 6, 30), at(2026, 3, 8, 7)),  # hourly, too
    ("30 1 * * *", "America/New_York", at(2026, 11, 1), at(2026, 11, 1, 5, 30)),  # repeated: its first reading
    ("30 1 * * *", "America/New_York", at(2026, 11, 1, 5, 30), at(2026, 11, 2, 6, 30)),  # ... only
    ("30 * * * *", "America/New_York", at(2026, 11, 1, 5, 31), at(2026, 11, 1, 6, 30)),  # hourly: both readings
    ("0 * * * *", "America/New_York", at(2026, 11, 1, 5), at(2026, 11, 1, 6)),
    # An hour field covering every hour is *, however it is written: both readings of 01:00.
    ("0 *,5 * * *", "America/New_York", at(2026, 11, 1, 5), at(2026, 11, 1, 6)),
    ("0 0-11,12-23 * * *", "America/New_York", at(2026, 11, 1, 5), at(2026, 11, 1, 6)),
    ("0 *,0-23 * * *", "America/New_York", at(2026, 11, 1, 5), at(2026, 11, 1, 6)),
    ("0 0-22 * * *", "America/New_York", at(2026, 11, 1, 5), at(2026, 11, 1, 7)),  # not all: the first only
    # London, 29 March: 01:00 GMT to 02:00 BST (01:00Z); 25 October: 02:00 BST back to 01:00 GMT (01:00Z).
    ("30 1 * * *", "Europe/London", at(2026, 3, 29), at(2026, 3, 29, 1)),
    ("30 1 * * *", "Europe/London", at(2026, 10, 25), at(2026, 10, 25, 0, 30)),
    ("*/15 * * * *", "Europe/London", at(2026, 10, 25, 0, 50), at(2026, 10, 25, 1)),  # 01:00 GMT, again
    # Lord Howe shifts by 30 minutes: 5 April 02:00 (+11) back to 01:30 (+10:30) at 15:00Z on the 4th;
    # 4 October 02:00 (+10:30) on to 02:30 (+11) at 15:30Z on the 3rd.
    ("45 1 * * *", "Australia/Lord_Howe", at(2026, 4, 4, 14), at(2026, 4, 4, 14, 45)),
    ("*/15 * * * *", "Australia/Lord_Howe", at(2026, 4, 4, 14, 50), at(2026, 4, 4, 15)),  # 01:30 again
    ("15 2 * * *", "Australia/Lord_Howe", at(2026, 10, 3, 15), at(2026, 10, 3, 15, 30)),
    ("0 9 * * *", "Asia/Kathmandu", at(2026, 6, 1), at(2026, 6, 1, 3, 15)),  # +05:45
    ("0 9 * * 1-5", "Asia/Kolkata", at(2026, 12, 24, 3, 30), at(2026, 12, 25, 3, 30)),  # strictly after
    ("30 2 * * *", "Europe/Dublin", at(2026, 3, 29), at(2026, 3, 29, 1, 30)),  # negative DST in winter
    ("0 1 * * *", "Antarctica/Troll", at(2026, 3, 29, 0, 30), at(2026, 3, 29, 1)),  # a two-hour jump
    ("0 9 * * *", "CET", at(2026, 7, 1), at(2026, 7, 1, 7)),  # the zone (summer time), not the abbreviation
    # Seconds.
    ("*/20 * * * * *", "UTC", at(2026, 1, 1, 0, 0, 5), at(2026, 1, 1, 0, 0, 20)),
    ("30 0 9 * * MON-FRI", "Europe/London", at(2026, 6, 5, 12), at(2026, 6, 8, 8, 0, 30)),
    # L, W, #, names, aliases.
    ("0 0 L * *", "UTC", at(2028, 2, 1), at(2028, 2, 29)),
    ("0 9 * * L5", "UTC", at(2026, 1, 1), at(2026, 1, 30, 9)),  # the last Friday
    ("0 9 * * 5L", "UTC", at(2026, 1, 1), at(2026, 1, 30, 9)),
    ("0 9 15W * *", "UTC", at(2026, 8, 1), at(2026, 8, 14, 9)),  # the 15th is a Saturday
    ("0 9 1W * *", "UTC", at(2026, 7, 31, 12), at(2026, 8, 3, 9)),  # Saturday the 1st: Monday the 3rd
    ("0 9 31W * *", "UTC", at(2027, 1, 1), at(2027, 1, 29, 9)),  # Sunday the 31st: Friday the 29th
    ("0 9 * * 1#1", "UTC", at(2026, 6, 1, 10), at(2026, 7, 6, 9)),
    ("0 9 * JAN,jul Mon", "UTC", at(2026, 2, 1), at(2026, 7, 6, 9)),
    ("0 0 * * 7", "UTC", at(2026, 6, 3), at(2026, 6, 7)),  # 7 is Sunday
    ("@weekly", "UTC", at(2026, 6, 3), at(2026, 6, 7)),
    ("0 0 29 2 *", "UTC", at(2026, 1, 1), at(2028, 2, 29)),
    ("0 0 * 2 1#5", "UTC", at(2026, 1, 1), at(2044, 2, 29)),  # February with five Mondays
    # Both day fields restricted: either fires (croniter's day_or).
    ("0 9 13 * 5", "UTC", at(2026, 2, 1), at(2026, 2, 6, 9)),
    ("0 9 13 * 5", "UTC", at(2026, 2, 6, 10), at(2026, 2, 13, 9)),
    # croniter's own readings, which the daemon has: "1-1" is the whole field, "59/15" is 59 alone,
    # the wrapped part of "50-10/15" starts at 6, and beside W a day of week adds nothing.
    ("0 9 * * 1-1", "UTC", at(2026, 6, 3, 10), at(2026, 6, 4, 9)),
    ("59/15 * * * *", "UTC", at(2026, 6, 3), at(2026, 6, 3, 0, 59)),
    ("50-10/15 * * * *", "UTC", at(2026, 6, 3, 0, 51), at(2026, 6, 3, 1, 6)),
    ("0 9 15W * 1", "UTC", at(2026, 8, 1), at(2026, 8, 14, 9)),
]


@pytest.mark.parametrize(("cron", "zone", "after", "expected"), KNOWN)
def test_known_answers(sql: SqlCron, cron: str, zone: str, after: datetime, expected: datetime) -> None:
    assert python_next(cron, zone, after) == expected
    assert sql.one(cron, zone, after) == expected


def test_a_whole_table_in_one_call_is_the_same(sql: SqlCron) -> None:
    assert sql.many([(c, z, a) for c, z, a, _ in KNOWN]) == [expected for *_, expected in KNOWN]


# (2) SQL against Python, over generated crons x zones x instants ---------------------------------
@dataclass(frozen=True)
class FieldKind:
    name: str
    lo: int
    hi: int


SECOND, MINUTE, HOUR = FieldKind("second", 0, 59), FieldKind("minute", 0, 59), FieldKind("hour", 0, 23)
DAY, MONTH, WEEKDAY = FieldKind("day", 1, 31), FieldKind("month", 1, 12), FieldKind("weekday", 0, 6)
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
WEEKDAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
ALIASES = ["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"]
STEPS = [1, 2, 3, 5, 7, 10, 15, 20, 30, 45, 60, 100]
JUNK = ["H", "H/5", "H(0-29)", "R", "x", "-5", "5-", "", "?", "*-5", "1.5", "*/", "*/0", "/5", "\uff15", "L-5",
        "99999999999", "1-2-3"]


def weighted(*choices: tuple[int, st.SearchStrategy[str]]) -> st.SearchStrategy[str]:
    """One of `choices`, drawn about in proportion to their weights. Hypothesis favours the first and
    the last branch of a one_of: give those to a common, valid choice, and rare ones in between."""
    return st.one_of(*[strategy for weight, strategy in choices for _ in range(weight)])


def spelt(names: list[str]) -> st.SearchStrategy[str]:
    return st.sampled_from(names).flatmap(lambda name: st.sampled_from([name, name.upper(), name.title()]))


def number(kind: FieldKind) -> st.SearchStrategy[str]:
    return weighted(
        (10, st.integers(kind.lo, kind.hi).map(str)),
        (1, st.integers(kind.lo, kind.hi).map(lambda n: f"0{n}")),
        (10, st.integers(kind.lo, kind.hi).map(str)),
    )


def value(kind: FieldKind) -> st.SearchStrategy[str]:
    if kind is MONTH:
        return weighted((3, number(kind)), (2, spelt(MONTHS)), (1, number(kind)))
    if kind is WEEKDAY:
        return weighted((3, number(kind)), (2, spelt(WEEKDAYS)), (1, st.just("7")), (1, number(kind)))
    return number(kind)


def special(kind: FieldKind) -> st.SearchStrategy[str]:
    if kind is DAY:
        return weighted(
            (3, st.sampled_from(["L", "l"])),
            (3, st.integers(1, 31).map(lambda d: f"{d}W")),
            (1, st.integers(1, 31).map(lambda d: f"W{d}")),
            (1, st.sampled_from(["5-L", "20-l/3", "?"])),
            (3, st.integers(1, 31).map(lambda d: f"{d}w")),
        )
    return weighted(
        (3, st.tuples(st.integers(0, 7), st.integers(1, 5)).map(lambda p: f"{p[0]}#{p[1]}")),
        (2, st.tuples(spelt(WEEKDAYS), st.integers(1, 5)).map(lambda p: f"{p[0]}#{p[1]}")),
        (2, st.integers(0, 7).map(lambda d: f"L{d}")),
        (2, st.integers(0, 7).map(lambda d: f"{d}L")),
        (1, st.tuples(spelt(WEEKDAYS), spelt(WEEKDAYS), st.integers(1, 5)).map(
            lambda p: f"{p[0]}-{p[1]}#{p[2]}")),
        (1, st.just("?")),
        (3, st.tuples(st.integers(0, 7), st.integers(1, 5)).map(lambda p: f"{p[0]}#{p[1]}")),
    )


def junk(kind: FieldKind) -> st.SearchStrategy[str]:
    """What the daemon refuses: out of range, a bad W, #, L, H, R, or not cron at all."""
    return st.one_of(
        st.integers(kind.hi + 1, kind.hi + 9).map(str),
        st.just(str(kind.lo - 1) if kind.lo else "-1"),
        st.sampled_from(JUNK),
        st.sampled_from(["W0", "32W", "LW", "1#0", "1#6", "L8", "8L", "l#1", "mon-fri#0", "6-3,?"]),
    )


def item(kind: FieldKind) -> st.SearchStrategy[str]:
    step = st.sampled_from(STEPS)
    return weighted(
        (24, value(kind)),
        (6, st.just("*")),
        (12, step.map(lambda n: f"*/{n}")),
        (12, st.tuples(value(kind), value(kind)).map("-".join)),
        (9, st.tuples(value(kind), value(kind), step).map(lambda p: f"{p[0]}-{p[1]}/{p[2]}")),
        (6, st.tuples(value(kind), step).map(lambda p: f"{p[0]}/{p[1]}")),
        (2, junk(kind)),
        (12 if kind in (DAY, WEEKDAY) else 0, special(kind)),
        (12, value(kind)),
    )


def covering_hours() -> st.SearchStrategy[str]:
    """Hour fields that cover all 24 hours without being a lone *: each is *, a repeated hour
    firing at both of its readings."""
    return st.one_of(
        st.integers(0, 23).map(lambda h: f"*,{h}"),
        st.integers(0, 23).map(lambda h: f"{h},*"),
        st.integers(0, 22).map(lambda k: f"0-{k},{k + 1}-23"),
        st.sampled_from(["0-23", "*/1", "*,0-23", "*/2,1-23/2", "12-11", "0-23/1,5"]),
    )


def field(kind: FieldKind, star: int) -> st.SearchStrategy[str]:
    return weighted(
        (star, st.just("*")),
        (1 if kind in (DAY, WEEKDAY) else 0, st.just("?")),
        (2 if kind in (DAY, WEEKDAY) else 0, special(kind)),
        (2 if kind is HOUR else 0, covering_hours()),
        (6, st.lists(item(kind), min_size=1, max_size=3).map(",".join)),
        (star, st.just("*")),
    )


# Built once: hypothesis validates a strategy the first time it draws from it.
FIELDS = [field(kind, star)
          for kind, star in [(SECOND, 3), (MINUTE, 2), (HOUR, 5), (DAY, 8), (MONTH, 10), (WEEKDAY, 8)]]
SHAPES = st.sampled_from(["five"] * 9 + ["alias"] * 2 + ["other"] + ["six"] * 9 + ["five"] * 9)
SEPARATORS = st.sampled_from([" "] * 12 + ["  ", "\t", "\u00a0", "\u3000"])
SPELT_ALIASES = spelt(ALIASES)


@st.composite
def crons(draw: st.DrawFn) -> str:
    shape = draw(SHAPES)
    if shape == "alias":
        alias = draw(SPELT_ALIASES)
        return draw(st.sampled_from([alias, f" {alias}\n", f"{alias} *"]))
    fields = [draw(strategy) for strategy in (FIELDS if shape == "six" else FIELDS[1:])]
    if shape == "other":
        fields = fields[: draw(st.sampled_from([1, 4]))] if draw(st.booleans()) else [*fields, "*", "*"]
    return draw(SEPARATORS).join(fields)


# Every IANA zone (not localtime or Factory, which zoneinfo lists too: reminderd refuses them).
ALL_ZONES = sorted(z for z in zoneinfo.available_timezones() if not_an_iana_zone(z) is None)
DST_ZONES = [  # zones whose clocks change in 2026; the property test leans on them
    z for z in ALL_ZONES
    if at(2026, 1, 15).astimezone(zoneinfo.ZoneInfo(z)).utcoffset()
    != at(2026, 7, 15).astimezone(zoneinfo.ZoneInfo(z)).utcoffset()
]
FIRST, LAST = at(2024, 1, 1), at(2031, 1, 1)


@functools.cache
def clock_changes(zone: str) -> tuple[datetime, ...]:
    """The instants in 2024-2030 at which `zone`'s UTC offset changes, to the second."""
    tz = zoneinfo.ZoneInfo(zone)

    def offset(instant: datetime) -> timedelta | None:
        return instant.astimezone(tz).utcoffset()

    changes, day = [], FIRST
    while day < LAST:
        following = day + timedelta(days=1)
        if offset(day) != offset(following):
            lo, hi = day, following
            while hi - lo > timedelta(seconds=1):
                mid = lo + (hi - lo) / 2
                lo, hi = (lo, mid) if offset(mid) == offset(following) else (mid, hi)
            changes.append(hi.replace(microsecond=0))
        day = following
    return tuple(changes)


@functools.cache
def instants(zone: str) -> st.SearchStrategy[datetime]:
    seconds = int((LAST - FIRST).total_seconds())
    uniform = st.tuples(st.integers(0, seconds), st.sampled_from([0, 0, 0, 1, 500_000, 999_999])).map(
        lambda p: FIRST + timedelta(seconds=p[0], microseconds=p[1])
    )
    changes = clock_changes(zone)
    if not changes:
        return uniform
    near = st.tuples(
        st.sampled_from(changes),
        st.one_of(st.integers(-6 * 3600, 6 * 3600), st.sampled_from([-1, 0, 1])),
        st.sampled_from([0, 0, 0, 999_999]),
    ).map(lambda p: p[0] + timedelta(seconds=p[1], microseconds=p[2]))
    return st.one_of(uniform, near, near)


ZONES = st.one_of(st.sampled_from(DST_ZONES), st.sampled_from(DST_ZONES), st.sampled_from(ALL_ZONES))
CRONS = crons()


@st.composite
def cases(draw: st.DrawFn) -> Case:
    zone = draw(ZONES)
    return draw(CRONS), zone, draw(instants(zone))


# CI runs 300 batches of 10-40 comparisons (about 12 s here); HYPOTHESIS_SCALE=10 runs ten times as many.
EXAMPLES = 300 * int(os.environ.get("HYPOTHESIS_SCALE", "1"))


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(cases(), min_size=10, max_size=40))
def test_sql_agrees_with_python(sql: SqlCron, batch: list[Case]) -> None:
    disagreements = []
    for (cron, zone, after), got in zip(batch, sql.many(batch), strict=True):
        expected = python_next(cron, zone, after)
        if isinstance(expected, Exception):
            agrees = isinstance(got, Failed) and got.state == "22023" and "\n" not in got.message
        else:
            agrees = got == expected
        if not agrees:
            disagreements.append(f"{cron!r} in {zone} after {after.isoformat()}: "
                                 f"Python {expected!r}, SQL {got!r}")
    assert not disagreements, "\n".join(disagreements)


COVERING = covering_hours()
DAILY_MINUTES = st.sampled_from(["0", "30", "*/20", "0 15", "*"])  # "0 15": seconds 0, minute 15
DAYS = st.sampled_from(["* * *", "* * 0", "1-7 * *"])


@st.composite
def covering_cases(draw: st.DrawFn) -> tuple[Case, Case]:
    """A cron whose hour field covers every hour, and the same cron with * there, near a clock change."""
    zone = draw(st.sampled_from(DST_ZONES))
    minute, hours, rest = draw(DAILY_MINUTES), draw(COVERING), draw(DAYS)
    after = draw(instants(zone))
    return (f"{minute} {hours} {rest}", zone, after), (f"{minute} * {rest}", zone, after)


@settings(max_examples=EXAMPLES // 3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(covering_cases(), min_size=10, max_size=20))
def test_an_hour_field_covering_every_hour_fires_as_star_does(
    sql: SqlCron, batch: list[tuple[Case, Case]]
) -> None:
    """Python and SQL both: "0 *,5 * * *" fires at every reading of a repeated hour, as "0 * * * *"."""
    covering, star = [c for c, _ in batch], [s for _, s in batch]
    expected = [python_next(*case) for case in star]
    assert [python_next(*case) for case in covering] == expected
    assert sql.many(covering) == sql.many(star) == expected


# (3) Bad input: one line, SQLSTATE 22023 ---------------------------------------------------------
NOW = at(2026, 6, 1)
BAD_CRONS = [
    ("61 * * * *", 'minute 61 is out of range 0–59'),
    ("0 24 * * *", 'hour 24 is out of range 0–23'),
    ("0 0 32 * *", 'day of month 32 is out of range 1–31'),
    ("0 0 1 13 *", 'month 13 is out of range 1–12'),
    ("0 0 * * 8", 'day of week 8 is out of range 0–7 (0 and 7 are Sunday)'),
    ("60 0 0 * * *", 'second 60 is out of range 0–59'),
    ("50-70 * * * *", 'minute 70 in "50-70" is out of range 0–59'),
    ("0 0 0-5 * *", 'day of month 0 in "0-5" is out of range 1–31'),
    ("x * * * *", 'minute "x" is not a number (0–59)'),
    ("0 0 * FOO *", 'month "FOO" is not a month (1–12 or JAN–DEC)'),
    ("0 0 * * Funday", 'day of week "Funday" is not a day of the week (0–7, SUN–SAT, 1#2 or L5)'),
    ("0 0 LW * *", 'day of month "LW" is not a day of the month (1–31, L or 15W)'),
    ("5-x * * * *", 'minute "5-x": "x" is not a number (0–59)'),
    ("*/0 * * * *", 'minute "*/0": the step must be at least 1'),
    ("-5 * * * *", 'minute "-5": negative numbers are not allowed'),
    ("1,,2 * * * *", 'minute "1,,2" has an empty list item'),
    ("0 ? * * *", 'hour "?": ? is only for day of month or day of week'),
    ("0 0 ?5 * *", 'day of month "?5": ? stands alone (it means *)'),
    ("0 0 1,15W * *", 'day of month "1,15W": W takes a single day, not a list'),
    ("0 0 32W * *", 'day of month "32W": W takes a day 1–31 (15W is the weekday nearest the 15th)'),
    ("0 0 * * MON#6", 'day of week "MON#6": # takes 1–5 (1#1 is the first Monday of the month)'),
    ("0 0 * * MON#1,TUE", 'day of week "MON#1,TUE": # and L cannot be mixed with plain days of the week'),
    ("H * * * *", 'minute "H": hashed (H) values are not supported'),
    ("R * * * *", "random (R) fields are not supported"),
    ("* * * *", "expected 5 fields (minute hour day month weekday) or 6 with a leading seconds field, got 4"),
    ("", "expected 5 fields (minute hour day month weekday) or 6 with a leading seconds field, got 0"),
    ("@every 5m", "expected 5 fields (minute hour day month weekday) or 6 with a leading seconds field, got 2"),
    ("0 0 30 2 *", "it never fires"),
    ("0 0 1 * 1#5", "it never fires"),  # croniter: the 1st must also be able to be a fifth Monday
    # What croniter takes and cron.py's check_fields refuses (so the daemon refuses it too).
    ("0 0 W1 * *", 'day of month "W1" is not a day of the month (1–31, L or 15W)'),
    ("0 0 * * MON-FRI#1", 'day of week "MON-FRI#1": "fri#1" is not a day of the week (0–7 or SUN–SAT)'),
    ("0 0 * * *,L5", 'day of week "*,L5": # and L cannot be mixed with plain days of the week'),
    ("0 0 * * 0-6,1#1", 'day of week "0-6,1#1": # and L cannot be mixed with plain days of the week'),
    ("0 0 * * L05", 'day of week "L05" is not a day of the week (0–7, SUN–SAT, 1#2 or L5)'),
]


@pytest.mark.parametrize(("cron", "reason"), BAD_CRONS)
def test_a_bad_cron_is_one_line_naming_the_field(sql: SqlCron, cron: str, reason: str) -> None:
    with pytest.raises(InvalidSchedule):
        parse_cron(cron)  # the daemon refuses it too
    error = sql.error(cron, "UTC", NOW)
    assert error.sqlstate == "22023"
    assert error.message == f'invalid cron "{cron}": {reason}'
    assert "\n" not in error.message
    if reason != "it never fires":
        assert error.hint is not None and error.hint.startswith("A cron is 5 fields")


def test_a_cron_that_never_fires_says_why(sql: SqlCron) -> None:
    error = sql.error("0 0 31 4 *", "UTC", NOW)
    assert error.message == 'invalid cron "0 0 31 4 *": it never fires'
    assert error.detail == "No day matches its day of month, month and day of week in 50 years from 2000-01-01."
    assert error.hint is not None and "no 31st in April" in error.hint


@pytest.mark.parametrize(
    ("zone", "hint"),
    [
        ("Mars/Olympus_Mons", "Use an IANA name such as Europe/London or Asia/Kolkata."),
        ("america/new_york", "Timezone names are case-sensitive: America/New_York."),
        ("UTC+3", "Use an IANA name such as Europe/London or Asia/Kolkata."),  # a POSIX rule, not a zone
        ("+05", "Use an IANA name such as Europe/London or Asia/Kolkata."),
        ("../etc/passwd", "Use an IANA name such as Europe/London or Asia/Kolkata."),
        ("", "Use an IANA name such as Europe/London or Asia/Kolkata."),
    ],
)
def test_an_unknown_zone_is_refused_as_python_refuses_it(sql: SqlCron, zone: str, hint: str) -> None:
    with pytest.raises(InvalidSchedule):
        load_timezone(zone)
    error = sql.error("0 9 * * *", zone, NOW)
    assert (error.sqlstate, error.message, error.hint) == ("22023", f'unknown timezone "{zone}"', hint)


def test_the_insert_check_takes_exactly_the_zones_python_reads(sql: SqlCron) -> None:
    """reminderd.is_timezone() (the insert trigger's check) over every zone, in three spellings."""
    names = sorted({spelling for zone in ALL_ZONES for spelling in (zone, zone.lower(), zone.upper())})
    rows = sql.run(sql.connection.fetch(
        "SELECT reminderd.is_timezone(z) AS ok FROM unnest($1::text[]) WITH ORDINALITY AS t (z, n) ORDER BY n",
        names,
    ))
    differ = [name for name, row in zip(names, rows, strict=True)
              if row["ok"] is isinstance(python_zone(name), Exception)]
    assert not differ, f"SQL and Python disagree on these zone names: {differ}"


def python_zone(name: str) -> object:
    try:
        return load_iana_timezone(name)
    except InvalidSchedule as exc:
        return exc


def test_a_zone_counting_leap_seconds_is_refused_naming_the_zone_to_use(sql: SqlCron) -> None:
    # Python's zoneinfo reads right/UTC (ignoring its leap seconds); PostgreSQL refuses it. Not an
    # IANA zone name in use (zoneinfo.available_timezones() leaves right/ out), so refused here,
    # before PostgreSQL's own words ('time zone "right/UTC" appears to use leap seconds'), which
    # did not say what to write instead (0039).
    error = sql.error("0 9 * * *", "right/UTC", NOW)
    assert (error.sqlstate, error.message) == ("22023", 'unknown timezone "right/UTC"')
    assert (error.detail, error.hint) == ("right/UTC is a copy of UTC counting leap seconds, not an IANA zone.",
                                          "Use UTC.")


@pytest.mark.parametrize(
    ("zone", "detail", "hint"),
    [
        ("localtime", "localtime is the zone of whichever host reads it (/etc/localtime), not an IANA zone.",
         None),
        ("posixrules", "posixrules is the rules POSIX TZ strings borrow, not an IANA zone.", None),
        ("Factory", "Factory is tzdata's placeholder for a zone not set, not an IANA zone.", None),
        ("posix/Europe/London", "posix/Europe/London is a copy of Europe/London under another name, not an IANA"
                                " zone.", "Use Europe/London."),
    ],
)
def test_a_file_of_the_zone_directory_that_names_no_iana_zone_is_refused_as_python_refuses_it(
    sql: SqlCron, zone: str, detail: str, hint: str | None
) -> None:
    """PostgreSQL reads these (localtime: whatever zone the server's host is in); so did the insert
    check until migration 0032. Python refuses them too (reminderd.validation.checked_timezone)."""
    assert isinstance(python_zone(zone), InvalidSchedule)
    error = sql.error("0 9 * * *", zone, NOW)
    assert (error.sqlstate, error.message, error.detail) == ("22023", f'unknown timezone "{zone}"', detail)
    assert error.hint == (hint or "Use an IANA name such as Europe/London or Asia/Kolkata.")
    assert sql.run(sql.connection.fetchval("SELECT reminderd.is_timezone($1)", zone)) is False


def test_beyond_the_search_raises(sql: SqlCron) -> None:
    assert isinstance(python_next("0 0 29 2 *", "UTC", at(9997, 1, 1)), ValueError)
    error = sql.error("0 0 29 2 *", "UTC", at(9997, 1, 1))
    assert error.sqlstate == "22023"
    assert error.message == 'cron "0 0 29 2 *" does not fire in the 50 years after 9997-01-01 00:00:00 in UTC'


def test_infinity_and_null(sql: SqlCron) -> None:
    infinite = sql.run(sql.connection.fetch(
        "SELECT r.state, r.message FROM pg_temp.attempt('0 9 * * *', 'UTC', 'infinity') AS r"
    ))
    assert [tuple(row) for row in infinite] == [("22023", "after must be a finite instant, not infinity")]
    nulls = sql.run(sql.connection.fetchrow(
        "SELECT reminderd.next_cron_occurrence(NULL, 'UTC', now()) AS a,"
        " reminderd.next_cron_occurrence('0 9 * * *', NULL, now()) AS b,"
        " reminderd.next_cron_occurrence('0 9 * * *', 'UTC', NULL) AS c"
    ))
    assert tuple(nulls) == (None, None, None)


def test_the_session_timezone_is_left_as_it_was(sql: SqlCron) -> None:
    connection = sql.connection
    sql.run(connection.execute("SET TimeZone = 'Asia/Tokyo'"))
    try:
        assert sql.one("0 9 * * *", "America/New_York", NOW) == at(2026, 6, 1, 13)
        assert isinstance(sql.one("0 9 * * *", "Nowhere/Special", NOW), Failed)
        assert sql.run(connection.fetchval("SHOW TimeZone")) == "Asia/Tokyo"
    finally:
        sql.run(connection.execute("RESET TimeZone"))


# One tz database ------------------------------------------------------------------------------------
def test_python_and_postgresql_read_the_same_tz_database(sql: SqlCron) -> None:
    """The agreement above holds only while both read one tz database: here /usr/share/zoneinfo
    (Python's zoneinfo.TZPATH comes first, before the tzdata wheel; Debian's PostgreSQL is built
    --with-system-tzdata). Every zone's wall clock, at instants from 1970 to 2060, must agree."""
    names = {row["name"] for row in sql.run(sql.connection.fetch("SELECT name FROM pg_timezone_names"))}
    missing = sorted(set(ALL_ZONES) - names)
    assert not missing, f"zones Python knows and PostgreSQL does not: {missing}"
    probes = [at(year, month, 1, 12) for year in (1970, 1990, 2010, *range(2024, 2031), 2040, 2060)
              for month in (1, 4, 7, 10)]
    pairs = [(zone, instant) for zone in ALL_ZONES for instant in probes]
    rows = sql.run(sql.connection.fetch(
        "SELECT pg_temp.wall_in(z, t) AS wall"
        " FROM unnest($1::text[], $2::timestamptz[]) WITH ORDINALITY AS p (z, t, n) ORDER BY n",
        [z for z, _ in pairs], [t for _, t in pairs]
    ))
    differ = sorted({
        zone for (zone, instant), row in zip(pairs, rows, strict=True)
        if row["wall"] != instant.astimezone(zoneinfo.ZoneInfo(zone)).replace(tzinfo=None)
    })
    assert not differ, f"PostgreSQL and Python read these zones differently (another tz database?): {differ}"
