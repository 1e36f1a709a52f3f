"""The frozen rows the store's reads for the command line, the HTTP API and the audiences return,
each built by `from_row()` from what one named query selected. store.py runs the queries and
imports these in the methods that return them; the daemon's own rows stay in store.py, the
dashboard's are dashboard_rows.py, so `reminderd run` never builds these classes
(tests/unit/test_startup.py)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as clock_time
from typing import Any, Literal

from .duration import in_words
from .exceptions import DatabaseRefused
from .lifecycle import Status
from .schedule import Timing

DaemonState = Literal["alive", "stopping", "dead"]


@dataclass(frozen=True, slots=True)
class StatusCount:
    """`reminderd status`: one tenant's messages in one status, and the next due."""

    tenant_id: str
    status: Status
    messages: int
    next_due: datetime | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> StatusCount:
        return cls(row["tenant_id"], Status(row["status"]), row["messages"], row["next_due"])


@dataclass(frozen=True, slots=True)
class TenantRules:
    """A tenant's holiday and quiet-hour settings, and its audience settings (default timezone,
    broadcast limit, approval threshold); str() says them in words."""

    calendar: str | None
    holiday_rule: str
    quiet_start: clock_time | None
    quiet_end: clock_time | None
    quiet_exempt: tuple[str, ...]
    timezone: str | None = None
    broadcast_limit: int | None = None
    approval_threshold: int | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TenantRules:
        return cls(row["calendar"], row["holiday_rule"], row["quiet_start"], row["quiet_end"],
                   tuple(row["quiet_exempt"]), row["timezone"], row["broadcast_limit"],
                       row["approval_threshold"])

    def __str__(self) -> str:
        quiet = f"{self.quiet_start:%H:%M}-{self.quiet_end:%H:%M}" if self.quiet_start else "none"
        said = (
            f"calendar {self.calendar or 'none'}, holidays {self.holiday_rule}, "
            f"quiet hours {quiet} (exempt: {', '.join(self.quiet_exempt) or 'none'})"
        )
        if self.timezone is not None:
            said += f", timezone {self.timezone}"
        if self.broadcast_limit is not None:
            said += f", broadcasts of at most {self.broadcast_limit:,} contacts"
        if self.approval_threshold is not None:
            said += f", approval above {self.approval_threshold:,}"
        return said


@dataclass(frozen=True, slots=True)
class TenantCalendar:
    """What of a tenant times a new recurring row's first occurrence: its holiday settings and its
    own days off (from a day before today on)."""

    calendar: str | None
    holiday_rule: str
    holiday_days: tuple[date, ...]
    holiday_names: tuple[str, ...]

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TenantCalendar:
        return cls(row["calendar"], row["holiday_rule"], tuple(row["holiday_days"]),
                   tuple(row["holiday_names"]))


@dataclass(frozen=True, slots=True)
class DaemonStatus:
    """A registered daemon as `reminderd status`, the daemon_overview view and the dashboard show
    it: alive, stopping or dead (silent beyond its dead_after, about to be rescued), the rows it
    holds and its last claim."""

    id: uuid.UUID
    host: str
    pid: int
    version: str
    started_at: datetime
    heartbeat_at: datetime
    silent_for_s: float
    state: DaemonState
    held: int
    last_claim_at: datetime | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> DaemonStatus:
        return cls(**dict(row.items()))


@dataclass(frozen=True, slots=True)
class TenantOverview:
    """A tenant as `reminderd tenant list` shows it: its settings and its waiting and dead messages."""

    id: str
    callback_url: str | None
    calendar: str | None
    holiday_rule: str
    quiet_start: clock_time | None
    quiet_end: clock_time | None
    paused: bool
    pending: int
    picked: int
    paused_messages: int
    dead: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TenantOverview:
        return cls(**dict(row.items()))


@dataclass(frozen=True, slots=True)
class TenantLimits:
    max_per_second: int | None
    max_per_hour: int | None
    frequency_cap_policy: str
    frequency_caps: tuple[tuple[str, int, float], ...] = ()  # (category, max_messages, per_s)

    def __str__(self) -> str:
        caps = ", ".join(f"{n} {category} per {in_words(per_s)}" for category, n, per_s in self.frequency_caps)
        return (f"max {self.max_per_second or 'unlimited'} per second, "
                f"{self.max_per_hour or 'unlimited'} per hour; "
                f"frequency caps: {caps or 'none'} (over a cap: {self.frequency_cap_policy})")


@dataclass(frozen=True, slots=True)
class EndpointLimits:
    endpoint: str
    max_in_flight: int | None
    max_per_second: int | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> EndpointLimits:
        return cls(row["endpoint"], row["max_in_flight"], row["max_per_second"])

    def __str__(self) -> str:
        in_flight = self.max_in_flight or "REMINDERD_CONCURRENCY per daemon"
        return (f"{self.endpoint}: at most {in_flight} in flight, "
                f"{self.max_per_second or 'unlimited'} per second (all daemons together)")


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key as the server checks it: found by its prefix, its hash compared in constant time."""

    id: int
    prefix: str
    key_hash: bytes = field(repr=False)
    tenant_id: str | None  # None: an operator's key
    name: str
    scopes: tuple[str, ...]
    revoked_at: datetime | None
    rate_limit: float | None  # the tenant's api_rate_limit

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ApiKey:
        rate = row["api_rate_limit"]
        return cls(row["id"], row["prefix"], bytes(row["key_hash"]), row["tenant_id"], row["name"],
                   tuple(row["scopes"]), row["revoked_at"], None if rate is None else float(rate))


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """A key as `reminderd api-key list` shows it (never its hash)."""

    id: int
    prefix: str
    tenant_id: str | None
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ApiKeyInfo:
        return cls(row["id"], row["prefix"], row["tenant_id"], row["name"], tuple(row["scopes"]),
                   row["created_at"], row["last_used_at"], row["revoked_at"])


@dataclass(frozen=True, slots=True)
class ItemScheduled:
    """One item of schedule_many: its message, or the database's reason for refusing it."""

    item: int  # from 1, as the database counts
    message_id: int | None
    result: str  # created | replaced | unchanged | error
    status: Status | None
    fire_at: datetime | None
    error_sqlstate: str | None
    error_message: str | None
    error_hint: str | None
    error_detail: str | None = None
    error_constraint: str | None = None
    timezone: str | None = None  # the message's zone, and where it came from (message, contact, …)
    timezone_source: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ItemScheduled:
        status = row["status"]
        return cls(row["item"], row["message_id"], row["result"], None if status is None else Status(status),
                   row["fire_at"], row["error_sqlstate"], row["error_message"], row["error_hint"],
                   row["error_detail"], row["error_constraint"], row["timezone"], row["timezone_source"])

    def refused(self) -> DatabaseRefused | None:
        """The item's error as the exception the statement would have raised on its own."""
        if self.result != "error":
            return None
        return DatabaseRefused(self.error_message or "the database refused the message",
                               sqlstate=self.error_sqlstate, detail=self.error_detail, hint=self.error_hint,
                               constraint=self.error_constraint)


@dataclass(frozen=True, slots=True)
class MessageView:
    """A message as the API shows it; `payload` is its JSON text as stored."""

    id: int
    ref_id: str
    status: Status
    fire_at: datetime | None
    scheduled_for: datetime | None
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
    extra_of: int | None
    contact_id: str | None
    timezone_source: str  # message, contact, phone, country, tenant (docs/audiences.md)
    payload: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> MessageView:
        values = dict(row.items())
        values["status"] = Status(values["status"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class DeliveryView:
    """One HTTP attempt of a message."""

    attempt: int
    webhook_id: str
    scheduled_for: datetime
    status_code: int | None
    error: str | None
    duration_ms: int
    created_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> DeliveryView:
        return cls(**dict(row.items()))


@dataclass(frozen=True, slots=True)
class EventView:
    """One entry of a message's audit trail."""

    created_at: datetime
    event: str
    status: str
    fire_at: datetime | None
    reason: str | None
    actor: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> EventView:
        return cls(**dict(row.items()))


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """The answer kept for an Idempotency-Key."""

    request_hash: bytes
    status_code: int
    content_type: str
    body: bytes

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> StoredAnswer:
        return cls(bytes(row["request_hash"]), row["status_code"], row["content_type"],
                   bytes(row["response_body"]))


@dataclass(frozen=True, slots=True)
class MessageRef:
    """What an action by id needs to know of a message before calling the ref's SQL function."""

    ref_id: str
    status: Status
    extra_of: int | None
    recurring: bool

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> MessageRef:
        return cls(row["ref_id"], Status(row["status"]), row["extra_of"], row["recurring"])


@dataclass(frozen=True, slots=True)
class DueNow:
    """The message send_now made due, read as the daemon will read it when it claims it."""

    id: int
    ref_id: str
    status: Status
    fire_at: datetime | None
    attempts: int
    extra_of: int | None
    occurrence: datetime | None
    db_now: datetime
    tenant_paused: bool
    timing: Timing

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> DueNow:
        return cls(row["id"], row["ref_id"], Status(row["status"]), row["fire_at"], row["attempts"],
                   row["extra_of"], row["occurrence"], row["db_now"], row["tenant_paused"],
                   Timing.from_row(row))


@dataclass(frozen=True, slots=True)
class TenantView:
    """A tenant as the API shows it (never a secret)."""

    id: str
    callback_url: str | None
    calendar: str | None
    holiday_rule: str
    quiet_start: clock_time | None
    quiet_end: clock_time | None
    quiet_exempt: tuple[str, ...]
    paused: bool
    api_rate_limit: int | None
    previous_secret_expires_at: datetime | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TenantView:
        values = dict(row.items())
        values["quiet_exempt"] = tuple(values["quiet_exempt"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class TenantStats:
    """GET /v1/stats: one tenant's counts, upcoming load, rates and lateness."""

    counts: dict[str, int]
    upcoming: list[tuple[datetime, int]]
    rates: dict[str, int]  # delivered_1h, retried_1h, dead_1h, delivered_24h, …
    lateness_p50_ms: float | None
    lateness_p99_ms: float | None


@dataclass(frozen=True, slots=True)
class Contact:
    """A contact, and the zone its messages get (`zone`) and why (`zone_source`: contact, phone,
    country, tenant; None when it has none and its tenant has no default)."""

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

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Contact:
        return cls(row["contact_id"], row["timezone"], row["phone"], row["country"],
                   json.loads(row["attributes"]),
                   row["zone"], row["zone_source"], tuple(row["audiences"]), row["created_at"],
                       row["updated_at"])


@dataclass(frozen=True, slots=True)
class ContactMessage:
    """One of a contact's messages (reminderd.contact_messages): live, or ended recently."""

    id: int
    ref_id: str
    status: Status
    fire_at: datetime | None
    local_fire_at: datetime | None  # on the contact's clock
    timezone: str
    timezone_source: str
    recurrence: str | None
    category: str
    broadcast_id: int | None
    last_event: str | None
    reason: str | None
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ContactMessage:
        return cls(row["id"], row["ref_id"], Status(row["status"]), row["fire_at"], row["local_fire_at"],
                   row["timezone"], row["timezone_source"], row["recurrence"], row["category"],
                       row["broadcast_id"],
                   row["last_event"], row["reason"], row["updated_at"])


@dataclass(frozen=True, slots=True)
class AudienceSummary:
    name: str
    members: int
    created_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> AudienceSummary:
        return cls(row["name"], row["members"], row["created_at"])


@dataclass(frozen=True, slots=True)
class ZoneWave:
    """One zone of a broadcast's audience: when its wave fires, and where its contacts' zone came from."""

    timezone: str | None  # None: contacts with no zone (the tenant has no default)
    fire_at: datetime | None
    contacts: int
    from_contact: int
    from_phone: int
    from_country: int
    from_tenant: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ZoneWave:
        return cls(row["timezone"], row["fire_at"], row["contacts"], row["from_contact"], row["from_phone"],
                   row["from_country"], row["from_tenant"])


@dataclass(frozen=True, slots=True)
class BroadcastProgress:
    """A broadcast and its counts, as the reminderd.broadcasts view shows them."""

    id: int
    tenant_id: str
    ref_prefix: str
    audience: str
    local_time: datetime | None
    cron: str | None
    rrule: str | None
    category: str
    approval: str
    created_by: str
    created_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    occurrences: int
    staged: int
    waiting: int
    held: int
    sent: int
    failed: int
    expired: int
    cancelled: int
    done: bool
    next_occurrence: datetime | None
    ended_at: datetime | None
    ended_reason: str | None
    last_error: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> BroadcastProgress:
        return cls(**dict(row.items()))

    @property
    def awaiting_approval(self) -> bool:
        """Waiting for a decision that would release something: not one staged whose rows are all
        gone (its contacts deleted), which approve_broadcast refuses (migration 0034)."""
        return self.approval == "awaiting" and not self.done

    @property
    def when(self) -> str:
        """Its schedule: the local time of a one-off, read on each contact's clock, or its recurrence."""
        if self.local_time is not None:
            return f"{self.local_time:%Y-%m-%d %H:%M} on each contact's clock"
        return f'cron "{self.cron}"' if self.cron is not None else f'RRULE "{self.rrule}"'


BROADCAST_PROGRESS_COLUMNS = tuple(BroadcastProgress.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class BroadcastDetail:
    """A broadcast for its page: its progress and what it asked for."""

    progress: BroadcastProgress
    payload: str
    until: datetime | None
    notify: bool
    callback_url: str | None
    calendar: str | None
    decision_note: str | None
    stage_ahead_s: float

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> BroadcastDetail:
        progress = BroadcastProgress.from_row({name: row[name] for name in BROADCAST_PROGRESS_COLUMNS})
        return cls(progress, row["payload"], row["until"], row["notify"], row["callback_url"], row["calendar"],
                   row["decision_note"], row["stage_ahead_s"])


@dataclass(frozen=True, slots=True)
class StagedOccurrence:
    """One staged wave of a broadcast (a one-off broadcast has one)."""

    occurrence: datetime  # the wall time, read in each contact's zone
    contacts: int
    first_fire_at: datetime | None
    last_fire_at: datetime | None
    staged_at: datetime
    completed_at: datetime | None
    completion_message_id: int | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> StagedOccurrence:
        return cls(**dict(row.items()))


@dataclass(frozen=True, slots=True)
class CadenceStep:
    """One ref of a cadence: its message, or why there is none; what the call did to it (outcome:
    scheduled, unchanged, replaced, skipped, cancelled) and the message it cancelled or replaced."""

    ref_id: str
    message_id: int | None
    fire_at: datetime
    local_time: datetime
    skipped: str | None
    outcome: str
    cancelled_id: int | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> CadenceStep:
        return cls(row["ref_id"], row["message_id"], row["fire_at"], row["local_time"], row["skipped"],
                   row["outcome"], row["cancelled_id"])
