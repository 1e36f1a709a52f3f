"""What the dashboard's pages show, computed: lateness percentiles from bucket counts, the
fire-time histogram's bars and its shaded quiet hours and holidays, a message's schedule in words,
its next fires and why it is where it is. Pure: every function takes `now` (or the instants it
needs) as an argument, so the tests need no database, no server and no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from .lifecycle import Status
from .schedule import (
    Holidays,
    InvalidSchedule,
    PreviewEntry,
    QuietHours,
    Timing,
    describe,
    iso_utc,
    parse_rrule,
    preview,
    to_instant,
)

# The lower bounds, in milliseconds, of the lateness buckets after the first (bucket 0 is anything
# under 1 ms): reminderd.lateness_bounds_ms() in migration 0011; a test holds the two equal.
LATENESS_BOUNDS_MS: tuple[float, ...] = (
    1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 900000, 3600000,
)


# Lateness ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quantile:
    """A percentile read off bucket counts: `ms` interpolated within its bucket; `at_least` when
    it lies in the last, open-ended bucket (then `ms` is that bucket's lower bound)."""

    ms: float
    at_least: bool = False


@dataclass(frozen=True)
class Lateness:
    """Delivered attempts in a window, and how late the median and the 99th percentile were."""

    delivered: int
    p50: Quantile | None
    p99: Quantile | None


def quantile(counts: Mapping[int, int], q: float, bounds: Sequence[float] = LATENESS_BOUNDS_MS
             ) -> Quantile | None:
    """The q-quantile (0 < q < 1) of values counted per bucket (bucket n holds [bounds[n-1],
    bounds[n]); 0 holds [0, bounds[0])), linearly interpolated within its bucket, as Prometheus'
    histogram_quantile does. None when nothing was counted."""
    total = sum(counts.values())
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for bucket in range(len(bounds) + 1):
        in_bucket = counts.get(bucket, 0)
        if in_bucket and seen + in_bucket >= rank:
            low = 0.0 if bucket == 0 else float(bounds[bucket - 1])
            if bucket == len(bounds):
                return Quantile(low, at_least=True)
            high = float(bounds[bucket])
            return Quantile(low + (high - low) * (rank - seen) / in_bucket)
        seen += in_bucket
    return Quantile(float(bounds[-1]), at_least=True)  # counts in buckets beyond the bounds


def lateness(counts: Mapping[int, int], bounds: Sequence[float] = LATENESS_BOUNDS_MS) -> Lateness:
    return Lateness(sum(counts.values()), quantile(counts, 0.5, bounds), quantile(counts, 0.99, bounds))


def share(part: int, whole: int) -> float | None:
    """part / whole as a percentage; None when there is no whole."""
    return None if whole <= 0 else 100.0 * part / whole


# Searching refs ------------------------------------------------------------------------------------

_LAST_CHARACTER = 0x10FFFF
_SURROGATES = range(0xD800, 0xE000)


def prefix_range(prefix: str) -> tuple[str, str]:
    """[low, high): every string starting with `prefix` in byte (code point) order, for the
    ~>=~ and ~<~ operators that scheduled_messages_tenant_ref answers. An empty prefix is
    refused: it would be every ref."""
    if not prefix:
        raise ValueError("an empty prefix matches every ref")
    trimmed = prefix.rstrip(chr(_LAST_CHARACTER))
    if not trimmed:
        raise ValueError("a prefix of U+10FFFF characters only has no upper bound")
    following = ord(trimmed[-1]) + 1
    if following in _SURROGATES:  # not encodable in UTF-8; nothing lies between them in byte order
        following = _SURROGATES.stop
    return prefix, trimmed[:-1] + chr(following)


# The fire-time histogram ---------------------------------------------------------------------------

CHART_WIDTH = 960
CHART_HEIGHT = 160


@dataclass(frozen=True)
class Bar:
    """One hour or minute of the histogram: its messages, and where it is drawn."""

    starts_at: datetime
    ends_at: datetime
    messages: int
    x: float
    width: float
    height: float

    @property
    def y(self) -> float:
        return CHART_HEIGHT - self.height


@dataclass(frozen=True)
class Span:
    """A shaded stretch of the chart (quiet hours, a holiday), clipped to it."""

    starts_at: datetime
    ends_at: datetime
    label: str
    x: float
    width: float


@dataclass(frozen=True)
class Tick:
    x: float
    label: str
    major: bool  # kept on a narrow screen (every other tick)


@dataclass(frozen=True)
class Chart:
    start: datetime
    end: datetime
    bars: tuple[Bar, ...]
    spans: tuple[Span, ...]
    ticks: tuple[Tick, ...]
    peak: int  # the tallest bar's messages
    total: int

    width = CHART_WIDTH
    height = CHART_HEIGHT


def slot_start(now: datetime, unit: str, tz: ZoneInfo) -> datetime:
    """The start of the hour or minute `now` is in, on `tz`'s clock (the histogram's first slot;
    the database's date_trunc(unit, fire_at, tz) names the same instants)."""
    local = now.astimezone(tz)
    if unit == "hour":
        local = local.replace(minute=0, second=0, microsecond=0)
    elif unit == "minute":
        local = local.replace(second=0, microsecond=0)
    else:
        raise ValueError(f"unknown unit {unit!r}: hour or minute")
    return local.astimezone(UTC)


def chart(counts: Iterable[tuple[datetime, int]], *, start: datetime, step: timedelta, slots: int,
          tz: ZoneInfo, spans: Iterable[tuple[datetime, datetime, str]] = (), tick_every: int = 6) -> Chart:
    """`slots` bars of `step` from `start` (every slot drawn, empty ones at zero height), the
    counts placed by the slot their start falls in, heights scaled to the tallest; `spans`
    clipped and placed on the same axis; a tick every `tick_every` slots, labelled on `tz`'s clock."""
    end = start + step * slots
    per_slot = [0] * slots
    for starts_at, messages in counts:
        index = int((starts_at - start) / step)
        if 0 <= index < slots:
            per_slot[index] += messages
    peak = max(per_slot, default=0)
    slot_width = CHART_WIDTH / slots
    bars = tuple(
        Bar(start + step * i, start + step * (i + 1), n, x=i * slot_width, width=max(slot_width - 1.5, 1.0),
            height=0.0 if peak == 0 else (CHART_HEIGHT - 4) * n / peak)
        for i, n in enumerate(per_slot)
    )

    def x_of(instant: datetime) -> float:
        return CHART_WIDTH * (instant - start) / (end - start)

    placed = tuple(
        Span(max(a, start), min(b, end), label, x_of(max(a, start)), x_of(min(b, end)) - x_of(max(a, start)))
        for a, b, label in spans if a < end and b > start
    )
    ticks = []
    day = None
    for i in range(0, slots, tick_every):
        local = (start + step * i).astimezone(tz)
        label = local.strftime("%H:%M")
        if step >= timedelta(hours=1) and local.date() != day:  # the day's first tick names the day
            label = local.strftime("%a %H:%M")
            day = local.date()
        ticks.append(Tick(i * slot_width, label, major=i % (2 * tick_every) == 0))
    return Chart(start, end, bars, placed, tuple(ticks), peak, sum(per_slot))


def quiet_spans(quiet: QuietHours, tz: ZoneInfo, start: datetime, end: datetime
                ) -> list[tuple[datetime, datetime, str]]:
    """The quiet-hour windows on `tz`'s clock that overlap [start, end)."""
    spans = []
    day = start.astimezone(tz).date() - timedelta(days=1)
    last = end.astimezone(tz).date()
    while day <= last:
        begins = to_instant(datetime.combine(day, quiet.start), tz)
        ends_on = day if quiet.start < quiet.end else day + timedelta(days=1)
        ends = to_instant(datetime.combine(ends_on, quiet.end), tz)
        if begins < end and ends > start:
            spans.append((begins, ends, f"quiet hours {quiet}"))
        day += timedelta(days=1)
    return spans


def holiday_spans(holidays: Holidays, tz: ZoneInfo, start: datetime, end: datetime
                  ) -> list[tuple[datetime, datetime, str]]:
    """The holidays, whole local days on `tz`'s clock, that overlap [start, end). An unknown
    calendar shades nothing (the daemon then sends without public holidays too)."""
    spans = []
    day = start.astimezone(tz).date()
    while (begins := to_instant(datetime.combine(day, time()), tz)) < end:
        try:
            name = holidays.name_of(day)
        except InvalidSchedule:
            return []
        if name is not None:
            spans.append((begins, to_instant(datetime.combine(day + timedelta(days=1), time()), tz), name))
        day += timedelta(days=1)
    return spans


def local_days(tz: ZoneInfo, start: datetime, end: datetime) -> tuple[date, date]:
    """The first and last local day of [start, end) on `tz`'s clock (the tenant holidays to read)."""
    return start.astimezone(tz).date(), end.astimezone(tz).date()


# One message's story --------------------------------------------------------------------------------


def schedule_words(timing: Timing) -> str:
    """The recurrence in words ("cron "0 9 * * 1-5": At 09:00 AM, Monday through Friday"), or
    "once"; with its end conditions."""
    try:
        if timing.cron is not None:
            words = f'cron "{timing.cron}": {describe(timing.cron)}'
        elif timing.rrule is not None:
            words = parse_rrule(timing.rrule, timing.timezone).describe()
        else:
            return "once"
    except (InvalidSchedule, ValueError) as exc:
        return f"a schedule that cannot be read: {exc}"
    ends = []
    if timing.until is not None:
        ends.append(f"until {iso_utc(timing.until, timespec='seconds')}")
    if timing.max_runs is not None:
        ends.append(f"at most {timing.max_runs} runs ({timing.runs} so far)")
    elif timing.runs:
        ends.append(f"{timing.runs} runs so far")
    return words + (f"; {', '.join(ends)}" if ends else "")


def next_fires(timing: Timing, fire_at: datetime | None, now: datetime, count: int = 5) -> list[PreviewEntry]:
    """When it fires next, as the daemon will decide: a recurring row's next `count` occurrences
    after its planned fire_at (that one included), holidays passed over and quiet hours deferred; a
    one-off's fire_at, moved off a holiday or deferred out of quiet hours as it would be."""
    try:
        if timing.recurring:
            after = (fire_at or now) - timedelta(microseconds=1)
            return preview(timing, after, count)
        if fire_at is None:
            return []
        holiday = timing.holiday(fire_at)
        if holiday is not None:
            moved, _ = timing.next_workday(fire_at)
            return [PreviewEntry(moved, moved.astimezone(timing.tz), reason=f"moved off {holiday}")]
        if timing.quiet is not None:
            resume, why = timing.quiet.defer(fire_at, timing.timezone)
            if why is not None:
                return [PreviewEntry(resume, resume.astimezone(timing.tz), deferred=True, reason=why)]
        return [PreviewEntry(fire_at, fire_at.astimezone(timing.tz))]
    except (InvalidSchedule, ValueError):
        return []  # schedule_words says what is wrong with it


def why(status: Status, *, fire_at: datetime | None, scheduled_for: datetime | None, attempts: int,
        max_attempts: int | None, last_error: str | None, picked_at: datetime | None,
        lease_expires_at: datetime | None, sent_at: datetime | None, paused_by: str | None,
        tenant_paused: bool, now: datetime) -> str:
    """Where the message is and why, in a sentence: the "why didn't this reminder fire?" answer."""
    reason = f": {last_error}" if last_error else ""
    if status is Status.PENDING:
        if fire_at is None:
            return "Waiting for a daemon to plan its first occurrence."
        if scheduled_for is not None and scheduled_for != fire_at:
            limit = f" of {max_attempts}" if max_attempts else ""
            return (f"Retrying the occurrence of {_when(scheduled_for)}: the next try (after attempt {attempts}"
                    f"{limit}) is due {_relative(fire_at, now)}{reason}.")
        if fire_at > now:
            return f"Waiting: due {_relative(fire_at, now)}{reason}."
        return (f"Due {_relative(fire_at, now)} and not claimed yet: is a daemon running, and keeping up? "
                "(Overview: daemons and backlog.)")
    if status is Status.PICKED:
        lease = f"; its lease runs out {_relative(lease_expires_at, now)}" if lease_expires_at else ""
        since = _relative(picked_at, now) if picked_at else "now"
        return f"In flight: claimed by a daemon {since}{lease} (attempt {attempts})."
    if status is Status.PAUSED:
        who = "its tenant is paused" if paused_by == "tenant" or tenant_paused else "it was paused"
        return f"Paused, not sent: {who}. Resume it to send it at its time."
    if status is Status.AWAITING_APPROVAL:
        return ("Held: its broadcast awaits a second person's approval (reminderd broadcasts approve); "
                "rejected, it is cancelled.")
    if status is Status.SENT:
        when = f" {_relative(sent_at, now)}" if sent_at else ""
        return f"Delivered{when} (attempt {attempts})."
    if status is Status.DEAD:
        plural = "s" if attempts != 1 else ""
        return f"Dead-lettered after {attempts} attempt{plural}{reason}. Requeue it to try again."
    if status is Status.CANCELLED:
        return f"Cancelled{reason}."
    if status is Status.EXPIRED:
        return f"Expired, never sent{reason}."
    return f"Finished{reason}."


def _when(instant: datetime) -> str:
    return iso_utc(instant, timespec="seconds")


def _relative(instant: datetime | None, now: datetime) -> str:
    if instant is None:
        return "at an unknown time"
    delta = instant - now
    words = duration_words(abs(delta.total_seconds()))
    if delta.total_seconds() > 0:
        return f"at {_when(instant)} (in {words})"
    return f"at {_when(instant)} ({words} ago)"


def duration_words(seconds: float) -> str:
    """3 s, 12 min, 2 h 5 min, 3 d 4 h."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min" + (f" {seconds} s" if seconds and minutes < 10 else "")
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    days, hours = divmod(hours, 24)
    return f"{days} d" + (f" {hours} h" if hours else "")
