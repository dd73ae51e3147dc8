"""Several symbols per socket on the current API (runtime/sockets.py), in-process
against the simulator on 127.0.0.1."""

from __future__ import annotations

import functools

import pytest
from prometheus_client import generate_latest

from collector.ops.metrics import build_registry
from collector.runtime.app import App
from collector.runtime.feed import MAX_RESUBSCRIBES, Feed
from collector.sim import SimExchange
from tests.helpers.e2e import check_against_truth, make_config, read_records, reasons, running, wait_until

SYMBOLS = ["BTCUSD", "ETHUSD", "SOLUSD", "LTCUSD", "DOGEUSD"]


@pytest.fixture
async def sim(make_sim):
    return await make_sim(symbols=SYMBOLS, seed=11, rate=100.0, depth=100, ping_interval=0.2)


def shared(sim, out, per_socket=2, **feed):
    return make_config(sim.current_url, out, SYMBOLS, feed={
        "api": "current", "symbols_per_socket": per_socket, "ping_interval_s": 0.1,
        "ping_timeout_s": 0.2, **feed})


def carried(app: App) -> dict[int, list[str]]:
    """Socket slot -> the symbols it carries."""
    assert app.pool is not None
    return {s.slot: sorted(s.links) for s in app.pool.sockets.values()}


def went_on(feed: Feed, updates: int) -> bool:
    return feed.stats.live and feed.stats.updates > updates


def gaps_reached(feed: Feed, n: int) -> bool:
    return feed.stats.resyncs["gap"] >= n


def all_live(app: App) -> bool:
    return all(f.stats.live and f.stats.updates >= 20 for f in app.feeds.values())


async def test_symbols_are_packed_and_every_book_is_true(sim, tmp_path):
    async with running(shared(sim, tmp_path)) as app:
        await wait_until(lambda: all_live(app), what="all live")
        assert sorted(len(v) for v in carried(app).values()) == [1, 2, 2]
        assert app.pool is not None and app.pool.opened == 3
        status = app.pool.status()
        assert sum(s["live"] for s in status) == len(SYMBOLS)
        text = generate_latest(build_registry(app, app.monitor)).decode()
        for s in status:
            assert f'collector_socket_symbols{{socket="{s["slot"]}"}} {float(s["symbols"])}' in text
            assert f'collector_socket_live{{socket="{s["slot"]}"}} {float(s["symbols"])}' in text
        assert "collector_sockets_opened_total 3.0" in text
        assert f"collector_symbols_recorded {float(len(SYMBOLS))}" in text
    for sym in SYMBOLS:
        recs = read_records(tmp_path, sym)
        assert reasons(recs) == ["start"]
        assert check_against_truth(sim, recs, sym, api="current") >= 20


@pytest.mark.parametrize("fault, reason", [("close", "closed"), ("stall", "stale")])
async def test_a_dead_socket_resyncs_only_the_symbols_it_carried(sim, tmp_path, fault, reason):
    async with running(shared(sim, tmp_path)) as app:
        await wait_until(lambda: all_live(app), what="all live")
        hit = next(v for v in carried(app).values() if "BTCUSD" in v)
        sim.inject("BTCUSD", fault)
        await wait_until(lambda: all(app.feeds[s].stats.resyncs[reason] for s in hit), what=reason)
        await wait_until(lambda: all_live(app), what="all live again")
        assert app.pool is not None and app.pool.opened == 4  # the dead one's symbols came back together
    for sym in SYMBOLS:
        recs = read_records(tmp_path, sym)
        assert reasons(recs) == (["start", reason] if sym in hit else ["start"]), sym
        check_against_truth(sim, recs, sym, api="current")


@pytest.mark.parametrize("fault, reason", [("gap", "gap"), ("crossed", "crossed")])
async def test_a_break_on_one_symbol_is_repaired_on_its_socket_alone(sim, tmp_path, fault, reason):
    async with running(shared(sim, tmp_path)) as app:
        await wait_until(lambda: all_live(app), what="all live")
        before = carried(app)
        btc = app.feeds["BTCUSD"]
        sim.inject("BTCUSD", fault)
        await wait_until(lambda: btc.stats.resyncs[reason] >= 1, what=reason)
        after = btc.stats.updates
        await wait_until(lambda: btc.stats.live and btc.stats.updates >= after + 20, what="healed")
        assert carried(app) == before  # resubscribed on the same socket
        assert btc.stats.connects == 1
    for sym in SYMBOLS:
        recs = read_records(tmp_path, sym)
        assert reasons(recs) == (["start", reason] if sym == "BTCUSD" else ["start"]), sym
        check_against_truth(sim, recs, sym, api="current")


async def test_a_symbol_that_keeps_breaking_moves_to_a_socket_of_its_own(sim, tmp_path):
    async with running(shared(sim, tmp_path)) as app:
        await wait_until(lambda: all_live(app), what="all live")
        btc = app.feeds["BTCUSD"]
        neighbours = next(v for v in carried(app).values() if "BTCUSD" in v)
        for n in range(1, MAX_RESUBSCRIBES + 2):
            await wait_until(functools.partial(went_on, btc, btc.stats.updates + 5), what="live")
            sim.inject("BTCUSD", "gap")
            await wait_until(functools.partial(gaps_reached, btc, n), what=f"gap {n}")
        await wait_until(lambda: all_live(app), what="all live again")
        link = btc._link
        assert link is not None and carried(app)[link.socket.slot] == ["BTCUSD"]
        assert link.socket.capacity == 1
        for sym in neighbours:
            if sym != "BTCUSD":
                assert app.feeds[sym].stats.resyncs == {}, sym
    for sym in SYMBOLS:
        check_against_truth(sim, read_records(tmp_path, sym), sym, api="current")


async def test_a_removed_symbol_leaves_its_socket_to_the_others(sim, tmp_path):
    async with running(shared(sim, tmp_path)) as app:
        await wait_until(lambda: all_live(app), what="all live")
        slot, pair = next((k, v) for k, v in carried(app).items() if len(v) == 2)
        gone, stays = pair
        await app._stop_feeds([gone])
        del app.feeds[gone]
        assert carried(app)[slot] == [stays]
        done = app.feeds[stays].stats.updates
        await wait_until(lambda: app.feeds[stays].stats.updates > done + 50, what="still flowing")
        # the unsubscribe took: only frames already on their way came for the one gone
        assert app.pool is not None and app.pool.sockets[slot].strays < 5
    assert reasons(read_records(tmp_path, stays)) == ["start"]


@pytest.mark.timeout(120)
async def test_the_whole_exchange_starts_and_comes_back_after_a_blip_without_a_429(tmp_path):
    """347 symbols behind Gemini's limits: every one live, no 429 in the start or after
    every socket dropped at once, and every book record true."""
    async with SimExchange.whole(busy=3, rate=20.0, depth=50, quiet_depth=10, ping_interval=1.0) as sim:
        listed = list(sim.specs)
        cfg = make_config(sim.current_url, tmp_path, ["*"], feed={
            "api": "current", "rest_url": sim.rest_url, "max_connects_per_minute": 50,
            "ping_interval_s": 1.0, "ping_timeout_s": 2.0, "snapshot_timeout_s": 10.0})
        async with running(cfg) as app:
            await wait_until(lambda: len(app.feeds) == len(listed)
                             and all(f.stats.live for f in app.feeds.values()), timeout=60, what="all live")
            assert app.pool is not None and app.pool.opened == 7  # 347 / 50
            assert sim.blip() == 7
            await wait_until(lambda: all(f.stats.resyncs["closed"] for f in app.feeds.values()),
                             timeout=30, what="every symbol saw the blip")
            await wait_until(lambda: all(f.stats.live for f in app.feeds.values()), timeout=60,
                             what="all live again")
            assert app.pool.opened == 14
        assert sim.exchange_stats.total_429 == 0
        assert len(listed) == 347
        for sym in listed:
            recs = read_records(tmp_path, sym)
            assert reasons(recs) == ["start", "closed"], sym
            check_against_truth(sim, recs, sym, api="current")
