"""Gemini's current market-data API (`wss://ws.gemini.com`): URLs, requests, frame
parsing (pure, no I/O). PROTOCOL.md section 6.

A Binance-style protocol: one socket carries any number of streams, which the client
asks for with `SUBSCRIBE`. We use, per symbol, the full differential depth stream
`<sym>@depth@100ms` and the trade stream `<sym>@trade`, and connect with
`?snapshot=-1` so that the first `depthUpdate` of each depth subscription is the
whole book.

`parse` turns one frame into a `DepthUpdate`, a `Trade`, an `Ack`, an `Error` or an
`UnknownFrame`, or raises `InvalidFrame`.

Decimal text. Gemini pads prices and quantities with zeros here (`"77401.500"`,
`"0.00000000"`). `parse` checks each against `format.DECIMAL` and returns it in
`format.canonical` text, which is what Gemini's v1 feed writes today, so records look
alike whichever API fed them. A quantity that is zero in any spelling is `"0"`, which
removes the level.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from collector.core.format import Level, canonical, is_decimal
from collector.gemini.wire import InvalidFrame, is_int, json_object, show

__all__ = [
    "DEFAULT_URL", "Ack", "DepthUpdate", "Error", "Frame", "InvalidFrame", "Trade",
    "UnknownFrame", "connect_url", "depth_stream", "parse", "streams",
    "subscribe", "trade_stream", "unsubscribe",
]

DEFAULT_URL = "wss://ws.gemini.com"
DEPTH_SUFFIX = "@depth@100ms"  # full differential depth, 100 ms (`@depth` is the 1 s one)
TRADE_SUFFIX = "@trade"


# ---- URLs and requests ---------------------------------------------------------------

def connect_url(base: str, snapshot: int = -1) -> str:
    """`base` with `snapshot=N` in its query (-1 full book, N top N, 0 none); any other
    query parameters of `base` are kept."""
    parts = urlsplit(base)
    query = "&".join(p for p in parts.query.split("&") if p and not p.startswith("snapshot="))
    query = f"{query}&snapshot={snapshot}" if query else f"snapshot={snapshot}"
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", query, ""))


def depth_stream(symbol: str) -> str:
    return symbol.lower() + DEPTH_SUFFIX


def trade_stream(symbol: str) -> str:
    return symbol.lower() + TRADE_SUFFIX


def streams(symbol: str, trades: bool = True) -> list[str]:
    """The streams one symbol's feed needs (stream names are lower case)."""
    return [depth_stream(symbol), trade_stream(symbol)] if trades else [depth_stream(symbol)]


def subscribe(names: Iterable[str], req_id: int) -> bytes:
    return orjson.dumps({"method": "SUBSCRIBE", "params": list(names), "id": req_id})


def unsubscribe(names: Iterable[str], req_id: int) -> bytes:
    return orjson.dumps({"method": "UNSUBSCRIBE", "params": list(names), "id": req_id})


# ---- frames --------------------------------------------------------------------------
# Plain slotted classes, not frozen (as in v1.py): a frozen dataclass costs ~4x more to
# build, and one is built per frame. Treat them as read-only.

@dataclass(slots=True)
class DepthUpdate:
    """`depthUpdate`: absolute quantities at each price (quantity "0" removes), levels in
    the frame's own (unsorted) order. The first one of a subscription is the book."""

    symbol: str  # `s`, upper case
    first_id: int  # `U`
    last_id: int  # `u`
    event_ns: int  # `E`, nanoseconds since the epoch
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]


@dataclass(slots=True)
class Trade:
    symbol: str  # `s`, upper case
    tid: int  # `t`
    price: str  # `p`, canonical
    qty: str  # `q`, canonical
    buyer_maker: bool  # `m`: the buyer's order was resting
    event_ns: int  # `E`

    @property
    def maker_side(self) -> str:
        """The resting order's side, as v1's `makerSide` and our records name it."""
        return "bid" if self.buyer_maker else "ask"


@dataclass(slots=True)
class Ack:
    """`{"result": ..., "id": N}`: a request was accepted (`result` null, or the list of
    `LIST_SUBSCRIPTIONS`)."""

    id: int | None
    result: Any


@dataclass(slots=True)
class Error:
    """A request was refused: `{"error": ..., "id": N}` (`error` as the server wrote it)."""

    id: int | None
    error: Any


@dataclass(slots=True)
class UnknownFrame:
    """An event type nobody knows yet (`e`), e.g. a stream we did not expect."""

    kind: str


Frame = DepthUpdate | Trade | Ack | Error | UnknownFrame


def parse(raw: bytes | str) -> Frame:
    msg = json_object(raw)
    kind = msg.get("e")
    try:
        if kind == "depthUpdate":
            return _depth(msg)
        if kind == "trade":
            return _trade(msg)
    except _Bad as exc:
        raise InvalidFrame(f"{kind}: {exc}", raw) from None
    if kind is not None:
        if isinstance(kind, str) and kind:
            return UnknownFrame(kind)
        raise InvalidFrame(f"event type {show(kind)}", raw)
    req_id = msg.get("id")
    if req_id is not None and not is_int(req_id):
        raise InvalidFrame(f"request id {show(req_id)} is not an integer", raw)
    if "error" in msg:
        return Error(req_id, msg["error"])
    if "result" in msg and "id" in msg:
        return Ack(req_id, msg["result"])
    raise InvalidFrame("neither an event (e) nor a reply (result/error with id)", raw)


class _Bad(Exception):
    pass


def _depth(msg: dict[str, Any]) -> DepthUpdate:
    first, last = _uint(msg, "U"), _uint(msg, "u")
    if first > last:
        raise _Bad(f"U {first} > u {last}")
    return DepthUpdate(_symbol(msg), first, last, _uint(msg, "E"),
                       _levels(msg, "b"), _levels(msg, "a"))


def _trade(msg: dict[str, Any]) -> Trade:
    m = msg.get("m")
    if not isinstance(m, bool):
        raise _Bad(f"m {show(m)} is not a boolean")
    return Trade(_symbol(msg), _uint(msg, "t"), _decimal(msg.get("p"), "p"),
                 _decimal(msg.get("q"), "q"), m, _uint(msg, "E"))


def _levels(msg: dict[str, Any], key: str) -> tuple[Level, ...]:
    levels = msg.get(key)
    if not isinstance(levels, list):
        raise _Bad(f"{key} missing or not a list")
    out = []
    for level in levels:
        if not isinstance(level, list) or len(level) != 2:
            raise _Bad(f"{key} level {show(level)} is not a [price, quantity] pair")
        price = _decimal(level[0], f"{key} price")
        if price == "0":
            raise _Bad(f"{key} price {show(level[0])} is zero")
        out.append((price, _decimal(level[1], f"{key} quantity")))
    return tuple(out)


def _decimal(value: Any, what: str) -> str:
    if not isinstance(value, str) or not is_decimal(value):
        raise _Bad(f"{what} {show(value)} is not a decimal string")
    return canonical(value)


def _symbol(msg: dict[str, Any]) -> str:
    s = msg.get("s")
    if not isinstance(s, str) or not s:
        raise _Bad(f"s {show(s)} is not a symbol")
    return s.upper()


MAX_ID = 2**63 - 1  # ids and times: a trade's seq is the last update id + 1, still 64 bits


def _uint(msg: dict[str, Any], key: str) -> int:
    v = msg.get(key)
    if not is_int(v) or not 0 <= v <= MAX_ID:
        raise _Bad(f"{key} {show(v)} is not an integer from 0 to 2**63 - 1")
    return v
