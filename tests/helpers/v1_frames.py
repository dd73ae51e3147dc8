"""v1 market-data frames built by hand, for the tests of `V1Stream` and of the C core."""

from __future__ import annotations

import functools
from typing import Any

import orjson

T0 = 1_700_000_000_000_000_000  # recv_ns


def chg(side: str, price: str, remaining: str, reason: str = "place") -> dict[str, Any]:
    return {"type": "change", "side": side, "price": price, "remaining": remaining,
            "delta": remaining, "reason": reason}


def trade(tid: int, price: str, amount: str, maker: str = "ask") -> dict[str, Any]:
    return {"type": "trade", "tid": tid, "price": price, "amount": amount, "makerSide": maker}


def upd(seq: int, events: list[dict[str, Any]], event_id: int | None = None,
        ts: int | None = None) -> bytes:
    msg: dict[str, Any] = {"type": "update", "eventId": event_id if event_id is not None
                           else 1000 + 10 * seq, "socket_sequence": seq, "events": events}
    if seq and ts is None:
        ts = 1_700_000_000_000 + seq
    if ts is not None:
        msg["timestampms"] = ts
        msg["timestamp"] = ts // 1000
    return orjson.dumps(msg)


def hb(seq: int) -> bytes:
    return orjson.dumps({"type": "heartbeat", "socket_sequence": seq})


SNAPSHOT_EVENTS = [
    chg("bid", "100.00", "1", "initial"), chg("ask", "101", "2", "initial"),
    chg("bid", "99.5", "3", "initial"), chg("ask", "101.5", "4", "initial"),
    chg("bid", "98", "5", "initial"), chg("ask", "102", "6", "initial"),
    chg("bid", "97", "7", "initial"), chg("ask", "103", "8", "initial"),
]


@functools.cache
def sim_frames() -> tuple[bytes, ...]:
    """3,000 frames of the simulator's ETHUSD market at 200 levels: the snapshot, then updates."""
    from bench.stages import make_frames

    return tuple(make_frames(2999, 200, "ETHUSD", seed=7))


# Frames after SNAPSHOT_EVENTS that the C fast path and the general path must treat alike.
EDGE_FRAMES = [
    upd(1, [chg("bid", "50", "1")], ts=None),          # no timestampms
    upd(1, [chg("ask", "101.000", "0")]),               # removes a level, padded
    upd(1, [chg("bid", "100.0", "1")]),                 # respells a top level
    upd(1, [chg("bid", "0.00", "1")]),                  # zero price: invalid
    upd(1, [chg("bid", "1e3", "1")]),                   # not a plain decimal
    upd(1, [chg("bid", "50", "-1")]),
    upd(1, [chg("bid", "50", 1)]),  # type: ignore[arg-type]  # a number, not a string
    upd(1, [chg("buy", "50", "1")]),
    upd(1, [chg("bid", "102", "1")]),                   # crosses the book
    upd(2, [chg("bid", "50", "1")]),                    # a gap
    upd(1, [{"type": "change", "side": "bid", "price": "50"}]),
    upd(1, []),
    orjson.dumps({"type": "update", "eventId": True, "socket_sequence": 1, "timestampms": 5,
                  "events": [chg("bid", "50", "1")]}),
    orjson.dumps({"type": "update", "eventId": 5, "socket_sequence": True, "timestampms": 5,
                  "events": [chg("bid", "50", "1")]}),
    orjson.dumps({"type": "update", "eventId": 5, "socket_sequence": 1, "timestampms": 5.0,
                  "events": [chg("bid", "50", "1")]}),
    orjson.dumps({"type": "updates", "eventId": 5, "socket_sequence": 1, "timestampms": 5,
                  "events": [chg("bid", "50", "1")]}),
]
