"""The pure market: determinism, book invariants, event shapes, rendering, fault specs."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from collector.sim.faults import Fault, FaultKind, parse_fault_spec
from collector.sim.market import FlowParams, IdSource, Market, Update
from collector.sim.symbols import BUILTIN, Scale, spec_for
from tests.sim.sim_helpers import DictBook


def _market(symbol: str = "BTCUSD", seed: int = 7, depth: int = 100, **flow: Any) -> Market:
    return Market(spec_for(symbol), seed, depth, IdSource(10**15), IdSource(2 * 10**15),
                  FlowParams(**flow) if flow else None)


def _run(m: Market, n: int) -> list[Update]:
    return [m.step(1_700_000_000_000 + i) for i in range(n)]


def test_same_seed_same_sequence() -> None:
    a = [(u.event_id, u.events, u.changes) for u in _run(_market(seed=3), 2000)]
    b = [(u.event_id, u.events, u.changes) for u in _run(_market(seed=3), 2000)]
    c = [(u.event_id, u.events, u.changes) for u in _run(_market(seed=4), 2000)]
    assert a == b
    assert a != c


@pytest.mark.parametrize("symbol", ["BTCUSD", "ETHUSD", "SOLUSD", "SHIBUSD", "SOLUSDCPERP", "FOOBARUSD"])
def test_book_invariants_over_thousands_of_events(symbol: str) -> None:
    depth = 200
    m = _market(symbol, depth=depth)
    replay = DictBook()
    p, a = m.spec.price_scale.render, m.spec.amount_scale.render
    for x, u in m.bids.top():
        replay.bids[p(x)] = a(u)
    for x, u in m.asks.top():
        replay.asks[p(x)] = a(u)
    last_id = m.event_id
    for upd in _run(m, 5000):
        best_bid, best_ask = m.best_bid(), m.best_ask()
        assert best_bid is not None and best_ask is not None and best_bid < best_ask
        assert 0.85 * depth <= len(m.bids) <= 1.1 * depth
        assert 0.85 * depth <= len(m.asks) <= 1.1 * depth
        assert upd.event_id > last_id
        last_id = upd.event_id
        for ev in upd.events:
            replay.apply(ev)
    # The published events alone rebuild the market's own book exactly.
    assert replay.top() == ([[p(x), a(u)] for x, u in m.bids.top()],
                            [[p(x), a(u)] for x, u in m.asks.top()])


@pytest.mark.parametrize("symbol", ["BTCUSD", "SOLUSDCPERP", "SHIBUSD"])
def test_prices_and_amounts_on_the_grid(symbol: str) -> None:
    m = _market(symbol, block_trade=0.05, auction=0.02)
    qinc = Decimal(m.spec.quote_increment)
    tinc = Decimal(m.spec.tick_size)
    for upd in _run(m, 3000):
        for ev in upd.events:
            for key in ("price", "highest_bid_price", "lowest_ask_price", "auction_price",
                        "indicative_price"):
                if key in ev:
                    assert Decimal(ev[key]) % qinc == 0, (key, ev)
            for key in ("amount", "remaining", "delta", "auction_quantity", "indicative_quantity"):
                if key in ev:
                    assert Decimal(ev[key]) % tinc == 0, (key, ev)
            for key in ("price", "amount", "remaining", "delta"):
                if key in ev:
                    assert "e" not in ev[key].lower()  # plain decimal strings, no exponent


def test_change_events_are_consistent() -> None:
    m = _market()
    levels: dict[tuple[str, str], Decimal] = {}
    for x, u in m.bids.top():
        levels["bid", m.price(x)] = Decimal(m.amount(u))
    for x, u in m.asks.top():
        levels["ask", m.price(x)] = Decimal(m.amount(u))
    reasons = set()
    for upd in _run(m, 3000):
        for ev in upd.events:
            if ev["type"] != "change":
                continue
            reasons.add(ev["reason"])
            key = (ev["side"], ev["price"])
            old = levels.get(key, Decimal(0))
            assert Decimal(ev["remaining"]) == old + Decimal(ev["delta"])
            assert Decimal(ev["remaining"]) >= 0 and Decimal(ev["delta"]) != 0
            if ev["reason"] == "place":
                assert Decimal(ev["delta"]) > 0
            else:
                assert Decimal(ev["delta"]) < 0
            levels[key] = Decimal(ev["remaining"])
            if levels[key] == 0:
                assert ev["remaining"] == "0"
                del levels[key]
    assert reasons == {"place", "cancel", "trade"}


def test_each_trade_is_followed_by_its_change() -> None:
    m = _market()
    trades = 0
    for upd in _run(m, 4000):
        evs = upd.events
        if upd.kind != "trade":
            assert all(e["type"] != "trade" or e["makerSide"] == "auction" for e in evs)
            continue
        assert len(evs) % 2 == 0
        for trade, change in zip(evs[::2], evs[1::2], strict=True):
            trades += 1
            assert trade["type"] == "trade" and change["type"] == "change"
            assert change["reason"] == "trade"
            assert change["side"] == trade["makerSide"]
            assert change["price"] == trade["price"]
            assert Decimal(change["delta"]) == -Decimal(trade["amount"])
            assert trade["tid"] != upd.event_id
        # A sweep walks away from the touch: bids downwards, asks upwards.
        prices = [Decimal(e["price"]) for e in evs[::2]]
        assert prices == sorted(prices, reverse=evs[0]["makerSide"] == "bid")
    assert trades > 100


def test_block_trades_and_auctions() -> None:
    m = _market(block_trade=0.05, auction=0.02)
    seen: list[str] = []
    blocks = 0
    for upd in _run(m, 3000):
        types = [e["type"] for e in upd.events]
        if upd.kind == "block_trade":
            assert types == ["block_trade"] and upd.changes == []
            ev = upd.events[0]
            assert set(ev) == {"type", "tid", "price", "amount"}
            blocks += 1
        if upd.kind == "auction":
            assert upd.changes == []
            seen.append(types[0])
            ev = upd.events[0]
            if types[0] == "auction_open":
                assert set(ev) == {"type", "auction_open_ms", "auction_time_ms",
                                   "first_indicative_ms", "last_cancel_time_ms"}
            else:
                assert ev["eid"] == upd.event_id
                assert ev["result"] in ("success", "failure")
            if types[0] == "auction_result" and ev["result"] == "success":
                assert upd.events[1]["type"] == "trade" and upd.events[1]["makerSide"] == "auction"
    assert blocks > 50
    # Episodes run open -> indicative x2 -> result.
    text = ",".join(seen)
    assert "auction_open,auction_indicative,auction_indicative,auction_result" in text


def test_shared_id_sources_interleave_markets() -> None:
    ids, tids = IdSource(100), IdSource(10**6)
    a = Market(spec_for("BTCUSD"), 1, 20, ids, tids)
    b = Market(spec_for("ETHUSD"), 1, 20, ids, tids)
    got = [m.step(0).event_id for _ in range(50) for m in (a, b)]
    assert got == sorted(got) and len(set(got)) == len(got)


def test_top_of_book_changes_follow_the_touch() -> None:
    m = _market()

    def touch() -> dict[str, list[str]]:
        bids, asks = m.bids.top(1), m.asks.top(1)
        return {"bid": [m.price(bids[0][0]), m.amount(bids[0][1])],
                "ask": [m.price(asks[0][0]), m.amount(asks[0][1])]}

    moves = 0
    for i in range(2000):
        before = touch()
        upd = m.step(i)
        after = touch()
        changed = {side for side in ("bid", "ask") if before[side] != after[side]}
        assert {ev["side"] for ev in upd.tob} == changed
        for ev in upd.tob:
            assert "delta" not in ev and ev["reason"] == "top-of-book"
            assert [ev["price"], ev["remaining"]] == after[ev["side"]]
        moves += bool(changed)
    assert moves > 200


@pytest.mark.parametrize(("inc", "n", "trimmed", "fixed"), [
    ("0.01", 6000050, "60000.5", "60000.50"),
    ("0.01", 0, "0", "0.00"),
    ("0.00000001", -2441407, "-0.02441407", "-0.02441407"),
    ("0.005", 29303, "146.515", "146.515"),
    ("0.5", 120001, "60000.5", "60000.5"),
    ("0.5", 120000, "60000", "60000.0"),
    ("1", 42, "42", "42"),
    ("10", 42, "420", "420"),
    ("0.000000001", 20783, "0.000020783", "0.000020783"),
])
def test_scale_rendering(inc: str, n: int, trimmed: str, fixed: str) -> None:
    s = Scale(Decimal(inc))
    assert s.render(n) == trimmed
    assert s.render_fixed(n) == fixed
    assert s.to_units(trimmed) == n


def test_symbol_specs() -> None:
    assert spec_for("btcusd") is BUILTIN["BTCUSD"]
    generic = spec_for("ABCUSDT")
    assert (generic.base, generic.quote, generic.product_type) == ("ABC", "USDT", "spot")
    perp = spec_for("XYZUSDCPERP")
    assert (perp.base, perp.quote, perp.product_type) == ("XYZ", "USDC", "swap")
    with pytest.raises(ValueError):
        spec_for("not a symbol")
    with pytest.raises(ValueError):
        Scale(Decimal(0))
    with pytest.raises(ValueError):
        Scale(Decimal("0.01")).to_units("1.001")


def test_fault_spec_parsing() -> None:
    assert parse_fault_spec("") == {}
    assert parse_fault_spec(" gap=0.001, garbage=0.5 ,close=0 ") == {
        FaultKind.GAP: 0.001, FaultKind.GARBAGE: 0.5, FaultKind.CLOSE: 0.0}
    for bad, msg in [("gap", "KIND=PROBABILITY"), ("bogus=0.1", "unknown kind"),
                     ("gap=x", "not a number"), ("gap=1.5", "probability"),
                     ("gap=0.1,gap=0.2", "twice")]:
        with pytest.raises(ValueError, match=msg):
            parse_fault_spec(bad)


def test_fault_params_are_validated() -> None:
    assert Fault.make("refuse").params == {"count": 1, "retry_after": 1, "status": 429}
    assert Fault.make("slow_snapshot", delay=0.5).params == {"delay": 0.5}
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault.make("explode")
    with pytest.raises(ValueError, match="no parameter"):
        Fault.make("gap", count=2)
    with pytest.raises(ValueError, match="429 or 503"):
        Fault.make("refuse", status=500)
