"""Quiet hours: a daily window of the recipient's wall clock in which messages wait.

    quiet = QuietHours.parse("21:00-09:00")
    quiet.defer(instant, "Europe/London")
    -> (09:00 the next morning, "deferred from 22:30 to 09:00 Europe/London (quiet hours 21:00-09:00)")

The window may wrap midnight; its start is inside it, its end is not. Pure:
the instant to check is always an argument, never read from a clock. Which message categories it
holds back is the tenant's `quiet_exempt`, applied by the claim query.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from .wallclock import load_timezone, next_instant

__all__ = ["QuietHours"]

_WINDOW = re.compile(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*")


@dataclass(frozen=True)
class QuietHours:
    start: time  # inside the window
    end: time  # the first wall time outside it

    def __post_init__(self) -> None:
        if self.start == self.end:
            raise ValueError("start and end must differ")
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("quiet hours are wall-clock times: start and end take no timezone")

    @classmethod
    def parse(cls, text: str) -> QuietHours:
        """QuietHours from "HH:MM-HH:MM", like "21:00-09:00"."""
        match = _WINDOW.fullmatch(text)
        if match is None:
            raise ValueError(f'invalid quiet hours "{text}": expected HH:MM-HH:MM, like 21:00-09:00')
        start_hour, start_minute, end_hour, end_minute = map(int, match.groups())
        try:
            return cls(time(start_hour, start_minute), time(end_hour, end_minute))
        except ValueError as exc:  # hour 24 or more, minute 60 or more, or an empty window
            raise ValueError(f'invalid quiet hours "{text}": {exc}') from None

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    def contains(self, local: datetime) -> bool:
        """Whether the wall time of `local` (already in the recipient's timezone) is quiet."""
        wall = local.time()
        if self.start < self.end:
            return self.start <= wall < self.end
        return wall >= self.start or wall < self.end

    def defer(self, instant: datetime, tz_name: str) -> tuple[datetime, str | None]:
        """(instant, None) when `instant` is not quiet in timezone `tz_name`; otherwise the
        first instant after it at which the window ends, in UTC, and why."""
        if instant.utcoffset() is None:
            raise ValueError("instant must be timezone-aware")
        tz = load_timezone(tz_name)
        local = instant.astimezone(tz)
        if not self.contains(local):
            return instant, None
        resume = local
        while self.contains(resume):  # again only if a clock change skips past both end and start
            following = next_instant(_DailyAt(self.end), tz, resume)
            assert following is not None  # a daily time never ends
            resume = following.astimezone(tz)
        reason = f"deferred from {local:%H:%M} to {resume:%H:%M} {tz_name} (quiet hours {self})"
        return resume.astimezone(UTC), reason


@dataclass(frozen=True)
class _DailyAt:
    """A WallSchedule reading `at` once a day. Both readings of a time repeated by a backward
    jump count: inside the window during the second 01:10, it ends at the second 01:30."""

    at: time
    every_hour = True

    def walls_after(self, start: datetime) -> Iterator[datetime]:
        day = start.date()
        while True:
            candidate = datetime.combine(day, self.at)
            if candidate > start:
                yield candidate
            day += timedelta(days=1)
