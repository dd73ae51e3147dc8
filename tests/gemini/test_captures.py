"""Replay real Gemini order flow (v2 captures re-encoded as v1 frames) through `V1Stream`.

Every book record is compared with an independent reference: a plain dict
{Decimal(price): (price text, qty text)} per side, sorted from scratch after every frame. The
reference uses neither `collector.core.book` nor the collector's parser.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
import pytest

from collector.core.stream import Counts, StreamBroken
from collector.gemini.v1_stream import V1Stream
from tests.helpers.captures import (
    ALL_CAPTURES,
    CAPTURES,
    TEXT_CAPTURES,
    V1_EXCERPTS,
    ZST_CAPTURE,
    Frame,
    Message,
    read_capture,
    symbols,
    v1_frames,
)
from tests.helpers.cores import needs_native

DEPTH = 10

pytestmark = pytest.mark.skipif(
    not CAPTURES.is_dir(), reason=f"real captures not found at {CAPTURES} (../shared is absent)")


def _load(name: str) -> list[Message]:
    if name == ZST_CAPTURE:
        try:
            import zstandard  # noqa: F401  # a test-only tool, not a project dependency
        except ImportError as exc:
            pytest.skip(f"{ZST_CAPTURE} needs zstandard, which does not import: {exc}")
    return read_capture(name)


@dataclass
class Expected:
    """What one frame must produce, from the reference."""

    seq: int
    heartbeat: bool
    event_id: int | None = None
    exchange_ms: int | None = None
    had_change: bool = False
    top_changed: bool = False
    bids: list[list[str]] = field(default_factory=list)
    asks: list[list[str]] = field(default_factory=list)
    trades: list[dict[str, Any]] = field(default_factory=list)


def _top(side: dict[Decimal, tuple[str, str]], bids: bool) -> list[list[str]]:
    return [list(side[k]) for k in sorted(side, reverse=bids)[:DEPTH]]


def reference(frames: list[Frame]) -> tuple[list[Expected], int]:
    """Replay with plain dicts; also checks the book is never crossed. Returns (per frame, changes)."""
    book: dict[str, dict[Decimal, tuple[str, str]]] = {"bid": {}, "ask": {}}
    out: list[Expected] = []
    prev: tuple[list[list[str]], list[list[str]]] | None = None
    changes = 0
    for frame in frames:
        msg = json.loads(frame.raw)
        if msg["type"] == "heartbeat":
            out.append(Expected(msg["socket_sequence"], heartbeat=True))
            continue
        exp = Expected(msg["socket_sequence"], heartbeat=False, event_id=msg["eventId"],
                       exchange_ms=msg.get("timestampms"))
        for ev in msg["events"]:
            if ev["type"] == "change":
                changes += 1
                exp.had_change = True
                side = book[ev["side"]]
                if Decimal(ev["remaining"]) == 0:
                    side.pop(Decimal(ev["price"]), None)
                else:
                    side[Decimal(ev["price"])] = (ev["price"], ev["remaining"])
            else:
                assert ev["type"] == "trade"
                exp.trades.append(ev)
        if exp.had_change:
            exp.bids, exp.asks = _top(book["bid"], True), _top(book["ask"], False)
            exp.top_changed = (exp.bids, exp.asks) != prev
            prev = (exp.bids, exp.asks)
            if book["bid"] and book["ask"]:
                assert max(book["bid"]) < min(book["ask"]), f"reference book crossed at {exp.seq}"
        out.append(exp)
    return out, changes


@dataclass
class Tally:
    frames: int = 0
    changes: int = 0
    book_records: int = 0
    levels: int = 0
    trades: int = 0


def replay(symbol: str, frames: list[Frame], expected: list[Expected], emit_every: bool,
           tally: Tally) -> None:
    unknown: list[str] = []
    counts = Counts()
    stream = V1Stream(symbol, DEPTH, emit_every, unknown.append, counts)
    assert len(frames) == len(expected)
    for frame, exp in zip(frames, expected):
        try:
            out = stream.feed(frame.raw, frame.recv_ns)
        except StreamBroken as exc:
            pytest.fail(f"{symbol} seq {exp.seq}: StreamBroken({exc.reason!r}, {exc.fields})")
        got = [orjson.loads(line) for line in out.splitlines()]
        want: list[dict[str, Any]] = [
            {"type": "trade", "symbol": symbol, "seq": exp.seq, "event_id": exp.event_id,
             "tid": t["tid"], "price": t["price"], "amount": t["amount"],
             "maker_side": t["makerSide"], "exchange_ms": exp.exchange_ms,
             "recv_ns": frame.recv_ns}
            for t in exp.trades
        ]
        if exp.seq == 0 or (exp.had_change and (emit_every or exp.top_changed)):
            want.append({"type": "book", "symbol": symbol, "seq": exp.seq, "event_id": exp.event_id,
                         "exchange_ms": exp.exchange_ms, "recv_ns": frame.recv_ns,
                         "bids": exp.bids, "asks": exp.asks})
            tally.book_records += 1
            tally.levels += len(exp.bids) + len(exp.asks)
        assert got == want, f"{symbol} seq {exp.seq} (emit_every={emit_every})"
        tally.trades += len(exp.trades)
    assert unknown == []
    assert counts.trades == sum(len(e.trades) for e in expected)
    assert counts.updates == sum(e.had_change for e in expected[1:])
    assert stream.expected == len(frames)


def _check_capture(name: str, respelled: bool = False) -> dict[str, Any]:
    start = time.perf_counter()
    messages = _load(name)
    syms = symbols(messages)
    assert len(syms) == 10, syms  # every capture subscribed 10 symbols (captures/README.md)
    every, change = Tally(), Tally()
    for sym in syms:
        frames = v1_frames(messages, sym, respelled=respelled)
        expected, changes = reference(frames)
        assert expected[0].seq == 0 and expected[0].exchange_ms is None and expected[0].had_change
        every.frames += len(frames)
        every.changes += changes
        replay(sym, frames, expected, True, every)
        replay(sym, frames, expected, False, change)
    # Every frame with a change writes a book record under "every"; "change" writes fewer.
    assert change.book_records < every.book_records
    stats = {"capture": name, "respelled": respelled, "symbols": len(syms), "frames": every.frames,
             "changes": every.changes, "trades": every.trades,
             "book_records_every": every.book_records, "levels_every": every.levels,
             "book_records_change": change.book_records, "levels_change": change.levels,
             "seconds": round(time.perf_counter() - start, 2)}
    print(stats)
    return stats


@pytest.mark.parametrize("name", ALL_CAPTURES)
def test_capture_replays_exactly(name: str) -> None:
    stats = _check_capture(name)
    assert stats["frames"] > 500 and stats["book_records_every"] > 500


@pytest.mark.parametrize("name", TEXT_CAPTURES[:1] + (ZST_CAPTURE,))
def test_capture_replays_exactly_with_respelled_decimals(name: str) -> None:
    # The captures never spell one price two ways (checked); here later changes do, so a level
    # set as "2368.6" and removed as "2368.600" must go, and zero comes as "0.0" or "00".
    _check_capture(name, respelled=True)


@needs_native
@pytest.mark.parametrize("name, respelled", [(n, False) for n in ALL_CAPTURES]
                         + [(TEXT_CAPTURES[0], True), (ZST_CAPTURE, True)])
def test_capture_native_and_python_cores_write_the_same_bytes(name: str, respelled: bool) -> None:
    messages = _load(name)
    frames = 0
    for sym in symbols(messages):
        c = V1Stream(sym, DEPTH, True, native=True)
        py = V1Stream(sym, DEPTH, True, native=False)
        for frame in v1_frames(messages, sym, respelled=respelled):
            assert c.feed(frame.raw, frame.recv_ns) == py.feed(frame.raw, frame.recv_ns), sym
        assert (c.expected, c.counts) == (py.expected, py.counts)
        frames += c.expected
    assert frames > 500


@needs_native
def test_real_v1_update_frames_take_the_c_path() -> None:
    """The C fast path reads the frames' bytes itself; the exchange's own v1 frames (their key
    order, `timestamp`, a `symbol` in each event) must be ones it takes, not leave to orjson."""
    from collector.core.book import fastbook

    assert fastbook is not None  # needs_native
    updates = 0
    for path in sorted(V1_EXCERPTS.glob("*.jsonl")):
        for raw in path.read_bytes().splitlines():
            msg = orjson.loads(raw)
            if msg["type"] != "update" or "timestampms" not in msg:  # heartbeats, snapshots
                continue
            bids, asks = fastbook.Side(bids=True), fastbook.Side(bids=False)
            out = fastbook.change(raw, msg["socket_sequence"], bids, asks, DEPTH, True,
                                  b'"BTCUSD"', 1_700_000_000_000_000_000, Counts())
            assert type(out) is bytes and out.endswith(b"}\n"), (path.name, raw)
            updates += 1
    assert updates >= 30


def test_converter_shape() -> None:
    """The v1 frames obey the v1 rules the replay relies on (checked without the collector)."""
    messages = _load(TEXT_CAPTURES[0])
    frames = v1_frames(messages, "BTCUSD")
    msgs = [json.loads(f.raw) for f in frames]
    assert [m["socket_sequence"] for m in msgs] == list(range(len(msgs)))
    first = msgs[0]
    assert first["type"] == "update" and "timestampms" not in first
    assert {e["reason"] for e in first["events"]} == {"initial"}
    assert len(first["events"]) == 6614  # BTCUSD snapshot size (captures/README.md)
    assert all(e["delta"] == e["remaining"] for e in first["events"])
    ids = [m["eventId"] for m in msgs if m["type"] == "update"]
    assert ids == sorted(set(ids))
    tids = {e["tid"] for m in msgs if m["type"] == "update" for e in m["events"] if e["type"] == "trade"}
    assert tids and not tids & set(ids)
    makers = {e["makerSide"] for m in msgs if m["type"] == "update"
              for e in m["events"] if e["type"] == "trade"}
    assert makers <= {"bid", "ask"}
    # Heartbeats after the snapshot are in the stream and count in the sequence.
    assert sum(m["type"] == "heartbeat" for m in msgs) >= 5
    # One frame per later v2 message of the symbol (+ heartbeats).
    start = next(i for i, m in enumerate(messages)
                 if m.body["type"] == "l2_updates" and m.body["symbol"] == "BTCUSD")
    later = [m.body for m in messages[start:]]
    assert len(frames) == sum(
        b["type"] == "heartbeat" or b.get("symbol") == "BTCUSD" for b in later)
