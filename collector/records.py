"""Output records: one JSON object per line, UTF-8, newline-terminated (pure).

Prices and sizes stay the exchange's decimal text. Key order is fixed so that
lines are stable to diff and to grep.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import orjson

from collector.book import Level

_NL = orjson.OPT_APPEND_NEWLINE

# Why a stream broke; README documents each one.
RESYNC_REASONS = (
    "start",            # the process (or this symbol's feed) started
    "gap",              # socket_sequence skipped, or the first frame was not 0
    "snapshot_timeout", # no snapshot frame within feed.snapshot_timeout_s
    "stale",            # no frame for feed.stale_after_s
    "invalid",          # unparseable or invalid frame
    "crossed",          # best bid >= best ask after an update
    "closed",           # connection closed, failed or never opened
    "refused",          # handshake refused (HTTP 404/429/503...)
    "error",            # a bug in the feed; it was restarted
    "dropped",          # the writer lost lines (disk full); `dropped` counts them
)


def book(symbol: str, seq: int, event_id: int, exchange_ms: int | None, recv_ns: int,
         bids: list[Level] | orjson.Fragment, asks: list[Level] | orjson.Fragment,
         exchange_ns: int | None = None) -> bytes:
    """`exchange_ns` (current API: the exact event time) follows `exchange_ms` when
    given; v1 has none, and its lines are unchanged."""
    if exchange_ns is None:
        rec = {"type": "book", "symbol": symbol, "seq": seq, "event_id": event_id,
               "exchange_ms": exchange_ms, "recv_ns": recv_ns, "bids": bids, "asks": asks}
    else:
        rec = {"type": "book", "symbol": symbol, "seq": seq, "event_id": event_id,
               "exchange_ms": exchange_ms, "exchange_ns": exchange_ns, "recv_ns": recv_ns,
               "bids": bids, "asks": asks}
    return orjson.dumps(rec, option=_NL)


def trade(symbol: str, seq: int, event_id: int, tid: int, price: str, amount: str,
          maker_side: str | None, block: bool, exchange_ms: int | None, recv_ns: int,
          exchange_ns: int | None = None) -> bytes:
    rec: dict[str, Any] = {
        "type": "trade", "symbol": symbol, "seq": seq, "event_id": event_id, "tid": tid,
        "price": price, "amount": amount, "maker_side": maker_side,
    }
    if block:
        rec["block"] = True
    rec["exchange_ms"] = exchange_ms
    if exchange_ns is not None:
        rec["exchange_ns"] = exchange_ns
    rec["recv_ns"] = recv_ns
    return orjson.dumps(rec, option=_NL)


def auction(symbol: str, seq: int, event_id: int, kind: str, fields: dict[str, Any],
            exchange_ms: int | None, recv_ns: int) -> bytes:
    rec: dict[str, Any] = {"type": "auction", "symbol": symbol, "seq": seq,
                           "event_id": event_id, "event": kind}
    # The event's own fields, never overriding ours.
    rec.update((k, v) for k, v in fields.items() if k not in rec)
    rec["exchange_ms"] = exchange_ms
    rec["recv_ns"] = recv_ns
    return orjson.dumps(rec, option=_NL)


SCHEMA = 1


def header(symbol: str, stream: str, start_s: int, version: str, config: dict[str, Any]) -> bytes:
    """First line of every segment, so each segment can be read on its own."""
    start = datetime.fromtimestamp(start_s, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return orjson.dumps(
        {"type": "header", "schema": SCHEMA, "stream": stream, "symbol": symbol,
         "segment_start": start, "segment_start_s": start_s, "collector_version": version,
         "config": config},
        option=_NL,
    )


def resync(symbol: str, reason: str, recv_ns: int, **detail: Any) -> bytes:
    assert reason in RESYNC_REASONS, reason
    rec: dict[str, Any] = {"type": "resync", "symbol": symbol, "reason": reason}
    rec.update(detail)
    rec["recv_ns"] = recv_ns
    return orjson.dumps(rec, option=_NL)
