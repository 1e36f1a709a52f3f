"""Wall-clock times in an IANA timezone mapped to real instants, with exact DST rules.

Schedules (cron, RRULE, quiet hours, a one-off "09:00 in Asia/Kolkata") speak in wall-clock
times; the queue stores instants in UTC. Around clock changes every one of them follows the same
rules (Vixie cron's; AWS EventBridge Scheduler documents the same):

* a wall time skipped by a forward jump happens at the jump, the first valid instant after the
  gap (02:30 on a spring-forward night fires at 03:00);
* a wall time repeated by a backward jump happens once, at its first occurrence, unless the
  schedule runs every hour or more often: then it fires at every real instant.

Pure: no clock is read; every instant is an argument.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "InvalidSchedule",
    "WallSchedule",
    "load_timezone",
    "next_instant",
    "to_instant",
    "wall",
]

# Wider than any real clock change; offsets are compared this far either side of an instant to
# see whether wall-clock order may disagree with real order.
_WINDOW = timedelta(hours=3)

# Guards against looping forever on a bug; real searches need far fewer.
_MAX_CANDIDATES = 10_000


class InvalidSchedule(ValueError):
    """A schedule or timezone that cannot be scheduled; the message says what is wrong."""


class WallSchedule(Protocol):
    """A recurrence that lists naive wall-clock times."""

    @property
    def every_hour(self) -> bool:
        """True when it fires in every hour of the day, so a repeated hour fires twice."""
        ...

    def walls_after(self, start: datetime) -> Iterator[datetime]:
        """Naive wall times strictly after `start`, ascending. May end (COUNT, UNTIL)."""
        ...


def load_timezone(name: str) -> ZoneInfo:
    """Return the IANA timezone `name`."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidSchedule(f'unknown timezone "{name}"') from None


def wall(instant: datetime, tz: ZoneInfo) -> datetime:
    """The naive wall-clock time in `tz` at `instant`."""
    return instant.astimezone(tz).replace(tzinfo=None)


def to_instant(local: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant at which the clock in `tz` first reads the naive wall time `local`;
    for a wall time skipped by a forward jump, the jump."""
    return _instants(local, tz, every_hour=False)[0]


def next_instant(schedule: WallSchedule, tz: ZoneInfo, after: datetime) -> datetime | None:
    """The first instant strictly after `after` at which `schedule`, read in `tz`, fires, as an
    aware UTC datetime; None when the schedule has ended."""
    if after.utcoffset() is None:
        raise ValueError("after must be timezone-aware")
    after = after.astimezone(UTC)
    # Wall times and instants are ordered alike except near a clock change, so look a little
    # behind `after` and a little beyond the best so far.
    best: datetime | None = None
    stop = datetime.max
    walls = schedule.walls_after(wall(after, tz) - _slack(after, tz))
    for count, candidate in enumerate(walls):
        if best is not None and candidate > stop:
            return best
        if count >= _MAX_CANDIDATES:
            raise RuntimeError(f"no fire time found in {tz.key} after {after}")
        for instant in _instants(candidate, tz, schedule.every_hour):
            if instant > after and (best is None or instant < best):
                best, stop = instant, wall(instant, tz) + _slack(instant, tz)
    return best


def _offset(instant: datetime, tz: ZoneInfo) -> timedelta:
    return instant.astimezone(tz).utcoffset() or timedelta()


def _slack(instant: datetime, tz: ZoneInfo) -> timedelta:
    """How far wall-clock order may disagree with real order near `instant`."""
    offsets = [_offset(instant + delta, tz) for delta in (-_WINDOW, timedelta(), _WINDOW)]
    return max(offsets) - min(offsets)


def _instants(local: datetime, tz: ZoneInfo, every_hour: bool) -> tuple[datetime, ...]:
    """The UTC instants at which the wall time `local` fires in `tz` (see module docstring)."""
    first = local.replace(tzinfo=tz, fold=0).astimezone(UTC)
    second = local.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if first == second:
        return (first,)
    if wall(first, tz) != local:  # skipped: here fold=1 is before the jump
        return (_jump(second, first, tz),)
    return (first, second) if every_hour else (first,)


def _jump(before: datetime, after: datetime, tz: ZoneInfo) -> datetime:
    """The instant in (before, after] at which the UTC offset of `tz` changes."""
    lo, hi = int(before.timestamp()), int(after.timestamp())
    new_offset = _offset(after, tz)
    while hi - lo > 1:  # offsets change on whole seconds
        mid = (lo + hi) // 2
        if _offset(datetime.fromtimestamp(mid, UTC), tz) == new_offset:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)
