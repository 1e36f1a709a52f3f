"""The Python SDK of reminderd's HTTP API (`reminderd serve`): one class, `ReminderdClient`.

    async with ReminderdClient("http://127.0.0.1:8080", api_key) as rd:
        scheduled = await rd.schedule("booking:b7d2:24h", fire_at=when, payload={"to": "+441632960961"})

Every method is one route of the API (reminderd/openapi.yaml, served as `GET /openapi.json`, is the
wire format); answers are frozen dataclasses named after the document's schemas, instants are aware
`datetime`s, durations `timedelta`s or the API's strings. A refusal raises `ApiError`, carrying the
server's RFC 9457 problem.

Retries are safe: connection errors, timeouts, 429 (after its Retry-After), 5xx and a 409 saying the
same request is still running are retried with capped exponential backoff and full jitter, and each
write carries an `Idempotency-Key` chosen once per call and sent again with each retry, so the server
answers a retry with the first answer instead of doing it twice. `SyncReminderdClient` is the same
client for code without an event loop. The API key is never logged, shown in a repr or put in an error.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import email.utils
import enum
import functools
import json
import logging
import math
import random
import re
import secrets
import threading
import types
import typing
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar
from urllib.parse import quote, urlencode

import aiohttp
import yarl

from . import __version__
from .exceptions import ReminderdError
from .lifecycle import Status
from .retry import backoff_s

__all__ = [
    "UNSET",
    "ApiError",
    "AudienceSummary",
    "BatchItemResult",
    "BatchResult",
    "Broadcast",
    "BroadcastCounts",
    "BroadcastPreview",
    "BroadcastWave",
    "Cadence",
    "CadenceStep",
    "Contact",
    "ContactError",
    "ContactMessage",
    "ContactPicture",
    "ContactsWritten",
    "Delivery",
    "Event",
    "Fire",
    "Held",
    "HourCount",
    "Lateness",
    "Message",
    "MessageDetail",
    "MessagePages",
    "Page",
    "Preview",
    "Problem",
    "ProblemField",
    "Rates",
    "ReminderdClient",
    "RetryPolicy",
    "RotatedSecret",
    "ScheduleRequest",
    "Scheduled",
    "SecretShownOnce",
    "SentNow",
    "Stats",
    "Status",
    "SyncReminderdClient",
    "Tenant",
    "TenantState",
    "ZoneSend",
    "ZoneSources",
]

log = logging.getLogger("reminderd.client")

T = TypeVar("T")
P = ParamSpec("P")


class _Unset(enum.Enum):
    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET: typing.Final = _Unset.UNSET
"""An argument not given (where None means JSON null: a null payload, a calendar cleared)."""

Instant = datetime | str
"""An aware datetime, or an RFC 3339 string with an offset."""
WallTime = datetime | str
"""A naive datetime, or a wall-time string without an offset, read in the message's timezone."""
Duration = timedelta | float | str
"""A timedelta, seconds, or the API's duration strings: 90s, 2h, 1h30m, PT2H."""

# Problems the client itself describes (no answer from the server, or one it cannot read): their
# types are urn:reminderd:client:…, never one of the server's urn:reminderd:problem:….
# Where a message's timezone came from: its own, or its contact's own, phone, country, tenant default.
TimezoneSource = Literal["message", "contact", "phone", "country", "tenant"]
UNREACHABLE = "urn:reminderd:client:unreachable"
INVALID_RESPONSE = "urn:reminderd:client:invalid-response"
IDEMPOTENCY_IN_FLIGHT = "urn:reminderd:problem:idempotency-in-flight"
SECRET_SHOWN_ONCE = "urn:reminderd:problem:secret-shown-once"
_KEY_SHAPE = re.compile(r"(rk_[a-z2-7]{12})_")  # a key's visible prefix (reminderd/apikeys.py)


# Answers: frozen dataclasses named after the OpenAPI document's schemas --------------------------------


@dataclass(frozen=True, slots=True)
class ProblemField:
    """One invalid field: by JSON pointer into the body (wire names, `/messages/3/fire_at`), or by
    query parameter or header name."""

    detail: str
    pointer: str | None = None
    parameter: str | None = None
    header: str | None = None


@dataclass(frozen=True, slots=True)
class Problem:
    """An RFC 9457 problem document (schema Problem); `type` is stable, `detail` is for people."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: tuple[ProblemField, ...] = ()
    sqlstate: str | None = None
    hint: str | None = None
    item: int | None = None  # the batch item (from 0) the database refused
    message_status: Status | None = None  # not-live: the status the message is in
    written_through_line: int | None = None  # a key revoked during an NDJSON upload: the lines kept


@dataclass(frozen=True, slots=True)
class Scheduled:
    """What `schedule` made (schema Scheduled): `result` is created, replaced or unchanged (the
    identical call was made before; this is the message it created)."""

    id: int
    ref_id: str
    status: Status
    fire_at: datetime | None  # a recurring schedule's first occurrence (None: not planned yet)
    description: str
    result: Literal["created", "replaced", "unchanged"]
    timezone: str | None = None  # the zone it is read in (a contact's, when it names one)
    timezone_source: TimezoneSource | None = None
    contact_id: str | None = None


@dataclass(frozen=True, slots=True)
class BatchItemResult:
    """One item of `schedule_many` (schema BatchItemResult), in the order sent; `error` when refused."""

    index: int
    result: Literal["created", "replaced", "unchanged", "error"]
    id: int | None = None
    ref_id: str | None = None
    status: Status | None = None
    fire_at: datetime | None = None
    description: str | None = None
    timezone: str | None = None
    timezone_source: TimezoneSource | None = None
    contact_id: str | None = None
    error: Problem | None = None


@dataclass(frozen=True, slots=True)
class BatchResult:
    results: tuple[BatchItemResult, ...]
    created: int
    replaced: int
    unchanged: int
    failed: int


@dataclass(frozen=True, slots=True)
class Message:
    """A message as it is now (schema Message)."""

    id: int
    ref_id: str
    status: Status
    fire_at: datetime | None  # the next due instant
    scheduled_for: datetime | None  # the occurrence being retried
    timezone: str
    cron: str | None
    rrule: str | None
    until: datetime | None
    max_runs: int | None
    runs: int
    category: str
    callback_url: str | None
    max_attempts: int | None
    attempts: int
    calendar: str | None
    holiday_rule: str | None
    backfill: str | None
    max_lateness_s: float | None
    last_error: str | None
    last_event: str | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    extra_of: int | None  # an extra occurrence (send now) of this recurring message
    contact_id: str | None  # the contact it is for
    timezone_source: TimezoneSource
    payload: Any


@dataclass(frozen=True, slots=True)
class Delivery:
    """One HTTP attempt of a message."""

    attempt: int
    webhook_id: str
    scheduled_for: datetime
    status_code: int | None
    error: str | None
    duration_ms: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of a message's audit trail."""

    created_at: datetime
    event: str
    status: Status
    fire_at: datetime | None
    reason: str | None
    actor: str


@dataclass(frozen=True, slots=True)
class MessageDetail(Message):
    """A message with its attempts and its audit trail, oldest first (schema MessageDetail): the
    "why didn't this reminder fire?" answer."""

    deliveries: tuple[Delivery, ...]
    events: tuple[Event, ...]


@dataclass(frozen=True, slots=True)
class Page:
    """One page of `list`; `next_cursor` is None on the last."""

    messages: tuple[Message, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Held:
    """Why a message sent now does not go out yet (quiet hours, a holiday, a paused tenant)."""

    reason: str
    until: datetime | None


@dataclass(frozen=True, slots=True)
class SentNow:
    """What `send_now` sends (schema SentNow): a recurring message's extra occurrence has its own id."""

    id: int
    ref_id: str
    status: Status
    fire_at: datetime | None
    extra_occurrence: bool
    held: Held | None


@dataclass(frozen=True, slots=True)
class Tenant:
    """The API key's tenant and its settings (schema Tenant)."""

    id: str
    callback_url: str | None
    calendar: str | None
    holiday_rule: str
    quiet_hours: str | None  # HH:MM-HH:MM
    quiet_exempt: tuple[str, ...]
    paused: bool
    api_rate_limit: float  # requests per second per key
    previous_secret_expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class TenantState:
    """The tenant after `pause_tenant`/`resume_tenant`, and how many messages that changed."""

    paused: bool
    messages: int


@dataclass(frozen=True, slots=True)
class RotatedSecret:
    """The tenant's new signing secret, shown once (never in a repr)."""

    secret: str = field(repr=False)
    previous_secret_valid_until: datetime | None


@dataclass(frozen=True, slots=True)
class Fire:
    """One fire time of a preview: `utc`, and the wall time in the schedule's timezone."""

    utc: datetime
    local: str
    skipped: bool = False
    deferred: bool = False
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Preview:
    description: str
    timezone: str
    fires: tuple[Fire, ...]


@dataclass(frozen=True, slots=True)
class HourCount:
    hour: datetime
    messages: int


@dataclass(frozen=True, slots=True)
class Rates:
    """Attempts in a window (schema Rates)."""

    delivered: int
    retried: int
    dead: int


@dataclass(frozen=True, slots=True)
class Lateness:
    """Delivery time minus scheduled time of the last 24 hours' deliveries, in milliseconds."""

    p50: float | None
    p99: float | None


@dataclass(frozen=True, slots=True)
class Stats:
    """The tenant's numbers (schema Stats)."""

    counts: dict[str, int]  # messages by status
    upcoming_by_hour: tuple[HourCount, ...]  # pending messages by hour, the next 48 hours
    last_1h: Rates
    last_24h: Rates
    lateness_ms: Lateness


# Requests ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContactError:
    """A contact `upsert_contacts` refused: by its position (from 0) or, sent as NDJSON, its line."""

    result: Literal["error"]
    contact_id: str | None
    error: Problem
    index: int | None = None
    line: int | None = None


@dataclass(frozen=True, slots=True)
class ContactsWritten:
    """What `upsert_contacts` wrote (schema ContactsWritten); each refused contact in `errors`."""

    received: int
    new: int
    changed: int
    unchanged: int
    repeated: int
    failed: int
    errors: tuple[ContactError, ...]
    errors_truncated: bool


@dataclass(frozen=True, slots=True)
class Contact:
    """A contact (schema Contact): `zone` is the zone its messages get, `zone_source` why."""

    contact_id: str
    timezone: str | None
    phone: str | None
    country: str | None
    attributes: dict[str, Any]
    zone: str | None
    zone_source: str | None
    audiences: tuple[str, ...]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ContactMessage:
    """One of a contact's messages; `local_fire_at` is on the contact's clock, `reason` why it is held."""

    id: int
    ref_id: str
    status: Status
    fire_at: datetime | None
    local_fire_at: str | None
    timezone: str
    timezone_source: TimezoneSource
    recurrence: str | None
    category: str
    broadcast_id: int | None
    last_event: str | None
    reason: str | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ContactPicture:
    """`contact_messages`: the contact, its live messages soonest first, then those ended recently."""

    contact: Contact
    messages: tuple[ContactMessage, ...]


@dataclass(frozen=True, slots=True)
class AudienceSummary:
    name: str
    members: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class BroadcastCounts:
    staged: int
    waiting: int
    held: int
    sent: int
    failed: int
    expired: int
    cancelled: int


@dataclass(frozen=True, slots=True)
class BroadcastWave:
    occurrence: str  # the wall time, read in each contact's zone
    contacts: int
    first_fire_at: datetime | None
    last_fire_at: datetime | None
    staged_at: datetime
    completed_at: datetime | None


@dataclass(frozen=True, slots=True)
class Broadcast:
    """A broadcast and its progress (schema Broadcast; `waves` from `get_broadcast` and the writes).
    `released` (approve) and `cancelled_messages` (reject, cancel) say what the call did."""

    id: int
    ref_prefix: str
    audience: str
    local_time: str | None
    cron: str | None
    rrule: str | None
    category: str
    approval: Literal["not_needed", "awaiting", "approved", "rejected", "cancelled"]
    created_by: str
    created_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    occurrences: int
    counts: BroadcastCounts
    done: bool
    state: Literal["done", "awaiting_approval", "rejected", "sending", "recurring"]
    next_occurrence: str | None
    ended_at: datetime | None
    ended_reason: str | None
    last_error: str | None
    waves: tuple[BroadcastWave, ...] = ()
    released: int | None = None
    cancelled_messages: int | None = None


@dataclass(frozen=True, slots=True)
class ZoneSources:
    contact: int
    phone: int
    country: int
    tenant: int


@dataclass(frozen=True, slots=True)
class ZoneSend:
    timezone: str
    fire_at: datetime
    contacts: int
    sources: ZoneSources
    in_the_past: bool


@dataclass(frozen=True, slots=True)
class BroadcastPreview:
    """A broadcast's dry run: its audience's size and sends per UTC hour; nothing staged."""

    dry_run: Literal[True]
    ref_prefix: str
    local_time: str
    next_local_time: str | None
    audience_size: int
    without_timezone: int
    unreadable_timezone: int  # in a zone the database server cannot read: staged dead, in no zone
    after_until: int  # recurring: past the until on their own clock, not sent this occurrence
    sends_per_utc_hour: tuple[HourCount, ...]
    zones: tuple[ZoneSend, ...]
    approval: Literal["not_needed", "awaiting"]


@dataclass(frozen=True, slots=True)
class CadenceStep:
    ref_id: str
    id: int | None
    fire_at: datetime
    local_time: str
    skipped: str | None
    outcome: Literal["scheduled", "unchanged", "replaced", "skipped", "cancelled"]
    cancelled_id: int | None


@dataclass(frozen=True, slots=True)
class Cadence:
    ref_prefix: str
    steps: tuple[CadenceStep, ...]


@dataclass(frozen=True, slots=True)
class ScheduleRequest:
    """One message to schedule (schema ScheduleRequest): exactly one of fire_at, fire_in, local_time,
    cron, every and rrule (the server checks, with the same rules as the SQL face).

    `payload` is any JSON value (left out: the server's default); `local_time` and a naive `until`
    are wall times read in `timezone`.
    """

    ref_id: str
    fire_at: Instant | None = None
    fire_in: Duration | None = None
    local_time: WallTime | None = None
    cron: str | None = None
    every: str | None = None
    rrule: str | None = None
    timezone: str | None = None
    payload: Any = UNSET
    callback_url: str | None = None
    category: str | None = None
    max_attempts: int | None = None
    backfill: Literal["send", "latest", "skip"] | None = None
    max_lateness: Duration | None = None
    calendar: str | None = None
    holiday_rule: Literal["skip", "send"] | None = None
    until: Instant | WallTime | None = None
    max_runs: int | None = None
    contact_id: str | None = None  # without timezone: read in the contact's zone

    def to_wire(self) -> dict[str, Any]:
        """The JSON body: the fields given, instants in RFC 3339, durations in seconds."""
        body: dict[str, Any] = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if value is UNSET or (value is None and item.name != "payload"):
                continue
            body[item.name] = _wire_value(item.name, value)
        return body


def _wire_value(name: str, value: Any) -> Any:
    if name in ("fire_in", "max_lateness", "grace"):
        return _duration(name, value)
    if name in ("fire_at", "until", "fire_after", "fire_before", "from"):
        return _instant(name, value, wall_allowed=name == "until")
    if name == "local_time":
        return _wall_time(name, value)
    return value


def _instant(name: str, value: Instant, *, wall_allowed: bool = False) -> str:
    if isinstance(value, str):
        return value
    if not isinstance(value, datetime):
        raise TypeError(f"{name}: a datetime or an RFC 3339 string, not {type(value).__name__}")
    if value.utcoffset() is None:
        if wall_allowed:
            return value.isoformat()
        raise ValueError(f"{name}: {value.isoformat()} has no timezone; pass an aware datetime "
                         "(for a wall time in the recipient's timezone, use local_time)")
    return value.isoformat()


def _wall_time(name: str, value: WallTime) -> str:
    if isinstance(value, str):
        return value
    if not isinstance(value, datetime):
        raise TypeError(f"{name}: a naive datetime or a string, not {type(value).__name__}")
    if value.utcoffset() is not None:
        raise ValueError(f"{name}: {value.isoformat()} has a UTC offset; a wall time has none "
                         "(it is read in timezone); for an instant, use fire_at")
    return value.isoformat()


def _duration(name: str, value: Duration) -> float | str:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"{name}: a timedelta, a number of seconds or a string such as 2h")
    return value


def _present(**values: Any) -> dict[str, Any]:
    """The values given (neither None nor UNSET; UNSET alone where None means JSON null), wire-typed."""
    return {name.rstrip("_"): _wire_value(name.rstrip("_"), value)
            for name, value in values.items() if value is not None and value is not UNSET}


# Retries -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How the client retries a call (the daemon's callback retries are reminderd.retry's, whose
    backoff it shares): `attempts` tries in all (the first included), waiting a random time up
    to min(cap_s, base_s * 2 ** (retry - 1)) before each retry (full jitter), or the server's
    Retry-After when it gives one; a Retry-After over `max_retry_after_s` is not waited for (the
    call fails with the 429 or 503 at once)."""

    attempts: int = 4
    base_s: float = 0.25
    cap_s: float = 8.0
    max_retry_after_s: float = 60.0

    def __post_init__(self) -> None:
        # NaN, a negative or an endless number would retry forever or never wait: refused here.
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or self.attempts < 1:
            raise ValueError("RetryPolicy.attempts: a whole number of tries from 1 (the first included), "
                             f"not {self.attempts!r}")
        for name in ("base_s", "cap_s", "max_retry_after_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                    or value < 0:
                raise ValueError(f"RetryPolicy.{name}: a finite number of seconds, 0 or more, not {value!r}")

    def delay_s(self, retry: int, retry_after_s: float | None = None,
                rng: random.Random | None = None) -> float | None:
        """Seconds to wait before retry number `retry` (from 1), or None when no retry is left or the
        server asks for a wait longer than `max_retry_after_s`."""
        if retry >= self.attempts:
            return None
        if retry_after_s is not None:
            return retry_after_s if retry_after_s <= self.max_retry_after_s else None
        return backoff_s(retry, base_s=self.base_s, cap_s=self.cap_s, jitter="full", rng=rng)


NO_RETRIES = RetryPolicy(attempts=1)


def _retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After in seconds from `now`: delta-seconds (what the API sends) or an HTTP date (what a
    proxy in front may send); None when absent or unreadable (the backoff is used then). An endless
    one ("1e400") is inf, longer than any max_retry_after_s: the call fails at once."""
    text = (value or "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            at = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if at.utcoffset() is None:
            return None
        return max(0.0, (at - (now or datetime.now(UTC))).total_seconds())
    return seconds if seconds >= 0 else None  # NaN is not >= 0


def _retryable(status: int, problem_type: str) -> bool:
    return status == 429 or status >= 500 or (status == 409 and problem_type == IDEMPOTENCY_IN_FLIGHT)


def new_idempotency_key() -> str:
    """A key for one logical write: 128 random bits, URL-safe (the API takes printable ASCII)."""
    return "rdpy_" + secrets.token_urlsafe(16)


# The error ----------------------------------------------------------------------------------------


# What an error must never show, wherever it quotes a request, a URL or an answer: an API key
# (rk_<prefix>_<secret>: its prefix kept), a bearer token, a signing secret (whsec_…), a URL's user
# and password, a query parameter named like a secret.
_SECRETS = (
    (re.compile(r"\b(rk_[a-z2-7]{12})_[A-Za-z0-9_-]+"), r"\1_…"),
    (re.compile(r"\b(Bearer)\s+[!-~]+", re.IGNORECASE), r"\1 …"),
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=_-]*"), "whsec_…"),
    (re.compile(r"//[^\s/?#@]*@"), "//…@"),
    (re.compile(r"([?&;][a-z_]*(?:key|token|secret|password|signature|auth)[a-z_]*=)[^&#\s\"']*",
                re.IGNORECASE), r"\1…"),
)


def _redact(text: str, also: str | None = None) -> str:
    """`text` with the secrets an error must not show replaced by …; `also`: one more (the key)."""
    if also:
        text = text.replace(also, "…")
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def _redacted(problem: Problem, also: str | None = None) -> Problem:
    return dataclasses.replace(
        problem, title=_redact(problem.title, also), detail=_redact(problem.detail, also),
        instance=None if problem.instance is None else _redact(problem.instance, also),
        errors=tuple(dataclasses.replace(e, detail=_redact(e.detail, also)) for e in problem.errors),
    )


class ApiError(ReminderdError):
    """The reminderd API refused the request, or could not be reached (any secret in it as …)."""

    def __init__(self, problem: Problem, *, attempts: int = 1) -> None:
        problem = _redacted(problem)
        self.problem = problem
        self.attempts = attempts  # tries made, retries included
        text = f"{problem.title} ({problem.status}): {problem.detail}" if problem.status else \
            f"{problem.title}: {problem.detail}"
        fields = "; ".join(f"{e.pointer or e.parameter or e.header or '?'}: {e.detail}" for e in problem.errors)
        super().__init__(f"{text} [{fields}]" if fields else text)

    @property
    def type(self) -> str:
        return self.problem.type

    @property
    def title(self) -> str:
        return self.problem.title

    @property
    def status(self) -> int:
        """The HTTP status; 0 when no answer came (type urn:reminderd:client:unreachable)."""
        return self.problem.status

    @property
    def detail(self) -> str:
        return self.problem.detail

    @property
    def errors(self) -> tuple[ProblemField, ...]:
        return self.problem.errors


class SecretShownOnce(ApiError):
    """The rotation was done, but its answer (the new signing secret, shown once) did not reach this
    client: the retry of `rotate_secret` with the same Idempotency-Key got a 409 instead of the
    secret, which the server never keeps. Rotate again (a new call) for a secret you can see."""


def _api_error(problem: Problem, attempts: int) -> ApiError:
    """The error for a problem the server answered: its own class where a caller must tell it apart."""
    return (SecretShownOnce if problem.type == SECRET_SHOWN_ONCE else ApiError)(problem, attempts=attempts)


def _without_credentials(text: str) -> str:
    """A URL's user and password (`//user:password@`) as `//…@`, in any text."""
    return re.sub(r"//\S*@", "//…@", text)


class _Secret:
    """A value that shows as <hidden> in any repr (vars(), a debugger, a log of the object)."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<hidden>"


class _InvalidResponse(Exception):
    pass


# Decoding answers ----------------------------------------------------------------------------------


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_wire(cls: type[T], data: Any, where: str = "") -> T:
    """`cls` (one of the answer dataclasses) from its JSON: instants parsed, statuses checked,
    fields the server added since ignored; `_InvalidResponse` naming what does not fit."""
    if not isinstance(data, dict):
        raise _InvalidResponse(f"{where or '/'}: an object expected, got {type(data).__name__}")
    values: dict[str, Any] = {}
    hints = _hints(typing.cast(type, cls))
    for item in dataclasses.fields(cls):  # type: ignore[arg-type]  # cls is a dataclass
        if item.name in data:
            values[item.name] = _decode(hints[item.name], data[item.name], f"{where}/{item.name}")
        elif item.default is dataclasses.MISSING:
            raise _InvalidResponse(f"{where}/{item.name}: missing")
    return cls(**values)


def _decode(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _decode(inner, value, where)
    if value is None:
        raise _InvalidResponse(f"{where}: null where a value was expected")
    if origin is Literal:
        if value not in args:
            raise _InvalidResponse(f"{where}: {value!r} is not one of {', '.join(map(str, args))}")
        return value
    if origin is tuple:
        if not isinstance(value, builtins.list):
            raise _InvalidResponse(f"{where}: an array expected")
        return tuple(_decode(args[0], item, f"{where}/{index}") for index, item in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise _InvalidResponse(f"{where}: an object expected")
        return {key: _decode(args[1], item, f"{where}/{key}") for key, item in value.items()}
    if dataclasses.is_dataclass(hint):
        return from_wire(hint, value, where)  # type: ignore[arg-type]  # a dataclass type
    if hint is datetime:
        if not isinstance(value, str):
            raise _InvalidResponse(f"{where}: a date-time string expected")
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise _InvalidResponse(f"{where}: {value!r} is not RFC 3339") from None
        if parsed.utcoffset() is None:
            raise _InvalidResponse(f"{where}: {value!r} has no UTC offset")
        return parsed
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            raise _InvalidResponse(f"{where}: {value!r} is not a known {hint.__name__}") from None
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            raise _InvalidResponse(f"{where}: a number expected")
        return float(value)
    if hint in (int, str, bool):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise _InvalidResponse(f"{where}: {hint.__name__} expected, got {type(value).__name__}")
        return value
    raise TypeError(f"no decoder for {hint!r}")  # a field type this module does not use


def _problem_of(status: int, reason: str, body: bytes) -> Problem:
    """The answer's problem document; a non-problem error answer (a proxy's page) as about:blank."""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("type"), str):
        try:
            return from_wire(Problem, {"title": reason, "detail": "", "status": status, **data})
        except _InvalidResponse:
            pass
    excerpt = body[:200].decode("utf-8", "replace").strip()
    return Problem("about:blank", reason or "HTTP error", status, excerpt or f"HTTP {status}")


# The client ---------------------------------------------------------------------------------------


def _json_body(value: Any) -> bytes:
    """The request's JSON; a `Decimal` (as answers hold a payload's fractions) written as its digits,
    so a payload read back and sent again is unchanged."""
    numbers: list[str] = []
    mark = secrets.token_hex(8)  # what no string of the body holds, around each number's place

    def default(number: Any) -> Any:
        if not isinstance(number, Decimal):
            raise TypeError(f"Object of type {type(number).__name__} is not JSON serializable")
        numbers.append(str(number))
        return f"{mark}{len(numbers) - 1}{mark}"

    _finite(value, "")
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=default)
    for index, number in enumerate(numbers):
        text = text.replace(f'"{mark}{index}{mark}"', number, 1)
    return text.encode()


def _finite(value: Any, where: str) -> None:
    """ValueError naming the first NaN or Infinity in `value` by its JSON pointer (`/payload/amount`):
    JSON has no such number, and the request is refused before it is sent."""
    if isinstance(value, float | Decimal) and not (math.isfinite(value) if isinstance(value, float)
                                                   else value.is_finite()):
        raise ValueError(f"{where or '/'}: {value} is not a number JSON can carry (a finite number is)")
    if isinstance(value, dict):
        for key, item in value.items():
            _finite(item, f"{where}/{str(key).replace('~', '~0').replace('/', '~1')}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _finite(item, f"{where}/{index}")


class ReminderdClient:
    """An async client of one reminderd API server, for one API key (so one tenant).

    `base_url` is where `reminderd serve` listens (http://127.0.0.1:8080); `timeout_s` bounds each
    attempt; `retry` says how calls are retried (RetryPolicy(attempts=1): never). Use it as an async
    context manager, or call `close()`. A `session` given is used and left open.
    """

    def __init__(self, base_url: str, api_key: str, *, timeout_s: float = 30.0,
                 retry: RetryPolicy | None = None, session: aiohttp.ClientSession | None = None,
                 user_agent: str | None = None) -> None:
        try:
            url = yarl.URL(base_url)
            valid = url.scheme in ("http", "https") and bool(url.host) and url.port is not None
        except (TypeError, ValueError):  # its message may quote the URL, credentials and all
            valid = False
        if not valid:
            shown = _without_credentials(str(base_url))
            raise ValueError(f"base_url: an http:// or https:// URL, not {shown!r}")
        if url.user is not None or url.password is not None:
            raise ValueError("base_url: credentials go in api_key, not in the URL "
                             f"({_without_credentials(str(base_url))!r})")
        if not api_key or not api_key.isprintable() or " " in api_key:
            raise ValueError("api_key: empty or not printable (it is the rk_… key printed by "
                             "`reminderd api-key create`)")
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) \
                or not math.isfinite(timeout_s) or timeout_s <= 0:
            raise ValueError("timeout_s: a finite number of seconds above 0 (each attempt's limit), "
                             f"not {timeout_s!r}")
        self.base_url = url.with_query(None).with_fragment(None)
        self.timeout_s = timeout_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)  # each attempt, in a session given too
        self.retry = retry or RetryPolicy()
        self._api_key = _Secret(api_key)  # hidden in the errors it builds
        self._authorization = _Secret(f"Bearer {api_key}")
        shape = _KEY_SHAPE.match(api_key)
        self.key_prefix = shape[1] if shape else None  # rk_xxxxxxxxxxxx: shown for support, not secret
        self._session = session
        self._own_session = session is None
        self._user_agent = user_agent or f"reminderd-python/{__version__}"

    def __repr__(self) -> str:
        return f"ReminderdClient({str(self.base_url)!r}, api_key={self.key_prefix or '<hidden>'!r})"

    async def __aenter__(self) -> ReminderdClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
        self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
            self._own_session = True
        return self._session

    # The exchange, with its retries -------------------------------------------------------------

    async def _call(self, method: str, path: str, *, body: Any = UNSET, query: Mapping[str, Any] | None = None,
                    idempotency_key: str | None = None, raw: tuple[str, bytes] | None = None,
                    ) -> tuple[int, Any]:
        """One logical call: its status and parsed JSON answer; ApiError when refused or out of tries."""
        url = self.base_url.with_path(self.base_url.path.rstrip("/") + path)
        if query:
            pairs = {name: value for name, value in query.items() if value is not None}
            for name, value in pairs.items():
                if isinstance(value, float) and not math.isfinite(value):
                    raise ValueError(f"{name}: {value} is not a number a query can carry (a finite number is)")
            url = yarl.URL(f"{url}?{urlencode(pairs, quote_via=quote)}", encoded=True)
        headers = {"Authorization": self._authorization.value, "Accept": "application/json",
                   "User-Agent": self._user_agent}
        data = None
        if body is not UNSET:
            data = _json_body(body)
            headers["Content-Type"] = "application/json"
        elif raw is not None:  # a body already encoded (NDJSON): (content type, bytes)
            headers["Content-Type"], data = raw
        if method != "GET":
            headers["Idempotency-Key"] = idempotency_key or new_idempotency_key()
        attempt = 0
        while True:
            attempt += 1
            try:
                # aiohttp's timeout too: for a session given, or an exchange that has none
                async with asyncio.timeout(self.timeout_s):
                    status, reason, answer, retry_after = await self._exchange(method, url, headers, data)
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = Problem(UNREACHABLE, "reminderd unreachable", 0,
                                  _redact(f"{method} {url.path}: {_describe(exc)}", self._api_key.value))
                delay = self.retry.delay_s(attempt)
                if delay is None:
                    raise ApiError(problem, attempts=attempt) from None
                self._retrying(method, url, attempt, delay, problem.detail)
                await asyncio.sleep(delay)
                continue
            if status < 400:
                return status, self._parsed(status, answer, attempt)
            problem = _redacted(_problem_of(status, reason, answer), self._api_key.value)
            delay = None
            if _retryable(status, problem.type):
                delay = self.retry.delay_s(attempt, _retry_after_s(retry_after))
            if delay is None:
                raise _api_error(problem, attempt)
            self._retrying(method, url, attempt, delay, f"{status} {problem.type}")
            await asyncio.sleep(delay)

    async def _exchange(self, method: str, url: yarl.URL, headers: Mapping[str, str],
                        data: bytes | None) -> tuple[int, str, bytes, str | None]:
        async with self._http().request(method, url, headers=headers, data=data, allow_redirects=False,
                                        timeout=self._timeout) as resp:
            return resp.status, resp.reason or "", await resp.read(), resp.headers.get("Retry-After")

    def _parsed(self, status: int, answer: bytes, attempt: int) -> Any:
        try:
            return json.loads(answer, parse_float=Decimal)  # a payload's 12345678901234567.5 stays that
        except ValueError:
            excerpt = _redact(answer[:200].decode("utf-8", "replace"), self._api_key.value)
            raise ApiError(Problem(INVALID_RESPONSE, "Answer not JSON", status, f"HTTP {status}: {excerpt!r}"),
                           attempts=attempt) from None

    @staticmethod
    def _retrying(method: str, url: yarl.URL, attempt: int, delay_s: float, why: str) -> None:
        log.info("reminderd API: %s %s attempt %d failed (%s); retrying in %.3f s",
                 method, url.path, attempt, why, delay_s)

    async def _answer(self, cls: type[T], method: str, path: str, **options: Any) -> T:
        status, data = await self._call(method, path, **options)
        try:
            return from_wire(cls, data)
        except _InvalidResponse as exc:
            raise ApiError(Problem(INVALID_RESPONSE, "Answer not as the API describes", status,
                                   f"{method} {path}: {exc}")) from None

    async def _count(self, method: str, path: str, **options: Any) -> int:
        status, data = await self._call(method, path, **options)
        count = data.get("cancelled") if isinstance(data, dict) else None
        if not isinstance(count, int) or isinstance(count, bool):
            raise ApiError(Problem(INVALID_RESPONSE, "Answer not as the API describes", status,
                                   f"{method} {path}: no count in {data!r}"))
        return count

    # Messages -------------------------------------------------------------------------------------

    async def schedule(
        self, ref_id: str, *, fire_at: Instant | None = None, fire_in: Duration | None = None,
        local_time: WallTime | None = None, cron: str | None = None, every: str | None = None,
        rrule: str | None = None, timezone: str | None = None, payload: Any = UNSET,
        callback_url: str | None = None, category: str | None = None, max_attempts: int | None = None,
        backfill: Literal["send", "latest", "skip"] | None = None, max_lateness: Duration | None = None,
        calendar: str | None = None, holiday_rule: Literal["skip", "send"] | None = None,
        until: Instant | WallTime | None = None, max_runs: int | None = None,
        contact_id: str | None = None, idempotency_key: str | None = None,
    ) -> Scheduled:
        """Schedule one message, one-off or recurring (`POST /v1/messages`); a live message of the
        same ref is replaced. See ScheduleRequest for the fields."""
        request = ScheduleRequest(
            ref_id, fire_at=fire_at, fire_in=fire_in, local_time=local_time, cron=cron, every=every,
            rrule=rrule, timezone=timezone, payload=payload, callback_url=callback_url, category=category,
            max_attempts=max_attempts, backfill=backfill, max_lateness=max_lateness, calendar=calendar,
            holiday_rule=holiday_rule, until=until, max_runs=max_runs, contact_id=contact_id,
        )
        return await self._answer(Scheduled, "POST", "/v1/messages", body=request.to_wire(),
                                  idempotency_key=idempotency_key)

    async def schedule_many(self, messages: Iterable[ScheduleRequest], *, atomic: bool = True,
                            idempotency_key: str | None = None) -> BatchResult:
        """Up to 1,000 messages in one request (`POST /v1/messages/batch`). atomic (the default): all
        or nothing, and an invalid item raises ApiError listing every invalid one; atomic=False: each
        item stands alone and its result says whether it was refused."""
        body = {"messages": [message.to_wire() for message in messages], "atomic": atomic}
        return await self._answer(BatchResult, "POST", "/v1/messages/batch", body=body,
                                  idempotency_key=idempotency_key)

    async def get(self, message_id: int) -> MessageDetail:
        """One message with its attempts and audit trail; ApiError 404 when there is none."""
        return await self._answer(MessageDetail, "GET", f"/v1/messages/{int(message_id)}")

    def list(self, *, ref: str | None = None, ref_prefix: str | None = None,
             status: Status | str | Sequence[Status | str] | None = None,
             fire_after: Instant | None = None, fire_before: Instant | None = None,
             order: Literal["newest", "soonest"] | None = None, page_size: int | None = None,
             cursor: str | None = None) -> MessagePages:
        """The messages, page by page (`async for page in rd.list(...)`, or `.messages()` for one by
        one), newest first or soonest first, following each page's cursor; `cursor` starts from a
        page's `next_cursor` kept earlier. A walk never ends on an empty page (the server may answer
        one after a full last page)."""
        statuses = None
        if status is not None:
            statuses = ",".join([status] if isinstance(status, str) else status)
        query = {
            "ref": ref, "ref_prefix": ref_prefix, "status": statuses, "order": order, "limit": page_size,
            "fire_after": None if fire_after is None else _instant("fire_after", fire_after),
            "fire_before": None if fire_before is None else _instant("fire_before", fire_before),
        }
        return MessagePages(self, {name: value for name, value in query.items() if value is not None}, cursor)

    async def list_page(self, query: Mapping[str, Any], cursor: str | None = None) -> Page:
        """One page of `GET /v1/messages` for `query` (wire names) from `cursor`."""
        return await self._answer(Page, "GET", "/v1/messages", query={**query, "cursor": cursor})

    async def cancel(self, message_id: int, *, idempotency_key: str | None = None) -> int:
        """Cancel one message: 1, or 0 when it was no longer live; ApiError 404 when there is none."""
        return await self._count("DELETE", f"/v1/messages/{int(message_id)}", idempotency_key=idempotency_key)

    async def cancel_ref(self, ref_id: str, *, idempotency_key: str | None = None) -> int:
        """Cancel the live message of `ref_id` (0 when none is live)."""
        return await self._count("DELETE", "/v1/messages", query={"ref": ref_id},
                                 idempotency_key=idempotency_key)

    async def cancel_matching(self, ref_pattern: str, *, idempotency_key: str | None = None) -> int:
        """Cancel every live message whose ref matches the LIKE pattern (`booking:b7d2:%`; `\\`
        escapes % and _); how many."""
        return await self._count("POST", "/v1/messages/cancel", body={"ref_pattern": ref_pattern},
                                 idempotency_key=idempotency_key)

    async def update(self, message_id: int, *, fire_at: Instant | None = None, fire_in: Duration | None = None,
                     local_time: WallTime | None = None, payload: Any = UNSET,
                     idempotency_key: str | None = None) -> Message:
        """Reschedule a pending or paused message (at most one of fire_at, fire_in, local_time) and/or
        give it a new payload (`PATCH /v1/messages/{id}`)."""
        body = _present(fire_at=fire_at, fire_in=fire_in, local_time=local_time)
        if payload is not UNSET:
            body["payload"] = payload
        return await self._answer(Message, "PATCH", f"/v1/messages/{int(message_id)}", body=body,
                                  idempotency_key=idempotency_key)

    async def reschedule(self, message_id: int, *, fire_at: Instant | None = None,
                         fire_in: Duration | None = None, local_time: WallTime | None = None,
                         idempotency_key: str | None = None) -> Message:
        """`update` with a new time only."""
        return await self.update(message_id, fire_at=fire_at, fire_in=fire_in, local_time=local_time,
                                 idempotency_key=idempotency_key)

    async def pause(self, message_id: int, *, idempotency_key: str | None = None) -> Message:
        """Pause a pending message: kept, not sent, until resumed."""
        return await self._action(message_id, "pause", idempotency_key)

    async def resume(self, message_id: int, *, idempotency_key: str | None = None) -> Message:
        """Resume a paused message (a recurring one from now, without a backlog)."""
        return await self._action(message_id, "resume", idempotency_key)

    async def requeue(self, message_id: int, *, resend: bool = False, idempotency_key: str | None = None
                      ) -> Message:
        """Send a dead-lettered message again, due now, with the same webhook-id. One that died
        after its receiver accepted it is refused (ApiError, 409 conflict) unless `resend`; a
        recurring one goes to its next occurrence instead."""
        return await self._action(message_id, "requeue", idempotency_key,
                                  query={"resend": "true"} if resend else None)

    async def _action(self, message_id: int, action: str, idempotency_key: str | None,
                      query: Mapping[str, str] | None = None) -> Message:
        return await self._answer(Message, "POST", f"/v1/messages/{int(message_id)}/{action}",
                                  idempotency_key=idempotency_key, query=query)

    async def send_now(self, message_id: int, *, idempotency_key: str | None = None) -> SentNow:
        """Make a one-off due now, or send a recurring message's extra occurrence now; `held` says
        whether quiet hours, a holiday or a paused tenant hold it, and until when."""
        return await self._answer(SentNow, "POST", f"/v1/messages/{int(message_id)}/send-now",
                                  idempotency_key=idempotency_key)

    # The tenant -----------------------------------------------------------------------------------

    async def tenant(self) -> Tenant:
        """The key's tenant and its settings."""
        return await self._answer(Tenant, "GET", "/v1/tenant")

    async def update_tenant(self, *, callback_url: str | None = None, calendar: str | _Unset | None = UNSET,
                            holiday_rule: Literal["skip", "send"] | None = None,
                            quiet_hours: str | _Unset | None = UNSET, quiet_exempt: Sequence[str] | None = None,
                            idempotency_key: str | None = None) -> Tenant:
        """Change the tenant's settings; `calendar=None` and `quiet_hours=None` clear them."""
        body = _present(callback_url=callback_url, holiday_rule=holiday_rule)
        if calendar is not UNSET:
            body["calendar"] = calendar
        if quiet_hours is not UNSET:
            body["quiet_hours"] = quiet_hours
        if quiet_exempt is not None:
            body["quiet_exempt"] = builtins.list(quiet_exempt)
        return await self._answer(Tenant, "PATCH", "/v1/tenant", body=body, idempotency_key=idempotency_key)

    async def pause_tenant(self, *, idempotency_key: str | None = None) -> TenantState:
        """Hold every message of the tenant, new ones too."""
        return await self._answer(TenantState, "POST", "/v1/tenant/pause", idempotency_key=idempotency_key)

    async def resume_tenant(self, *, idempotency_key: str | None = None) -> TenantState:
        """Release the messages a tenant pause held."""
        return await self._answer(TenantState, "POST", "/v1/tenant/resume", idempotency_key=idempotency_key)

    async def rotate_secret(self, *, grace: Duration | None = None,
                            idempotency_key: str | None = None) -> RotatedSecret:
        """A new signing secret, shown only in this answer; the old one keeps signing for `grace`.
        The server never keeps the secret for a retry: when the first try's answer is lost after the
        rotation was done, the retry (same Idempotency-Key, so never a second rotation) raises
        SecretShownOnce."""
        return await self._answer(RotatedSecret, "POST", "/v1/tenant/rotate-secret", body=_present(grace=grace),
                                  idempotency_key=idempotency_key)

    async def stats(self) -> Stats:
        """Counts by status, the next 48 hours' load, delivery rates and lateness."""
        return await self._answer(Stats, "GET", "/v1/stats")

    # Schedules ------------------------------------------------------------------------------------

    async def preview(self, *, cron: str | None = None, every: str | None = None, rrule: str | None = None,
                      timezone: str | None = None, calendar: str | None = None,
                      quiet_hours: str | None = None, from_: Instant | None = None,
                      n: int | None = None) -> Preview:
        """The next `n` fire times of a schedule (exactly one of cron, every, rrule) after `from_`
        (default now), as `reminderd preview` prints them; nothing is created."""
        query = _present(cron=cron, every=every, rrule=rrule, timezone=timezone, calendar=calendar,
                         quiet_hours=quiet_hours, from_=from_, n=n)
        return await self._answer(Preview, "GET", "/v1/preview", query=query)

    # Contacts, audiences, broadcasts, cadences ----------------------------------------------------

    async def upsert_contacts(self, contacts: Iterable[Mapping[str, Any]], *,
                              idempotency_key: str | None = None) -> ContactsWritten:
        """Add or change contacts (`PUT /v1/contacts`): each a mapping with `contact_id` and any of
        timezone, phone, country, attributes. Up to 10,000 go as one JSON array; more as NDJSON,
        which the server writes in batches. Invalid contacts are reported in `errors`, the rest
        written."""
        items = [dict(contact) for contact in contacts]
        if len(items) <= CONTACTS_PER_ARRAY:
            return await self._answer(ContactsWritten, "PUT", "/v1/contacts", body=items,
                                      idempotency_key=idempotency_key)
        lines = b"".join(_json_body(item) + b"\n" for item in items)
        return await self._answer(ContactsWritten, "PUT", "/v1/contacts", raw=("application/x-ndjson", lines),
                                  idempotency_key=idempotency_key)

    async def contact(self, contact_id: str) -> Contact:
        """One contact, the zone its messages get and why; ApiError 404 when there is none."""
        return await self._answer(Contact, "GET", f"/v1/contacts/{_segment(contact_id)}")

    async def delete_contact(self, contact_id: str, *, idempotency_key: str | None = None) -> int:
        """Delete a contact and cancel its live messages: 1, or 0 when there was none."""
        status, data = await self._call("DELETE", f"/v1/contacts/{_segment(contact_id)}",
                                        idempotency_key=idempotency_key)
        return _number_in(data, "deleted", status)

    async def contact_messages(self, contact_id: str, *, recent: Duration | None = None,
                               limit: int | None = None) -> ContactPicture:
        """The contact's whole picture: live messages soonest first, then those ended within
        `recent` (default 7 days), each with its zone and, when held, why."""
        query = _present(limit=limit)
        if recent is not None:
            query["recent"] = str(_duration("recent", recent))
        return await self._answer(ContactPicture, "GET", f"/v1/contacts/{_segment(contact_id)}/messages",
                                  query=query)

    async def audiences(self) -> tuple[AudienceSummary, ...]:
        """The tenant's named lists and their sizes."""
        status, data = await self._call("GET", "/v1/audiences")
        found: tuple[AudienceSummary, ...] = self._decoded(
            tuple[AudienceSummary, ...], data, "audiences", status)
        return found

    async def add_to_audience(self, audience: str, contact_ids: Iterable[str], *,
                              idempotency_key: str | None = None) -> int:
        """Add contacts to a named list (made if new); how many were added. Unknown contacts: 404."""
        status, data = await self._call("PUT", f"/v1/audiences/{_segment(audience)}/members",
                                        body={"contact_ids": builtins.list(contact_ids)},
                                        idempotency_key=idempotency_key)
        return _number_in(data, "added", status)

    async def remove_from_audience(self, audience: str, contact_ids: Iterable[str], *,
                                   idempotency_key: str | None = None) -> int:
        """Remove contacts from a named list; how many were removed."""
        status, data = await self._call("DELETE", f"/v1/audiences/{_segment(audience)}/members",
                                        body={"contact_ids": builtins.list(contact_ids)},
                                        idempotency_key=idempotency_key)
        return _number_in(data, "removed", status)

    async def drop_audience(self, audience: str, *, idempotency_key: str | None = None) -> bool:
        """Drop a named list (its contacts stay); whether there was one."""
        status, data = await self._call("DELETE", f"/v1/audiences/{_segment(audience)}",
                                        idempotency_key=idempotency_key)
        dropped = data.get("dropped") if isinstance(data, dict) else None
        if not isinstance(dropped, bool):
            raise ApiError(Problem(INVALID_RESPONSE, "Answer not as the API describes", status,
                                   f"DELETE /v1/audiences/…: no dropped in {data!r}"))
        return dropped

    async def broadcast(self, ref_prefix: str, *, local_time: WallTime | None = None, cron: str | None = None,
                        every: str | None = None, rrule: str | None = None, audience: str | None = None,
                        contact_ids: Iterable[str] | None = None, everyone: bool = False, payload: Any = UNSET,
                        category: str | None = None, until: Instant | None = None,
                        callback_url: str | None = None, calendar: str | None = None,
                        holiday_rule: Literal["skip", "send"] | None = None,
                        backfill: Literal["send", "latest", "skip"] | None = None,
                        max_lateness: Duration | None = None, notify: bool | None = None,
                        stage_ahead: Duration | None = None, idempotency_key: str | None = None) -> Broadcast:
        """One message per contact at a wall time in each contact's zone (`POST /v1/broadcasts`):
        exactly one of audience, contact_ids and everyone=True; exactly one of local_time and
        cron/every/rrule. Above the tenant's approval threshold it waits for another key's approval."""
        body = _broadcast_body(locals())
        return await self._answer(Broadcast, "POST", "/v1/broadcasts", body=body,
                                  idempotency_key=idempotency_key)

    async def broadcast_dry_run(self, ref_prefix: str, *, local_time: WallTime | None = None,
                                cron: str | None = None, every: str | None = None, rrule: str | None = None,
                                audience: str | None = None, contact_ids: Iterable[str] | None = None,
                                everyone: bool = False, payload: Any = UNSET, category: str | None = None,
                                until: Instant | None = None) -> BroadcastPreview:
        """What `broadcast` would send: the audience's size, its sends per UTC hour and its zones
        (a recurring one's first occurrence); nothing is staged."""
        body = _broadcast_body(locals())
        return await self._answer(BroadcastPreview, "POST", "/v1/broadcasts", body=body,
                                  query={"dry_run": "true"})

    async def broadcasts(self) -> tuple[Broadcast, ...]:
        """The tenant's broadcasts, newest first (the last 200), with their counts."""
        status, data = await self._call("GET", "/v1/broadcasts")
        found: tuple[Broadcast, ...] = self._decoded(tuple[Broadcast, ...], data, "broadcasts", status)
        return found

    async def get_broadcast(self, broadcast_id: int) -> Broadcast:
        """One broadcast with its counts, `done` and its waves; ApiError 404 when there is none."""
        return await self._answer(Broadcast, "GET", f"/v1/broadcasts/{int(broadcast_id)}")

    async def approve_broadcast(self, broadcast_id: int, *, note: str | None = None,
                                idempotency_key: str | None = None) -> Broadcast:
        """Approve a broadcast awaiting approval; the key that created it may not (ApiError 403)."""
        return await self._answer(Broadcast, "POST", f"/v1/broadcasts/{int(broadcast_id)}/approve",
                                  body=_present(note=note), idempotency_key=idempotency_key)

    async def reject_broadcast(self, broadcast_id: int, *, note: str | None = None,
                               idempotency_key: str | None = None) -> Broadcast:
        """Reject a broadcast awaiting approval: every message of it is cancelled."""
        return await self._answer(Broadcast, "POST", f"/v1/broadcasts/{int(broadcast_id)}/reject",
                                  body=_present(note=note), idempotency_key=idempotency_key)

    async def cancel_broadcast(self, broadcast_id: int, *, idempotency_key: str | None = None) -> Broadcast:
        """Cancel a broadcast's live messages; no more waves are staged."""
        return await self._answer(Broadcast, "POST", f"/v1/broadcasts/{int(broadcast_id)}/cancel",
                                  idempotency_key=idempotency_key)

    async def schedule_cadence(self, ref_prefix: str, anchor: Instant, *, offsets: Iterable[str] | None = None,
                               at_local: str | None = None, contact_id: str | None = None,
                               timezone: str | None = None, payload: Any = UNSET,
                               callback_url: str | None = None,
                               category: str | None = None, idempotency_key: str | None = None) -> Cadence:
        """Messages at offsets around `anchor` ("-30d", "-7d", "-1d" by default) at `at_local` on
        the clock of `contact_id` (or in `timezone`): refs `ref_prefix:-30d`, …"""
        body = _present(ref_prefix=ref_prefix, at_local=at_local, contact_id=contact_id, timezone=timezone,
                        callback_url=callback_url, category=category)
        body["anchor"] = _instant("anchor", anchor)
        if offsets is not None:
            body["offsets"] = builtins.list(offsets)
        if payload is not UNSET:
            body["payload"] = payload
        return await self._answer(Cadence, "POST", "/v1/cadences", body=body, idempotency_key=idempotency_key)

    def _decoded(self, hint: Any, data: Any, member: str, status: int) -> Any:
        try:
            if not isinstance(data, dict) or member not in data:
                raise _InvalidResponse(f"/{member}: missing")
            return _decode(hint, data[member], f"/{member}")
        except _InvalidResponse as exc:
            raise ApiError(Problem(INVALID_RESPONSE, "Answer not as the API describes", status,
                                   str(exc))) from None


class MessagePages:
    """`list`'s answer: an async iterator over pages, each fetched when wanted."""

    def __init__(self, client: ReminderdClient, query: Mapping[str, Any], cursor: str | None) -> None:
        self._client = client
        self.query = dict(query)  # wire names
        self.cursor = cursor

    def __aiter__(self) -> AsyncIterator[Page]:
        return self._pages()

    async def _pages(self) -> AsyncIterator[Page]:
        cursor: str | None = self.cursor
        followed = {cursor}
        while True:
            page = await self._client.list_page(self.query, cursor)
            if page.messages or cursor == self.cursor:  # not the empty page that can end a walk
                yield page
            cursor = _next_cursor(page, followed)
            if cursor is None:
                return

    async def messages(self) -> AsyncIterator[Message]:
        """Every message of every page, one by one."""
        async for page in self:
            for message in page.messages:
                yield message


def _next_cursor(page: Page, followed: set[str | None]) -> str | None:
    """The cursor a walk follows next (None: the walk is done), added to `followed`; ApiError when the
    server answers one already followed (a bug, or a proxy's cache), where the walk would never end."""
    cursor = page.next_cursor
    if cursor is None:
        return None
    if cursor in followed:
        raise ApiError(Problem(INVALID_RESPONSE, "Answer not as the API describes", 200,
                               f"GET /v1/messages: the server answered cursor {cursor} again; following it "
                               "would never end"))
    followed.add(cursor)
    return cursor


CONTACTS_PER_ARRAY = 10_000  # PUT /v1/contacts takes this many as a JSON array; more go as NDJSON


def _segment(text: str) -> str:
    """A path segment (a contact id, an audience's name): as it is, the URL quotes what it must
    (ids are letters, digits and _ . : @ + -; a "/" or "?" could only name nothing)."""
    return str(text).replace("/", "%2F").replace("?", "%3F").replace("#", "%23")


def _number_in(data: Any, member: str, status: int) -> int:
    value = data.get(member) if isinstance(data, dict) else None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ApiError(Problem(INVALID_RESPONSE, "Answer not as the API describes", status,
                               f"no {member} in {data!r}"))
    return value


def _broadcast_body(given: Mapping[str, Any]) -> dict[str, Any]:
    """A broadcast's JSON body from the method's arguments."""
    body = _present(ref_prefix=given["ref_prefix"], cron=given["cron"], every=given["every"],
                    rrule=given["rrule"], audience=given["audience"], category=given["category"],
                    until=given["until"], callback_url=given.get("callback_url"),
                    calendar=given.get("calendar"),
                    holiday_rule=given.get("holiday_rule"), backfill=given.get("backfill"),
                    max_lateness=given.get("max_lateness"), notify=given.get("notify"),
                    stage_ahead=given.get("stage_ahead"))
    if given["local_time"] is not None:
        body["local_time"] = _wall_time("local_time", given["local_time"])
    if given["contact_ids"] is not None:
        body["contact_ids"] = builtins.list(given["contact_ids"])
    if given["everyone"]:
        body["everyone"] = True
    if given["payload"] is not UNSET:
        body["payload"] = given["payload"]
    return body


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# The client without an event loop -----------------------------------------------------------------


def _blocking(
    method: Callable[Concatenate[ReminderdClient, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[SyncReminderdClient, P], T]:
    def call(self: SyncReminderdClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(method(self._client, *args, **kwargs))

    return functools.update_wrapper(call, method)


class SyncReminderdClient:
    """ReminderdClient for code without an event loop (scripts, Django, Flask): the same methods,
    blocking. Its own event loop runs in a background thread, so it works from any thread (and from
    inside another event loop's thread, blocking it). Close it, or use it as a context manager."""

    def __init__(self, base_url: str, api_key: str, *, timeout_s: float = 30.0,
                 retry: RetryPolicy | None = None, user_agent: str | None = None) -> None:
        self._client = ReminderdClient(base_url, api_key, timeout_s=timeout_s, retry=retry,
                                       user_agent=user_agent)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="reminderd-client", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return "Sync" + repr(self._client)

    def __enter__(self) -> SyncReminderdClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._loop.is_closed():
            coroutine.close()
            raise RuntimeError("this SyncReminderdClient is closed")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    schedule = _blocking(ReminderdClient.schedule)
    schedule_many = _blocking(ReminderdClient.schedule_many)
    get = _blocking(ReminderdClient.get)
    list_page = _blocking(ReminderdClient.list_page)
    cancel = _blocking(ReminderdClient.cancel)
    cancel_ref = _blocking(ReminderdClient.cancel_ref)
    cancel_matching = _blocking(ReminderdClient.cancel_matching)
    update = _blocking(ReminderdClient.update)
    reschedule = _blocking(ReminderdClient.reschedule)
    pause = _blocking(ReminderdClient.pause)
    resume = _blocking(ReminderdClient.resume)
    requeue = _blocking(ReminderdClient.requeue)
    send_now = _blocking(ReminderdClient.send_now)
    tenant = _blocking(ReminderdClient.tenant)
    update_tenant = _blocking(ReminderdClient.update_tenant)
    pause_tenant = _blocking(ReminderdClient.pause_tenant)
    resume_tenant = _blocking(ReminderdClient.resume_tenant)
    rotate_secret = _blocking(ReminderdClient.rotate_secret)
    stats = _blocking(ReminderdClient.stats)
    preview = _blocking(ReminderdClient.preview)
    upsert_contacts = _blocking(ReminderdClient.upsert_contacts)
    contact = _blocking(ReminderdClient.contact)
    delete_contact = _blocking(ReminderdClient.delete_contact)
    contact_messages = _blocking(ReminderdClient.contact_messages)
    audiences = _blocking(ReminderdClient.audiences)
    add_to_audience = _blocking(ReminderdClient.add_to_audience)
    remove_from_audience = _blocking(ReminderdClient.remove_from_audience)
    drop_audience = _blocking(ReminderdClient.drop_audience)
    broadcast = _blocking(ReminderdClient.broadcast)
    broadcast_dry_run = _blocking(ReminderdClient.broadcast_dry_run)
    broadcasts = _blocking(ReminderdClient.broadcasts)
    get_broadcast = _blocking(ReminderdClient.get_broadcast)
    approve_broadcast = _blocking(ReminderdClient.approve_broadcast)
    reject_broadcast = _blocking(ReminderdClient.reject_broadcast)
    cancel_broadcast = _blocking(ReminderdClient.cancel_broadcast)
    schedule_cadence = _blocking(ReminderdClient.schedule_cadence)

    def list(self, *, ref: str | None = None, ref_prefix: str | None = None,
             status: Status | str | Sequence[Status | str] | None = None,
             fire_after: Instant | None = None, fire_before: Instant | None = None,
             order: Literal["newest", "soonest"] | None = None, page_size: int | None = None,
             cursor: str | None = None) -> Iterator[Page]:
        """The pages of `ReminderdClient.list`, each fetched when the loop asks for it."""
        pages = self._client.list(ref=ref, ref_prefix=ref_prefix, status=status, fire_after=fire_after,
                                  fire_before=fire_before, order=order, page_size=page_size, cursor=cursor)
        next_cursor: str | None = pages.cursor
        followed = {next_cursor}
        while True:
            page = self.list_page(pages.query, next_cursor)
            if page.messages or next_cursor == pages.cursor:  # not the empty page that can end a walk
                yield page
            next_cursor = _next_cursor(page, followed)
            if next_cursor is None:
                return

    def messages(self, **filters: Any) -> Iterator[Message]:
        """Every message of `list(**filters)`, one by one."""
        for page in self.list(**filters):
            yield from page.messages
