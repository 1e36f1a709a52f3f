"""`POST /v1/messages` one at a time, written to the database together: the single schedules of
one API key that are waiting at the same moment go in one reminderd.schedule_many() call, not one
call each. The database's cost of a call is mostly fixed (a transaction, an INSERT statement with
its triggers and checks, a round trip), so ten messages in one call cost about what two cost
alone, and a busy server answers each of them sooner.

Nothing else changes. Each request still gets its own answer: its item is judged alone
(`atomic` false: a refused item fails only itself, with the same SQLSTATE, message and detail as
on its own), in the order the requests arrived (the same ref twice: the later replaces the
earlier, as two calls in a row would), and it is answered only once the call that wrote it has
committed. A call that fails as a whole (the database unreachable) fails each of its requests, as
each would have failed alone. A call refused for what it holds (one request's value the database
refused for the whole array, or a bug) is rolled back and made again one request at a time, so
that a bad request fails only itself and the others are written, each with its own answer.

There is no waiting for company: a request that finds fewer than `max_in_flight` calls of its key
running starts one at once, alone if need be; the others join the next call, which starts as
soon as one finishes. So at low load a request costs what it did, and under load the calls grow
to what arrived meanwhile (at most `max_batch`).

A request with an Idempotency-Key is not batched: its answer is stored in its own transaction.
A call is made for one key, so the audit trail of everything it writes names that key
(`acting_for`, events.on_behalf_of), as each request's own transaction would have.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NamedTuple

import structlog

from .exceptions import DatabaseUnavailable, SchemaMissing
from .rows import ItemScheduled
from .validation import ScheduleRequest

log = structlog.get_logger("reminderd.api")

# (tenant, requests, atomic, acting_for) -> one row per request, in order
ScheduleMany = Callable[[str, Sequence[ScheduleRequest], bool, str], Coroutine[Any, Any, list[ItemScheduled]]]


class _Waiting(NamedTuple):
    request: ScheduleRequest
    acting_for: str  # the key's name for the audit trail: the same for every request of one key
    answer: asyncio.Future[ItemScheduled]


class Batcher:
    """Single schedules, by key, into as few schedule_many() calls as the load allows."""

    def __init__(self, schedule_many: ScheduleMany, *, max_in_flight: int = 2, max_batch: int = 1000) -> None:
        self._schedule_many = schedule_many
        self._max_in_flight = max_in_flight
        self._max_batch = max_batch
        self._waiting: dict[tuple[str, int], list[_Waiting]] = {}
        self._in_flight: dict[tuple[str, int], int] = {}
        self._calls: set[asyncio.Task[None]] = set()

    async def schedule(self, tenant_id: str, key_id: int, request: ScheduleRequest, *, acting_for: str = ""
                       ) -> ItemScheduled:
        """What schedule_many() says of `request` (scheduled for `tenant_id` with the key
        `key_id`, whose name the audit trail records as `acting_for`), written with whatever else
        that key has waiting."""
        key = (tenant_id, key_id)
        answer: asyncio.Future[ItemScheduled] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(_Waiting(request, acting_for, answer))
        if self._in_flight.get(key, 0) < self._max_in_flight:
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
            call = asyncio.create_task(self._write(key))
            self._calls.add(call)
            call.add_done_callback(self._calls.discard)
        return await answer

    async def _write(self, key: tuple[str, int]) -> None:
        """Calls for `key` until nothing is waiting."""
        batch: list[_Waiting] = []
        try:
            while batch := self._take(key):
                try:
                    rows = await self._schedule_many(
                        key[0], [w.request for w in batch], len(batch) == 1, batch[0].acting_for
                    )
                except Exception as exc:
                    if len(batch) > 1 and not _whole(exc):  # for what one of them holds: each alone
                        log.warning("schedule_batch_retried_alone", tenant=key[0], requests=len(batch),
                                    error=type(exc).__name__)
                        await self._one_by_one(key[0], batch)
                        continue
                    for waiting in batch:  # the call failed as a whole: so does each request
                        if not waiting.answer.done():
                            waiting.answer.set_exception(exc)
                    continue
                for waiting, row in zip(batch, rows, strict=True):
                    if not waiting.answer.done():
                        waiting.answer.set_result(row)
        except asyncio.CancelledError:  # the server stopping: nobody waits in vain
            for waiting in [*batch, *self._waiting.pop(key, [])]:
                waiting.answer.cancel()
            raise
        finally:
            self._in_flight[key] -= 1
            if not self._in_flight[key]:
                del self._in_flight[key]

    async def _one_by_one(self, tenant_id: str, batch: list[_Waiting]) -> None:
        """Each request of a refused call in a call of its own, in order, each with its answer; an
        outage meanwhile fails the rest, as it fails any call."""
        for position, waiting in enumerate(batch):
            if waiting.answer.done():
                continue
            try:
                (row,) = await self._schedule_many(tenant_id, [waiting.request], True, waiting.acting_for)
            except Exception as exc:
                if not waiting.answer.done():
                    waiting.answer.set_exception(exc)
                if _whole(exc):
                    for rest in batch[position + 1:]:
                        if not rest.answer.done():
                            rest.answer.set_exception(exc)
                    return
                continue
            if not waiting.answer.done():
                waiting.answer.set_result(row)

    def _take(self, key: tuple[str, int]) -> list[_Waiting]:
        """The next call's requests, oldest first, without those whose request gave up (timed out)."""
        waiting = [w for w in self._waiting.pop(key, []) if not w.answer.done()]
        if len(waiting) > self._max_batch:
            self._waiting[key] = waiting[self._max_batch:]
            waiting = waiting[: self._max_batch]
        return waiting


def _whole(exc: Exception) -> bool:
    """Whether a failed call failed for what every call would meet (the database unreachable, the
    schema not migrated), not for what its requests hold."""
    return isinstance(exc, DatabaseUnavailable | SchemaMissing)
