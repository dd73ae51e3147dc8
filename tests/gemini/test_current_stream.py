"""collector.gemini.current_stream: one symbol on Gemini's current API -> JSON lines, or
StreamBroken."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest

from collector.core import format
from collector.core.histogram import Histogram
from collector.core.stream import Counts, StreamBroken
from collector.gemini.current_stream import CurrentStream

SYM = "BTCUSD"
T0 = 1_700_000_000_000_000_000  # recv_ns
E0 = 1_770_000_000_123_456_789  # exchange ns


def depth(first: int, last: int, bids: list[list[str]] | None = None,
          asks: list[list[str]] | None = None, e_ns: int | None = None, sym: str = SYM) -> bytes:
    return orjson.dumps({"e": "depthUpdate", "E": e_ns if e_ns is not None else E0 + last,
                         "s": sym, "U": first, "u": last, "b": bids or [], "a": asks or []})


def trade(tid: int, price: str = "101.000", qty: str = "0.50", m: bool = False,
          e_ns: int = E0) -> bytes:
    return orjson.dumps({"e": "trade", "E": e_ns, "s": SYM, "t": tid, "p": price, "q": qty,
                         "m": m})


# Unsorted and padded, as Gemini sends them.
SNAP_BIDS = [["99.500", "3.000"], ["100.000", "1.0"], ["97.00", "7"], ["98.0", "5.00"]]
SNAP_ASKS = [["102.000", "6"], ["101.00", "2.0"], ["103.0", "8"], ["101.500", "4.000"]]


def lines(out: bytes) -> list[dict[str, Any]]:
    assert out == b"" or out.endswith(b"\n")
    return [orjson.loads(line) for line in out.split(b"\n")[:-1]]


def started(depth_n: int = 2, emit_every: bool = False, snap_id: int = 1000,
            **kw: Any) -> CurrentStream:
    s = CurrentStream(SYM, depth_n, emit_every, **kw)
    s.start()
    s.take_requests()
    s.feed(depth(snap_id, snap_id, SNAP_BIDS, SNAP_ASKS), T0)
    return s


def broken(stream: CurrentStream, raw: bytes) -> StreamBroken:
    with pytest.raises(StreamBroken) as info:
        stream.feed(raw, T0 + 1)
    return info.value


# --- subscribe and snapshot ------------------------------------------------------------

def test_start_subscribes_depth_and_trades() -> None:
    s = CurrentStream("btcusd", 10, False)
    assert s.take_requests() == []
    s.start()
    (req,) = s.take_requests()
    assert orjson.loads(req) == {"method": "SUBSCRIBE",
                                 "params": ["btcusd@depth@100ms", "btcusd@trade"], "id": 1}
    assert s.take_requests() == []
    t = CurrentStream(SYM, 10, False, trades=False)
    t.start()
    assert orjson.loads(t.take_requests()[0])["params"] == ["btcusd@depth@100ms"]


def test_first_depth_frame_is_the_book_sorted_and_normalised() -> None:
    counts = Counts()
    s = CurrentStream(SYM, 3, False, counts=counts)
    s.start()
    assert not s.live
    out = s.feed(depth(555, 555, SNAP_BIDS, SNAP_ASKS, e_ns=1_770_000_000_987_654_321), T0)
    assert s.live and s.last_id == 555
    (rec,) = lines(out)
    assert rec == {"type": "book", "symbol": SYM, "seq": 555, "event_id": 555,
                   "exchange_ms": 1_770_000_000_987, "exchange_ns": 1_770_000_000_987_654_321,
                   "recv_ns": T0,
                   "bids": [["100", "1"], ["99.5", "3"], ["98", "5"]],
                   "asks": [["101", "2"], ["101.5", "4"], ["102", "6"]]}
    assert list(rec) == ["type", "symbol", "seq", "event_id", "exchange_ms", "exchange_ns",
                         "recv_ns", "bids", "asks"]
    assert counts.updates == 0


def test_snapshot_needs_no_marker_and_no_ack() -> None:
    # U < u on the first frame: still the book (only "first after subscribe" counts).
    s = CurrentStream(SYM, 10, False)
    s.start()
    (rec,) = lines(s.feed(depth(40, 50, [["1.0", "1"]], []), T0))
    assert rec["seq"] == 50 and rec["bids"] == [["1", "1"]] and rec["asks"] == []
    assert s.feed(b'{"result":null,"id":1}', T0) == b""  # the ack may come after it
    assert s.live


def test_empty_snapshot_writes_a_book_record() -> None:
    s = CurrentStream(SYM, 10, False)
    s.start()
    assert lines(s.feed(depth(9, 9), T0))[0]["bids"] == []


def test_depth_frame_before_subscribe_is_invalid() -> None:
    exc = broken(CurrentStream(SYM, 10, False), depth(1, 1))
    assert exc.reason == "invalid"


def test_snapshot_with_zero_levels_keeps_only_real_ones() -> None:
    s = CurrentStream(SYM, 10, False)
    s.start()
    (rec,) = lines(s.feed(depth(9, 9, [["1.0", "0.000"], ["2.0", "1"]], [["3", "0"]]), T0))
    assert rec["bids"] == [["2", "1"]] and rec["asks"] == []


# --- continuity -------------------------------------------------------------------------

def test_overlap_by_one_is_contiguous() -> None:
    counts = Counts()
    s = started(counts=counts)
    (rec,) = lines(s.feed(depth(1000, 1007, [["100.500", "1"]]), T0))
    assert rec["seq"] == rec["event_id"] == 1007
    assert rec["bids"] == [["100.5", "1"], ["100", "1"]]
    (rec,) = lines(s.feed(depth(1007, 1030, [], [["100.90", "2"]]), T0))
    assert rec["seq"] == 1030 and rec["asks"][0] == ["100.9", "2"]
    assert s.last_id == 1030 and counts.updates == 2


def test_frame_straddling_last_is_applied() -> None:
    s = started()
    s.feed(depth(1000, 1010, [["100.5", "1"]]), T0)
    (rec,) = lines(s.feed(depth(1004, 1020, [["100.5", "2"]]), T0))  # U < last < u
    assert rec["seq"] == 1020 and rec["bids"][0] == ["100.5", "2"]


@pytest.mark.parametrize(("first", "last"), [(1000, 1000), (990, 1010), (990, 995),
                                             (1005, 1010), (1010, 1010)])
def test_stale_frames_are_skipped(first: int, last: int) -> None:
    s = started()
    s.feed(depth(1000, 1010, [["100.5", "1"]]), T0)
    assert s.feed(depth(first, last, [["100.5", "9"]]), T0) == b""  # u <= last
    assert s.stale == 1 and s.last_id == 1010
    assert s.book is not None and s.book.bids.top(1) == [("100.5", "1")]


def test_gap_when_first_id_is_above_last() -> None:
    s = started()
    s.feed(depth(1000, 1010, [["100.5", "1"]]), T0)
    exc = broken(s, depth(1020, 1030, [["100.6", "1"]]))
    assert exc.reason == "gap" and exc.fields == {"expected": 1010, "got": 1020}
    assert not s.live and s.state == "broken"


def test_binance_style_plus_one_is_a_gap_here() -> None:
    s = started()
    exc = broken(s, depth(1001, 1002, [["100.5", "1"]]))  # U == last + 1
    assert exc.reason == "gap" and exc.fields == {"expected": 1000, "got": 1001}


def test_broken_stream_applies_nothing_more() -> None:
    s = started()
    broken(s, depth(1020, 1030))
    assert s.feed(depth(1030, 1040, [["100.5", "1"]]), T0) == b""
    assert s.dropped == 1 and s.book is None


# --- applying levels ----------------------------------------------------------------------

def test_padded_and_plain_spellings_are_one_level() -> None:
    s = started(depth_n=10)
    s.feed(depth(1000, 1001, [["100.500", "1.000"]]), T0)
    (rec,) = lines(s.feed(depth(1001, 1002, [["100.5", "2"]]), T0))
    assert rec["bids"][:2] == [["100.5", "2"], ["100", "1"]]


@pytest.mark.parametrize("zero", ["0", "0.0", "0.00000000", "000.000"])
def test_zero_in_any_spelling_removes(zero: str) -> None:
    s = started()
    (rec,) = lines(s.feed(depth(1000, 1001, [["100.000", zero]]), T0))
    assert rec["bids"] == [["99.5", "3"], ["98", "5"]]
    assert s.book is not None and len(s.book.bids) == 3


def test_unsorted_levels_within_a_frame() -> None:
    s = started(depth_n=3)
    frame = depth(1000, 1001, bids=[["99.000", "1"], ["100.250", "2"], ["99.5", "0"],
                                    ["100.100", "3"]],
                  asks=[["101.5", "0"], ["100.900", "1"], ["101", "0"]])
    (rec,) = lines(s.feed(frame, T0))
    assert rec["bids"] == [["100.25", "2"], ["100.1", "3"], ["100", "1"]]
    assert rec["asks"] == [["100.9", "1"], ["102", "6"], ["103", "8"]]


def test_removing_an_absent_level_changes_nothing() -> None:
    s = started()
    assert s.feed(depth(1000, 1001, [["50", "0"]]), T0) == b""
    assert s.last_id == 1001


def test_emit_change_vs_every() -> None:
    change = started(depth_n=2)
    every = started(depth_n=2, emit_every=True)
    deep = depth(1000, 1001, [["50.0", "1"]])  # below the top 2
    assert change.feed(deep, T0) == b""
    assert lines(every.feed(deep, T0))[0]["seq"] == 1001
    empty = depth(1001, 1002)
    assert change.feed(empty, T0) == b"" and every.feed(empty, T0) == b""
    assert change.last_id == every.last_id == 1002


def test_crossed_after_an_update() -> None:
    s = started()
    exc = broken(s, depth(1000, 1001, [["101.000", "1"]]))
    assert exc.reason == "crossed" and exc.fields["seq"] == 1001
    assert "101" in exc.fields["detail"] and not s.live


def test_crossed_snapshot() -> None:
    s = CurrentStream(SYM, 10, False)
    s.start()
    exc = broken(s, depth(5, 5, [["10", "1"]], [["9.5", "1"]]))
    assert exc.reason == "crossed" and not s.live


def test_latency_is_observed_for_applied_frames() -> None:
    latency = Histogram()
    s = started(counts=Counts(latency=latency))
    s.feed(depth(1000, 1001, [["50", "1"]], e_ns=T0 - 7_000_000), T0)
    s.feed(depth(990, 995, [["50", "2"]], e_ns=T0), T0)  # stale: not observed
    assert latency.count == 1
    assert latency.sum == 7


# --- trades ------------------------------------------------------------------------------

def test_trade_after_the_book() -> None:
    counts = Counts()
    s = started(counts=counts)
    (rec,) = lines(s.feed(trade(77, "101.000", "0.50", m=True, e_ns=E0), T0 + 5))
    assert rec == {"type": "trade", "symbol": SYM, "seq": 1001, "event_id": 1000, "tid": 77,
                   "price": "101", "amount": "0.5", "maker_side": "bid",
                   "exchange_ms": E0 // 1_000_000, "exchange_ns": E0, "recv_ns": T0 + 5}
    assert list(rec) == ["type", "symbol", "seq", "event_id", "tid", "price", "amount",
                         "maker_side", "exchange_ms", "exchange_ns", "recv_ns"]
    assert lines(s.feed(trade(78, m=False), T0))[0]["maker_side"] == "ask"
    assert counts.trades == 2


def test_trades_before_the_snapshot_are_held_then_written_before_it() -> None:
    counts = Counts()
    s = CurrentStream(SYM, 2, False, counts=counts)
    s.start()
    assert s.feed(trade(1), T0) == b""
    assert s.feed(trade(2), T0 + 1) == b""
    recs = lines(s.feed(depth(700, 700, SNAP_BIDS, SNAP_ASKS), T0 + 2))
    assert [r["type"] for r in recs] == ["trade", "trade", "book"]
    assert [(r["seq"], r["event_id"]) for r in recs] == [(700, 700)] * 3
    assert [r["tid"] for r in recs[:2]] == [1, 2] and recs[1]["recv_ns"] == T0 + 1
    assert counts.trades == 2


def test_records_keep_the_order_collector_verify_checks() -> None:
    """Inside a span seq never goes back and never repeats after a book record."""
    s = started(emit_every=True)
    out = b"".join([
        s.feed(trade(1), T0), s.feed(depth(1000, 1001, [["50", "1"]]), T0),
        s.feed(trade(2), T0), s.feed(trade(3), T0), s.feed(depth(1001, 1001), T0),
        s.feed(depth(1001, 1009, [["51", "1"]]), T0), s.feed(trade(4), T0),
    ])
    last_seq, last_was_book = 1000, True  # the snapshot's book record
    for r in lines(out):
        assert r["seq"] >= last_seq
        assert not (r["seq"] == last_seq and last_was_book), r
        last_seq, last_was_book = r["seq"], r["type"] == "book"


def test_trade_for_another_symbol_is_invalid() -> None:
    s = started()
    raw = orjson.dumps({"e": "trade", "E": 1, "s": "ETHUSD", "t": 1, "p": "1", "q": "1",
                        "m": True})
    assert broken(s, raw).reason == "invalid"
    assert broken(started(), depth(1000, 1001, sym="ethusd")).reason == "invalid"


# --- replies, unknown and invalid frames ---------------------------------------------------------

def test_error_reply_to_our_request_breaks() -> None:
    s = CurrentStream(SYM, 10, False)
    s.start()
    exc = broken(s, b'{"error":{"code":2,"msg":"Invalid stream"},"id":1}')
    assert exc.reason == "invalid" and "SUBSCRIBE 1 refused" in exc.fields["detail"]


def test_error_reply_to_someone_elses_request_is_ignored() -> None:
    s = started()
    assert s.feed(b'{"error":{"code":2,"msg":"x"},"id":999}', T0) == b""
    assert broken(s, b'{"error":"no id","id":null}').reason == "invalid"


def test_unknown_frames_are_reported() -> None:
    seen: list[str] = []
    s = started(on_unknown=seen.append)
    assert s.feed(b'{"e":"mystery","E":1,"s":"BTCUSD"}', T0) == b""
    assert seen == ["frame:mystery"] and s.live


def test_garbage_is_invalid() -> None:
    exc = broken(started(), b'{"e":"depthUpd')
    assert exc.reason == "invalid" and exc.fields["sample"] == '{"e":"depthUpd'


# --- resync on the same socket ------------------------------------------------------------

def test_resync_unsubscribes_then_resubscribes_and_takes_a_fresh_book() -> None:
    s = started(depth_n=10, emit_every=True)
    s.feed(depth(1000, 1001, [["50", "1"]]), T0)  # a level that will vanish
    broken(s, depth(1050, 1060))
    s.resync()
    (unsub,) = s.take_requests()
    unsub_msg = orjson.loads(unsub)
    assert unsub_msg == {"method": "UNSUBSCRIBE", "params": ["btcusd@depth@100ms"], "id": 2}
    # Until the UNSUBSCRIBE is acknowledged, depth frames are the old subscription's.
    assert s.feed(depth(1060, 1070, [["51", "1"]]), T0) == b""
    assert s.feed(trade(9), T0) == b""  # trades flow on, held for the new book
    assert s.feed(b'{"result":null,"id":1}', T0) == b""  # an old ack changes nothing
    assert s.take_requests() == [] and s.state == "unsubscribing"
    assert s.feed(b'{"result":null,"id":2}', T0) == b""
    (sub,) = s.take_requests()
    assert orjson.loads(sub) == {"method": "SUBSCRIBE", "params": ["btcusd@depth@100ms"], "id": 3}
    assert s.state == "subscribing" and not s.live
    recs = lines(s.feed(depth(2000, 2000, [["60", "1"]], [["61", "1"]]), T0))
    assert [r["type"] for r in recs] == ["trade", "book"]
    assert recs[1]["bids"] == [["60", "1"]] and recs[1]["asks"] == [["61", "1"]]
    assert recs[0]["seq"] == recs[1]["seq"] == 2000
    assert s.dropped == 1 and s.live
    assert lines(s.feed(depth(2000, 2001, [["60", "2"]]), T0))[0]["bids"] == [["60", "2"]]


def test_shared_request_ids_route_replies() -> None:
    import itertools
    ids = itertools.count(1)
    a = CurrentStream("BTCUSD", 10, False, ids=ids)
    b = CurrentStream("ETHUSD", 10, False, ids=ids)
    a.start()
    b.start()
    assert [orjson.loads(r)["id"] for r in a.take_requests() + b.take_requests()] == [1, 2]
    assert a.owns(1) and not a.owns(2) and b.owns(2)


# --- record layout ------------------------------------------------------------------------

def test_book_record_is_the_v1_book_record_plus_exchange_ns() -> None:
    s = CurrentStream(SYM, 10, False)
    s.start()
    ours = orjson.loads(s.feed(depth(42, 42, [["100.5", "1"], ["100", "2"]], [["101", "3"]], E0), T0))
    assert ours.pop("exchange_ns") == E0
    theirs = format.book(SYM, 42, 42, E0 // 1_000_000, T0, [("100.5", "1"), ("100", "2")],
                         [("101", "3")])
    assert orjson.dumps(ours, option=orjson.OPT_APPEND_NEWLINE) == theirs


def test_every_book_record_is_sorted_and_uncrossed_under_churn() -> None:
    import random
    rng = random.Random(5)
    s = started(depth_n=5, emit_every=True)
    last = 1000
    for _ in range(300):
        side = rng.choice(("b", "a"))
        price = Decimal(rng.randint(80, 99) if side == "b" else rng.randint(102, 120))
        qty = rng.choice(("0", "0.000", "1.500", "2"))
        text = f"{price}.{'0' * rng.randint(0, 3)}".rstrip(".")
        nxt = last + rng.randint(1, 5)
        levels = [[text, qty]]
        out = s.feed(depth(last, nxt, levels if side == "b" else [],
                           levels if side == "a" else []), T0)
        last = nxt
        for r in lines(out):
            bp = [Decimal(p) for p, _ in r["bids"]]
            ap = [Decimal(p) for p, _ in r["asks"]]
            assert bp == sorted(bp, reverse=True) and ap == sorted(ap)
            for p, q in r["bids"] + r["asks"]:  # canonical text: no padding
                assert not ("." in p and p.endswith("0")) and not p.startswith("00"), p
                assert not ("." in q and q.endswith("0")) and Decimal(q) > 0, q
