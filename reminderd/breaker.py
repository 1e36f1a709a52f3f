"""The health of a tenant's callback endpoint: a circuit breaker, and disabling. Pure: the state
and the attempts' results go in, with `now`; the next state comes out.

- closed: callbacks go out. After `failures_to_open` failures in a row the circuit opens.
- open: nothing goes to the endpoint (the claim holds its rows) until `circuit_open_until`.
- half-open: then one callback at a time, a probe. Delivered: closed again. Failed: open again,
  for twice as long (at most `max_open_s`).
- disabled: a 410 Gone, or failing every attempt for `disable_after_s` (REMINDERD_ENDPOINT_DISABLE_AFTER,
  5 days as Svix): the tenant's rows for the endpoint are paused until `reminderd tenant
  enable-endpoint`.

The daemons share the state through reminderd.endpoint_health (store.update_endpoint_health reads
it locked, applies `observe`, writes it back).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Any, Literal

State = Literal["closed", "open", "half_open", "disabled"]
Change = Literal["opened", "closed", "disabled"]


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failures_to_open: int = 10
    open_s: float = 30.0
    max_open_s: float = 960.0
    disable_after_s: float = 5 * 86400.0


@dataclass(frozen=True, slots=True)
class EndpointHealth:
    """One row of reminderd.endpoint_health."""

    tenant_id: str
    endpoint: str
    consecutive_failures: int = 0
    failing_since: datetime | None = None
    last_failure_at: datetime | None = None
    last_error: str | None = None
    last_success_at: datetime | None = None
    circuit_open_until: datetime | None = None
    circuit_opens: int = 0
    disabled_at: datetime | None = None
    disabled_reason: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> EndpointHealth:
        return cls(**{f.name: row[f.name] for f in fields(cls)})

    def state(self, now: datetime) -> State:
        if self.disabled_at is not None:
            return "disabled"
        if self.circuit_open_until is None:
            return "closed"
        return "open" if self.circuit_open_until > now else "half_open"


@dataclass(frozen=True, slots=True)
class Observation:
    """What a batch of attempts to one tenant endpoint said, in order: how many failed after the
    last one delivered (all of them when none was), whether one was delivered, a 410 Gone."""

    tenant_id: str
    endpoint: str
    delivered: bool = False
    trailing_failures: int = 0
    gone: bool = False
    last_error: str | None = None

    def merged(self, delivered: bool, failed: bool, gone: bool, error: str | None) -> Observation:
        """This observation followed by one more attempt."""
        if delivered:
            return replace(self, delivered=True, trailing_failures=0)
        if failed:
            return replace(self, trailing_failures=self.trailing_failures + 1, gone=self.gone or gone,
                           last_error=error or self.last_error)
        return self


def observe(health: EndpointHealth, seen: Observation, now: datetime, policy: BreakerPolicy
            ) -> tuple[EndpointHealth, Change | None]:
    """The endpoint's health after `seen`, and what changed (None: nothing worth saying)."""
    if health.disabled_at is not None:
        return health, None
    if seen.gone:
        reason = f"{health.endpoint} answered 410 Gone: disabled at once"
        return replace(health, disabled_at=now, disabled_reason=reason, last_failure_at=now,
                       last_error=seen.last_error), "disabled"
    was = health.state(now)
    if seen.trailing_failures == 0:
        if not seen.delivered:
            return health, None
        healthy = replace(health, consecutive_failures=0, failing_since=None, last_success_at=now,
                          circuit_open_until=None, circuit_opens=0)
        return healthy, ("closed" if was != "closed" else None)
    failures = (0 if seen.delivered else health.consecutive_failures) + seen.trailing_failures
    failing_since = now if seen.delivered or health.failing_since is None else health.failing_since
    failing = replace(health, consecutive_failures=failures, failing_since=failing_since, last_failure_at=now,
                      last_error=seen.last_error,
                      last_success_at=now if seen.delivered else health.last_success_at)
    if now - failing_since >= timedelta(seconds=policy.disable_after_s):
        days = policy.disable_after_s / 86400
        reason = (f"{health.endpoint} failed every attempt for {days:g} day(s) since "
                  f"{failing_since.isoformat(timespec='seconds')}: {seen.last_error or 'failed'}")
        return replace(failing, disabled_at=now, disabled_reason=reason), "disabled"
    if was == "half_open" and not seen.delivered:  # the probe failed
        return _opened(failing, now, policy), "opened"
    if was == "closed" and failures >= policy.failures_to_open:
        return _opened(replace(failing, circuit_opens=0), now, policy), "opened"
    return failing, None


def _opened(health: EndpointHealth, now: datetime, policy: BreakerPolicy) -> EndpointHealth:
    open_s = min(policy.open_s * 2 ** health.circuit_opens, policy.max_open_s)
    return replace(health, circuit_open_until=now + timedelta(seconds=open_s),
                   circuit_opens=health.circuit_opens + 1)
