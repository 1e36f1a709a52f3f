"""When a message fires: cron, RFC 5545 and plain-English schedules in IANA zones, with exact DST,
holidays, quiet hours and backfill. Pure: every function takes `now` (or an instant) as an argument,
and nothing here imports the rest of reminderd (tests/unit/test_schedule_wall.py keeps it so).

The rest of the package imports from here, never from the modules below:

- wallclock: wall-clock times to instants and back, the DST rules (`to_instant`, `load_timezone`)
- cron, rrule, human: the three ways to write a recurrence (`parse_cron`, `parse_rrule`,
  `compile_phrase`)
- calendars, quiet: public holidays skipped, quiet hours deferred (`Holidays`, `QuietHours`)
- timing: a row's schedule and the decisions on it (`Timing`, `hold`, `following`), and whether a
  message scheduled now is already too late for its backfill policy (`arrival`)
- preview: the next fire times as `reminderd preview` lists them
- waves: a broadcast's wall time read in each of its contacts' zones (`Waves`, `first_everywhere`, `span`)
"""

from .calendars import Holidays, calendars_version, known_calendars, validate_calendar
from .cron import parse_cron, validate_cron
from .human import UnknownPhrase, compile_phrase, describe
from .preview import OffTheCalendar, PreviewEntry, preview
from .quiet import QuietHours
from .rrule import RRule, anchor_rrule, parse_rrule
from .timing import (
    BACKFILL_POLICIES,
    DEFAULT_BACKFILL,
    DEFAULT_LOOKBACK_S,
    DEFAULT_MAX_LATENESS_S,
    Arrival,
    Hold,
    Timing,
    arrival,
    collapse_quiet,
    duration_text,
    first_occurrence,
    following,
    hold,
)
from .wallclock import (
    InvalidSchedule,
    WallSchedule,
    iso_utc,
    load_iana_timezone,
    load_timezone,
    not_an_iana_zone,
    to_instant,
)
from .waves import Waves, first_everywhere, next_wall, readable_zones, span

__all__ = [
    "BACKFILL_POLICIES",
    "DEFAULT_BACKFILL",
    "DEFAULT_LOOKBACK_S",
    "DEFAULT_MAX_LATENESS_S",
    "Arrival",
    "Hold",
    "Holidays",
    "InvalidSchedule",
    "OffTheCalendar",
    "PreviewEntry",
    "QuietHours",
    "RRule",
    "Timing",
    "UnknownPhrase",
    "WallSchedule",
    "Waves",
    "anchor_rrule",
    "arrival",
    "calendars_version",
    "collapse_quiet",
    "compile_phrase",
    "describe",
    "duration_text",
    "first_everywhere",
    "first_occurrence",
    "following",
    "hold",
    "iso_utc",
    "known_calendars",
    "load_iana_timezone",
    "load_timezone",
    "next_wall",
    "not_an_iana_zone",
    "parse_cron",
    "parse_rrule",
    "preview",
    "readable_zones",
    "span",
    "to_instant",
    "validate_calendar",
    "validate_cron",
]
