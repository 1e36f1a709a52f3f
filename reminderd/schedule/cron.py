"""Cron schedules read in an IANA timezone.

Five fields (minute hour day month weekday), or six with a leading seconds field
("0 0 9 * * MON-FRI" is 09:00:00 on weekdays); @hourly/@daily/@weekly/@monthly/@yearly; `L`
(last day of the month, or "L5"/"5L" the last Friday), `W` (nearest weekday: "15W") and `#`
("1#1", the first Monday). croniter lists the naive wall times; wallclock maps them to real
instants with the DST rules every schedule here shares.

Each field is checked here before croniter sees it, so a mistake is named by its field and the
values that field allows ("minute 61 is out of range 0–59"), never by croniter's own text.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from croniter import CroniterBadDateError, croniter

from .wallclock import InvalidSchedule, load_timezone, next_instant

__all__ = [
    "ALIASES",
    "CronSchedule",
    "InvalidSchedule",
    "check_fields",
    "load_timezone",
    "next_fire",
    "parse_cron",
    "validate_cron",
]

ALIASES = {  # the @names and the crons they stand for
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_LAST_WEEKDAY = re.compile(r"^([0-7])[lL]$")  # Quartz's "5L" for croniter's "L5": the last Friday


@dataclass(frozen=True)
class CronSchedule:
    expr: str
    every_hour: bool  # the hour field covers all 24 hours
    _candidates: croniter[datetime] = field(repr=False, compare=False)  # copy before stepping

    def walls_after(self, start: datetime) -> Iterator[datetime]:
        candidates = copy.copy(self._candidates)
        candidates.set_current(start)
        while True:
            yield candidates.get_next()


def validate_cron(expr: str) -> None:
    """Raise InvalidSchedule unless `expr` is a 5- or 6-field cron (or @alias) that fires."""
    parse_cron(expr)


def next_fire(expr: str, tz_name: str, after: datetime) -> datetime:
    """Return the first instant strictly after `after` at which `expr`, read in timezone
    `tz_name`, fires; as an aware UTC datetime."""
    instant = next_instant(parse_cron(expr), load_timezone(tz_name), after)
    assert instant is not None  # a cron never ends
    return instant


@functools.lru_cache(maxsize=1024)
def parse_cron(expr: str) -> CronSchedule:
    text = ALIASES.get(expr.strip().lower(), expr)
    fields = text.split()
    if len(fields) not in (5, 6):
        reason = (
            f"expected 5 fields (minute hour day month weekday) or 6 with a leading seconds field, "
            f"got {len(fields)}"
        )
        raise _invalid(expr, reason)
    if any(part.lower().startswith("r") for part in fields):
        raise _invalid(expr, "random (R) fields are not supported")
    problem = check_fields(fields)
    if problem is not None:
        raise _invalid(expr, problem)
    fields[-1] = ",".join(_LAST_WEEKDAY.sub(r"L\1", item) for item in fields[-1].split(","))
    try:
        candidates = croniter(
            " ".join(fields), datetime(2000, 1, 1), ret_type=datetime, second_at_beginning=len(fields) == 6
        )
        copy.copy(candidates).get_next()  # raises if it never fires
    except CroniterBadDateError:
        raise _invalid(expr, "it never fires") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise _invalid(expr, str(exc) or type(exc).__name__) from None
    hours = candidates.expanded[1]  # ["*"], ["*", 5] for "*,5", or the hours listed
    every_hour = "*" in hours or set(range(24)) <= set(hours)
    return CronSchedule(expr, every_hour=every_hour, _candidates=candidates)


@dataclass(frozen=True)
class _Field:
    """One cron field: its name, the numbers it allows, and the names standing for numbers."""

    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names[i] stands for low + i
    names_say: str = ""

    def allowed(self) -> str:
        return f"{self.low}–{self.high}" + (f" or {self.names_say}" if self.names_say else "")


_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_SECOND = _Field("second", 0, 59)
_FIVE_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, _MONTHS, "JAN–DEC"),
    _Field("day of week", 0, 7, _DAYS, "SUN–SAT"),
)
_NUMBER = re.compile(r"\d+")


def check_fields(fields: list[str]) -> str | None:
    """What is wrong with the first bad field of a 5- or 6-field cron, in words; None when every
    field is well formed (croniter then decides whether the whole ever fires)."""
    specs = (_SECOND, *_FIVE_FIELDS) if len(fields) == 6 else _FIVE_FIELDS
    for spec, text in zip(specs, fields, strict=True):
        problem = _check_field(spec, text)
        if problem is not None:
            return problem
    return None


def _check_field(spec: _Field, text: str) -> str | None:
    items = text.split(",")
    if any(not item for item in items):
        return f'{spec.name} "{text}" has an empty item in its list'
    special = [item for item in items if _is_special(spec, item)]
    if spec.name == "day of week" and special and len(special) < len(items):
        return (f'day of week "{text}" mixes plain days with # or L, which cron cannot combine: '
                f"write one or the other")
    if spec.name == "day of month" and len(items) > 1 and any(item.upper().endswith("W") for item in items):
        return f'day of month "{text}": W (nearest weekday) takes one day, not a list'
    if "?" in items and len(items) > 1:
        return f'{spec.name} "{text}": ? (any) stands alone, not in a list'
    for item in items:
        problem = _check_item(spec, item, text)
        if problem is not None:
            return problem
    return None


def _is_special(spec: _Field, item: str) -> bool:
    upper = item.upper()
    return spec.name == "day of week" and ("#" in upper or "L" in upper)


def _check_item(spec: _Field, item: str, text: str) -> str | None:
    upper = item.upper()
    if upper == "?" and spec.name in ("day of month", "day of week"):
        return None
    if spec.name == "day of month":
        if upper == "L":
            return None
        if "W" in upper:
            day = upper[:-1]
            if not upper.endswith("W") or not _NUMBER.fullmatch(day):
                return f'day of month "{item}": W (nearest weekday) follows a day number, like 15W'
            return _in_range(spec, int(day), item)
    if spec.name == "day of week":
        if "#" in upper:
            day, _, week = upper.partition("#")
            problem = _value(spec, day, item)
            if problem is not None:
                return problem
            if not _NUMBER.fullmatch(week):
                return (f'day of week "{item}": # is followed by the week of the month, 1–5 '
                        f"(1#1: the first Monday)")
            if not 1 <= int(week) <= 5:
                return f'day of week "{item}": week {int(week)} is out of range 1–5'
            return None
        if "L" in upper:
            day = upper.removeprefix("L") if upper.startswith("L") else upper.removesuffix("L")
            if not re.fullmatch(r"[0-9]", day) or "L" in day:
                return (f'day of week "{item}": L takes one day number 0–7, like 5L '
                        f"(the last Friday of the month)")
            return _in_range(spec, int(day), item)
    base, slash, step = item.partition("/")
    if slash:
        if not _NUMBER.fullmatch(step):
            return f'{spec.name} "{item}": the step after / must be a whole number, like */5'
        if int(step) < 1:
            return f'{spec.name} "{item}": the step must be at least 1'
    if base == "*":
        return None
    if base.startswith("-"):  # "-5": a negative number, or a range without its start
        return _value(spec, base, item)
    low, dash, high = base.partition("-")
    if dash:
        if spec.name == "day of month" and high.upper() == "L":
            return _value(spec, low, item)
        for end in (low, high):
            problem = _value(spec, end, item)
            if problem is not None:
                return problem
        return None
    return _value(spec, base, item)


def _value(spec: _Field, text: str, item: str) -> str | None:
    if _NUMBER.fullmatch(text):
        return _in_range(spec, int(text), item)
    if text.upper() in spec.names:
        return None
    if not text:
        return f'{spec.name} "{item}" is missing a value ({spec.allowed()})'
    if text.startswith("-") and _NUMBER.fullmatch(text[1:]):
        return f"{spec.name} {text} is out of range {spec.allowed()}"
    kind = {"month": "a month", "day of week": "a day"}.get(spec.name, "a number")
    return f'{spec.name} "{item}" is not {kind}: use {spec.allowed()}'


def _in_range(spec: _Field, value: int, item: str) -> str | None:
    if spec.low <= value <= spec.high:
        return None
    where = "" if item == str(value) else f' in "{item}"'
    return f"{spec.name} {value}{where} is out of range {spec.low}–{spec.high}"


def _invalid(expr: str, reason: str) -> InvalidSchedule:
    return InvalidSchedule(f'invalid cron "{expr}": {reason}')
