"""Per-key rate limits: a token bucket for each API key, in this process's memory.

Each key may make `rate` requests per second on average and up to `rate` (at least 1) at once.
The buckets are per process: behind a load balancer with N `reminderd serve` processes a key gets
up to N times its rate (docs/api.md says how to size it). Pure: the clock is passed in.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated_s: float


class RateLimiter:
    def __init__(self, *, max_keys: int = 100_000) -> None:
        self._buckets: OrderedDict[int, _Bucket] = OrderedDict()
        self._max_keys = max_keys

    def check(self, key_id: int, rate: float, now_s: float) -> float | None:
        """None when the request may go ahead (and it is counted), else the seconds to wait."""
        burst = max(rate, 1.0)
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = _Bucket(burst, now_s)
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            bucket.tokens = min(burst, bucket.tokens + (now_s - bucket.updated_s) * rate)
            bucket.updated_s = now_s
            self._buckets.move_to_end(key_id)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / rate


def retry_after_header(wait_s: float) -> str:
    """Retry-After in whole seconds, never 0 (a client would retry at once)."""
    return str(max(1, math.ceil(wait_s)))
