"""Cron schedules read in an IANA timezone.

Five fields (minute hour day month weekday), or six with a leading seconds field
("0 0 9 * * MON-FRI" is 09:00:00 on weekdays); @hourly/@daily/@weekly/@monthly/@yearly; `L`
(last day of the month, or "L5"/"5L" the last Friday), `W` (nearest weekday: "15W") and `#`
("1#1", the first Monday). croniter lists the naive wall times; wallclock maps them to real
instants with the DST rules every schedule here shares.
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
    hours = candidates.expanded[1]
    return CronSchedule(expr, every_hour=hours == ["*"] or len(hours) == 24, _candidates=candidates)


def _invalid(expr: str, reason: str) -> InvalidSchedule:
    return InvalidSchedule(f'invalid cron "{expr}": {reason}')
