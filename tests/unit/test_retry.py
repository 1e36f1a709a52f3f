"""Unit tests for reminderd.retry: full-jitter exponential backoff, the cap, Retry-After, giving up."""

from __future__ import annotations

import random
import statistics

import pytest

from reminderd.retry import RetryPolicy, backoff_s

POLICY = RetryPolicy(base_s=5, cap_s=3600, max_attempts=8)
SEEDS = range(300)


def ceiling(attempt: int, policy: RetryPolicy = POLICY) -> float:
    return float(min(policy.cap_s, policy.base_s * 2 ** (attempt - 1)))


def delays(attempt: int, *, retry_after_s: float | None = None, policy: RetryPolicy = POLICY) -> list[float]:
    """One delay per seed, each drawn from its own seeded generator."""
    return [policy.delay_s(attempt, retry_after_s=retry_after_s, rng=random.Random(seed)) for seed in SEEDS]


# Full jitter


@pytest.mark.parametrize("attempt", range(1, 16))
def test_delay_stays_within_full_jitter_range(attempt: int) -> None:
    drawn = delays(attempt)
    assert all(0 <= d <= ceiling(attempt) for d in drawn)


@pytest.mark.parametrize("attempt", [1, 3, 6])
def test_delay_uses_the_whole_range_not_just_the_ceiling(attempt: int) -> None:
    drawn = delays(attempt)
    assert min(drawn) < 0.1 * ceiling(attempt)
    assert max(drawn) > 0.9 * ceiling(attempt)
    assert len(set(drawn)) == len(drawn)  # jittered, not one fixed value


def test_same_seed_gives_same_delay() -> None:
    assert POLICY.delay_s(4, rng=random.Random(7)) == POLICY.delay_s(4, rng=random.Random(7))


def test_mean_delay_grows_with_attempt_until_the_cap() -> None:
    # Ceilings 5, 10, 20, … 2560, then the 3600 cap from attempt 11 on.
    means = {attempt: statistics.fmean(delays(attempt)) for attempt in range(1, 21)}
    assert all(means[attempt + 1] > means[attempt] for attempt in range(1, 11))
    # Each mean is close to half its ceiling.
    assert means[1] == pytest.approx(2.5, rel=0.15)
    assert means[9] == pytest.approx(640, rel=0.15)
    assert all(means[attempt] == pytest.approx(1800, rel=0.15) for attempt in range(11, 21))


@pytest.mark.parametrize("attempt", [11, 12, 20, 63, 64, 1000, 10_000])
def test_delay_is_capped_for_late_attempts(attempt: int) -> None:
    drawn = delays(attempt)
    assert all(0 <= d <= POLICY.cap_s for d in drawn)
    assert max(drawn) > 0.9 * POLICY.cap_s


def test_small_cap_limits_even_the_first_attempt() -> None:
    policy = RetryPolicy(base_s=60, cap_s=10, max_attempts=3)
    assert all(0 <= d <= 10 for d in delays(1, policy=policy))


# Retry-After


def test_retry_after_is_a_floor_above_the_jitter() -> None:
    # Attempt 1 jitters within [0, 5]; a receiver asking for 120 s gets at least that.
    assert all(d == 120 for d in delays(1, retry_after_s=120))


def test_retry_after_below_the_jitter_keeps_the_jitter() -> None:
    drawn = delays(8, retry_after_s=30)  # ceiling 640
    assert all(30 <= d <= ceiling(8) for d in drawn)
    assert max(drawn) > 300


def test_retry_after_is_capped_by_cap() -> None:
    assert all(d == POLICY.cap_s for d in delays(1, retry_after_s=7 * 86400))


def test_retry_after_zero_changes_nothing() -> None:
    assert delays(3, retry_after_s=0) == delays(3)


# Giving up


@pytest.mark.parametrize(("attempt", "expected"), [(1, False), (7, False), (8, True), (9, True)])
def test_gives_up_at_default_max_attempts(attempt: int, expected: bool) -> None:
    assert POLICY.gives_up(attempt) is expected
    assert POLICY.gives_up(attempt, None) is expected


@pytest.mark.parametrize(("attempt", "expected"), [(2, False), (3, True)])
def test_row_max_attempts_lower_than_default_wins(attempt: int, expected: bool) -> None:
    assert POLICY.gives_up(attempt, max_attempts=3) is expected


@pytest.mark.parametrize(("attempt", "expected"), [(8, False), (19, False), (20, True)])
def test_row_max_attempts_higher_than_default_wins(attempt: int, expected: bool) -> None:
    assert POLICY.gives_up(attempt, max_attempts=20) is expected


def test_single_attempt_row_gives_up_after_the_first() -> None:
    assert POLICY.gives_up(1, max_attempts=1) is True


# backoff_s: the one backoff the daemon uses for callbacks, database waits and connecting


@pytest.mark.parametrize("attempt", [1, 2, 5, 9, 40])
def test_half_jitter_waits_between_half_the_ceiling_and_the_ceiling(attempt: int) -> None:
    ceiling_s = min(30.0, 0.4 * 2 ** (attempt - 1))
    drawn = [backoff_s(attempt, base_s=0.4, cap_s=30, jitter="half", rng=random.Random(s)) for s in SEEDS]
    assert all(ceiling_s / 2 <= d <= ceiling_s for d in drawn)
    assert max(drawn) - min(drawn) > 0.4 * ceiling_s  # spread over the range, not one value


def test_no_jitter_waits_the_ceiling_doubling_up_to_the_cap() -> None:
    waits = [backoff_s(attempt, base_s=0.5, cap_s=10, jitter="none") for attempt in range(1, 8)]
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_full_jitter_is_what_the_retry_policy_draws() -> None:
    for attempt in (1, 4, 12):
        expected = backoff_s(attempt, base_s=5, cap_s=3600, jitter="full", rng=random.Random(3))
        assert POLICY.delay_s(attempt, rng=random.Random(3)) == expected


@pytest.mark.parametrize("attempt", [0, -3, 10_000])
def test_backoff_never_overflows_or_goes_below_the_first_step(attempt: int) -> None:
    wait = backoff_s(attempt, base_s=1, cap_s=60, jitter="none")
    assert wait == (1.0 if attempt < 1 else 60.0)
