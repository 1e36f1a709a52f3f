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
from typing import Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "InvalidSchedule",
    "WallSchedule",
    "iso_utc",
    "load_timezone",
    "next_instant",
    "to_instant",
    "wall",
]

# Wider than any real clock change; offsets are compared this far either side of an instant to
# see whether wall-clock order may disagree with real order.
_WINDOW = timedelta(hours=3)

# Guards against looping forever on a bug: a search passes over at most an hour or two of wall
# times (a repeated hour), which for a schedule firing every second is 7,200.
_MAX_CANDIDATES = 100_000
_MAX_RESTARTS = 8

# How far ahead a search looks for the era of an offset to begin: its wall times read under
# another offset now may be read under it after a clock change days away (a quiet window
# ending at 17:30 in Sydney, asked at 18:29 on the day before the clock goes back).
_ERA_HORIZON = timedelta(days=32)


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


# Files a zone directory holds that zoneinfo reads but that name no IANA zone: localtime (a link to
# /etc/localtime), posixrules, Factory ("-00"), and the posix/ and right/ copies of every zone
# (zoneinfo.available_timezones() lists localtime and Factory, not the rest). What is given as a
# zone is refused as one of these (load_iana_timezone), as reminderd.check_timezone refuses it.
_NOT_ZONES = {
    "localtime": "the zone of whichever host reads it (/etc/localtime)",
    "posixrules": "the rules POSIX TZ strings borrow",
    "Factory": "tzdata's placeholder for a zone not set",
}


def not_an_iana_zone(name: str) -> str | None:
    """Why `name`, which a zone directory may hold, is no IANA zone; None when it may be one."""
    copy, _, zone = name.partition("/")
    if copy == "posix" and zone:
        return f"a copy of {zone} under another name: write {zone}"
    if copy == "right" and zone:
        return f"a copy of {zone} counting leap seconds: write {zone}"
    return _NOT_ZONES.get(name)


def load_iana_timezone(name: str) -> ZoneInfo:
    """The IANA timezone `name`, refusing what a zone directory holds under a name that is none
    (localtime: the zone depends on the host reading it)."""
    why = not_an_iana_zone(name)
    if why is not None:
        raise InvalidSchedule(f'unknown timezone "{name}": {why}, not an IANA zone')
    return load_timezone(name)


Timespec = Literal["auto", "hours", "minutes", "seconds", "milliseconds", "microseconds"]


def iso_utc(instant: datetime, timespec: Timespec = "milliseconds") -> str:
    """`instant` in UTC, ISO 8601 with a "Z": "2026-12-24T03:30:00.000Z", the callback body's fixed
    width. `timespec` as datetime.isoformat's: "auto" leaves out a zero fraction ("...T03:30:00Z")."""
    return instant.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


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
    if schedule.every_hour:
        return _next_reading(schedule, tz, after)
    return _next_first_reading(schedule, tz, after)


def _next_first_reading(schedule: WallSchedule, tz: ZoneInfo, after: datetime) -> datetime | None:
    """For a schedule that fires at the first reading of each wall time (or at the jump over a
    skipped one): that mapping never runs backwards, so the first wall time after `after`'s own
    that maps to a later instant is the answer. Walls repeated after a backward jump are passed
    over in one step."""
    cursor = wall(after, tz)
    for _ in range(_MAX_RESTARTS):
        for count, candidate in enumerate(schedule.walls_after(cursor)):
            if count >= _MAX_CANDIDATES:
                raise InvalidSchedule(f"no fire time found in {tz.key} after {after:%Y-%m-%d %H:%M:%S}Z")
            instant = _instants(candidate, tz, every_hour=False)[0]
            if instant > after:
                return instant
            # A wall time repeated after a backward jump, first read before `after`: so is every
            # one up to the end of the repeated stretch. Go on from there.
            jump = _jump(instant, after, tz)
            cursor = _naive(jump + _offset(instant, tz)) - timedelta(microseconds=1)
            break
        else:
            return None
    raise InvalidSchedule(f"no fire time found in {tz.key} after {after:%Y-%m-%d %H:%M:%S}Z")


def _next_reading(schedule: WallSchedule, tz: ZoneInfo, after: datetime) -> datetime | None:
    """For a schedule that fires at every real instant its wall times are read (each reading of a
    repeated wall time; the jump over skipped ones): the earliest over the UTC offsets in force
    near `after`, and over any era a candidate lands in."""
    offsets = [_offset(after + delta, tz) for delta in (-_WINDOW, timedelta(), _WINDOW)]
    best: datetime | None = None
    tried: set[timedelta] = set()
    while offsets:
        offset = offsets.pop()
        if offset in tried:
            continue
        tried.add(offset)
        instant, elsewhere = _next_reading_at_offset(schedule, tz, after, offset)
        if instant is not None and (best is None or instant < best):
            best = instant
        if elsewhere is not None:
            offsets.append(elsewhere)
    return best


def _next_reading_at_offset(
    schedule: WallSchedule, tz: ZoneInfo, after: datetime, offset: timedelta
) -> tuple[datetime | None, timedelta | None]:
    """The first instant after `after` at which the clock, showing UTC+`offset`, reads one of the
    schedule's wall times (or the jump over a skipped one). When the era of `offset` is over by
    then, (None, the offset in force there) instead."""
    tiny = timedelta(microseconds=1)
    cursor = _naive(after + offset)
    for _ in range(_MAX_RESTARTS):
        for count, candidate in enumerate(schedule.walls_after(cursor)):
            if count >= _MAX_CANDIDATES:
                raise InvalidSchedule(f"no fire time found in {tz.key} after {after:%Y-%m-%d %H:%M:%S}Z")
            instant = candidate.replace(tzinfo=UTC) - offset
            actual = _offset(instant, tz)
            if actual == offset:
                return instant, None
            first = _instants(candidate, tz, every_hour=False)[0]
            if wall(first, tz) == candidate:  # a real wall time, but read under another offset
                era_start = _era_start(instant, offset, tz, before=_following(schedule, candidate, offset))
                if era_start is None:
                    # Its era is over, or begins only after the schedule's next wall time read
                    # under it: the offset in force here answers.
                    return None, actual
                cursor = _naive(era_start + offset) - tiny  # or soon to begin: go on from there
            elif first > after:  # skipped by a forward jump: it fires at the jump
                return first, None
            else:  # skipped, and the jump is past: go on from the end of the gap
                cursor = wall(first, tz) - tiny
            break
        else:
            return None, None  # the schedule has ended
    raise InvalidSchedule(f"no fire time found in {tz.key} after {after:%Y-%m-%d %H:%M:%S}Z")


def _era_start(instant: datetime, offset: timedelta, tz: ZoneInfo, before: datetime) -> datetime | None:
    """The instant at which `tz` next shows UTC+`offset` after `instant`, if it does within
    _WINDOW, or else by `before` (looked for at most _ERA_HORIZON ahead); None when not."""
    probe = instant
    while True:
        step = probe + _WINDOW
        if _offset(step, tz) == offset:
            start = _jump(probe, step, tz)
            return start if probe == instant or start <= before else None
        probe = step
        if probe >= min(before, instant + _ERA_HORIZON):
            return None


def _following(schedule: WallSchedule, candidate: datetime, offset: timedelta) -> datetime:
    """The instant of the schedule's next wall time after `candidate`, read at UTC+`offset`
    (the end of time when it has none)."""
    following = next(iter(schedule.walls_after(candidate)), None)
    if following is None or following - datetime.min < offset:
        return datetime.max.replace(tzinfo=UTC)
    return (following - offset).replace(tzinfo=UTC)


def _naive(instant: datetime) -> datetime:
    return instant.replace(tzinfo=None)


def _offset(instant: datetime, tz: ZoneInfo) -> timedelta:
    return instant.astimezone(tz).utcoffset() or timedelta()


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
