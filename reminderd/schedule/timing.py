"""When a message may fire: its recurrence (cron or RRULE) in its own timezone, its end conditions,
holidays, quiet hours and outage backfill policy, applied to an instant passed in.

    timing = Timing(cron="0 9 * * *", timezone="Asia/Kolkata", holidays=Holidays.of("IN"))
    timing.next_after(now)                       # the next occurrence that is not a holiday
    hold(timing, occurrence=..., due_at=..., attempt=1, now=now)   # None: send it now

Pure: no clock, no database. The daemon uses it when it plans a recurring row, when it has
claimed a row (before any HTTP) and after an attempt; the CLI's preview uses it too.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from .calendars import Holidays, validate_calendar
from .cron import parse_cron
from .quiet import QuietHours
from .rrule import parse_rrule
from .wallclock import InvalidSchedule, WallSchedule, iso_utc, load_timezone, next_instant, to_instant

__all__ = [
    "BACKFILL_POLICIES",
    "DEFAULT_BACKFILL",
    "DEFAULT_LOOKBACK_S",
    "DEFAULT_MAX_LATENESS_S",
    "ON_TIME_S",
    "Arrival",
    "Hold",
    "Timing",
    "arrival",
    "collapse_quiet",
    "duration_text",
    "first_occurrence",
    "following",
    "hold",
]

BACKFILL_POLICIES = ("send", "latest", "skip")
# For a message without its own (nor, for the daemon, REMINDERD_BACKFILL / REMINDERD_MAX_LATENESS):
DEFAULT_BACKFILL = "send"
DEFAULT_MAX_LATENESS_S = 1800.0
DEFAULT_LOOKBACK_S = 86400.0  # REMINDERD_LOOKBACK's default: nothing later than this is ever sent
ON_TIME_S = 60.0  # backfill "skip": an occurrence later than this (or max_lateness) was missed
_MAX_HOLIDAYS_IN_A_ROW = 1000  # a calendar that is all holidays is a mistake, not a loop
_COUNT_UP_TO = 100  # missed occurrences are counted one by one up to this (a few ms)


@dataclass(frozen=True)
class Timing:
    """Everything that decides when one message fires, as read from its row and its tenant."""

    timezone: str = "UTC"  # the recipient's: cron, RRULE, holidays and quiet hours read it
    cron: str | None = None
    rrule: str | None = None
    until: datetime | None = None  # no occurrence after this instant
    max_runs: int | None = None  # finished after this many occurrences fired
    runs: int = 0  # occurrences fired so far (delivered, or given up after retries)
    holidays: Holidays = field(default_factory=Holidays)  # empty unless the holiday rule is "skip"
    quiet: QuietHours | None = None  # None when the tenant has none or the category is exempt
    backfill: str = DEFAULT_BACKFILL  # send | latest | skip
    max_lateness_s: float = DEFAULT_MAX_LATENESS_S
    ignored_calendar: str | None = None  # the tenant's, unknown: public holidays are not applied

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Timing:
        """From the columns the claim and planning queries return (effective values: the row's,
        else its tenant's, else the daemon's defaults). Never raises: bad values are found by
        check(), so a poisoned row is dead-lettered with its reason instead of stopping a batch."""
        skip = row["holiday_rule"] == "skip"
        custom = zip(row["holiday_days"] or (), row["holiday_names"] or (), strict=False) if skip else ()
        calendar, ignored = row["calendar"] if skip else None, None
        if calendar is not None and row["calendar_from_tenant"]:
            # A typo in the tenant's calendar must not dead-letter all its messages: they are sent
            # without public holidays and the daemon logs it. A message's own unknown calendar is
            # its own fault: check() refuses it.
            try:
                validate_calendar(calendar)
            except InvalidSchedule:
                calendar, ignored = None, calendar
        start, end = row["quiet_start"], row["quiet_end"]
        return cls(
            timezone=row["timezone"],
            cron=row["cron"],
            rrule=row["rrule"],
            until=row["until"],
            max_runs=row["max_runs"],
            runs=row["runs"],
            holidays=Holidays.of(calendar, custom),
            quiet=QuietHours(start, end) if start is not None and end is not None and start != end else None,
            backfill=row["backfill"],
            max_lateness_s=row["max_lateness_s"],
            ignored_calendar=ignored,
        )

    @property
    def recurring(self) -> bool:
        return self.cron is not None or self.rrule is not None

    @functools.cached_property
    def tz(self) -> ZoneInfo:
        return load_timezone(self.timezone)

    @functools.cached_property
    def schedule(self) -> WallSchedule | None:
        if self.cron is not None:
            return parse_cron(self.cron)
        if self.rrule is not None:
            return parse_rrule(self.rrule, self.timezone)
        return None

    @property
    def allowance_s(self) -> float:
        """How late an occurrence may still be sent under the backfill policy."""
        if self.backfill == "skip":
            return min(self.max_lateness_s, ON_TIME_S)
        return self.max_lateness_s

    def check(self) -> None:
        """Raise InvalidSchedule when this message can never be timed: an unknown timezone (where
        it matters), an invalid recurrence, an unknown calendar or backfill policy."""
        if self.recurring or self.holidays or self.quiet is not None:
            _ = self.tz
        _ = self.schedule
        if self.holidays.calendar is not None:
            validate_calendar(self.holidays.calendar)
        if self.backfill not in BACKFILL_POLICIES:
            raise InvalidSchedule(f'unknown backfill policy "{self.backfill}": use send, latest or skip')

    def local(self, instant: datetime) -> str:
        """An instant as the recipient's wall clock reads it: "2026-12-25 09:00 Europe/London"."""
        text = instant.astimezone(self.tz).strftime("%Y-%m-%d %H:%M:%S")
        return f"{text.removesuffix(':00')} {self.timezone}"

    def holiday(self, instant: datetime) -> str | None:
        """The name of the holiday on the recipient's local day of `instant`, or None."""
        if not self.holidays:
            return None
        return self.holidays.name_of(instant.astimezone(self.tz).date())

    def occurrence_after(self, after: datetime) -> datetime | None:
        """The recurrence's next instant strictly after `after`, ignoring holidays; None once
        it has ended (RRULE COUNT/UNTIL, or past `until`)."""
        assert self.schedule is not None, "a one-off message has no occurrences to list"
        instant = next_instant(self.schedule, self.tz, after)
        if instant is None or (self.until is not None and instant > self.until):
            return None
        return instant

    def next_after(self, after: datetime) -> tuple[datetime | None, list[str]]:
        """The next occurrence strictly after `after` that is not a holiday, and the holidays
        passed over on the way, by their first occurrence ("2026-12-25 09:00 Europe/London:
        Christmas Day (GB)"). A holiday is skipped a whole day at a time."""
        passed_over: list[str] = []
        for _ in range(_MAX_HOLIDAYS_IN_A_ROW):
            instant = self.occurrence_after(after)
            if instant is None:
                return None, passed_over
            name = self.holiday(instant)
            if name is None:
                return instant, passed_over
            passed_over.append(f"{self.local(instant)}: {name}")
            after = self.end_of_day(instant)
        raise InvalidSchedule(f"the next {_MAX_HOLIDAYS_IN_A_ROW} days it fires on are all holidays")

    def end_of_day(self, instant: datetime) -> datetime:
        """The last microsecond of the recipient's local day of `instant`."""
        following_day = instant.astimezone(self.tz).date() + timedelta(days=1)
        return to_instant(datetime.combine(following_day, time()), self.tz) - _MICROSECOND

    def start_of_day(self, instant: datetime) -> datetime:
        """The first instant of the recipient's local day of `instant`."""
        return to_instant(datetime.combine(instant.astimezone(self.tz).date(), time()), self.tz)

    def next_workday(self, instant: datetime) -> tuple[datetime, list[str]]:
        """A one-off's move off a holiday: the same wall time on the next day that is not one."""
        local = instant.astimezone(self.tz)
        day, passed_over = local.date(), list[str]()
        for _ in range(_MAX_HOLIDAYS_IN_A_ROW):
            name = self.holidays.name_of(day)
            if name is None:
                moved = to_instant(datetime.combine(day, local.time().replace(tzinfo=None)), self.tz)
                return moved, passed_over
            passed_over.append(f"{day}: {name}")
            day += timedelta(days=1)
        raise InvalidSchedule(f"the next {_MAX_HOLIDAYS_IN_A_ROW} days are all holidays")

    def count_between(self, first: datetime, last: datetime) -> str:
        """How many occurrences lie in [first, last], as words ("3", "more than 1000")."""
        count, instant = 0, first
        while instant <= last:
            count += 1
            if count > _COUNT_UP_TO:
                return f"more than {_COUNT_UP_TO}"
            following_one = self.occurrence_after(instant)
            if following_one is None:
                break
            instant = following_one
        return str(count)

    def latest_at_or_before(self, now: datetime) -> datetime | None:
        """The most recent occurrence at or before `now` (holidays included), or None. Found by
        bisection, so dense schedules cost a few dozen steps, not one per occurrence."""
        for window in _WINDOWS:
            instant = self.occurrence_after(now - window)
            if instant is None or instant > now:
                continue
            # occurrence_after(x) <= now exactly while x is before the latest occurrence.
            lo, hi = now - window, now
            while hi - lo > _MICROSECOND:
                mid = lo + (hi - lo) / 2
                following_one = self.occurrence_after(mid)
                if following_one is not None and following_one <= now:
                    lo = mid
                else:
                    hi = mid
            return self.occurrence_after(lo)
        return None


_MICROSECOND = timedelta(microseconds=1)

# Search windows for the latest occurrence: small first, so dense schedules stay cheap.
_WINDOWS = tuple(timedelta(seconds=s) for s in (60, 3600, 86400, 32 * 86400, 367 * 86400, 3660 * 86400))


@dataclass(frozen=True)
class Hold:
    """A claimed occurrence that is not sent now: where its row goes instead, and why."""

    event: str  # deferred | holiday_skipped | missed_skipped | expired | finished
    status: str  # pending | expired | finished
    reason: str
    fire_at: datetime | None = None  # when the row is due next (pending)
    occurrence: datetime | None = None  # the occurrence it then carries; None: fire_at itself
    keeps_attempt_count: bool = False  # the same occurrence waits (True) or a new one starts


def hold(timing: Timing, *, occurrence: datetime, due_at: datetime, attempt: int, now: datetime,
         held_by_limit: bool = False) -> Hold | None:
    """Why a claimed message must not be sent at `now`, or None to send it.

    `occurrence` is the one being sent, `due_at` the fire_at it was claimed at (a retry's or a
    deferral's time), `attempt` 1 for its first try. In order: end conditions, the backfill
    policy (lateness is counted from due_at; not for a message a sending limit held back, whose
    lateness is the limit's doing), holidays (first tries only), quiet hours."""
    if timing.recurring and timing.until is not None and occurrence > timing.until:
        past = iso_utc(occurrence, timespec="auto")
        return Hold("finished", "finished", f"finished: the occurrence {past} is past until")
    late = timedelta(0) if held_by_limit else now - due_at
    if timing.backfill == "latest":
        if timing.recurring and attempt == 1:
            following_one = timing.occurrence_after(occurrence)
            if following_one is not None and following_one <= now:
                latest = timing.latest_at_or_before(now)
                assert latest is not None
                missed = timing.count_between(occurrence, latest - timedelta(microseconds=1))
                return Hold(
                    "missed_skipped", "pending",
                    f"backfill=latest: {missed} missed occurrence(s) from {timing.local(occurrence)} skipped; "
                    f"sending only the latest, {timing.local(latest)}",
                    fire_at=now, occurrence=latest,
                )
    elif late.total_seconds() > timing.allowance_s:
        allowance = _duration(timedelta(seconds=timing.allowance_s))
        allowed = f"more than the {allowance} allowed (backfill={timing.backfill})"
        if not timing.recurring:
            due = iso_utc(due_at, timespec="auto")
            return Hold("expired", "expired", f"missed: due {due}, {_duration(late)} late, {allowed}")
        cutoff = now - timedelta(seconds=timing.allowance_s)
        missed = timing.count_between(occurrence, cutoff)
        reason = (
            f"missed {missed} occurrence(s) from {timing.local(occurrence)}, {_duration(late)} late, {allowed}"
        )
        return _next_or_finished(timing, cutoff, "expired", reason)
    # A recurring occurrence is judged by its own day; a one-off by the day it is due now (after a
    # move off a holiday, its occurrence keeps the original day).
    day_of = occurrence if timing.recurring else due_at
    if attempt == 1 and (name := timing.holiday(day_of)) is not None:
        if timing.recurring:
            return _next_or_finished(
                timing, occurrence, "holiday_skipped", f"skipped {timing.local(occurrence)}: {name}"
            )
        moved, passed_over = timing.next_workday(due_at)
        return Hold(
            "holiday_skipped", "pending",
            f"moved from {timing.local(due_at)} ({', '.join([name, *passed_over[1:]])}) "
            f"to {timing.local(moved)}",
            fire_at=moved, occurrence=occurrence, keeps_attempt_count=True,
        )
    if timing.quiet is not None:
        resume, why = timing.quiet.defer(now, timing.timezone)
        if why is not None:
            carried = occurrence
            if attempt == 1:  # not a retry: its webhook-id may change
                carried, note = collapse_quiet(timing, occurrence, resume)
                why += note
            return Hold(
                "deferred", "pending", why, fire_at=resume, occurrence=carried, keeps_attempt_count=True
            )
    return None


@dataclass(frozen=True)
class Arrival:
    """How a one-off due at `due_at` stands when it is scheduled at `now`: how late it already is,
    and whether its backfill policy would still send it. The rule the database applies at insert
    (reminderd.check_arrival in schema.sql), so a message is refused instead of dead on arrival."""

    late_s: float  # 0 when it is due now or later
    policy: str
    allowance_s: float | None  # how late the policy sends it; None: anything inside the lookback
    lookback_s: float

    @property
    def beyond_lookback(self) -> bool:
        return self.late_s >= self.lookback_s

    @property
    def too_late(self) -> bool:
        """The daemon would expire it at once: refuse it."""
        return self.late_s > 0 and (
            self.beyond_lookback or (self.allowance_s is not None and self.late_s > self.allowance_s)
        )

    @property
    def late(self) -> bool:
        """In the past, yet still sent: at once."""
        return self.late_s > 0 and not self.too_late

    def why(self) -> str:
        """What limit a too-late message breaks, or a late one keeps within, in words."""
        if self.beyond_lookback or self.allowance_s is None:
            return f"nothing older than the lookback ({duration_text(self.lookback_s)}) is ever sent"
        return f"backfill={self.policy} sends a message at most {duration_text(self.allowance_s)} late"


def arrival(
    due_at: datetime, now: datetime, *, backfill: str | None, max_lateness_s: float | None,
    lookback_s: float = DEFAULT_LOOKBACK_S,
) -> Arrival:
    """How a one-off due at `due_at` stands at `now` (see Arrival). `backfill` and `max_lateness_s`
    are the message's own, None for the defaults (send, 30 minutes). The daemon's rules: nothing
    at or beyond the lookback is claimed; `hold()` expires what is later than the policy allows."""
    policy = backfill or DEFAULT_BACKFILL
    lateness_s = DEFAULT_MAX_LATENESS_S if max_lateness_s is None else max_lateness_s
    allowance_s = None if policy == "latest" else Timing(backfill=policy, max_lateness_s=lateness_s).allowance_s
    return Arrival(max(0.0, (now - due_at).total_seconds()), policy, allowance_s, lookback_s)


def duration_text(seconds: float) -> str:
    """A duration for people: 45s, 30m, 6h 5m, 2d 3h (reminderd.duration_text in SQL says the same)."""
    return _duration(timedelta(seconds=seconds))


def collapse_quiet(timing: Timing, occurrence: datetime, resume: datetime) -> tuple[datetime, str]:
    """A recurring row's occurrences up to the end of quiet hours go out once, as the latest of
    them: the one it carries to `resume`, and a note saying so."""
    if not timing.recurring:
        return occurrence, ""
    latest = timing.latest_at_or_before(resume)
    while latest is not None and latest > occurrence and timing.holiday(latest) is not None:
        latest = timing.latest_at_or_before(timing.start_of_day(latest) - _MICROSECOND)  # not a holiday's
    if latest is None or latest <= occurrence:
        return occurrence, ""
    count = timing.count_between(occurrence, latest)
    return latest, f"; its {count} occurrences up to then are sent once, as {timing.local(latest)}"


def following(timing: Timing, occurrence: datetime) -> tuple[datetime | None, str | None]:
    """After an occurrence fired (delivered, or given up): the next one and a note about holidays
    passed over, or (None, why it finished)."""
    if timing.max_runs is not None and timing.runs + 1 >= timing.max_runs:
        return None, f"finished: ran {timing.max_runs} time(s) (max_runs)"
    instant, passed_over = timing.next_after(occurrence)
    if instant is None:
        return None, _why_finished(timing, occurrence)
    return instant, _passed_over_note(passed_over)


def first_occurrence(timing: Timing, now: datetime) -> tuple[datetime | None, str | None]:
    """A recurring row's first occurrence after `now` (planning), or (None, why it finished)."""
    if timing.max_runs is not None and timing.runs >= timing.max_runs:
        return None, f"finished: ran {timing.max_runs} time(s) (max_runs)"
    instant, passed_over = timing.next_after(now)
    if instant is None:
        return None, _why_finished(timing, now)
    return instant, _passed_over_note(passed_over)


def _next_or_finished(timing: Timing, after: datetime, event: str, reason: str) -> Hold:
    instant, passed_over = timing.next_after(after)
    if instant is None:
        return Hold("finished", "finished", f"{reason}; {_why_finished(timing, after)}")
    note = _passed_over_note(passed_over)
    return Hold(event, "pending", f"{reason}; next {timing.local(instant)}" + (f" ({note})" if note else ""),
                fire_at=instant)


def _why_finished(timing: Timing, after: datetime) -> str:
    assert timing.schedule is not None
    if timing.until is not None and next_instant(timing.schedule, timing.tz, after) is not None:
        until = iso_utc(timing.until, timespec="auto")
        return f"finished: no occurrence left before until {until}"
    return "finished: the RRULE has no more occurrences"


def _passed_over_note(passed_over: list[str]) -> str | None:
    if not passed_over:
        return None
    return "holidays skipped: " + "; ".join(passed_over)


def _duration(delta: timedelta) -> str:
    """A duration for people: 45s, 30m, 6h 5m, 2d 3h."""
    seconds = int(delta.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    if not any(parts) or (secs and not days and not hours):
        parts.append(f"{secs}s")
    return " ".join(part for part in parts if part)
