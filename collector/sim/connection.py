"""One v1 market-data connection: its socket_sequence, send buffer and faults.

Theory of operation: the market publishes synchronously (``offer``); the connection
filters the update, numbers it and appends the encoded frame to a bounded buffer that a
sender task drains into the socket. Numbering at enqueue time keeps updates and
heartbeats in one sequence; a full buffer means a slow consumer, which is dropped
(closed) rather than allowed to hold up the market or the other connections.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from . import frames
from .faults import UPDATE_ONLY, Fault, FaultKind, corrupt_level
from .frames import Subscription
from .market import Update

if TYPE_CHECKING:
    from .hub import SymbolHub

__all__ = ["ConnState", "Connection"]

log = logging.getLogger("collector.sim")

K = FaultKind
# Faults that act on a carrier frame (the next one, or the next update for unknown and
# corrupt): armed, they wait in `_pending`.
CARRIED = (K.GAP, K.UNKNOWN, K.DUPLICATE, K.CORRUPT)


class ConnState(enum.Enum):
    LIVE = "live"
    STALLED = "stalled"  # open, silent until the client closes
    CLOSING = "closing"  # finishing: queued frames go out, then a close frame (replay loop)
    CLOSED = "closed"  # aborted, dropped as slow, or closed by the client


class ClosingSocket:
    """How a simulated connection ends, shared by the v1 and current-API connections:
    a clean close once the queued frames are sent, a slow consumer dropped, an abort."""

    ws: ServerConnection
    state: ConnState
    queue: deque[Any]
    close_timeout: float
    _wake: asyncio.Event
    _finish: tuple[int, str] | None
    _watchdog: asyncio.TimerHandle | None

    async def _close_slow(self) -> None:
        try:
            # A close frame (1008) if the client still reads, else an abort.
            await asyncio.wait_for(self.ws.close(1008, "slow consumer"), self.close_timeout)
        except (TimeoutError, ConnectionClosed, OSError):
            pass
        finally:
            self._abort()

    def finish(self, code: int, reason: str, grace: float = 5.0) -> None:
        """Close cleanly: no new frames; the queued ones are sent, then a close frame
        ``code``/``reason``. A stalled connection just gets the close frame. If that has
        not happened within ``grace`` seconds (a client that stopped reading), abort."""
        if self.state in (ConnState.CLOSED, ConnState.CLOSING):
            return
        if self.state is ConnState.STALLED:
            self.queue.clear()
        self.state = ConnState.CLOSING
        self._finish = (code, reason)
        self._wake.set()
        self._watchdog = asyncio.get_running_loop().call_later(grace, self._abort)

    def _abort(self) -> None:
        if self.ws.transport is not None:
            self.ws.transport.abort()

    async def _close_clean(self, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(self.ws.close(code, reason), self.close_timeout)
        except (TimeoutError, ConnectionClosed, OSError):
            self._abort()
        finally:
            if self._watchdog is not None:
                self._watchdog.cancel()



class Connection(ClosingSocket):
    def __init__(self, conn_id: int, hub: SymbolHub, ws: ServerConnection, sub: Subscription,
                 max_queue: int, close_timeout: float = 1.0) -> None:
        self.id = conn_id
        self.hub = hub
        self.ws = ws
        self.sub = sub
        self.max_queue = max_queue
        self.close_timeout = close_timeout
        self.seq = 0  # next socket_sequence to assign
        self.state = ConnState.LIVE
        self.queue: deque[bytes] = deque()
        self.snapshot_delay = 0.0
        self._wake = asyncio.Event()
        self._pending: list[FaultKind] = []  # CARRIED faults waiting for their carrier frame
        self._closer: asyncio.Task[None] | None = None
        self._finish: tuple[int, str] | None = None  # close frame to send once drained
        self._watchdog: asyncio.TimerHandle | None = None

    # ---- frames ------------------------------------------------------------------

    def open(self, armed: list[Fault]) -> None:
        """Queue the seq-0 snapshot, then fire faults armed before this connection."""
        for f in armed:
            if f.kind in CARRIED:
                self._pending.append(f.kind)
        m = self.hub.market
        self._emit(lambda seq: frames.snapshot_frame(
            m.spec, m.bids, m.asks, self.hub.last_event_id, self.sub, seq), None)
        for f in armed:
            if f.kind not in CARRIED:
                self.arm(f)

    def offer(self, update: Update) -> None:
        """Called by the hub for every published update."""
        if self.state is not ConnState.LIVE:
            return
        events = frames.filtered_events(update, self.sub)
        if events is None:  # everything filtered out: no frame, no sequence number
            return
        self._emit(lambda seq: frames.update_frame(update, events, seq), update)

    def heartbeat(self) -> None:
        if self.state is ConnState.LIVE:
            self._emit(frames.heartbeat_frame, None)
            self.hub.stats.heartbeats += 1

    def _emit(self, build: Callable[[int], bytes], update: Update | None) -> None:
        """Number and queue one frame, applying pending and random faults to it."""
        kinds = [(k, False) for k in self._take_pending(update is not None)]
        kinds += [(k, True) for k in self.hub.random_faults.roll_frame(update is not None)]
        if not kinds:
            self._push(build(self.seq))
            self.seq += 1
            return
        fired = dict(kinds)
        for terminal in (K.CLOSE, K.STALL):
            if terminal in fired:
                self._terminal(terminal, fired[terminal])
                return
        if K.GARBAGE in fired:
            self._garbage(fired[K.GARBAGE])
        if K.GAP in fired:
            self.hub.fired(K.GAP, self, self.seq, fired[K.GAP])
            self.seq += 1
            for k in (K.UNKNOWN, K.DUPLICATE, K.CORRUPT):  # an injected one waits for the next carrier
                if fired.get(k) is False:
                    self._pending.append(k)
        else:
            m = self.hub.market
            if K.UNKNOWN in fired and update is not None:
                self.hub.fired(K.UNKNOWN, self, self.seq, fired[K.UNKNOWN])
                frame = frames.mystery_frame(update, self.sub, self.seq)
                if fired.get(K.CORRUPT) is False:
                    self._pending.append(K.CORRUPT)
            elif (K.CORRUPT in fired and update is not None
                  and (level := corrupt_level(m.bids, m.asks)) is not None):
                self.hub.fired(K.CORRUPT, self, self.seq, fired[K.CORRUPT])
                frame = frames.corrupt_frame(update, self.sub, self.seq, m.spec, level)
            else:
                frame = build(self.seq)
            self._push(frame)
            if K.DUPLICATE in fired:  # sent again, socket_sequence and all
                self.hub.fired(K.DUPLICATE, self, self.seq, fired[K.DUPLICATE])
                self._push(frame)
            self.seq += 1
        # After the carrier, so eventIds on this connection still increase.
        if K.CROSSED in fired:
            self._crossed(fired[K.CROSSED])

    def _take_pending(self, is_update: bool) -> list[FaultKind]:
        if not self._pending:
            return []
        # One of each kind per frame: a second armed gap hits the following frame.
        take: list[FaultKind] = []
        keep: list[FaultKind] = []
        for k in self._pending:
            usable = is_update or k not in UPDATE_ONLY
            (take if usable and k not in take else keep).append(k)
        self._pending = keep
        return take

    def _push(self, frame: bytes) -> None:
        if self.state is not ConnState.LIVE:
            return
        if len(self.queue) >= self.max_queue:
            self._drop_slow()
            return
        self.queue.append(frame)
        self.hub.stats.frames_queued += 1
        self._wake.set()

    # ---- faults --------------------------------------------------------------------

    def arm(self, fault: Fault) -> None:
        """Apply an injected connection fault: gap, duplicate and unknown wait for their
        carrier frame (the next frame / the next update frame); the others take effect now."""
        if self.state is not ConnState.LIVE:
            return
        k = fault.kind
        if k in CARRIED:
            self._pending.append(k)
        elif k in (K.CLOSE, K.STALL):
            self._terminal(k, False)
        elif k is K.GARBAGE:
            self._garbage(False)
        elif k is K.CROSSED:
            self._crossed(False)
        else:  # pragma: no cover - handshake kinds never reach a connection
            raise ValueError(f"{k} is not a connection fault")

    def _garbage(self, rnd: bool) -> None:
        self.hub.fired(K.GARBAGE, self, self.seq, rnd)
        self._push(frames.GARBAGE)

    def _crossed(self, rnd: bool) -> None:
        m = self.hub.market
        event_id = m.event_ids.next(1)  # a fresh id: the lie is not in the truth
        self.hub.fired(K.CROSSED, self, self.seq, rnd)
        self._push(frames.crossed_frame(m.spec, m.bids, m.asks, event_id, self.hub.clock_ms(),
                                        self.seq))
        self.seq += 1

    def _terminal(self, kind: FaultKind, rnd: bool) -> None:
        self.hub.fired(kind, self, self.seq, rnd)
        self.queue.clear()
        if kind is K.STALL:
            self.state = ConnState.STALLED
            return
        self.state = ConnState.CLOSED
        transport = self.ws.transport
        if transport is not None:
            transport.abort()  # no close frame, like a dropped TCP connection

    def _drop_slow(self) -> None:
        self.state = ConnState.CLOSED
        self.queue.clear()
        self.hub.stats.slow_closes += 1
        log.info("dropping slow consumer", extra={"symbol": self.hub.symbol, "conn": self.id})
        self._closer = asyncio.get_running_loop().create_task(self._close_slow())

    # ---- tasks -----------------------------------------------------------------------

    async def run_sender(self) -> None:
        ws, queue, stats = self.ws, self.queue, self.hub.stats
        try:
            if self.snapshot_delay > 0:
                await asyncio.sleep(self.snapshot_delay)
            while True:
                if not queue:
                    if self._finish is not None:
                        await self._close_clean(*self._finish)
                        return
                    self._wake.clear()
                    self.hub.wake_market()
                    await self._wake.wait()
                    continue
                await ws.send(queue.popleft(), text=True)
                stats.frames_sent += 1
                self.hub.notify()
        except ConnectionClosed:
            pass

    async def run_heartbeats(self, interval: float) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + interval
        while self.state is ConnState.LIVE:
            await asyncio.sleep(max(0.0, due - loop.time()))
            due += interval
            self.heartbeat()
