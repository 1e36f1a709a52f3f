"""What happens to a message after an attempt: sent, retried, dead-lettered, or moved to its next
occurrence. Pure: no database, no network, no clock."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime

from .callback import AttemptResult, iso_utc
from .cron import InvalidSchedule, next_fire
from .jobs import Job
from .retry import RetryPolicy


@dataclass(frozen=True, slots=True)
class Outcome:
    job: Job
    result: AttemptResult
    event: str  # delivered | retry | dead | advanced (a recurring occurrence dead-lettered)
    next_status: str
    next_fire_at: datetime | None = None  # None keeps fire_at (or uses retry_in_s)
    retry_in_s: float | None = None  # from the database clock at recording time
    next_scheduled_for: datetime | None = None
    reset_attempts: bool = False
    last_error: str | None = None


def decide(job: Job, result: AttemptResult, policy: RetryPolicy, rng: random.Random | None = None) -> Outcome:
    if result.delivered:
        if job.cron is None:
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
    if job.cron is None:
        return Outcome(job, result, "dead", "dead", last_error=f"{why}: {error}")
    return _next_occurrence(
        job, result, "advanced",
        last_error=f"occurrence {iso_utc(job.scheduled_for)} dead-lettered ({why}: {error})",
    )


def _next_occurrence(job: Job, result: AttemptResult, event: str, last_error: str | None) -> Outcome:
    """A recurring row goes back to pending at its next occurrence strictly after this one."""
    assert job.cron is not None
    try:
        following = next_fire(job.cron, job.timezone, job.scheduled_for)
    except InvalidSchedule as exc:
        return Outcome(job, result, "dead", "dead", last_error=f"cannot recur: {exc}")
    return Outcome(
        job, result, event, "pending",
        next_fire_at=following, reset_attempts=True, last_error=last_error,
    )


def preflight(job: Job) -> str | None:
    """Why a claimed row can never be sent as it stands (checked before any HTTP), or None."""
    if job.cron is not None:
        try:
            next_fire(job.cron, job.timezone, job.scheduled_for)
        except InvalidSchedule as exc:
            return str(exc)
    return None
