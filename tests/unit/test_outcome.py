"""Unit tests for reminderd.outcome: what a row becomes after one attempt (pure: no DB, no clock)."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from support import make_job

from reminderd.jobs import Job, Unplanned
from reminderd.lifecycle import Event, Status
from reminderd.outcome import AttemptResult, Plan, before_sending, decide, handed_back, plan, preflight
from reminderd.outcome import cut_short as cut_short_at_shutdown
from reminderd.retry import RetryPolicy
from reminderd.schedule import QuietHours, Timing

POLICY = RetryPolicy(base_s=5, cap_s=3600, max_attempts=8)
OCCURRENCE = datetime(2026, 3, 10, 3, 30, tzinfo=UTC)  # 09:00 in Asia/Kolkata

DELIVERED = AttemptResult(delivered=True, status_code=204, error=None, duration_ms=12)
UNAVAILABLE = AttemptResult(delivered=False, status_code=503, error="HTTP 503: busy", duration_ms=30)
TIMED_OUT = AttemptResult(delivered=False, status_code=None, error="timed out after 10s", duration_ms=10_000)
NOT_FOUND = AttemptResult(
    delivered=False, status_code=404, error="HTTP 404: no such hook", duration_ms=8, permanent=True
)
REFUSED = AttemptResult(
    delivered=False,
    status_code=None,
    error="refused: callback address 10.0.0.1 is not a public address",
    duration_ms=0,
    permanent=True,
    poison=True,
    refused=True,
)


def one_off(timezone: str = "UTC", **changes: Any) -> Job:
    return make_job(**{"id": 7, "payload_json": '{"n": 1}', "scheduled_for": OCCURRENCE,
                       "timing": Timing(timezone=timezone), **changes})


def recurring(cron: str = "0 9 * * *", timezone: str = "Asia/Kolkata", **changes: Any) -> Job:
    return replace(one_off(timing=Timing(cron=cron, timezone=timezone)), **changes)


def rng() -> random.Random:
    return random.Random(1234)


# Delivered


def test_delivered_one_off_is_sent() -> None:
    outcome = decide(one_off(), DELIVERED, POLICY, rng())
    assert (outcome.event, outcome.next_status) == (Event.FIRED, Status.SENT)
    assert outcome.next_fire_at is None and outcome.retry_in_s is None
    assert outcome.last_error is None
    assert outcome.job == one_off() and outcome.result is DELIVERED


def test_delivered_cron_goes_back_to_pending_at_its_next_occurrence() -> None:
    outcome = decide(recurring(attempt=3), DELIVERED, POLICY, rng())
    assert (outcome.event, outcome.next_status) == (Event.FIRED, Status.PENDING)
    assert outcome.next_fire_at == datetime(2026, 3, 11, 3, 30, tzinfo=UTC)  # next 09:00 in Kolkata
    assert outcome.next_fire_at > OCCURRENCE
    assert outcome.reset_attempts is True
    assert outcome.last_error is None
    assert outcome.retry_in_s is None


def test_next_occurrence_follows_the_rows_timezone_across_dst() -> None:
    # 09:00 New York: 14:00Z in winter; DST starts on 2026-03-08, so the next one is 13:00Z.
    job = recurring(timezone="America/New_York", scheduled_for=datetime(2026, 3, 7, 14, 0, tzinfo=UTC))
    outcome = decide(job, DELIVERED, POLICY, rng())
    assert outcome.next_fire_at == datetime(2026, 3, 8, 13, 0, tzinfo=UTC)


def test_next_occurrence_is_strictly_after_the_one_just_sent() -> None:
    job = recurring(cron="* * * * *", timezone="UTC")
    outcome = decide(job, DELIVERED, POLICY, rng())
    assert outcome.next_fire_at == datetime(2026, 3, 10, 3, 31, tzinfo=UTC)


# Retried


@pytest.mark.parametrize("result", [UNAVAILABLE, TIMED_OUT], ids=["503", "timeout"])
def test_transient_failure_is_retried_for_the_same_occurrence(result: AttemptResult) -> None:
    outcome = decide(one_off(), result, POLICY, rng())
    assert (outcome.event, outcome.next_status) == (Event.RETRY_SCHEDULED, Status.PENDING)
    assert outcome.next_scheduled_for == OCCURRENCE
    assert outcome.retry_in_s is not None and 0 <= outcome.retry_in_s <= 5
    assert outcome.next_fire_at is None
    assert outcome.reset_attempts is False
    assert outcome.last_error is not None
    assert outcome.last_error.startswith(f"attempt 1 failed: {result.error}; retrying in ")


@pytest.mark.parametrize("attempt", [1, 2, 4, 7])
def test_retry_delay_is_within_the_backoff_bounds(attempt: int) -> None:
    for seed in range(100):
        outcome = decide(one_off(attempt=attempt), UNAVAILABLE, POLICY, random.Random(seed))
        assert outcome.retry_in_s is not None
        assert 0 <= outcome.retry_in_s <= min(3600, 5 * 2 ** (attempt - 1))


def test_retry_honours_retry_after_from_the_receiver() -> None:
    result = replace(UNAVAILABLE, retry_after_s=90.0)
    outcome = decide(one_off(), result, POLICY, rng())
    assert outcome.retry_in_s == 90.0
    assert outcome.last_error is not None and outcome.last_error.endswith("retrying in 90.0s")


def test_failure_without_an_error_text_still_explains_itself() -> None:
    outcome = decide(one_off(), replace(UNAVAILABLE, error=None), POLICY, rng())
    assert outcome.last_error is not None and outcome.last_error.startswith("attempt 1 failed: failed;")


def test_cron_row_retries_its_current_occurrence_not_the_next() -> None:
    outcome = decide(recurring(attempt=2), UNAVAILABLE, POLICY, rng())
    assert outcome.event == Event.RETRY_SCHEDULED
    assert outcome.next_scheduled_for == OCCURRENCE
    assert outcome.next_fire_at is None and outcome.reset_attempts is False


# Dead-lettered


def test_permanent_failure_dead_letters_at_once() -> None:
    outcome = decide(one_off(attempt=1), NOT_FOUND, POLICY, rng())
    assert (outcome.event, outcome.next_status) == (Event.DEAD_LETTERED, Status.DEAD)
    assert outcome.last_error == "permanent failure: HTTP 404: no such hook"
    assert outcome.retry_in_s is None


def test_gives_up_after_default_max_attempts() -> None:
    outcome = decide(one_off(attempt=8), UNAVAILABLE, POLICY, rng())
    assert (outcome.event, outcome.next_status) == (Event.DEAD_LETTERED, Status.DEAD)
    assert outcome.last_error == "gave up after 8 attempts: HTTP 503: busy"


def test_last_attempt_but_one_still_retries() -> None:
    assert decide(one_off(attempt=7), UNAVAILABLE, POLICY, rng()).event == Event.RETRY_SCHEDULED


def test_row_max_attempts_below_default_is_respected() -> None:
    outcome = decide(one_off(attempt=3, max_attempts=3), UNAVAILABLE, POLICY, rng())
    assert outcome.event == Event.DEAD_LETTERED
    assert outcome.last_error == "gave up after 3 attempts: HTTP 503: busy"


def test_row_max_attempts_above_default_is_respected() -> None:
    eighth, twelfth = one_off(attempt=8, max_attempts=12), one_off(attempt=12, max_attempts=12)
    assert decide(eighth, UNAVAILABLE, POLICY, rng()).event == Event.RETRY_SCHEDULED
    assert decide(twelfth, UNAVAILABLE, POLICY, rng()).event == Event.DEAD_LETTERED


def test_cron_occurrence_that_gives_up_advances_to_the_next_occurrence() -> None:
    outcome = decide(recurring(attempt=8), UNAVAILABLE, POLICY, rng())
    assert (outcome.event, outcome.next_status) == (Event.DEAD_LETTERED, Status.PENDING)
    assert outcome.next_fire_at == datetime(2026, 3, 11, 3, 30, tzinfo=UTC)
    assert outcome.reset_attempts is True
    assert outcome.last_error == (
        "occurrence 2026-03-10T03:30:00.000Z dead-lettered (gave up after 8 attempts: HTTP 503: busy)"
    )


def test_cron_occurrence_with_permanent_failure_advances() -> None:
    outcome = decide(recurring(), NOT_FOUND, POLICY, rng())
    assert (outcome.event, outcome.next_status) == (Event.DEAD_LETTERED, Status.PENDING)
    assert outcome.next_fire_at == datetime(2026, 3, 11, 3, 30, tzinfo=UTC)
    assert outcome.last_error is not None and "permanent failure: HTTP 404" in outcome.last_error


@pytest.mark.parametrize("job", [one_off(), recurring()], ids=["one-off", "cron"])
def test_poison_result_is_dead_even_for_cron_rows(job: Job) -> None:
    outcome = decide(job, REFUSED, POLICY, rng())
    assert (outcome.event, outcome.next_status) == (Event.DEAD_LETTERED, Status.DEAD)
    assert outcome.next_fire_at is None
    assert outcome.reset_attempts is False
    assert outcome.last_error == REFUSED.error


def test_delivered_cron_row_that_cannot_recur_is_dead() -> None:
    outcome = decide(recurring(timezone="Mars/Olympus_Mons"), DELIVERED, POLICY, rng())
    assert (outcome.event, outcome.next_status) == (Event.DEAD_LETTERED, Status.DEAD)
    assert outcome.last_error == ('delivered (HTTP 204, attempt 1), but cannot recur: unknown timezone '
                                  '"Mars/Olympus_Mons"')


# Preflight


def test_preflight_passes_a_valid_cron_row() -> None:
    assert preflight(recurring()) is None


def test_preflight_passes_a_one_off_row_whatever_its_timezone() -> None:
    assert preflight(one_off(timezone="Not/A_Zone")) is None


@pytest.mark.parametrize("cron", ["61 * * * *", "* * * *", "0 9 31 2 *", "R * * * *"])
def test_preflight_explains_an_invalid_cron(cron: str) -> None:
    problem = preflight(recurring(cron=cron))
    assert problem is not None
    assert problem.startswith(f'invalid cron "{cron}"')


def test_preflight_explains_an_unknown_timezone_on_a_cron_row() -> None:
    assert preflight(recurring(timezone="Mars/Olympus_Mons")) == 'unknown timezone "Mars/Olympus_Mons"'


# Held back before sending: the hold's event and status, in the one vocabulary


def test_quiet_hours_hold_a_message_back_as_deferred() -> None:
    job = one_off(timing=Timing(quiet=QuietHours(time(0, 0), time(23, 59))), due_at=OCCURRENCE)
    held = before_sending(job, OCCURRENCE)
    assert held is not None and held.result is None
    assert (held.event, held.next_status) == (Event.DEFERRED, Status.PENDING)
    assert type(held.event) is Event and type(held.next_status) is Status
    assert held.refund_attempt is True  # the claim counted an attempt that was not made


# Planning recurring rows (pure: `now` passed in)

NOW = datetime(2026, 3, 10, 1, 0, tzinfo=UTC)  # 06:30 in Asia/Kolkata


def unplanned(fire_at: datetime | None = None, **timing: Any) -> Unplanned:
    return Unplanned(id=5, tenant_id="acme", ref_id="daily", fire_at=fire_at, db_now=NOW,
                     timing=Timing(**{"cron": "0 9 * * *", "timezone": "Asia/Kolkata", **timing}))


def test_a_never_planned_row_gets_its_first_occurrence_after_now() -> None:
    planned = plan(unplanned(), NOW, lookback_s=86400)
    assert planned == Plan(5, None, datetime(2026, 3, 10, 3, 30, tzinfo=UTC), Status.PENDING, None)
    assert planned.event is Event.PLANNED


def test_an_occurrence_missed_beyond_the_lookback_is_skipped_with_the_reason() -> None:
    missed = NOW - timedelta(days=2)
    planned = plan(unplanned(fire_at=missed), NOW, lookback_s=86400)
    assert (planned.seen_fire_at, planned.next_fire_at) == (missed, datetime(2026, 3, 10, 3, 30, tzinfo=UTC))
    assert planned.event is Event.MISSED_SKIPPED and planned.next_status is Status.PENDING
    assert planned.last_error == (
        f"missed occurrence due {missed.isoformat()} (172800s late, beyond REMINDERD_LOOKBACK=86400s, "
        "the hard limit): skipped to the next one"
    )


def test_a_row_that_cannot_be_scheduled_is_dead_lettered() -> None:
    planned = plan(unplanned(cron="61 * * * *"), NOW, lookback_s=86400)
    assert (planned.next_status, planned.next_fire_at) == (Status.DEAD, None)
    assert planned.event is Event.DEAD_LETTERED
    assert planned.last_error is not None and planned.last_error.startswith('cannot schedule: invalid cron "61')


def test_a_row_at_its_max_runs_is_finished() -> None:
    planned = plan(unplanned(max_runs=2, runs=2), NOW, lookback_s=86400)
    assert (planned.next_status, planned.next_fire_at, planned.event) == (Status.FINISHED, None, Event.FINISHED)
    assert planned.last_error == "finished: ran 2 time(s) (max_runs)"


# Handed back unsent


@pytest.mark.parametrize("job", [one_off(attempt=2), recurring(attempt=1)], ids=["one-off retry", "recurring"])
def test_a_job_handed_back_unsent_gives_its_attempt_back_and_keeps_its_occurrence(job: Job) -> None:
    outcome = handed_back(job, "not sent: no lease left")
    assert (outcome.event, outcome.next_status) == (Event.RELEASED, Status.PENDING)
    assert outcome.result is None and not outcome.delivered  # no attempt is logged
    assert outcome.refund_attempt and not outcome.reset_attempts and not outcome.ran
    assert outcome.next_scheduled_for == job.scheduled_for  # the same webhook-id when it is sent
    assert outcome.next_fire_at is None and outcome.retry_in_s is None  # due where it was: lateness counts on
    assert outcome.last_error == "not sent: no lease left"


def test_a_job_handed_back_for_later_is_due_then() -> None:
    outcome = handed_back(one_off(), "not sent: its cap could not be checked", retry_in_s=5.0)
    assert outcome.retry_in_s == 5.0 and outcome.refund_attempt


# Cut short at shutdown


@pytest.mark.parametrize("job", [one_off(attempt=2), recurring(attempt=1)], ids=["one-off retry", "recurring"])
def test_a_request_cut_short_at_shutdown_is_an_attempt_and_its_row_is_due_again_now(job: Job) -> None:
    outcome = cut_short_at_shutdown(job, 312, shutdown_timeout_s=0.3)
    assert (outcome.event, outcome.next_status) == (Event.RELEASED, Status.PENDING)
    assert outcome.result is not None and not outcome.delivered  # an attempt, logged in deliveries
    assert (outcome.result.status_code, outcome.result.duration_ms) == (None, 312)
    assert outcome.result.error == "cut short at shutdown: no answer within REMINDERD_SHUTDOWN_TIMEOUT (0.3s)"
    assert not outcome.refund_attempt and not outcome.reset_attempts and not outcome.ran  # the attempt counts
    assert outcome.next_scheduled_for == job.scheduled_for  # the same webhook-id when it is sent again
    assert outcome.next_fire_at is None and outcome.retry_in_s == 0.0  # due again now
    assert outcome.last_error == (f"attempt {job.attempt} cut short at shutdown: no answer within "
                                  "REMINDERD_SHUTDOWN_TIMEOUT (0.3s); handed back, due again now")
