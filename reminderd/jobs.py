"""What the loop reads from the database: a claimed message (Job), and a recurring row waiting for
its next fire_at (Unplanned)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .schedule import Timing


@dataclass(frozen=True, slots=True)
class FrequencyCap:
    """At most `max_messages` of the message's category to its recipient per rolling `per_s`;
    over it the tenant's `policy`: defer or skip."""

    max_messages: int
    per_s: float
    policy: str = "defer"

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> FrequencyCap | None:
        if row.get("cap_max") is None or row.get("recipient") is None:
            return None
        return cls(row["cap_max"], row["cap_per_s"], row.get("frequency_cap_policy") or "defer")


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    tenant_id: str
    ref_id: str
    payload_json: str  # the payload as JSON text, sent as it is stored
    callback_url: str | None
    scheduled_for: datetime  # the occurrence: stable across its retries
    attempt: int  # 1-based; also the fencing token for recording the outcome
    max_attempts: int | None
    signing_secret: str = field(repr=False)  # never printed
    previous_signing_secret: str | None = field(default=None, repr=False)  # during a rotation
    earlier_signing_secret: str | None = field(default=None, repr=False)  # rotated again within a grace
    picked_at: datetime | None = None  # the claim's token: outcomes are recorded only for it
    lease_deadline: float = math.inf  # time.monotonic() when the lease runs out
    due_at: datetime | None = None  # the fire_at it was claimed at (a retry's or deferral's time)
    timing: Timing = field(default_factory=Timing)
    contact_id: str | None = None  # the contact it is for (docs/audiences.md)
    timezone_source: str = "message"  # why timing.timezone: message, contact, phone, country, tenant
    broadcast_id: int | None = None  # its broadcast; with no contact, that broadcast's completion callback
    endpoint: str | None = None  # host:port of its callback (the claim's in-flight count)
    held_by_limit: bool = False  # a sending limit held it back: its lateness is the limit's doing
    endpoint_failures: int = 0  # its tenant endpoint's failures in a row when it was claimed
    circuit: str = "closed"  # closed, or half_open: this callback is the probe
    recipient: str | None = None  # whom the frequency caps count: its contact_id, else its recipient
    category: str = "transactional"
    cap: FrequencyCap | None = None  # its recipient's frequency cap for its category
    # Stable for one occurrence across all its retries, different for each occurrence. No '.' in
    # it: Standard Webhooks signs "{id}.{timestamp}.{body}". Computed once (headers, log, record).
    webhook_id: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "webhook_id", make_webhook_id(self.id, self.scheduled_for))

    @classmethod
    def from_row(cls, row: Mapping[str, Any], lease_deadline: float = math.inf) -> Job:
        return cls(
            id=row["id"],
            tenant_id=row["tenant_id"],
            ref_id=row["ref_id"],
            payload_json=row["payload"],
            callback_url=row["callback_url"],
            scheduled_for=row["scheduled_for"],
            attempt=row["attempts"],
            max_attempts=row["max_attempts"],
            signing_secret=row["signing_secret"],
            previous_signing_secret=row["previous_signing_secret"],
            earlier_signing_secret=row["earlier_signing_secret"],
            picked_at=row["picked_at"],
            lease_deadline=lease_deadline,
            due_at=row["fire_at"],
            timing=_timing(row),
            contact_id=row["contact_id"],
            timezone_source=row["timezone_source"] or "message",
            broadcast_id=row["broadcast_id"],
            endpoint=row.get("endpoint"),
            held_by_limit=bool(row.get("was_held")),
            endpoint_failures=row.get("endpoint_failures") or 0,
            circuit=row.get("circuit") or "closed",
            recipient=row.get("recipient"),
            category=row.get("category") or "transactional",
            cap=FrequencyCap.from_row(row),
        )

    @property
    def endpoint_unhealthy(self) -> bool:
        """Its endpoint was failing when it was claimed: its answer changes the endpoint's health."""
        return self.endpoint_failures > 0 or self.circuit != "closed"

    @property
    def completes_broadcast(self) -> bool:
        """The `broadcast.completed` callback of its broadcast, not a message to a contact."""
        return self.broadcast_id is not None and self.contact_id is None


@dataclass(frozen=True, slots=True)
class Unplanned:
    """A recurring row needing a new fire_at: never planned (fire_at None), or its occurrence was
    missed beyond the lookback. `db_now` is the database's clock when it was read."""

    id: int
    tenant_id: str
    ref_id: str
    fire_at: datetime | None
    db_now: datetime
    timing: Timing

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Unplanned:
        return cls(
            id=row["id"], tenant_id=row["tenant_id"], ref_id=row["ref_id"], fire_at=row["fire_at"],
            db_now=row["db_now"], timing=Timing.from_row(row),
        )


# The timing columns (queries.sql: timing_columns) but the tenant's own holidays.
_TIMING_COLUMNS = ("timezone", "cron", "rrule", "until", "max_runs", "runs", "calendar", "calendar_from_tenant",
                   "holiday_rule", "quiet_start", "quiet_end", "backfill", "max_lateness_s")
_TIMINGS_KEPT = 1024
_timings: dict[tuple[Any, ...], Timing] = {}


def _timing(row: Mapping[str, Any]) -> Timing:
    """Timing.from_row(row), one instance for all rows that time alike (a tenant's one-offs, most
    of a batch): Timing is immutable, and building one costs more than looking it up."""
    if row["holiday_days"] or row["holiday_names"]:  # a tenant's own days off: rarely shared
        return Timing.from_row(row)
    key = tuple([row[column] for column in _TIMING_COLUMNS])
    timing = _timings.get(key)
    if timing is None:
        if len(_timings) >= _TIMINGS_KEPT:
            _timings.clear()
        timing = _timings[key] = Timing.from_row(row)
    return timing


def make_webhook_id(message_id: int, occurrence: datetime) -> str:
    return f"msg_{message_id}_{round(occurrence.timestamp() * 1000)}"
