"""Real Gemini v2 `l2` captures turned into v1 frames, for replay tests of the pure core.

The captures in ../shared/gemini/captures (see its README.md) are Market Data v2: one socket for
many symbols, no sequence numbers, `l2_updates` with `[side, price, qty]` changes (qty is the new
level total, zero deletes), separate `trade` messages and connection-wide heartbeats. They are the
only real full-depth order flow available, so `v1_frames` re-encodes one symbol's part of a
capture as the v1 stream the collector reads:

* the symbol's first `l2_updates` (the v2 snapshot) -> the socket_sequence 0 update frame: one
  `initial` change per level (buy -> bid, sell -> ask, remaining = delta = qty), no timestamp;
  its `trades` / `auction_events` history is dropped (v1 sends no history);
* every later `l2_updates` -> one update frame of `change` events (reason place, or cancel when
  qty is zero; remaining = qty; delta = qty - the level's previous qty);
* every `trade` -> one update frame holding a v1 `trade` event; makerSide is the opposite of the
  v2 taker side (taker buy -> makerSide ask); tid is the v2 `tid`, or the v2 `event_id` for the
  2021 captures that have no `tid`;
* every v2 heartbeat -> one v1 heartbeat;
* messages before the symbol's snapshot are dropped (a v1 stream starts with its snapshot);
* socket_sequence is 0, 1, 2, ... over all of the symbol's frames (heartbeats included);
  eventIds are synthetic, strictly increasing, not contiguous and never equal to a tid;
  timestampms is the receive time in ms.

This module imports nothing from `collector`: the frames are built with the stdlib only so that
a bug in the collector's parser cannot hide itself here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[3] / "shared"
CAPTURES = SHARED / "gemini" / "captures"
V1_EXCERPTS = CAPTURES / "v1_excerpts"
TEXT_CAPTURES = ("GEMINI.ws.36.0", "GEMINI.ws.1.0", "GEMINI-e6096f.0")
ZST_CAPTURE = "GEMINI.jsonl.zst"
ALL_CAPTURES = TEXT_CAPTURES + (ZST_CAPTURE,)

# A received message in the text captures: "<epoch seconds>: {json}". Header lines
# ("configuration: {...}", "<addr> <-> ts", "<addr> <- ts: {...}") and blank lines do not match.
_RECEIVED = re.compile(r"(\d+\.\d+): (\{.*\})\Z")

_EVENT_ID_BASE = 5_000_000_000_000_000  # above every real tid in the captures (< 3e15)


@dataclass(frozen=True, slots=True)
class Message:
    recv_ns: int
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Frame:
    raw: bytes
    recv_ns: int


def _ns(seconds: str) -> int:
    return int(Decimal(seconds) * 1_000_000_000)


def read_text_capture(path: Path) -> list[Message]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _RECEIVED.match(line)
        if m:
            out.append(Message(_ns(m.group(1)), json.loads(m.group(2))))
    return out


def read_zst_capture(path: Path) -> list[Message]:
    """The 2026 recorder format: zstd JSON lines, received frames are {"t": "recv", "ts", "data"}."""
    import zstandard  # a test-only tool, not a project dependency: callers importorskip it

    with path.open("rb") as f:
        text = zstandard.ZstdDecompressor().stream_reader(f).read().decode("utf-8")
    out = []
    for line in text.splitlines():
        rec = json.loads(line)
        if rec.get("t") != "recv":
            continue
        data = rec["data"]
        out.append(Message(_ns(repr(rec["ts"])), json.loads(data) if isinstance(data, str) else data))
    return out


def read_capture(name: str) -> list[Message]:
    path = CAPTURES / name
    return read_zst_capture(path) if name.endswith(".zst") else read_text_capture(path)


def symbols(messages: Iterable[Message]) -> list[str]:
    """Symbols with a book in the capture, in the order of their first l2_updates."""
    seen: dict[str, None] = {}
    for m in messages:
        if m.body.get("type") == "l2_updates":
            seen.setdefault(m.body["symbol"], None)
    return list(seen)


_SIDES = {"buy": "bid", "sell": "ask"}
_MAKER = {"buy": "ask", "sell": "bid"}  # v2 side is the taker's


def respell(text: str, variant: int) -> str:
    """The same decimal value in another spelling (variant 0 keeps it)."""
    if variant == 1:
        return text + ("0" if "." in text else ".0")
    if variant == 2:
        return text + ("00" if "." in text else ".00")
    if variant == 3 and "." in text:
        short = text.rstrip("0").rstrip(".")
        return short or "0"
    return text


_ZEROS = ("0", "0.0", "0.00000000", "00")


def v1_frames(messages: Iterable[Message], symbol: str, *, respelled: bool = False) -> list[Frame]:
    """One symbol's v1 stream (see the module docstring).

    With `respelled`, later changes write prices and sizes in varying spellings of the same value
    (trailing zeros added or stripped, zero as "0", "0.0", "0.00000000", "00"), as an exchange
    may: a book keyed by exact value must not care.
    """
    frames: list[Frame] = []
    qty: dict[tuple[str, Decimal], Decimal] = {}  # for `delta` only
    started = False
    n = 0  # change counter for respelling

    def emit(msg: dict[str, Any], recv_ns: int) -> None:
        seq = len(frames)
        msg["socket_sequence"] = seq
        if msg["type"] == "update":
            msg["eventId"] = _EVENT_ID_BASE + 10 * seq + seq % 7  # increasing, gaps vary
            if seq:
                msg["timestampms"] = recv_ns // 1_000_000
                msg["timestamp"] = recv_ns // 1_000_000_000
        frames.append(Frame(json.dumps(msg, separators=(",", ":")).encode(), recv_ns))

    for m in messages:
        body = m.body
        kind = body.get("type")
        if kind == "l2_updates" and body["symbol"] == symbol:
            events = []
            for side_v2, price, size in body["changes"]:
                side = _SIDES[side_v2]
                value = Decimal(size)
                delta = value - qty.get((side, Decimal(price)), Decimal(0))
                if value:
                    qty[(side, Decimal(price))] = value
                else:
                    qty.pop((side, Decimal(price)), None)
                if respelled and started:
                    n += 1
                    price = respell(price, n % 4)
                    size = _ZEROS[n % len(_ZEROS)] if not value else respell(size, (n // 4) % 4)
                if not started:
                    reason = "initial"
                else:
                    reason = "place" if value else "cancel"
                events.append({"type": "change", "side": side, "price": price, "remaining": size,
                               "delta": format(delta, "f"), "reason": reason})
            emit({"type": "update", "events": events}, m.recv_ns)
            started = True
        elif not started:
            continue
        elif kind == "trade" and body["symbol"] == symbol:
            tid = body.get("tid", body["event_id"])
            emit({"type": "update", "events": [
                {"type": "trade", "tid": tid, "price": body["price"], "amount": body["quantity"],
                 "makerSide": _MAKER[body["side"]]}]}, m.recv_ns)
        elif kind == "heartbeat":
            emit({"type": "heartbeat"}, m.recv_ns)
    return frames
