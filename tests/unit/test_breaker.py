"""The circuit breaker and endpoint disabling, pure: state in, attempts' results in, `now` in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from reminderd.breaker import BreakerPolicy, EndpointHealth, Observation, observe

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
POLICY = BreakerPolicy(failures_to_open=3, open_s=30, max_open_s=240, disable_after_s=5 * 86400)
HEALTHY = EndpointHealth("acme", "hooks.example.com:443")


def failures(count: int, error: str = "HTTP 503") -> Observation:
    seen = Observation("acme", "hooks.example.com:443")
    for _ in range(count):
        seen = seen.merged(delivered=False, failed=True, gone=False, error=error)
    return seen


def delivered() -> Observation:
    return Observation("acme", "hooks.example.com:443").merged(
        delivered=True, failed=False, gone=False, error=None
    )


def test_failures_below_the_threshold_only_count() -> None:
    health, change = observe(HEALTHY, failures(2), NOW, POLICY)
    assert change is None and health.state(NOW) == "closed"
    assert (health.consecutive_failures, health.failing_since, health.last_error) == (2, NOW, "HTTP 503")


def test_the_threshold_opens_the_circuit_for_the_open_period() -> None:
    health, change = observe(HEALTHY, failures(3), NOW, POLICY)
    assert change == "opened" and health.state(NOW) == "open"
    assert health.circuit_open_until == NOW + timedelta(seconds=30) and health.circuit_opens == 1
    assert health.state(NOW + timedelta(seconds=31)) == "half_open"


def test_a_failed_probe_opens_it_again_for_twice_as_long_up_to_the_cap() -> None:
    health, _ = observe(HEALTHY, failures(3), NOW, POLICY)
    opens = []
    for _ in range(5):
        assert health.circuit_open_until is not None
        at = health.circuit_open_until + timedelta(seconds=1)
        health, change = observe(health, failures(1), at, POLICY)
        assert change == "opened" and health.circuit_open_until is not None
        opens.append((health.circuit_open_until - at).total_seconds())
    assert opens == [60, 120, 240, 240, 240]


def test_a_delivered_probe_closes_the_circuit_and_forgets_the_failures() -> None:
    health, _ = observe(HEALTHY, failures(3), NOW, POLICY)
    later = NOW + timedelta(seconds=31)
    health, change = observe(health, delivered(), later, POLICY)
    assert change == "closed" and health.state(later) == "closed"
    assert (health.consecutive_failures, health.failing_since, health.circuit_opens) == (0, None, 0)
    assert health.last_success_at == later


def test_a_success_in_a_batch_resets_the_count_to_the_failures_after_it() -> None:
    seen = failures(2).merged(delivered=True, failed=False, gone=False, error=None)
    seen = seen.merged(delivered=False, failed=True, gone=False, error="timed out")
    health, change = observe(
        EndpointHealth(
            "acme", "hooks.example.com:443", consecutive_failures=2, failing_since=NOW - timedelta(hours=1)
        ),
        seen,
        NOW,
        POLICY,
    )
    assert change is None and health.consecutive_failures == 1 and health.failing_since == NOW


def test_410_gone_disables_at_once() -> None:
    seen = Observation("acme", "hooks.example.com:443").merged(
        delivered=False, failed=True, gone=True, error="HTTP 410"
    )
    health, change = observe(HEALTHY, seen, NOW, POLICY)
    assert change == "disabled" and health.state(NOW) == "disabled"
    assert health.disabled_reason == "hooks.example.com:443 answered 410 Gone: disabled at once"


def test_failing_every_attempt_for_the_disable_period_disables() -> None:
    failing = EndpointHealth(
        "acme",
        "hooks.example.com:443",
        consecutive_failures=40,
        failing_since=NOW - timedelta(days=5),
        circuit_open_until=NOW - timedelta(minutes=1),
        circuit_opens=9,
    )
    health, change = observe(failing, failures(1, "connection refused"), NOW, POLICY)
    assert change == "disabled"
    assert health.disabled_reason is not None and "failed every attempt for 5 day(s)" in health.disabled_reason
    assert "connection refused" in health.disabled_reason
    almost, change = observe(failing, failures(1), NOW - timedelta(seconds=1), POLICY)
    assert change == "opened" and almost.disabled_at is None


def test_a_disabled_endpoint_stays_disabled_whatever_it_answers() -> None:
    disabled = EndpointHealth("acme", "hooks.example.com:443", disabled_at=NOW, disabled_reason="gone")
    assert observe(disabled, delivered(), NOW, POLICY) == (disabled, None)


def test_a_healthy_endpoint_delivering_changes_nothing_worth_saying() -> None:
    health, change = observe(HEALTHY, delivered(), NOW, POLICY)
    assert change is None and health.consecutive_failures == 0
