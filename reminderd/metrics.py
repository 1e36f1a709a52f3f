"""Prometheus metrics: what an operator alerts on. One registry per daemon, no globals.

The daemon accounts for its callbacks a recorded batch at a time: a count per outcome and tenant,
and each histogram's values under one lock per batch (BatchHistogram), not one per callback.
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .lifecycle import Event, Status
from .outcome import Outcome

if TYPE_CHECKING:
    from .store import EndpointState, HealthChange, HeldBack, QueueDepth, UsageDay

USAGE_KINDS = ("scheduled", "attempted", "delivered", "dead", "expired", "held")
ENDPOINT_STATES = ("failing", "open", "half_open", "disabled")

# reminderd_callbacks_total{outcome}: the event an outcome recorded, or "refused" for a callback
# address the SSRF rules refuse (dead-lettered too, but the fix is the operator's, not the receiver's).
REFUSED = "refused"
OUTCOMES: tuple[str, ...] = (
    Event.FIRED, Event.RETRY_SCHEDULED, Event.DEAD_LETTERED, REFUSED, Event.EXPIRED,
    # Held back without a request:
    Event.DEFERRED, Event.HOLIDAY_SKIPPED, Event.MISSED_SKIPPED, Event.FINISHED, Event.CAPPED,
    # Handed back unsent (lease_too_short, frequency_cap_failed):
    Event.RELEASED,
)
# The outcomes that dead-letter: each needs a person (examples/prometheus/alerts.yml alerts on them).
DEAD_LETTERING: tuple[str, ...] = (Event.DEAD_LETTERED, REFUSED)

# Latency of a local receiver is milliseconds; a slow one hits the callback timeout (10 s).
CALLBACK_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Lateness: p99 should stay well under 50 ms; retries push it to minutes or hours.
LATENESS_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15, 60, 300, 3600)
BATCH_BUCKETS = (0, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)


class BatchHistogram(Collector):
    """A Prometheus histogram (the same exposition as prometheus_client's Histogram, without its
    `_created` sample) that takes many values under one lock."""

    def __init__(self, name: str, documentation: str, *, buckets: Sequence[float],
                 registry: CollectorRegistry) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = (*(float(bound) for bound in buckets), math.inf)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe(self, value: float) -> None:
        self.observe_many((value,))

    def observe_many(self, values: Iterable[float]) -> None:
        bounds, counts = self._bounds, self._counts
        with self._lock:
            for value in values:
                counts[bisect_left(bounds, value)] += 1  # the first bucket whose `le` holds it
                self._sum += value

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        family = HistogramMetricFamily(self._name, self._documentation)
        cumulative, buckets = 0, []
        for bound, count in zip(self._bounds, counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == math.inf else repr(bound), float(cumulative)))
        family.add_metric([], buckets, sum_value=total)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self._name, self._documentation)


class Metrics:
    def __init__(self, *, tenant_labels: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._tenant_labels = tenant_labels
        labels = ["outcome", "tenant"] if tenant_labels else ["outcome"]
        self.callbacks = Counter(
            "reminderd_callbacks", "Callback outcomes: " + ", ".join(OUTCOMES) + ".",
            labels, registry=self.registry,
        )
        self.callback_duration = BatchHistogram(
            "reminderd_callback_duration_seconds", "Time from sending a callback to its answer.",
            buckets=CALLBACK_BUCKETS_S, registry=self.registry,
        )
        self.fire_lateness = BatchHistogram(
            "reminderd_fire_lateness_seconds",
            "Delivery time minus scheduled time, for delivered callbacks (retries included).",
            buckets=LATENESS_BUCKETS_S, registry=self.registry,
        )
        self.in_flight = Gauge(
            "reminderd_callbacks_in_flight", "Callbacks being sent right now.", registry=self.registry
        )
        self.claim_batch = Histogram(
            "reminderd_claim_batch_size", "Rows claimed per claim query.",
            buckets=BATCH_BUCKETS, registry=self.registry,
        )
        self.last_poll_age = Gauge(
            "reminderd_last_poll_age_seconds", "Seconds since the last successful claim query.",
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "reminderd_queue_depth", "Live messages by status (refreshed on an interval).",
            ["status"], registry=self.registry,
        )
        self.due_not_picked = Gauge(
            "reminderd_due_not_picked", "Pending messages already due: near 0 when healthy.",
            registry=self.registry,
        )
        self.database_up = Gauge(
            "reminderd_database_up", "1 when the last database query succeeded, else 0.",
            registry=self.registry,
        )
        self.pool_connections = Gauge(
            "reminderd_db_pool_connections", "Database pool connections by state.",
            ["state"], registry=self.registry,
        )
        tenant = ["tenant"] if tenant_labels else []
        self.held = Counter(
            "reminderd_held", "Due rows a sending limit or a failing endpoint held back, counted once per row "
            "and reason: tenant_per_second, tenant_per_hour, endpoint_per_second, circuit_open, "
            "endpoint_disabled; and frequency_cap (deferred or skipped).",
            ["reason", *tenant], registry=self.registry,
        )
        self.endpoint_changes = Counter(
            "reminderd_endpoint_changes",
            "Tenant endpoints whose circuit this daemon opened or closed, or that it disabled.",
            ["change"], registry=self.registry,
        )
        self.endpoints = Gauge(
            "reminderd_endpoints",
            "Tenant endpoints not simply healthy, by state: failing, open, half_open, disabled "
            "(database-wide, refreshed on an interval).", ["state"], registry=self.registry,
        )
        self.usage_today = Gauge(
            "reminderd_usage_today",
            "Today's usage (UTC day), database-wide, as reminderd.usage_daily counts it: "
            + ", ".join(USAGE_KINDS) + ".", ["kind", *tenant], registry=self.registry,
        )
        self._last_poll_monotonic = time.monotonic()
        self.last_poll_age.set_function(lambda: time.monotonic() - self._last_poll_monotonic)

    def held_back(self, held: Sequence[HeldBack]) -> None:
        for item in held:
            if item.marked:
                self.held.labels(item.reason, *self._tenant(item.tenant_id)).inc(item.marked)

    def frequency_capped(self, tenant: str) -> None:
        self.held.labels("frequency_cap", *self._tenant(tenant)).inc()

    def endpoint_changed(self, changes: Sequence[HealthChange]) -> None:
        for item in changes:
            self.endpoint_changes.labels(item.change).inc()

    def set_endpoint_states(self, states: Sequence[EndpointState]) -> None:
        counts = dict.fromkeys(ENDPOINT_STATES, 0)
        for state in states:
            if state.state in counts:
                counts[state.state] += 1
        for name, count in counts.items():
            self.endpoints.labels(name).set(count)

    def set_usage_today(self, days: Sequence[UsageDay]) -> None:
        totals: dict[tuple[str, ...], int] = {}
        for day in days:
            for kind in USAGE_KINDS:
                key = (kind, *self._tenant(day.tenant_id))
                totals[key] = totals.get(key, 0) + getattr(day, kind)
        for key, value in totals.items():
            self.usage_today.labels(*key).set(value)

    def _tenant(self, tenant: str) -> tuple[str, ...]:
        return (tenant,) if self._tenant_labels else ()

    def polled(self, claimed: int) -> None:
        self._last_poll_monotonic = time.monotonic()
        self.claim_batch.observe(claimed)
        self.database_up.set(1)

    def database_failed(self) -> None:
        self.database_up.set(0)

    def count(self, outcome: str, tenant: str, amount: int = 1) -> None:
        labels = (outcome, tenant) if self._tenant_labels else (outcome,)
        self.callbacks.labels(*labels).inc(amount)

    def recorded(self, outcomes: Sequence[Outcome], now_s: float) -> None:
        """Account for a recorded batch: what each outcome was, how long answers took, how late
        deliveries were (`now_s` the time they were recorded)."""
        tally: Tally[tuple[str, str]] = Tally()
        durations_s: list[float] = []
        lateness_s: list[float] = []
        for outcome in outcomes:
            job, result = outcome.job, outcome.result
            if result is None:  # held back before any request: deferred, holiday_skipped, expired, …
                tally[outcome.event, job.tenant_id] += 1
                continue
            if result.status_code is not None:
                durations_s.append(result.duration_ms / 1000)
            if result.delivered:
                lateness_s.append(max(0.0, now_s - job.scheduled_for.timestamp()))
            tally[REFUSED if result.refused else outcome.event, job.tenant_id] += 1
        for (outcome_name, tenant), amount in tally.items():
            self.count(outcome_name, tenant, amount)
        self.callback_duration.observe_many(durations_s)
        self.fire_lateness.observe_many(lateness_s)

    def watch_in_flight(self, in_flight: Callable[[], float]) -> None:
        """The callbacks in flight, read when scraped (nothing to update per callback)."""
        self.in_flight.set_function(in_flight)

    def set_queue_depth(self, depth: QueueDepth) -> None:
        for status, count in ((Status.PENDING, depth.pending), (Status.PICKED, depth.picked),
                              (Status.PAUSED, depth.paused)):
            self.queue_depth.labels(status).set(count)
        self.due_not_picked.set(depth.due_not_picked)

    def watch_pool(self, in_use: Callable[[], float], idle: Callable[[], float]) -> None:
        self.pool_connections.labels("in_use").set_function(in_use)
        self.pool_connections.labels("idle").set_function(idle)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


# Latency of an API request: a schedule call takes a few milliseconds; a batch of 1,000 ~ 100 ms.
API_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ApiMetrics:
    """`reminderd serve`'s metrics: requests by route, method and status, and their latency."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "reminderd_api_requests", "HTTP API requests by route (its template), method and status.",
            ["route", "method", "status"], registry=self.registry,
        )
        self.duration = Histogram(
            "reminderd_api_request_duration_seconds", "Time to answer an HTTP API request, by route.",
            ["route"], buckets=API_BUCKETS_S, registry=self.registry,
        )
        self.in_flight = Gauge("reminderd_api_requests_in_flight", "HTTP API requests being answered.",
                               registry=self.registry)
        self.database_up = Gauge("reminderd_database_up", "1 when the last database query succeeded, else 0.",
                                 registry=self.registry)
        self.pool_connections = Gauge("reminderd_db_pool_connections", "Database pool connections by state.",
                                      ["state"], registry=self.registry)
        # The labelled series of each (route, method, status) seen, looked up once (labels() locks).
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        series = self._series.get((route, method, status))
        if series is None:
            series = self._series[route, method, status] = (
                self.requests.labels(route, method, str(status)), self.duration.labels(route)
            )
        series[0].inc()
        series[1].observe(seconds)

    def watch_pool(self, in_use: Callable[[], float], idle: Callable[[], float]) -> None:
        self.pool_connections.labels("in_use").set_function(in_use)
        self.pool_connections.labels("idle").set_function(idle)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
