"""The claim loop's sleep between claims (worker.idle_delay)."""

import pytest

from reminderd.worker import WAKE_AFTER_DUE_S, idle_delay


def test_wakes_just_after_the_next_row_is_due_never_before() -> None:
    # Waking before it is due would claim nothing and pay a second claim.
    assert idle_delay(0.25, 0, poll_interval_s=2.0) == pytest.approx(0.25 + WAKE_AFTER_DUE_S)
    assert 0 < WAKE_AFTER_DUE_S <= 0.002  # and it adds no lateness to speak of


def test_never_sleeps_longer_than_the_poll_interval() -> None:
    assert idle_delay(30.0, 0, poll_interval_s=2.0) == 2.0
    assert idle_delay(None, 0, poll_interval_s=2.0) == 2.0


def test_a_row_due_now_is_looked_at_again_at_once() -> None:
    assert idle_delay(-0.5, 0, poll_interval_s=2.0) == pytest.approx(0.0005)


def test_a_due_row_that_cannot_be_claimed_backs_off() -> None:
    delays = [idle_delay(0.0, streak, poll_interval_s=10.0) for streak in (1, 2, 3, 4)]
    assert delays == sorted(delays) and delays[0] >= 0.01 and delays[-1] > delays[0]
    assert idle_delay(0.0, 20, poll_interval_s=2.0) == 2.0
