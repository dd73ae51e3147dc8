"""Frames of Gemini's current market-data API (``wss://ws.gemini.com``), encoded the way
PROTOCOL.md section 6 describes them (pure).

* ``depthUpdate``: ``{"e":"depthUpdate","E":<ns>,"s":"BTCUSD","U":<first>,"u":<last>,
  "b":[[price,qty],...],"a":[...]}``; quantities are absolute, ``qty`` zero removes.
  Levels inside a frame are in a seeded random order (Gemini's are unsorted) and every
  decimal is padded with zeros: prices to one place more than ``quote_increment`` has
  (``"60000.500"`` for 0.01), quantities to ``tick_size``'s places (``"0.05000000"``),
  zero as ``"0.00000000"``.
* ``trade``: ``{"e":"trade","E":<ns>,"s":"BTCUSD","t":<tid>,"p":"..","q":"..","m":<bool>}``,
  ``m`` true when the buyer was the maker (v1 ``makerSide`` "bid").
* replies ``{"result":null,"id":N}`` and errors ``{"error":{"code":C,"msg":".."},"id":N}``.

Times: ``E`` = the update's ``timestampms`` * 10**6 + (event id mod 10**6), so it is a
true nanosecond count whose millisecond part equals the v1 ``timestampms``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import orjson

from .ladder import Ladder
from .market import Change, Update
from .symbols import SymbolSpec

__all__ = [
    "GARBAGE",
    "Padding",
    "ack_frame",
    "corrupt_body",
    "crossed_body",
    "depth_body",
    "depth_frame",
    "error_frame",
    "event_ns",
    "mystery_frame",
    "snapshot_body",
    "trade_frames",
]

GARBAGE = b'{"e":"depthUpd'  # a truncated frame: not JSON
_DEPTH = b'{"e":"depthUpdate","E":%d,"s":"%s","U":%d,"u":%d,%b}'
_CACHE_KEY = ("current", "depth")


def event_ns(ms: int, event_id: int) -> int:
    return ms * 1_000_000 + event_id % 1_000_000


def _pad(text: str, places: int) -> str:
    if places <= 0:
        return text
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(places, '0')}"


class Padding:
    """Renders a symbol's integer ticks/units as zero-padded decimal strings."""

    __slots__ = ("amount", "amount_places", "price", "price_places")

    def __init__(self, spec: SymbolSpec) -> None:
        self.price = spec.price_scale.render
        self.amount = spec.amount_scale.render
        self.price_places = spec.price_scale.places + 1
        self.amount_places = max(1, spec.amount_scale.places)

    def level(self, price: int, units: int) -> list[str]:
        return [_pad(self.price(price), self.price_places),
                _pad(self.amount(units), self.amount_places)]

    def text_price(self, text: str) -> str:
        return _pad(text, self.price_places)

    def text_amount(self, text: str) -> str:
        return _pad(text, self.amount_places)


def _sides(pad: Padding, levels: Iterable[tuple[bool, int, int]], seed: int) -> bytes:
    bids: list[list[str]] = []
    asks: list[list[str]] = []
    for is_bid, price, units in levels:
        (bids if is_bid else asks).append(pad.level(price, units))
    rng = random.Random(seed)
    rng.shuffle(bids)
    rng.shuffle(asks)
    return b'"b":' + orjson.dumps(bids) + b',"a":' + orjson.dumps(asks)


def depth_body(pad: Padding, update: Update) -> bytes | None:
    """The ``"b":[..],"a":[..]`` of an update's frame (each level's final quantity, in a
    seeded order); None when the update changed no level. Cached on the update."""
    try:
        return update.cache[_CACHE_KEY]
    except KeyError:
        pass
    final: dict[tuple[bool, int], int] = {}
    for is_bid, price, units in update.changes:
        final[(is_bid, price)] = units  # a level changed twice in one event: its end state
    body = (_sides(pad, ((b, p, u) for (b, p), u in final.items()), update.event_id)
            if final else None)
    update.cache[_CACHE_KEY] = body
    return body


def corrupt_body(pad: Padding, update: Update, level: tuple[bool, int, int]) -> bytes:
    """An update's levels with `level` (is_bid, price, units) set to what the true book
    does not have (never cached: the other subscriptions get the truth)."""
    final = {(b, p): u for b, p, u in update.changes}
    is_bid, price, units = level
    final[(is_bid, price)] = units
    return _sides(pad, ((b, p, u) for (b, p), u in final.items()), update.event_id)


def depth_frame(symbol: str, e_ns: int, first: int, last: int, body: bytes) -> bytes:
    return _DEPTH % (e_ns, symbol.encode(), first, last, body)


def snapshot_body(pad: Padding, bids: Ladder, asks: Ladder, top: int | None, seed: int) -> bytes:
    """The whole book (``top`` None) or its best ``top`` levels per side, unsorted."""
    levels: list[Change] = [(True, p, u) for p, u in bids.top(top)]
    levels.extend((False, p, u) for p, u in asks.top(top))
    return _sides(pad, levels, seed)


def crossed_body(pad: Padding, bids: Ladder, asks: Ladder) -> bytes:
    """A lie: a bid at the best ask + 1 tick (or an ask below the best bid)."""
    best_ask, best_bid = asks.best(), bids.best()
    if best_ask is not None:
        level: Change = (True, best_ask + 1, max(1, asks.get(best_ask)))
    else:
        level = (False, max(1, (best_bid or 2) - 1), 1)
    return _sides(pad, [level], 0)


def trade_frames(symbol: str, pad: Padding, update: Update) -> list[bytes]:
    """One frame per continuous trade of the update (block trades and auction fills have
    no place on this stream's ``m`` flag and are not sent)."""
    out = []
    e_ns = event_ns(update.timestampms, update.event_id)
    for ev in update.events:
        if ev["type"] != "trade" or ev.get("makerSide") not in ("bid", "ask"):
            continue
        out.append(orjson.dumps({
            "e": "trade", "E": e_ns, "s": symbol, "t": ev["tid"],
            "p": pad.text_price(ev["price"]), "q": pad.text_amount(ev["amount"]),
            "m": ev["makerSide"] == "bid"}))
    return out


def mystery_frame(symbol: str, e_ns: int) -> bytes:
    """An event type nobody knows."""
    return orjson.dumps({"e": "mystery", "E": e_ns, "s": symbol, "foo": 1})


def ack_frame(req_id: Any, result: Any = None) -> bytes:
    return orjson.dumps({"result": result, "id": req_id})


def error_frame(req_id: Any, code: int, msg: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "msg": msg}, "id": req_id})
