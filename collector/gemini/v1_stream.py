"""One v1 connection's frames for one symbol -> output records (pure, no I/O).

Theory of operation: a `V1Stream` starts awaiting the snapshot (expected
socket_sequence 0; the URL itself subscribes). Every frame must carry the expected
sequence number, heartbeats included; the frame at 0 must be the snapshot and builds
a fresh book (a new connection never merges into an old book, so no ghost levels).
Any violation raises `StreamBroken` with the resync reason and the fields that
explain it; the feed then writes the resync record, drops this stream and its book,
and reconnects. A stream is never reused after it broke.

Two paths per frame, with the same records (tests/core/test_fastbook.py): the C fast
path reads an in-sequence update frame's bytes straight into the book and the records
(`collector/core/_fastbook.c`, when built); everything else is parsed in full
(`collector.gemini.v1.parse`), which is the reference and explains every problem.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import orjson

from collector.core import format
from collector.core.book import BULK_LEVELS, HAVE_NATIVE, Book, fastbook, set_levels
from collector.core.format import Level, Reason
from collector.core.stream import Counts, OnUnknown, StreamBroken, StreamState, advance
from collector.gemini.v1 import (
    Auction,
    Change,
    Event,
    Heartbeat,
    Trade,
    UnknownEvent,
    UnknownFrame,
    Update,
    parse,
    stream_url,
)
from collector.gemini.wire import InvalidFrame


class V1Stream:
    HEARTBEATS: ClassVar[bool] = True
    REPAIRS_IN_PLACE: ClassVar[bool] = False
    outbox: ClassVar[tuple[bytes, ...]] = ()  # v1 asks for everything in the URL

    __slots__ = (
        "_symbol_json",
        "book",
        "counts",
        "depth",
        "emit_every",
        "expected",
        "native",
        "on_unknown",
        "state",
        "symbol",
    )

    def __init__(self, symbol: str, depth: int, emit_every: bool,
                 on_unknown: OnUnknown = lambda kind: None,
                 counts: Counts | None = None, native: bool = HAVE_NATIVE, *,
                 trades: bool = True) -> None:
        # `trades` is asked for (or not) in the URL
        self.symbol = symbol
        self.depth = depth
        self.emit_every = emit_every
        self.on_unknown = on_unknown
        self.counts = counts if counts is not None else Counts()
        self.expected = 0
        self.book: Book | None = None
        self.native = native  # the C book and fast path (collector/core/_fastbook.c)
        self.state = StreamState.SUBSCRIBING
        self._symbol_json = orjson.dumps(symbol)  # for the C fast path's records

    @staticmethod
    def url(base: str, symbol: str, trades: bool) -> str:
        return stream_url(base, symbol, trades)

    @property
    def live(self) -> bool:
        return self.book is not None

    def start(self) -> None:
        pass

    def take_requests(self) -> list[bytes]:
        return []

    def resync(self) -> None:
        raise RuntimeError("a v1 stream is repaired by a new connection")

    def feed(self, raw: bytes | str, recv_ns: int) -> bytes:
        """Consume one frame; return the records it produced (possibly b"")."""
        if self.book is not None and self.native and type(raw) is bytes:
            out = self._fast_native(raw, recv_ns)
            if out is not None:
                return out
        try:
            frame = parse(raw)
        except InvalidFrame as exc:
            raise self._broken(Reason.INVALID, detail=exc.why, sample=exc.sample) from None
        if frame.seq != self.expected:
            raise self._broken(Reason.GAP, expected_seq=self.expected, got_seq=frame.seq)
        self.expected += 1
        if type(frame) is Update:
            if self.book is None:
                return self._snapshot(frame, recv_ns)
            return self._update(frame, recv_ns)
        if self.book is None:
            raise self._broken(Reason.INVALID,
                               detail=f"frame 0 is not a snapshot: {type(frame).__name__}")
        if type(frame) is UnknownFrame:
            self.on_unknown(f"frame:{frame.kind}")
        else:
            assert type(frame) is Heartbeat
        return b""

    def _fast_native(self, raw: bytes, recv_ns: int) -> bytes | None:
        """In C, from the frame's bytes, for in-sequence updates of up to 16 changes and
        trades; None for anything else."""
        book = self.book
        assert book is not None and fastbook is not None
        out = fastbook.change(raw, self.expected, book.bids, book.asks,
                              self.depth, self.emit_every, self._symbol_json, recv_ns, self.counts)
        if out is None:
            return None
        self.expected += 1
        if out is False:  # the frame crossed the book
            self._check_crossed(book)
        return out  # type: ignore[no-any-return]  # bytes, from C

    def _snapshot(self, frame: Update, recv_ns: int) -> bytes:
        """The book from the frame at 0, loaded in one go (`BookSide.load`: a snapshot of
        any depth in O(n log n)); its other events in order, as in any update."""
        book = Book(self.native)
        bids, asks, rest = _split(frame.events)
        book.bids.load(bids)
        book.asks.load(asks)
        out = self._events(frame, rest, book, recv_ns)[0]
        self._check_crossed(book)
        self.book = book
        self.state = advance(self.state, StreamState.LIVE)
        out.append(self._render(frame.seq, frame.event_id, frame.timestamp_ms, recv_ns))
        return b"".join(out)

    def _update(self, frame: Update, recv_ns: int) -> bytes:
        book = self.book
        assert book is not None
        latency = self.counts.latency
        if latency is not None and frame.timestamp_ms is not None:
            latency.observe(recv_ns // 1_000_000 - frame.timestamp_ms)
        if len(frame.events) <= BULK_LEVELS:
            out, had_change, top_changed = self._events(frame, frame.events, book, recv_ns)
        else:  # many changes: each side merged with one sort (book.set_levels)
            bids, asks, rest = _split(frame.events)
            out = self._events(frame, rest, book, recv_ns)[0]
            had_change = bool(bids or asks)
            top_changed = (set_levels(book.bids, bids, self.depth)
                           | set_levels(book.asks, asks, self.depth))
        if had_change:
            self.counts.updates += 1
            if top_changed:  # else the best levels are as they were: not crossed
                self._check_crossed(book)
            if top_changed or self.emit_every:
                out.append(self._render(frame.seq, frame.event_id, frame.timestamp_ms, recv_ns))
        return b"".join(out)

    def _events(self, frame: Update, events: Iterable[Event], book: Book,
                recv_ns: int) -> tuple[list[bytes], bool, bool]:
        out: list[bytes] = []
        had_change = top_changed = False
        depth = self.depth
        for ev in events:
            if type(ev) is Change:
                had_change = True
                side = book.bids if ev.side == "bid" else book.asks
                if side.set(ev.price, ev.remaining, depth):
                    top_changed = True
            elif type(ev) is Trade:
                self.counts.trades += 1
                out.append(format.trade(
                    self.symbol, frame.seq, frame.event_id, ev.tid, ev.price,
                    ev.amount, ev.maker_side, ev.block, frame.timestamp_ms, recv_ns))
            elif type(ev) is Auction:
                out.append(format.auction(
                    self.symbol, frame.seq, frame.event_id, ev.kind, ev.fields,
                    frame.timestamp_ms, recv_ns))
            else:
                assert type(ev) is UnknownEvent
                self.on_unknown(ev.kind)
        return out, had_change, top_changed

    def _check_crossed(self, book: Book) -> None:
        why = book.crossed()
        if why is not None:
            raise self._broken(Reason.CROSSED, detail=why, seq=self.expected - 1)

    def _broken(self, reason: Reason, **fields: Any) -> StreamBroken:
        self.state = advance(self.state, StreamState.BROKEN)
        self.book = None
        return StreamBroken(reason, **fields)

    def _render(self, seq: int, event_id: int, exchange_ms: int | None, recv_ns: int) -> bytes:
        book = self.book
        assert book is not None
        return format.book(self.symbol, seq, event_id, exchange_ms, recv_ns,
                           book.bids.top_json(self.depth), book.asks.top_json(self.depth))


def _split(events: Iterable[Event]) -> tuple[list[Level], list[Level], list[Event]]:
    """A frame's changes by side, as (price, remaining), and its other events, in order."""
    bids: list[Level] = []
    asks: list[Level] = []
    rest: list[Event] = []
    for ev in events:
        if type(ev) is Change:
            (bids if ev.side == "bid" else asks).append((ev.price, ev.remaining))
        else:
            rest.append(ev)
    return bids, asks, rest
