"""Exponential backoff with jitter, capped: the callback retry decision (honouring Retry-After)
and the daemon's waits on an unreachable database."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

Jitter = Literal["full", "half", "none"]


def backoff_s(
    attempt: int, *, base_s: float, cap_s: float, jitter: Jitter = "full", rng: random.Random | None = None
) -> float:
    """Seconds to wait after failed `attempt` (1-based): base_s * 2**(attempt-1), at most cap_s.

    Jitter (AWS architecture blog, "Exponential Backoff And Jitter") spreads the waits of many
    clients failing at once: "full" draws uniformly in [0, ceiling], "half" in [ceiling/2, ceiling]
    (never much shorter than planned), "none" waits the ceiling.
    """
    ceiling = min(cap_s, base_s * float(2 ** min(max(attempt, 1) - 1, 62)))
    if jitter == "full":
        return (rng or random).uniform(0, ceiling)
    if jitter == "half":
        return (rng or random).uniform(ceiling / 2, ceiling)
    return ceiling


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float
    cap_s: float
    max_attempts: int

    def delay_s(
        self, attempt: int, *, retry_after_s: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait after failed `attempt` (1-based): full jitter in
        [0, min(cap, base * 2**(attempt-1))], so a receiver coming back from an outage is not hit
        by every retry at the same instant. A Retry-After from the receiver is a floor, capped too.
        """
        delay = backoff_s(attempt, base_s=self.base_s, cap_s=self.cap_s, jitter="full", rng=rng)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.cap_s))
        return delay

    def gives_up(self, attempt: int, max_attempts: int | None = None) -> bool:
        """True when `attempt` was the last one allowed (the row's own limit wins over the default)."""
        return attempt >= (max_attempts or self.max_attempts)
