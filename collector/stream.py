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
from collector.book import Book
from collector.gemini.v1 import (
    Auction, Change, Heartbeat, InvalidFrame, Trade, UnknownEvent, UnknownFrame, Update, parse,
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
                 "_bids_json", "_asks_json")

    def __init__(self, symbol: str, depth: int, emit_every: bool,
                 on_unknown: Callable[[str], None] = lambda kind: None,
                 counts: Counts | None = None) -> None:
        self.symbol = symbol
        self.depth = depth
        self.emit_every = emit_every
        self.on_unknown = on_unknown  # called with each unknown event or frame type
        self.counts = counts if counts is not None else Counts()
        self.expected = 0
        self.book: Book | None = None
        # Each side's top `depth` as JSON, kept until that side's top changes: most
        # updates touch one side, and rendering is a large share of the per-frame cost.
        self._bids_json: orjson.Fragment | None = None
        self._asks_json: orjson.Fragment | None = None

    @property
    def live(self) -> bool:
        return self.book is not None

    def feed(self, raw: bytes | str, recv_ns: int) -> bytes:
        """Consume one frame; return the records it produced (possibly b"")."""
        try:
            frame = parse(raw)
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

    def _snapshot(self, frame: Update, recv_ns: int) -> bytes:
        book = Book()
        self._bids_json = self._asks_json = None
        out = self._events(frame, book, recv_ns)[0]
        self._check_crossed(book)
        self.book = book
        out.append(self._render(frame, recv_ns))
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
            self._check_crossed(book)
            if top_changed or self.emit_every:
                out.append(self._render(frame, recv_ns))
        return b"".join(out)

    def _events(self, frame: Update, book: Book, recv_ns: int) -> tuple[list[bytes], bool, bool]:
        out: list[bytes] = []
        had_change = top_changed = False
        depth = self.depth
        for ev in frame.events:
            kind = type(ev)
            if kind is Change:
                had_change = True
                if ev.side == "bid":  # type: ignore[union-attr]
                    if book.bids.set(ev.price, ev.remaining, depth):  # type: ignore[union-attr]
                        top_changed, self._bids_json = True, None
                elif book.asks.set(ev.price, ev.remaining, depth):  # type: ignore[union-attr]
                    top_changed, self._asks_json = True, None
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

    def _render(self, frame: Update, recv_ns: int) -> bytes:
        book = self.book
        assert book is not None
        if self._bids_json is None:
            self._bids_json = orjson.Fragment(orjson.dumps(book.bids.top(self.depth)))
        if self._asks_json is None:
            self._asks_json = orjson.Fragment(orjson.dumps(book.asks.top(self.depth)))
        return records.book(self.symbol, frame.seq, frame.event_id, frame.timestamp_ms, recv_ns,
                            self._bids_json, self._asks_json)
