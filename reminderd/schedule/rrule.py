"""RFC 5545 recurrences (RRULE with DTSTART, EXDATE and RDATE) as wall-clock schedules.

For calendars richer than cron: "the first Monday of the month", "the last business day". A rule is
stored in a message row's `rrule` column beside the row's IANA `timezone`, and every date-time in it
is a wall time in that zone. This module only lists naive wall times (dateutil does the RFC 5545
arithmetic); wallclock.next_instant maps them to instants with the DST rules. Pure: no clock is read.

>>> rule = parse_rrule("DTSTART:20260101T000000\\nRRULE:FREQ=MONTHLY;BYDAY=1MO;BYHOUR=9;BYMINUTE=0",
...                    "Europe/Berlin")
>>> rule.describe()
'monthly on the first Monday at 09:00'
>>> next(rule.walls_after(datetime(2026, 1, 1)))
datetime.datetime(2026, 1, 5, 9, 0)
"""

from __future__ import annotations

import functools
import heapq
import math
import re
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from dateutil.rrule import DAILY, HOURLY, MINUTELY, MONTHLY, WEEKLY, YEARLY, rrule
from dateutil.rrule import weekday as rrule_weekday

from .rrule_parts import Freq, RuleParts
from .rrule_words import (
    DAY_NAMES,
    describe_rule,
    join_words,
    plural,
    span_text,
    until_text,
)
from .wallclock import InvalidSchedule, load_timezone

__all__ = ["RRule", "anchor_rrule", "parse_rrule"]

_FREQS: dict[str, Freq] = {
    "YEARLY": YEARLY,
    "MONTHLY": MONTHLY,
    "WEEKLY": WEEKLY,
    "DAILY": DAILY,
    "HOURLY": HOURLY,
    "MINUTELY": MINUTELY,
}
_FREQ_NAMES = tuple(_FREQS)  # by frequency

_WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")  # index == datetime.weekday()
_MAX_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# A COUNT rule is listed from DTSTART on every call, so its length is bounded; longer runs use UNTIL.
_MAX_COUNT = 10_000
# Keeps one step of dateutil's arithmetic cheap (it walks month by month through a DAILY step).
_MAX_INTERVAL = 10_000

# Integer list parts: (lowest, highest, negatives allowed).
_INT_LIST_PARTS = {
    "BYSECOND": (0, 59, False),
    "BYMINUTE": (0, 59, False),
    "BYHOUR": (0, 23, False),
    "BYMONTHDAY": (1, 31, True),
    "BYYEARDAY": (1, 366, True),
    "BYWEEKNO": (1, 53, True),
    "BYMONTH": (1, 12, False),
    "BYSETPOS": (1, 366, True),
}
_PART_NAMES = {"FREQ", "INTERVAL", "COUNT", "UNTIL", "WKST", "BYDAY", *_INT_LIST_PARTS}

_INT = re.compile(r"[+-]?\d{1,9}")
_BYDAY = re.compile(r"([+-]?\d{1,2})?([A-Z]{2})")
_DATE = re.compile(r"\d{8}")
_DATE_TIME = re.compile(r"(\d{8})T(\d{6})(Z?)")
_UNTIL = re.compile(r"(\d{8})(?:T(\d{6})(Z?))?")


@dataclass(frozen=True)
class _Compiled:
    """Everything walls_after needs, built once by parse_rrule."""

    parts: RuleParts  # as written
    effective: RuleParts  # with RFC 5545's defaults from DTSTART filled in
    rule: rrule  # from DTSTART
    exdates: frozenset[datetime]
    exdays: frozenset[date]
    rdates: tuple[datetime, ...]  # sorted, unique


@dataclass(frozen=True)
class RRule:
    """A parsed recurrence; satisfies wallclock.WallSchedule. Build it with parse_rrule."""

    text: str  # as given, stripped
    tz_name: str
    start: datetime  # naive DTSTART wall time actually used
    _compiled: _Compiled = field(compare=False, repr=False)

    @property
    def count(self) -> int | None:
        """The rule's COUNT, if any."""
        return self._compiled.parts.count

    @property
    def until_instant(self) -> datetime | None:
        """The rule's UNTIL as an instant (aware, UTC) when it was written in UTC (…Z), else None."""
        return self._compiled.parts.until_instant

    @property
    def every_hour(self) -> bool:
        """True when it fires in every hour of the days it fires on."""
        parts = self._compiled.parts
        all_hours = set(parts.byhour) == set(range(24))
        if parts.freq == HOURLY:
            return parts.interval == 1 and (all_hours or not parts.byhour)
        if parts.freq == MINUTELY:
            # Steps dividing the hour repeat the same minutes every hour; other steps below an hour
            # reach every hour only when no BYMINUTE filters them.
            steps_into_every_hour = 60 % parts.interval == 0 or (parts.interval < 60 and not parts.byminute)
            return steps_into_every_hour and (all_hours or not parts.byhour)
        return all_hours and not parts.bysetpos  # e.g. FREQ=DAILY;BYHOUR=0,1,...,23

    def walls_after(self, start: datetime) -> Iterator[datetime]:
        """Naive wall times strictly after `start`, ascending; ends when the rule ends."""
        if start.tzinfo is not None:
            raise ValueError("start must be a naive wall time")
        compiled = self._compiled
        until = compiled.parts.until
        rule_walls: Iterator[datetime]
        if until is not None and start >= until:
            rule_walls = iter(())
        else:
            rebased = None if compiled.parts.count is not None else self._rebased_start(start)
            rule = compiled.rule if rebased is None else _build(compiled.effective, rebased)
            rule_walls = _guarded(compiled.parts.line, rule.xafter(start, inc=False))
        rdates = compiled.rdates[bisect_right(compiled.rdates, start) :]
        return self._kept(heapq.merge(rule_walls, rdates))

    def ended_by(self, now: datetime) -> str | None:
        """Why the rule has no occurrence left after the instant `now` (aware), read on the clock
        of its zone: its UNTIL, or every one of its COUNT occurrences, already past. None while one
        is left. Bounded: an UNTIL rule stops at its UNTIL, a COUNT rule lists at most _MAX_COUNT."""
        wall_now = now.astimezone(load_timezone(self.tz_name)).replace(tzinfo=None)
        if next(self.walls_after(wall_now), None) is not None:
            return None
        parts = self._compiled.parts
        until = re.search(r"UNTIL\s*=\s*([0-9TZ]+)", parts.line, re.IGNORECASE)
        if until is not None:
            return f"its UNTIL {until[1].upper()} is already past"
        if parts.count is not None:
            return (f"its COUNT {parts.count} occurrences from DTSTART {self.start:%Y-%m-%dT%H:%M:%S} "
                    "are all already past")
        return "it has no occurrence left"

    def describe(self) -> str:
        """Plain English, e.g. "monthly on the first Monday at 09:00"."""
        compiled = self._compiled
        parts = compiled.parts
        text = describe_rule(parts, compiled.effective)
        if text is None:
            text = f"RRULE: {parts.line}"
        else:
            if parts.count is not None:
                text += ", " + {1: "once", 2: "twice"}.get(parts.count, f"{parts.count} times")
            if parts.until is not None:
                text += " until " + until_text(parts, compiled.effective)
        excluded = len(compiled.exdates) + len(compiled.exdays)
        if excluded:
            text += f", except {plural(excluded, 'date')}"
        if compiled.rdates:
            text += f", plus {plural(len(compiled.rdates), 'extra date')}"
        return text

    def _rebased_start(self, after: datetime) -> datetime | None:
        """A DTSTART for the same rule, at the start of the last period on or before `after` that is
        a whole number of INTERVALs after DTSTART's; None when that is DTSTART's own period.

        dateutil lists from DTSTART one by one; starting near `after` instead gives the same walls
        after it, because DTSTART only sets the periods' phase (its defaults are filled in)."""
        parts = self._compiled.parts
        first = _period_index(parts.freq, parts.wkst, self.start)
        periods = (_period_index(parts.freq, parts.wkst, after) - first) // parts.interval
        if periods <= 0:
            return None
        return _period_start(parts.freq, parts.wkst, first + periods * parts.interval)

    def _kept(self, walls: Iterator[datetime]) -> Iterator[datetime]:
        """`walls` without repeats and without EXDATEs."""
        exdates, exdays = self._compiled.exdates, self._compiled.exdays
        previous: datetime | None = None
        for wall in walls:
            if wall != previous and wall not in exdates and wall.date() not in exdays:
                yield wall
            previous = wall


def parse_rrule(
    text: str, tz_name: str, default_start: datetime | None = None, *, until_as_instant: bool = False
) -> RRule:
    """Parse and check a recurrence: lines DTSTART (optional), RRULE (exactly one; "RRULE:" may be
    left out), EXDATE and RDATE, with wall times in `tz_name`. Without DTSTART, `default_start`
    (a naive wall time) is the start. Raises InvalidSchedule naming what is wrong.

    An UNTIL written in UTC (…Z) is an instant (RFC 5545): read as the wall time it is in
    `tz_name`. With `until_as_instant` (a rule read on many clocks, a broadcast's) it does not
    bound the wall times listed at all; the caller compares occurrences' instants with
    `until_instant` itself."""
    if default_start is not None and default_start.tzinfo is not None:
        raise ValueError("default_start must be a naive wall time")
    return _parse(text, tz_name, default_start, until_as_instant)


def anchor_rrule(rrule: str, timezone: str, start: datetime) -> str:
    """The RRULE with a DTSTART: its own, else the local midnight of `start`'s day, as the
    database does for a row inserted without one (which it refuses with COUNT, as here)."""
    if re.search(r"(^|\n)\s*DTSTART", rrule, re.IGNORECASE):
        return rrule
    if re.search(r"COUNT=", rrule, re.IGNORECASE):
        raise InvalidSchedule(
            "an RRULE with COUNT needs a DTSTART (COUNT counts from it): add a DTSTART line, or end it with "
            "UNTIL instead (a message also by its max runs)"
        )
    day = start.astimezone(load_timezone(timezone)).date()
    return f"DTSTART:{day:%Y%m%d}T000000\n{rrule.strip()}"


@functools.lru_cache(maxsize=1024)
def _parse(text: str, tz_name: str, default_start: datetime | None, until_as_instant: bool) -> RRule:
    try:
        tz = load_timezone(tz_name)
    except InvalidSchedule as exc:
        raise _error(str(exc)) from None
    start: datetime | None = None
    rule_line: str | None = None
    exdates: set[datetime] = set()
    exdays: set[date] = set()
    rdates: set[datetime] = set()
    for line in (line.strip() for line in re.split(r"\r?\n", text)):
        if not line:
            continue
        name, params, value = _split_line(line)
        if name == "RRULE":
            if params:
                raise _error(f'RRULE takes no parameters: "{line}"')
            if rule_line is not None:
                raise _error("more than one RRULE line")
            rule_line = value
        elif name == "DTSTART":
            if start is not None:
                raise _error("more than one DTSTART line")
            _check_params(name, params, tz_name, allowed_values=("DATE-TIME",))
            start = _wall_time(name, value, tz_name)
        elif name == "EXDATE":
            value_type = _check_params(name, params, tz_name, allowed_values=("DATE-TIME", "DATE"))
            for item in _items(name, value):
                if value_type == "DATE":  # the whole local day
                    exdays.add(_day(name, item))
                else:
                    exdates.add(_wall_time(name, item, tz_name))
        elif name == "RDATE":
            _check_params(name, params, tz_name, allowed_values=("DATE-TIME",))
            rdates.update(_wall_time(name, item, tz_name) for item in _items(name, value))
        else:
            raise _error(f'unknown line "{line}" (expected DTSTART, RRULE, EXDATE or RDATE)')
    if rule_line is None:
        raise _error("no RRULE line (e.g. RRULE:FREQ=DAILY)")
    parts = _parse_parts(rule_line, tz)
    if until_as_instant and parts.until_instant is not None:
        parts = replace(parts, until=None)
    if start is None:
        start = default_start
    if start is None:
        raise _error("the rule needs a DTSTART line (e.g. DTSTART:20260101T000000)")
    start = start.replace(microsecond=0)
    effective = _with_defaults(parts, start)
    _check_reachable(effective, start)
    try:
        rule = _build(effective, start)
        first = next(iter(rule), None)
    except Exception as exc:  # dateutil's own refusals
        raise _rule_error(parts.line, f"it cannot be expanded ({exc})") from None
    if first is None:
        raise _rule_error(parts.line, f"it never fires: {span_text(start, parts.until)} matches it")
    compiled = _Compiled(parts, effective, rule, frozenset(exdates), frozenset(exdays), tuple(sorted(rdates)))
    result = RRule(text.strip(), tz_name, start, compiled)
    if next(result.walls_after(datetime.min), None) is None:
        raise _error("EXDATE removes every occurrence")
    return result


# Lines and their values


def _split_line(line: str) -> tuple[str, dict[str, str], str]:
    """(NAME, parameters, value) of a content line; a bare "FREQ=..." line is the RRULE."""
    head, colon, value = line.partition(":")
    if not colon:
        if "=" in line:
            return "RRULE", {}, line
        raise _error(f'unknown line "{line}" (expected DTSTART, RRULE, EXDATE or RDATE)')
    name, *raw_params = head.split(";")
    params: dict[str, str] = {}
    for raw in raw_params:
        key, equals, param_value = raw.partition("=")
        if not equals:
            raise _error(f'bad parameter "{raw}" in "{line}" (write NAME=VALUE)')
        params[key.strip().upper()] = param_value.strip().strip('"')
    return name.strip().upper(), params, value.strip()


def _check_params(name: str, params: dict[str, str], tz_name: str, allowed_values: tuple[str, ...]) -> str:
    """Check TZID and VALUE; return the VALUE type."""
    for key in params:
        if key not in ("TZID", "VALUE"):
            raise _error(f'unknown {name} parameter "{key}"')
    tzid = params.get("TZID")
    if tzid is not None and tzid != tz_name:
        raise _error(
            f'{name} has TZID "{tzid}" but the timezone is "{tz_name}"; write the wall time in {tz_name}'
        )
    value_type = params.get("VALUE", "DATE-TIME").upper()
    if value_type not in allowed_values:
        raise _error(f"{name};VALUE={value_type} is not supported; give date-times (YYYYMMDDTHHMMSS)")
    return value_type


def _items(name: str, value: str) -> list[str]:
    items = [item.strip() for item in value.split(",")]
    if not all(items):
        raise _error(f'{name} has an empty value in "{value}"')
    return items


def _wall_time(name: str, value: str, tz_name: str) -> datetime:
    match = _DATE_TIME.fullmatch(value.upper())
    if match and match[3]:
        raise _error(f'{name} "{value}" is in UTC; write the wall time in {tz_name} without Z')
    wall = _datetime(match[1], match[2]) if match else None
    if wall is None:
        if _DATE.fullmatch(value) and name == "EXDATE":
            raise _error(f'EXDATE "{value}" is a date; write EXDATE;VALUE=DATE:{value} to skip the whole day')
        raise _error(f'bad {name} value "{value}" (expected a date-time YYYYMMDDTHHMMSS)')
    return wall


def _day(name: str, value: str) -> date:
    wall = _datetime(value, "000000") if _DATE.fullmatch(value) else None
    if wall is None:
        raise _error(f'bad {name} date "{value}" (expected YYYYMMDD)')
    return wall.date()


def _datetime(day_digits: str, time_digits: str) -> datetime | None:
    year, month, day = int(day_digits[:4]), int(day_digits[4:6]), int(day_digits[6:])
    hour, minute, second = int(time_digits[:2]), int(time_digits[2:4]), int(time_digits[4:])
    try:
        return datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None


# The RRULE line


def _parse_parts(line: str, tz: ZoneInfo) -> RuleParts:
    values: dict[str, str] = {}
    for raw in line.split(";"):
        if not raw.strip():
            continue
        name, equals, value = (piece.strip() for piece in raw.partition("="))
        name = name.upper()
        if not equals or not value:
            raise _rule_error(line, f'part "{raw.strip()}" has no value (write NAME=VALUE)')
        if name not in _PART_NAMES:
            raise _rule_error(line, f'unknown part "{name}"')
        if name in values:
            raise _rule_error(line, f"{name} is given twice")
        values[name] = value

    freq_name = values.pop("FREQ", "").upper()
    if not freq_name:
        raise _rule_error(line, "FREQ is missing (e.g. FREQ=MONTHLY)")
    if freq_name == "SECONDLY":
        raise _rule_error(line, "FREQ=SECONDLY is not supported; use cron with a seconds field")
    if freq_name not in _FREQS:
        raise _rule_error(line, f'unknown FREQ "{freq_name}" (use {join_words(list(_FREQ_NAMES), "or")})')
    interval, count, until, until_is_date, until_instant, wkst = 1, None, None, False, None, 0
    byday: tuple[tuple[int, int], ...] = ()
    lists: dict[str, tuple[int, ...]] = {}
    for name, value in values.items():
        if name == "INTERVAL":
            interval = _int(line, name, value, 1, _MAX_INTERVAL)
        elif name == "COUNT":
            count = _int(line, name, value, 1, _MAX_COUNT, " (use UNTIL for longer runs)")
        elif name == "UNTIL":
            until, until_is_date, until_instant = _until(line, value, tz)
        elif name == "WKST":
            wkst = _weekday(line, name, value)
        elif name == "BYDAY":
            byday = tuple(_byday(line, item) for item in value.split(","))
        else:
            low, high, negatives = _INT_LIST_PARTS[name]
            lists[name] = tuple(
                _int(line, name, item, low, high, negatives=negatives) for item in value.split(",")
            )
    parts = RuleParts(
        line,
        _FREQS[freq_name],
        interval=interval,
        count=count,
        until=until,
        until_is_date=until_is_date,
        until_instant=until_instant,
        wkst=wkst,
        bymonth=lists.get("BYMONTH", ()),
        byweekno=lists.get("BYWEEKNO", ()),
        byyearday=lists.get("BYYEARDAY", ()),
        bymonthday=lists.get("BYMONTHDAY", ()),
        byday=byday,
        byhour=lists.get("BYHOUR", ()),
        byminute=lists.get("BYMINUTE", ()),
        bysecond=lists.get("BYSECOND", ()),
        bysetpos=lists.get("BYSETPOS", ()),
    )
    _check_combination(parts)
    return parts


def _check_combination(parts: RuleParts) -> None:
    line, freq = parts.line, _FREQ_NAMES[parts.freq]
    if parts.count is not None and parts.until is not None:
        raise _rule_error(line, "COUNT and UNTIL cannot both be given")
    others = (parts.bymonth, parts.has_day_part, parts.byhour, parts.byminute, parts.bysecond)
    if parts.bysetpos and not any(others):
        raise _rule_error(line, "BYSETPOS needs another BY part (e.g. BYDAY) to pick from")
    if parts.byweekno and parts.freq != YEARLY:
        raise _rule_error(line, "BYWEEKNO needs FREQ=YEARLY")
    if parts.byyearday and parts.freq in (MONTHLY, WEEKLY, DAILY):
        raise _rule_error(line, f"BYYEARDAY does not go with FREQ={freq}")
    if parts.bymonthday and parts.freq == WEEKLY:
        raise _rule_error(line, "BYMONTHDAY does not go with FREQ=WEEKLY")
    for weekday, n in parts.byday:
        item = f"{n}{_WEEKDAYS[weekday]}"
        if n and (parts.freq not in (MONTHLY, YEARLY) or parts.byweekno):
            raise _rule_error(line, f'BYDAY "{item}" has a number, which only FREQ=MONTHLY or YEARLY allow')
        if abs(n) > 5 and (parts.freq == MONTHLY or parts.bymonth):
            raise _rule_error(line, f'BYDAY "{item}" can never match: a month has at most 5 of each weekday')
    if parts.bymonthday:
        months = parts.bymonth or tuple(range(1, 13))
        if all(abs(day) > _MAX_MONTH_DAYS[month - 1] for day in parts.bymonthday for month in months):
            raise _rule_error(line, "it never fires: no month in BYMONTH has a day in BYMONTHDAY")


def _int(line: str, name: str, text: str, low: int, high: int, hint: str = "", negatives: bool = False) -> int:
    text = text.strip()
    number = int(text) if _INT.fullmatch(text) else None
    if number is None or not (low <= abs(number) <= high) or (number < 0 and not negatives):
        allowed = f"{low} to {high}" + (f" or -{high} to -{low}" if negatives else "")
        raise _rule_error(line, f'bad {name} value "{text}" (allowed: {allowed}){hint}')
    return number


def _weekday(line: str, name: str, text: str) -> int:
    code = text.strip().upper()
    if code not in _WEEKDAYS:
        raise _rule_error(line, f'bad {name} value "{text}" (use MO, TU, WE, TH, FR, SA or SU)')
    return _WEEKDAYS.index(code)


def _byday(line: str, text: str) -> tuple[int, int]:
    match = _BYDAY.fullmatch(text.strip().upper())
    if not match or match[2] not in _WEEKDAYS or (match[1] is not None and int(match[1]) == 0):
        raise _rule_error(
            line, f'bad BYDAY value "{text}" (e.g. MO, 1MO for the first Monday, -1FR for the last)'
        )
    n = int(match[1] or 0)
    if abs(n) > 53:
        raise _rule_error(line, f'bad BYDAY value "{text}" (the number must be 1 to 53 or -53 to -1)')
    return _WEEKDAYS.index(match[2]), n


def _until(line: str, text: str, tz: ZoneInfo) -> tuple[datetime, bool, datetime | None]:
    """UNTIL as a naive wall time, whether it was a bare date (then it covers the whole day), and
    the instant it is when written in UTC (…Z)."""
    match = _UNTIL.fullmatch(text.upper())
    until = _datetime(match[1], match[2] or "235959") if match else None
    if match is None or until is None:
        raise _rule_error(line, f'bad UNTIL value "{text}" (expected YYYYMMDDTHHMMSS, optionally ending in Z)')
    instant = None
    if match[3]:
        instant = until.replace(tzinfo=UTC)
        try:
            until = instant.astimezone(tz).replace(tzinfo=None)
        except OverflowError:
            raise _rule_error(line, f'bad UNTIL value "{text}" (out of range)') from None
    return until, match[2] is None, instant


# Building and checking the dateutil rule


def _with_defaults(parts: RuleParts, start: datetime) -> RuleParts:
    """RFC 5545's defaults from DTSTART made explicit, so any DTSTART in phase gives the same rule."""
    bymonth, bymonthday, byday = parts.bymonth, parts.bymonthday, parts.byday
    if not parts.has_day_part:
        if parts.freq == YEARLY:
            bymonth, bymonthday = parts.bymonth or (start.month,), (start.day,)
        elif parts.freq == MONTHLY:
            bymonthday = (start.day,)
        elif parts.freq == WEEKLY:
            byday = ((start.weekday(), 0),)
    return replace(
        parts,
        bymonth=bymonth,
        bymonthday=bymonthday,
        byday=byday,
        byhour=parts.byhour or ((start.hour,) if parts.freq <= DAILY else ()),
        byminute=parts.byminute or ((start.minute,) if parts.freq <= HOURLY else ()),
        bysecond=parts.bysecond or (start.second,),
    )


def _build(parts: RuleParts, dtstart: datetime) -> rrule:
    """A dateutil rrule for `parts` (with defaults filled in) starting at `dtstart`."""
    return rrule(
        parts.freq,
        dtstart=dtstart,
        interval=parts.interval,
        wkst=parts.wkst,
        count=parts.count,
        until=parts.until,
        bysetpos=parts.bysetpos or None,
        bymonth=parts.bymonth or None,
        byweekno=parts.byweekno or None,
        byyearday=parts.byyearday or None,
        bymonthday=parts.bymonthday or None,
        byweekday=[rrule_weekday(day, n or None) for day, n in parts.byday] or None,
        byhour=parts.byhour or None,
        byminute=parts.byminute or None,
        bysecond=parts.bysecond or None,
    )


def _check_reachable(parts: RuleParts, start: datetime) -> None:
    """Refuse, quickly, rules that never fire but would make dateutil search up to year 9999."""
    line = parts.line
    if parts.freq >= HOURLY:
        # Stepping INTERVAL hours (or minutes) from DTSTART reaches only some hours (minutes) of the day.
        if parts.freq == HOURLY:
            phase, start_slot, unit = math.gcd(parts.interval, 24), start.hour, "hours"
            slots: list[int] = [hour for hour in parts.byhour or range(24)]
        else:
            phase, start_slot, unit = (
                math.gcd(parts.interval, 24 * 60),
                start.hour * 60 + start.minute,
                "minutes",
            )
            slots = [h * 60 + m for h in parts.byhour or range(24) for m in parts.byminute or range(60)]
        if all((slot - start_slot) % phase for slot in slots):
            raise _rule_error(
                line,
                f"it never fires: stepping {parts.interval} {unit} from {start:%H:%M}, the time of DTSTART, "
                "never reaches its BYHOUR/BYMINUTE",
            )
    if parts.freq >= WEEKLY and parts.bysetpos:
        # BYSETPOS picks from each period's set; here its size is the same in every period.
        per_period = {
            WEEKLY: len({day for day, _ in parts.byday}) * parts.times_per_day,
            DAILY: parts.times_per_day,
            HOURLY: len(parts.byminute) * len(parts.bysecond),
            MINUTELY: len(parts.bysecond),
        }[parts.freq]
        if all(abs(position) > per_period for position in parts.bysetpos):
            period = _PERIOD_NAMES[parts.freq]
            raise _rule_error(line, f"it never fires: BYSETPOS picks from only {per_period} per {period}")
    step_minutes = parts.interval * {DAILY: 1440, HOURLY: 60, MINUTELY: 1}.get(parts.freq, 0)
    weekdays = {day for day, _ in parts.byday}
    if weekdays and step_minutes and step_minutes % (7 * 1440) == 0 and start.weekday() not in weekdays:
        weekday = DAY_NAMES[start.weekday()]
        raise _rule_error(line, f"it never fires: every step lands on a {weekday}, like DTSTART")
    if parts.freq >= DAILY and (parts.bymonthday or parts.byyearday):
        # Does any date match at all? dateutil answers that for a yearly rule quickly.
        dates = replace(
            parts, freq=YEARLY, interval=1, until=None, bysetpos=(), byhour=(0,), byminute=(0,), bysecond=(0,)
        )
        try:
            found = next(iter(_build(dates, datetime.combine(start.date(), time()))), None)
        except Exception:
            found = None
        if found is None:
            raise _rule_error(line, "it never fires: no date matches all of its BY parts")


_PERIOD_NAMES = {WEEKLY: "week", DAILY: "day", HOURLY: "hour", MINUTELY: "minute"}


def _guarded(line: str, walls: Iterator[datetime]) -> Iterator[datetime]:
    """`walls`, with dateutil's errors as InvalidSchedule."""
    try:
        yield from walls
    except (ValueError, TypeError, OverflowError, IndexError) as exc:
        if isinstance(exc, InvalidSchedule):
            raise
        raise _rule_error(line, f"it cannot be expanded ({exc})") from None


def _period_index(freq: int, wkst: int, wall: datetime) -> int:
    """The number of the year, month, week, day, hour or minute that `wall` is in."""
    if freq == YEARLY:
        return wall.year
    if freq == MONTHLY:
        return wall.year * 12 + wall.month - 1
    days = wall.toordinal()
    if freq == WEEKLY:
        week_start = days - (wall.weekday() - wkst) % 7
        return (week_start - wkst - 1) // 7  # ordinal 1 is a Monday
    if freq == DAILY:
        return days
    hours = days * 24 + wall.hour
    return hours if freq == HOURLY else hours * 60 + wall.minute


def _period_start(freq: int, wkst: int, index: int) -> datetime:
    """The first wall time of the period numbered `index` (see _period_index)."""
    if freq == YEARLY:
        return datetime(index, 1, 1)
    if freq == MONTHLY:
        return datetime(index // 12, index % 12 + 1, 1)
    if freq == WEEKLY:
        return datetime.fromordinal(7 * index + wkst + 1)
    if freq == DAILY:
        return datetime.fromordinal(index)
    if freq == HOURLY:
        return datetime.fromordinal(index // 24) + timedelta(hours=index % 24)
    return datetime.fromordinal(index // 1440) + timedelta(minutes=index % 1440)


# Errors


def _rule_error(line: str, problem: str) -> InvalidSchedule:
    return InvalidSchedule(f'invalid RRULE "{line}": {problem}')


def _error(problem: str) -> InvalidSchedule:
    return InvalidSchedule(f"invalid recurrence: {problem}")
