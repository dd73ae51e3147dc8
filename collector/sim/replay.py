"""Replay mode: a recorded capture played as v1 streams.

``ReplayMarket`` is the replay's stand-in for ``Market`` (same attributes the hub, the
connections, REST and the truth use): an exact book per symbol that plays its
``SymbolTape`` step by step, numbering event ids and trade ids from the simulator's
shared counters, so ids keep increasing across loops. ``ReplayHub`` drives it in time:

* ``speed > 0``: step i of the capture is published ``(recv_i - capture_start) / speed``
  seconds after the loop started; its ``timestampms`` is the loop's wall-clock start plus
  that same offset (at speed 1 the recorded inter-arrival times, shifted to now).
* ``speed == 0``: as fast as the fastest live connection of the symbol drains its frames
  (pauses while the symbol has no live connection); ``timestampms`` is the wall clock.
* ``speed is None``: nothing moves on its own; ``advance(n)`` publishes the next n steps.

At the end of the tape (with ``loop``) the book jumps back to the capture's initial book.
A client can only learn that from a snapshot, so every connection of the symbol is closed
cleanly (its queued frames are sent, then a close frame 1012 "service restart"), the truth
records the jump under a fresh event id (``TruthLog.resets``), and a reconnecting client's
seq-0 snapshot (eventId = that id) is the initial book again. If the book at the end
equals the initial book, nothing is closed. At speed > 0 every symbol loops together,
after the whole capture's span; otherwise each symbol loops when its own tape ends.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from .faults import RandomFaults
from .hub import _BATCH, SymbolHub
from .ladder import Ladder
from .market import Change, Event, IdSource, Update, _geometric
from .stats import Notifier
from .tape import SymbolTape
from .truth import TruthWriter

__all__ = ["ReplayHub", "ReplayMarket"]

_MIN_PERIOD_NS = 100_000_000  # a capture shorter than this still loops at most 10x/s/speed
_YIELD_EVERY = 1000  # speed > 0 catching up: let the sockets breathe this often
_TICKED = frozenset({"trade", "block_trade"})


class ReplayMarket:
    """A symbol's book playing a tape. Same reading surface as ``Market``."""

    def __init__(self, tape: SymbolTape, event_ids: IdSource | None = None,
                 trade_ids: IdSource | None = None, seed: int | str = 1) -> None:
        self.tape = tape
        self.spec = tape.spec
        self.price = tape.spec.price_scale.render
        self.amount = tape.spec.amount_scale.render
        self.event_ids = event_ids or IdSource(1_764_559_146_000_000)
        self.trade_ids = trade_ids or IdSource(2_840_141_029_000_000)
        self.rng = random.Random(f"{seed}:replay:{tape.symbol}")
        self._initial_bids = Ladder(True, tape.initial_bids)
        self._initial_asks = Ladder(False, tape.initial_asks)
        self.bids = self._initial_bids.copy()
        self.asks = self._initial_asks.copy()
        self.pos = 0  # index of the next step
        self.loops = 0  # completed passes (restarts)
        self.event_id = self.event_ids.next(self._id_jump())  # id of the initial state
        self.last_ms = 0

    def _id_jump(self) -> int:
        return 1 + _geometric(self.rng, 0.02)

    @property
    def exhausted(self) -> bool:
        return self.pos >= len(self.tape.steps)

    @property
    def next_ts_ns(self) -> int | None:
        """Capture receive time of the next step; None at the end of the tape."""
        steps = self.tape.steps
        return steps[self.pos].ts_ns if self.pos < len(steps) else None

    def best_bid(self) -> int | None:
        return self.bids.best()

    def best_ask(self) -> int | None:
        return self.asks.best()

    def _touch(self) -> tuple[tuple[int | None, int], tuple[int | None, int]]:
        b, a = self.bids.best(), self.asks.best()
        return ((b, self.bids.get(b) if b is not None else 0),
                (a, self.asks.get(a) if a is not None else 0))

    def step(self, now_ms: int) -> Update:
        """Apply and return the next step (EOFError at the end of the tape)."""
        if self.exhausted:
            raise EOFError(f"{self.spec.symbol}: end of the replay tape")
        st = self.tape.steps[self.pos]
        self.pos += 1
        self.last_ms = max(self.last_ms, now_ms)
        before = self._touch()
        for is_bid, price, units in st.changes:
            (self.bids if is_bid else self.asks).set(price, units)
        self.event_id = self.event_ids.next(self._id_jump())
        events: list[Event] = []
        for ev in st.events:
            if ev["type"] in _TICKED and "tid" in ev:
                ev = {**ev, "tid": self.trade_ids.next(self._id_jump())}
            elif "eid" in ev:
                ev = {**ev, "eid": self.event_id}
            events.append(ev)
        after = self._touch()
        tob: list[Event] = []
        for side, old, (top, top_units) in (("bid", before[0], after[0]),
                                            ("ask", before[1], after[1])):
            if top is not None and (top, top_units) != old:
                tob.append({"type": "change", "side": side, "price": self.price(top),
                            "remaining": self.amount(top_units), "reason": "top-of-book"})
        return Update(self.event_id, self.last_ms, st.kind, events, list(st.changes), tob)

    def restart(self) -> list[Change]:
        """Back to the initial book and the first step; returns the changes that took the
        book there (empty if it already was the initial book)."""
        changes: list[Change] = []
        for is_bid, cur, init in ((True, self.bids, self._initial_bids),
                                  (False, self.asks, self._initial_asks)):
            changes.extend((is_bid, p, 0) for p in cur.prices if p not in init.levels)
            changes.extend((is_bid, p, u) for p, u in init.levels.items() if cur.levels.get(p) != u)
        self.bids = self._initial_bids.copy()
        self.asks = self._initial_asks.copy()
        self.pos = 0
        self.loops += 1
        return changes


class ReplayHub(SymbolHub):
    """A symbol hub whose market is a ``ReplayMarket``."""

    market: ReplayMarket

    def __init__(self, market: ReplayMarket, *, loop: bool, random_faults: RandomFaults,
                 notifier: Notifier, clock_ms: Callable[[], int], seed: int | str,
                 record_truth: bool = True, truth_writer: TruthWriter | None = None) -> None:
        super().__init__(market, active=True, random_faults=random_faults, notifier=notifier,
                         clock_ms=clock_ms, seed=seed, record_truth=record_truth,
                         truth_writer=truth_writer)
        self.loop = loop
        self.finished = False  # end of the tape reached without loop

    def restart(self) -> None:
        """Loop boundary: back to the initial book; if the book changed, record the jump
        in the truth and close every connection (1012) so clients resnapshot."""
        changes = self.market.restart()
        self.stats.loops += 1
        if changes:
            event_id = self.market.event_ids.next(1)
            self.market.event_id = event_id
            if self.truth_log is not None:
                self.truth_log.record_reset(event_id, changes)
                if self._writer is not None:
                    self._writer.update(self.truth_log, event_id, self.clock_ms(), "reset",
                                        changes)
            self.stats.last_event_id = event_id
            for conn in list(self.connections.values()):
                conn.finish(1012, "service restart")
        self.notify()

    def _at_end(self) -> bool:
        """At the end of the tape: loop (True: carry on) or finish (False)."""
        if not self.loop:
            if not self.finished:
                self.finished = True
                self.notify()
            return False
        self.restart()
        return True

    def advance(self, n: int = 1) -> list[Update]:
        """Publish the next n steps now (looping, or stopping at the end without loop)."""
        out: list[Update] = []
        if not self.market.tape.steps:
            return out
        for _ in range(n):
            if self.market.exhausted and not self._at_end():
                break
            update = self.market.step(self.clock_ms())
            self.publish(update)
            out.append(update)
        return out

    async def run_replay(self, speed: float, start_ns: int, span_ns: int,
                         t0: float | None = None, wall0: int | None = None) -> None:
        """Play the tape in time (see the module docstring). ``t0`` (event-loop time) and
        ``wall0`` (ms) are when the capture's ``start_ns`` happens; default: now. Give every
        symbol the same ones so that they stay in step."""
        m = self.market
        if not m.tape.steps:
            return  # a book and nothing else: a quiet symbol
        if speed <= 0:
            while True:
                if not self._has_demand():
                    self._demand.clear()
                    await self._demand.wait()
                    continue
                for _ in range(_BATCH):
                    if m.exhausted:
                        if not self._at_end():
                            return
                        break  # connections were closed: re-check demand
                    self.publish(m.step(self.clock_ms()))
                await asyncio.sleep(0)
        aloop = asyncio.get_running_loop()
        period_ns = max(span_ns, _MIN_PERIOD_NS)
        t0 = aloop.time() if t0 is None else t0
        wall0 = self.clock_ms() if wall0 is None else wall0
        n = 0
        while True:
            nxt = m.next_ts_ns
            if nxt is None:
                end = t0 + period_ns / 1e9 / speed
                await asyncio.sleep(max(0.0, end - aloop.time()))
                if not self._at_end():
                    return
                t0 = end
                wall0 += round(period_ns / 1e6 / speed)
                continue
            offset_s = (nxt - start_ns) / 1e9 / speed
            delay = t0 + offset_s - aloop.time()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            self.publish(m.step(wall0 + round(offset_s * 1000)))
            n += 1
            if n % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
