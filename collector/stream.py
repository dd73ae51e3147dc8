"""One v1 connection's frames for one symbol -> output records (pure, no I/O).

Theory of operation: a `Stream` starts awaiting the snapshot (expected
socket_sequence 0). Every frame must carry the expected sequence number,
heartbeats included; the frame at 0 must be the snapshot and builds a fresh
book (a new connection never merges into an old book, so no ghost levels).
Any violation raises `StreamBroken` with the resync reason and the fields that
explain it; the feed then writes the resync record, drops this Stream and its
book, and reconnects. A Stream is never reused after it broke.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from collector import records
from collector.book import NATIVE, Book, fastbook
from collector.gemini.v1 import (
    Auction, Change, Heartbeat, InvalidFrame, Trade, UnknownEvent, UnknownFrame, Update,
    is_decimal, json_object, parse_object,
)

if TYPE_CHECKING:
    from collector.metrics import Histogram


class StreamBroken(Exception):
    def __init__(self, reason: str, **fields: Any) -> None:
        super().__init__(reason, fields)
        self.reason = reason
        self.fields = fields


@dataclass
class Counts:
    """Running totals; a feed passes one object to each of its Streams."""

    updates: int = 0  # frames carrying book changes (the snapshot excluded)
    trades: int = 0
    latency: Histogram | None = None  # receive - exchange ms of every update frame


class Stream:
    __slots__ = ("symbol", "depth", "emit_every", "on_unknown", "counts", "expected", "book",
                 "native", "_symbol_json")

    def __init__(self, symbol: str, depth: int, emit_every: bool,
                 on_unknown: Callable[[str], None] = lambda kind: None,
                 counts: Counts | None = None, native: bool = NATIVE) -> None:
        self.symbol = symbol
        self.depth = depth
        self.emit_every = emit_every
        self.on_unknown = on_unknown  # called with each unknown event or frame type
        self.counts = counts if counts is not None else Counts()
        self.expected = 0
        self.book: Book | None = None
        self.native = native  # the C book and fast path (collector/_fastbook.c)
        self._symbol_json = orjson.dumps(symbol)  # for the C fast path's records

    @property
    def live(self) -> bool:
        return self.book is not None

    def feed(self, raw: bytes | str, recv_ns: int) -> bytes:
        """Consume one frame; return the records it produced (possibly b"")."""
        if self.book is not None and self.native and type(raw) is bytes:
            out = self._fast_native(raw, recv_ns)
            if out is not None:
                return out
        try:
            msg = json_object(raw)
            if self.book is not None and not self.native:
                out = self._fast_py(msg, recv_ns)
                if out is not None:
                    return out
            frame = parse_object(msg, raw)
        except InvalidFrame as exc:
            raise StreamBroken("invalid", detail=exc.why, sample=exc.sample) from None
        if frame.seq != self.expected:
            raise StreamBroken("gap", expected_seq=self.expected, got_seq=frame.seq)
        self.expected += 1
        if type(frame) is Update:
            if self.book is None:
                return self._snapshot(frame, recv_ns)
            return self._update(frame, recv_ns)
        if self.book is None:
            raise StreamBroken("invalid", detail=f"frame 0 is not a snapshot: {type(frame).__name__}")
        if type(frame) is UnknownFrame:
            self.on_unknown(f"frame:{frame.kind}")
        else:
            assert type(frame) is Heartbeat
        return b""

    # The fast paths: the common frame, an in-sequence update, straight to the book and
    # the records, with no event objects. None for anything else, which `parse_object`
    # then validates and explains in full. Same records either way (tests/test_stream.py,
    # tests/test_fastbook.py).

    def _fast_native(self, raw: bytes, recv_ns: int) -> bytes | None:
        """In C, from the frame's bytes, for updates of up to 16 changes and trades
        (collector/_fastbook.c)."""
        book = self.book
        assert book is not None
        out = fastbook.change(raw, self.expected, book.bids, book.asks,  # type: ignore[union-attr]
                              self.depth, self.emit_every, self._symbol_json, recv_ns, self.counts)
        if out is None:
            return None
        self.expected += 1
        if out is False:  # the frame crossed the book
            self._check_crossed(book)
        return out

    def _fast_py(self, msg: dict[str, Any], recv_ns: int) -> bytes | None:
        """In Python, from the frame's JSON object, for an update of one change (with
        it, `python -m bench.stages` measured Stream.feed at 6.1 us against 7.8)."""
        events = msg.get("events")
        if type(events) is not list or len(events) != 1:
            return None
        e = events[0]
        seq, event_id, ts = msg.get("socket_sequence"), msg.get("eventId"), msg.get("timestampms")
        if (seq != self.expected or type(seq) is not int or type(event_id) is not int
                or type(ts) is not int or msg.get("type") != "update"
                or type(e) is not dict or e.get("type") != "change"):
            return None
        side, price, size = e.get("side"), e.get("price"), e.get("remaining")
        if (type(price) is not str or type(size) is not str or not is_decimal(price)
                or not is_decimal(size) or not price.strip("0.")):
            return None
        book = self.book
        assert book is not None
        if side == "bid":
            top_changed = book.bids.set(price, size, self.depth)
        elif side == "ask":
            top_changed = book.asks.set(price, size, self.depth)
        else:
            return None
        self.expected = seq + 1
        counts = self.counts
        counts.updates += 1
        if counts.latency is not None:
            counts.latency.observe(recv_ns // 1_000_000 - ts)
        if top_changed:
            self._check_crossed(book)
        elif not self.emit_every:
            return b""
        return self._render(seq, event_id, ts, recv_ns)

    def _snapshot(self, frame: Update, recv_ns: int) -> bytes:
        book = Book(self.native)
        out = self._events(frame, book, recv_ns)[0]
        self._check_crossed(book)
        self.book = book
        out.append(self._render(frame.seq, frame.event_id, frame.timestamp_ms, recv_ns))
        return b"".join(out)

    def _update(self, frame: Update, recv_ns: int) -> bytes:
        book = self.book
        assert book is not None
        latency = self.counts.latency
        if latency is not None and frame.timestamp_ms is not None:
            latency.observe(recv_ns // 1_000_000 - frame.timestamp_ms)
        out, had_change, top_changed = self._events(frame, book, recv_ns)
        if had_change:
            self.counts.updates += 1
            if top_changed:  # else the best levels are as they were: not crossed
                self._check_crossed(book)
            if top_changed or self.emit_every:
                out.append(self._render(frame.seq, frame.event_id, frame.timestamp_ms, recv_ns))
        return b"".join(out)

    def _events(self, frame: Update, book: Book, recv_ns: int) -> tuple[list[bytes], bool, bool]:
        out: list[bytes] = []
        had_change = top_changed = False
        depth = self.depth
        for ev in frame.events:
            kind = type(ev)
            if kind is Change:
                had_change = True
                side = book.bids if ev.side == "bid" else book.asks  # type: ignore[union-attr]
                if side.set(ev.price, ev.remaining, depth):  # type: ignore[union-attr]
                    top_changed = True
            elif kind is Trade:
                self.counts.trades += 1
                out.append(records.trade(
                    self.symbol, frame.seq, frame.event_id, ev.tid, ev.price,  # type: ignore[union-attr]
                    ev.amount, ev.maker_side, ev.block, frame.timestamp_ms, recv_ns))  # type: ignore[union-attr]
            elif kind is Auction:
                out.append(records.auction(
                    self.symbol, frame.seq, frame.event_id, ev.kind, ev.fields,  # type: ignore[union-attr]
                    frame.timestamp_ms, recv_ns))
            else:
                assert kind is UnknownEvent
                self.on_unknown(ev.kind)  # type: ignore[union-attr]
        return out, had_change, top_changed

    def _check_crossed(self, book: Book) -> None:
        if book.crossed():
            raise StreamBroken(
                "crossed",
                detail=f"best bid {book.bids.top(1)[0][0]} >= best ask {book.asks.top(1)[0][0]}",
                seq=self.expected - 1,
            )

    def _render(self, seq: int, event_id: int, exchange_ms: int | None, recv_ns: int) -> bytes:
        book = self.book
        assert book is not None
        return records.book(self.symbol, seq, event_id, exchange_ms, recv_ns,
                            book.bids.top_json(self.depth), book.asks.top_json(self.depth))
