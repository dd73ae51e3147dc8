"""One symbol's subscription on Gemini's current API -> output records (pure, no I/O).

The counterpart of `collector.gemini.v1_stream.V1Stream` for `wss://ws.gemini.com` (PROTOCOL.md 6).
The caller owns the socket (opened with `?snapshot=-1`, see
`collector.gemini.current.connect_url`); this object owns the protocol state of one
symbol and says which requests to send: after `start()`, `resync()` and every `feed()`,
send `take_requests()` in order.

States:

* `subscribing` (after `start()`, or after the UNSUBSCRIBE of a `resync()` was
  acknowledged): the next `depthUpdate` is the **whole book**, whatever its ids (the
  snapshot carries no marker; `U == u` is usual but not relied on). It replaces the
  book: a new subscription never merges into an old book, so no ghost levels.
* `live`: continuity by update ids, `last` being the `u` of the last frame applied:
  `u <= last` stale, skipped; `U <= last < u` applied (frames overlap by one id:
  each `U` equals the previous `u`, so `U == last + 1` is *not* the test); `U > last`
  raises `StreamBroken("gap", expected=last, got=U)`.
* `unsubscribing` (after `resync()`): depth frames are dropped until the UNSUBSCRIBE is
  acknowledged; then a SUBSCRIBE for the depth stream is queued (-> `subscribing`).
  Until the ack nothing is trusted as the new snapshot (PROTOCOL.md 6).

`StreamBroken` (`collector.core.stream`) is raised for `gap`,
`crossed` (best bid >= best ask after a frame), `invalid` (unparseable frame, a frame
for another symbol, an error reply to one of our requests, too many trades held).
A break forgets the book (state `broken`: depth frames are dropped, trades held) until
`resync()` (resubscribe on the same socket), or the caller drops the stream and
reconnects with a new `CurrentStream`.

Records (rendered by `collector.core.format`, with `exchange_ns`):

* book: `seq` = `event_id` = the frame's `u`; `exchange_ms` = `E // 10**6`,
  `exchange_ns` = `E`; one after the snapshot, then one per applied frame whose levels
  changed the top `depth` (emit "change") or that carried levels (emit "every").
* trade: `tid` = `t`, `price`/`amount` = `p`/`q` (canonical text), `maker_side` =
  "bid" if `m` else "ask", `exchange_ms`/`exchange_ns` from the trade's `E`.
  `event_id` = `u` of the book the trade arrived after, `seq` = that + 1. Trade
  frames carry no update id; `seq` = last + 1 places each trade after the book
  record it followed and at or before the next one (the next applied frame has
  `u >= last + 1`), which is the order `collector verify` checks. Trades that arrive
  before the book is known (around a subscribe or a resync) are held and written just
  before the snapshot's book record, with `seq` = `event_id` = the snapshot's `u`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any, ClassVar

from collector.core import format
from collector.core.book import HAVE_NATIVE, Book, set_levels
from collector.core.format import Reason
from collector.core.stream import Counts, OnUnknown, StreamBroken, StreamState, advance
from collector.gemini.current import (
    Ack,
    DepthUpdate,
    Error,
    Frame,
    InvalidFrame,
    Trade,
    connect_url,
    depth_stream,
    parse,
    streams,
    subscribe,
    unsubscribe,
)
from collector.gemini.wire import is_int, show

MAX_HELD_TRADES = 10_000


class CurrentStream:
    HEARTBEATS: ClassVar[bool] = False  # a quiet book may say nothing for half a minute
    REPAIRS_IN_PLACE: ClassVar[bool] = True

    __slots__ = (
        "_held",
        "_ids",
        "_outbox",
        "_pending",
        "book",
        "counts",
        "depth",
        "dropped",
        "emit_every",
        "last_id",
        "native",
        "on_unknown",
        "stale",
        "state",
        "symbol",
        "trades",
    )

    def __init__(self, symbol: str, depth: int, emit_every: bool,
                 on_unknown: OnUnknown = lambda kind: None,
                 counts: Counts | None = None, native: bool = HAVE_NATIVE, *,
                 trades: bool = True, ids: Iterator[int] | None = None) -> None:
        self.symbol = symbol.upper()
        self.depth = depth
        self.emit_every = emit_every
        self.trades = trades
        self.on_unknown = on_unknown  # called with "frame:<e>" for unknown event types
        self.counts = counts if counts is not None else Counts()
        self.native = native
        self.book: Book | None = None
        self.last_id: int | None = None  # `u` of the last depth frame applied
        self.state = StreamState.IDLE
        self.stale = 0  # depth frames skipped as stale (u <= last)
        self.dropped = 0  # depth frames of an old subscription dropped while resubscribing
        # Request ids; share one counter between the streams of one socket so that
        # replies can be routed by id.
        self._ids = ids if ids is not None else itertools.count(1)
        self._outbox: list[bytes] = []
        self._pending: dict[int, str] = {}  # request id -> "SUBSCRIBE" | "UNSUBSCRIBE"
        self._held: list[tuple[Trade, int]] = []  # trades before the book, with recv_ns

    # ---- requests ------------------------------------------------------------------

    @staticmethod
    def url(base: str, symbol: str, trades: bool) -> str:
        """Every symbol shares the one endpoint; the streams are asked for by SUBSCRIBE."""
        return connect_url(base)

    @property
    def live(self) -> bool:
        return self.book is not None

    @property
    def outbox(self) -> list[bytes]:
        return self._outbox

    def start(self) -> None:
        """Subscribe this symbol's streams; the next depth frame will be the book."""
        self._request("SUBSCRIBE", streams(self.symbol, self.trades))
        self.state = advance(self.state, StreamState.SUBSCRIBING)

    def resync(self) -> None:
        """After a break: drop the book and get a fresh snapshot on the same socket
        (UNSUBSCRIBE the depth stream, SUBSCRIBE it again once that is acknowledged).
        Trades keep flowing and are held until the new snapshot."""
        self.book = None
        self.last_id = None
        self._request("UNSUBSCRIBE", [depth_stream(self.symbol)])
        self.state = advance(self.state, StreamState.UNSUBSCRIBING)

    def drop(self) -> None:
        """A break found outside the stream (an audit saw a wrong book): forget the book
        until `resync()`, as a break found here does."""
        self.state = advance(self.state, StreamState.BROKEN)
        self.book = None
        self.last_id = None

    def take_requests(self) -> list[bytes]:
        """Requests to send now, in order."""
        out, self._outbox = self._outbox, []
        return out

    def owns(self, req_id: int | None) -> bool:
        return req_id in self._pending

    def renumber(self, req_id: int, to: Any) -> None:
        """A replay adopts the id the run gave a request (a shared socket numbers the
        requests of all its symbols in one series)."""
        if req_id in self._pending and is_int(to):
            self._pending[to] = self._pending.pop(req_id)

    def _request(self, method: str, names: list[str]) -> None:
        req_id = next(self._ids)
        self._pending[req_id] = method
        build = subscribe if method == "SUBSCRIBE" else unsubscribe
        self._outbox.append(build(names, req_id))

    # ---- frames --------------------------------------------------------------------

    def feed(self, raw: bytes | str, recv_ns: int) -> bytes:
        """Consume one frame of a socket that carries this symbol only; return the
        records it produced (possibly b"")."""
        try:
            frame = parse(raw)
        except InvalidFrame as exc:
            raise self._broken(Reason.INVALID, detail=exc.why, sample=exc.sample) from None
        return self.feed_frame(frame, recv_ns)

    def feed_frame(self, frame: Frame, recv_ns: int) -> bytes:
        """Consume one parsed frame (a socket shared by several symbols routes depth and
        trade frames by symbol, and offers replies to every stream: each takes its own)."""
        if isinstance(frame, DepthUpdate):
            return self._depth(frame, recv_ns)
        if isinstance(frame, Trade):
            return self._trade(frame, recv_ns)
        if isinstance(frame, Ack):
            self._ack(frame.id)
            return b""
        if isinstance(frame, Error):
            req_id = frame.id
            if req_id is None or req_id in self._pending:
                method = self._pending.pop(req_id, "request") if req_id is not None else "request"
                raise self._broken(Reason.INVALID, detail=f"{method} {req_id} refused: {show(frame.error)}")
            return b""
        self.on_unknown(f"frame:{frame.kind}")
        return b""

    def _ack(self, req_id: int | None) -> None:
        method = self._pending.pop(req_id, None) if req_id is not None else None
        if method == "UNSUBSCRIBE" and self.state is StreamState.UNSUBSCRIBING:
            self._request("SUBSCRIBE", [depth_stream(self.symbol)])
            self.state = advance(self.state, StreamState.SUBSCRIBING)

    def _check_symbol(self, symbol: str) -> None:
        if symbol != self.symbol:
            raise self._broken(Reason.INVALID,
                               detail=f"frame for {symbol[:40]} on the {self.symbol} stream")

    def _depth(self, frame: DepthUpdate, recv_ns: int) -> bytes:
        self._check_symbol(frame.symbol)
        state = self.state
        if state is StreamState.LIVE:
            return self._update(frame, recv_ns)
        if state is StreamState.SUBSCRIBING:
            return self._snapshot(frame, recv_ns)
        if state is StreamState.UNSUBSCRIBING or state is StreamState.BROKEN:
            self.dropped += 1
            return b""
        raise self._broken(Reason.INVALID, detail="depth frame before any subscribe")

    def _snapshot(self, frame: DepthUpdate, recv_ns: int) -> bytes:
        book = Book(self.native)
        book.bids.load(frame.bids)  # in one go: a snapshot of any depth in O(n log n)
        book.asks.load(frame.asks)
        self._check_crossed(book, frame.last_id)
        self.book = book
        self.last_id = frame.last_id
        self.state = advance(self.state, StreamState.LIVE)
        out = self._flush_held(frame.last_id)
        out.append(self._render(frame, recv_ns))
        return b"".join(out)

    def _update(self, frame: DepthUpdate, recv_ns: int) -> bytes:
        last = self.last_id
        assert last is not None and self.book is not None
        if frame.last_id <= last:
            self.stale += 1
            return b""
        if frame.first_id > last:
            raise self._broken(Reason.GAP, expected=last, got=frame.first_id)
        self.last_id = frame.last_id
        latency = self.counts.latency
        if latency is not None:
            latency.observe(recv_ns // 1_000_000 - frame.event_ns // 1_000_000)
        if not frame.bids and not frame.asks:
            return b""
        book, depth = self.book, self.depth
        top_changed = set_levels(book.bids, frame.bids, depth)
        if set_levels(book.asks, frame.asks, depth):
            top_changed = True
        self.counts.updates += 1
        self._check_crossed(book, frame.last_id)
        if top_changed or self.emit_every:
            return self._render(frame, recv_ns)
        return b""

    def _trade(self, trade: Trade, recv_ns: int) -> bytes:
        self._check_symbol(trade.symbol)
        if self.last_id is None:  # no book yet: hold it for the snapshot
            if len(self._held) >= MAX_HELD_TRADES:
                raise self._broken(Reason.INVALID, detail=f"more than {MAX_HELD_TRADES} trades "
                                                          "before the book snapshot")
            self._held.append((trade, recv_ns))
            return b""
        self.counts.trades += 1
        return self._trade_record(self.last_id + 1, self.last_id, trade, recv_ns)

    def _flush_held(self, update_id: int) -> list[bytes]:
        held, self._held = self._held, []
        self.counts.trades += len(held)
        return [self._trade_record(update_id, update_id, t, ns) for t, ns in held]

    def _check_crossed(self, book: Book, update_id: int) -> None:
        why = book.crossed()
        if why is not None:
            raise self._broken(Reason.CROSSED, detail=why, seq=update_id)

    def _broken(self, reason: Reason, **fields: Any) -> StreamBroken:
        """Forget the book (it can no longer be trusted) until `resync()`."""
        self.state = advance(self.state, StreamState.BROKEN)
        self.book = None
        self.last_id = None
        return StreamBroken(reason, **fields)

    def _render(self, frame: DepthUpdate, recv_ns: int) -> bytes:
        book = self.book
        assert book is not None
        u, ns = frame.last_id, frame.event_ns
        return format.book(self.symbol, u, u, ns // 1_000_000, recv_ns,
                           book.bids.top_json(self.depth), book.asks.top_json(self.depth),
                           exchange_ns=ns)

    def _trade_record(self, seq: int, event_id: int, t: Trade, recv_ns: int) -> bytes:
        ns = t.event_ns
        return format.trade(self.symbol, seq, event_id, t.tid, t.price, t.qty, t.maker_side,
                            False, ns // 1_000_000, recv_ns, exchange_ns=ns)

    def status(self) -> dict[str, Any]:
        return {"state": str(self.state), "last_id": self.last_id, "stale": self.stale,
                "dropped": self.dropped, "held_trades": len(self._held)}
