"""A pre-stepped, looping market for the benchmark's simulator process.

The simulator's own `Market.step` costs about 13 us per update at 2,000 levels; on a
2-core machine that makes the simulator, not the client under test, the limit at
maximum rate. `LoopMarket` steps the real `Market` K times up front, then appends the
K updates that undo them in reverse order (each restores the levels its forward update
changed), so the book is back at its initial state after 2K updates and the tape loops
forever with a consistent book. Every state between two frames is a state the real
market was in, so no book is ever crossed. Serving an update is then an `Update` built
around a pre-encoded event list with a fresh event id and the current time.

It stands in for the hub's market (same `spec`, `bids`, `asks`, `event_id`, `event_ids`,
`step(now_ms)`); `bids`/`asks` (read for a snapshot) are rebuilt for the current position
on demand. Top-of-book subscriptions are not supported (the benchmark does not use them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from collector.sim.ladder import Ladder
from collector.sim.market import Market, Update


@dataclass(slots=True)
class TapeFrame:
    kind: str
    events: list[dict[str, Any]]
    changes: list[tuple[bool, int, int]]
    cache: dict[Any, bytes | None] = field(default_factory=dict)


class LoopMarket:
    def __init__(self, market: Market, k: int) -> None:
        self.spec = market.spec
        self.depth = market.depth
        self.event_ids = market.event_ids
        self.event_id = market.event_id
        self._init = (market.bids.copy(), market.asks.copy())
        mirror = {True: dict(market.bids.levels), False: dict(market.asks.levels)}
        frames: list[TapeFrame] = []
        undo: list[list[tuple[bool, int, int, int]]] = []
        for _ in range(k):
            u = market.step(0)
            olds = []
            for is_bid, price, new in u.changes:
                side = mirror[is_bid]
                olds.append((is_bid, price, side.get(price, 0), new))
                if new:
                    side[price] = new
                else:
                    side.pop(price, None)
            frames.append(TapeFrame(u.kind, u.events, u.changes))
            undo.append(olds)
        p, a = market.price, market.amount
        for olds in reversed(undo):
            if not olds:  # block trades and auctions changed no level
                continue
            events, changes = [], []
            for is_bid, price, old, new in reversed(olds):
                events.append({"type": "change", "side": "bid" if is_bid else "ask",
                               "price": p(price), "remaining": a(old), "delta": a(old - new),
                               "reason": "place" if old > new else "cancel"})
                changes.append((is_bid, price, old))
                if old:
                    mirror[is_bid][price] = old
                else:
                    mirror[is_bid].pop(price, None)
            frames.append(TapeFrame("place", events, changes))
        assert mirror[True] == self._init[0].levels and mirror[False] == self._init[1].levels
        self.frames = frames
        self.pos = 0
        self._ladders: tuple[int, Ladder, Ladder] | None = None

    def step(self, now_ms: int) -> Update:
        f = self.frames[self.pos]
        self.pos = (self.pos + 1) % len(self.frames)
        self.event_id = self.event_ids.next(1)
        return Update(self.event_id, now_ms, f.kind, f.events, f.changes, [], f.cache)

    def _book(self) -> tuple[Ladder, Ladder]:
        if self._ladders is None or self._ladders[0] != self.pos:
            bids, asks = self._init[0].copy(), self._init[1].copy()
            for f in self.frames[: self.pos]:
                for is_bid, price, units in f.changes:
                    (bids if is_bid else asks).set(price, units)
            self._ladders = (self.pos, bids, asks)
        return self._ladders[1], self._ladders[2]

    @property
    def bids(self) -> Ladder:
        return self._book()[0]

    @property
    def asks(self) -> Ladder:
        return self._book()[1]


def loop_length(symbols: int) -> int:
    """Forward steps per symbol: about 40,000 updates generated in all, 1,000 at least."""
    return max(1000, min(20000, 40000 // symbols))
