"""What happens to a claimed message: held back before any HTTP (deferred, moved off a holiday,
expired as too late, finished), or after an attempt sent, retried, dead-lettered, or moved to its
next occurrence; and what a recurring row waiting to be planned becomes. Pure: no database, no
network, no clock (`now` is passed in)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime

from .duration import in_words
from .jobs import Job, Unplanned
from .lifecycle import Event, Status
from .retry import RetryPolicy
from .schedule import Hold, InvalidSchedule, first_occurrence, following, hold, iso_utc


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one attempt achieved.

    `permanent`: no retry can help (a 4xx); `poison`: the row itself can never be delivered as it
    stands; `refused`: the URL check or the SSRF guard refused its callback address before any
    connection, a kind of poison (metrics count these by this field).
    """

    delivered: bool
    status_code: int | None
    error: str | None
    duration_ms: int
    permanent: bool = False
    poison: bool = False
    retry_after_s: float | None = None
    refused: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    job: Job
    result: AttemptResult | None  # None: held back before any HTTP request (no attempt logged)
    event: Event  # what the audit trail records
    next_status: Status
    next_fire_at: datetime | None = None  # None keeps fire_at (or uses retry_in_s)
    retry_in_s: float | None = None  # from the database clock at recording time
    next_scheduled_for: datetime | None = None
    reset_attempts: bool = False
    refund_attempt: bool = False  # the claim counted an attempt that was not made
    ran: bool = False  # a recurring occurrence fired (delivered or given up): counts for max_runs
    last_error: str | None = None

    @classmethod
    def dead(cls, job: Job, result: AttemptResult | None, reason: str) -> Outcome:
        """Dead-lettered with `reason`; requeue-able once whatever is wrong is fixed."""
        return cls(job, result, Event.DEAD_LETTERED, Status.DEAD, last_error=reason)

    @property
    def delivered(self) -> bool:
        return self.result is not None and self.result.delivered


def before_sending(job: Job, now: datetime) -> Outcome | None:
    """The outcome of a claimed message that must not be sent at `now`, or None to send it."""
    problem = preflight(job)
    if problem is not None:
        return Outcome.dead(job, None, problem)
    try:
        held = hold(job.timing, occurrence=job.scheduled_for, due_at=job.due_at or job.scheduled_for,
                    attempt=job.attempt, now=now, held_by_limit=job.held_by_limit)
    except InvalidSchedule as exc:
        return Outcome.dead(job, None, str(exc))
    return None if held is None else _held(job, held)


def preflight(job: Job) -> str | None:
    """Why a claimed row can never be sent as it stands (checked before any HTTP), or None."""
    try:
        job.timing.check()
    except InvalidSchedule as exc:
        return str(exc)
    return None


def _held(job: Job, held: Hold) -> Outcome:
    return Outcome(
        job, None, Event(held.event), Status(held.status),
        next_fire_at=held.fire_at,
        next_scheduled_for=held.occurrence,
        reset_attempts=not held.keeps_attempt_count,
        refund_attempt=held.keeps_attempt_count,
        last_error=held.reason,
    )


def decide(job: Job, result: AttemptResult, policy: RetryPolicy, rng: random.Random | None = None) -> Outcome:
    if result.delivered:
        if not job.timing.recurring:
            return Outcome(job, result, Event.FIRED, Status.SENT)
        return _next_occurrence(job, result, Event.FIRED, last_error=None)

    error = result.error or "failed"
    if result.poison:
        return Outcome.dead(job, result, error)
    if not result.permanent and not policy.gives_up(job.attempt, job.max_attempts):
        delay_s = policy.delay_s(job.attempt, retry_after_s=result.retry_after_s, rng=rng)
        return Outcome(
            job, result, Event.RETRY_SCHEDULED, Status.PENDING,
            retry_in_s=delay_s,
            next_scheduled_for=job.scheduled_for,
            last_error=f"attempt {job.attempt} failed: {error}; retrying in {delay_s:.1f}s",
        )

    why = "permanent failure" if result.permanent else f"gave up after {job.attempt} attempts"
    if not job.timing.recurring:
        return Outcome.dead(job, result, f"{why}: {error}")
    return _next_occurrence(  # this occurrence is dead-lettered; the row moves on
        job, result, Event.DEAD_LETTERED,
        last_error=f"occurrence {iso_utc(job.scheduled_for)} dead-lettered ({why}: {error})",
    )


def _next_occurrence(job: Job, result: AttemptResult, event: Event, last_error: str | None) -> Outcome:
    """A recurring row goes back to pending at its next occurrence strictly after this one (past
    holidays it skips), or ends 'finished' (until passed, max_runs reached, RRULE exhausted)."""
    try:
        instant, note = following(job.timing, job.scheduled_for)
    except InvalidSchedule as exc:
        why = f"cannot recur: {exc}"
        if result.delivered:  # said, so that nobody requeues it to send it again by mistake
            why = f"{delivered_as(job, result)}, but {why}"
        return Outcome(job, result, Event.DEAD_LETTERED, Status.DEAD, last_error=why, ran=True)
    last_error = "; ".join(text for text in (last_error, note) if text) or None
    if instant is None:
        return Outcome(job, result, event, Status.FINISHED, last_error=last_error, ran=True)
    return Outcome(
        job, result, event, Status.PENDING,
        next_fire_at=instant, reset_attempts=True, last_error=last_error, ran=True,
    )


def delivered_as(job: Job, result: AttemptResult) -> str:
    """How a dead reason says that the receiver accepted this attempt (reminderd.died_delivered)."""
    return f"delivered (HTTP {result.status_code}, attempt {job.attempt})"


def unrecorded(outcome: Outcome, reason: str) -> Outcome:
    """The dead letter written instead of an outcome the database refused (`reason`, its message):
    requeue-able once the row is fixed. One the receiver accepted says so, with its HTTP status
    and attempt, so that nobody sends it again by mistake."""
    job, result = outcome.job, outcome.result
    if result is None or not result.delivered:
        return Outcome.dead(job, result, f"the outcome could not be recorded: {reason}")
    return Outcome.dead(job, result, f"{delivered_as(job, result)}, but its outcome could not be recorded: "
                                     f"{reason}; dead-lettered so that it is not sent again")


def capped(job: Job, frees_at: datetime | None) -> Outcome:
    """A message over its recipient's frequency cap, before any request: deferred until the cap
    allows it (`frees_at`), or skipped (a one-off is cancelled, a recurring row moves to its next
    occurrence), as the tenant's policy says."""
    cap = job.cap
    assert cap is not None
    whom = "contact" if job.contact_id is not None else "recipient"
    over = (f"{whom} {job.recipient} already got {cap.max_messages} {job.category} message(s) in the "
            f"last {in_words(cap.per_s)} (frequency cap)")
    if cap.policy == "defer" and frees_at is not None:
        return Outcome(
            job, None, Event.CAPPED, Status.PENDING,
            next_fire_at=frees_at, next_scheduled_for=job.scheduled_for,
            refund_attempt=True, last_error=f"deferred to {iso_utc(frees_at)}: {over}",
        )
    if not job.timing.recurring:
        return Outcome(job, None, Event.CAPPED, Status.CANCELLED, refund_attempt=True,
                       last_error=f"skipped: {over}; the tenant's policy is skip")
    try:
        instant, _ = job.timing.next_after(job.scheduled_for)
    except InvalidSchedule as exc:
        return Outcome.dead(job, None, f"cannot recur: {exc}")
    note = f"occurrence {iso_utc(job.scheduled_for)} skipped: {over}; the tenant's policy is skip"
    if instant is None:
        return Outcome(job, None, Event.CAPPED, Status.FINISHED, last_error=note)
    return Outcome(job, None, Event.CAPPED, Status.PENDING, next_fire_at=instant, reset_attempts=True,
                   last_error=note)


def handed_back(job: Job, reason: str, *, retry_in_s: float | None = None) -> Outcome:
    """A claimed message this daemon does not send after all (too little of its lease left for a
    request, its frequency cap not checked): pending again with its occurrence (same webhook-id),
    and the attempt its claim counted given back, since none was made, so `attempts`, the
    callback's `attempt` and max_attempts count real attempts only. Due where it was (its
    lateness still counted from then), or in `retry_in_s`."""
    return Outcome(
        job, None, Event.RELEASED, Status.PENDING,
        retry_in_s=retry_in_s, next_scheduled_for=job.scheduled_for, refund_attempt=True, last_error=reason,
    )


def cut_short(job: Job, duration_ms: int, shutdown_timeout_s: float) -> Outcome:
    """A request still unanswered when the shutdown's grace (REMINDERD_SHUTDOWN_TIMEOUT) ran out:
    it may have reached the receiver, so it is an attempt, logged and counted like any other;
    the row is handed back pending with its occurrence (same webhook-id), due again now."""
    error = (f"cut short at shutdown: no answer within REMINDERD_SHUTDOWN_TIMEOUT "
             f"({shutdown_timeout_s:g}s)")
    return Outcome(
        job, AttemptResult(False, None, error, duration_ms), Event.RELEASED, Status.PENDING,
        retry_in_s=0.0, next_scheduled_for=job.scheduled_for,
        last_error=f"attempt {job.attempt} {error}; handed back, due again now",
    )


# Planning recurring rows ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    """A recurring row's next fire_at, or its dead-letter reason when it cannot recur."""

    message_id: int
    seen_fire_at: datetime | None  # the fire_at it was read with: the write's fencing token
    next_fire_at: datetime | None
    next_status: Status
    last_error: str | None

    @classmethod
    def dead(cls, row: Unplanned, reason: str) -> Plan:
        return cls(row.id, row.fire_at, None, Status.DEAD, reason)

    @property
    def event(self) -> Event:
        """What the audit trail calls this change."""
        if self.next_status is Status.DEAD:
            return Event.DEAD_LETTERED
        if self.next_status is Status.FINISHED:
            return Event.FINISHED
        return Event.PLANNED if self.seen_fire_at is None else Event.MISSED_SKIPPED


def plan(row: Unplanned, now: datetime, *, lookback_s: float) -> Plan:
    """A recurring row's first occurrence after `now`: never planned yet (fire_at NULL), or its
    occurrence was missed beyond the lookback, the hard limit, and is skipped."""
    seen = row.fire_at
    try:
        row.timing.check()
        next_fire_at, note = first_occurrence(row.timing, now)
    except InvalidSchedule as exc:
        return Plan.dead(row, f"cannot schedule: {exc}")
    if seen is not None:
        missed = (
            f"missed occurrence due {seen.isoformat()} ({(now - seen).total_seconds():.0f}s late, "
            f"beyond REMINDERD_LOOKBACK={lookback_s:g}s, the hard limit): skipped to the next one"
        )
        note = f"{missed}; {note}" if note else missed
    return Plan(row.id, seen, next_fire_at, Status.PENDING if next_fire_at else Status.FINISHED, note)
