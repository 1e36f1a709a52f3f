"""What the dashboard's queries (sql/dashboard.sql) return: frozen dataclasses built by
`from_row()`, as reminderd.store hands them to reminderd/dashboard.py."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from datetime import time as clock_time
from typing import Any

from .lifecycle import Event, Status
from .rows import ApiKey
from .schedule import Timing

# The events the daemon records when it sends or holds back an occurrence: the live feed's rows,
# in the order the feed's filter lists them (the partial indexes events_fires, events_tenant_fires,
# deliveries_fires and deliveries_tenant_fires, and the trigger function count_fires, name the same
# ones). An attempt's (fired, retry_scheduled, dead_lettered) is on its deliveries row since
# migration 0007; the others are events.
FIRES: tuple[Event, ...] = (
    Event.FIRED, Event.RETRY_SCHEDULED, Event.DEAD_LETTERED, Event.EXPIRED, Event.MISSED_SKIPPED,
    Event.DEFERRED, Event.HOLIDAY_SKIPPED,
)


@dataclass(frozen=True, slots=True)
class Requeued:
    """What a dashboard requeue of dead letters did: how many went back to pending, how many of
    those to their next occurrence (onward: recurring ones that died after delivery), how many were
    left dead because their ref has a live message (blocked), how many one-offs it skipped because
    they died after delivery (requeueing would send them again), and how many because their zone is
    one the database server cannot read (unreadable: no instant to send at)."""

    requeued: int
    onward: int
    blocked: int
    delivered: int
    unreadable: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Requeued:
        return cls(row["requeued"], row["onward"], row["blocked"], row["delivered"], row["unreadable"])


@dataclass(frozen=True, slots=True)
class TenantRulesView:
    """A tenant as the upcoming page shades it."""

    id: str
    paused: bool
    calendar: str | None
    holiday_rule: str
    quiet_start: clock_time | None
    quiet_end: clock_time | None
    quiet_exempt: tuple[str, ...]

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TenantRulesView:
        return cls(row["id"], row["paused"], row["calendar"], row["holiday_rule"], row["quiet_start"],
                   row["quiet_end"], tuple(row["quiet_exempt"]))


@dataclass(frozen=True, slots=True)
class TenantCounts:
    """One tenant's live and dead messages, and its backlog (pending and already due)."""

    tenant_id: str
    pending: int
    picked: int
    paused: int
    dead: int
    due: int
    oldest_due: datetime | None
    awaiting: int = 0  # messages of broadcasts awaiting a second person's approval
    awaiting_broadcasts: int = 0  # those broadcasts

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TenantCounts:
        return cls(row["tenant_id"], row.get("pending", 0), row.get("picked", 0), row.get("paused", 0),
                   row.get("dead", 0), row.get("due", 0), row.get("oldest_due"),
                   row.get("awaiting_approval", 0), row.get("awaiting_broadcasts", 0))

    def __add__(self, other: TenantCounts) -> TenantCounts:
        """Both tenants' counts together (the oldest due of either), named after this one."""
        oldest = min((t for t in (self.oldest_due, other.oldest_due) if t is not None), default=None)
        return TenantCounts(
            self.tenant_id, self.pending + other.pending, self.picked + other.picked,
            self.paused + other.paused, self.dead + other.dead, self.due + other.due, oldest,
            self.awaiting + other.awaiting,
            self.awaiting_broadcasts + other.awaiting_broadcasts,
        )


@dataclass(frozen=True, slots=True)
class FireTotals:
    """One tenant's fires in one window, from the aggregate fire_counts."""

    delivered: int = 0
    retried: int = 0
    dead: int = 0
    expired: int = 0
    held: int = 0

    @property
    def total(self) -> int:
        return self.delivered + self.retried + self.dead + self.expired + self.held

    def __add__(self, other: FireTotals) -> FireTotals:
        return FireTotals(self.delivered + other.delivered, self.retried + other.retried,
                          self.dead + other.dead, self.expired + other.expired, self.held + other.held)


@dataclass(frozen=True, slots=True)
class TenantFires:
    """One tenant's fires in the last hour and the last 24 hours."""

    tenant_id: str
    last_hour: FireTotals
    last_day: FireTotals

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TenantFires:
        def window(suffix: str) -> FireTotals:
            kinds = ("delivered", "retried", "dead", "expired", "held")
            return FireTotals(*(row[f"{kind}_{suffix}"] for kind in kinds))

        return cls(row["tenant_id"], window("1h"), window("24h"))


@dataclass(frozen=True, slots=True)
class LatenessCount:
    """Delivered attempts of one tenant, in one window, in one lateness bucket."""

    tenant_id: str
    last_hour: bool  # else the last 24 hours
    bucket: int
    delivered: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> LatenessCount:
        return cls(row["tenant_id"], row["last_hour"], row["bucket"], row["delivered"])


@dataclass(frozen=True, slots=True)
class Bucket:
    """Pending messages whose fire_at falls in one hour or minute."""

    starts_at: datetime
    messages: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Bucket:
        return cls(row["starts_at"], row["messages"])


@dataclass(frozen=True, slots=True)
class MessageLine:
    """A message as the dashboard's lists show it."""

    id: int
    tenant_id: str
    ref_id: str
    status: Status
    fire_at: datetime | None
    scheduled_for: datetime | None
    timezone: str
    cron: str | None
    rrule: str | None
    category: str
    attempts: int
    last_error: str | None
    last_event: str | None
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> MessageLine:
        values = dict(row.items())
        values["status"] = Status(values["status"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One fire in the live feed: a row of reminderd.events (`event_id`) or of reminderd.deliveries
    (`delivery_id`, an attempt and the change it made), as the trail has them."""

    event_id: int | None
    delivery_id: int | None
    created_at: datetime
    message_id: int
    tenant_id: str
    ref_id: str
    event: str
    status: str
    fire_at: datetime | None
    reason: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> FeedEntry:
        return cls(**dict(row.items()))

    @property
    def key(self) -> str:
        """Which row it is, unique across both tables: `e42` (an event) or `d42` (a delivery)."""
        return f"e{self.event_id}" if self.event_id is not None else f"d{self.delivery_id}"


@dataclass(frozen=True, slots=True)
class FeedCursor:
    """Where a feed is: the newest fire it has of each of the trail's tables (0: none). Each table
    numbers its rows in its own sequence, so the two ids are kept side by side, never compared;
    as a Server-Sent Events id it reads `events.deliveries`, e.g. `1042.977`."""

    event_id: int = 0
    delivery_id: int = 0

    def past(self, entry: FeedEntry) -> FeedCursor:
        """The cursor once `entry` is had too."""
        if entry.event_id is not None and entry.event_id > self.event_id:
            return FeedCursor(entry.event_id, self.delivery_id)
        if entry.delivery_id is not None and entry.delivery_id > self.delivery_id:
            return FeedCursor(self.event_id, entry.delivery_id)
        return self

    def __str__(self) -> str:
        return f"{self.event_id}.{self.delivery_id}"

    @classmethod
    def parse(cls, text: str) -> FeedCursor | None:
        """`1042.977` as written by str(); None for anything else."""
        events, dot, deliveries = text.partition(".")
        if not (dot and all(part.isascii() and part.isdecimal() and len(part) <= 18  # a bigint
                                for part in (events, deliveries))):
            return None
        return cls(int(events), int(deliveries))

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> FeedCursor:
        return cls(row["event_id"], row["delivery_id"])


FEED_START = FeedCursor()  # a feed that has no fire yet


@dataclass(frozen=True, slots=True)
class MessageStory:
    """One message, whole, for its page: the row and what decides when it fires."""

    id: int
    tenant_id: str
    ref_id: str
    status: Status
    fire_at: datetime | None
    scheduled_for: datetime | None
    payload: str
    callback_url: str | None
    category: str
    attempts: int
    max_attempts: int | None
    last_error: str | None
    last_event: str | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    picked_at: datetime | None
    lease_expires_at: datetime | None
    paused_by: str | None
    extra_of: int | None
    tenant_paused: bool
    db_now: datetime
    timing: Timing
    calendar: str | None  # the effective one (the message's, else its tenant's)
    broadcast_id: int | None  # the broadcast it is a row of

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> MessageStory:
        return cls(
            row["id"], row["tenant_id"], row["ref_id"], Status(row["status"]), row["fire_at"],
            row["scheduled_for"], row["payload"], row["callback_url"], row["category"], row["attempts"],
            row["max_attempts"], row["last_error"], row["last_event"], row["created_at"], row["updated_at"],
            row["sent_at"], row["picked_at"], row["lease_expires_at"], row["paused_by"], row["extra_of"],
            row["tenant_paused"], row["db_now"], Timing.from_row(row),
            row["calendar"] if row["holiday_rule"] == "skip" else None, row["broadcast_id"],
        )

    @property
    def recurring(self) -> bool:
        return self.timing.recurring

    @property
    def live(self) -> bool:
        return self.status in (Status.PENDING, Status.PICKED, Status.PAUSED, Status.AWAITING_APPROVAL)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One HTTP attempt of a message."""

    id: int
    attempt: int
    webhook_id: str
    scheduled_for: datetime
    status_code: int | None
    error: str | None
    duration_ms: int
    created_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Attempt:
        return cls(**dict(row.items()))

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One entry of a message's trail: what happened, and who did it; an event (`event_id`) or the
    change an attempt made (`delivery_id`)."""

    event_id: int | None
    delivery_id: int | None
    created_at: datetime
    event: str
    status: str
    fire_at: datetime | None
    reason: str | None
    actor: str  # the database role
    on_behalf_of: str | None  # whom it acted for (an API key), when it said

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> AuditEntry:
        return cls(**dict(row.items()))


@dataclass(frozen=True, slots=True)
class BroadcastWave:
    """One staged wave (occurrence) of a broadcast, with its rows' progress."""

    occurrence: datetime  # the wall time, read in each contact's zone
    contacts: int
    first_fire_at: datetime | None
    last_fire_at: datetime | None
    staged_at: datetime
    completed_at: datetime | None
    completion_message_id: int | None
    waiting: int
    held: int
    sent: int
    failed: int
    expired: int
    cancelled: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> BroadcastWave:
        return cls(**dict(row.items()))


@dataclass(frozen=True, slots=True)
class HourSends:
    """How many of a broadcast's rows awaiting approval fire in one UTC hour."""

    broadcast_id: int
    hour: datetime
    sends: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> HourSends:
        return cls(row["broadcast_id"], row["hour"], row["sends"])


@dataclass(frozen=True, slots=True)
class SessionKey:
    """The key a dashboard session signed in with, and whether that session was signed out."""

    key: ApiKey
    signed_out: bool

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> SessionKey:
        return cls(ApiKey.from_row(row), row["signed_out"])


@dataclass(frozen=True, slots=True)
class SignOut:
    """What a sign-out wrote: the session's row (False: it was signed out already), and how many
    rows of sessions long expired it deleted."""

    signed_out: bool
    pruned: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> SignOut:
        return cls(row["signed_out"], row["pruned"])
