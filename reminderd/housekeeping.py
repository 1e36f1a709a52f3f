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
- BroadcastStager: each recurring broadcast's next wave, staged `stage_ahead` before the instant of
  its earliest zone, to the audience as it stands then (docs/audiences.md);
- BroadcastCompleter: waves whose messages have all ended are marked completed, with their
  broadcast.completed callback queued when asked for; the progress counts are folded.

A failing service is logged and backs off on its own; the others carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections.abc import Awaitable, Sequence
from datetime import timedelta
from typing import Protocol

import structlog

from .guard import contain, describe
from .lifecycle import Event, Status
from .metrics import Metrics
from .outcome import Plan, plan
from .retry import backoff_s
from .schedule import InvalidSchedule, first_everywhere, next_wall, parse_cron, parse_rrule, span
from .settings import Settings
from .store import Listener, Pruned, RecurringBroadcast, Store

log = structlog.get_logger("reminderd")

QUEUE_DEPTH_EVERY_S = 30.0
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
    """Keeps the LISTEN connection up; without it the loop falls back to polling."""

    name, every_s, first_after_s = "listen", 0.0, 0.0

    def __init__(self, listener: Listener) -> None:
        self._listener = listener

    async def run_once(self) -> int:
        if not self._listener.connected:
            await connect_listener(self._listener)
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
        if total != Pruned(0, 0, 0):
            log.info("pruned", messages=total.messages, deliveries=total.deliveries, events=total.events)
        return total


ZONES_FRESH_S = 60.0  # a recurring broadcast's audience zones are read again after this long


class BroadcastStager:
    """Stages recurring broadcasts one occurrence at a time. An occurrence is a wall time (09:00
    on Monday) read in each contact's zone: planned as the first still ahead in every zone of the
    audience, staged stage_ahead before the first zone's instant (the audience's zones are read
    at most every minute, so a contact added in a new zone is noticed in time), passed over when
    even the last zone's instant is gone (the daemon was not running), and the broadcast ends
    after `until` or the recurrence's last occurrence. The decisions are pure (reminderd.schedule
    waves); several daemons may run this: the database stages each occurrence once."""

    name, every_s, first_after_s = "stage_broadcasts", 0.0, 0.0

    def __init__(self, store: Store) -> None:
        self._store = store
        self._zones: dict[int, tuple[float, list[str]]] = {}  # broadcast id: (read at, zones)

    async def run_once(self) -> int:
        changed = 0
        broadcasts = await self._store.recurring_broadcasts()
        self._zones = {b.id: self._zones[b.id] for b in broadcasts if b.id in self._zones}  # forget ended ones
        for broadcast in broadcasts:
            changed += await contain_async(broadcast.id, self._step(broadcast))
        return changed

    async def _zones_of(self, broadcast_id: int) -> list[str]:
        read_at, zones = self._zones.get(broadcast_id, (0.0, []))
        if time.monotonic() - read_at > ZONES_FRESH_S:
            zones = await self._store.broadcast_zones(broadcast_id)
            self._zones[broadcast_id] = (time.monotonic(), zones)
        return zones

    async def _step(self, b: RecurringBroadcast) -> int:
        fields = {"broadcast_id": b.id, "tenant": b.tenant_id, "ref_prefix": b.ref_prefix}
        try:
            schedule = parse_cron(b.cron) if b.cron is not None else parse_rrule(b.rrule or "", "UTC")
        except InvalidSchedule as exc:
            await self._store.end_broadcast(b.id, f"cannot recur: {exc}")
            log.error("broadcast_ended", **fields, reason=f"cannot recur: {exc}")
            return 1
        zones = await self._zones_of(b.id)
        if b.next_occurrence is None:
            occurrence = first_everywhere(schedule, zones, b.db_now)
            if occurrence is None or (b.until is not None and span(occurrence, zones)[0] > b.until):
                await self._store.end_broadcast(b.id, "no occurrence ahead")
                log.info("broadcast_ended", **fields, reason="no occurrence ahead")
                return 1
            planned = await self._store.plan_broadcast(b.id, occurrence)
            log.info("broadcast_planned", **fields, occurrence=occurrence.isoformat())
            return int(planned)
        occurrence = b.next_occurrence
        first_at, last_at = span(occurrence, zones)
        following = next_wall(schedule, occurrence)
        if following is not None and b.until is not None and span(following, zones)[0] > b.until:
            following = None
        if last_at < b.db_now:
            reason = (f"occurrence {occurrence:%Y-%m-%d %H:%M} missed: its last zone's instant passed "
                      "before a daemon could stage it")
            skipped = await self._store.skip_broadcast_occurrence(b.id, occurrence, following, reason)
            log.warning("broadcast_occurrence_missed", **fields, occurrence=occurrence.isoformat())
            return int(skipped)
        if b.db_now < first_at - timedelta(seconds=b.stage_ahead_s):
            return 0
        self._zones.pop(b.id, None)  # read afresh for the next occurrence
        staged = await self._store.stage_broadcast(b.id, occurrence, following)
        log.info("broadcast_staged", **fields, occurrence=occurrence.isoformat(), messages=staged,
                 first_at=first_at.isoformat(), following=following.isoformat() if following else None)
        return staged or 1


class BroadcastCompleter:
    """Marks waves whose messages have all ended completed (queueing their broadcast.completed
    callbacks) and folds the progress counts, in the database (reminderd.complete_broadcasts)."""

    name, every_s, first_after_s = "complete_broadcasts", 0.0, 0.0

    def __init__(self, store: Store) -> None:
        self._store = store

    async def run_once(self) -> int:
        completed = await self._store.complete_broadcasts()
        for wave in completed:
            log.info("broadcast_completed", broadcast_id=wave.broadcast_id, tenant=wave.tenant_id,
                     occurrence=wave.occurrence.isoformat(), callback_message_id=wave.message_id)
        return len(completed)


async def contain_async(broadcast_id: int, step: Awaitable[int]) -> int:
    """One broadcast's step; a failure is logged and costs that broadcast this round only."""
    try:
        return await step
    except Exception as exc:
        log.error("broadcast_step_failed", broadcast_id=broadcast_id, error=describe(exc))
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
        services += [QueueDepthSampler(store, metrics), Pruner(settings, store), BroadcastStager(store),
                     BroadcastCompleter(store)]
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
