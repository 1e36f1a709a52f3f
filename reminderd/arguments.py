"""Command-line text turned into checked values, before any database connection is made.

The rules themselves are reminderd/validation.py's, shared with the HTTP API; this module reads
argparse's namespace into them (and the CLI's own inputs: `--payload @FILE`, tenant commands).
Every function raises UsageError with one line naming the flag and what is wrong with it.
"""

from __future__ import annotations

import argparse
import re
import sys
from calendar import monthrange
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import BinaryIO, Literal

from .duration import parse_seconds, signed_interval
from .payload import MAX_PAYLOAD_BYTES
from .schedule import QuietHours, load_timezone, to_instant
from .validation import (
    MAX_DELAY_S,
    MAX_INT4,
    MAX_PREVIEW,
    InvalidInput,
    PreviewRequest,
    Recurrence,
    ScheduleRequest,
    checked_calendar,
    checked_callback_url,
    checked_category,
    checked_contact_id,
    checked_quiet,
    checked_ref,
    checked_tenant_id,
    checked_timezone,
    parse_duration,
    parse_instant,
    parse_payload,
    parse_wall_or_instant,
    split_zone,
)

__all__ = [
    "MAX_INT4", "MAX_PREVIEW", "PreviewRequest", "Recurrence", "ScheduleRequest", "UsageError",
    "checked_timezone", "parse_duration", "parse_instant", "parse_payload", "split_zone",
]

MAX_PAYLOAD_READ = 64 * MAX_PAYLOAD_BYTES  # read no further: room for a pretty-printed file

UsageError = InvalidInput
"""Bad input from the command line (the CLI's name for validation's InvalidInput)."""


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


def schedule_request(args: argparse.Namespace, now: datetime) -> ScheduleRequest:
    """`reminderd schedule` arguments as a checked request."""
    return ScheduleRequest.build(
        tenant_id=args.tenant_id, ref_id=args.ref_id, now=now, at=args.at, delay=args.delay,
        cron=args.cron, every=args.every, rrule=args.rrule, tz=args.tz,
        payload_json=_payload_text(args.payload), callback_url=args.callback_url, until=args.until,
        max_runs=args.max_runs, category=args.category, calendar=args.calendar,
        holiday_rule=args.holiday_rule, backfill=args.backfill, max_lateness=args.max_lateness,
        contact_id=args.contact,
    )


def _payload_text(argument: str | None) -> str | None:
    text, flag = read_payload(argument)
    return None if text is None else parse_payload(text, flag)


def preview_request(args: argparse.Namespace, now: datetime) -> PreviewRequest:
    """`reminderd preview` arguments as a checked request."""
    return PreviewRequest.build(
        now=now, cron=args.cron, every=args.every, rrule=args.rrule, tz=args.tz, calendar=args.calendar,
        quiet=args.quiet, start=args.start, count=args.n, as_json=args.json,
    )


@dataclass(frozen=True)
class TenantAddRequest:
    tenant_id: str
    callback_url: str | None
    timezone: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TenantAddRequest:
        timezone = None if args.timezone is None else checked_timezone(args.timezone, "--timezone")
        return cls(checked_tenant_id(args.tenant_id), checked_callback_url(args.callback_url), timezone)


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
    timezone: str | None = None
    broadcast_limit: int | Literal["none"] | None = None
    approval_threshold: int | Literal["none"] | None = None
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
        timezone = args.timezone
        if timezone is not None and timezone.lower() != "none":
            checked_timezone(timezone, "--timezone")
        caps = tuple(checked_frequency_cap(text) for text in getattr(args, "frequency_cap", None) or ())
        return cls(
            checked_tenant_id(args.tenant_id), calendar, args.holiday_rule, quiet, exempt,
            timezone=timezone,
            broadcast_limit=checked_count(args.broadcast_limit, "--broadcast-limit"),
            approval_threshold=checked_count(args.approval_threshold, "--approval-threshold"),
            max_per_second=checked_limit(getattr(args, "max_per_second", None), "--max-per-second"),
            max_per_hour=checked_limit(getattr(args, "max_per_hour", None), "--max-per-hour"),
            frequency_caps=caps, cap_policy=getattr(args, "cap_policy", None),
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
        if args.month is not None and not args.month.strip():
            raise UsageError("--month is empty: give a month like 2026-11, or leave --month out for this month")
        month = f"{today:%Y-%m}" if args.month is None else args.month
        try:
            first = datetime.strptime(month, "%Y-%m").date()
        except ValueError:
            raise UsageError(f"--month {month!r} is not a month like 2026-11") from None
        last = first.replace(day=monthrange(first.year, first.month)[1])  # 9999-12 has no next month
        return cls(checked_tenant_id(args.tenant_id), first, last, args.json)


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


@dataclass(frozen=True)
class SendNowRequest:
    tenant_id: str
    ref_id: str

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SendNowRequest:
        return cls(checked_tenant_id(args.tenant_id), checked_ref(args.ref_id))


@dataclass(frozen=True)
class ApiKeyCreateRequest:
    """`api-key create`: a tenant's key, or with --operator one for all tenants (the dashboard)."""

    tenant_id: str | None
    name: str
    scopes: tuple[str, ...]

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ApiKeyCreateRequest:
        if args.operator and args.tenant_id is not None:
            raise UsageError("--operator keys act on all tenants: give no TENANT")
        if not args.operator and args.tenant_id is None:
            raise UsageError("name the TENANT the key acts for (or --operator for a key of all tenants)")
        name = args.name.strip()
        if not name or len(name) > 100:
            raise UsageError("--name: say what uses the key, e.g. booking-service (at most 100 characters)")
        scopes = ("read",) if args.read_only else ("read", "write")
        tenant = None if args.tenant_id is None else checked_tenant_id(args.tenant_id)
        return cls(tenant, name, scopes)


@dataclass(frozen=True)
class ApiKeyListRequest:
    tenant_id: str | None
    as_json: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ApiKeyListRequest:
        return cls(None if args.tenant_id is None else checked_tenant_id(args.tenant_id), args.json)


@dataclass(frozen=True)
class ApiKeyRevokeRequest:
    prefix: str

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ApiKeyRevokeRequest:
        prefix = args.prefix.strip()
        if not re.fullmatch(r"rk_[a-z2-7]{12}", prefix):
            full = re.fullmatch(r"(rk_[a-z2-7]{12})_\S+", prefix)
            if full is None:
                raise UsageError(
                    f"{prefix!r} is not a key prefix: rk_ and 12 characters, as `api-key list` shows"
                )
            prefix = full[1]  # the whole key was given: its prefix is enough
        return cls(prefix)


@dataclass(frozen=True)
class ApiRateLimitRequest:
    tenant_id: str
    rate: float | None  # None: back to REMINDERD_API_RATE_LIMIT

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ApiRateLimitRequest:
        text = args.rate.strip().lower()
        if text == "default":
            return cls(checked_tenant_id(args.tenant_id), None)
        try:
            rate = float(text)
        except ValueError:
            raise UsageError(f"{args.rate!r}: requests per second (a positive integer), or default") from None
        if not 1 <= rate <= MAX_INT4 or rate != int(rate):  # NaN is no number in the range either
            raise UsageError(f"{args.rate!r}: requests per second, a whole number from 1 to {MAX_INT4}")
        return cls(checked_tenant_id(args.tenant_id), rate)


# Audiences (docs/audiences.md) -------------------------------------------------------------------

_AUDIENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
_REF_PREFIX = re.compile(r"[^%#\s]{1,100}")
MAX_CONTACT_IDS = 100_000  # on one command line (--contacts, or a file of ids)


def checked_audience_name(text: str, flag: str = "AUDIENCE") -> str:
    if not _AUDIENCE.fullmatch(text):
        raise UsageError(f"{flag} {text!r}: letters, digits and _ . : -, starting with a letter or digit, "
                         "at most 128")
    return text


def contact_ids(listed: list[str] | None, file: str | None, flag: str) -> list[str]:
    """Contact ids from the command line (each may be comma-separated) and from a file (one per
    line, `-` for stdin), checked, in order, without repeats."""
    given = [part.strip() for item in listed or () for part in item.split(",") if part.strip()]
    if file is not None:
        try:
            handle = sys.stdin if file == "-" else open(file, encoding="utf-8")  # noqa: SIM115
            with handle:
                given += [line.strip() for line in handle if line.strip() and not line.startswith("#")]
        except OSError as exc:
            raise UsageError(f"--file {file}: cannot read it ({exc.strerror})") from None
    if len(given) > MAX_CONTACT_IDS:
        raise UsageError(f"{flag}: at most {MAX_CONTACT_IDS:,} contacts at once (put them in an audience)")
    return list(dict.fromkeys(checked_contact_id(text, flag) for text in given))


def _whole_number(text: str) -> bool:
    """Digits 0-9 only: str.isdigit() also takes "²", which int() refuses."""
    return text.isascii() and text.isdecimal()


def checked_count(text: str | None, flag: str) -> int | Literal["none"] | None:
    """A positive count, or "none" (clears it)."""
    if text is None or text.lower() == "none":
        return None if text is None else "none"
    if not _whole_number(text) or int(text) > MAX_INT4:
        raise UsageError(f"{flag} {text!r}: a whole number of contacts (at most {MAX_INT4:,}), or none")
    return int(text)


@dataclass(frozen=True)
class Audience:
    """Whom a broadcast reaches: a named list, these contacts, or every contact of the tenant."""

    name: str | None = None
    contact_ids: list[str] | None = None
    everyone: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Audience:
        chosen = sum((args.audience is not None, args.contacts is not None, args.everyone))
        if chosen != 1:
            raise UsageError("say whom it reaches: exactly one of --audience NAME, --contacts ID,… and "
                             "--everyone")
        if args.audience is not None:
            return cls(name=checked_audience_name(args.audience, "--audience"))
        if args.contacts is not None:
            return cls(contact_ids=contact_ids([args.contacts], None, "--contacts"))
        return cls(everyone=True)

    def __str__(self) -> str:
        if self.name is not None:
            return f"audience {self.name}"
        if self.contact_ids is not None:
            return f"{len(self.contact_ids):,} contacts"
        return "every contact"


@dataclass(frozen=True)
class BroadcastRequest:
    """`reminderd broadcast`: one message per contact at a wall time in each contact's zone, once
    (--at) or on a recurrence (--cron, --every, --rrule)."""

    tenant_id: str
    ref_prefix: str
    audience: Audience
    payload_json: str
    category: str = "marketing"
    local_time: datetime | None = None  # naive: read in each contact's zone
    recurrence: Recurrence | None = None
    until: datetime | None = None
    callback_url: str | None = None
    calendar: str | None = None
    holiday_rule: str | None = None
    backfill: str | None = None
    max_lateness_s: float | None = None
    notify: bool = False
    stage_ahead_s: float | None = None
    actor: str | None = None
    dry_run: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace, now: datetime) -> BroadcastRequest:
        prefix = args.ref_prefix
        if not _REF_PREFIX.fullmatch(prefix):
            raise UsageError(f"PREFIX {prefix!r}: 1 to 100 characters without spaces, % or #")
        recurrence = Recurrence.parse(cron=args.cron, every=args.every, rrule=args.rrule, timezone="UTC",
                                      start=now, until_as_instant=True)
        local_time = None
        if args.at is not None:
            local_time = parse_wall_or_instant(args.at, "--at")
            if local_time.tzinfo is not None:
                raise UsageError(f"--at {args.at!r}: a broadcast's time is a wall time, read in each "
                                 "contact's own "
                                 "zone: leave out the UTC offset (2026-11-27T09:00)")
        if (local_time is None) == (recurrence is None):
            raise UsageError("say when: --at WALL-TIME for one wave, or --cron, --every or --rrule for a "
                             "recurring one")
        if args.until is not None and recurrence is None:
            raise UsageError("--until ends a recurring broadcast: use it with --cron, --every or --rrule")
        checked_category(args.category)
        return cls(
            tenant_id=checked_tenant_id(args.tenant_id), ref_prefix=prefix, audience=Audience.from_args(args),
            payload_json=parse_payload(*read_payload(args.payload)), category=args.category,
            local_time=local_time, recurrence=recurrence,
            until=None if args.until is None else parse_instant(args.until, "UTC", flag="--until"),
            callback_url=checked_callback_url(args.callback_url), calendar=checked_calendar(args.calendar),
            holiday_rule=args.holiday_rule, backfill=args.backfill,
            max_lateness_s=None if args.max_lateness is None else parse_duration(
                args.max_lateness, "--max-lateness", allow_zero=True).total_seconds(),
            notify=args.notify,
            stage_ahead_s=None if args.stage_ahead is None else parse_duration(
                args.stage_ahead, "--stage-ahead").total_seconds(),
            actor=checked_actor(args.actor), dry_run=args.dry_run,
        )


def checked_actor(text: str | None) -> str | None:
    if text is not None and not (0 < len(text.strip()) <= 200):
        raise UsageError("--as: a name of 1 to 200 characters (who is acting)")
    return None if text is None else text.strip()


@dataclass(frozen=True)
class BroadcastRef:
    """`broadcasts show|cancel TENANT ID`."""

    tenant_id: str
    broadcast_id: int
    as_json: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> BroadcastRef:
        return cls(checked_tenant_id(args.tenant_id), checked_broadcast_id(args.broadcast_id),
                   getattr(args, "json", False))


def checked_broadcast_id(text: str) -> int:
    if not _whole_number(text) or not 0 < int(text) < 2**63:
        raise UsageError(f"ID {text!r}: a broadcast's number, as `reminderd broadcasts list` shows it")
    return int(text)


@dataclass(frozen=True)
class BroadcastDecision:
    """`broadcasts approve|reject TENANT ID [--as NAME] [--note TEXT]`."""

    tenant_id: str
    broadcast_id: int
    approve: bool
    actor: str | None
    note: str | None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> BroadcastDecision:
        return cls(checked_tenant_id(args.tenant_id), checked_broadcast_id(args.broadcast_id),
                   args.decision == "approve", checked_actor(args.actor), args.note)


@dataclass(frozen=True)
class TenantOnly:
    """A subcommand of one tenant (`broadcasts list`, `audience list`)."""

    tenant_id: str
    as_json: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TenantOnly:
        return cls(checked_tenant_id(args.tenant_id), getattr(args, "json", False))


@dataclass(frozen=True)
class AudienceChange:
    """`audience add|remove TENANT NAME ID…` and `audience drop TENANT NAME`."""

    tenant_id: str
    audience: str
    action: str  # add | remove | drop
    contact_ids: list[str]

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> AudienceChange:
        ids = [] if args.action == "drop" else contact_ids(args.contact_ids, args.file, "CONTACT")
        if args.action != "drop" and not ids:
            raise UsageError(f"audience {args.action}: name the contacts (CONTACT … or --file FILE)")
        return cls(checked_tenant_id(args.tenant_id), checked_audience_name(args.audience), args.action, ids)


@dataclass(frozen=True)
class ContactShowRequest:
    tenant_id: str
    contact_id: str
    recent_s: float
    as_json: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ContactShowRequest:
        recent = parse_duration(args.recent, "--recent", allow_zero=True)
        return cls(checked_tenant_id(args.tenant_id), checked_contact_id(args.contact_id),
                   recent.total_seconds(),
                   args.json)


@dataclass(frozen=True)
class ContactsRemoveRequest:
    tenant_id: str
    contact_ids: list[str]

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ContactsRemoveRequest:
        ids = contact_ids(args.contact_ids, args.file, "CONTACT")
        if not ids:
            raise UsageError("contacts remove: name the contacts (CONTACT … or --file FILE)")
        return cls(checked_tenant_id(args.tenant_id), ids)


IMPORT_FORMATS = ("csv", "jsonl")


@dataclass(frozen=True)
class ContactsImportRequest:
    """`contacts import TENANT FILE`: a CSV (header row) or JSON Lines file, `-` for stdin."""

    tenant_id: str
    path: str
    file_format: str
    batch_size: int
    skip_invalid: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ContactsImportRequest:
        file_format = args.format
        if file_format is None:
            suffix = args.file.rpartition(".")[2].lower()
            if args.file == "-" or suffix not in IMPORT_FORMATS:
                raise UsageError(f"FILE {args.file!r}: name a .csv or .jsonl file, or say --format csv|jsonl")
            file_format = suffix
        if not 1 <= args.batch_size <= 50_000:
            raise UsageError(f"--batch-size {args.batch_size}: between 1 and 50,000")
        return cls(checked_tenant_id(args.tenant_id), args.file, file_format, args.batch_size,
                   args.skip_invalid)


@dataclass(frozen=True)
class CadenceRequest:
    """`reminderd cadence`: messages at offsets around an anchor, at a wall time in the contact's zone."""

    tenant_id: str
    ref_prefix: str
    anchor: datetime
    offsets: list[str]  # intervals as PostgreSQL reads them, each part with its sign ("-1 days -43200 seconds")
    at_local: time | None
    contact_id: str | None
    timezone: str | None
    payload_json: str
    callback_url: str | None
    category: str

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> CadenceRequest:
        if (args.contact is None) == (args.tz is None):
            raise UsageError("say whose clock: exactly one of --contact ID and --tz ZONE")
        timezone = None if args.tz is None else checked_timezone(args.tz)
        prefix = args.ref_prefix
        if not _REF_PREFIX.fullmatch(prefix):
            raise UsageError(f"PREFIX {prefix!r}: 1 to 100 characters without spaces, % or #")
        anchor = parse_wall_or_instant(args.anchor, "--anchor")
        if anchor.tzinfo is None:
            if timezone is None:
                raise UsageError(f"--anchor {args.anchor!r}: give its UTC offset (2027-01-15T00:00Z): "
                                 "the contact's zone is known to the database only")
            try:
                anchor = to_instant(anchor, load_timezone(timezone))
            except OverflowError:
                raise UsageError(f"--anchor {args.anchor!r} is outside the years 1 to 9999 in UTC") from None
        else:
            try:  # asyncpg cannot send an instant beyond them either
                anchor.astimezone(UTC)
            except OverflowError:
                raise UsageError(f"--anchor {args.anchor!r} is outside the years 1 to 9999 in UTC") from None
        offsets = [interval_text(part.strip(), "--offsets") for part in args.offsets.split(",") if part.strip()]
        if not offsets:
            raise UsageError("--offsets: at least one, e.g. -30d,-7d,-1d")
        at_local = None
        if args.at_local is not None:
            try:
                at_local = time.fromisoformat(args.at_local)
            except ValueError:
                raise UsageError(f"--at-local {args.at_local!r}: a time of day such as 10:00") from None
        checked_category(args.category)
        return cls(checked_tenant_id(args.tenant_id), prefix, anchor, offsets, at_local,
                   None if args.contact is None else checked_contact_id(args.contact, "--contact"), timezone,
                   parse_payload(*read_payload(args.payload)), checked_callback_url(args.callback_url),
                       args.category)


def interval_text(text: str, flag: str) -> str:
    """A signed duration (-30d, +1d12h, -2h) as a PostgreSQL interval whose parts share its sign, so
    days stay calendar days (a day is 23 or 25 hours across a clock change)."""
    try:
        seconds = parse_seconds(text.removeprefix("+"))
    except ValueError as exc:
        raise UsageError(f"{flag} {text!r}: {exc}, with a sign for before (-30d) or after (+1d)") from None
    if not abs(seconds) < MAX_DELAY_S:
        raise UsageError(f"{flag} {text!r}: an offset is under 100 years before or after")
    try:
        return signed_interval(seconds)
    except ValueError:
        raise UsageError(f"{flag} {text!r}: an offset is a whole number of seconds (its step's ref names it)"
                         ) from None
