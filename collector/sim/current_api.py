"""Gemini's current market-data API (``wss://ws.gemini.com``, PROTOCOL.md 6) on the
simulator: one socket, any number of symbols, Binance-style requests.

A ``CurrentConnection`` is one socket: its requests, its send buffer (bounded, a slow
consumer is dropped as in v1) and its sender. Each symbol it subscribes to gets a
``SymbolSubscription``, which registers with that symbol's hub exactly as a v1
``Connection`` does (``hub.attach`` / ``detach``). So both APIs are fed by the same
market, write the same truth and take the same injected faults.

Update ids are the v1 event ids (one counter shared by all symbols, random jumps): a
``depthUpdate`` for an update carries ``u`` = its event id and ``U`` = the ``u`` of the
previous depth frame of that subscription, so frames overlap by one id; the snapshot
has ``U == u`` = the symbol's latest published event id. ``sim.truth(sym).top_at(u)``
is therefore the book after any frame. Updates that change no level (block trades,
auction events) send no depth frame.

Faults on a subscription (``sim.inject(symbol, kind)``), ``*`` = the whole socket:

* ``gap``: the next depth frame is not sent, its ids are consumed (the following frame's
  ``U`` is then above the client's last ``u``). Armed with no subscription open: the
  next subscription's first frame *after* its snapshot (a lost snapshot could not be
  noticed: it has no marker).
* ``unknown``: a ``{"e":"mystery",...}`` frame follows the next depth frame.
* ``duplicate``: the next depth frame is followed by the depth frame sent before it (an
  older one, ``u`` below the client's last) and by itself again (``u`` equal to it):
  two stale frames a client must skip. Armed with no subscription open: the first frame
  after the next snapshot (the older one re-sent is then the snapshot).
* ``garbage``: a non-JSON text frame now (or right after the next snapshot).
* ``crossed``: a depth frame now with a fresh id placing a bid at the best ask + 1 tick
  (never in the truth).
* ``corrupt``: the next depth frame keeps its ids but sets the best bid (no bid: the best
  ask) one amount increment above the truth, which keeps the true amount.
* ``close`` *: the TCP transport is aborted.
* ``stall`` *: the socket goes dead: nothing more is sent, no server pings, and client
  pings are not answered (a current-API client tells death by ping/pong, not by data
  silence, which is normal for a quiet book); the socket stays open until the client
  leaves.
* ``slow_snapshot``: the next subscription of the symbol holds all its frames (snapshot
  first) for ``delay`` s; the subscribe ack is not held, so it arrives first.
* ``refuse``: handshakes name no symbol, so a current-API handshake is refused when any
  symbol has a refusal armed (the first listed such symbol gives status and
  Retry-After); random refusals are rolled per handshake from the simulator's spec.

Random connection faults are rolled per depth frame of each subscription.

Request weight (``gate.py``): a valid SUBSCRIBE / UNSUBSCRIBE the simulator's limit
refuses is answered ``{"error":{"code":429,"msg":...},"id":N}`` and not done.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Mapping, Sized
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from .connection import CARRIED, ClosingSocket, ConnState
from .current_frames import (
    GARBAGE,
    Padding,
    ack_frame,
    corrupt_body,
    crossed_body,
    depth_body,
    depth_frame,
    error_frame,
    event_ns,
    mystery_frame,
    snapshot_body,
    trade_frames,
)
from .faults import Fault, FaultKind, corrupt_level
from .hub import LOW_WATER
from .market import Update

if TYPE_CHECKING:
    from .hub import SymbolHub

__all__ = ["CurrentConnection", "SymbolSubscription", "is_current_path", "snapshot_mode"]

log = logging.getLogger("collector.sim")

K = FaultKind
DEPTH, TRADE = "depth", "trade"
_DEPTH_KINDS = {"depth": DEPTH, "depth@100ms": DEPTH, "trade": TRADE}


def is_current_path(path: str) -> bool:
    """The current API is served at the root (``ws://HOST:PORT/?snapshot=-1``)."""
    return path in ("", "/")


def snapshot_mode(query: str) -> int:
    """``snapshot`` query parameter: -1 full book, N > 0 top N levels, 0 (default) none."""
    value = dict(parse_qsl(query, keep_blank_values=True)).get("snapshot", "0")
    try:
        n = int(value)
    except ValueError:
        return 0
    return -1 if n < 0 else n


def _discard(*_: Any) -> None:
    return None


class CurrentConnection(ClosingSocket):
    def __init__(self, conn_id: int, hubs: Mapping[str, SymbolHub], ws: ServerConnection,
                 snapshot: int, max_queue: int, close_timeout: float, ids: Iterator[int],
                 on_unknown_symbol: Callable[[], None] = lambda: None,
                 admit: Callable[[list[str]], str | None] = lambda _: None) -> None:
        self.id = conn_id
        self.hubs = hubs
        self.ws = ws
        self.snapshot = snapshot
        self.max_queue = max_queue
        self.close_timeout = close_timeout
        self.state = ConnState.LIVE
        self.queue: deque[tuple[SymbolHub | None, bytes]] = deque()
        self.subs: dict[str, SymbolSubscription] = {}
        self.requests = 0  # requests received
        self._ids = ids
        self._on_unknown_symbol = on_unknown_symbol
        self._admit = admit  # the request-weight limit: None, or why the request is refused
        self._wake = asyncio.Event()
        self._backlogged = False  # the queue reached LOW_WATER since the sender last ran dry
        self._finish: tuple[int, str] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._closer: asyncio.Task[None] | None = None

    # ---- the socket ------------------------------------------------------------------

    async def serve(self) -> None:
        """Read requests until the client leaves; then detach every subscription."""
        sender = asyncio.create_task(self.run_sender())
        try:
            async for message in self.ws:
                if self.state is ConnState.LIVE:  # a dead socket ignores everything
                    self.handle(message)
        except ConnectionClosed:
            pass
        finally:
            for sub in list(self.subs.values()):
                sub.hub.detach(sub)
            self.subs.clear()
            self.state = ConnState.CLOSED
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)

    def push(self, hub: SymbolHub | None, frame: bytes) -> None:
        if self.state is not ConnState.LIVE:
            return
        if len(self.queue) >= self.max_queue:
            self._drop_slow()
            return
        self.queue.append((hub, frame))
        if len(self.queue) >= LOW_WATER:
            self._backlogged = True
        if hub is not None:
            hub.stats.frames_queued += 1
        self._wake.set()

    async def run_sender(self) -> None:
        ws, queue = self.ws, self.queue
        try:
            while True:
                if not queue:
                    if self._finish is not None:
                        await self._close_clean(*self._finish)
                        return
                    self._wake.clear()
                    # Only a queue that reached LOW_WATER can have paused a rate-0 market:
                    # waking every subscribed hub each time the queue ran dry cost a loop
                    # over all of them (347 on a whole exchange) hundreds of times a second.
                    if self._backlogged:
                        self._backlogged = False
                        for sub in list(self.subs.values()):
                            sub.hub.wake_market()
                    await self._wake.wait()
                    continue
                hub, frame = queue.popleft()
                await ws.send(frame, text=True)
                if hub is not None:
                    hub.stats.frames_sent += 1
                    hub.notify()
        except ConnectionClosed:
            pass

    # ---- requests --------------------------------------------------------------------

    def handle(self, message: str | bytes) -> None:
        self.requests += 1
        try:
            msg = orjson.loads(message)
        except orjson.JSONDecodeError:
            self.push(None, error_frame(None, 3, "Invalid JSON"))
            return
        if not isinstance(msg, dict):
            self.push(None, error_frame(None, 3, "Invalid request: not an object"))
            return
        req_id = msg.get("id")
        method = msg.get("method")
        if method == "LIST_SUBSCRIPTIONS":
            names = [f"{s.lower()}@{k}" for s, sub in self.subs.items() for k in sub.streams()]
            self.push(None, ack_frame(req_id, names))
            return
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE"):
            self.push(None, error_frame(req_id, 1, f"Unknown method {method!r}"))
            return
        wanted = self._streams(msg.get("params"))
        if isinstance(wanted, str):
            self.push(None, error_frame(req_id, 2, wanted))
            return
        refused = self._admit(msg["params"])
        if refused is not None:
            self.push(None, error_frame(req_id, 429, refused))
            return
        if method == "SUBSCRIBE":
            self._subscribe(wanted)
        else:
            self._unsubscribe(wanted)
        self.push(None, ack_frame(req_id))

    def _streams(self, params: Any) -> dict[str, set[str]] | str:
        """{SYMBOL: {"depth", "trade"}}, or the error message."""
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            return "Invalid request: params must be a list of stream names"
        out: dict[str, set[str]] = defaultdict(set)
        for name in params:
            sym, _, rest = name.lower().partition("@")
            kind = _DEPTH_KINDS.get(rest)
            if kind is None:
                return f"Invalid stream {name!r} (the simulator has <sym>@depth@100ms, " \
                       "<sym>@depth and <sym>@trade)"
            if sym.upper() not in self.hubs:
                self._on_unknown_symbol()
                return f"Invalid symbol in stream {name!r}"
            out[sym.upper()].add(kind)
        return out

    def _subscribe(self, wanted: dict[str, set[str]]) -> None:
        for sym, kinds in wanted.items():
            sub = self.subs.get(sym)
            if sub is None:
                sub = SymbolSubscription(next(self._ids), self, self.hubs[sym])
                sub.depth, sub.trades = DEPTH in kinds, TRADE in kinds
                self.subs[sym] = sub
                sub.hub.attach(sub)  # -> sub.open(): the snapshot, armed faults
                continue
            if TRADE in kinds:
                sub.trades = True
            if DEPTH in kinds and not sub.depth:
                sub.depth = True
                sub.start_depth()

    def _unsubscribe(self, wanted: dict[str, set[str]]) -> None:
        for sym, kinds in wanted.items():
            sub = self.subs.get(sym)
            if sub is None:
                continue
            if DEPTH in kinds:
                sub.stop(DEPTH)
            if TRADE in kinds:
                sub.stop(TRADE)
            if not sub.depth and not sub.trades:
                sub.hub.detach(sub)
                del self.subs[sym]

    # ---- faults and closing ------------------------------------------------------------

    def terminal(self, kind: FaultKind, rnd: bool, sub: SymbolSubscription) -> None:
        sub.hub.fired(kind, sub, sub.last_u, rnd)
        self.queue.clear()
        if kind is K.STALL:
            self._go_dead()
            return
        self.state = ConnState.CLOSED
        transport = self.ws.transport
        if transport is not None:
            transport.abort()

    def _go_dead(self) -> None:
        """No more frames of any kind: no data, no pings, no pongs, no close frame."""
        self.state = ConnState.STALLED
        task = self.ws.keepalive_task
        if task is not None:
            task.cancel()
            self.ws.keepalive_task = None
        setattr(self.ws.protocol, "send_frame", _discard)  # noqa: B010  # a black hole; setattr keeps mypy off the method

    def _drop_slow(self) -> None:
        self.state = ConnState.CLOSED
        self.queue.clear()
        for sub in self.subs.values():
            sub.hub.stats.slow_closes += 1
        log.info("dropping slow consumer", extra={"conn": self.id})
        self._closer = asyncio.get_running_loop().create_task(self._close_slow())


class SymbolSubscription:
    """One symbol's streams on one current-API socket; a hub ``Subscriber``."""

    def __init__(self, sub_id: int, conn: CurrentConnection, hub: SymbolHub) -> None:
        self.id = sub_id
        self.conn = conn
        self.hub = hub
        self.symbol = hub.symbol
        self.pad = Padding(hub.market.spec)
        self.depth = False
        self.trades = False
        self.last_u = hub.last_event_id  # `u` of the last depth frame (the next one's U)
        self.snapshot_delay = 0.0
        self._closed = False
        self._held: list[tuple[str, bytes]] | None = None  # slow snapshot: frames held
        self._pending: list[FaultKind] = []  # CARRIED faults waiting for a depth frame
        self._prev: bytes | None = None  # the last depth frame sent (duplicate re-sends it)

    @property
    def state(self) -> ConnState:
        return ConnState.CLOSED if self._closed else self.conn.state

    @state.setter
    def state(self, value: ConnState) -> None:
        if value is ConnState.CLOSED:  # hub.detach
            self._closed = True

    @property
    def queue(self) -> Sized:
        return self.conn.queue

    def streams(self) -> list[str]:
        return ([DEPTH + "@100ms"] if self.depth else []) + ([TRADE] if self.trades else [])

    # ---- lifecycle ---------------------------------------------------------------------

    def open(self, armed: list[Fault]) -> None:
        """Called by ``hub.attach``: hold frames if the snapshot is slow, queue the
        snapshot, then fire the faults armed before this subscription."""
        if self.snapshot_delay > 0:
            self._held = []
            asyncio.get_running_loop().call_later(self.snapshot_delay, self._release)
        for f in armed:
            if f.kind in CARRIED:
                self._pending.append(f.kind)
        if self.depth:
            self.start_depth()
        for f in armed:
            if f.kind not in CARRIED:
                self.arm(f)

    def start_depth(self) -> None:
        """A depth subscription starts: the snapshot (``U == u`` = the latest id)."""
        self.last_u = u = self.hub.last_event_id
        top = self.conn.snapshot
        if top == 0:
            return
        m = self.hub.market
        body = snapshot_body(self.pad, m.bids, m.asks, None if top < 0 else top, u)
        self._prev = depth_frame(self.symbol, event_ns(self.hub.clock_ms(), u), u, u, body)
        self._push(DEPTH, self._prev)

    def stop(self, kind: str) -> None:
        if kind == DEPTH:
            self.depth = False
        else:
            self.trades = False
        if self._held is not None:  # nothing of the old subscription after its ack
            self._held = [(k, f) for k, f in self._held if k != kind]

    def finish(self, code: int, reason: str, grace: float = 5.0) -> None:
        self.conn.finish(code, reason, grace)

    def _release(self) -> None:
        held, self._held = self._held, None
        if held is None or self._closed:
            return
        for _, frame in held:
            self.conn.push(self.hub, frame)

    def _push(self, kind: str, frame: bytes) -> None:
        if self._closed:
            return
        if self._held is not None:
            self._held.append((kind, frame))
        else:
            self.conn.push(self.hub, frame)

    # ---- market updates ------------------------------------------------------------------

    def offer(self, update: Update) -> None:
        if self.state is not ConnState.LIVE:
            return
        trades = trade_frames(self.symbol, self.pad, update) if self.trades else []
        body = depth_body(self.pad, update) if self.depth else None
        if body is None:
            for t in trades:
                self._push(TRADE, t)
            return
        first, last = self.last_u, update.event_id
        self.last_u = last
        frame = depth_frame(self.symbol, event_ns(update.timestampms, last), first, last, body)
        kinds = [(k, False) for k in self._take_pending()]
        kinds += [(k, True) for k in self.hub.random_faults.roll_frame(True)]
        if not kinds:
            for t in trades:
                self._push(TRADE, t)
            self._push(DEPTH, frame)
            self._prev = frame
            return
        fired = dict(kinds)
        for terminal in (K.CLOSE, K.STALL):
            if terminal in fired:
                self.conn.terminal(terminal, fired[terminal], self)
                return
        for t in trades:
            self._push(TRADE, t)
        if K.GARBAGE in fired:
            self._garbage(fired[K.GARBAGE])
        if K.GAP in fired:
            self.hub.fired(K.GAP, self, last, fired[K.GAP])
            for k in (K.UNKNOWN, K.DUPLICATE, K.CORRUPT):  # an injected one waits for the next frame
                if fired.get(k) is False:
                    self._pending.append(k)
        else:
            m = self.hub.market
            if K.CORRUPT in fired and (level := corrupt_level(m.bids, m.asks)) is not None:
                self.hub.fired(K.CORRUPT, self, last, fired[K.CORRUPT])
                frame = depth_frame(self.symbol, event_ns(update.timestampms, last), first, last,
                                    corrupt_body(self.pad, update, level))
            self._push(DEPTH, frame)
            if K.DUPLICATE in fired:
                self._duplicate(frame, last, fired[K.DUPLICATE])
            self._prev = frame
            if K.UNKNOWN in fired:
                self.hub.fired(K.UNKNOWN, self, last, fired[K.UNKNOWN])
                self._push(DEPTH, mystery_frame(self.symbol, event_ns(update.timestampms, last)))
        if K.CROSSED in fired:
            self._crossed(fired[K.CROSSED])

    def _take_pending(self) -> list[FaultKind]:
        # One of each kind per frame: a second armed gap hits the following frame.
        take: list[FaultKind] = []
        keep: list[FaultKind] = []
        for k in self._pending:
            (keep if k in take else take).append(k)
        self._pending = keep
        return take

    # ---- faults ------------------------------------------------------------------------

    def arm(self, fault: Fault) -> None:
        if self.state is not ConnState.LIVE:
            return
        k = fault.kind
        if k in CARRIED:
            self._pending.append(k)
        elif k in (K.CLOSE, K.STALL):
            self.conn.terminal(k, False, self)
        elif k is K.GARBAGE:
            self._garbage(False)
        elif k is K.CROSSED:
            self._crossed(False)
        else:  # pragma: no cover - handshake kinds never reach a subscription
            raise ValueError(f"{k} is not a connection fault")

    def _duplicate(self, frame: bytes, last: int, rnd: bool) -> None:
        """After `frame` (whose `u` is `last`): the depth frame before it, then itself."""
        self.hub.fired(K.DUPLICATE, self, last, rnd)
        if self._prev is not None:
            self._push(DEPTH, self._prev)
        self._push(DEPTH, frame)

    def _garbage(self, rnd: bool) -> None:
        self.hub.fired(K.GARBAGE, self, self.last_u, rnd)
        self._push("other", GARBAGE)

    def _crossed(self, rnd: bool) -> None:
        if not self.depth:
            return  # no depth stream to lie on
        m = self.hub.market
        first, last = self.last_u, m.event_ids.next(1)  # a fresh id: not in the truth
        self.last_u = last
        self.hub.fired(K.CROSSED, self, last, rnd)
        body = crossed_body(self.pad, m.bids, m.asks)
        self._push(DEPTH, depth_frame(self.symbol, event_ns(self.hub.clock_ms(), last),
                                      first, last, body))
