"""The daemon's loop: claim due rows, send their callbacks concurrently, record outcomes in batches.

Tasks, all inside one TaskGroup:
- the claim loop wakes on whichever comes first: a NOTIFY, the next known fire_at, the poll
  interval, room freed by a finished callback, or a stop request;
- `concurrency` senders each POST one callback at a time;
- the recorder writes finished attempts in batches, one round trip for many;
- liveness (housekeeping.py), every REMINDERD_HEARTBEAT: the heartbeat in reminderd.daemons, and
  the reconciler comparing the rows the database says this daemon holds with its ClaimBook;
- housekeeping (housekeeping.py) rescues dead daemons' rows, reaps expired leases, expires missed
  one-offs, plans recurring rows, samples the queue and prunes.

The daemon registers (its first heartbeat) before it claims anything, and deletes its row once
it has handed everything back; every claim stamps its rows with the daemon's id.

`run(until_idle=True)` is the same loop in burst mode: it returns once nothing is left to do soon,
so tests drive it to quiescence instead of polling the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog
from structlog.typing import FilteringBoundLogger

from . import logs
from .breaker import BreakerPolicy, Observation
from .callback import CallbackClient
from .exceptions import DatabaseRefused, DatabaseUnavailable
from .guard import crashed, describe
from .housekeeping import ClaimReconciler, Heartbeat, Housekeeping, Rescuer, connect_listener
from .jobs import Job
from .lifecycle import Event
from .metrics import Metrics
from .outcome import AttemptResult, Outcome, before_sending, capped, cut_short, decide, handed_back, unrecorded
from .registry import ClaimBook, Contact, Identity
from .retry import RetryPolicy, backoff_s
from .settings import Settings
from .store import QUERY_DEADLINE_S, Claim, ContactSend, Listener, Release, Store, Unreadable

log = structlog.get_logger("reminderd")
T = TypeVar("T")

RECORD_BATCH_MAX = 1000
DB_BACKOFF_BASE_S = 0.4
DB_BACKOFF_MAX_S = 30.0
# One turn of the claim loop: waiting for the claim book (the reconciler holds it for one query),
# the claim, the next-due query; each bounded by the daemon's QUERY_DEADLINE_S. (The frequency
# caps' reservation and the once-a-second check for limits are small too: a stall fails the
# first call of the turn, which then backs off.)
LOOP_DEADLINE_S = 3 * QUERY_DEADLINE_S
# The event loop's timers are millisecond-grained and can fire up to a millisecond before their
# time (uvloop rounds the delay, libuv counts from its cached loop time): a loop woken before the
# next row is due claims nothing and pays a second claim. Waking this much after it costs less
# (bench (3): 8 of 193 timed wakes came back empty without it, none with it).
WAKE_AFTER_DUE_S = 0.001
LEASE_TOO_SHORT = ("not sent: it waited in the daemon's queue until too little of its lease was left for a "
                   "request; handed back (raise REMINDERD_LEASE or REMINDERD_CONCURRENCY)")
BOUNDED_CHECK_EVERY_S = 1.0  # a limit set, or a circuit opened by another daemon, counts within this
# Outcomes whose row another transaction keeps locked (record_outcomes waits 1 s, its lock_timeout)
# are looked at again this often, by a query that waits for nothing.
LOCKED_RETRY_S = 0.25
LOCK_ROUNDS_MAX = 3  # a batch met a new lock this many times: the rows it met wait on their own
# A record that waited beyond its lock_timeout (55P03) was rolled back whole: nothing in it was
# refused, it is tried again once the lock is gone. (A deadlock's victim, 40P01, is not waited for:
# its locks went with it, and the store raises it as DatabaseUnavailable, retried as an outage is.)
LOCK_CONFLICTS = frozenset({"55P03"})
LOCK_WAIT_MAX_S = 5.0  # the longest pause between such tries (each try waits its 1 s lock_timeout too)


class _RetryLocked:
    """The recorder's wake-up to look at outcomes waiting for a row lock."""


_RETRY_LOCKED = _RetryLocked()


def _lock_conflict(exc: BaseException) -> bool:
    return isinstance(exc, DatabaseRefused) and exc.sqlstate in LOCK_CONFLICTS


class Worker:
    def __init__(
        self, settings: Settings, store: Store, client: CallbackClient, *,
        metrics: Metrics | None = None, rng: random.Random | None = None, identity: Identity | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics(tenant_labels=settings.metrics_tenant_labels)
        self._store = store
        self._client = client
        self._rng = rng or random.Random()
        self._policy = RetryPolicy(settings.retry_base_s, settings.retry_cap_s, settings.max_attempts)
        self._jobs: asyncio.Queue[Job | None] = asyncio.Queue()
        self._outcomes: asyncio.Queue[Outcome | None] = asyncio.Queue()
        # Requests being made, keyed by (id, claim token): the job, and when its request began.
        self._in_flight: dict[tuple[int, object], tuple[Job, float]] = {}
        self.metrics.watch_in_flight(self._in_flight.__len__)
        self._unfinished = 0  # claimed, and not yet recorded (nor left to its lease)
        # Outcomes waiting for another transaction to release their row, since (monotonic); by id()
        # of their jobs.
        self._locked: dict[int, tuple[Outcome, float]] = {}
        self._locked_logged: set[int] = set()  # id() of their jobs: logged once, even if locked again
        self._locked_checked = -math.inf
        self._wake = asyncio.Event()
        self._plan_now = asyncio.Event()
        self._stop = asyncio.Event()
        self._waiting_for_room = False
        # The recorder waits out a lock on a table it writes (`_wait_out_lock`): nothing is claimed.
        self._record_blocked = False
        self._until_idle = False
        listen_setting = "REMINDERD_LISTEN_DATABASE_URL" if settings.listen_database_url else None
        self._listener = Listener(
            settings.listen_url, self._notified, setting=listen_setting or "REMINDERD_DATABASE_URL"
        ) if settings.listen_url else None
        self.identity = identity or Identity.of_this_process(settings)
        self.claims = ClaimBook()
        self.heartbeat = Heartbeat(
            self.identity, store, Contact(settings.heartbeat_s), self.claims, stopping=lambda: self.stopping,
        )
        self._beat_now = asyncio.Event()
        self._reconciler = ClaimReconciler(self.identity, store, self.claims)
        self.liveness = Housekeeping.for_liveness(settings, self.heartbeat, self._reconciler, rng=self._rng)
        self.housekeeping = Housekeeping.for_daemon(
            settings, store, self.metrics, listener=self._listener, rng=self._rng,
            rescuer=Rescuer(settings, self.identity, store, self.heartbeat.contact),
        )
        self._warned_calendars: set[tuple[str, str]] = set()  # (tenant, calendar): logged once
        self._scanned_to: str | None = None  # where the claim's scan over tenants goes on from
        self._bounded = True  # a limit or a failing endpoint somewhere: the full claim (checked every second)
        self._bounded_checked = -math.inf
        self._breaker = BreakerPolicy(
            failures_to_open=settings.circuit_failures, open_s=settings.circuit_open_s,
            max_open_s=32 * settings.circuit_open_s, disable_after_s=settings.endpoint_disable_after_s,
        )
        # Claim when at least this much room is free, so a busy daemon claims in batches, not one by one.
        self._capacity = settings.concurrency + settings.batch_size
        self._claim_threshold = max(1, min(settings.batch_size, settings.concurrency) // 4)
        self.ticks = 0
        self.ready = asyncio.Event()  # set after the first successful claim
        self.stopping = False
        self._stopped_at: float | None = None  # monotonic, when stop() was first called
        # The claim loop promises to come round again before this instant; past it, it is wedged.
        self.loop_deadline = time.monotonic() + LOOP_DEADLINE_S

    @property
    def alive(self) -> bool:
        """True while the claim loop keeps its promise to come round again."""
        return time.monotonic() < self.loop_deadline

    def stop(self) -> None:
        """Stop claiming; in-flight callbacks get REMINDERD_SHUTDOWN_TIMEOUT to finish."""
        self.stopping = True
        if self._stopped_at is None:
            self._stopped_at = time.monotonic()
        self._stop.set()
        self._wake.set()
        self._beat_now.set()  # the registry says so at once

    # The whole lifecycle ---------------------------------------------------------------------

    async def run(self, *, until_idle: bool = False, due_within_s: float | None = None) -> None:
        """Claim, send and record until stop(). With `until_idle`, return (after a graceful stop)
        once nothing is claimed, in flight or unrecorded, a housekeeping round changed nothing,
        and no row is due within `due_within_s` (default: one poll interval, so the short retries
        and deferrals a test provokes are waited for, and a row due tomorrow is not)."""
        self._until_idle = until_idle
        horizon_s = self.settings.poll_interval_s if due_within_s is None else due_within_s
        if not await self._register():
            return
        if self._listener is not None:
            await connect_listener(self._listener)
        async with asyncio.TaskGroup() as group:
            liveness = group.create_task(self.liveness.run(self._beat_now))
            senders = [group.create_task(self._sender()) for _ in range(self.settings.concurrency)]
            recorder = group.create_task(self._recorder())
            # Burst mode runs housekeeping rounds itself, whenever it is otherwise idle.
            housekeeping = None if until_idle else group.create_task(self.housekeeping.run(self._plan_now))
            await self._claim_loop(horizon_s)
            handed_back = await self._shutdown(senders, recorder)
            if housekeeping is not None:
                housekeeping.cancel()
            liveness.cancel()  # beating until everything is handed back: never taken for dead mid-drain
        if self._listener is not None:
            await self._listener.close()
        await self._deregister(handed_back)

    async def _register(self) -> bool:
        """The first heartbeat, retried through an outage; False when stopped before it succeeded."""
        failures = 0
        while not self._stop.is_set():
            try:
                await self.heartbeat.run_once()
                return True
            except Exception as exc:
                failures += 1
                delay_s = self._db_backoff_s(failures)
                log.error("register_failed", error=describe(exc), retry_in_s=round(delay_s, 2))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay_s)
        return False

    async def _deregister(self, handed_back: bool) -> None:
        """A clean exit deletes the daemon's row, after handing back any claim whose reply was
        lost. With rows still held (an outcome or a release that could not be written), the row
        stays: silent, it is taken for dead and its rows are rescued by another daemon."""
        if self._store.health.failing_since is not None:  # not answering: no more waiting on it
            handed_back = False
        try:
            if handed_back:
                await self._reconciler.run_once()  # nothing is in flight now: every picked row is an orphan
            if handed_back and not self.claims.holding:
                await self._store.deregister(self.identity.id)
                log.info("deregistered", daemon=str(self.identity.id))
                return
        except Exception as exc:
            log.error("deregister_failed", daemon=str(self.identity.id), error=describe(exc),
                      consequence="its row is found silent and deleted by another daemon")
            return
        log.warning("registration_kept", daemon=str(self.identity.id), rows=self.claims.holding,
                    consequence="the rows still held are rescued once another daemon finds this one silent")

    async def _shutdown(self, senders: list[asyncio.Task[None]], recorder: asyncio.Task[None]) -> bool:
        """Drain; True when every claimed row was recorded or handed back."""
        self.stopping = True
        unstarted = self._drain_queue()
        for _ in senders:
            self._jobs.put_nowait(None)
        log.info("stopping", in_flight=len(self._in_flight), handed_back=len(unstarted))
        _, still_running = await asyncio.wait(senders, timeout=self.settings.shutdown_timeout_s)
        for task in still_running:
            task.cancel()
        await asyncio.gather(*still_running, return_exceptions=True)
        # A request cut short may have reached the receiver: an attempt, recorded as any other
        # (in reminderd.deliveries, its attempt counted) and its row handed back, due again now.
        cut_at = time.monotonic()
        cut = [cut_short(job, round((cut_at - began) * 1000), self.settings.shutdown_timeout_s)
               for job, began in self._in_flight.values()]
        if cut:
            log.warning("shutdown_timeout", cut_short=len(cut))
        for outcome in cut:
            self._outcomes.put_nowait(outcome)
        self._outcomes.put_nowait(None)
        await recorder
        releases = [Release(job, started=False) for job in unstarted]
        released = True
        if releases:
            try:
                released = await self._with_db_retry("release", self._store.release, releases, give_up_s=10.0)
            except Exception as exc:  # their leases hand them back all the same
                log.error("release_failed", error=describe(exc), rows=len(releases))
                released = False
            if released:
                for release in releases:
                    self.claims.finished(release.job)
        log.info("stopped", released=len(releases) if released else 0)
        return released

    def _drain_queue(self) -> list[Job]:
        jobs = []
        while not self._jobs.empty():
            job = self._jobs.get_nowait()
            if job is not None:
                jobs.append(job)
        return jobs

    # Claiming --------------------------------------------------------------------------------

    async def _claim_loop(self, horizon_s: float) -> None:
        failures = 0
        empty_streak = 0
        while not self._stop.is_set():
            room = self._room()
            if room < self._claim_threshold:
                self._waiting_for_room = True
                await self._sleep(self.settings.poll_interval_s)
                continue
            want = min(room, self.settings.batch_size)
            self.loop_deadline = time.monotonic() + LOOP_DEADLINE_S
            try:
                if time.monotonic() - self._bounded_checked >= BOUNDED_CHECK_EVERY_S:
                    self._bounded = await self._store.sending_is_bounded()
                    self._bounded_checked = time.monotonic()
                async with self.claims.lock:  # the reconciler never compares while a reply is on its way
                    if self._record_blocked:  # the recorder began waiting out a lock since `room`
                        continue
                    claim = await self._store.claim_due(
                        lookback_s=self.settings.lookback_s, batch_size=want, lease_s=self.settings.lease_s,
                        backfill=self.settings.backfill, max_lateness_s=self.settings.max_lateness_s,
                        scanned_to=self._scanned_to, bounded=self._bounded, picked_by=self.identity.id,
                    )
                    jobs = claim.jobs
                    self.claims.claimed(jobs)
                if failures:  # the database answers again: say so, and compare what it says is held
                    self._beat_now.set()
                    failures = 0
                self._scanned_to = claim.scanned_to
                if claim.unreadable:
                    await self._dead_letter_unreadable(claim.unreadable)
                self.metrics.held_back(claim.held)
                self._unfinished += len(jobs)
                for job in await self._within_frequency_caps(jobs):
                    self._jobs.put_nowait(job)
                self._tick(len(jobs))
                if len(jobs) == want:
                    empty_streak = 0
                    continue  # more may be due right now
                until_due = await self._store.seconds_until_next_due(lookback_s=self.settings.lookback_s)
                until_due = self._held_back_until(claim, until_due)
                if self._until_idle and self._unfinished == 0:
                    if await self.housekeeping.run_once():
                        continue  # it changed rows: some may be due now
                    if until_due is None or until_due > horizon_s:
                        return  # idle: nothing left to do soon
                failures = 0
            except Exception as exc:
                failures += 1
                self.metrics.database_failed()
                delay_s = self._db_backoff_s(failures)
                log.error("claim_failed", error=describe(exc), retry_in_s=round(delay_s, 2))
                await self._sleep(delay_s)
                continue
            empty_streak = empty_streak + 1 if not jobs and until_due is not None and until_due <= 0 else 0
            await self._sleep(idle_delay(
                until_due, empty_streak, poll_interval_s=self.settings.poll_interval_s))

    async def _dead_letter_unreadable(self, rows: Sequence[Unreadable]) -> None:
        """Claimed rows that cannot be made jobs (a value written by hand beyond what the daemon
        can read): dead-lettered one by one, each logged, so they stop coming back to every claim.
        One that cannot be dead-lettered is handed back by the claim reconciler (never received)."""
        for row in rows:
            try:
                moved = await self._store.dead_letter_unreadable(row)
            except Exception as exc:
                log.error("unreadable_dead_letter_failed", message_id=row.id, tenant=row.tenant_id,
                          ref=row.ref_id, reason=row.reason, error=describe(exc),
                          consequence="handed back by the claim reconciler, then claimed and tried again")
                continue
            if moved:  # counted as the planner's dead letters are (the alert on them reads it)
                self.metrics.count(Event.DEAD_LETTERED, row.tenant_id)
            log.error("claim_unreadable", message_id=row.id, tenant=row.tenant_id, ref=row.ref_id,
                      reason=row.reason, dead_lettered=moved,
                      fix=f"correct the value, then SELECT reminderd.requeue({row.id}), or requeue it "
                          "on the dashboard (or cancel the message)")

    def _held_back_until(self, claim: Claim, until_due_s: float | None) -> float | None:
        """With due rows held back by limits, the loop looks again when they may go (the claim
        says when), not at once and not after the empty-claim backoff."""
        retry_s = claim.retry_in_s
        if retry_s is None:
            return until_due_s
        if any(h.reason in ("endpoint_in_flight", "circuit_half_open") for h in claim.held):
            self._waiting_for_room = True  # a callback of ours finishing frees room too
        return max(retry_s, 0.0005)

    async def _within_frequency_caps(self, jobs: list[Job]) -> list[Job]:
        """Jobs to a recipient with a frequency cap reserve their send first (one round trip for
        the batch, exact across daemons); those over the cap are recorded deferred or skipped
        without a request. The jobs to send."""
        capped_jobs: list[Job] = []
        crashed_jobs: set[int] = set()
        for job in jobs:
            if job.cap is None or job.attempt != 1:
                continue
            try:  # only a job that would be sent now reserves; a bug in the timing costs this row only
                held = before_sending(job, job.picked_at or datetime.now(UTC))
            except Exception as exc:
                self._outcomes.put_nowait(Outcome.dead(job, None, crashed("timing", job.id, exc)))
                crashed_jobs.add(id(job))
                continue
            if held is None:
                capped_jobs.append(job)
        if crashed_jobs:
            jobs = [job for job in jobs if id(job) not in crashed_jobs]
        if not capped_jobs:
            return jobs
        try:
            reservations = await self._store.reserve_contact_sends([ContactSend(job) for job in capped_jobs])
        except Exception as exc:  # nothing is sent over a cap: handed back, their attempts given back
            log.error("frequency_cap_failed", error=describe(exc), rows=len(capped_jobs),
                      retry_in_s=self.settings.retry_base_s)
            reason = (f"not sent: its frequency cap could not be checked ({describe(exc)}); "
                      f"handed back, due again in {self.settings.retry_base_s:g}s")
            for job in capped_jobs:
                self._outcomes.put_nowait(handed_back(job, reason, retry_in_s=self.settings.retry_base_s))
            refused = {id(job) for job in capped_jobs}
            return [job for job in jobs if id(job) not in refused]
        to_send = []
        for job in jobs:
            reservation = reservations.get(job.webhook_id) if job.cap is not None else None
            if reservation is not None and not reservation.granted:
                self.metrics.frequency_capped(job.tenant_id)
                try:  # a bug here costs this row only
                    outcome = capped(job, reservation.frees_at)
                except Exception as exc:
                    outcome = Outcome.dead(job, None, crashed("capped", job.id, exc))
                self._outcomes.put_nowait(outcome)
            else:
                to_send.append(job)
        return to_send

    def _room(self) -> int:
        """How many rows the claim loop may claim now: none while the recorder waits out a lock
        (what it cannot record would pile up behind it, and every row claimed meanwhile would
        wait, its lease running out)."""
        if self._record_blocked:
            return 0
        return self._capacity - self._jobs.qsize() - len(self._in_flight)

    def _tick(self, claimed: int) -> None:
        self.ticks += 1
        self.metrics.polled(claimed)
        self.ready.set()

    async def _sleep(self, timeout_s: float) -> None:
        self.loop_deadline = time.monotonic() + timeout_s + LOOP_DEADLINE_S
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout_s)
        self._wake.clear()
        self._waiting_for_room = False

    def _notified(self, payload: str) -> None:
        if payload == "plan":
            self._plan_now.set()
        self._wake.set()

    def _db_backoff_s(self, failures: int) -> float:
        return backoff_s(failures, base_s=DB_BACKOFF_BASE_S, cap_s=DB_BACKOFF_MAX_S, jitter="half",
                         rng=self._rng)

    # Sending ---------------------------------------------------------------------------------

    async def _sender(self) -> None:
        while (job := await self._jobs.get()) is not None:
            if self.claims.is_revoked(job):  # taken away before it was sent (the reconciler said so)
                log.warning("claim_revoked", message_id=job.id, tenant=job.tenant_id, ref=job.ref_id,
                            attempt=job.attempt, reason="no longer picked by this claim (rescued, lease "
                                                        "expired or cancelled): not sent")
                self.claims.finished(job)
                self._finished(1)
                continue
            if time.monotonic() + self.settings.callback_timeout_s > job.lease_deadline:
                # Waited so long in the queue that its lease could run out mid-request: another
                # daemon may redeliver it then, and sending now could send twice. Handed back
                # unsent, its attempt given back (none was made), due again where it was.
                log.warning("lease_too_short", message_id=job.id, tenant=job.tenant_id, ref=job.ref_id,
                            attempt=job.attempt, fix="raise REMINDERD_LEASE or REMINDERD_CONCURRENCY")
                self._outcomes.put_nowait(handed_back(job, LEASE_TOO_SHORT))
                continue
            if job.timing.ignored_calendar is not None:
                self._warn_if_calendar_ignored(job)
            # Timed by the claim's database time; a bug there or in decide() costs this row only.
            try:
                outcome = before_sending(job, job.picked_at or datetime.now(UTC))
            except Exception as exc:
                outcome = Outcome.dead(job, None, crashed("timing", job.id, exc))
            if outcome is None:  # not deferred, moved off a holiday, too late or finished: send it
                result = await self._send(job)
                try:
                    outcome = decide(job, result, self._policy, self._rng)
                except Exception as exc:
                    outcome = Outcome.dead(job, result, crashed("decide", job.id, exc))
            self._outcomes.put_nowait(outcome)
            # Wake the claim loop once there is room for a batch, not at every finished callback.
            if self._waiting_for_room and self._room() >= self._claim_threshold:
                self._wake.set()

    async def _send(self, job: Job) -> AttemptResult:
        key = (job.id, job.picked_at)
        self._in_flight[key] = (job, time.monotonic())
        try:
            result = await self._client.send(job)  # cancelled at shutdown timeout: stays in flight
        except Exception as exc:  # a bug costs this attempt, never the daemon
            result = AttemptResult(False, None, crashed("send", job.id, exc), 0)
        del self._in_flight[key]
        return result

    def _warn_if_calendar_ignored(self, job: Job) -> None:
        ignored = job.timing.ignored_calendar
        if ignored is not None and (job.tenant_id, ignored) not in self._warned_calendars:
            self._warned_calendars.add((job.tenant_id, ignored))
            log.error("tenant_calendar_unknown", tenant=job.tenant_id, calendar=ignored,
                      consequence="its messages are sent without public holidays",
                      fix="reminderd tenant set TENANT --calendar CODE (e.g. IN, GB, US-CA)")

    # Recording -------------------------------------------------------------------------------

    async def _recorder(self) -> None:
        stopping = False
        while not stopping:
            first = await self._next_outcome()
            batch: list[Outcome] = []
            if first is None:
                stopping = True
            elif not isinstance(first, _RetryLocked):
                batch.append(first)
            while len(batch) < RECORD_BATCH_MAX and not self._outcomes.empty():
                item = self._outcomes.get_nowait()
                if item is None:
                    stopping = True
                else:
                    batch.append(item)
            batch += await self._unlocked_outcomes(stopping)
            if batch:
                await self._write(batch)
        await self._last_locked_outcomes()

    async def _write(self, batch: list[Outcome]) -> None:
        """Record `batch`, then log each row's line, tell the claim book and the endpoints' health."""
        now_s = time.time()
        applied: set[int] = set()
        written = await self._record(batch, applied)
        self.metrics.recorded(written, now_s)
        lines: FilteringBoundLogger = log.bind()  # once per batch, not once per line
        with logs.batch():  # the batch's canonical lines in one write
            for outcome in written:
                if outcome.job.id in applied:
                    _log_outcome(lines, outcome)
                else:
                    _log_discarded(lines, outcome)
                self.claims.finished(outcome.job)
                self._locked_logged.discard(id(outcome.job))
        # By job: a refused outcome is written as its fallback; a locked row's waits (not finished).
        done = {id(outcome.job) for outcome in written}
        for outcome in batch:
            if id(outcome.job) not in done and id(outcome.job) not in self._locked:
                self.claims.left_to_lease(outcome.job)
        # A discarded outcome's attempt was made all the same: it says how the endpoint is.
        await self._observe_endpoints(written)
        self._finished(sum(1 for outcome in batch if id(outcome.job) not in self._locked))

    async def _next_outcome(self) -> Outcome | _RetryLocked | None:
        """The next outcome to record; `_RETRY_LOCKED` when outcomes wait for a row lock and none
        came within LOCKED_RETRY_S (they are looked at again)."""
        if not self._locked:
            return await self._outcomes.get()
        try:
            return await asyncio.wait_for(self._outcomes.get(), LOCKED_RETRY_S)
        except TimeoutError:
            return _RETRY_LOCKED

    async def _unlocked_outcomes(self, stopping: bool) -> list[Outcome]:
        """The outcomes waiting for a row lock whose rows are free now (one query that waits for
        nothing, at most every LOCKED_RETRY_S): recorded with the next batch, so a locked row
        never holds up the others."""
        if not self._locked or (not stopping and time.monotonic() < self._locked_checked + LOCKED_RETRY_S):
            return []
        self._locked_checked = time.monotonic()
        try:
            still = await self._store.locked_messages([outcome.job.id for outcome, _ in self._locked.values()])
        except Exception as exc:  # looked at again next time
            log.warning("locked_check_failed", error=describe(exc), rows=len(self._locked))
            return []
        free = [outcome for outcome, _ in self._locked.values() if outcome.job.id not in still]
        self._locked = {key: kept for key, kept in self._locked.items() if kept[0].job.id in still}
        return free

    async def _last_locked_outcomes(self) -> None:
        """At shutdown: outcomes still waiting for a row lock get REMINDERD_SHUTDOWN_TIMEOUT for
        it; the rest are left to their leases (their rows are redelivered once free)."""
        deadline = time.monotonic() + self.settings.shutdown_timeout_s
        while self._locked and time.monotonic() < deadline:
            free = await self._unlocked_outcomes(stopping=True)
            if free:
                await self._write(free)
            else:
                await asyncio.sleep(min(LOCKED_RETRY_S, max(0.0, deadline - time.monotonic())))
        for outcome, since in self._locked.values():
            job = outcome.job
            log.error("record_abandoned", message_id=job.id, tenant=job.tenant_id, ref=job.ref_id,
                      attempt=job.attempt, outcome=outcome.event, waited_s=round(time.monotonic() - since, 1),
                      reason="its row stayed locked by another transaction until shutdown",
                      consequence="its lease expires and it is redelivered")
            self.claims.left_to_lease(job)
        self._finished(len(self._locked))
        self._locked = {}
        self._locked_logged.clear()

    def _wait_for_lock(self, outcome: Outcome) -> None:
        """Keep `outcome` until its row is free (logged once per outcome)."""
        job = outcome.job
        if id(job) in self._locked:
            return
        self._locked[id(job)] = (outcome, time.monotonic())
        if id(job) in self._locked_logged:
            return
        self._locked_logged.add(id(job))
        log.warning("record_row_locked", message_id=job.id, tenant=job.tenant_id, ref=job.ref_id,
                    attempt=job.attempt, outcome=outcome.event,
                    reason="another transaction holds the row locked (an UPDATE left open?)",
                    consequence="its outcome is recorded once the lock is released; other rows are not held up",
                    fix="find the transaction in pg_stat_activity (wait_event_type Lock) and end it")

    async def _record(
        self, batch: list[Outcome], applied: set[int], *, lock_rounds: int = 0, fallback: bool = True,
    ) -> list[Outcome]:
        """Write a batch of outcomes; return those written, and add to `applied` the ids of the rows
        they moved on (the others were no longer picked by the same claim: discarded). Through a
        database outage the batch is retried. A row another transaction keeps locked (more than
        the statement's lock_timeout) waits on its own (`_wait_for_lock`) while the others are
        written; a lock on another table the record writes (a trigger's table, say) holds up the
        whole batch, tried again with backoff until it is written (`_wait_out_lock`: meanwhile
        nothing is claimed and the held rows keep their leases), nothing of it dead-lettered for
        that. A batch the database refuses for its content is written row by
        row, so one bad row cannot hold up the others; a row refused on its own is dead-lettered with the
        database's reason instead (a cron row would otherwise be sent again at every lease), and
        only if even that is refused is it left to its lease."""

        tries = 0
        lock_waits = 0

        async def record(outcomes: Sequence[Outcome]) -> None:
            nonlocal tries
            tries += 1
            applied.update(await self._store.record_outcomes(outcomes))

        try:
            while True:
                try:
                    if await self._with_db_retry("record", record, batch):
                        if tries > 1:  # an earlier try may have been committed, its reply lost
                            await self._confirm_written(batch, applied)
                        return batch
                    return []
                except Exception as exc:
                    if not _lock_conflict(exc):
                        if len(batch) == 1:
                            return await self._record_refused(batch[0], exc, applied) if fallback else []
                        break
                    locked = await self._locked_of(batch)
                    if locked:
                        return await self._record_around_locks(batch, applied, locked, lock_rounds, fallback)
                    lock_waits += 1
                    if not await self._wait_out_lock(batch, lock_waits, exc):
                        return []
        finally:
            if lock_waits and self._record_blocked:  # the lock is gone (or given up): claim again
                self._record_blocked = False
                self._wake.set()
        written: list[Outcome] = []
        for outcome in batch:
            written += await self._record([outcome], applied, fallback=fallback)
        return written

    async def _locked_of(self, batch: list[Outcome]) -> set[int]:
        """The ids of `batch`'s rows another transaction holds locked now (all, if that cannot be
        told: they wait for their rows, looked at again)."""
        try:
            return await self._with_db_retry_value(
                "record", self._store.locked_messages, [outcome.job.id for outcome in batch])
        except Exception as exc:
            log.warning("locked_check_failed", error=describe(exc), rows=len(batch))
            return {outcome.job.id for outcome in batch}

    async def _wait_out_lock(self, batch: list[Outcome], waits: int, exc: Exception) -> bool:
        """The batch's record was held up by a lock on a table it writes other than its rows (no
        row of it is locked): wait before trying the whole batch again, longer each time (never
        more than a quarter of the lease). Meanwhile the claim loop claims nothing, and each wait
        first extends the leases of every row this daemon holds (the batch, the outcomes behind
        it, the callbacks in flight), so the lease reaper hands none of them to another claim.
        False once stopping and REMINDERD_SHUTDOWN_TIMEOUT would pass: the rows are left to
        their leases."""
        cap_s = min(LOCK_WAIT_MAX_S, self.settings.lease_s / 4)
        delay_s = backoff_s(waits, base_s=DB_BACKOFF_BASE_S, cap_s=cap_s, jitter="half", rng=self._rng)
        if self._stopped_at is not None and (
                time.monotonic() + delay_s > self._stopped_at + self.settings.shutdown_timeout_s):
            log.error("record_abandoned", rows=len(batch), error=describe(exc),
                      reason="a lock on a table the record writes was still held at shutdown",
                      consequence="leases expire and the rows are redelivered")
            return False
        self._record_blocked = True
        async with self.claims.lock:  # a claim under way ends first (its rows get leases below); none starts
            pass
        kept = await self._extend_leases()
        log.warning("record_lock_wait", rows=len(batch), tries=waits, retry_in_s=round(delay_s, 2),
                    message_ids=[outcome.job.id for outcome in batch[:10]], error=describe(exc),
                    leases_extended=kept,
                    reason="another transaction holds a lock on a table the record writes (a trigger's table?)",
                    consequence="recorded once the lock is released; until then this daemon claims "
                                "nothing and extends the leases of the rows it holds at each try, so none "
                                "is sent again",
                    fix="find the transaction in pg_stat_activity (wait_event_type Lock) and end it")
        if self.stopping:
            await asyncio.sleep(delay_s)
        else:  # a stop request cuts the wait short and starts the shutdown's deadline
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay_s)
        return True

    async def _extend_leases(self) -> int | None:
        """A lease of REMINDERD_LEASE from now for every row this daemon holds and is not done
        with; how many got it (None when the query failed: the leases run on, logged)."""
        claims = [(message_id, token) for message_id, token in self.claims.held if token is not None]
        if not claims:
            return 0
        try:
            return len(await self._store.extend_leases(claims, self.settings.lease_s))
        except Exception as exc:
            log.error("lease_extend_failed", rows=len(claims), error=describe(exc),
                      consequence="rows whose lease runs out before their outcome is recorded are "
                                  "claimed again and sent again")
            return None

    async def _record_around_locks(
        self, batch: list[Outcome], applied: set[int], locked: set[int], rounds: int, fallback: bool,
    ) -> list[Outcome]:
        """Rows of `batch` (`locked`) were locked: the outcomes of the rows locked now wait, the
        others are written (again, bounded, if another lock is met meanwhile)."""
        free = [outcome for outcome in batch if outcome.job.id not in locked]
        if rounds >= LOCK_ROUNDS_MAX:  # locks come and go faster than we write: each waits alone
            free, locked = [], {outcome.job.id for outcome in batch}
        for outcome in batch:
            if outcome.job.id in locked:
                self._wait_for_lock(outcome)
        return await self._record(free, applied, lock_rounds=rounds + 1, fallback=fallback) if free else []

    async def _record_refused(self, outcome: Outcome, exc: Exception, applied: set[int]) -> list[Outcome]:
        """The database refused this row's outcome: dead-letter it with the reason instead, its
        attempt logged as any other; if even that is refused (a table the record writes besides
        the row refused it), a delivered row alone is dead-lettered (store.dead_letter_refused),
        so the receiver does not get it again at every lease. An attempt that was not delivered is
        left to its lease then: made again once the lease runs out, as after a daemon's death."""
        job = outcome.job
        reason = getattr(exc, "message", None) or describe(exc)
        dead = unrecorded(outcome, reason)
        written = await self._record([dead], applied, fallback=False)
        if not written and dead.delivered and id(job) not in self._locked:
            written = await self._dead_letter_row_alone(dead, applied)
        if written:
            moved = job.id in applied
            log.error("record_rejected", message_id=job.id, tenant=job.tenant_id, ref=job.ref_id,
                      attempt=job.attempt, outcome=outcome.event, error=describe(exc),
                      consequence="dead-lettered instead (requeue it once the row is fixed)" if moved
                      else "not recorded: the row is no longer picked by this claim; its new owner decides")
        elif id(job) not in self._locked:
            log.critical("record_fallback_rejected", message_id=job.id, tenant=job.tenant_id, ref=job.ref_id,
                         attempt=job.attempt, outcome=outcome.event, delivered=dead.delivered,
                         error=describe(exc),
                         consequence="left to its lease: it is sent again each time its lease runs out"
                         if dead.delivered else "left to its lease: the attempt (not delivered, not logged) "
                                                "is made again once its lease runs out",
                         fix="correct the row (or cancel it) in reminderd.scheduled_messages")
        return written

    async def _dead_letter_row_alone(self, dead: Outcome, applied: set[int]) -> list[Outcome]:
        """`dead`, written to its row only; [] when even that is refused. A row no longer this
        claim's is not moved (its new owner decides): `dead` is returned unapplied, logged as
        discarded."""
        try:
            moved = await self._with_db_retry_value("record", self._store.dead_letter_refused, dead)
        except Exception as exc:
            log.warning("record_row_alone_failed", message_id=dead.job.id, error=describe(exc))
            return []
        if moved:
            applied.add(dead.job.id)
        return [dead]

    async def _confirm_written(self, batch: list[Outcome], applied: set[int]) -> None:
        """Add to `applied` the outcomes of `batch` that an earlier, unanswered try wrote."""
        missing = [outcome for outcome in batch if outcome.job.id not in applied]
        if not missing:
            return
        try:
            applied.update(await self._store.outcomes_written(missing))
        except Exception as exc:  # they are logged as discarded: the database had the last word
            log.warning("confirm_failed", error=describe(exc), rows=len(missing))

    async def _observe_endpoints(self, written: Sequence[Outcome]) -> None:
        """What the attempts said about their tenant endpoints' health (the circuit breaker,
        disabling: breaker.py). Written only when something is wrong or was: a healthy endpoint
        costs nothing."""
        seen: dict[tuple[str, str], Observation] = {}
        for outcome in written:
            job, result = outcome.job, outcome.result
            if result is None or job.endpoint is None or result.refused or result.poison:
                continue
            if outcome.event is Event.RELEASED:  # cut short at shutdown: the endpoint said nothing
                continue
            key = (job.tenant_id, job.endpoint)
            gone = result.status_code == 410
            if result.delivered and not job.endpoint_unhealthy and key not in seen:
                continue
            before = seen.get(key, Observation(job.tenant_id, job.endpoint))
            seen[key] = before.merged(result.delivered, not result.delivered, gone, result.error)
        observations = [o for o in seen.values() if o.trailing_failures or o.delivered]
        if not observations:
            return
        try:
            changes = await self._with_db_retry_value(
                "endpoint_health", self._store.update_endpoint_health, observations, self._breaker)
        except Exception as exc:  # health is advisory: the next failures are observed again
            log.error("endpoint_health_failed", error=describe(exc))
            return
        self.metrics.endpoint_changed(changes)
        if any(item.change != "closed" for item in changes):
            self._bounded = True  # this daemon's own next claim holds the endpoint's rows
        for item in changes:
            h = item.health
            fields = {"tenant": h.tenant_id, "endpoint": h.endpoint}
            if item.change == "opened":
                log.warning("circuit_opened", **fields, failures=h.consecutive_failures,
                            until=h.circuit_open_until.isoformat() if h.circuit_open_until else None,
                            error=h.last_error)
            elif item.change == "closed":
                log.info("circuit_closed", **fields)
            else:
                log.error(Event.ENDPOINT_DISABLED, **fields, reason=h.disabled_reason, paused=item.paused,
                          fix=f"reminderd tenant enable-endpoint {h.tenant_id}")

    async def _with_db_retry_value(self, what: str, call: Callable[..., Awaitable[T]], *args: Any) -> T:
        """One call retried briefly through a short database outage."""
        for failures in range(1, 4):
            try:
                return await call(*args)
            except DatabaseUnavailable as exc:
                if failures == 3 or self.stopping:
                    raise
                delay_s = self._db_backoff_s(failures)
                log.warning(f"{what}_failed", error=describe(exc), retry_in_s=round(delay_s, 2))
                await asyncio.sleep(delay_s)
        raise AssertionError("unreachable")

    def _finished(self, count: int) -> None:
        """`count` claimed jobs are done with (recorded, or left to their lease)."""
        self._unfinished -= count
        if self._until_idle and self._unfinished == 0:
            self._wake.set()  # burst mode: the claim loop may be idle now

    # Plumbing --------------------------------------------------------------------------------

    async def _with_db_retry(
        self, what: str, call: Callable[[Sequence[T]], Awaitable[None]], argument: Sequence[T],
        *, give_up_s: float | None = None,
    ) -> bool:
        """Retry a write through a database outage. Give up after `give_up_s`, or once stopping
        after REMINDERD_SHUTDOWN_TIMEOUT: the leases then hand the rows to the next daemon. Any
        other error is raised at once."""
        deadline = None if give_up_s is None else time.monotonic() + give_up_s
        failures = 0
        while True:
            try:
                await call(argument)
                return True
            except DatabaseUnavailable as exc:
                failures += 1
                if deadline is None and self.stopping:
                    deadline = time.monotonic() + self.settings.shutdown_timeout_s
                delay_s = self._db_backoff_s(failures)
                if deadline is not None and time.monotonic() + delay_s > deadline:
                    log.error(f"{what}_abandoned", error=describe(exc), rows=len(argument),
                              consequence="leases expire and the rows are redelivered")
                    return False
                log.error(f"{what}_failed", error=describe(exc), retry_in_s=round(delay_s, 2))
                if self.stopping:
                    await asyncio.sleep(delay_s)
                else:  # a stop request cuts the wait short and starts the shutdown deadline
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), delay_s)


def _log_discarded(lines: FilteringBoundLogger, outcome: Outcome) -> None:
    """An outcome that came too late: the row was rescued, reaped or cancelled meanwhile (its
    attempt is in reminderd.deliveries; the row's new owner decides what happens to it)."""
    job, result = outcome.job, outcome.result
    lines.warning("outcome_discarded", message_id=job.id, tenant=job.tenant_id, ref=job.ref_id,
                  webhook_id=job.webhook_id, attempt=job.attempt, outcome=outcome.event,
                  status_code=result.status_code if result else None,
                  reason="the row is no longer picked by this claim (rescued, lease expired or cancelled)")


def _log_outcome(lines: FilteringBoundLogger, outcome: Outcome) -> None:
    """The canonical line for one claimed row, named by the event the audit trail records."""
    job, result = outcome.job, outcome.result
    fields: dict[str, Any] = {
        "message_id": job.id,
        "tenant": job.tenant_id,
        "ref": job.ref_id,
        "webhook_id": job.webhook_id,
        "attempt": job.attempt,
    }
    if result is None:  # held back before any request
        level = lines.error if outcome.event is Event.DEAD_LETTERED else lines.info
        level(outcome.event, **fields, status=outcome.next_status, reason=outcome.last_error,
              fire_at=outcome.next_fire_at.isoformat() if outcome.next_fire_at else None)
        return
    fields.update(status_code=result.status_code, latency_ms=result.duration_ms)
    if outcome.event is Event.FIRED:
        lines.info(outcome.event, **fields)
    elif outcome.event is Event.RETRY_SCHEDULED:
        lines.warning(outcome.event, **fields, error=result.error, retry_in_s=round(outcome.retry_in_s or 0, 2))
    elif outcome.event is Event.RELEASED:  # cut short at shutdown, handed back
        lines.warning(outcome.event, **fields, status=outcome.next_status, error=result.error)
    else:
        lines.error(outcome.event, **fields, status=outcome.next_status, error=outcome.last_error)


def idle_delay(until_due_s: float | None, empty_streak: int, *, poll_interval_s: float) -> float:
    """How long the claim loop sleeps: until just after the next known fire_at
    (WAKE_AFTER_DUE_S), never longer than the poll interval.

    A row that is due but could not be claimed (another daemon is claiming it right now) is
    looked at again soon, backing off so a stuck row cannot make the loop spin.
    """
    if until_due_s is None:
        return poll_interval_s
    floor = backoff_s(empty_streak, base_s=0.01, cap_s=5.12, jitter="none") if empty_streak else 0.0005
    return min(poll_interval_s, max(until_due_s + WAKE_AFTER_DUE_S, floor))
