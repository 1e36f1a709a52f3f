"""A broadcast's waves: one wall time (09:00 on Monday) read in each of its contacts' zones, so it
reaches the zone whose clock is furthest ahead first and the one furthest behind last.

    schedule = parse_cron("0 9 * * 1")
    occurrence = first_everywhere(schedule, zones, now)   # the first 09:00 still ahead in every zone
    first_at, last_at = span(occurrence, zones)            # its first and last wave
    following = next_wall(schedule, occurrence)            # the occurrence after it

A recurring broadcast is staged one occurrence at a time (reminderd/housekeeping.py), so every
occurrence goes to the audience as it stands then. Pure: `now` is an argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from .wallclock import WallSchedule, load_timezone, to_instant, wall

__all__ = ["first_everywhere", "next_wall", "span"]


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
