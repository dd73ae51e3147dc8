"""End to end on Gemini's current API, what only it has: in-place repair by re-subscribing,
a snapshot timeout after a reconnect. The shared suite is tests/test_feed.py."""

from __future__ import annotations

import pytest

from collector.sim import SimExchange
from tests.e2e import check_against_truth, make_config, read_records, reasons, running, wait_until

SYMBOLS = ["BTCUSD", "ETHUSD"]
CUR = {"api": "current", "ping_interval_s": 0.1, "ping_timeout_s": 0.2}


@pytest.fixture
async def sim():
    async with SimExchange(SYMBOLS, seed=7, rate=300.0, depth=300, listed=["QUIETUSD"],
                           ping_interval=0.2) as s:
        yield s


def check(sim, recs, symbol):
    return check_against_truth(sim, recs, symbol, api="current")


# The shared suite (tests/test_feed.py, `api` fixture) runs every fault on this API too;
# what is particular here is the repair of a gap or a crossed book on the same socket.
@pytest.mark.parametrize("fault, reason", [("gap", "gap"), ("crossed", "crossed")])
async def test_gap_and_crossed_are_repaired_by_resubscribing(sim, tmp_path, fault, reason):
    cfg = make_config(sim.current_url, tmp_path, SYMBOLS, feed=CUR)
    async with running(cfg) as app:
        btc = app.feeds["BTCUSD"]
        eth = app.feeds["ETHUSD"]
        await wait_until(lambda: btc.stats.live and btc.stats.updates >= 50)
        eth_connects = eth.stats.connects
        sim.inject("BTCUSD", fault)
        await wait_until(lambda: btc.stats.resyncs[reason] >= 1, what=f"{reason} resync")
        after = btc.stats.updates
        await wait_until(lambda: btc.stats.live and btc.stats.updates >= after + 50, what="healed")
    recs = read_records(tmp_path, "BTCUSD")
    assert reasons(recs) == ["start", reason]
    check(sim, recs, "BTCUSD")
    assert reasons(read_records(tmp_path, "ETHUSD")) == ["start"]
    assert eth.stats.connects == eth_connects  # other symbols undisturbed
    assert btc.stats.connects == 1  # repaired on the same socket


async def test_refused_and_slow_snapshot(sim, tmp_path):
    cfg = make_config(sim.current_url, tmp_path, ["BTCUSD"], feed={**CUR, "snapshot_timeout_s": 0.3})
    sim.inject("BTCUSD", "refuse", count=1, retry_after=0)
    async with running(cfg) as app:
        btc = app.feeds["BTCUSD"]
        await wait_until(lambda: btc.stats.live and btc.stats.updates >= 20)
        sim.inject("BTCUSD", "slow_snapshot", delay=1.0)
        sim.inject("BTCUSD", "close")
        await wait_until(lambda: btc.stats.resyncs["snapshot_timeout"] >= 1)
        after = btc.stats.updates
        await wait_until(lambda: btc.stats.live and btc.stats.updates >= after + 20)
    recs = read_records(tmp_path, "BTCUSD")
    assert reasons(recs)[:2] == ["start", "refused"] and "closed" in reasons(recs)
    check(sim, recs, "BTCUSD")
