"""Housekeeping beside the claim loop, as River's maintenance services: each service does one
job in one `run_once()` step and says how many rows it changed; `Housekeeping` runs them in
rounds, every poll interval or when a NOTIFY asks for planning.

The daemon runs two sets of rounds. Liveness, every REMINDERD_HEARTBEAT, never held up by the
others:
- Heartbeat: registers this daemon in reminderd.daemons and keeps its row fresh (and says when it
  is stopping); it keeps the Contact the rescuer trusts;
- ClaimReconciler: rows the database says this daemon holds but it never received (a claim whose
  reply was lost) are handed back at once; rows it holds that were taken away are not sent.

Maintenance, every poll interval:
- Rescuer: rows of dead daemons (silent beyond REMINDERD_DEAD_AFTER) are due again now;
- LeaseReaper: rows whose lease ran out (a daemon alive but wedged, or one from before the
  registry) are due again now;
- MissedExpirer: one-offs missed beyond the lookback are expired, never sent late;
- RecurringPlanner: recurring rows get their first fire_at, or skip an occurrence missed beyond
  the lookback (the decision is outcome.plan(), pure);
- ListenerKeeper: the LISTEN connection is reconnected after a database outage;
- QueueDepthSampler (every 30 s): the queue-wide gauges;
- Pruner (every 60 s): finished rows and old history past their retention, in small batches;
  frequency-cap sends past their window;
- CountsPruner (every 5 min): the dashboard's fire counts per minute and hour past their use;
- UsageRollup (every 5 s): usage increments folded into reminderd.usage_days;
- AudienceCountFolder (every 5 s): each audience's appended member-count changes folded into one;
- SendingSampler (every 30 s): tenant endpoints by health state and today's usage, for the metrics.
- KeyUsageWriter, IdempotencyPruner: `reminderd serve`'s (API keys' last_used_at, expired
  Idempotency-Keys), run by `for_api()`;
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
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from .guard import contain, describe
from .lifecycle import Event, Status
from .metrics import Metrics
from .outcome import Plan, plan
from .registry import ClaimBook, Contact, Identity
from .retry import backoff_s
from .schedule import InvalidSchedule, Waves, readable_zones, span
from .settings import Settings
from .store import QUERY_DEADLINE_S, Held, Listener, Pruned, RecurringBroadcast, Rescued, Store

log = structlog.get_logger("reminderd")

QUEUE_DEPTH_EVERY_S = 30.0
USAGE_ROLLUP_EVERY_S = 5.0
PRUNE_EVERY_S = 60.0
COUNTS_PRUNE_EVERY_S = 300.0
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


class Heartbeat:
    """Registers this daemon (its first beat) and refreshes its row, one short statement each time.
    A beat that finds the row gone means another daemon declared this one dead and rescued its
    rows: the row is inserted again and the error logged (the reconciler, next in the round, then
    stops the rows taken away from being sent)."""

    name, every_s, first_after_s = "heartbeat", 0.0, 0.0

    def __init__(
        self, identity: Identity, store: Store, contact: Contact, claims: ClaimBook, *,
        stopping: Callable[[], bool],
    ) -> None:
        self._identity = identity
        self._store = store
        self.contact = contact
        self._claims = claims
        self._stopping = stopping
        self.started_at: datetime | None = None  # the database's time of the first beat

    async def run_once(self) -> int:
        try:
            beat = await self._store.heartbeat(
                self._identity, started_at=self.started_at, stopping=self._stopping(),
                last_claim_at=self._claims.last_claim_at,
            )
        except Exception:
            self.contact.failed()
            raise
        self.contact.answered(beat.at, time.monotonic())
        if self.started_at is None:
            self.started_at = beat.started_at
            log.info("registered", daemon=str(self._identity.id), host=self._identity.host,
                     pid=self._identity.pid)
        elif beat.inserted:
            log.error("declared_dead", daemon=str(self._identity.id),
                      consequence="another daemon rescued the rows this one held: their late outcomes "
                                  "are discarded; registered again",
                      fix="a daemon silent for REMINDERD_DEAD_AFTER is taken for dead: "
                          "check the database's and this host's load")
        return 0


class ClaimReconciler:
    """Compares the rows the database says this daemon holds with those it holds in memory: rows
    it never received (a claim committed whose reply was lost in an outage) are handed back at
    once instead of waiting for their lease; rows it holds that are no longer its own (rescued
    while it was taken for dead, reaped, cancelled) are not sent."""

    name, every_s, first_after_s = "reconcile", 0.0, 0.0

    def __init__(self, identity: Identity, store: Store, claims: ClaimBook) -> None:
        self._identity = identity
        self._store = store
        self._claims = claims

    async def run_once(self) -> int:
        claims = self._claims
        async with asyncio.timeout(QUERY_DEADLINE_S):
            await claims.lock.acquire()  # after the claim in progress, if any: its reply is on its way
        try:
            held = await self._store.held_by(self._identity.id)
            comparison = claims.compare({row.id: row.picked_at for row in held})
            claims.revoke(comparison.taken_away)
        finally:
            claims.lock.release()
        if not comparison.never_received:
            return 0
        handed_back = await self._store.hand_back(
            [Held(message_id, token) for message_id, token in comparison.never_received],
            f"claim reply lost: handed back by daemon {self._identity.id} (never attempted)",
        )
        for row in handed_back:
            log.warning("claim_reply_lost", message_id=row.id, tenant=row.tenant_id, ref=row.ref_id,
                        attempt=row.attempt, handed_back=True)
        return len(handed_back)


class Rescuer:
    """Returns the rows of dead daemons (silent beyond their REMINDERD_DEAD_AFTER) to pending at
    once, and deletes their rows; only while this daemon's own contact with the database is
    unbroken, so a database that stalled does not make every daemon look dead."""

    name, every_s, first_after_s = "rescue", 0.0, 0.0

    def __init__(self, settings: Settings, identity: Identity, store: Store, contact: Contact) -> None:
        self._dead_after_s = settings.dead_after_s
        self._heartbeat_s = settings.heartbeat_s
        self._identity = identity
        self._store = store
        self._contact = contact

    async def run_once(self) -> int:
        since, last_beat_at = self._contact.unbroken_since(time.monotonic()), self._contact.last_beat_at
        if since is None or last_beat_at is None:
            return 0
        rescued = await self._store.rescue_dead_daemons(
            self._identity.id, dead_after_s=self._dead_after_s, heartbeat_s=self._heartbeat_s,
            contact_since=since, last_beat_at=last_beat_at,
        )
        by_daemon: dict[str, list[Rescued]] = {}
        for row in rescued:
            by_daemon.setdefault(str(row.daemon_id), []).append(row)
        count = 0
        for daemon, rows in by_daemon.items():
            first = rows[0]
            held = [row for row in rows if row.message_id is not None]
            log.warning("daemon_dead", daemon=daemon, host=first.host, pid=first.pid,
                        heartbeat_at=first.heartbeat_at.isoformat(), rescued=len(held))
            for row in held:
                log.warning(Event.RESCUED, message_id=row.message_id, tenant=row.tenant_id, ref=row.ref_id,
                            attempt=row.attempt, daemon=daemon)
            count += len(held)
        return count


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
    """Plans recurring rows; a row it finishes or dead-letters is counted in
    reminderd_callbacks_total as the worker counts its own (the dead-letter alert sees it)."""

    name, every_s, first_after_s = "plan_recurring", 0.0, 0.0

    def __init__(self, settings: Settings, store: Store, metrics: Metrics) -> None:
        self._settings = settings
        self._store = store
        self._metrics = metrics

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
                self._metrics.count(Event.FINISHED, row.tenant_id)
            elif row.status is Status.DEAD:
                log.error(Event.DEAD_LETTERED, **fields, error=row.last_error)
                self._metrics.count(Event.DEAD_LETTERED, row.tenant_id)
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


class CountsPruner:
    """The dashboard's aggregates (migration 0011): minutes after 3 hours, hours after 8 days."""

    name, every_s, first_after_s = "prune_counts", COUNTS_PRUNE_EVERY_S, PRUNE_EVERY_S / 2

    def __init__(self, store: Store) -> None:
        self._store = store

    async def run_once(self) -> int:
        return await self._store.prune_counts()


ZONES_FRESH_S = 60.0  # a recurring broadcast's audience zones are read again after this long


class BroadcastStager:
    """Stages recurring broadcasts one occurrence at a time. An occurrence is a wall time (09:00
    on Monday) read in each contact's zone: planned as the first still ahead in every zone of the
    audience, staged stage_ahead before the first zone's instant (the audience's zones are read
    at most every minute, so a contact added in a new zone is noticed in time), passed over when
    even the last zone's instant is gone (the daemon was not running), and the broadcast ends
    after `until` (or an RRULE's UNTIL=…Z, an instant too) or the recurrence's last occurrence.
    That instant ends each contact on their own: an occurrence goes to the contacts whose own
    instant of it is not after it (Waves.reached; the database stages just those), and the
    broadcast goes on while it reaches anyone.
    The decisions are pure (reminderd.schedule Waves); several daemons may run this: the database
    stages each occurrence once."""

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
            zones, unreadable = readable_zones(await self._store.broadcast_zones(broadcast_id))
            if unreadable:  # passed over in the plan, not retried with the whole wave forever
                log.warning("broadcast_zones_unreadable", broadcast_id=broadcast_id, zones=unreadable,
                            reason="unknown to this daemon's tz database; the wave is planned without them")
            self._zones[broadcast_id] = (time.monotonic(), zones)
        return zones

    async def _step(self, b: RecurringBroadcast) -> int:
        fields = {"broadcast_id": b.id, "tenant": b.tenant_id, "ref_prefix": b.ref_prefix}
        try:
            waves = Waves.parse(cron=b.cron, rrule=b.rrule, until=b.until)
        except InvalidSchedule as exc:
            await self._store.end_broadcast(b.id, f"cannot recur: {exc}")
            log.error("broadcast_ended", **fields, reason=f"cannot recur: {exc}")
            return 1
        zones = await self._zones_of(b.id)
        if b.next_occurrence is None:
            occurrence = waves.first(zones, b.db_now)
            if occurrence is None:
                await self._store.end_broadcast(b.id, "no occurrence ahead")
                log.info("broadcast_ended", **fields, reason="no occurrence ahead")
                return 1
            planned = await self._store.plan_broadcast(b.id, occurrence)
            log.info("broadcast_planned", **fields, occurrence=occurrence.isoformat())
            return int(planned)
        occurrence = b.next_occurrence
        reached = waves.reached(occurrence, zones)
        if not reached:  # its until was moved before it: the broadcast is over for every contact
            await self._store.end_broadcast(b.id, "no more occurrences")
            log.info("broadcast_ended", **fields, reason="no more occurrences")
            return 1
        first_at, last_at = span(occurrence, reached)  # of the contacts it is sent to
        following = waves.after(occurrence, zones)
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


class AudienceCountFolder:
    """Each audience's member-count changes (one appended per statement that changed its members)
    folded into one, so listing audiences sums a few rows (reminderd.fold_audience_member_counts)."""

    name, every_s, first_after_s = "fold_audience_member_counts", USAGE_ROLLUP_EVERY_S, 0.0

    def __init__(self, store: Store) -> None:
        self._store = store

    async def run_once(self) -> int:
        await self._store.fold_audience_member_counts()
        return 0  # the sizes read the same before and after


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
        self, services: Sequence[Service], *, poll_interval_s: float, rng: random.Random | None = None,
        failure_backoff_cap_s: float | None = None,
    ) -> None:
        self.services = list(services)
        self._poll_interval_s = poll_interval_s
        self._backoff_cap_s = failure_backoff_cap_s
        self._rng = rng or random.Random()
        now = time.monotonic()
        self._due = {service.name: now + service.first_after_s for service in self.services}
        self._failures = dict.fromkeys(self._due, 0)

    @classmethod
    def for_daemon(
        cls, settings: Settings, store: Store, metrics: Metrics, *, listener: Listener | None = None,
        rescuer: Rescuer | None = None, rng: random.Random | None = None,
    ) -> Housekeeping:
        services: list[Service] = [] if rescuer is None else [rescuer]
        services += [
            LeaseReaper(store), MissedExpirer(settings, store, metrics),
            RecurringPlanner(settings, store, metrics),
        ]
        if listener is not None:
            services.append(ListenerKeeper(listener))
        services += [QueueDepthSampler(store, metrics), Pruner(settings, store), CountsPruner(store),
                     UsageRollup(store), AudienceCountFolder(store), SendingSampler(store, metrics),
                     BroadcastStager(store), BroadcastCompleter(store)]
        return cls(services, poll_interval_s=settings.poll_interval_s, rng=rng)

    @classmethod
    def for_liveness(
        cls, settings: Settings, heartbeat: Heartbeat, reconciler: ClaimReconciler, *,
        rng: random.Random | None = None,
    ) -> Housekeeping:
        """Every heartbeat interval; a failure is retried within one interval, never later, so a
        database that answers again sees this daemon alive before anyone takes it for dead."""
        return cls([heartbeat, reconciler], poll_interval_s=settings.heartbeat_s, rng=rng,
                   failure_backoff_cap_s=settings.heartbeat_s / 2)

    async def run(self, wake: asyncio.Event) -> None:
        """A round every poll interval, or sooner when `wake` is set (a NOTIFY asks for planning)."""
        while True:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the woken result when
            # a cancel comes as the wake is delivered, and the worker's cancel of this loop at
            # shutdown was lost (the daemon never exited).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval_s):
                    await wake.wait()
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
                cap_s = max(FAILURE_BACKOFF_CAP_S, 2 * self._poll_interval_s)
                if self._backoff_cap_s is not None:
                    cap_s = min(cap_s, self._backoff_cap_s)
                delay_s = backoff_s(failures, base_s=min(2 * self._poll_interval_s, cap_s),
                                    cap_s=cap_s, jitter="half", rng=self._rng)
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
