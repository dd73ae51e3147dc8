"""End to end on Gemini's current API, what only it has: in-place repair by re-subscribing
(or reconnecting, feed.repair), a snapshot timeout after a reconnect, a quiet book silent
for as long as real ones are. The shared suite is tests/runtime/test_feed.py."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import ClientConnection

from collector.sim import SimExchange
from tests.helpers.e2e import check_against_truth, make_config, read_records, reasons, running, wait_until

SYMBOLS = ["BTCUSD", "ETHUSD"]
CUR = {"api": "current", "ping_interval_s": 0.1, "ping_timeout_s": 0.2}


@pytest.fixture
async def sim(make_sim):
    return await make_sim(symbols=SYMBOLS, seed=7, rate=300.0, depth=300, listed=["QUIETUSD"],
                          ping_interval=0.2)


def check(sim, recs, symbol):
    return check_against_truth(sim, recs, symbol, api="current")


# The shared suite (tests/runtime/test_feed.py, `api` fixture) runs every fault on this API too;
# what is particular here is the repair of a gap or a crossed book: on the same socket
# (feed.repair = "resubscribe"), or on a new one ("reconnect").
@pytest.mark.parametrize("repair", ["resubscribe", "reconnect"])
@pytest.mark.parametrize("fault, reason", [("gap", "gap"), ("crossed", "crossed")])
async def test_gap_and_crossed_are_repaired_as_feed_repair_says(sim, tmp_path, fault, reason, repair):
    cfg = make_config(sim.current_url, tmp_path, SYMBOLS, feed={**CUR, "repair": repair})
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
    sockets = 1 if repair == "resubscribe" else 2  # the same socket, or a new one
    assert btc.stats.connects == sockets
    assert sim.stats["BTCUSD"].handshakes == sockets  # as the simulator saw it


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


@pytest.mark.timeout(90)
async def test_a_book_quiet_for_35_s_stays_live_with_the_real_liveness_settings(tmp_path):
    """Gemini's quiet books can say nothing for ~30 s. With the defaults (and the server
    pinging every 20 s, as Gemini does) 35 s of silence on a live connection is no break:
    the client's ping at 20 s is answered, and silence is never "stale" on this API.
    (A connection that stops answering pings is found: the shared suite's stall case.)"""
    async with SimExchange(["BTCUSD"], seed=7, rate=50.0, listed=["QUIETUSD"],
                           ping_interval=20.0) as sim:
        cfg = make_config(sim.current_url, tmp_path, ["QUIETUSD"], feed={
            "api": "current", "stale_after_s": 15, "ping_interval_s": 20, "ping_timeout_s": 20})
        async with running(cfg) as app:
            quiet = app.feeds["QUIETUSD"]
            await wait_until(lambda: quiet.stats.live)
            assert quiet._link is not None  # on a shared socket, the default
            ws = quiet._link.socket.ws
            assert isinstance(ws, ClientConnection)  # the default transport, websockets
            await asyncio.sleep(35)  # the condition is time passing
            assert quiet.stats.live and sum(quiet.stats.resyncs.values()) == 0
            assert quiet._link.socket.ws is ws and quiet.stats.connects == 1
            assert quiet.clock() - quiet.stats.last_frame >= 35  # truly silent: not one frame
            assert ws.latency > 0  # ... yet the keepalive ping went out and its pong came back
            assert app.monitor.problems() == []  # and health does not call it quiet
    recs = read_records(tmp_path, "QUIETUSD")
    assert [r["type"] for r in recs] == ["resync", "book"]
