"""The daemon's loop: claim due rows, send their callbacks concurrently, record outcomes in batches.

Tasks, all inside one TaskGroup:
- the claim loop wakes on whichever comes first: a NOTIFY, the next known fire_at, the poll
  interval, room freed by a finished callback, or a stop request;
- `concurrency` senders each POST one callback at a time;
- the recorder writes finished attempts in batches, one round trip for many;
- housekeeping reaps expired leases, expires missed one-offs and plans recurring rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import structlog

from .callback import AttemptResult, CallbackClient
from .jobs import Job
from .metrics import Metrics
from .outcome import Outcome, before_sending, decide
from .retry import RetryPolicy
from .schedule import InvalidSchedule, Timing, first_occurrence
from .settings import Settings
from .store import CONNECTION_ERRORS, Listener, Plan, Release, Store

log = structlog.get_logger("reminderd")
T = TypeVar("T")

RECORD_BATCH_MAX = 1000
DB_BACKOFF_MAX_S = 30.0
QUERY_DEADLINE_S = 90.0  # a claim query takes milliseconds; asyncpg's command timeout is 60 s
QUEUE_DEPTH_EVERY_S = 30.0
PRUNE_EVERY_S = 60.0
PRUNE_BATCHES_PER_ROUND = 20  # at most 20,000 rows of each kind a minute, in short transactions
PRUNE_BATCH = 1000


class Worker:
    def __init__(
        self, settings: Settings, store: Store, client: CallbackClient, *,
        metrics: Metrics | None = None, rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics(tenant_labels=settings.metrics_tenant_labels)
        self._store = store
        self._client = client
        self._rng = rng or random.Random()
        self._policy = RetryPolicy(settings.retry_base_s, settings.retry_cap_s, settings.max_attempts)
        self._jobs: asyncio.Queue[Job | None] = asyncio.Queue()
        self._outcomes: asyncio.Queue[Outcome | None] = asyncio.Queue()
        self._in_flight: dict[tuple[int, object], Job] = {}  # keyed by (id, claim token)
        self._wake = asyncio.Event()
        self._plan_now = asyncio.Event()
        self._stop = asyncio.Event()
        self._waiting_for_room = False
        self._listener = Listener(settings.listen_url, self._notified) if settings.listen_url else None
        # Claim when at least this much room is free, so a busy daemon claims in batches, not one by one.
        self._capacity = settings.concurrency + settings.batch_size
        self._claim_threshold = max(1, min(settings.batch_size, settings.concurrency) // 4)
        self.ticks = 0
        self.ready = asyncio.Event()  # set after the first successful claim
        self.stopping = False
        # The claim loop promises to come round again before this instant; past it, it is wedged.
        self.loop_deadline = time.monotonic() + QUERY_DEADLINE_S
        self._queue_depth_due = 0.0
        self._prune_due = time.monotonic() + PRUNE_EVERY_S / 4

    @property
    def alive(self) -> bool:
        """True while the claim loop keeps its promise to come round again."""
        return time.monotonic() < self.loop_deadline

    def stop(self) -> None:
        """Stop claiming; in-flight callbacks get REMINDERD_SHUTDOWN_TIMEOUT to finish."""
        self.stopping = True
        self._stop.set()
        self._wake.set()
        self._plan_now.set()

    # The whole lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        await self._connect_listener()
        async with asyncio.TaskGroup() as group:
            senders = [group.create_task(self._sender()) for _ in range(self.settings.concurrency)]
            recorder = group.create_task(self._recorder())
            housekeeping = group.create_task(self._housekeeping())
            await self._claim_loop()
            await self._shutdown(senders, recorder)
            housekeeping.cancel()
        if self._listener is not None:
            await self._listener.close()

    async def _shutdown(self, senders: list[asyncio.Task[None]], recorder: asyncio.Task[None]) -> None:
        unstarted = self._drain_queue()
        for _ in senders:
            self._jobs.put_nowait(None)
        log.info("stopping", in_flight=len(self._in_flight), handed_back=len(unstarted))
        _, still_running = await asyncio.wait(senders, timeout=self.settings.shutdown_timeout_s)
        for task in still_running:
            task.cancel()
        await asyncio.gather(*still_running, return_exceptions=True)
        cut_short = [Release(job, started=True) for job in self._in_flight.values()]
        if cut_short:
            log.warning("shutdown_timeout", cut_short=len(cut_short))
        self._outcomes.put_nowait(None)
        await recorder
        releases = [Release(job, started=False) for job in unstarted] + cut_short
        if releases:
            try:
                await self._with_db_retry("release", self._store.release, releases, give_up_s=10.0)
            except Exception as exc:  # their leases hand them back all the same
                log.error("release_failed", error=_describe(exc), rows=len(releases))
        log.info("stopped", released=len(releases))

    def _drain_queue(self) -> list[Job]:
        jobs = []
        while not self._jobs.empty():
            job = self._jobs.get_nowait()
            if job is not None:
                jobs.append(job)
        return jobs

    # Claiming --------------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        failures = 0
        empty_streak = 0
        while not self._stop.is_set():
            room = self._capacity - self._jobs.qsize() - len(self._in_flight)
            if room < self._claim_threshold:
                self._waiting_for_room = True
                await self._sleep(self.settings.poll_interval_s)
                continue
            want = min(room, self.settings.batch_size)
            self.loop_deadline = time.monotonic() + QUERY_DEADLINE_S
            try:
                jobs = await self._store.claim(
                    lookback_s=self.settings.lookback_s, batch_size=want, lease_s=self.settings.lease_s,
                    backfill=self.settings.backfill, max_lateness_s=self.settings.max_lateness_s,
                )
                for job in jobs:
                    self._jobs.put_nowait(job)
                self._tick(len(jobs))
                if len(jobs) == want:
                    empty_streak = 0
                    continue  # more may be due right now
                until_due = await self._store.seconds_until_next_due(lookback_s=self.settings.lookback_s)
                failures = 0
            except Exception as exc:
                failures += 1
                self.metrics.database_failed()
                delay = min(DB_BACKOFF_MAX_S, 0.2 * 2 ** min(failures, 10)) * self._rng.uniform(0.5, 1)
                log.error("claim_failed", error=_describe(exc), retry_in_s=round(delay, 2))
                await self._sleep(delay)
                continue
            empty_streak = empty_streak + 1 if not jobs and until_due is not None and until_due <= 0 else 0
            await self._sleep(self._idle_delay(until_due, empty_streak))

    def _idle_delay(self, until_due_s: float | None, empty_streak: int) -> float:
        """Sleep until the next known fire_at, never longer than the poll interval.

        A row that is due but could not be claimed (another daemon is claiming it right now) is
        looked at again soon, backing off so a stuck row cannot make the loop spin.
        """
        if until_due_s is None:
            return self.settings.poll_interval_s
        floor = 0.005 * 2 ** min(empty_streak, 10) if empty_streak else 0.0005
        return min(self.settings.poll_interval_s, max(until_due_s, floor))

    def _tick(self, claimed: int) -> None:
        self.ticks += 1
        self.metrics.polled(claimed)
        self.ready.set()

    async def _sleep(self, timeout_s: float) -> None:
        self.loop_deadline = time.monotonic() + timeout_s + QUERY_DEADLINE_S
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout_s)
        self._wake.clear()
        self._waiting_for_room = False

    def _notified(self, payload: str) -> None:
        if payload == "plan":
            self._plan_now.set()
        self._wake.set()

    # Sending ---------------------------------------------------------------------------------

    async def _sender(self) -> None:
        while (job := await self._jobs.get()) is not None:
            if time.monotonic() + self.settings.callback_timeout_s > job.lease_deadline:
                # Waited so long in the queue that its lease could run out mid-request: another
                # daemon may redeliver it then. Leave it to the lease; sending now could send twice.
                log.warning("lease_too_short", message_id=job.id, attempt=job.attempt,
                            fix="raise REMINDERD_LEASE or REMINDERD_CONCURRENCY")
                continue
            held = _before_sending(job)
            if held is not None:  # deferred, moved off a holiday, too late, finished: no request
                self._outcomes.put_nowait(held)
                if self._waiting_for_room:
                    self._wake.set()
                continue
            key = (job.id, job.picked_at)
            self._in_flight[key] = job
            self.metrics.in_flight.inc()
            try:
                result = await self._attempt(job)  # cancelled at shutdown timeout: stays in flight
            finally:
                self.metrics.in_flight.dec()
            del self._in_flight[key]
            self._outcomes.put_nowait(self._decide(job, result))
            if self._waiting_for_room:
                self._wake.set()

    def _decide(self, job: Job, result: AttemptResult) -> Outcome:
        """decide(); a bug there costs this row (dead, with the reason, requeue-able), never the daemon."""
        try:
            return decide(job, result, self._policy, self._rng)
        except Exception as exc:
            log.exception("decide_crashed", message_id=job.id)
            reason = f"internal error after the attempt: {_describe(exc)}"
            return Outcome(job, result, "dead", "dead", last_error=reason)

    async def _attempt(self, job: Job) -> AttemptResult:
        try:
            return await self._client.send(job)
        except Exception as exc:  # a bug must cost one attempt, never the daemon
            log.exception("send_crashed", message_id=job.id)
            return AttemptResult(False, None, f"internal error: {_describe(exc)}", 0)

    # Recording -------------------------------------------------------------------------------

    async def _recorder(self) -> None:
        stopping = False
        while not stopping:
            first = await self._outcomes.get()
            batch: list[Outcome] = []
            if first is None:
                stopping = True
            else:
                batch.append(first)
            while len(batch) < RECORD_BATCH_MAX and not self._outcomes.empty():
                item = self._outcomes.get_nowait()
                if item is None:
                    stopping = True
                else:
                    batch.append(item)
            if batch:
                now_s = time.time()
                for outcome in await self._record(batch):
                    _log_outcome(outcome)
                    self.metrics.recorded(outcome, now_s)

    async def _record(self, batch: list[Outcome]) -> list[Outcome]:
        """Write a batch of outcomes; return those written. Through a database outage the batch is
        retried; a batch the database refuses for its content is written row by row, so one bad row
        cannot hold up the others (that row's lease then runs out and it is redelivered)."""
        try:
            if await self._with_db_retry("record", self._store.record_outcomes, batch):
                return batch
            return []
        except Exception as exc:
            if len(batch) == 1:
                log.error("record_rejected", message_id=batch[0].job.id, error=_describe(exc))
                return []
        written: list[Outcome] = []
        for outcome in batch:
            written += await self._record([outcome])
        return written

    # Housekeeping ----------------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._plan_now.wait(), self.settings.poll_interval_s)
            self._plan_now.clear()
            try:
                await self._housekeep_once()
            except Exception as exc:
                log.error("housekeeping_failed", error=_describe(exc))
                await asyncio.sleep(self._rng.uniform(1, 2) * self.settings.poll_interval_s)

    async def _housekeep_once(self) -> None:
        if self._listener is not None and not self._listener.connected:
            await self._connect_listener()
        for row in await self._store.reap_expired_leases():
            log.warning("lease_expired", message_id=row["id"], tenant=row["tenant_id"],
                        ref=row["ref_id"], attempt=row["attempts"])
        for row in await self._store.expire_missed(lookback_s=self.settings.lookback_s):
            log.warning("expired", message_id=row["id"], tenant=row["tenant_id"], ref=row["ref_id"],
                        scheduled_for=row["scheduled_for"].isoformat())
            self.metrics.count("expired", row["tenant_id"])
        await self._plan_recurring()
        if time.monotonic() >= self._queue_depth_due:
            self._queue_depth_due = time.monotonic() + QUEUE_DEPTH_EVERY_S
            by_status, due_not_picked = await self._store.queue_depth()
            self.metrics.set_queue_depth(by_status, due_not_picked)
        if time.monotonic() >= self._prune_due:
            self._prune_due = time.monotonic() + PRUNE_EVERY_S
            await self.prune()

    async def prune(self) -> tuple[int, int, int]:
        """Delete finished rows and old history past their retention, in small batches."""
        totals = [0, 0, 0]
        for _ in range(PRUNE_BATCHES_PER_ROUND):
            batch = await self._store.prune_batch(
                keep_finished_days=self.settings.retention_days,
                keep_dead_days=self.settings.dead_retention_days,
                keep_history_days=self.settings.history_retention_days,
            )
            totals = [total + count for total, count in zip(totals, batch, strict=True)]
            if max(batch) < PRUNE_BATCH:
                break
        if any(totals):
            log.info("pruned", messages=totals[0], deliveries=totals[1], events=totals[2])
        return totals[0], totals[1], totals[2]

    async def _plan_recurring(self) -> None:
        rows = await self._store.recurring_to_plan(
            lookback_s=self.settings.lookback_s, backfill=self.settings.backfill,
            max_lateness_s=self.settings.max_lateness_s,
        )
        if not rows:
            return
        plans = [self._plan_safely(row) for row in rows]
        for row in await self._store.plan_recurring(plans):
            if row["status"] == "finished":
                log.info("finished", message_id=row["id"], tenant=row["tenant_id"], ref=row["ref_id"],
                         note=row["last_error"])
            elif row["status"] == "dead":
                log.error("dead", message_id=row["id"], tenant=row["tenant_id"], ref=row["ref_id"],
                          error=row["last_error"])
            else:
                log.info("planned", message_id=row["id"], tenant=row["tenant_id"], ref=row["ref_id"],
                         fire_at=row["fire_at"].isoformat(), note=row["last_error"])

    def _plan_safely(self, row: Mapping[str, Any]) -> Plan:
        try:
            return self._plan(row)
        except Exception as exc:  # a bug costs this row, not every planning round
            log.exception("plan_crashed", message_id=row["id"])
            reason = f"internal error while planning: {_describe(exc)}"
            return Plan(row["id"], row["fire_at"], None, "dead", reason)

    def _plan(self, row: Mapping[str, Any]) -> Plan:
        seen = row["fire_at"]
        timing = Timing.from_row(row)
        try:
            timing.check()
            following, note = first_occurrence(timing, row["db_now"])
        except InvalidSchedule as exc:
            return Plan(row["id"], seen, None, "dead", f"cannot schedule: {exc}")
        if seen is not None:
            missed = (
                f"missed occurrence due {seen.isoformat()} ({_seconds(row['db_now'] - seen)} late, "
                f"beyond REMINDERD_LOOKBACK={self.settings.lookback_s:g}s, the hard limit): "
                "skipped to the next one"
            )
            note = f"{missed}; {note}" if note else missed
        return Plan(row["id"], seen, following, "pending" if following else "finished", note)

    # Plumbing --------------------------------------------------------------------------------

    async def _connect_listener(self) -> None:
        if self._listener is None:
            return
        try:
            await self._listener.connect()
        except Exception as exc:
            log.warning("listen_failed", error=_describe(exc), fallback="polling")

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
            except CONNECTION_ERRORS as exc:
                failures += 1
                if deadline is None and self.stopping:
                    deadline = time.monotonic() + self.settings.shutdown_timeout_s
                delay = min(DB_BACKOFF_MAX_S, 0.2 * 2 ** min(failures, 10)) * self._rng.uniform(0.5, 1)
                if deadline is not None and time.monotonic() + delay > deadline:
                    log.error(f"{what}_abandoned", error=_describe(exc), rows=len(argument),
                              consequence="leases expire and the rows are redelivered")
                    return False
                log.error(f"{what}_failed", error=_describe(exc), retry_in_s=round(delay, 2))
                if self.stopping:
                    await asyncio.sleep(delay)
                else:  # a stop request cuts the wait short and starts the shutdown deadline
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), delay)


_warned_calendars: set[tuple[str, str]] = set()


def _before_sending(job: Job) -> Outcome | None:
    """before_sending, with the claim's database time as now; a bug costs the row, not the daemon."""
    ignored = job.timing.ignored_calendar
    if ignored is not None and (job.tenant_id, ignored) not in _warned_calendars:
        _warned_calendars.add((job.tenant_id, ignored))
        log.error("tenant_calendar_unknown", tenant=job.tenant_id, calendar=ignored,
                  consequence="its messages are sent without public holidays",
                  fix="reminderd tenant set TENANT --calendar CODE (e.g. IN, GB, US-CA)")
    try:
        return before_sending(job, job.picked_at or datetime.now(UTC))
    except Exception as exc:
        log.exception("timing_crashed", message_id=job.id)
        return Outcome(job, None, "dead", "dead", last_error=f"internal error while timing: {_describe(exc)}")


def _log_outcome(outcome: Outcome) -> None:
    job, result = outcome.job, outcome.result
    fields: dict[str, Any] = {
        "message_id": job.id,
        "tenant": job.tenant_id,
        "ref": job.ref_id,
        "webhook_id": job.webhook_id,
        "attempt": job.attempt,
    }
    if result is None:  # held back before any request
        level = log.error if outcome.event == "dead" else log.info
        level(outcome.event, **fields, status=outcome.next_status, reason=outcome.last_error,
              fire_at=outcome.next_fire_at.isoformat() if outcome.next_fire_at else None)
        return
    fields.update(status_code=result.status_code, latency_ms=result.duration_ms)
    if outcome.event == "delivered":
        log.info("delivered", **fields)
    elif outcome.event == "retry":
        log.warning("retry", **fields, error=result.error, retry_in_s=round(outcome.retry_in_s or 0, 2))
    else:
        log.error(outcome.event, **fields, error=outcome.last_error)


def _describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _seconds(delta: timedelta) -> str:
    return f"{delta.total_seconds():.0f}s"
