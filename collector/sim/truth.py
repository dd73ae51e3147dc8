"""The true book of every symbol, recoverable by event id.

``TruthLog`` records the initial book and every published book change per symbol (lies
injected by the ``crossed`` fault never reach it). ``TruthCursor`` replays that log:
ascending ``top_at`` calls cost O(events advanced); going backwards restarts from the
initial book.
"""

from __future__ import annotations

from bisect import bisect_right
from pathlib import Path
from typing import IO, TYPE_CHECKING

import orjson

from .ladder import Ladder
from .market import Change, Market
from .symbols import Scale

if TYPE_CHECKING:
    from .replay import ReplayMarket

__all__ = ["Levels", "TruthCursor", "TruthLog", "TruthWriter"]

Levels = list[list[str]]  # [[price, amount], ...] best first


class TruthLog:
    """Append-only record of one symbol's book: initial levels, then changes by event id."""

    def __init__(self, market: Market | ReplayMarket) -> None:
        self.symbol = market.spec.symbol
        self.price: Scale = market.spec.price_scale
        self.amount: Scale = market.spec.amount_scale
        self.initial_event_id = market.event_id
        self.initial_bids = market.bids.copy()
        self.initial_asks = market.asks.copy()
        self.update_ids: list[int] = []  # every published update, ascending
        self.event_ids: list[int] = []  # the updates that changed the book, ascending
        self.changes: list[list[Change]] = []  # their changes, parallel to event_ids
        self.resets: list[int] = []  # replay loop boundaries (no update frame carries them)
        self.last_event_id = self.initial_event_id

    def record(self, event_id: int, changes: list[Change]) -> None:
        """Record one published update; block trades and auction events change nothing on
        the book, so only ``update_ids`` gets them."""
        if event_id <= self.last_event_id:
            raise ValueError(f"event ids must increase: {event_id} after {self.last_event_id}")
        self.last_event_id = event_id
        self.update_ids.append(event_id)
        if changes:
            self.event_ids.append(event_id)
            self.changes.append(changes)

    def record_reset(self, event_id: int, changes: list[Change]) -> None:
        """Record a replay loop boundary: the book jumps back to its initial state under a
        fresh id that no update frame carries (the next snapshots do). It is in
        ``event_ids`` (when the book changed) and ``resets``, not in ``update_ids``."""
        if event_id <= self.last_event_id:
            raise ValueError(f"event ids must increase: {event_id} after {self.last_event_id}")
        self.last_event_id = event_id
        self.resets.append(event_id)
        if changes:
            self.event_ids.append(event_id)
            self.changes.append(changes)

    def cursor(self) -> TruthCursor:
        return TruthCursor(self)


class TruthCursor:
    """Replays a ``TruthLog``; cheap for ascending event ids."""

    def __init__(self, log: TruthLog) -> None:
        self.log = log
        self._reset()

    def _reset(self) -> None:
        self.bids = self.log.initial_bids.copy()
        self.asks = self.log.initial_asks.copy()
        self.applied = 0  # number of log entries applied
        self.event_id = self.log.initial_event_id

    def advance_to(self, event_id: int) -> None:
        """Make the cursor's book the state after the last event with id <= event_id.

        Ids before the first recorded event give the initial book.
        """
        log = self.log
        if event_id < self.event_id:
            self._reset()
        target = bisect_right(log.event_ids, event_id)
        for i in range(self.applied, target):
            for is_bid, price, units in log.changes[i]:
                (self.bids if is_bid else self.asks).set(price, units)
        self.applied = max(self.applied, target)
        self.event_id = max(event_id, self.event_id)

    def top_at(self, event_id: int, depth: int | None = None) -> tuple[Levels, Levels]:
        """(bids, asks) as [[price, amount], ...] best first, at most ``depth`` per side."""
        self.advance_to(event_id)
        return self._render(self.bids, depth), self._render(self.asks, depth)

    def _render(self, side: Ladder, depth: int | None) -> Levels:
        p, a = self.log.price.render, self.log.amount.render
        return [[p(price), a(units)] for price, units in side.top(depth)]


class TruthWriter:
    """Streams the truth as JSON lines (for the CLI): one ``initial`` line per symbol,
    then one line per published update that changed or traded: eventId and changes."""

    def __init__(self, path: str | Path) -> None:
        self._file: IO[bytes] = open(path, "wb", buffering=1 << 16)  # noqa: SIM115  # closed in close()

    def initial(self, log: TruthLog) -> None:
        p, a = log.price.render, log.amount.render
        line = {"type": "initial", "symbol": log.symbol, "eventId": log.initial_event_id,
                "bids": [[p(x), a(u)] for x, u in log.initial_bids.top()],
                "asks": [[p(x), a(u)] for x, u in log.initial_asks.top()]}
        self._file.write(orjson.dumps(line) + b"\n")

    def update(self, log: TruthLog, event_id: int, timestampms: int, kind: str,
               changes: list[Change]) -> None:
        p, a = log.price.render, log.amount.render
        line = {"type": kind, "symbol": log.symbol, "eventId": event_id, "timestampms": timestampms,
                "changes": [["bid" if b else "ask", p(x), a(u)] for b, x, u in changes]}
        self._file.write(orjson.dumps(line) + b"\n")

    def close(self) -> None:
        self._file.close()
