"""Whole-exchange mode: the listing (names, specs, REST), the activity mix and its schedule."""

from __future__ import annotations

import asyncio
import re
from decimal import Decimal

import orjson
import pytest

from collector.sim import SimExchange, SimLimits, plan_exchange
from collector.sim.schedule import Schedule
from tests.sim.sim_helpers import http_get, recv_json, ws_connect

SYMBOL = re.compile(r"[A-Z0-9]{3,24}")  # what the collector accepts in a listing


def test_the_default_plan_has_gemini_s_shape() -> None:
    plan = plan_exchange()
    names = plan.names
    assert len(names) == 347 and len(set(names)) == 347
    assert sum(n.endswith("PERP") for n in names) == 13
    assert all(SYMBOL.fullmatch(n) for n in names)
    assert names[:3] == ["BTCUSD", "ETHUSD", "SOLUSD"]
    busy = [a for a in plan.symbols if a.busy]
    assert len(busy) == 10 and {"BTCUSD", "ETHUSD", "SOLUSD"} <= {a.symbol for a in busy}
    assert all(a.rate == 50.0 and a.depth == 2000 for a in busy)
    quiet = [a for a in plan.symbols if not a.busy]
    assert all(a.depth == 50 and 2.0 <= 1 / a.rate <= 180.0 for a in quiet)
    # Spread over the whole range, not bunched at one end.
    intervals = sorted(1 / a.rate for a in quiet)
    assert intervals[0] < 4 and intervals[-1] > 100 and 10 < intervals[len(intervals) // 2] < 40
    for a in plan.symbols:
        d = a.spec.details()
        assert d["symbol"] == a.symbol and a.symbol == a.spec.base + a.spec.quote + (
            "PERP" if a.symbol.endswith("PERP") else "")
        assert (d["product_type"] == "swap") == a.symbol.endswith("PERP")
        # The reference price lies on the price grid, the typical size on the amount grid.
        assert Decimal(a.spec.ref_price) % Decimal(a.spec.quote_increment) == 0
        assert Decimal(a.spec.typical_size) % Decimal(a.spec.tick_size) == 0


def test_plan_is_seeded_and_sized() -> None:
    assert plan_exchange(seed=1) == plan_exchange(seed=1)
    other = plan_exchange(seed=2)
    assert other.names == plan_exchange(seed=1).names  # the same listing ...
    assert other.rates != plan_exchange(seed=1).rates  # ... with other quiet intervals
    small = plan_exchange(20, busy=3, rate=7.0)
    assert len(small.names) == 20 and sum(n.endswith("PERP") for n in small.names) == 1
    assert small.busy == ["BTCUSD", "ETHUSD", "SOLUSD"] and small.rates["BTCUSD"] == 7.0
    with pytest.raises(ValueError, match="busy"):
        plan_exchange(5, busy=6)
    with pytest.raises(ValueError, match="quiet_every"):
        plan_exchange(quiet_every=(10.0, 1.0))
    with pytest.raises(ValueError, match="n must be"):
        plan_exchange(100_000)


async def test_listing_and_details_agree_on_all_347() -> None:
    async with SimExchange.whole(depth=20, quiet_depth=5, rate=None, limits=False) as sim:
        status, _, listing = await http_get(sim.host, sim.port, "/v1/symbols")
        assert status == 200 and listing == [s.lower() for s in sim.symbols]
        assert len(listing) == 347 and sum(s.endswith("perp") for s in listing) == 13
        status, _, every = await http_get(sim.host, sim.port, "/v1/symbols/details/all")
        assert status == 200 and [d["symbol"].lower() for d in every] == listing
        for sym in ("btcusd", listing[200], listing[-1]):
            status, _, one = await http_get(sim.host, sim.port, f"/v1/symbols/details/{sym}")
            assert status == 200 and one == every[listing.index(sym)]


async def test_listing_and_unlisting_while_running_keep_rest_and_sockets_coherent() -> None:
    async with SimExchange.whole(12, busy=2, rate=None, depth=20, quiet_depth=5, limits=False) as sim:
        names = sim.symbols
        kept, gone = names[:8], names[8:]
        sim.set_listed(kept)
        _, _, listing = await http_get(sim.host, sim.port, "/v1/symbols")
        assert listing == [s.lower() for s in kept]
        status, _, every = await http_get(sim.host, sim.port, "/v1/symbols/details/all")
        assert [d["symbol"] for d in every] == kept
        status, _, _ = await http_get(sim.host, sim.port, f"/v1/symbols/details/{gone[0].lower()}")
        assert status == 404
        async with ws_connect(f"{sim.current_url}/?snapshot=-1") as ws:
            await ws.send(orjson.dumps({"method": "SUBSCRIBE", "params": [f"{gone[0].lower()}@depth"],
                                        "id": 1}).decode())
            assert (await recv_json(ws))["error"]["code"] == 2  # unlisted: an invalid symbol
            sim.set_listed(names)  # listed again
            await ws.send(orjson.dumps({"method": "SUBSCRIBE", "params": [f"{gone[0].lower()}@depth"],
                                        "id": 2}).decode())
            frames = [await recv_json(ws), await recv_json(ws)]
            assert {"result": None, "id": 2} in frames
            assert any(f.get("e") == "depthUpdate" and f["s"] == gone[0] for f in frames)
        _, _, listing = await http_get(sim.host, sim.port, "/v1/symbols")
        assert listing == [s.lower() for s in names]


async def test_busy_books_move_at_their_rate_and_quiet_ones_seldom() -> None:
    sim = SimExchange.whole(30, busy=3, rate=40.0, depth=50, quiet_depth=5, quiet_every=(2.0, 20.0),
                            record_truth=False)
    await sim.start()
    try:
        plan = sim.plan
        assert plan is not None
        before = {s: st.updates for s, st in sim.stats.items()}
        loop_time = asyncio.get_running_loop().time
        t0 = loop_time()
        await sim.wait_for(lambda: loop_time() - t0 >= 3.0, timeout=5.0)
        elapsed = loop_time() - t0
        moved = {s: st.updates - before[s] for s, st in sim.stats.items()}
    finally:
        await sim.stop()
    for s in plan.busy:  # Poisson at 40/s over 3 s: about 120 each
        assert 0.6 * 40 * elapsed < moved[s] < 1.4 * 40 * elapsed, (s, moved[s])
    quiet = [s for s in plan.names if s not in plan.busy]
    # At most one update per 2 s on average each: a quiet book never makes 10 in 3 s ...
    assert all(moved[s] < 10 for s in quiet), {s: moved[s] for s in quiet}
    # ... but together they do move (about 10 expected in 3 s).
    assert sum(moved[s] for s in quiet) >= 2


def test_schedule_gives_each_symbol_its_rate() -> None:
    rates = {"A": 50.0, "B": 0.5, "C": 0.02, "D": 0.0}
    schedule = Schedule(rates, seed=1)
    counts = dict.fromkeys(rates, 0)
    now = 0.0
    while now < 20_000.0:
        now += 0.005
        for s in schedule.due(now):
            counts[s] += 1
    for s in ("A", "B", "C"):
        assert counts[s] == pytest.approx(rates[s] * now, rel=0.1), (s, counts[s])
    assert counts["D"] == 0 and len(schedule) == 3


def test_schedule_skips_a_backlog_instead_of_bursting() -> None:
    schedule = Schedule({"A": 100.0}, seed=1)
    assert len(schedule.due(1.0)) == pytest.approx(100, abs=40)
    late = schedule.due(1_000.0)  # the caller slept for 999 s
    assert len(late) <= 300  # about one second's worth, not 99,900
    nxt = schedule.next_at()
    assert nxt is not None and nxt > 1_000.0
    assert Schedule({"A": 0.0}, seed=1).next_at() is None


def test_whole_exchange_limits_default_on_and_can_be_switched() -> None:
    assert SimExchange.whole(4, busy=1, depth=5, quiet_depth=5).limits == SimLimits()
    assert SimExchange.whole(4, busy=1, depth=5, quiet_depth=5, limits=False).limits is None
    scaled = SimLimits().scaled(0.01)
    assert SimExchange.whole(4, busy=1, depth=5, quiet_depth=5, limits=scaled).limits == scaled
    assert SimExchange(["BTCUSD"]).limits is None  # off outside whole-exchange mode
    with pytest.raises(ValueError, match="no symbols"):
        SimExchange(["BTCUSD"], exchange=plan_exchange(4, busy=1))
    with pytest.raises(ValueError, match="rate"):
        SimExchange.whole(4, busy=1, rate=0.0)
