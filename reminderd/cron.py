"""Cron schedules read in an IANA timezone, with exact DST semantics.

croniter only enumerates naive wall-clock times; this module maps them to
real instants itself, because croniter's own DST handling is unreliable.
Around clock changes it follows Vixie cron:

* a wall time skipped by a forward jump fires at the jump (03:00 for 02:30);
* a wall time repeated by a backward jump fires once, at its first
  occurrence, unless the schedule runs every hour, which fires at both.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

__all__ = ["InvalidSchedule", "load_timezone", "next_fire", "validate_cron"]

_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

# Wider than any real clock change; offsets are compared this far either side
# of an instant to see whether wall-clock order may disagree with real order.
_WINDOW = timedelta(hours=3)

# Guards against looping forever on a bug; real searches need far fewer.
_MAX_CANDIDATES = 10_000


class InvalidSchedule(ValueError):
    """A cron expression or timezone that cannot be scheduled."""


@dataclass(frozen=True)
class _Cron:
    candidates: croniter[datetime]  # naive wall times; copy before stepping
    every_hour: bool  # the hour field covers all 24 hours


def load_timezone(name: str) -> ZoneInfo:
    """Return the IANA timezone `name`."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidSchedule(f'unknown timezone "{name}"') from None


def validate_cron(expr: str) -> None:
    """Raise InvalidSchedule unless `expr` is a 5-field cron that fires."""
    _parse(expr)


def next_fire(expr: str, tz_name: str, after: datetime) -> datetime:
    """Return the first instant strictly after `after` at which `expr`,
    read in timezone `tz_name`, fires; as an aware UTC datetime."""
    if after.utcoffset() is None:
        raise ValueError("after must be timezone-aware")
    cron = _parse(expr)
    tz = load_timezone(tz_name)
    after = after.astimezone(UTC)

    # Wall times and instants are ordered alike except near a clock change,
    # so look a little behind `after` and a little beyond the best so far.
    candidates = copy.copy(cron.candidates)
    candidates.set_current(_wall(after, tz) - _slack(after, tz))
    best: datetime | None = None
    stop = datetime.max
    for _ in range(_MAX_CANDIDATES):
        wall = candidates.get_next()
        if best is not None and wall > stop:
            return best
        for instant in _instants(wall, tz, cron.every_hour):
            if instant > after and (best is None or instant < best):
                best, stop = instant, _wall(instant, tz) + _slack(instant, tz)
    raise RuntimeError(f"no fire time found for {expr!r} in {tz_name} after {after}")


@functools.lru_cache(maxsize=1024)
def _parse(expr: str) -> _Cron:
    text = _ALIASES.get(expr.strip().lower(), expr)
    fields = text.split()
    if len(fields) != 5:
        reason = f"expected 5 fields (minute hour day month weekday), got {len(fields)}"
        raise _invalid(expr, reason)
    if any(field.lower().startswith("r") for field in fields):
        raise _invalid(expr, "random (R) fields are not supported")
    try:
        candidates = croniter(text, datetime(2000, 1, 1), ret_type=datetime)
        copy.copy(candidates).get_next()  # raises if it never fires
    except CroniterBadDateError:
        raise _invalid(expr, "it never fires") from None
    except ValueError as exc:
        raise _invalid(expr, str(exc)) from None
    hours = candidates.expanded[1]
    return _Cron(candidates, every_hour=hours == ["*"] or len(hours) == 24)


def _invalid(expr: str, reason: str) -> InvalidSchedule:
    return InvalidSchedule(f'invalid cron "{expr}": {reason}')


def _wall(instant: datetime, tz: ZoneInfo) -> datetime:
    """The naive wall-clock time in `tz` at `instant`."""
    return instant.astimezone(tz).replace(tzinfo=None)


def _offset(instant: datetime, tz: ZoneInfo) -> timedelta:
    return instant.astimezone(tz).utcoffset() or timedelta()


def _slack(instant: datetime, tz: ZoneInfo) -> timedelta:
    """How far wall-clock order may disagree with real order near `instant`."""
    offsets = [_offset(instant + delta, tz) for delta in (-_WINDOW, timedelta(), _WINDOW)]
    return max(offsets) - min(offsets)


def _instants(wall: datetime, tz: ZoneInfo, every_hour: bool) -> tuple[datetime, ...]:
    """The UTC instants at which `wall` fires in `tz` (see module docstring)."""
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if first == second:
        return (first,)
    if _wall(first, tz) != wall:  # skipped: here fold=1 is before the jump
        return (_jump(second, first, tz),)
    return (first, second) if every_hour else (first,)


def _jump(before: datetime, after: datetime, tz: ZoneInfo) -> datetime:
    """The instant in (before, after] at which the UTC offset of `tz` changes."""
    lo, hi = int(before.timestamp()), int(after.timestamp())
    new_offset = _offset(after, tz)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset(datetime.fromtimestamp(mid, UTC), tz) == new_offset:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)
