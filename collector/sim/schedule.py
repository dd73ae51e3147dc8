"""When each of many markets moves next (pure): one heap of Poisson arrival times.

A whole exchange has hundreds of mostly quiet books. One heap and one task that sleeps
until the earliest due time cost nothing between updates, where a task per symbol would
cost a timer and a wake-up each. Times are seconds on any clock the caller chooses.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Mapping

__all__ = ["Schedule"]

MAX_LAG_S = 1.0  # a symbol this far behind skips its backlog instead of bursting
MAX_DUE = 10_000  # most arrivals handed out by one call


class Schedule:
    """Poisson arrivals per symbol at ``rates[symbol]`` per second (0: never), seeded per
    symbol so that one symbol's times do not depend on the others."""

    def __init__(self, rates: Mapping[str, float], seed: int | str, start: float = 0.0) -> None:
        self._rates = {s: r for s, r in rates.items() if r > 0}
        self._rngs = {s: random.Random(f"{seed}:timing:{s}") for s in self._rates}
        self._heap = [(start + self._rngs[s].expovariate(r), s) for s, r in self._rates.items()]
        heapq.heapify(self._heap)

    def __len__(self) -> int:
        return len(self._heap)

    def next_at(self) -> float | None:
        """The earliest due time; None when no symbol ever moves."""
        return self._heap[0][0] if self._heap else None

    def due(self, now: float) -> list[str]:
        """The symbols due by ``now``, a symbol once per arrival, earliest first."""
        heap = self._heap
        out: list[str] = []
        while heap and heap[0][0] <= now and len(out) < MAX_DUE:
            at, symbol = heap[0]
            out.append(symbol)
            rate, rng = self._rates[symbol], self._rngs[symbol]
            nxt = at + rng.expovariate(rate)
            if now - nxt > MAX_LAG_S:
                nxt = now + rng.expovariate(rate)
            heapq.heapreplace(heap, (nxt, symbol))
        return out
