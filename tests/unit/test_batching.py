"""reminderd/batching.py: single schedules of one key written together, each answered alone.

The database is a fake schedule_many() whose calls the tests hold and release (no sleeps): what
matters is which requests go in which call, in what order, and who gets which answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from reminderd.batching import Batcher
from reminderd.exceptions import DatabaseRefused, DatabaseUnavailable, SchemaMissing
from reminderd.lifecycle import Status
from reminderd.rows import ItemScheduled
from reminderd.validation import ScheduleRequest

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def request(ref: str) -> ScheduleRequest:
    return ScheduleRequest("acme", ref, "{}", None, fire_in_s=60.0)


class FakeDatabase:
    """schedule_many() that records each call and answers it when the test releases it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str], bool]] = []
        self.acting_for: list[str] = []
        self.started = asyncio.Event()
        self._gates: list[asyncio.Future[Exception | None]] = []

    async def schedule_many(self, tenant: str, requests: Sequence[ScheduleRequest], atomic: bool,
                            acting_for: str) -> list[ItemScheduled]:
        self.calls.append((tenant, [r.ref_id for r in requests], atomic))
        self.acting_for.append(acting_for)
        gate: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self._gates.append(gate)
        self.started.set()
        failure = await gate
        if failure is not None:
            raise failure
        return [ItemScheduled(n, 100 + n, "created", Status.PENDING, NOW, None, None, None)
                for n, _ in enumerate(requests, 1)]

    def release(self, call: int, failure: Exception | None = None) -> None:
        self._gates[call].set_result(failure)

    async def running(self, count: int) -> None:
        """Until `count` calls have started."""
        while len(self.calls) < count:
            self.started.clear()
            await self.started.wait()


async def settle() -> None:
    """Let every task that can run, run (each step is a loop turn; a few cover the chains here)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_requests_waiting_at_the_same_moment_go_in_one_call() -> None:
    db = FakeDatabase()
    batcher = Batcher(db.schedule_many, max_in_flight=2)
    tasks = [asyncio.create_task(batcher.schedule("acme", 1, request(ref))) for ref in "ab"]
    await db.running(1)
    await settle()
    db.release(0)
    assert [(await task).item for task in tasks] == [1, 2]
    assert db.calls == [("acme", ["a", "b"], False)]


async def test_each_keys_call_is_written_for_that_key() -> None:
    """The audit trail of a call names the key whose requests it holds (events.on_behalf_of)."""
    db = FakeDatabase()
    batcher = Batcher(db.schedule_many, max_in_flight=1)
    keys = [(1, "a", "rk_one (app)"), (2, "b", "rk_two (ops)"), (1, "c", "rk_one (app)")]
    tasks = [asyncio.create_task(batcher.schedule("acme", key_id, request(ref), acting_for=name))
             for key_id, ref, name in keys]
    await db.running(2)
    await settle()
    db.release(0)
    db.release(1)
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert sorted(zip([refs for _, refs, _ in db.calls], db.acting_for, strict=True)) == [
        (["a", "c"], "rk_one (app)"), (["b"], "rk_two (ops)"),
    ]


async def test_a_lone_request_is_written_at_once_alone_and_atomic() -> None:
    db = FakeDatabase()
    batcher = Batcher(db.schedule_many)
    answer = asyncio.create_task(batcher.schedule("acme", 1, request("a")))
    await db.running(1)
    db.release(0)
    assert (await answer).message_id == 101
    assert db.calls == [("acme", ["a"], True)]


async def test_requests_arriving_meanwhile_go_together_in_order_each_with_its_own_answer() -> None:
    db = FakeDatabase()
    batcher = Batcher(db.schedule_many, max_in_flight=1)
    first = asyncio.create_task(batcher.schedule("acme", 1, request("a")))
    await db.running(1)
    others = [asyncio.create_task(batcher.schedule("acme", 1, request(ref))) for ref in "bcd"]
    await settle()
    assert len(db.calls) == 1  # they wait for the running call
    db.release(0)
    assert (await first).item == 1
    await db.running(2)
    db.release(1)
    answers = [await task for task in others]
    assert db.calls == [("acme", ["a"], True), ("acme", ["b", "c", "d"], False)]
    assert [(a.item, a.message_id) for a in answers] == [(1, 101), (2, 102), (3, 103)]


async def test_at_most_max_in_flight_calls_per_key_and_keys_never_share_a_call() -> None:
    db = FakeDatabase()
    batcher = Batcher(db.schedule_many, max_in_flight=2)
    tasks = [asyncio.create_task(batcher.schedule("acme", 1, request("a")))]
    await db.running(1)
    tasks.append(asyncio.create_task(batcher.schedule("acme", 1, request("b"))))  # a second call
    await db.running(2)
    tasks += [asyncio.create_task(batcher.schedule("acme", 1, request(ref))) for ref in ("c", "d")]
    tasks.append(asyncio.create_task(batcher.schedule("globex", 2, request("e"))))
    await db.running(3)
    await settle()
    assert db.calls == [("acme", ["a"], True), ("acme", ["b"], True), ("globex", ["e"], True)]
    for call in range(3):
        db.release(call)
    await db.running(4)
    db.release(3)
    await asyncio.gather(*tasks)
    assert db.calls[3] == ("acme", ["c", "d"], False)


async def test_a_call_that_fails_fails_each_of_its_requests_and_the_next_call_still_runs() -> None:
    db = FakeDatabase()
    batcher = Batcher(db.schedule_many, max_in_flight=1)
    first = asyncio.create_task(batcher.schedule("acme", 1, request("a")))
    await db.running(1)
    waiting = [asyncio.create_task(batcher.schedule("acme", 1, request(ref))) for ref in "bc"]
    await settle()
    db.release(0, DatabaseUnavailable("the database cannot be reached"))
    with pytest.raises(DatabaseUnavailable):
        await first
    await db.running(2)
    db.release(1)
    assert [(await task).item for task in waiting] == [1, 2]


async def test_a_request_that_gave_up_before_its_call_is_left_out() -> None:
    db = FakeDatabase()
    batcher = Batcher(db.schedule_many, max_in_flight=1)
    first = asyncio.create_task(batcher.schedule("acme", 1, request("a")))
    await db.running(1)
    gone = asyncio.create_task(batcher.schedule("acme", 1, request("b")))
    kept = asyncio.create_task(batcher.schedule("acme", 1, request("c")))
    await settle()
    gone.cancel()  # its request timed out
    await settle()
    db.release(0)
    await first
    await db.running(2)
    db.release(1)
    assert (await kept).item == 1
    assert db.calls[1] == ("acme", ["c"], True)


async def test_one_giving_up_during_its_call_leaves_the_others_answers_alone() -> None:
    db = FakeDatabase()
    batcher = Batcher(db.schedule_many, max_in_flight=1)
    first = asyncio.create_task(batcher.schedule("acme", 1, request("a")))
    await db.running(1)
    gone, kept = (asyncio.create_task(batcher.schedule("acme", 1, request(ref))) for ref in "bc")
    await settle()
    db.release(0)
    await first
    await db.running(2)
    gone.cancel()
    await settle()
    db.release(1)
    assert (await kept).item == 2
    assert gone.cancelled()


async def test_a_batch_holds_at_most_max_batch_requests_the_rest_go_next() -> None:
    db = FakeDatabase()
    batcher = Batcher(db.schedule_many, max_in_flight=1, max_batch=2)
    first = asyncio.create_task(batcher.schedule("acme", 1, request("a")))
    await db.running(1)
    rest = [asyncio.create_task(batcher.schedule("acme", 1, request(ref))) for ref in "bcd"]
    await settle()
    db.release(0)
    await first
    await db.running(2)
    db.release(1)
    await db.running(3)
    db.release(2)
    await asyncio.gather(*rest)
    assert [refs for _, refs, _ in db.calls] == [["a"], ["b", "c"], ["d"]]


async def _a_refused_batch(db: FakeDatabase, batcher: Batcher, refs: str, failure: Exception
                           ) -> tuple[asyncio.Task[ItemScheduled], list[asyncio.Task[ItemScheduled]]]:
    """A lone call for "a", then `refs` waiting together in a second call, which fails with `failure`."""
    first = asyncio.create_task(batcher.schedule("acme", 1, request("a"), acting_for="rk_one (app)"))
    await asyncio.wait_for(db.running(1), 5)
    together = [asyncio.create_task(batcher.schedule("acme", 1, request(ref), acting_for="rk_one (app)"))
                for ref in refs]
    await settle()
    db.release(0)
    await first
    await asyncio.wait_for(db.running(2), 5)
    db.release(1, failure)
    return first, together


async def test_a_call_refused_for_what_one_request_holds_is_made_again_one_request_at_a_time() -> None:
    """The database refuses a whole array for one bad value: the others are written all the same,
    each alone and in order, and the bad one gets its own refusal (docs/api.md: "a refused one
    fails only itself, with the same problem as on its own")."""
    db = FakeDatabase()
    batcher = Batcher(db.schedule_many, max_in_flight=1)
    refused = DatabaseRefused("invalid byte sequence for encoding \"UTF8\": 0x00", sqlstate="22021")
    _, together = await _a_refused_batch(db, batcher, "bcd", refused)
    for call, failure in ((2, None), (3, DatabaseRefused("alone too", sqlstate="22021")), (4, None)):
        await asyncio.wait_for(db.running(call + 1), 5)
        db.release(call, failure)
    b, c, d = await asyncio.wait_for(asyncio.gather(*together, return_exceptions=True), 5)
    assert isinstance(b, ItemScheduled) and isinstance(d, ItemScheduled)
    assert isinstance(c, DatabaseRefused) and str(c) == "alone too"
    assert db.calls[1:] == [("acme", ["b", "c", "d"], False), ("acme", ["b"], True), ("acme", ["c"], True),
                            ("acme", ["d"], True)]
    assert set(db.acting_for) == {"rk_one (app)"}  # each call still for the key


async def test_an_outage_while_writing_one_at_a_time_fails_the_rest_without_calling_again() -> None:
    db = FakeDatabase()
    batcher = Batcher(db.schedule_many, max_in_flight=1)
    _, together = await _a_refused_batch(db, batcher, "bcd", DatabaseRefused("refused", sqlstate="22021"))
    await asyncio.wait_for(db.running(3), 5)
    db.release(2, DatabaseUnavailable("the database cannot be reached"))
    answers = await asyncio.wait_for(asyncio.gather(*together, return_exceptions=True), 5)
    assert all(isinstance(answer, DatabaseUnavailable) for answer in answers)
    assert len(db.calls) == 3


@pytest.mark.parametrize("failure", [DatabaseUnavailable("unreachable"), SchemaMissing("not migrated")])
async def test_a_call_that_fails_for_every_call_fails_each_request_without_calling_again(failure: Exception
                                                                                          ) -> None:
    db = FakeDatabase()
    batcher = Batcher(db.schedule_many, max_in_flight=1)
    _, together = await _a_refused_batch(db, batcher, "bc", failure)
    answers = await asyncio.wait_for(asyncio.gather(*together, return_exceptions=True), 5)
    assert all(answer is failure for answer in answers)
    assert len(db.calls) == 2
