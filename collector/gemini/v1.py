"""Gemini market-data v1: stream URL and frame parsing (pure, no I/O).

A v1 stream is one WebSocket per symbol. Every frame carries `socket_sequence`,
0 for the snapshot frame and +1 for every later frame, heartbeats included
(PROTOCOL.md 1.5). `parse` turns one frame into a `Heartbeat`, an `Update` or an
`UnknownFrame`, or raises `InvalidFrame`; it checks shapes and decimal syntax
so the book never sees a value it cannot key exactly. An auction event's fields are
recorded as they are: a frame that carries one is read again with its numbers kept as
written (`wire.exact_object`), and one that could not be written back exactly (nested
deeper than orjson writes) is invalid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from collector.core.format import MAKER_SIDES, is_decimal, is_zero
from collector.gemini.wire import InvalidFrame, exact_object, is_int, json_object, show


def stream_url(base: str, symbol: str, trades: bool) -> str:
    """Every filter explicit: the two doc generations disagree on defaults (under the
    older one, a type whose flag is left out is not sent once any flag is given; the
    current page no longer lists `auctions`, PROTOCOL.md 1.2)."""
    return (
        f"{base.rstrip('/')}/{symbol}?heartbeat=true&bids=true&offers=true"
        f"&trades={'true' if trades else 'false'}&auctions=true&top_of_book=false"
    )


# Frames and events are plain slotted classes, not frozen: a frozen dataclass costs ~4x
# more to build (object.__setattr__ per field), and several are built per frame.
@dataclass(slots=True)
class Change:
    side: str  # "bid" | "ask"
    price: str
    remaining: str
    reason: str


@dataclass(slots=True)
class Trade:
    tid: int
    price: str
    amount: str
    maker_side: str | None  # "bid" | "ask" | "auction"; None for block trades
    block: bool = False


@dataclass(slots=True)
class Auction:
    kind: str  # auction_open | auction_indicative | auction_result
    fields: dict[str, Any]


@dataclass(slots=True)
class UnknownEvent:
    kind: str


Event = Change | Trade | Auction | UnknownEvent


@dataclass(slots=True)
class Heartbeat:
    seq: int


@dataclass(slots=True)
class Update:
    seq: int
    event_id: int
    timestamp_ms: int | None  # the snapshot frame has none
    events: tuple[Event, ...]


@dataclass(slots=True)
class UnknownFrame:
    """A frame type nobody knows yet; it still holds a sequence number."""

    seq: int
    kind: str


Frame = Heartbeat | Update | UnknownFrame

_AUCTIONS = ("auction_open", "auction_indicative", "auction_result")


def parse(raw: bytes | str) -> Frame:
    frame = parse_object(json_object(raw), raw)
    if type(frame) is Update and any(type(e) is Auction for e in frame.events):
        return parse_object(exact_object(raw), raw)  # its numbers as written
    return frame


def parse_object(msg: dict[str, Any], raw: bytes | str) -> Frame:
    """A frame from its decoded JSON object; `raw` is for the error's sample."""
    seq = msg.get("socket_sequence")
    if not is_int(seq) or seq < 0:
        raise InvalidFrame("socket_sequence missing or not a non-negative integer", raw)
    kind = msg.get("type")
    if kind == "heartbeat":
        return Heartbeat(seq)
    if kind != "update":
        if isinstance(kind, str):
            return UnknownFrame(seq, kind)
        raise InvalidFrame("type missing", raw)
    event_id = msg.get("eventId")
    if not is_int(event_id):
        raise InvalidFrame("eventId missing or not an integer", raw)
    ts = msg.get("timestampms")
    if ts is not None and not is_int(ts):
        raise InvalidFrame("timestampms not an integer", raw)
    events = msg.get("events")
    if not isinstance(events, list):
        raise InvalidFrame("events missing or not a list", raw)
    try:
        parsed = tuple(_event(e) for e in events)
    except _BadEvent as exc:
        raise InvalidFrame(str(exc), raw) from None
    return Update(seq, event_id, ts, parsed)


class _BadEvent(Exception):
    pass


def _event(e: Any) -> Event:
    if not isinstance(e, dict):
        raise _BadEvent("event is not an object")
    kind = e.get("type")
    if kind == "change":
        side = e.get("side")
        if side != "bid" and side != "ask":
            raise _BadEvent(f"change side {show(side)}")
        price = _decimal(e, "price")
        if is_zero(price):
            raise _BadEvent("change price is zero")
        reason = e.get("reason")
        return Change(side, price, _decimal(e, "remaining"), reason if isinstance(reason, str) else "")
    if kind == "trade":
        maker = e.get("makerSide")
        if maker not in MAKER_SIDES:
            raise _BadEvent(f"trade makerSide {show(maker)}")
        return Trade(_tid(e), _decimal(e, "price"), _decimal(e, "amount"), maker)
    if kind == "block_trade":
        return Trade(_tid(e), _decimal(e, "price"), _decimal(e, "amount"), None, block=True)
    if kind in _AUCTIONS:
        fields = {k: v for k, v in e.items() if k != "type"}
        try:
            orjson.dumps(fields)
        except TypeError as exc:  # orjson.JSONEncodeError: e.g. nested deeper than 254
            raise _BadEvent(f"{kind} cannot be recorded exactly: {exc}") from None
        return Auction(kind, fields)
    if isinstance(kind, str):
        return UnknownEvent(kind)
    raise _BadEvent("event type missing")


def _decimal(e: dict[str, Any], key: str) -> str:
    value = e.get(key)
    if not isinstance(value, str) or not is_decimal(value):
        raise _BadEvent(f"{e.get('type')} {key} {show(value)} is not a decimal string")
    return value


def _tid(e: dict[str, Any]) -> int:
    tid = e.get("tid")
    if not is_int(tid):
        raise _BadEvent(f"{e.get('type')} tid {show(tid)} is not an integer")
    return tid

