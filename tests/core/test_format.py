"""collector.core.format: the on-disk format, and every writer of it held to it.

The golden test: the C core renders its own lines (collector/core/_fastbook.c); each one
must be byte for byte what `format.book` / `format.trade` render from the same values.
"""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from collector.core import format
from collector.core.format import FIELDS, RecordType, SegmentName
from collector.gemini.current_stream import CurrentStream
from collector.gemini.v1 import Trade, Update, parse
from collector.gemini.v1_stream import V1Stream
from tests.helpers.cores import needs_native

SYM = "BTCUSD"
T0 = 1_764_559_146_123_456_789


def _update(seq: int, events: list[dict[str, Any]], event_id: int, ts: int | None) -> bytes:
    msg: dict[str, Any] = {"type": "update", "eventId": event_id, "socket_sequence": seq,
                           "events": events}
    if ts is not None:
        msg["timestampms"] = ts
    return orjson.dumps(msg)


def _random_frames(rng: random.Random, n: int) -> list[bytes]:
    """A snapshot, then updates of 1-4 changes and 0-2 trades with awkward values:
    padded and long prices, 18-digit ids, every maker side."""
    snap = [{"type": "change", "side": "bid", "price": f"{p}.5", "remaining": "1",
             "reason": "initial"} for p in range(100, 120)]
    snap += [{"type": "change", "side": "ask", "price": f"{p}.25", "remaining": "2.000",
              "reason": "initial"} for p in range(121, 141)]
    frames = [_update(0, snap, 1, None)]
    for seq in range(1, n):
        events: list[dict[str, Any]] = []
        for _ in range(rng.randint(1, 4)):
            bid = rng.random() < 0.5
            price = rng.randint(90, 120) if bid else rng.randint(121, 150)
            text = f"{price}.{rng.choice(['5', '50', '123456789012345678', '0'])}"
            size = rng.choice(["0", "0.000", "1", "12.5000", "0.00000001", "999999999999.9"])
            events.append({"type": "change", "side": "bid" if bid else "ask", "price": text,
                           "remaining": size, "reason": "place"})
        for _ in range(rng.randint(0, 2)):
            events.append({"type": "trade", "tid": rng.randint(1, 10**18 - 1),
                           "price": f"{rng.randint(121, 150)}.01", "amount": "0.5",
                           "makerSide": rng.choice(["bid", "ask", "auction"])})
        frames.append(_update(seq, events, rng.randint(1, 10**18 - 1),
                              rng.randint(1, 10**18 - 1)))
    return frames


def _expected(stream: V1Stream, frame: Update, recv_ns: int) -> bytes:
    """What format.py renders for a frame the stream has just applied (emit "every")."""
    out = [format.trade(SYM, frame.seq, frame.event_id, e.tid, e.price, e.amount, e.maker_side,
                        e.block, frame.timestamp_ms, recv_ns)
           for e in frame.events if type(e) is Trade]
    assert stream.book is not None
    out.append(format.book(SYM, frame.seq, frame.event_id, frame.timestamp_ms, recv_ns,
                           stream.book.bids.top(10), stream.book.asks.top(10)))
    return b"".join(out)


class Counted(V1Stream):
    __slots__ = ("taken",)

    def _fast_native(self, raw: bytes, recv_ns: int) -> bytes | None:
        out = super()._fast_native(raw, recv_ns)
        self.taken = getattr(self, "taken", 0) + (out is not None)
        return out


@needs_native
def test_the_c_core_renders_what_format_defines() -> None:
    rng = random.Random(11)
    frames = _random_frames(rng, 1500)
    s = Counted(SYM, 10, True, native=True)
    s.feed(frames[0], T0)
    for i, raw in enumerate(frames[1:], 1):
        frame = parse(raw)
        assert type(frame) is Update
        out = s.feed(raw, T0 + i)
        assert out == _expected(s, frame, T0 + i), i
    assert s.taken == len(frames) - 1  # every one of them rendered by C


def test_renderers_follow_fields() -> None:
    """Each renderer's keys come in the order FIELDS gives (optional keys in parentheses)."""
    def keys(line: bytes) -> list[str]:
        return list(orjson.loads(line))

    def fields(kind: str, *present: str) -> list[str]:
        return [f.strip("()") for f in FIELDS[kind] if not f.startswith("(") or f[1:-1] in present]

    levels = [("1", "2")]
    assert keys(format.book(SYM, 1, 2, 3, 4, levels, levels)) == fields(RecordType.BOOK)
    assert keys(format.book(SYM, 1, 2, 3, 4, levels, levels, exchange_ns=5)) == fields(
        RecordType.BOOK, "exchange_ns")
    assert keys(format.trade(SYM, 1, 2, 3, "1", "2", "bid", False, 4, 5)) == fields(RecordType.TRADE)
    assert keys(format.trade(SYM, 1, 2, 3, "1", "2", None, True, 4, 5, exchange_ns=6)) == fields(
        RecordType.TRADE, "block", "exchange_ns")
    assert keys(format.header(SYM, "records", 0, "v", {})) == fields(RecordType.HEADER)
    auction = keys(format.auction(SYM, 1, 2, "auction_open", {"x": 1, "type": "no"}, 3, 4))
    assert auction == [*fields(RecordType.AUCTION), "x", "exchange_ms", "recv_ns"]
    resync = keys(format.resync(SYM, format.Reason.GAP, 1, expected_seq=2))
    assert resync == [*fields(RecordType.RESYNC), "expected_seq", "recv_ns"]


def test_every_stream_writes_book_lines_that_book_line_matches() -> None:
    """`collector verify` trusts BOOK_LINE to recognise the renderer's lines; both APIs'
    lines must match it (else verify falls to its slow path, which is only slower)."""
    v1 = V1Stream(SYM, 10, True, native=False)
    frames = _random_frames(random.Random(3), 50)
    lines = b"".join(v1.feed(raw, T0 + i) for i, raw in enumerate(frames)).splitlines(True)
    cur = CurrentStream(SYM, 10, True)
    cur.start()
    lines += cur.feed(orjson.dumps({"e": "depthUpdate", "E": T0, "s": SYM, "U": 5, "u": 5,
                                    "b": [["100.50", "1"]], "a": [["101", "2.0"]]}), T0).splitlines(True)
    books = [line for line in lines if line.startswith(b'{"type":"book"')]
    assert len(books) > 40
    assert all(format.BOOK_LINE.fullmatch(line) for line in books)
    assert not format.BOOK_LINE.fullmatch(books[-1].replace(b'"1"]', b'"0"]'))  # a zero size


@pytest.mark.parametrize(("text", "want"), [
    ("6513.20", "6513.2"), ("06513.20", "6513.2"), ("0.00000000", "0"), ("0", "0"),
    ("0100.0", "100"), ("0.50", "0.5"), ("000.000001", "0.000001"), ("77401.500", "77401.5"),
])
def test_canonical(text: str, want: str) -> None:
    assert format.canonical(text) == want
    assert format.is_zero(text) == (want == "0")


def test_segment_names_round_trip() -> None:
    name = SegmentName.parse("BTCUSD.20261124T060000Z-3.jsonl.zst")
    assert name == SegmentName(1_795_500_000, 3, "BTCUSD", ".zst")
    assert str(name) == "BTCUSD.20261124T060000Z-3.jsonl.zst"
    assert SegmentName(1_795_500_000, 1, "ETHUSD").plain == "ETHUSD.20261124T060000Z.jsonl"
    for bad in ("current.jsonl", "BTCUSD.2026112T060000Z.jsonl", "BTCUSD.20261124T060000Z.json",
                "BTCUSD.20261124T060000Z.jsonl.tmp"):
        assert SegmentName.parse(bad) is None


def test_header_reading() -> None:
    line = format.header(SYM, "records", 1_795_500_000, "1.0", {"a": 1})
    rec = format.parse_header(line)
    assert rec is not None and format.header_start_s(rec) == 1_795_500_000
    assert rec["segment_start"] == "2026-11-24T06:00:00Z"
    for bad in (b"", b"[1]", b'{"type":"book"}', b"not json"):
        assert format.parse_header(bad) is None
    assert format.header_start_s({"segment_start_s": -5}) is None
    assert format.header_start_s({"segment_start_s": True}) is None
