"""A broadcast's waves: one wall time (09:00 on Monday) read in each of its contacts' zones, so it
reaches the zone whose clock is furthest ahead first and the one furthest behind last.

    waves = Waves.parse(cron="0 9 * * 1", rrule=None, until=None)
    occurrence = waves.first(zones, now)        # the first 09:00 still ahead in every zone
    reached = waves.reached(occurrence, zones)   # the zones it is sent to (its until ends each on its own)
    first_at, last_at = span(occurrence, reached)  # its first and last wave
    following = waves.after(occurrence, zones)   # the occurrence after it (None: the broadcast ends)

A recurring broadcast is staged one occurrence at a time (reminderd/housekeeping.py), so every
occurrence goes to the audience as it stands then. Pure: `now` is an argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time

from .cron import parse_cron
from .rrule import parse_rrule
from .wallclock import InvalidSchedule, WallSchedule, load_timezone, to_instant, wall

__all__ = ["Waves", "first_everywhere", "next_wall", "readable_zones", "span"]


@dataclass(frozen=True)
class Waves:
    """A recurring broadcast's occurrences: wall times read on each contact's clock, up to the
    instant it ends by (`until`, and an RRULE's UNTIL written in UTC, …Z, which is an instant: RFC
    5545). That instant ends each zone on its own: an occurrence reaches the zones whose own
    instant of it is not later (`reached`), and the broadcast goes on while it reaches one, so a
    contact east of UTC is not cut a day early, nor one west of it sent a day late. Its other
    date-times, an UNTIL without Z among them, are wall times on every clock (the recurrence stops
    at the same wall time for everyone). reminderd.stage_broadcast stages the same contacts
    (reminderd.broadcast_end). Build it with `Waves.parse`."""

    schedule: WallSchedule
    until: datetime | None  # aware: no contact is sent an occurrence whose instant in its zone is later

    @classmethod
    def parse(
        cls, *, cron: str | None, rrule: str | None, until: datetime | None, start: datetime | None = None
    ) -> Waves:
        """An RRULE without DTSTART counts from the UTC midnight of `start`'s day, as
        reminderd.broadcast stores it. Raises InvalidSchedule naming what is wrong."""
        if cron is not None:
            return cls(parse_cron(cron), until)
        midnight = None if start is None else datetime.combine(start.astimezone(UTC).date(), time())
        rule = parse_rrule(rrule or "", "UTC", midnight, until_as_instant=True)
        ends = [instant for instant in (until, rule.until_instant) if instant is not None]
        return cls(rule, min(ends, default=None))

    def first(self, zones: Sequence[str], now: datetime) -> datetime | None:
        """The first occurrence still ahead in every one of `zones` at `now`; None: none is left."""
        return self._within(first_everywhere(self.schedule, zones, now), zones)

    def after(self, occurrence: datetime, zones: Sequence[str]) -> datetime | None:
        """The occurrence after `occurrence`; None once the broadcast ends."""
        return self._within(next_wall(self.schedule, occurrence), zones)

    def reaches(self, occurrence: datetime, zone: str) -> bool:
        """Is `occurrence` sent to contacts in `zone`: is its instant there not after the until?"""
        return self.until is None or to_instant(occurrence, load_timezone(zone)) <= self.until

    def reached(self, occurrence: datetime, zones: Sequence[str]) -> list[str]:
        """The zones of `zones` that `occurrence` is sent to (`reaches`), in their order."""
        return [zone for zone in zones or ("UTC",) if self.reaches(occurrence, zone)]

    def _within(self, occurrence: datetime | None, zones: Sequence[str]) -> datetime | None:
        if occurrence is None or not self.reached(occurrence, zones):
            return None
        return occurrence


def next_wall(schedule: WallSchedule, after: datetime) -> datetime | None:
    """The schedule's first wall time strictly after the naive wall time `after`; None once it ends."""
    return next(iter(schedule.walls_after(after)), None)


def first_everywhere(schedule: WallSchedule, zones: Sequence[str], now: datetime) -> datetime | None:
    """The schedule's first wall time that is still ahead in every one of `zones` at `now`: the
    first after the wall clock of the zone furthest ahead (wall times map to instants in order, so
    the zones behind it reach it later still)."""
    if not zones:
        zones = ("UTC",)
    furthest_ahead = max(wall(now, load_timezone(zone)) for zone in zones)
    return next_wall(schedule, furthest_ahead)


def span(occurrence: datetime, zones: Sequence[str]) -> tuple[datetime, datetime]:
    """The first and last instant at which `occurrence` (a wall time) is read in `zones`."""
    instants = [to_instant(occurrence, load_timezone(zone)) for zone in zones or ("UTC",)]
    return min(instants), max(instants)


def readable_zones(zones: Sequence[str]) -> tuple[list[str], list[str]]:
    """`zones` split into those the daemon can read and those it cannot (written before the
    database checked contacts' zones, or unknown to this machine's tz database): a wave is planned
    over the first, so one contact's zone cannot stop the whole broadcast."""
    readable, unreadable = [], []
    for zone in zones:
        try:
            load_timezone(zone)
        except InvalidSchedule:
            unreadable.append(zone)
        else:
            readable.append(zone)
    return readable, unreadable
