"""Everything the simulator keeps per symbol: the market, its flow task, the truth,
the open connections (one market broadcast to all of them), armed faults and counters."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sized
from typing import TYPE_CHECKING, Protocol

from .connection import ConnState
from .faults import Fault, FaultKind, FiredFault, RandomFaults
from .market import Market, Update
from .stats import Notifier, SymbolStats
from .truth import TruthLog, TruthWriter

if TYPE_CHECKING:
    from .replay import ReplayMarket

__all__ = ["Subscriber", "SymbolHub"]

log = logging.getLogger("collector.sim")

K = FaultKind
LOW_WATER = 256  # unlimited rate: produce while some connection has fewer queued frames
_BATCH = 64  # unlimited rate: updates per loop turn


class Subscriber(Protocol):
    """What a hub needs of a client of its market: a v1 ``Connection``, or one symbol's
    subscription on a current-API socket (``current_api.SymbolSubscription``)."""

    id: int
    state: ConnState
    snapshot_delay: float

    @property
    def queue(self) -> Sized: ...

    def open(self, armed: list[Fault]) -> None: ...

    def offer(self, update: Update) -> None: ...

    def arm(self, fault: Fault) -> None: ...

    def finish(self, code: int, reason: str, grace: float = 5.0) -> None: ...


class SymbolHub:
    def __init__(self, market: Market | ReplayMarket, *, active: bool, random_faults: RandomFaults,
                 notifier: Notifier, clock_ms: Callable[[], int], seed: int | str,
                 record_truth: bool = True, truth_writer: TruthWriter | None = None) -> None:
        self.symbol = market.spec.symbol
        self.market = market
        self.active = active  # False: listed only, a quiet book (snapshot, no updates)
        self.random_faults = random_faults
        self.clock_ms = clock_ms
        self.stats = SymbolStats(last_event_id=market.event_id)
        self.truth_log = TruthLog(market) if record_truth else None
        self.connections: dict[int, Subscriber] = {}
        self._notifier = notifier
        self._writer = truth_writer
        self._armed: list[Fault] = []  # connection faults waiting for the next connection
        self._refusals: deque[Fault] = deque()  # one entry per handshake to refuse
        self._slow: deque[Fault] = deque()
        self._demand = asyncio.Event()
        self._timing = random.Random(f"{seed}:timing:{self.symbol}")
        if truth_writer is not None and self.truth_log is not None:
            truth_writer.initial(self.truth_log)

    @property
    def last_event_id(self) -> int:
        return self.stats.last_event_id

    def notify(self) -> None:
        self._notifier.notify()

    def wake_market(self) -> None:
        self._demand.set()

    # ---- publishing ------------------------------------------------------------------

    def publish(self, update: Update) -> None:
        """Record an update as truth and offer it to every connection."""
        if self.truth_log is not None:
            self.truth_log.record(update.event_id, update.changes)
            if self._writer is not None:
                self._writer.update(self.truth_log, update.event_id, update.timestampms,
                                    update.kind, update.changes)
        self.stats.updates += 1
        self.stats.last_event_id = update.event_id
        for conn in list(self.connections.values()):
            conn.offer(update)
        self.notify()

    def advance(self, n: int = 1) -> list[Update]:
        """Step the market n times right now and publish each update."""
        out = []
        for _ in range(n):
            update = self.market.step(self.clock_ms())
            self.publish(update)
            out.append(update)
        return out

    async def run_flow(self, rate: float) -> None:
        """Publish updates at ``rate`` per second (Poisson arrivals), or as fast as the
        fastest connection takes them when rate is 0."""
        loop = asyncio.get_running_loop()
        if rate <= 0:
            while True:
                if not self._has_demand():
                    self._demand.clear()
                    await self._demand.wait()
                    continue
                self.advance(_BATCH)
                await asyncio.sleep(0)
        due = loop.time()
        while True:
            now = loop.time()
            n = 0
            while due <= now and n < 10_000:
                self.advance(1)
                due += self._timing.expovariate(rate)
                n += 1
            if now - due > 1.0:  # fell far behind: skip the backlog instead of bursting
                due = now
            await asyncio.sleep(max(0.0, due - loop.time()))

    def _has_demand(self) -> bool:
        return any(c.state is ConnState.LIVE and len(c.queue) < LOW_WATER
                   for c in self.connections.values())

    # ---- faults ------------------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        k = fault.kind
        if k is K.REFUSE:
            self._refusals.extend([fault] * int(fault.params["count"]))
            return
        if k is K.SLOW_SNAPSHOT:
            self._slow.append(fault)
            return
        live = [c for c in self.connections.values() if c.state is ConnState.LIVE]
        if not live:
            self._armed.append(fault)
        for conn in live:
            conn.arm(fault)

    def take_refusal(self, roll: bool = True) -> Fault | None:
        """Called once per WebSocket handshake of this symbol. ``roll`` False: injected
        refusals only (current-API handshakes, which name no symbol)."""
        if self._refusals:
            fault = self._refusals.popleft()
            self.fired(K.REFUSE, None, None, False)
            return fault
        if roll and self.random_faults.roll_handshake(K.REFUSE):
            self.fired(K.REFUSE, None, None, True)
            return Fault.make(K.REFUSE)
        return None

    def fired(self, kind: FaultKind, conn: Subscriber | None, seq: int | None, rnd: bool) -> None:
        rec = FiredFault(kind, self.symbol, conn.id if conn else None, seq, self.last_event_id,
                         rnd, time.monotonic())
        self.stats.faults.append(rec)
        log.info("fault %s fired", kind.value,
                 extra={"symbol": self.symbol, "conn": rec.conn_id, "seq": seq, "random": rnd})
        self.notify()

    # ---- connections -----------------------------------------------------------------

    def attach(self, conn: Subscriber) -> None:
        """Register a new connection and queue its first frame, atomically with respect to
        publishing (no await), so the snapshot and the following updates line up."""
        self.stats.handshakes += 1
        self.stats.connections += 1
        if self._slow:
            conn.snapshot_delay = float(self._slow.popleft().params["delay"])
            self.fired(K.SLOW_SNAPSHOT, conn, 0, False)
        elif self.random_faults.roll_handshake(K.SLOW_SNAPSHOT):
            conn.snapshot_delay = float(Fault.make(K.SLOW_SNAPSHOT).params["delay"])
            self.fired(K.SLOW_SNAPSHOT, conn, 0, True)
        armed, self._armed = self._armed, []
        self.connections[conn.id] = conn
        conn.open(armed)
        self.wake_market()
        self.notify()

    def detach(self, conn: Subscriber) -> None:
        if self.connections.pop(conn.id, None) is not None:
            conn.state = ConnState.CLOSED
            self.stats.connections -= 1
            self.stats.connections_closed += 1
            self.notify()
