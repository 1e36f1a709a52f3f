"""The retry decision: exponential backoff with full jitter, capped, honouring Retry-After."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float
    cap_s: float
    max_attempts: int

    def delay_s(
        self, attempt: int, *, retry_after_s: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait after failed `attempt` (1-based).

        Full jitter (AWS architecture blog, "Exponential Backoff And Jitter"): uniform in
        [0, min(cap, base * 2**(attempt-1))], so a receiver coming back from an outage is not hit
        by every retry at the same instant. A Retry-After from the receiver is a floor, capped too.
        """
        ceiling = min(self.cap_s, self.base_s * 2 ** min(attempt - 1, 62))
        delay = (rng or random).uniform(0, ceiling)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.cap_s))
        return delay

    def gives_up(self, attempt: int, max_attempts: int | None = None) -> bool:
        """True when `attempt` was the last one allowed (the row's own limit wins over the default)."""
        return attempt >= (max_attempts or self.max_attempts)
