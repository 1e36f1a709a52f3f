"""Unit tests for reminderd.housekeeping.Housekeeping: rounds of services, each failing on its own."""

from __future__ import annotations

import asyncio
import random

import pytest
from structlog.testing import capture_logs

from reminderd.housekeeping import Housekeeping


class Fake:
    def __init__(self, name: str, changes: int = 0, *, every_s: float = 0.0, first_after_s: float = 0.0,
                 fails: bool = False) -> None:
        self.name, self.every_s, self.first_after_s = name, every_s, first_after_s
        self.changes, self.fails, self.runs = changes, fails, 0

    async def run_once(self) -> int:
        self.runs += 1
        if self.fails:
            raise ConnectionResetError("database went away")
        return self.changes


async def test_a_round_runs_every_due_service_and_counts_their_changes() -> None:
    reaper, planner = Fake("reap", 2), Fake("plan", 3)
    housekeeping = Housekeeping([reaper, planner], poll_interval_s=1.0)
    assert await housekeeping.run_once() == 5
    assert await housekeeping.run_once() == 5
    assert (reaper.runs, planner.runs) == (2, 2)


async def test_a_failing_service_backs_off_alone_and_says_so() -> None:
    broken, planner = Fake("reap", fails=True), Fake("plan", 1)
    housekeeping = Housekeeping([broken, planner], poll_interval_s=1.0, rng=random.Random(1))
    with capture_logs() as logs:
        assert await housekeeping.run_once() == 1
        assert await housekeeping.run_once() == 1
    assert (broken.runs, planner.runs) == (1, 2)  # backing off (1-2 s): not retried at once
    [failed] = logs
    assert (failed["event"], failed["service"]) == ("housekeeping_failed", "reap")
    assert failed["error"] == "ConnectionResetError: database went away"
    assert 1.0 <= failed["retry_in_s"] <= 2.0


async def test_interval_services_wait_for_their_time() -> None:
    sampler = Fake("queue_depth", every_s=30.0)
    pruner = Fake("prune", every_s=60.0, first_after_s=15.0)
    housekeeping = Housekeeping([sampler, pruner], poll_interval_s=1.0)
    await housekeeping.run_once()
    await housekeeping.run_once()
    assert (sampler.runs, pruner.runs) == (1, 0)


class WakesItself(Fake):
    """A service during whose round the loop is woken again (the worker's stop() sets the
    liveness loop's wake while a heartbeat round runs)."""

    def __init__(self, wake: asyncio.Event) -> None:
        super().__init__("heartbeat")
        self.wake, self.wakes = wake, True
        self.ran = asyncio.Event()

    async def run_once(self) -> int:
        if self.wakes:
            self.wake.set()
        await asyncio.sleep(0)  # a round waits on the database
        self.ran.set()
        return await super().run_once()


@pytest.mark.parametrize("steps", range(8))
async def test_a_cancel_stops_the_rounds_even_as_the_wake_comes(steps: int) -> None:
    """The worker cancels the liveness and housekeeping loops once it has drained. A cancel
    arriving while the loop's wake is being delivered must still stop it (asyncio.wait_for of
    Python 3.11 returns the woken result instead and loses the cancel: the loop ran on and the
    daemon never exited). `steps` walks the cancel through the rounds and their wake-ups."""
    wake = asyncio.Event()
    service = WakesItself(wake)
    wake.set()  # a round at once
    loop = asyncio.create_task(Housekeeping([service], poll_interval_s=60.0).run(wake))
    await service.ran.wait()
    for _ in range(steps):
        await asyncio.sleep(0)
    loop.cancel()
    done, _ = await asyncio.wait([loop], timeout=5)
    if not done:  # the cancel was lost: end the loop for good before failing
        service.wakes = False
        while not loop.done():
            loop.cancel()
            await asyncio.sleep(0.01)
    assert done and loop.cancelled()
