"""A prototype of the hot-path changes proposed for collector/ (measured by bench.stages).

Not used by the collector: it exists so the proposals in bench/README.md come with
measured costs and a byte-for-byte check against `collector.stream.Stream`. Each change
is a drop-in for the code it mirrors:

1. `parse`: the same checks as `collector.gemini.v1.parse`, with plain `__slots__`
   classes (no dataclass machinery), `type(x) is int` instead of `_is_int`, and
   `type(x) is dict/list/str` instead of `isinstance`. Measured on its own (stage
   "proposed parse"); `FastStream` keeps the collector's own `parse`.
2. `Side.set`: an update of an existing level decides "in the top N?" by comparing its
   key with the N-th best key instead of a second `bisect`.
3. `render`: each side's top N is serialised once when it changes (`orjson.Fragment`)
   and spliced into every book record until it changes again, instead of rebuilding
   and re-serialising 2 x N levels per record.
"""

from __future__ import annotations

from bisect import bisect_left
from decimal import Decimal
from typing import Any

import orjson

from collector import records
from collector.gemini import v1
from collector.gemini.v1 import (
    _AUCTIONS,
    _DECIMAL,
    _MAKER_SIDES,
    Auction,
    Heartbeat,
    InvalidFrame,
    UnknownEvent,
    UnknownFrame,
)
from collector.stream import Stream, StreamBroken

_loads = orjson.loads
_match = _DECIMAL.match
_NL = orjson.OPT_APPEND_NEWLINE
Fragment = orjson.Fragment


# ---- 1. parse ----------------------------------------------------------------------------


class Change:
    __slots__ = ("price", "reason", "remaining", "side")

    def __init__(self, side: str, price: str, remaining: str, reason: str) -> None:
        self.side = side
        self.price = price
        self.remaining = remaining
        self.reason = reason


class Trade:
    __slots__ = ("amount", "block", "maker_side", "price", "tid")

    def __init__(self, tid: int, price: str, amount: str, maker_side: str | None,
                 block: bool = False) -> None:
        self.tid = tid
        self.price = price
        self.amount = amount
        self.maker_side = maker_side
        self.block = block


class Update:
    __slots__ = ("event_id", "events", "seq", "timestamp_ms")

    def __init__(self, seq: int, event_id: int, timestamp_ms: int | None,
                 events: tuple[Any, ...]) -> None:
        self.seq = seq
        self.event_id = event_id
        self.timestamp_ms = timestamp_ms
        self.events = events


class _Bad(Exception):
    pass


def _dec(e: dict[str, Any], key: str) -> str:
    v = e.get(key)
    if type(v) is not str or not _match(v):
        raise _Bad(f"{e.get('type')} {key} {v!r} is not a decimal string")
    return v


def _event(e: Any) -> Any:
    if type(e) is not dict:
        raise _Bad("event is not an object")
    kind = e.get("type")
    if kind == "change":
        side = e.get("side")
        if side != "bid" and side != "ask":
            raise _Bad(f"change side {side!r}")
        price = _dec(e, "price")
        if not price.strip("0."):
            raise _Bad("change price is zero")
        reason = e.get("reason")
        return Change(side, price, _dec(e, "remaining"), reason if type(reason) is str else "")
    if kind == "trade":
        maker = e.get("makerSide")
        if maker not in _MAKER_SIDES:
            raise _Bad(f"trade makerSide {maker!r}")
        return Trade(_tid(e), _dec(e, "price"), _dec(e, "amount"), maker)
    if kind == "block_trade":
        return Trade(_tid(e), _dec(e, "price"), _dec(e, "amount"), None, True)
    if kind in _AUCTIONS:
        return Auction(kind, {k: v for k, v in e.items() if k != "type"})
    if isinstance(kind, str):
        return UnknownEvent(kind)
    raise _Bad("event type missing")


def _tid(e: dict[str, Any]) -> int:
    tid = e.get("tid")
    if type(tid) is not int:
        raise _Bad(f"{e.get('type')} tid {tid!r} is not an integer")
    return tid


def parse(raw: bytes | str) -> Any:
    try:
        msg = _loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidFrame("not JSON", raw) from None
    if type(msg) is not dict:
        raise InvalidFrame("not a JSON object", raw)
    seq = msg.get("socket_sequence")
    if type(seq) is not int or seq < 0:
        raise InvalidFrame("socket_sequence missing or not a non-negative integer", raw)
    kind = msg.get("type")
    if kind == "heartbeat":
        return Heartbeat(seq)
    if kind != "update":
        if isinstance(kind, str):
            return UnknownFrame(seq, kind)
        raise InvalidFrame("type missing", raw)
    event_id = msg.get("eventId")
    if type(event_id) is not int:
        raise InvalidFrame("eventId missing or not an integer", raw)
    ts = msg.get("timestampms")
    if ts is not None and type(ts) is not int:
        raise InvalidFrame("timestampms not an integer", raw)
    events = msg.get("events")
    if type(events) is not list:
        raise InvalidFrame("events missing or not a list", raw)
    try:
        parsed = tuple([_event(e) for e in events])
    except _Bad as exc:
        raise InvalidFrame(str(exc), raw) from None
    return Update(seq, event_id, ts, parsed)


# ---- 2. book -----------------------------------------------------------------------------


class Side:
    __slots__ = ("_bids", "_keys", "_levels")

    def __init__(self, bids: bool) -> None:
        self._keys: list[Decimal] = []
        self._levels: dict[Decimal, tuple[str, str]] = {}
        self._bids = bids

    def __len__(self) -> int:
        return len(self._keys)

    def set(self, price: str, size: str, depth: int) -> bool:
        key = Decimal(price)
        levels = self._levels
        old = levels.get(key)
        keys = self._keys
        if not size.strip("0."):
            if old is None:
                return False
            i = bisect_left(keys, key)
            del keys[i]
            del levels[key]
            return (len(keys) - i if self._bids else i) < depth
        if old is not None:
            if old[1] == size and old[0] == price:
                return False
            levels[key] = (price, size)
            n = len(keys)
            if n <= depth:
                return True
            return key >= keys[-depth] if self._bids else key <= keys[depth - 1]
        levels[key] = (price, size)
        i = bisect_left(keys, key)
        keys.insert(i, key)
        return (len(keys) - 1 - i if self._bids else i) < depth

    def best(self) -> Decimal | None:
        if not self._keys:
            return None
        return self._keys[-1] if self._bids else self._keys[0]

    def top(self, depth: int) -> list[tuple[str, str]]:
        levels = self._levels
        keys = self._keys[: -depth - 1: -1] if self._bids else self._keys[:depth]
        return [levels[k] for k in keys]


class Book:
    __slots__ = ("asks", "bids")

    def __init__(self) -> None:
        self.bids = Side(bids=True)
        self.asks = Side(bids=False)

    def crossed(self) -> bool:
        bid, ask = self.bids.best(), self.asks.best()
        return bid is not None and ask is not None and bid >= ask


# ---- 3. stream with cached top-N fragments ----------------------------------------------


class FastStream(Stream):
    """`collector.stream.Stream` with changes 2 and 3; same records, same errors."""

    __slots__ = ("_asks_json", "_bids_json")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._bids_json: Any = None
        self._asks_json: Any = None

    def feed(self, raw: bytes | str, recv_ns: int) -> bytes:
        try:
            frame = v1.parse(raw)
        except InvalidFrame as exc:
            raise StreamBroken("invalid", detail=exc.why, sample=exc.sample) from None
        if frame.seq != self.expected:
            raise StreamBroken("gap", expected_seq=self.expected, got_seq=frame.seq)
        self.expected += 1
        if type(frame) is v1.Update:
            if self.book is None:
                return self._snapshot(frame, recv_ns)  # type: ignore[arg-type]
            return self._update(frame, recv_ns)  # type: ignore[arg-type]
        if self.book is None:
            raise StreamBroken("invalid", detail=f"frame 0 is not a snapshot: {type(frame).__name__}")
        if type(frame) is UnknownFrame:
            self.on_unknown(f"frame:{frame.kind}")
        return b""

    def _snapshot(self, frame: Any, recv_ns: int) -> bytes:
        book = Book()
        self._bids_json = self._asks_json = None
        out = self._events(frame, book, recv_ns)[0]  # type: ignore[arg-type]
        self._check_crossed(book)  # type: ignore[arg-type]
        self.book = book  # type: ignore[assignment]
        out.append(self._render(frame, recv_ns))
        return b"".join(out)

    def _events(self, frame: Any, book: Any, recv_ns: int) -> tuple[list[bytes], bool, bool]:
        out: list[bytes] = []
        had_change = top_changed = False
        depth = self.depth
        bids, asks = book.bids, book.asks
        for ev in frame.events:
            kind = type(ev)
            if kind is v1.Change:
                had_change = True
                if ev.side == "bid":
                    if bids.set(ev.price, ev.remaining, depth):
                        top_changed = True
                        self._bids_json = None
                elif asks.set(ev.price, ev.remaining, depth):
                    top_changed = True
                    self._asks_json = None
            elif kind is v1.Trade:
                self.counts.trades += 1
                out.append(records.trade(
                    self.symbol, frame.seq, frame.event_id, ev.tid, ev.price, ev.amount,
                    ev.maker_side, ev.block, frame.timestamp_ms, recv_ns))
            elif kind is Auction:
                out.append(records.auction(self.symbol, frame.seq, frame.event_id, ev.kind,
                                           ev.fields, frame.timestamp_ms, recv_ns))
            else:
                self.on_unknown(ev.kind)
        return out, had_change, top_changed

    def _render(self, frame: Any, recv_ns: int) -> bytes:
        book = self.book
        assert book is not None
        if self._bids_json is None:
            self._bids_json = Fragment(orjson.dumps(book.bids.top(self.depth)))
        if self._asks_json is None:
            self._asks_json = Fragment(orjson.dumps(book.asks.top(self.depth)))
        return orjson.dumps(
            {"type": "book", "symbol": self.symbol, "seq": frame.seq, "event_id": frame.event_id,
             "exchange_ms": frame.timestamp_ms, "recv_ns": recv_ns,
             "bids": self._bids_json, "asks": self._asks_json},
            option=_NL)
