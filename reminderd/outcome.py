"""What happens to a claimed message: held back before any HTTP (deferred, moved off a holiday,
expired as too late, finished), or after an attempt sent, retried, dead-lettered, or moved to its
next occurrence. Pure: no database, no network, no clock."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime

from .callback import AttemptResult
from .jobs import Job
from .retry import RetryPolicy
from .schedule import Hold, InvalidSchedule, following, hold, iso_utc


@dataclass(frozen=True, slots=True)
class Outcome:
    job: Job
    result: AttemptResult | None  # None: held back before any HTTP request (no attempt logged)
    # delivered | retry | dead | advanced (a recurring occurrence dead-lettered) | or a Hold's event:
    # deferred | holiday_skipped | missed_skipped | expired | finished
    event: str
    next_status: str
    next_fire_at: datetime | None = None  # None keeps fire_at (or uses retry_in_s)
    retry_in_s: float | None = None  # from the database clock at recording time
    next_scheduled_for: datetime | None = None
    reset_attempts: bool = False
    refund_attempt: bool = False  # the claim counted an attempt that was not made
    ran: bool = False  # a recurring occurrence fired (delivered or given up): counts for max_runs
    last_error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.result is not None and self.result.delivered


def before_sending(job: Job, now: datetime) -> Outcome | None:
    """The outcome of a claimed message that must not be sent at `now`, or None to send it."""
    problem = preflight(job)
    if problem is not None:
        return Outcome(job, None, "dead", "dead", last_error=problem)
    try:
        held = hold(job.timing, occurrence=job.scheduled_for, due_at=job.due_at or job.scheduled_for,
                    attempt=job.attempt, now=now)
    except InvalidSchedule as exc:
        return Outcome(job, None, "dead", "dead", last_error=str(exc))
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
        job, None, held.event, held.status,
        next_fire_at=held.fire_at,
        next_scheduled_for=held.occurrence,
        reset_attempts=not held.keeps_attempt_count,
        refund_attempt=held.keeps_attempt_count,
        last_error=held.reason,
    )


def decide(job: Job, result: AttemptResult, policy: RetryPolicy, rng: random.Random | None = None) -> Outcome:
    if result.delivered:
        if not job.timing.recurring:
            return Outcome(job, result, "delivered", "sent")
        return _next_occurrence(job, result, "delivered", last_error=None)

    error = result.error or "failed"
    if result.poison:
        return Outcome(job, result, "dead", "dead", last_error=error)
    if not result.permanent and not policy.gives_up(job.attempt, job.max_attempts):
        delay_s = policy.delay_s(job.attempt, retry_after_s=result.retry_after_s, rng=rng)
        return Outcome(
            job, result, "retry", "pending",
            retry_in_s=delay_s,
            next_scheduled_for=job.scheduled_for,
            last_error=f"attempt {job.attempt} failed: {error}; retrying in {delay_s:.1f}s",
        )

    why = "permanent failure" if result.permanent else f"gave up after {job.attempt} attempts"
    if not job.timing.recurring:
        return Outcome(job, result, "dead", "dead", last_error=f"{why}: {error}")
    return _next_occurrence(
        job, result, "advanced",
        last_error=f"occurrence {iso_utc(job.scheduled_for)} dead-lettered ({why}: {error})",
    )


def _next_occurrence(job: Job, result: AttemptResult, event: str, last_error: str | None) -> Outcome:
    """A recurring row goes back to pending at its next occurrence strictly after this one (past
    holidays it skips), or ends 'finished' (until passed, max_runs reached, RRULE exhausted)."""
    try:
        instant, note = following(job.timing, job.scheduled_for)
    except InvalidSchedule as exc:
        return Outcome(job, result, "dead", "dead", last_error=f"cannot recur: {exc}", ran=True)
    last_error = "; ".join(text for text in (last_error, note) if text) or None
    if instant is None:
        return Outcome(job, result, event, "finished", last_error=last_error, ran=True)
    return Outcome(
        job, result, event, "pending",
        next_fire_at=instant, reset_attempts=True, last_error=last_error, ran=True,
    )
