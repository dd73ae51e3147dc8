"""collector.core._fastbook (C) held to its Python reference, op by op and byte for byte.

The side against `collector.core.book.PySide` on seeded random `set` sequences over a price ladder
built to hit what the C key does differently from a Decimal (respellings of one value, values
below 1, more than 17 significant digits, integer parts of 28 to 40 digits); `change` (updates
of up to 16 changes and trades, read from the frame's bytes) against the general path, through
whole streams (`native=True` against `native=False`) on simulator frames, random frames that
respell, cross and break, edge frames, and frames with bytes broken. Skipped when the C core is
not built, unless COLLECTOR_REQUIRE_NATIVE=1 (tests/helpers/cores.py).
"""

from __future__ import annotations

import json
import random
from decimal import Decimal
from typing import Any

import orjson
import pytest

from collector.core.book import Book, PySide, fastbook
from collector.core.stream import Counts, StreamBroken
from collector.gemini.v1_stream import V1Stream
from tests.helpers.cores import needs_native
from tests.helpers.v1_frames import EDGE_FRAMES, SNAPSHOT_EVENTS, T0, chg, sim_frames, trade, upd

pytestmark = needs_native


def frag_bytes(frag: orjson.Fragment) -> bytes:
    return orjson.dumps({"x": frag})


_40 = "1234567890" * 4
_17 = "12345678901234567"
# Sorted by value below (the stream fuzz splits it between bids and asks).
PRICES = [
    # one value, four spellings; and its neighbours
    "100", "100.0", "0100.00", "100.000", "99.99", "100.5", "100.50", "101", "999.999", "1000",
    # below 1, respelled
    "0.001", "0.0010", "0.0100", "0.01", "0.1", "00.10", "0.5",
    # more than 17 significant digits, the first 17 shared (the C key holds 17)
    "12345.678901234567", "012345.6789012345670", "12345.6789012345671", "12345.6789012345679",
    "12345.67890123456700001", "12345.678901234566999", "0.12345678901234567",
    "0.123456789012345671", "0.1234567890123456700000001", "0.00000000000000000001",
    "0.000000000000000000010", "0.00000000000000000002", _17 + "1", _17 + "0.5",
    # integer parts of 28 to 40 digits (the C key holds the digit count up to 31)
    "1" + "0" * 27, "9" * 28, "1" + "0" * 30, "9" * 31, "1" + "0" * 31, "1" + "0" * 30 + "1",
    "9" * 32, "1" + "0" * 32, _17 + "0" * 13 + "9", _17 + "0" * 14 + "1", _17 + "0" * 14 + "2",
    _17 + "0" * 14 + "1.5", "9" * 39, "1" + "0" * 39, _40, "0" + _40 + ".00", _40 + ".5",
    _40[:-1] + "1", _40[:-1] + "0.00000000000000000000000000000000000001",
]
PRICES.sort(key=Decimal)
SIZES = ["1", "2.5", "2.50", "0.00000001", "10", "3", "1" + "0" * 30, "7.000"]
ZEROS = ["0", "0.00", "00", "0.0", "000.000"]


def _check_same(py: PySide, c: Any, depth: int) -> None:
    assert len(c) == len(py)
    assert c.top(depth) == py.top(depth)
    assert frag_bytes(c.top_json(depth)) == frag_bytes(py.top_json(depth))
    # by value: PySide's Decimal keeps the level's first spelling, C's its latest ("100.00")
    assert c.best() == py.best()


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("depth", [1, 3, 10])
@pytest.mark.parametrize("bids", [True, False], ids=["bids", "asks"])
def test_side_matches_pyside_op_by_op(bids: bool, depth: int, seed: int) -> None:
    assert fastbook is not None  # needs_native (pytestmark)
    rng = random.Random(f"{seed}:{bids}:{depth}")
    py, c = PySide(bids=bids), fastbook.Side(bids=bids)
    seen = {True: 0, False: 0}
    removed = 0
    prev_py, prev_c = py.top_json(depth), c.top_json(depth)
    for step in range(2000):
        r = rng.random()
        if r < 0.3 and len(py):  # a level at or near the top again
            price, size = rng.choice(py.top(depth + 1))
            if r < 0.1:  # the same value respelled, maybe the same size
                price = rng.choice([p for p in PRICES if Decimal(p) == Decimal(price)])
            elif r < 0.2:
                size = rng.choice(ZEROS + SIZES)
        else:  # anywhere on the ladder
            price = rng.choice(PRICES)
            size = rng.choice(ZEROS) if r < 0.55 else rng.choice(SIZES)
        n = len(py)
        changed = py.set(price, size, depth)
        assert c.set(price, size, depth) is changed, (step, price, size)
        seen[changed] += 1
        removed += len(py) < n
        _check_same(py, c, depth)
        now_py, now_c = py.top_json(depth), c.top_json(depth)
        # the fragment is kept until the top changes, then made anew
        assert (now_c is prev_c) is (not changed) and (now_py is prev_py) is (not changed), step
        prev_py, prev_c = now_py, now_c
        if step % 50 == 0:
            full = c.top(len(c) + 1)
            assert full == py.top(len(py) + 1), step
            values = [Decimal(p) for p, _ in full]
            assert values == sorted(set(values), reverse=bids), step
    assert seen[True] > 100 and seen[False] > 1000 and removed > 200, (seen, removed)


def test_every_ladder_price_orders_exactly_on_both_sides() -> None:
    """All of the ladder at once, against a sort by Decimal (no PySide involved)."""
    assert fastbook is not None  # needs_native (pytestmark)
    distinct: dict[Decimal, str] = {}
    for p in PRICES:
        distinct[Decimal(p)] = p  # the last spelling of each value wins, in both
    for bids in (True, False):
        rng = random.Random(bids)
        c = fastbook.Side(bids=bids)
        for p in rng.sample(PRICES, len(PRICES)):
            c.set(p, "1", 5)
        for p in distinct.values():  # the winning spelling last
            c.set(p, "2", 5)
        want = [(distinct[v], "2") for v in sorted(distinct, reverse=bids)]
        assert c.top(len(PRICES)) == want
        assert c.best() == (max if bids else min)(distinct)


@pytest.mark.parametrize("bad", [
    "", "1e3", "-1", "+1", " 1", "1 ", "1.", ".5", "1.2.3", "1,5", "\u0661", "1\u0660",
    "\uff11", "1\n", "1\x00", "nan", "Infinity", "1_000", "0x10", "é",
    "\u3131", "\u3131\u3131",  # stored as two bytes each, both "1" (0x31): text, not bytes
])
def test_non_decimal_text_is_a_value_error_and_changes_nothing(bad: str) -> None:
    assert fastbook is not None  # needs_native (pytestmark)
    side = fastbook.Side(bids=True)
    side.set("5", "1", 10)
    before = frag_bytes(side.top_json(10))
    for price, size in ((bad, "1"), (bad, "0"), ("5", bad), ("6", bad)):
        with pytest.raises(ValueError):
            side.set(price, size, 10)
    assert len(side) == 1 and frag_bytes(side.top_json(10)) == before


@pytest.mark.parametrize("bad", [1, 1.5, None, b"1", Decimal(1), ["1"]], ids=repr)
def test_non_str_is_a_type_error(bad: Any) -> None:
    assert fastbook is not None  # needs_native (pytestmark)
    side = fastbook.Side(bids=False)
    side.set("5", "1", 10)
    for price, size in ((bad, "1"), ("5", bad)):
        with pytest.raises(TypeError):
            side.set(price, size, 10)
    with pytest.raises(TypeError):
        side.set("5", "1", "10")
    with pytest.raises(ValueError):
        side.set("5", "1", -1)
    assert side.top(10) == [("5", "1")]


CROSSED_CASES = [
    ([("bid", "100"), ("ask", "100.00")], True),  # locked, another spelling
    ([("bid", "0100.0"), ("ask", "100.01")], False),
    ([("bid", "12345.6789012345671"), ("ask", "12345.678901234567")], True),
    ([("bid", "12345.678901234567"), ("ask", "12345.6789012345671")], False),
    ([("bid", _40), ("ask", "0" + _40 + ".00")], True),
    ([("bid", _40), ("ask", _40 + ".5")], False),
    ([("bid", "9" * 32), ("ask", "1" + "0" * 32)], False),
    ([("bid", "1" + "0" * 32), ("ask", "9" * 32)], True),
    ([("bid", "0.00000000000000000002"), ("ask", "0.000000000000000000010")], True),
]


@pytest.mark.parametrize("changes, want", CROSSED_CASES)
def test_crossed_is_the_same_on_both_cores(changes: list[tuple[str, str]], want: bool) -> None:
    books = Book(native=False), Book(native=True)
    for side, price in changes:
        for b in books:
            b.apply(side, price, "1", 10)
    assert [b.crossed() is not None for b in books] == [want, want]


def test_random_crossed_is_the_same_on_both_cores() -> None:
    rng = random.Random(5)
    py, c = Book(native=False), Book(native=True)
    half = len(PRICES) // 2  # bids from the lower half of the ladder, asks from the upper,
    invaders: list[tuple[str, str]] = []  # but now and then from the other half, soon removed
    crossed = 0
    for step in range(3000):
        side = rng.choice(["bid", "ask"])
        r = rng.random()
        if r < 0.05:
            price, size = rng.choice(PRICES[half:] if side == "bid" else PRICES[:half]), "1"
            invaders.append((side, price))
        elif r < 0.3 and invaders:
            (side, price), size = invaders.pop(rng.randrange(len(invaders))), rng.choice(ZEROS)
        else:
            price = rng.choice(PRICES[:half] if side == "bid" else PRICES[half:])
            size = rng.choice(ZEROS + SIZES)
        assert c.apply(side, price, size, 3) is py.apply(side, price, size, 3), step
        assert c.crossed() == py.crossed(), step
        crossed += py.crossed() is not None
    assert 100 < crossed < 2900, crossed


# --- whole Streams: native=True against native=False ---------------------------------------------
# The native V1Stream fast path is `fastbook.change`, which reads updates of up to 16 changes and
# trades from their bytes; the Python core takes every frame through the general path.

class Latencies(list[int]):
    """A Counts.latency that records what it is given."""

    def observe(self, value: int) -> None:
        self.append(value)


class Recorded(V1Stream):
    """A V1Stream that keeps its unknown kinds and counts the frames its fast path took."""

    __slots__ = ("fast", "unknown")

    def __init__(self, symbol: str, depth: int, emit_every: bool, native: bool) -> None:
        self.unknown: list[str] = []
        self.fast = 0
        super().__init__(symbol, depth, emit_every, self.unknown.append,
                         Counts(latency=Latencies()), native)

    def _fast_native(self, raw: bytes, recv_ns: int) -> bytes | None:
        out = super()._fast_native(raw, recv_ns)
        self.fast += out is not None
        return out


def _streams(symbol: str, depth: int, emit_every: bool) -> tuple[Recorded, Recorded]:
    return (Recorded(symbol, depth, emit_every, native=True),
            Recorded(symbol, depth, emit_every, native=False))


def _outcome(s: V1Stream, raw: bytes, recv_ns: int) -> Any:
    try:
        return s.feed(raw, recv_ns)
    except StreamBroken as exc:
        return exc.reason, exc.fields


def _same_state(c: Recorded, py: Recorded) -> None:
    assert c.expected == py.expected
    assert (c.counts.updates, c.counts.trades) == (py.counts.updates, py.counts.trades)
    assert c.counts.latency == py.counts.latency
    assert c.unknown == py.unknown
    assert (c.book is None) == (py.book is None)
    if c.book is not None and py.book is not None:
        assert fastbook is not None  # needs_native (pytestmark)
        assert type(c.book.bids) is fastbook.Side and type(py.book.bids) is PySide
        for a, b in ((c.book.bids, py.book.bids), (c.book.asks, py.book.asks)):
            assert a.top(len(b) + 1) == b.top(len(b) + 1)


@pytest.mark.parametrize("emit_every", [False, True], ids=["change", "every"])
@pytest.mark.parametrize("depth", [1, 10])
def test_streams_write_the_same_bytes_on_simulator_frames(depth: int, emit_every: bool) -> None:
    c, py = _streams("ETHUSD", depth, emit_every)
    raws = sim_frames()
    written = 0
    for i, raw in enumerate(raws):
        out = c.feed(raw, T0 + i)
        assert out == py.feed(raw, T0 + i), i
        written += len(out)
    _same_state(c, py)
    assert c.fast > len(raws) * 3 // 4 and written > 100_000  # the C fast path did most of it
    assert c.counts.trades > 100


class RandomFrames:
    """Random v1 frames over the ladder: bids from its lower 60%, asks from its upper 60%, so
    the book crosses now and then. Most frames are a single change (with odd timestamps);
    others hold several changes and trades (up to the C path's 16 events, or one more), or
    trades only, or an event only the general path takes, or are heartbeats."""

    def __init__(self, seed: str) -> None:
        self.rng = random.Random(seed)
        cut = len(PRICES) * 6 // 10
        self.lower, self.upper = PRICES[:cut], PRICES[-cut:]

    def snapshot(self) -> bytes:
        rng, half = self.rng, len(self.lower) // 2
        events = [chg("bid", p, "1", "initial") for p in rng.sample(self.lower[:half], 5)]
        events += [chg("ask", p, "1", "initial") for p in rng.sample(self.upper[-half:], 5)]
        return upd(0, events)

    def change(self) -> dict[str, Any]:
        rng = self.rng
        side = rng.choice(["bid", "ask"])
        size = rng.choice(ZEROS) if rng.random() < 0.35 else rng.choice(SIZES)
        return chg(side, rng.choice(self.lower if side == "bid" else self.upper), size)

    def trade(self) -> dict[str, Any]:
        rng = self.rng
        tid = rng.choice([rng.randrange(10**15), 2**63 - 1, 0])
        return trade(tid, rng.choice(PRICES + ["0"]), rng.choice(SIZES),
                     rng.choice(["bid", "ask", "auction"]))

    def frame(self, seq: int) -> bytes:
        rng = self.rng
        r = rng.random()
        if r < 0.6:
            ts = rng.choice([1_700_000_000_000 + seq, 0, -seq])
            return upd(seq, [self.change()], ts=ts)
        if r < 0.75:
            return upd(seq, [self.change() for _ in range(rng.randint(2, 4))])
        if r < 0.85:
            n = rng.randint(2, 17)
            return upd(seq, [self.trade() if rng.random() < 0.3 else self.change()
                             for _ in range(n)])
        if r < 0.9:
            return upd(seq, [self.trade() for _ in range(rng.randint(1, 3))])
        if r < 0.95:
            other: dict[str, Any] = rng.choice([
                {"type": "block_trade", "tid": 7, "price": "100", "amount": "5"},
                {"type": "auction_result", "eid": 5, "result": "success"},
                {"type": "mystery"},
            ])
            events = [self.change(), self.trade(), other]
            rng.shuffle(events)
            return upd(seq, events)
        return orjson.dumps({"type": "heartbeat", "socket_sequence": seq})


@pytest.mark.parametrize("emit_every", [False, True], ids=["change", "every"])
@pytest.mark.parametrize("depth", [1, 3, 10])
def test_streams_agree_on_random_frames_that_respell_and_cross(depth: int, emit_every: bool) -> None:
    gen = RandomFrames(f"{depth}:{emit_every}")
    streams: tuple[Recorded, Recorded] | None = None
    outcomes = {"bytes": 0, "empty": 0, "crossed": 0}
    fast = trades = 0
    for i in range(2500):
        if streams is None or gen.rng.random() < 0.002:  # a new connection, crossed or not
            if streams is not None:
                fast, trades = fast + streams[0].fast, trades + streams[0].counts.trades
            streams = _streams("BTCUSD", depth, emit_every)
            raw = gen.snapshot()
        else:
            raw = gen.frame(streams[0].expected)
        c, py = streams
        got = _outcome(c, raw, T0 + i)
        assert got == _outcome(py, raw, T0 + i), (i, raw)
        _same_state(c, py)
        if type(got) is tuple:
            assert got[0] == "crossed", got
            outcomes["crossed"] += 1
            fast, trades = fast + c.fast, trades + c.counts.trades
            streams = None
            continue
        outcomes["bytes" if got else "empty"] += 1
    assert outcomes["crossed"] >= 5 and outcomes["bytes"] > 500, outcomes
    assert emit_every or outcomes["empty"] > 100, outcomes
    assert fast > 1500 and trades > 200, (fast, trades)


def _edge(msg: dict[str, Any]) -> bytes:
    """An update frame, with ints beyond what orjson writes (the stdlib's json does)."""
    return json.dumps({"type": "update", "socket_sequence": 1, "eventId": 5, "timestampms": 5,
                       "events": [chg("bid", "100.5", "1")], **msg}).encode()


def _tr(**kw: Any) -> dict[str, Any]:
    return {**trade(9, "100.25", "0.5", "bid"), **kw}


BIG_FRAMES = [
    _edge({"eventId": 2**63 - 1}),    # the largest the C path writes itself
    _edge({"eventId": 2**63}),        # beyond: the C path falls back, same record
    _edge({"eventId": 2**64 - 1}),
    _edge({"eventId": 2**64}),        # orjson reads a float: invalid either way
    _edge({"eventId": 10**40}),
    _edge({"eventId": -(2**63)}),
    _edge({"eventId": -(2**63) - 1}),
    _edge({"socket_sequence": 2**63 + 1}),
    _edge({"socket_sequence": 2**64 + 1}),
    _edge({"socket_sequence": 1 - 2**64}),
    _edge({"timestampms": 2**63}),
    _edge({"timestampms": 2**64 - 1}),
    _edge({"timestampms": 2**64}),
    _edge({"timestampms": -1}),
    _edge({"timestampms": -(2**63)}),
    _edge({"timestampms": -(2**63) - 1}),
    _edge({"timestampms": 0}),
    _edge({"events": [chg("ask", _40 + ".5", "1")]}),
    _edge({"events": [chg("bid", "0100.500", "0.0")]}),
    _edge({"events": [chg("bid", "99.5", "1.0")]}),    # below the top of 1, in the top of 10
    _edge({"events": [chg("ask", "101.0", "2")]}),      # the same size, the price respelled
    _edge({"events": [chg("ask", "101", "2")]}),        # nothing changes
    _edge({"events": [chg("ask", "100.00", "1")]}),     # locked: crossed
    _edge({"events": [chg("ask", "\u0661\u0660\u0662", "1")]}),
    _edge({"events": [chg("bid", "100.5", "\u0660")]}),
    _edge({"events": [chg("bid", "\u3131\u3131", "1")]}),  # each char's two bytes are "1"
    _edge({"events": [chg("bid", "100.5", "\u3131")]}),
    _edge({"events": [{**chg("bid", "100.5", "1"), "side": "BID"}]}),
    _edge({"events": [chg("bid", "100.5", "1")] * 2}),
    _edge({"events": [chg("bid", "100.5", "1"), chg("bid", "100.50", "0")]}),  # in and out
    _edge({"events": [chg("bid", "101", "1"), chg("ask", "101", "0")]}),  # crosses, uncrosses
    _edge({"events": [[]]}),
    _edge({"events": {}}),
    # trades, alone and with changes
    _edge({"events": [_tr()]}),
    _edge({"events": [_tr(), chg("bid", "100.5", "1"), _tr(tid=10, makerSide="ask")]}),
    _edge({"events": [_tr(makerSide="auction"), chg("bid", "98", "0")]}),
    _edge({"events": [chg("ask", "100", "1"), _tr()]}),  # crossed, with a trade
    _edge({"events": [_tr(tid=2**63 - 1), _tr(tid=0), _tr(tid=-(2**63))]}),
    _edge({"events": [_tr(tid=2**63)]}),
    _edge({"events": [_tr(tid=2**64 - 1)]}),
    _edge({"events": [_tr(tid=2**64)]}),
    _edge({"events": [_tr(tid=-1), chg("bid", "100.5", "1")]}),
    _edge({"events": [_tr(tid=True)]}),
    _edge({"events": [_tr(tid="9")]}),
    _edge({"events": [_tr(makerSide="BID")]}),
    _edge({"events": [_tr(makerSide=None)]}),
    _edge({"events": [{k: v for k, v in _tr().items() if k != "makerSide"}]}),
    _edge({"events": [_tr(price="1e3")]}),
    _edge({"events": [_tr(price="0")]}),
    _edge({"events": [_tr(price=100)]}),
    _edge({"events": [_tr(amount="")]}),
    _edge({"events": [_tr(amount="\u0661")]}),
    _edge({"events": [_tr(amount="\u3131")]}),
    _edge({"events": [_tr(price=_40 + ".000", amount="0.00000001")]}),
    _edge({"events": [_tr(type="block_trade"), chg("bid", "100.5", "1")]}),
    _edge({"events": [chg("bid", "100.5", "1"), {"type": "auction_open", "x": 1}]}),
    _edge({"events": [{"type": "mystery"}, chg("bid", "100.5", "1"), _tr()]}),
    _edge({"events": [{"type": 5}, chg("bid", "100.5", "1")]}),
    # as many events as the C path takes, and one more
    _edge({"events": [_tr(tid=i) if i % 2 else chg("bid", f"{80 + i}.5", "1") for i in range(16)]}),
    _edge({"events": [_tr(tid=i) if i % 2 else chg("bid", f"{80 + i}.5", "1") for i in range(17)]}),
    _edge({"events": [chg("ask", f"{200 + i}", "1") for i in range(16)]}),
    _edge({"events": [chg("ask", f"{200 + i}", "1") for i in range(17)]}),
]


@pytest.mark.parametrize("depth", [1, 10])
@pytest.mark.parametrize("raw", EDGE_FRAMES + BIG_FRAMES, ids=range(len(EDGE_FRAMES + BIG_FRAMES)))
def test_streams_agree_on_edge_frames(raw: bytes, depth: int) -> None:
    c, py = _streams("BTCUSD", depth, True)
    for s in (c, py):
        s.feed(upd(0, SNAPSHOT_EVENTS, event_id=555), T0)
    assert _outcome(c, raw, T0 + 1) == _outcome(py, raw, T0 + 1)
    _same_state(c, py)


@pytest.mark.parametrize("symbol", ['A"B', "A\\B", "\u00e9\n\u2028\x7f"])
def test_streams_agree_on_a_symbol_that_needs_escaping(symbol: str) -> None:
    c, py = _streams(symbol, 2, False)
    frames = [upd(0, SNAPSHOT_EVENTS, event_id=555), upd(1, [chg("bid", "100.5", "1")]),
              upd(2, [trade(3, "101", "1"), chg("ask", "101", "0")]), upd(3, [chg("bid", "1", "1")])]
    out = [c.feed(raw, T0 + i) for i, raw in enumerate(frames)]
    assert out == [py.feed(raw, T0 + i) for i, raw in enumerate(frames)]
    assert c.fast == 3 and out[3] == b""
    records = [orjson.loads(line) for o in out for line in o.splitlines()]
    assert [(r["type"], r["symbol"]) for r in records] == [
        ("book", symbol), ("book", symbol), ("trade", symbol), ("book", symbol)]
    assert out[1].startswith(b'{"type":"book","symbol":' + orjson.dumps(symbol) + b',"seq":1,')


_BASE = {"type": "update", "socket_sequence": 1, "eventId": 5, "timestampms": 5,
         "events": [chg("bid", "100.5", "1")]}
_COMPACT = orjson.dumps(_BASE)


@pytest.mark.parametrize("raw, taken", [
    # the C path reads integers of up to 18 digits itself; longer ones are the general path's
    (_edge({"eventId": 10**18 - 1}), True),
    (_edge({"eventId": 10**18}), False),
    (_edge({"eventId": 2**63 - 1}), False),
    (_edge({"timestampms": -(10**18 - 1)}), True),
    (_edge({"timestampms": -(2**63)}), False),
    (_edge({"timestampms": None}), False),
    (_edge({"events": [_tr(), _tr(tid=10**18 - 1)]}), True),
    (_edge({"events": [_tr(tid=2**63 - 1)]}), False),
    (_edge({"events": [_tr(type="block_trade")]}), False),
    (_edge({"events": [_tr(tid=i) if i % 2 else chg("bid", f"{80 + i}.5", "1") for i in range(16)]}), True),
    (_edge({"events": [_tr(tid=i) if i % 2 else chg("bid", f"{80 + i}.5", "1") for i in range(17)]}), False),
    (_edge({"events": []}), False),
    # what the C reader takes: compact or spaced, keys in any order, unknown simple values
    (_COMPACT, True),
    (json.dumps(_BASE, indent=2).encode(), True),
    (b" \t\r\n" + _COMPACT + b"\n ", True),
    (orjson.dumps(dict(reversed(_BASE.items()))), True),
    (_edge({"timestamp": 5, "x": True, "y": False, "z": None, "w": "", "v": -0}), True),
    (_edge({"events": [{**chg("bid", "100.5", "1"), "delta": "0.5", "reason": "place"}]}), True),
    # what it leaves to the general path (the same records come out)
    (_COMPACT.replace(b'"place"', '"pl\u00e4ce"'.encode()), False),  # non-ASCII
    (_COMPACT.replace(b'"place"', b'"pl\\u0061ce"'), False),  # an escape
    (_COMPACT.replace(b'"type":"update"', b'"t\\u0079pe":"update"'), False),  # in a key
    (_COMPACT.replace(b'"remaining":"1"', b'"remaining":"1","remaining":"2"'), False),
    (_COMPACT.replace(b'"eventId":5', b'"eventId":5,"eventId":6'), False),
    (_COMPACT.replace(b'"side":"bid"', b'"side":"ask","side":"bid"'), False),
    (_edge({"x": 1.5}), False),
    (_edge({"x": 1e3}), False),
    (_edge({"x": [1]}), False),
    (_edge({"x": {}}), False),
    (_edge({"events": [{**chg("bid", "100.5", "1"), "x": [1]}]}), False),
    (_COMPACT + b"x", False),  # not JSON: invalid either way
    (_COMPACT[:-1], False),
    (_COMPACT.replace(b'"eventId":5', b'"eventId":05'), False),
    (_COMPACT.replace(b'"eventId":5', b'"eventId":\x005'), False),  # a NUL is not whitespace
    (_COMPACT.replace(b'"eventId":5', b'"eventId":+5'), False),
    (_COMPACT.replace(b'"eventId":5', b'"eventId":5.'), False),
    (_COMPACT.replace(b"[", b"[,"), False),
    (_COMPACT.replace(b"}]", b"},]"), False),
    (_COMPACT.replace(b"}]", b"}],"), False),
    (_COMPACT.replace(b'"type":"update"', b'"type":"update",'), False),
    (b"[" + _COMPACT + b"]", False),
    (b"\x0c" + _COMPACT, False),  # a form feed is not JSON whitespace
])
def test_which_frames_the_c_path_takes(raw: bytes, taken: bool) -> None:
    """The differential tests hold whatever the C path takes to the Python records; this
    holds it to taking the common frames (and leaving the rest to the general path)."""
    c, py = _streams("BTCUSD", 10, True)
    for s in (c, py):
        s.feed(upd(0, SNAPSHOT_EVENTS, event_id=555), T0)
    assert _outcome(c, raw, T0 + 1) == _outcome(py, raw, T0 + 1)
    assert c.fast == taken


_JSON_BYTES = b' \t\n"\\,:{}[]0123456789-+.eE' + "\u00e4".encode() + b"\x00\x7f\xff"


def _mutate(raw: bytes, rng: random.Random) -> bytes:
    """One to three byte edits: insert, delete or replace, mostly with bytes JSON cares about."""
    b = bytearray(raw)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(b) + 1)
        new = bytes([rng.choice(_JSON_BYTES)]) if rng.random() < 0.8 else rng.randbytes(1)
        op = rng.random()
        if op < 0.4 or i == len(b):
            b[i:i] = new
        elif op < 0.7:
            del b[i]
        else:
            b[i:i + 1] = new
    return bytes(b)


@pytest.mark.parametrize("seed", range(4))
def test_streams_agree_on_frames_with_bytes_broken(seed: int) -> None:
    """The C reader against orjson and the general path: frames the fuzz generator makes,
    each with a few bytes inserted, deleted or replaced, most of them breaking the JSON
    and some only respelling it. Whatever the outcome (records, invalid, gap), it is the
    same on both cores."""
    gen, rng = RandomFrames(f"bytes:{seed}"), random.Random(seed)
    outcomes: dict[str, int] = {"fast": 0, "same": 0, "broken": 0}
    for i in range(2000):
        c, py = _streams("BTCUSD", 5, True)
        for s in (c, py):
            s.feed(upd(0, SNAPSHOT_EVENTS, event_id=555), T0)
        raw = _mutate(gen.frame(1), rng)
        got = _outcome(c, raw, T0 + i)
        assert got == _outcome(py, raw, T0 + i), raw
        _same_state(c, py)
        outcomes["fast" if c.fast else "broken" if type(got) is tuple else "same"] += 1
    # the edits leave enough frames valid that the C reader takes some and declines others
    assert outcomes["fast"] > 50 and outcomes["same"] > 50 and outcomes["broken"] > 1000, outcomes


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("bids", [True, False], ids=["bids", "asks"])
def test_load_matches_pyside(bids: bool, seed: int) -> None:
    """load() on the ladder (respellings, > 17 digits, long integer parts), in any order."""
    assert fastbook is not None  # needs_native (pytestmark)
    rng = random.Random(f"load:{seed}:{bids}")
    for n in (0, 1, 10, len(PRICES), 5 * len(PRICES)):
        levels = [(rng.choice(PRICES), rng.choice(ZEROS if rng.random() < 0.2 else SIZES))
                  for _ in range(n)]
        for order in (levels, sorted(levels, key=lambda lv: Decimal(lv[0])),
                      sorted(levels, key=lambda lv: Decimal(lv[0]), reverse=True)):
            for depth in (1, 5, len(PRICES) + 1):  # a side's top_json is for one depth
                py, c = PySide(bids=bids), fastbook.Side(bids=bids)
                py.load(order)
                c.load(order)
                _check_same(py, c, depth)


@pytest.mark.parametrize("bad", [[("1", "x")], [("1",)], [("1", "2", "3")], [(1, "2")], [None], 5,
                                 [("1", "1"), ("-1", "1")]])
def test_load_refuses_bad_levels_and_changes_nothing(bad: Any) -> None:
    assert fastbook is not None  # needs_native (pytestmark)
    c = fastbook.Side(bids=True)
    c.set("5", "1", 10)
    with pytest.raises((TypeError, ValueError)):
        c.load(bad)
    assert c.top(10) == [("5", "1")]


def test_load_of_a_deep_best_first_snapshot_is_fast() -> None:
    """400,000 levels best first: set() would insert each at the front, O(n^2)."""
    assert fastbook is not None  # needs_native (pytestmark)
    import time

    levels = [(f"{100_000 - i / 100:.2f}", "1") for i in range(400_000)]
    c = fastbook.Side(bids=True)
    started = time.perf_counter()
    c.load(levels)
    assert time.perf_counter() - started < 1.0
    assert len(c) == 400_000 and c.top(1) == [("100000.00", "1")]
