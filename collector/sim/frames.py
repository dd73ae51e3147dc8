"""Gemini v1 market-data frames: query flags, filtering and JSON encoding.

Frames are bytes (orjson) sent as WebSocket *text* frames. Field order follows
real traffic: ``type, eventId, timestamp, timestampms, socket_sequence, events``;
the seq-0 snapshot has no timestamps (real Gemini behaviour).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson

from .ladder import Ladder
from .market import Event, Update
from .symbols import SymbolSpec

__all__ = [
    "GARBAGE",
    "MYSTERY_EVENT",
    "Subscription",
    "corrupt_frame",
    "crossed_frame",
    "filtered_events",
    "heartbeat_frame",
    "snapshot_frame",
    "update_frame",
]

GARBAGE = b'{"type":"upd'  # a truncated frame: not JSON
MYSTERY_EVENT: Event = {"type": "mystery", "foo": 1}
_UPDATE = (b'{"type":"update","eventId":%d,"timestamp":%d,"timestampms":%d,'
           b'"socket_sequence":%d,"events":%b}')
_AUCTION_TYPES = frozenset({"auction_open", "auction_indicative", "auction_result"})


def _flag(value: str | None, default: bool) -> bool:
    if value is None:
        return default
    v = value.strip().lower()
    if v in ("true", "1"):
        return True
    if v in ("false", "0"):
        return False
    return default


@dataclass(frozen=True)
class Subscription:
    """Query flags of one v1 connection (current doc semantics: a type is excluded only
    when its flag is explicitly false; heartbeat and top_of_book default to false)."""

    heartbeat: bool = False
    bids: bool = True
    offers: bool = True
    trades: bool = True
    top_of_book: bool = False
    auctions: bool = True

    @classmethod
    def from_query(cls, query: str) -> Subscription:
        q = dict(parse_qsl(query, keep_blank_values=True))
        return cls(
            heartbeat=_flag(q.get("heartbeat"), False),
            bids=_flag(q.get("bids"), True),
            offers=_flag(q.get("offers"), True),
            trades=_flag(q.get("trades"), True),
            top_of_book=_flag(q.get("top_of_book"), False),
            auctions=_flag(q.get("auctions"), True),
        )

    @property
    def key(self) -> tuple[bool, ...]:
        return (self.bids, self.offers, self.trades, self.top_of_book, self.auctions)

    def wants(self, ev: Event) -> bool:
        t = ev["type"]
        if t == "change":
            return self.bids if ev["side"] == "bid" else self.offers
        if t in ("trade", "block_trade"):
            return self.trades
        if t in _AUCTION_TYPES:
            return self.auctions
        return True


def filter_events(update: Update, sub: Subscription) -> list[Event]:
    if sub.top_of_book:
        # Book changes are replaced by top-of-book changes (no delta); the rest stays.
        kept = [e for e in update.events if e["type"] != "change" and sub.wants(e)]
        kept.extend(e for e in update.tob if sub.wants(e))
        return kept
    return [e for e in update.events if sub.wants(e)]


def filtered_events(update: Update, sub: Subscription) -> bytes | None:
    """The update's events for this subscription as a JSON array, None if nothing is left.

    Cached on the update, so N connections with the same flags encode once.
    """
    key = sub.key
    try:
        return update.cache[key]
    except KeyError:
        pass
    events = filter_events(update, sub)
    encoded = orjson.dumps(events) if events else None
    update.cache[key] = encoded
    return encoded


def update_frame(update: Update, events_json: bytes, seq: int) -> bytes:
    ms = update.timestampms
    return _UPDATE % (update.event_id, ms // 1000, ms, seq, events_json)


def heartbeat_frame(seq: int) -> bytes:
    return b'{"type":"heartbeat","socket_sequence":%d}' % seq


def _initial(side: str, price: str, amount: str) -> Event:
    return {"type": "change", "side": side, "price": price, "remaining": amount,
            "delta": amount, "reason": "initial"}


def snapshot_frame(spec: SymbolSpec, bids: Ladder, asks: Ladder, event_id: int,
                   sub: Subscription, seq: int = 0) -> bytes:
    """The seq-0 frame: every level as an ``initial`` change (bids then asks, best first).

    Full mode sends both sides unless bids and offers are both off (trades-only: empty);
    top_of_book mode sends one initial level per requested side.
    """
    p, a = spec.price_scale.render, spec.amount_scale.render
    events: list[Event] = []
    if sub.top_of_book:
        for wanted, side, ladder in ((sub.bids, "bid", bids), (sub.offers, "ask", asks)):
            if wanted and len(ladder):
                price, units = ladder.top(1)[0]
                events.append(_initial(side, p(price), a(units)))
    elif sub.bids or sub.offers:
        events.extend(_initial("bid", p(x), a(u)) for x, u in bids.top())
        events.extend(_initial("ask", p(x), a(u)) for x, u in asks.top())
    body: dict[str, Any] = {"type": "update", "eventId": event_id, "socket_sequence": seq,
                            "events": events}
    return orjson.dumps(body)


def crossed_frame(spec: SymbolSpec, bids: Ladder, asks: Ladder, event_id: int, ms: int,
                  seq: int) -> bytes:
    """A lie: a bid placed at (or above) the best ask. Never applied to the true book."""
    best_ask = asks.best()
    best_bid = bids.best()
    p, a = spec.price_scale.render, spec.amount_scale.render
    if best_ask is not None:
        side, price = "bid", best_ask + 1
    else:  # no asks: an ask at or below the best bid instead
        side, price = "ask", (best_bid or 2) - 1
    amount = a(max(1, (asks.get(best_ask) if best_ask is not None else 1)))
    ev = {"type": "change", "side": side, "price": p(price), "remaining": amount,
          "delta": amount, "reason": "place"}
    body = {"type": "update", "eventId": event_id, "timestamp": ms // 1000, "timestampms": ms,
            "socket_sequence": seq, "events": [ev]}
    return orjson.dumps(body)


def corrupt_frame(update: Update, sub: Subscription, seq: int, spec: SymbolSpec,
                  level: tuple[bool, int, int]) -> bytes:
    """The update's real (filtered) events, then a change setting `level` (is_bid, price,
    units) that the true book does not have: the numbers right, the content wrong."""
    is_bid, price, units = level
    a = spec.amount_scale.render
    ev = {"type": "change", "side": "bid" if is_bid else "ask", "price": spec.price_scale.render(price),
          "remaining": a(units), "delta": a(1), "reason": "place"}
    return update_frame(update, orjson.dumps([*filter_events(update, sub), ev]), seq)


def mystery_frame(update: Update, sub: Subscription, seq: int) -> bytes:
    """The update's real (filtered) events plus one event of an unknown type."""
    events = [*filter_events(update, sub), MYSTERY_EVENT]
    return update_frame(update, orjson.dumps(events), seq)
