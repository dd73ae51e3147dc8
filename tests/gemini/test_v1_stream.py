"""collector.gemini.v1_stream: one v1 connection's frames -> JSON lines, or StreamBroken."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from collector.core.stream import Counts, StreamBroken
from collector.gemini.v1_stream import V1Stream
from tests.helpers.cores import needs_native
from tests.helpers.v1_frames import EDGE_FRAMES, SNAPSHOT_EVENTS, T0, chg, hb, sim_frames, trade, upd

SYM = "BTCUSD"


def lines(out: bytes) -> list[dict[str, Any]]:
    assert out == b"" or out.endswith(b"\n")
    return [orjson.loads(line) for line in out.split(b"\n")[:-1]]


def started(depth: int = 2, emit_every: bool = False, **kw: Any) -> V1Stream:
    s = V1Stream(SYM, depth, emit_every, **kw)
    s.feed(upd(0, SNAPSHOT_EVENTS, event_id=555), T0)
    return s


def broken(stream: V1Stream, raw: bytes) -> StreamBroken:
    with pytest.raises(StreamBroken) as info:
        stream.feed(raw, T0 + 1)
    return info.value


# --- snapshot ---------------------------------------------------------------------------

def test_snapshot_builds_the_book_and_writes_one_book_record() -> None:
    counts = Counts()
    s = V1Stream(SYM, 2, False, counts=counts)
    assert not s.live
    out = s.feed(upd(0, SNAPSHOT_EVENTS, event_id=7275473603), T0)
    assert s.live
    (rec,) = lines(out)
    assert rec == {"type": "book", "symbol": SYM, "seq": 0, "event_id": 7275473603,
                   "exchange_ms": None, "recv_ns": T0,
                   "bids": [["100.00", "1"], ["99.5", "3"]],
                   "asks": [["101", "2"], ["101.5", "4"]]}
    assert list(rec) == ["type", "symbol", "seq", "event_id", "exchange_ms", "recv_ns",
                         "bids", "asks"]
    assert counts.updates == 0 and counts.trades == 0


def test_snapshot_with_timestamp_keeps_it_and_full_depth_when_short() -> None:
    s = V1Stream(SYM, 10, False)
    (rec,) = lines(s.feed(upd(0, [chg("ask", "5", "1", "initial")], ts=123), T0))
    assert rec["exchange_ms"] == 123 and rec["bids"] == [] and rec["asks"] == [["5", "1"]]


def test_empty_snapshot_still_writes_a_book_record() -> None:
    s = V1Stream(SYM, 10, False)
    assert lines(s.feed(upd(0, []), T0)) == [
        {"type": "book", "symbol": SYM, "seq": 0, "event_id": 1000, "exchange_ms": None,
         "recv_ns": T0, "bids": [], "asks": []}]
    assert s.live


# --- sequence rules -----------------------------------------------------------------------

def test_first_frame_not_zero_is_a_gap() -> None:
    s = V1Stream(SYM, 10, False)
    exc = broken(s, upd(1, SNAPSHOT_EVENTS))
    assert exc.reason == "gap" and exc.fields == {"expected_seq": 0, "got_seq": 1}
    assert not s.live


def test_first_heartbeat_not_zero_is_a_gap() -> None:
    exc = broken(V1Stream(SYM, 10, False), hb(3))
    assert exc.reason == "gap" and exc.fields == {"expected_seq": 0, "got_seq": 3}


def test_skipped_sequence_is_a_gap() -> None:
    s = started()
    s.feed(upd(1, [chg("bid", "50", "1")]), T0)
    exc = broken(s, upd(3, [chg("bid", "51", "1")]))
    assert exc.reason == "gap" and exc.fields == {"expected_seq": 2, "got_seq": 3}


def test_repeated_sequence_is_a_gap() -> None:
    s = started()
    exc = broken(s, upd(0, SNAPSHOT_EVENTS))
    assert exc.reason == "gap" and exc.fields == {"expected_seq": 1, "got_seq": 0}


def test_heartbeats_take_sequence_numbers() -> None:
    s = started()
    assert s.feed(hb(1), T0) == b""
    assert s.feed(hb(2), T0) == b""
    assert lines(s.feed(upd(3, [chg("bid", "100.5", "1")]), T0))[0]["seq"] == 3
    # an update that ignores the heartbeat's number is a gap
    s2 = started()
    s2.feed(hb(1), T0)
    exc = broken(s2, upd(1, [chg("bid", "100.5", "1")]))
    assert exc.reason == "gap" and exc.fields == {"expected_seq": 2, "got_seq": 1}


def test_unknown_frames_take_sequence_numbers_and_are_reported() -> None:
    seen: list[str] = []
    s = started(on_unknown=seen.append)
    assert s.feed(b'{"type":"status","socket_sequence":1}', T0) == b""
    assert seen == ["frame:status"]
    exc = broken(s, upd(1, []))
    assert exc.fields == {"expected_seq": 2, "got_seq": 1}


@pytest.mark.parametrize("raw", [hb(0), b'{"type":"status","socket_sequence":0}'],
                         ids=["heartbeat", "unknown"])
def test_frame_zero_must_be_the_snapshot(raw: bytes) -> None:
    seen: list[str] = []
    s = V1Stream(SYM, 10, False, seen.append)
    exc = broken(s, raw)
    assert exc.reason == "invalid" and "snapshot" in exc.fields["detail"]
    assert not s.live and seen == []


# --- invalid and crossed --------------------------------------------------------------------

@pytest.mark.parametrize("before_snapshot", [True, False])
def test_invalid_frame_breaks_with_detail_and_sample(before_snapshot: bool) -> None:
    s = V1Stream(SYM, 10, False) if before_snapshot else started()
    raw = upd(0 if before_snapshot else 1, [chg("bid", "6.5e3", "1")])
    exc = broken(s, raw)
    assert exc.reason == "invalid"
    assert set(exc.fields) == {"detail", "sample"}
    assert "price" in exc.fields["detail"]
    assert exc.fields["sample"] == raw.decode()[:200]
    exc = broken(V1Stream(SYM, 10, False), b"\x00not json")
    assert exc.reason == "invalid" and exc.fields["sample"].endswith("not json")


def test_crossed_after_an_update() -> None:
    s = started()
    exc = broken(s, upd(1, [chg("bid", "101.5", "1")]))
    assert exc.reason == "crossed" and exc.fields["seq"] == 1
    assert "101.5" in exc.fields["detail"] and "101" in exc.fields["detail"]


def test_locked_book_is_crossed() -> None:
    s = started()
    s.feed(hb(1), T0)
    exc = broken(s, upd(2, [chg("ask", "100.0", "1")]))  # == best bid 100.00
    assert exc.reason == "crossed" and exc.fields["seq"] == 2


def test_crossed_only_after_the_whole_frame() -> None:
    # An update that crosses in the middle of a frame and uncrosses by its end is fine.
    s = started(depth=2, emit_every=True)
    out = s.feed(upd(1, [chg("bid", "101", "1"), chg("ask", "101", "0")]), T0)
    (rec,) = lines(out)
    assert rec["bids"] == [["101", "1"], ["100.00", "1"]]
    assert rec["asks"] == [["101.5", "4"], ["102", "6"]]


def test_crossed_snapshot() -> None:
    s = V1Stream(SYM, 10, False)
    exc = broken(s, upd(0, [chg("bid", "10", "1", "initial"), chg("ask", "9.99", "1", "initial")]))
    assert exc.reason == "crossed" and exc.fields["seq"] == 0
    assert not s.live


# --- what is written, and when ------------------------------------------------------------

def test_change_beyond_depth_writes_no_book_record_under_change() -> None:
    out = started(depth=2, emit_every=False).feed(upd(1, [chg("bid", "98", "9")]), T0)
    assert out == b""


def test_change_beyond_depth_writes_a_book_record_under_every() -> None:
    s = started(depth=2, emit_every=True)
    (rec,) = lines(s.feed(upd(1, [chg("bid", "98", "9")], event_id=77, ts=1234), T0 + 5))
    assert rec == {"type": "book", "symbol": SYM, "seq": 1, "event_id": 77, "exchange_ms": 1234,
                   "recv_ns": T0 + 5, "bids": [["100.00", "1"], ["99.5", "3"]],
                   "asks": [["101", "2"], ["101.5", "4"]]}


@pytest.mark.parametrize("emit_every", [False, True])
def test_change_in_top_writes_a_book_record(emit_every: bool) -> None:
    s = started(depth=2, emit_every=emit_every)
    (rec,) = lines(s.feed(upd(1, [chg("ask", "101", "0", "cancel")]), T0))
    assert rec["asks"] == [["101.5", "4"], ["102", "6"]]
    assert rec["bids"] == [["100.00", "1"], ["99.5", "3"]]
    # a level that moves up into the top counts: removing 101.5 brings 103 in
    (rec,) = lines(s.feed(upd(2, [chg("ask", "101.50", "0", "cancel")]), T0))
    assert rec["asks"] == [["102", "6"], ["103", "8"]]


def test_same_value_respelled_in_top_writes_the_new_text() -> None:
    s = started(depth=2)
    (rec,) = lines(s.feed(upd(1, [chg("bid", "100", "1.0")]), T0))
    assert rec["bids"][0] == ["100", "1.0"]
    assert s.feed(upd(2, [chg("bid", "100", "1.0")]), T0) == b""  # identical: no change


@pytest.mark.parametrize("emit_every", [False, True])
def test_frame_with_only_trades_writes_no_book_record(emit_every: bool) -> None:
    counts = Counts()
    s = started(emit_every=emit_every, counts=counts)
    recs = lines(s.feed(upd(1, [trade(9, "101", "0.5")]), T0))
    assert [r["type"] for r in recs] == ["trade"]
    assert counts.trades == 1 and counts.updates == 0


def test_records_follow_the_frame_order_with_the_book_last() -> None:
    s = started(depth=2, emit_every=False)
    events = [
        trade(11, "101", "0.5", "ask"),
        chg("ask", "101", "1.5", "trade"),
        {"type": "auction_result", "eid": 5, "result": "success", "auction_price": "100.5"},
        {"type": "block_trade", "tid": 12, "price": "90", "amount": "100"},
        trade(13, "100.00", "0.25", "bid"),
        chg("bid", "100.00", "0.75", "trade"),
    ]
    recs = lines(s.feed(upd(1, events, event_id=900, ts=1_700_000_000_999), T0 + 42))
    assert [(r["type"], r.get("tid"), r.get("event")) for r in recs] == [
        ("trade", 11, None), ("auction", None, "auction_result"), ("trade", 12, None),
        ("trade", 13, None), ("book", None, None)]
    assert all(r["seq"] == 1 and r["event_id"] == 900 and r["exchange_ms"] == 1_700_000_000_999
               and r["recv_ns"] == T0 + 42 and r["symbol"] == SYM for r in recs)
    assert recs[-1]["bids"] == [["100.00", "0.75"], ["99.5", "3"]]
    assert recs[-1]["asks"] == [["101", "1.5"], ["101.5", "4"]]


def test_trade_record_fields() -> None:
    s = started()
    out = s.feed(upd(1, [trade(2840141029940425, "83955.14", "0.0011912", "ask")],
                     event_id=1764559146475721, ts=1790401261620), T0 + 3)
    (rec,) = lines(out)
    assert rec == {"type": "trade", "symbol": SYM, "seq": 1, "event_id": 1764559146475721,
                   "tid": 2840141029940425, "price": "83955.14", "amount": "0.0011912",
                   "maker_side": "ask", "exchange_ms": 1790401261620, "recv_ns": T0 + 3}
    assert list(rec) == ["type", "symbol", "seq", "event_id", "tid", "price", "amount",
                         "maker_side", "exchange_ms", "recv_ns"]
    assert "block" not in rec


@pytest.mark.parametrize("maker", ["bid", "auction"])
def test_trade_record_maker_side(maker: str) -> None:
    (rec,) = lines(started().feed(upd(1, [trade(1, "100", "1", maker)]), T0))
    assert rec["maker_side"] == maker


def test_block_trade_record() -> None:
    (rec,) = lines(started().feed(
        upd(1, [{"type": "block_trade", "tid": 31, "price": "8000.00", "amount": "12"}],
            event_id=30, ts=99), T0))
    assert rec == {"type": "trade", "symbol": SYM, "seq": 1, "event_id": 30, "tid": 31,
                   "price": "8000.00", "amount": "12", "maker_side": None, "block": True,
                   "exchange_ms": 99, "recv_ns": T0}


def test_trades_in_the_snapshot_come_before_its_book_record() -> None:
    s = V1Stream(SYM, 1, False)
    recs = lines(s.feed(upd(0, [trade(4, "100", "1"), chg("bid", "99", "1", "initial")]), T0))
    assert [r["type"] for r in recs] == ["trade", "book"]
    assert recs[0]["exchange_ms"] is None and recs[0]["seq"] == 0


def test_auction_record_fields() -> None:
    fields = {"eid": 7, "result": "success", "time_ms": 1618603200000,
              "highest_bid_price": "2435.05", "lowest_ask_price": "2435.50",
              "collar_price": "2432.66", "auction_price": "2435.04",
              "auction_quantity": "8.244475"}
    (rec,) = lines(started().feed(
        upd(1, [{"type": "auction_result", **fields}], event_id=66, ts=77), T0 + 9))
    assert rec == {"type": "auction", "symbol": SYM, "seq": 1, "event_id": 66,
                   "event": "auction_result", **fields, "exchange_ms": 77, "recv_ns": T0 + 9}
    assert list(rec)[:5] == ["type", "symbol", "seq", "event_id", "event"]
    assert list(rec)[-2:] == ["exchange_ms", "recv_ns"]


def test_auction_fields_never_override_ours() -> None:
    ev = {"type": "auction_open", "symbol": "ETHUSD", "seq": 99, "event_id": 1, "event": "x",
          "exchange_ms": 5, "recv_ns": 6, "auction_open_ms": 10}
    (rec,) = lines(started().feed(upd(1, [ev], event_id=66, ts=77), T0))
    assert rec == {"type": "auction", "symbol": SYM, "seq": 1, "event_id": 66,
                   "event": "auction_open", "auction_open_ms": 10, "exchange_ms": 77,
                   "recv_ns": T0}


def test_unknown_events_are_reported_and_skipped() -> None:
    seen: list[str] = []
    counts = Counts()
    s = started(depth=2, on_unknown=seen.append, counts=counts)
    recs = lines(s.feed(upd(1, [{"type": "mystery", "x": 1}, chg("bid", "100.5", "2"),
                                {"type": "auction"}]), T0))
    assert seen == ["mystery", "auction"]
    assert [r["type"] for r in recs] == ["book"]
    assert recs[0]["bids"] == [["100.5", "2"], ["100.00", "1"]]
    assert s.feed(upd(2, [{"type": "mystery"}]), T0) == b""  # only unknown: nothing written
    assert seen == ["mystery", "auction", "mystery"]
    assert counts.updates == 1 and s.live


def test_counts_updates_and_trades_across_streams() -> None:
    counts = Counts()
    a = started(counts=counts, emit_every=False)
    a.feed(upd(1, [chg("bid", "1", "1")]), T0)                         # beyond depth: still counts
    a.feed(upd(2, [trade(1, "101", "1"), chg("ask", "101", "1")]), T0)  # trade + change
    a.feed(upd(3, [trade(2, "101", "1"), trade(3, "101", "1")]), T0)    # trades only
    a.feed(hb(4), T0)
    assert (counts.updates, counts.trades) == (2, 3)
    b = started(counts=counts)  # a second connection adds to the same totals
    b.feed(upd(1, [trade(4, "101", "1"), chg("ask", "101", "0")]), T0)
    assert (counts.updates, counts.trades) == (3, 4)


def test_output_is_whole_json_lines() -> None:
    s = started(depth=3, emit_every=True)
    out = s.feed(upd(1, [trade(1, "101", "1"), trade(2, "101", "1"), chg("ask", "101", "1")]), T0)
    assert out.count(b"\n") == 3 and out.endswith(b"\n")
    assert [r["type"] for r in lines(out)] == ["trade", "trade", "book"]


def test_non_ascii_zero_remaining_must_not_leave_a_level() -> None:
    """Bug (see test_v1.test_non_ascii_digits_are_invalid): "٠" is zero to Decimal but not to
    the book's zero check, so this "removal" leaves a level of size "٠" in the output."""
    s = started(depth=2)
    try:
        out = s.feed(upd(1, [chg("bid", "100.00", "\u0660", "cancel")]), T0)
    except StreamBroken as exc:
        assert exc.reason == "invalid"  # rejecting the frame is a correct answer
        return
    (rec,) = lines(out)
    assert rec["bids"] == [["99.5", "3"], ["98", "5"]]


# --- the C fast path ------------------------------------------------------------------------

class GeneralOnly(V1Stream):
    """A stream with the fast path off: every frame through `parse` and `_events`."""

    __slots__ = ()

    def _fast_native(self, raw: bytes, recv_ns: int) -> bytes | None:
        return None


class CountingFast(V1Stream):
    __slots__ = ("fast",)

    def _fast_native(self, raw: bytes, recv_ns: int) -> bytes | None:
        out = super()._fast_native(raw, recv_ns)
        self.fast = getattr(self, "fast", 0) + (out is not None)
        return out


@needs_native
@pytest.mark.parametrize("emit_every", [False, True])
def test_fast_path_writes_what_the_general_path_writes(emit_every: bool) -> None:
    raws = sim_frames()
    fast = CountingFast("ETHUSD", 10, emit_every, native=True)
    slow = GeneralOnly("ETHUSD", 10, emit_every, native=True)
    for i, raw in enumerate(raws):
        assert fast.feed(raw, T0 + i) == slow.feed(raw, T0 + i), i
    assert fast.fast > len(raws) // 2  # the fast path did most of the work
    assert fast.counts == slow.counts


@needs_native
@pytest.mark.parametrize("raw", EDGE_FRAMES, ids=range(len(EDGE_FRAMES)))
def test_fast_path_edge_cases_match_the_general_path(raw: bytes) -> None:
    def outcome(s: V1Stream) -> Any:
        try:
            out = s.feed(raw, T0 + 1)
        except StreamBroken as exc:
            return exc.reason, exc.fields
        assert s.book is not None
        return out, s.expected, s.counts, s.book.bids.top(10), s.book.asks.top(10)

    fast = V1Stream(SYM, 10, True, native=True)
    slow = GeneralOnly(SYM, 10, True, native=True)
    for s in (fast, slow):
        s.feed(upd(0, SNAPSHOT_EVENTS, event_id=555), T0)
    assert outcome(fast) == outcome(slow)
