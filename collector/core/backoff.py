"""Reconnect pacing (pure; the clock and the random source are injected).

`Backoff` is capped exponential backoff with full jitter (delay drawn uniformly
from [0, min(cap, initial * 2**n)]), reset once a stream stayed healthy.
`TokenBucket` is a connection-attempt budget: `capacity` attempts at once,
refilled at `per_minute`. A feed must hold a token from its own bucket and
from the process-wide one before each attempt, so one flapping symbol or a
network blip across 100 symbols never becomes a reconnect storm.
"""

from __future__ import annotations

import random
from collections.abc import Sequence


class Backoff:
    def __init__(self, initial: float, cap: float, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.cap = cap
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.initial * 2 ** min(self.failures, 32))
        self.failures += 1
        return self._rng.uniform(0, ceiling)

    def reset(self) -> None:
        self.failures = 0


class TokenBucket:
    def __init__(self, capacity: float, per_minute: float, now: float) -> None:
        self.capacity = capacity
        self.rate = per_minute / 60.0
        self.tokens = capacity
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait_time(self, now: float, n: float = 1) -> float:
        """Seconds until `n` tokens are available (0 when they are there now)."""
        self._refill(now)
        return 0.0 if self.tokens >= n else (n - self.tokens) / self.rate

    def take(self, now: float, n: float = 1) -> None:
        self._refill(now)
        self.tokens -= n


def acquire_wait(buckets: Sequence[TokenBucket], now: float) -> float:
    """Take one token from every bucket if all have one (returns 0), else
    return how long to wait before asking again; nothing is taken then."""
    wait = max(b.wait_time(now) for b in buckets)
    if wait == 0:
        for b in buckets:
            b.take(now)
    return wait
