"""Housekeeping beside the claim loop, as River's maintenance services: each service does one
job in one `run_once()` step and says how many rows it changed; `Housekeeping` runs them in
rounds, every poll interval or when a NOTIFY asks for planning.

- LeaseReaper: rows whose daemon died mid-flight (lease run out) are due again now;
- MissedExpirer: one-offs missed beyond the lookback are expired, never sent late;
- RecurringPlanner: recurring rows get their first fire_at, or skip an occurrence missed beyond
  the lookback (the decision is outcome.plan(), pure);
- ListenerKeeper: the LISTEN connection is reconnected after a database outage;
- QueueDepthSampler (every 30 s): the queue-wide gauges;
- Pruner (every 60 s): finished rows and old history past their retention, in small batches;
  frequency-cap sends past their window;
- UsageRollup (every 5 s): usage increments folded into reminderd.usage_days;
- SendingSampler (every 30 s): tenant endpoints by health state and today's usage, for the metrics.
- KeyUsageWriter, IdempotencyPruner: `reminderd serve`'s (API keys' last_used_at, expired
  Idempotency-Keys), run by `for_api()`.

A failing service is logged and backs off on its own; the others carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog

from .guard import contain, describe
from .lifecycle import Event, Status
from .metrics import Metrics
from .outcome import Plan, plan
from .retry import backoff_s
from .settings import Settings
from .store import Listener, Pruned, Store

log = structlog.get_logger("reminderd")

QUEUE_DEPTH_EVERY_S = 30.0
USAGE_ROLLUP_EVERY_S = 5.0
PRUNE_EVERY_S = 60.0
PRUNE_BATCHES_PER_ROUND = 20  # at most 20,000 rows of each kind a minute, in short transactions
PRUNE_BATCH = 1000
FAILURE_BACKOFF_CAP_S = 30.0


class Service(Protocol):
    name: str
    every_s: float  # 0: every round
    first_after_s: float  # after start, not before this

    async def run_once(self) -> int:
        """One step; how many rows it changed."""
        ...


class LeaseReaper:
    name, every_s, first_after_s = "reap_leases", 0.0, 0.0

    def __init__(self, store: Store) -> None:
        self._store = store

    async def run_once(self) -> int:
        reaped = await self._store.reap_expired_leases()
        for row in reaped:
            log.warning(Event.LEASE_EXPIRED, message_id=row.id, tenant=row.tenant_id, ref=row.ref_id,
                        attempt=row.attempt)
        return len(reaped)


class MissedExpirer:
    name, every_s, first_after_s = "expire_missed", 0.0, 0.0

    def __init__(self, settings: Settings, store: Store, metrics: Metrics) -> None:
        self._lookback_s = settings.lookback_s
        self._store = store
        self._metrics = metrics

    async def run_once(self) -> int:
        expired = await self._store.expire_missed(lookback_s=self._lookback_s)
        for row in expired:
            log.warning(Event.EXPIRED, message_id=row.id, tenant=row.tenant_id, ref=row.ref_id,
                        scheduled_for=row.scheduled_for.isoformat())
            self._metrics.count(Event.EXPIRED, row.tenant_id)
        return len(expired)


class RecurringPlanner:
    name, every_s, first_after_s = "plan_recurring", 0.0, 0.0

    def __init__(self, settings: Settings, store: Store) -> None:
        self._settings = settings
        self._store = store

    async def run_once(self) -> int:
        s = self._settings
        rows = await self._store.recurring_to_plan(
            lookback_s=s.lookback_s, backfill=s.backfill, max_lateness_s=s.max_lateness_s,
        )
        if not rows:
            return 0
        plans = [
            contain("plan", row.id, functools.partial(Plan.dead, row), plan, row, row.db_now,
                    lookback_s=s.lookback_s)
            for row in rows
        ]
        planned = await self._store.plan_recurring(plans)
        for row in planned:
            fields = {"message_id": row.id, "tenant": row.tenant_id, "ref": row.ref_id}
            if row.status is Status.FINISHED:
                log.info(Event.FINISHED, **fields, note=row.last_error)
            elif row.status is Status.DEAD:
                log.error(Event.DEAD_LETTERED, **fields, error=row.last_error)
            else:
                assert row.fire_at is not None
                log.info(Event.PLANNED, **fields, fire_at=row.fire_at.isoformat(), note=row.last_error)
        return len(planned)


class ListenerKeeper:
    """Keeps the LISTEN connection up; without it the loop falls back to polling. A failed
    reconnect raises, so it backs off like any failing service (one line per retry, not one per
    round, while the database is down)."""

    name, every_s, first_after_s = "listen", 0.0, 0.0

    def __init__(self, listener: Listener) -> None:
        self._listener = listener

    async def run_once(self) -> int:
        if not self._listener.connected:
            await self._listener.connect()
        return 0


class QueueDepthSampler:
    name, every_s, first_after_s = "queue_depth", QUEUE_DEPTH_EVERY_S, 0.0

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self._store = store
        self._metrics = metrics

    async def run_once(self) -> int:
        self._metrics.set_queue_depth(await self._store.queue_depth())
        return 0


class Pruner:
    name, every_s, first_after_s = "prune", PRUNE_EVERY_S, PRUNE_EVERY_S / 4  # not in a start's rush

    def __init__(self, settings: Settings, store: Store) -> None:
        self._settings = settings
        self._store = store

    async def run_once(self) -> int:
        return (await self.prune()).messages

    async def prune(self) -> Pruned:
        """Delete finished rows and old history past their retention, in small batches."""
        s = self._settings
        total = Pruned(0, 0, 0)
        for _ in range(PRUNE_BATCHES_PER_ROUND):
            batch = await self._store.prune_batch(
                keep_finished_days=s.retention_days, keep_dead_days=s.dead_retention_days,
                keep_history_days=s.history_retention_days,
            )
            total += batch
            if max(batch.messages, batch.deliveries, batch.events) < PRUNE_BATCH:
                break
        sends = await self._store.prune_contact_sends(limit=PRUNE_BATCH)
        if total != Pruned(0, 0, 0) or sends:
            log.info("pruned", messages=total.messages, deliveries=total.deliveries, events=total.events,
                     contact_sends=sends)
        return total


class UsageRollup:
    """Usage increments (one per batch or statement) folded into one row per tenant and day."""

    name, every_s, first_after_s = "usage_rollup", USAGE_ROLLUP_EVERY_S, 0.0

    def __init__(self, store: Store) -> None:
        self._store = store

    async def run_once(self) -> int:
        await self._store.roll_up_usage()
        return 0  # reminderd.usage_daily reads the same before and after


class SendingSampler:
    """Tenant endpoints by health state and today's usage, for the metrics (database-wide)."""

    name, every_s, first_after_s = "sending", QUEUE_DEPTH_EVERY_S, 0.0

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self._store = store
        self._metrics = metrics

    async def run_once(self) -> int:
        self._metrics.set_endpoint_states(await self._store.endpoint_states())
        self._metrics.set_usage_today(await self._store.usage_today())
        return 0


async def connect_listener(listener: Listener) -> None:
    try:
        await listener.connect()
    except Exception as exc:
        log.warning("listen_failed", error=describe(exc), fallback="polling")


class Housekeeping:
    """Runs the services in rounds: each round runs every service that is due."""

    def __init__(
        self, services: Sequence[Service], *, poll_interval_s: float, rng: random.Random | None = None
    ) -> None:
        self.services = list(services)
        self._poll_interval_s = poll_interval_s
        self._rng = rng or random.Random()
        now = time.monotonic()
        self._due = {service.name: now + service.first_after_s for service in self.services}
        self._failures = dict.fromkeys(self._due, 0)

    @classmethod
    def for_daemon(
        cls, settings: Settings, store: Store, metrics: Metrics, *, listener: Listener | None = None,
        rng: random.Random | None = None,
    ) -> Housekeeping:
        services: list[Service] = [
            LeaseReaper(store), MissedExpirer(settings, store, metrics), RecurringPlanner(settings, store),
        ]
        if listener is not None:
            services.append(ListenerKeeper(listener))
        services += [QueueDepthSampler(store, metrics), Pruner(settings, store), UsageRollup(store),
                     SendingSampler(store, metrics)]
        return cls(services, poll_interval_s=settings.poll_interval_s, rng=rng)

    async def run(self, wake: asyncio.Event) -> None:
        """A round every poll interval, or sooner when `wake` is set (a NOTIFY asks for planning)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self._poll_interval_s)
            wake.clear()
            await self.run_once()

    async def run_once(self) -> int:
        """One round: every service that is due; how many rows they changed."""
        changed = 0
        for service in self.services:
            now = time.monotonic()
            if now < self._due[service.name]:
                continue
            try:
                changed += await service.run_once()
            except Exception as exc:
                failures = self._failures[service.name] = self._failures[service.name] + 1
                delay_s = backoff_s(failures, base_s=2 * self._poll_interval_s,
                                    cap_s=max(FAILURE_BACKOFF_CAP_S, 2 * self._poll_interval_s),
                                    jitter="half", rng=self._rng)
                self._due[service.name] = now + delay_s
                log.error("housekeeping_failed", service=service.name, error=describe(exc),
                          retry_in_s=round(delay_s, 2))
                continue
            self._failures[service.name] = 0
            self._due[service.name] = now + service.every_s
        return changed


class KeyUsageWriter:
    """API keys used lately get their last_used_at, in one statement (not one per request)."""

    name, every_s, first_after_s = "key_usage", 5.0, 5.0

    def __init__(self, store: Store, take_usage: Callable[[], list[int]]) -> None:
        self._store = store
        self._take_usage = take_usage

    async def run_once(self) -> int:
        used = self._take_usage()
        if used:
            await self._store.api_keys_used(used)
        return len(used)


class IdempotencyPruner:
    """Idempotency keys older than 24 hours, in batches."""

    name, every_s, first_after_s = "idempotency_prune", PRUNE_EVERY_S, 5.0

    def __init__(self, store: Store) -> None:
        self._store = store

    async def run_once(self) -> int:
        pruned = 0
        for _ in range(PRUNE_BATCHES_PER_ROUND):
            batch = await self._store.prune_idempotency_keys(limit=PRUNE_BATCH)
            pruned += batch
            if batch < PRUNE_BATCH:
                break
        return pruned


def for_api(store: Store, take_usage: Callable[[], list[int]]) -> Housekeeping:
    """`reminderd serve`'s housekeeping: key usage every 5 s, idempotency keys pruned every minute."""
    return Housekeeping([KeyUsageWriter(store, take_usage), IdempotencyPruner(store)], poll_interval_s=1.0)
