"""The parts of an RFC 5545 RRULE line, as rrule.py parses them and rrule_words.py puts them into words.

Its own module so that both can use it and neither imports the other back: rrule.py imports the
words, the words import only this.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

__all__ = ["Freq", "RuleParts"]

Freq = Literal[0, 1, 2, 3, 4, 5]  # dateutil's YEARLY ... MINUTELY


@dataclass(frozen=True)
class RuleParts:
    """The RRULE line, parsed and checked (by rrule.parse_rrule). Empty tuples are parts not given."""

    line: str
    freq: Freq
    interval: int = 1
    count: int | None = None
    until: datetime | None = None  # naive wall time, inclusive
    until_is_date: bool = False  # UNTIL was a bare date: the whole day is included
    until_instant: datetime | None = None  # UNTIL written in UTC (…Z): that instant, aware
    wkst: int = 0  # Monday
    bymonth: tuple[int, ...] = ()
    byweekno: tuple[int, ...] = ()
    byyearday: tuple[int, ...] = ()
    bymonthday: tuple[int, ...] = ()
    byday: tuple[tuple[int, int], ...] = ()  # (weekday, n); n == 0 means every such weekday
    byhour: tuple[int, ...] = ()
    byminute: tuple[int, ...] = ()
    bysecond: tuple[int, ...] = ()
    bysetpos: tuple[int, ...] = ()

    @property
    def has_day_part(self) -> bool:
        return bool(self.byweekno or self.byyearday or self.bymonthday or self.byday)

    @property
    def times_per_day(self) -> int:
        """Times of day per matching day; only meaningful once DTSTART's defaults are filled in."""
        return len(self.byhour) * len(self.byminute) * len(self.bysecond)
