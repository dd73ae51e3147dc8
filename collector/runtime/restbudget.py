"""One budget for every public REST request of the process: symbol discovery and the audit.

Gemini allows 120 public requests a minute and queues 5 more as a burst before answering
429 (`collector.gemini.limits`). The budget is a token bucket of REST_BURST tokens refilled
at REST_PER_MINUTE a minute, so no window of a minute ever holds more than the exchange
allows. A 429 closes it for every user until the answer's Retry-After (or the caller's
backoff delay, when there is no sane one).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from collector.core.backoff import TokenBucket
from collector.gemini import limits

PAUSE_S = 60.0  # after a 429 without a sane Retry-After: the window Gemini counts in


class RestBudget:
    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 burst: float = limits.REST_BURST, per_minute: float = limits.REST_PER_MINUTE) -> None:
        self.clock = clock
        self.bucket = TokenBucket(burst, per_minute, clock())
        self.closed_until = float("-inf")  # after a 429
        self.requests = 0  # taken
        self.limited = 0  # 429s reported

    def wait_time(self) -> float:
        """Seconds until a request may go (0: now)."""
        now = self.clock()
        return max(0.0, self.closed_until - now, self.bucket.wait_time(now))

    async def take(self) -> None:
        """Wait for a request's token, and take it."""
        while (wait := self.wait_time()) > 0:
            await asyncio.sleep(wait)
        self.bucket.take(self.clock())
        self.requests += 1

    def refused(self, seconds: float) -> None:
        """The exchange answered 429: no request for `seconds` (its Retry-After, or a backoff)."""
        self.limited += 1
        self.closed_until = max(self.closed_until, self.clock() + seconds)
