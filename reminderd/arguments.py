"""Command-line text turned into checked values, before any database connection is made.

Every function raises UsageError with one line naming the flag and what is wrong with it.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import urlsplit

from .duration import EXAMPLES, parse_seconds
from .payload import MAX_PAYLOAD_BYTES, PayloadError, check_payload
from .schedule import (
    BACKFILL_POLICIES,
    DEFAULT_MAX_LATENESS_S,
    Arrival,
    InvalidSchedule,
    QuietHours,
    Timing,
    UnknownPhrase,
    anchor_rrule,
    arrival,
    compile_phrase,
    describe,
    duration_text,
    first_occurrence,
    iso_utc,
    load_timezone,
    parse_rrule,
    to_instant,
    validate_calendar,
    validate_cron,
)

if TYPE_CHECKING:
    from .store import TenantCalendar

MAX_DELAY_S = 100 * 365 * 86400
MAX_PAYLOAD_READ = 64 * MAX_PAYLOAD_BYTES  # read no further: room for a pretty-printed file


class UsageError(Exception):
    """Bad input from the command line."""


def parse_duration(text: str, flag: str = "--in", *, allow_zero: bool = False) -> timedelta:
    """A positive duration, read as reminderd reads every duration (reminderd/duration.py):
    '90s', '15m', '2h', '3d', '1h30m', or a bare number of seconds."""
    try:
        seconds = parse_seconds(text)
    except ValueError as exc:
        raise UsageError(f"{flag} {text!r}: {exc}") from None
    if seconds < 0:
        raise UsageError(f"{flag} {text!r}: a duration cannot be negative; {EXAMPLES}")
    if seconds == 0 and not allow_zero:
        raise UsageError(f"{flag} {text!r}: the delay must be positive")
    if seconds > MAX_DELAY_S:
        raise UsageError(f"{flag} {text!r}: the delay must be under 100 years")
    return timedelta(seconds=seconds)


def split_zone(text: str) -> tuple[str, str | None]:
    """ "2026-12-24 09:00 in Asia/Kolkata" -> ("2026-12-24 09:00", "Asia/Kolkata")."""
    when, found, zone = text.rpartition(" in ")
    return (when, zone.strip()) if found and when.strip() else (text, None)


def parse_instant(text: str, tz_name: str | None, flag: str = "--at") -> datetime:
    """An ISO-8601 instant. Without a UTC offset it is a wall time in --tz (or in the zone it
    names: "2026-12-24 09:00 in Asia/Kolkata"): a time repeated when clocks go back means its
    first occurrence, one skipped when they go forward the jump."""
    when, zone = split_zone(text)
    if zone is not None:
        if tz_name is not None and tz_name != zone:
            raise UsageError(f"{flag} {text!r} names {zone}, but --tz says {tz_name}")
        tz_name = zone
    try:
        value = datetime.fromisoformat(when.strip())
    except ValueError:
        raise UsageError(f"{flag} {text!r} is not ISO-8601, e.g. 2026-12-24T09:00:00Z") from None
    if value.tzinfo is None and tz_name is None:
        raise UsageError(f"{flag} {text!r} has no UTC offset: add one (Z, +05:30) or say --tz Region/City")
    try:
        if value.tzinfo is not None or tz_name is None:
            return value.astimezone(UTC)
        return to_instant(value, load_timezone(tz_name))
    except InvalidSchedule as exc:
        raise UsageError(f"{flag}: {exc}") from None
    except OverflowError:  # 0001-01-01T00:00+05:00 is before the first instant Python can hold
        raise UsageError(f"{flag} {text!r} is outside the years 1 to 9999 in UTC") from None


def read_payload(argument: str | None, stdin: BinaryIO | None = None) -> tuple[str | None, str]:
    """The JSON text --payload names, and how to name it in an error: the text itself, `@FILE`
    (the kernel limits one argument to 128 KiB, below the 256 KiB payload limit) or `-` (stdin)."""
    if argument is None or not (argument == "-" or argument.startswith("@")):
        return argument, "--payload"
    flag = f"--payload {argument}"
    try:
        if argument == "-":
            data = (stdin or sys.stdin.buffer).read(MAX_PAYLOAD_READ + 1)
        else:
            with open(argument[1:], "rb") as handle:
                data = handle.read(MAX_PAYLOAD_READ + 1)
    except OSError as exc:
        raise UsageError(f"{flag}: cannot read it ({exc.strerror})") from None
    if len(data) > MAX_PAYLOAD_READ:
        raise UsageError(f"{flag} is over {MAX_PAYLOAD_READ // 2**20} MiB; a payload is at most 256 KiB")
    try:
        return data.decode("utf-8").removeprefix("\ufeff"), flag  # an editor's byte-order mark is no content
    except UnicodeDecodeError as exc:
        raise UsageError(f"{flag} is not UTF-8 text (byte {exc.start})") from None


def parse_payload(text: str | None, flag: str = "--payload") -> str:
    """The payload's JSON text, checked as PostgreSQL will take it and kept exactly as given."""
    if text is None:
        return "{}"
    try:
        return check_payload(text)
    except PayloadError as exc:
        raise UsageError(f"{flag} {exc}") from None


@dataclass(frozen=True)
class Recurrence:
    """A recurring schedule as given by --cron, --every or --rrule."""

    cron: str | None = None
    rrule: str | None = None
    phrase: str | None = None  # the --every text it was compiled from

    @classmethod
    def from_args(cls, args: argparse.Namespace, timezone: str, start: datetime) -> Recurrence | None:
        """None when no recurrence flag was given. An RRULE without DTSTART is checked as the
        database will store it: anchored at the local midnight of `start`."""
        try:
            if args.cron is not None:
                validate_cron(args.cron)
                return cls(cron=args.cron)
            if args.every is not None:
                return cls(cron=compile_phrase(args.every), phrase=args.every)
            if args.rrule is not None:
                rrule = args.rrule.replace("\\n", "\n")
                parse_rrule(anchor_rrule(rrule, timezone, start), timezone)
                return cls(rrule=rrule)
        except (InvalidSchedule, UnknownPhrase) as exc:
            raise UsageError(str(exc)) from None
        return None

    def description(self, timezone: str, start: datetime) -> str:
        if self.rrule is not None:
            return parse_rrule(anchor_rrule(self.rrule, timezone, start), timezone).describe()
        assert self.cron is not None
        said = describe(self.cron)
        return f'"{self.phrase}" = cron "{self.cron}": {said}' if self.phrase else f'cron "{self.cron}": {said}'


def checked_timezone(name: str | None) -> str:
    if name is None:
        return "UTC"
    try:
        load_timezone(name)
    except InvalidSchedule as exc:
        raise UsageError(f"--tz: {exc}") from None
    return name


def checked_calendar(code: str | None) -> str | None:
    if code is not None:
        try:
            validate_calendar(code)
        except InvalidSchedule as exc:
            raise UsageError(f"--calendar: {exc}") from None
    return code


def checked_quiet(text: str | None) -> QuietHours | None:
    if text is None:
        return None
    try:
        return QuietHours.parse(text)
    except ValueError as exc:
        raise UsageError(f"--quiet: {exc}") from None


@dataclass(frozen=True)
class ScheduleRequest:
    """`reminderd schedule` arguments, checked before any connection is made."""

    tenant_id: str
    ref_id: str
    payload_json: str  # as given, checked: never decoded and encoded again
    callback_url: str | None
    timezone: str = "UTC"
    fire_at: datetime | None = None
    recurrence: Recurrence | None = None
    until: datetime | None = None
    max_runs: int | None = None
    category: str = "transactional"
    calendar: str | None = None
    holiday_rule: str | None = None
    backfill: str | None = None
    max_lateness_s: float | None = None
    first_fire_at: datetime | None = None  # a recurring row's first occurrence, when computed
    arrival: Arrival | None = None  # a one-off's: how late it already is (sent at once if late)

    @classmethod
    def from_args(cls, args: argparse.Namespace, now: datetime) -> ScheduleRequest:
        at_zone = None if args.at is None else split_zone(args.at)[1]
        timezone = checked_timezone(args.tz or at_zone)  # the recipient's
        recurrence = Recurrence.from_args(args, timezone, now)
        if recurrence is None and (args.until is not None or args.max_runs is not None):
            raise UsageError(
                "--until and --max-runs end a recurring schedule: use them with --cron, --every or --rrule"
            )
        if args.max_runs is not None and args.max_runs < 1:
            raise UsageError(f"--max-runs {args.max_runs}: must be at least 1")
        if args.max_runs is not None and args.max_runs > MAX_INT4:
            raise UsageError(f"--max-runs {args.max_runs}: at most {MAX_INT4}")
        checked_category(args.category)
        fire_at = None
        if args.delay is not None:
            fire_at = now + parse_duration(args.delay)
        elif args.at is not None:
            fire_at = parse_instant(args.at, args.tz)
        max_lateness_s = None if args.max_lateness is None else parse_duration(
            args.max_lateness, "--max-lateness", allow_zero=True).total_seconds()
        until = None if args.until is None else parse_instant(args.until, timezone, flag="--until")
        on_arrival = None
        if fire_at is not None:
            on_arrival = arrival(fire_at, now, backfill=args.backfill, max_lateness_s=max_lateness_s)
            if on_arrival.too_late:
                raise UsageError(too_late(f"--at {args.at!r}", on_arrival))
        if recurrence is not None and until is not None:
            checked_until(recurrence, timezone, until, args.until, now)
        payload_json = parse_payload(*read_payload(args.payload))
        return cls(
            tenant_id=checked_tenant_id(args.tenant_id), ref_id=checked_ref(args.ref_id),
            payload_json=payload_json, callback_url=checked_callback_url(args.callback_url),
            timezone=timezone, fire_at=fire_at, recurrence=recurrence, until=until,
            max_runs=args.max_runs, category=args.category, calendar=checked_calendar(args.calendar),
            holiday_rule=args.holiday_rule, backfill=args.backfill, max_lateness_s=max_lateness_s,
            arrival=on_arrival,
        )

    def late_note(self) -> str | None:
        """For a one-off already (slightly) past: that it is sent now, and why that is allowed."""
        if self.arrival is None or not self.arrival.late:
            return None
        return f"it was due {duration_text(self.arrival.late_s)} ago: sent now ({self.arrival.why()})"

    def with_first_occurrence(self, tenant: TenantCalendar, now: datetime) -> ScheduleRequest:
        """A recurring request given its first fire_at, timed as the daemon's planner would time it
        (the tenant's holidays skipped): `reminderd status` and the views show it at once. Its
        RRULE is anchored here, so that the database stores the rule this was computed from."""
        recurrence = self.recurrence
        assert recurrence is not None, "a one-off has its fire_at"
        rrule = None if recurrence.rrule is None else anchor_rrule(recurrence.rrule, self.timezone, now)
        timing = Timing.from_row({
            "timezone": self.timezone, "cron": recurrence.cron, "rrule": rrule, "until": self.until,
            "max_runs": self.max_runs, "runs": 0,
            "calendar": self.calendar or tenant.calendar, "calendar_from_tenant": self.calendar is None,
            "holiday_rule": self.holiday_rule or tenant.holiday_rule,
            "holiday_days": tenant.holiday_days, "holiday_names": tenant.holiday_names,
            "quiet_start": None, "quiet_end": None, "backfill": self.backfill or "send",
            "max_lateness_s": self.max_lateness_s or DEFAULT_MAX_LATENESS_S,
        })
        try:
            timing.check()
            first, why_not = first_occurrence(timing, now)
        except InvalidSchedule as exc:
            raise UsageError(str(exc)) from None
        if first is None:
            raise UsageError(f"nothing would ever be sent: {why_not}")
        return replace(self, recurrence=replace(recurrence, rrule=rrule), first_fire_at=first)


def too_late(what: str, late: Arrival) -> str:
    """The one line for a one-off refused as dead on arrival (the database says it the same way)."""
    allow = "" if late.beyond_lookback else "; --max-lateness (or --backfill latest) allows later"
    return (f"{what} was {duration_text(late.late_s)} ago: too late to send, {late.why()}, so it would "
            f"expire at once; schedule it for now or later{allow}")


def checked_until(recurrence: Recurrence, timezone: str, until: datetime, text: str, now: datetime) -> None:
    """A recurring schedule must have an occurrence before its --until (holidays aside: those need
    the tenant's calendar, checked once connected)."""
    if until <= now:
        raise UsageError(f"--until {text!r} is already past: the schedule would finish without sending")
    rrule = None if recurrence.rrule is None else anchor_rrule(recurrence.rrule, timezone, now)
    try:
        first = Timing(timezone=timezone, cron=recurrence.cron, rrule=rrule).occurrence_after(now)
    except InvalidSchedule as exc:
        raise UsageError(str(exc)) from None
    if first is None:
        raise UsageError(f"--until {text!r}: the schedule has no occurrence left, so nothing would be sent")
    if first > until:
        first_at = iso_utc(first, timespec="auto")
        raise UsageError(f"--until {text!r} is before the first occurrence, {first_at}: nothing is sent")


@dataclass(frozen=True)
class PreviewRequest:
    """`reminderd preview` arguments: a schedule read in a zone, from an instant, shown n times."""

    recurrence: Recurrence
    timezone: str
    start: datetime
    calendar: str | None
    quiet: QuietHours | None
    count: int
    as_json: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace, now: datetime) -> PreviewRequest:
        if args.n < 1:
            raise UsageError(f"-n {args.n}: must be at least 1")
        if args.n > MAX_PREVIEW:
            raise UsageError(f"-n {args.n}: at most {MAX_PREVIEW}")
        timezone = checked_timezone(args.tz)
        start = now if args.start is None else parse_instant(args.start, timezone, flag="--from")
        recurrence = Recurrence.from_args(args, timezone, start)
        assert recurrence is not None  # argparse requires one of the flags
        return cls(
            recurrence=recurrence, timezone=timezone, start=start, calendar=checked_calendar(args.calendar),
            quiet=checked_quiet(args.quiet), count=args.n, as_json=args.json,
        )


# What the schema's CHECK constraints ask, asked before connecting (migrations 0001 and 0003).
_TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
_CATEGORY = re.compile(r"[a-z][a-z0-9_-]{0,31}")
MAX_INT4 = 2**31 - 1
MAX_PREVIEW = 1000  # fires `reminderd preview` lists


def checked_tenant_id(text: str) -> str:
    if not _TENANT_ID.fullmatch(text):
        raise UsageError(
            f"tenant {text!r}: letters, digits and _ . : -, starting with a letter or digit, at most 128"
        )
    return text


def checked_ref(text: str) -> str:
    if not text:
        raise UsageError("REF is empty: name the message, e.g. booking:b7d2:24h")
    return text


def checked_callback_url(url: str | None) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc or any(c.isspace() for c in url):
        raise UsageError(f"--callback-url {url!r}: use an http:// or https:// URL, like https://example.com/hooks")
    return url


def checked_category(text: str, flag: str = "--category") -> str:
    if not _CATEGORY.fullmatch(text):
        raise UsageError(f"{flag} {text!r}: lower-case letters, digits, _ and -, like marketing")
    return text


@dataclass(frozen=True)
class TenantAddRequest:
    tenant_id: str
    callback_url: str | None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TenantAddRequest:
        return cls(checked_tenant_id(args.tenant_id), checked_callback_url(args.callback_url))


@dataclass(frozen=True)
class TenantListRequest:
    as_json: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TenantListRequest:
        return cls(args.json)


@dataclass(frozen=True)
class TenantRoleRequest:
    """`tenant grant` and `tenant revoke`: a database role and the tenant it acts for."""

    tenant_id: str
    role: str

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TenantRoleRequest:
        if not args.role:
            raise UsageError("ROLE is empty: name a database role, e.g. booking_service")
        return cls(checked_tenant_id(args.tenant_id), args.role)


@dataclass(frozen=True)
class RotateSecretRequest:
    tenant_id: str
    grace: str  # as given, for the message
    grace_s: float

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RotateSecretRequest:
        grace = parse_duration(args.grace, flag="--grace", allow_zero=True)  # 0: the old one stops now
        return cls(checked_tenant_id(args.tenant_id), args.grace, grace.total_seconds())


@dataclass(frozen=True)
class TenantSetRequest:
    """`tenant set`: each None leaves a setting alone; calendar, quiet and the limits may be
    "none" (clear). A frequency cap is (category, max, per_s), max None removing it."""

    tenant_id: str
    calendar: str | None
    holiday_rule: str | None
    quiet: QuietHours | str | None
    quiet_exempt: list[str] | None
    max_per_second: int | str | None = None
    max_per_hour: int | str | None = None
    frequency_caps: tuple[tuple[str, int | None, float | None], ...] = ()
    cap_policy: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TenantSetRequest:
        calendar, quiet = args.calendar, args.quiet
        if calendar is not None and calendar.lower() != "none":
            checked_calendar(calendar)
        if quiet is not None and quiet.lower() != "none":
            quiet = checked_quiet(quiet)
        exempt = None if args.quiet_exempt is None else [
            checked_category(category.strip(), "--quiet-exempt")
            for category in args.quiet_exempt.split(",") if category.strip()
        ]
        caps = tuple(checked_frequency_cap(text) for text in getattr(args, "frequency_cap", None) or ())
        return cls(
            checked_tenant_id(args.tenant_id), calendar, args.holiday_rule, quiet, exempt,
            checked_limit(getattr(args, "max_per_second", None), "--max-per-second"),
            checked_limit(getattr(args, "max_per_hour", None), "--max-per-hour"),
            caps, getattr(args, "cap_policy", None),
        )

    @property
    def sets_limits(self) -> bool:
        return (self.max_per_second, self.max_per_hour, self.cap_policy) != (None, None, None) or bool(
            self.frequency_caps)


LIMIT_MAX = 2_147_483_647


def checked_limit(text: str | None, flag: str) -> int | str | None:
    """A limit: a positive whole number, or "none" to clear it; None when not given."""
    if text is None:
        return None
    if text.strip().lower() == "none":
        return "none"
    if not text.strip().isdecimal() or not 0 < int(text) <= LIMIT_MAX:
        raise UsageError(f"{flag} {text!r}: give a positive whole number (at most {LIMIT_MAX}), or none")
    return int(text)


def checked_frequency_cap(text: str) -> tuple[str, int | None, float | None]:
    """--frequency-cap marketing=2/1d: at most 2 marketing messages per recipient per rolling day;
    marketing=none removes the cap."""
    category, equals, rule = text.partition("=")
    if not equals:
        raise UsageError(f"--frequency-cap {text!r}: write CATEGORY=N/DURATION, e.g. marketing=2/1d, "
                         "or CATEGORY=none")
    category = checked_category(category.strip(), "--frequency-cap")
    if rule.strip().lower() == "none":
        return category, None, None
    count, slash, span = rule.partition("/")
    if not slash or not count.strip().isdecimal() or not 0 < int(count) <= LIMIT_MAX:
        raise UsageError(f"--frequency-cap {text!r}: write CATEGORY=N/DURATION with N a positive whole number, "
                         "e.g. marketing=2/1d")
    per = parse_duration(span.strip(), "--frequency-cap")
    if per.total_seconds() > 366 * 86400:
        raise UsageError(f"--frequency-cap {text!r}: the window is at most 366 days")
    return category, int(count), per.total_seconds()


_ENDPOINT = re.compile(r"^([A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]):([0-9]{1,5})$")


def checked_endpoint(text: str) -> str:
    """host:port as reminderd names endpoints (the host lower-case, the port written out)."""
    match = _ENDPOINT.match(text.strip())
    if match is None or not 0 < int(match[2]) <= 65535:
        raise UsageError(f"{text!r} is not an endpoint: write HOST:PORT, e.g. hooks.example.com:443")
    return f"{match[1].lower()}:{int(match[2])}"


@dataclass(frozen=True)
class EnableEndpointRequest:
    """`tenant enable-endpoint`: one of the tenant's endpoints, or all of them."""

    tenant_id: str
    endpoint: str | None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EnableEndpointRequest:
        endpoint = None if args.endpoint is None else checked_endpoint(args.endpoint)
        return cls(checked_tenant_id(args.tenant_id), endpoint)


@dataclass(frozen=True)
class EndpointSetRequest:
    """`endpoint set`: an endpoint's limits, for all daemons together; "none" clears one."""

    endpoint: str
    max_in_flight: int | str | None
    max_per_second: int | str | None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EndpointSetRequest:
        request = cls(
            checked_endpoint(args.endpoint), checked_limit(args.max_in_flight, "--max-in-flight"),
            checked_limit(args.max_per_second, "--max-per-second"),
        )
        if request.max_in_flight is None and request.max_per_second is None:
            raise UsageError("give --max-in-flight or --max-per-second (a number, or none to clear it)")
        return request


@dataclass(frozen=True)
class UsageRequest:
    """`usage TENANT --month YYYY-MM`: the month's days (the current month by default)."""

    tenant_id: str
    first_day: date
    last_day: date
    as_json: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace, today: date) -> UsageRequest:
        month = args.month or f"{today:%Y-%m}"
        try:
            first = datetime.strptime(month, "%Y-%m").date()
        except ValueError:
            raise UsageError(f"--month {month!r} is not a month like 2026-11") from None
        following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
        return cls(checked_tenant_id(args.tenant_id), first, following - timedelta(days=1), args.json)


@dataclass(frozen=True)
class HolidayRequest:
    """`tenant holiday add|remove`: one of the tenant's own days off."""

    add: bool
    tenant_id: str
    day: date
    name: str

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> HolidayRequest:
        try:
            day = datetime.strptime(args.day, "%Y-%m-%d").date()
        except ValueError:
            raise UsageError(f"{args.day!r} is not a date like 2026-12-31") from None
        if not args.name.strip():
            raise UsageError("the holiday's name is empty: say what the day is, e.g. \"Company day\"")
        return cls(args.action == "add", checked_tenant_id(args.tenant_id), day, args.name)


@dataclass(frozen=True)
class CancelRequest:
    tenant_id: str
    ref_id: str

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> CancelRequest:
        return cls(checked_tenant_id(args.tenant_id), checked_ref(args.ref_id))


def add_schedule_options(parser: argparse.ArgumentParser) -> None:
    """The options of `reminderd schedule` beyond the when."""
    parser.add_argument("--tz", help="the recipient's IANA timezone: recurrences, offset-less --at, "
                                     "holidays and quiet hours are read in it (default UTC)")
    parser.add_argument("--payload", metavar="JSON", help="JSON payload sent in the callback, as written; "
                                                          "@FILE reads it from a file, - from stdin")
    parser.add_argument("--callback-url", help="override the tenant's callback URL")
    parser.add_argument("--until", help="recurring: no occurrence after this (ISO-8601; offset-less in --tz)")
    parser.add_argument("--max-runs", type=int, help="recurring: finish after this many occurrences fired")
    parser.add_argument("--category", default="transactional",
                        help="transactional (default; exempt from quiet hours) or e.g. marketing")
    parser.add_argument("--calendar", help="holiday calendar, e.g. IN, GB, US-CA (default: the tenant's)")
    parser.add_argument("--holiday-rule", choices=("skip", "send"), help="on a holiday (default: the tenant's)")
    parser.add_argument("--backfill", choices=BACKFILL_POLICIES,
                        help="after an outage (default: $REMINDERD_BACKFILL, send)")
    parser.add_argument("--max-lateness", help="how late it may still be sent, e.g. 30m "
                                               "(default: $REMINDERD_MAX_LATENESS)")


def add_recurrence_options(group: argparse._MutuallyExclusiveGroup) -> None:
    group.add_argument("--cron", help='cron: 5 fields, or 6 with leading seconds ("0 0 9 * * MON-FRI")')
    group.add_argument("--every", metavar="PHRASE", help='a phrase such as "weekdays at 09:15"')
    group.add_argument("--rrule", help='RFC 5545, e.g. "FREQ=MONTHLY;BYDAY=1MO;BYHOUR=9;BYMINUTE=0" '
                                       "(EXDATE/DTSTART lines separated by \\n)")
