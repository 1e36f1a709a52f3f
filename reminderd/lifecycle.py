"""A message's statuses and the events that move it between them: one vocabulary for the
database (`scheduled_messages.status`, `last_event`), the audit trail (`reminderd.events`), the
daemon's log lines and its `reminderd_callbacks_total{outcome}` counter.

The values are the names PostgreSQL stores and docs/sql.md documents: users query them, so they
never change (tests compare them with the schema and the docs).
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """`scheduled_messages.status` (the status_is_known constraint)."""

    PENDING = "pending"
    PICKED = "picked"
    SENT = "sent"
    DEAD = "dead"
    CANCELLED = "cancelled"
    PAUSED = "paused"
    EXPIRED = "expired"
    FINISHED = "finished"
    AWAITING_APPROVAL = "awaiting_approval"  # a big broadcast waiting for a second person


class Event(StrEnum):
    """What happened to a message: `last_event`, and `reminderd.events.event` in the audit trail."""

    # Written by the SQL API and the triggers.
    CREATED = "created"
    REPLACED = "replaced"
    CANCELLED = "cancelled"
    PAUSED = "paused"
    RESUMED = "resumed"
    RESCHEDULED = "rescheduled"
    REQUEUED = "requeued"
    UPDATED = "updated"  # a plain UPDATE that did not say what it did
    SENT_NOW = "sent_now"  # due now (send_now); a recurring row's extra occurrence is created with it
    EDITED = "edited"  # a new payload (set_payload)
    REPLANNED = "replanned"  # its contact's (or tenant's) zone changed: placed again in the new one
    APPROVED = "approved"  # its broadcast was approved by a second person
    REJECTED = "rejected"  # its broadcast was rejected: cancelled
    # Written by the daemon after an attempt.
    FIRED = "fired"  # delivered; a recurring row moves on to its next occurrence
    RETRY_SCHEDULED = "retry_scheduled"
    DEAD_LETTERED = "dead_lettered"  # a recurring row's occurrence: the row moves on
    # Written by the daemon before any request (reminderd/schedule/timing.py's holds) or by housekeeping.
    DEFERRED = "deferred"  # quiet hours
    HOLIDAY_SKIPPED = "holiday_skipped"
    MISSED_SKIPPED = "missed_skipped"  # older missed occurrences passed over
    EXPIRED = "expired"  # too late for the backfill policy, or beyond the lookback
    FINISHED = "finished"  # end conditions: until, max_runs, the RRULE's end
    PLANNED = "planned"  # a recurring row's first fire_at
    LEASE_EXPIRED = "lease_expired"  # a row whose lease ran out, made due again
    RESCUED = "rescued"  # a dead daemon's row (its heartbeat stopped), made due again at once
    RELEASED = "released"  # handed back: at shutdown, or a claim whose reply was lost
    # Fair and bounded sending (migration 0010).
    HELD = "held"  # due, but a sending limit or a failing endpoint holds it back (the claim writes it)
    CAPPED = "capped"  # over its recipient's frequency cap: deferred or skipped (the tenant's policy)
    ENDPOINT_DISABLED = "endpoint_disabled"  # paused: its endpoint answered 410 or failed for days
