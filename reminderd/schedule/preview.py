"""The next fire times of a schedule, as `reminderd preview` prints them. Pure: `start` is passed in.

    entries = preview(Timing(cron="0 9 * * 1", timezone="Europe/London"), start, count=3)

Holiday occurrences are listed as skipped with the holiday's name; occurrences in quiet hours are
listed at the time they are deferred to, with the reason. It is CLI-only, not also an SQL
function: the schedule logic (croniter, RFC 5545 via dateutil, the holidays package, the DST
rules in wallclock.py) is Python, and a second implementation in PL/pgSQL could disagree with the
daemon, which is exactly the mistake previews exist to catch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .timing import Timing, collapse_quiet
from .wallclock import iso_utc

__all__ = ["OffTheCalendar", "PreviewEntry", "preview"]

_MAX_SKIPPED = 1000


class OffTheCalendar(OverflowError):
    """The next fires run off the calendar a datetime holds (an instant past the year 9999, or a
    local time before the year 1, `early`): `fits` of them came before."""

    def __init__(self, fits: int, *, early: bool) -> None:
        super().__init__(f"only {fits} fires fit in the years 1 to 9999")
        self.fits = fits
        self.early = early


@dataclass(frozen=True)
class PreviewEntry:
    utc: datetime  # when it fires (for a deferred one: when the quiet hours end)
    local: datetime  # the same instant on the recipient's clock
    skipped: bool = False  # a holiday: not sent
    deferred: bool = False  # in quiet hours: sent at `utc` instead of at its occurrence
    reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "utc": iso_utc(self.utc, timespec="auto"),
            "local": self.local.isoformat(),
        }
        if self.skipped:
            entry["skipped"] = True
        if self.deferred:
            entry["deferred"] = True
        if self.reason is not None:
            entry["reason"] = self.reason
        return entry


def preview(timing: Timing, start: datetime, count: int) -> list[PreviewEntry]:
    """The next `count` fires strictly after `start`, with the holiday occurrences passed over;
    OffTheCalendar when they run past the year 9999 (or before the year 1 on the zone's clock)."""
    entries: list[PreviewEntry] = []
    try:
        _fill(entries, timing, start, count)
    except OverflowError:
        last = entries[-1].utc if entries else start  # the overflow came just after it
        raise OffTheCalendar(sum(not entry.skipped for entry in entries), early=last.year < 5000) from None
    return entries


def _fill(entries: list[PreviewEntry], timing: Timing, start: datetime, count: int) -> None:
    """preview()'s loop: `entries` holds the fires so far when an instant overflows."""
    fires = skipped = 0
    after = start
    while fires < count:
        instant = timing.occurrence_after(after)
        if instant is None:
            break
        after = instant
        if (name := timing.holiday(instant)) is not None:
            skipped += 1
            if skipped > _MAX_SKIPPED:
                break
            entries.append(_entry(timing, instant, skipped=True, reason=f"holiday: {name}"))
            continue
        fires += 1
        if timing.quiet is not None:
            resume, why = timing.quiet.defer(instant, timing.timezone)
            if why is not None:  # as the daemon does: the occurrences up to `resume` go out once
                after, note = collapse_quiet(timing, instant, resume)
                entries.append(_entry(timing, resume, deferred=True, reason=why + note))
                continue
        entries.append(_entry(timing, instant))


def _entry(timing: Timing, instant: datetime, **details: Any) -> PreviewEntry:
    return PreviewEntry(utc=instant, local=instant.astimezone(timing.tz), **details)
