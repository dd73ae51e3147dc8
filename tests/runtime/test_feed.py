"""End to end: the collector in-process against the simulator on 127.0.0.1. Tests that
take the `api` fixture run on both of Gemini's APIs (feed.api = "v1" and "current")."""

from __future__ import annotations

import asyncio
import gc
import itertools
import time

import pytest
from websockets.asyncio.server import serve

from collector.gemini.current_stream import CurrentStream
from collector.gemini.v1_stream import V1Stream
from collector.runtime import feed as feed_module
from collector.sim import SimExchange
from tests.helpers.e2e import check_against_truth, make_config, read_records, reasons, running, wait_until

SYMBOLS = ["BTCUSD", "ETHUSD"]


@pytest.fixture
async def sim(make_sim):
    return await make_sim(symbols=SYMBOLS, seed=7, rate=300.0, heartbeat_s=0.05, depth=300,
                          listed=["QUIETUSD"], ping_interval=0.2)


class Api(str):
    """feed.api ("v1" or "current"), run over one `transport`: the whole suite runs on
    every API x transport pair while the tests compare and pass `api` as a plain str."""

    transport: str


@pytest.fixture(params=[(a, t) for t in ("websockets", "picows") for a in ("v1", "current")],
                ids=lambda p: p[0] if p[1] == "websockets" else "-".join(p))
def api(request):
    name, transport = request.param
    if transport == "picows":
        pytest.importorskip("picows", reason="picows is not installed (pip install -e '.[picows]')")
    api = Api(name)
    api.transport = transport
    return api


def config_for(api, sim, out, symbols, feed=None, **kw):
    """A config for `api` against the simulator (the current API's liveness is ping/pong)."""
    url = sim.ws_url if api == "v1" else sim.current_url
    extra = {"api": str(api), "transport": getattr(api, "transport", "websockets")}
    if api == "current":
        extra.update(ping_interval_s=0.1, ping_timeout_s=0.2)
    return make_config(url, out, symbols, feed={**extra, **(feed or {})}, **kw)


def update_books(recs):
    """Book records of updates: all but each span's first (its snapshot)."""
    out, first = [], True
    for r in recs:
        if r["type"] == "resync":
            first = True
        elif r["type"] == "book":
            if not first:
                out.append(r)
            first = False
    return out


async def test_books_equal_truth_and_every_update_is_written(sim, tmp_path, api):
    cfg = config_for(api, sim, tmp_path, SYMBOLS)
    async with running(cfg) as app:
        await wait_until(lambda: all(f.stats.updates >= 300 for f in app.feeds.values()))
    for sym in SYMBOLS:
        recs = read_records(tmp_path, sym)
        assert reasons(recs) == ["start"]
        assert check_against_truth(sim, recs, sym, api=api) >= 300
        assert any(r["type"] == "trade" for r in recs)
        stats = app.feeds[sym].stats
        # everything the feed processed is on disk after the stop
        assert len(update_books(recs)) == stats.updates
        assert sum(1 for r in recs if r["type"] == "trade") == stats.trades


async def test_emit_change_writes_only_top_changes(sim, tmp_path, api):
    cfg = config_for(api, sim, tmp_path, ["BTCUSD"], book={"emit": "change", "depth": 3})
    async with running(cfg) as app:
        await wait_until(lambda: app.feeds["BTCUSD"].stats.updates >= 300)
    recs = read_records(tmp_path, "BTCUSD")
    books = [r for r in recs if r["type"] == "book"]
    check_against_truth(sim, recs, "BTCUSD", depth=3, every=False, api=api)
    assert 1 < len(books) < app.feeds["BTCUSD"].stats.updates + 1
    for a, b in itertools.pairwise(books):
        assert (a["bids"], a["asks"]) != (b["bids"], b["asks"])


# fault kind injected by the simulator -> resync reason the collector must write
FAULTS = [
    ("gap", "gap"),
    ("garbage", "invalid"),
    ("crossed", "crossed"),
    ("close", "closed"),
    ("stall", "stale"),
]
# Faults on a whole socket: on a shared one (the current API's default) every symbol it
# carries is marked; "garbage" is a truncated frame that names no symbol.
SOCKET_FAULTS = {"close", "stall", "garbage"}


@pytest.mark.parametrize("fault, reason", FAULTS)
async def test_each_fault_is_marked_and_healed(sim, tmp_path, fault, reason, api):
    cfg = config_for(api, sim, tmp_path, SYMBOLS, feed={"stale_after_s": 0.3})
    async with running(cfg) as app:
        btc = app.feeds["BTCUSD"]
        await wait_until(lambda: btc.stats.live and btc.stats.updates >= 50)
        sim.inject("BTCUSD", fault)
        await wait_until(lambda: btc.stats.resyncs[reason] >= 1, what=f"{reason} resync")
        after = btc.stats.updates
        await wait_until(lambda: btc.stats.live and btc.stats.updates >= after + 50, what="healed")
    recs = read_records(tmp_path, "BTCUSD")
    assert reasons(recs) == ["start", reason]
    check_against_truth(sim, recs, "BTCUSD", api=api)
    resync = next(r for r in recs if r["type"] == "resync" and r["reason"] == reason)
    if reason == "gap" and api == "v1":
        assert resync["got_seq"] == resync["expected_seq"] + 1
    elif reason == "gap":  # update ids: the next frame's U is past the last u applied
        assert resync["got"] > resync["expected"]
    else:
        assert resync["detail"]
    if reason == "invalid":
        assert "sample" in resync
    # the other symbol never noticed, unless it shared the broken socket
    shared = api == "current" and fault in SOCKET_FAULTS
    assert reasons(read_records(tmp_path, "ETHUSD")) == (["start", reason] if shared else ["start"])


@pytest.mark.parametrize("fault, reason", [f for f in FAULTS if f[0] in SOCKET_FAULTS])
async def test_a_socket_of_its_own_keeps_socket_faults_from_neighbours(sim, tmp_path, fault, reason):
    """feed.symbols_per_socket = 1 on the current API: a socket per symbol, as on v1."""
    cfg = config_for("current", sim, tmp_path, SYMBOLS, feed={"symbols_per_socket": 1})
    async with running(cfg) as app:
        btc = app.feeds["BTCUSD"]
        await wait_until(lambda: all(f.stats.live for f in app.feeds.values()))
        sim.inject("BTCUSD", fault)
        await wait_until(lambda: btc.stats.resyncs[reason] >= 1, what=f"{reason} resync")
        await wait_until(lambda: btc.stats.live, what="healed")
    assert reasons(read_records(tmp_path, "BTCUSD")) == ["start", reason]
    assert reasons(read_records(tmp_path, "ETHUSD")) == ["start"]


async def test_a_frame_sent_again_is_skipped_on_current_and_a_gap_on_v1(sim, tmp_path, api):
    """The simulator re-sends already-sent frames. Current API: the update ids say they
    are stale (u <= the last applied u): skipped, counted, no resync. v1: the frame's
    socket_sequence is behind the expected one, which is a gap (reconnect)."""
    cfg = config_for(api, sim, tmp_path, SYMBOLS)
    async with running(cfg) as app:
        btc = app.feeds["BTCUSD"]
        await wait_until(lambda: btc.stats.live and btc.stats.updates >= 50)
        stream = btc._stream

        def stale() -> int:  # current API: depth frames skipped as stale
            assert isinstance(stream, CurrentStream)
            return stream.stale

        sim.inject("BTCUSD", "duplicate")
        await wait_until(lambda: btc.stats.resyncs["gap"] >= 1 if api == "v1" else stale() >= 2,
                         what="the frames sent again")
        after = btc.stats.updates
        await wait_until(lambda: btc.stats.live and btc.stats.updates >= after + 50, what="carried on")
    recs = read_records(tmp_path, "BTCUSD")
    check_against_truth(sim, recs, "BTCUSD", api=api)
    (fired,) = sim.stats["BTCUSD"].fired("duplicate")
    if api == "current":
        assert reasons(recs) == ["start"] and btc.stats.connects == 1
        assert stale() == 2  # the frame before the carrier, and the carrier again
    else:
        assert reasons(recs) == ["start", "gap"]
        gap = recs[[r["type"] for r in recs].index("resync", 1)]
        assert gap["got_seq"] == gap["expected_seq"] - 1 == fired.socket_sequence
    assert reasons(read_records(tmp_path, "ETHUSD")) == ["start"]


async def test_first_frame_not_zero_is_a_gap(sim, tmp_path):
    sim.inject("BTCUSD", "gap")  # no connection yet: armed for the next one
    cfg = make_config(sim.ws_url, tmp_path, ["BTCUSD"])
    async with running(cfg) as app:
        btc = app.feeds["BTCUSD"]
        await wait_until(lambda: btc.stats.live and btc.stats.updates >= 20)
    recs = read_records(tmp_path, "BTCUSD")
    assert reasons(recs) == ["start", "gap"]
    gap = recs[1]
    assert (gap["expected_seq"], gap["got_seq"]) == (0, 1)
    check_against_truth(sim, recs, "BTCUSD")


async def test_slow_snapshot_times_out(sim, tmp_path, api):
    sim.inject("BTCUSD", "slow_snapshot", delay=2.0)
    cfg = config_for(api, sim, tmp_path, ["BTCUSD"], feed={"snapshot_timeout_s": 0.3})
    async with running(cfg) as app:
        btc = app.feeds["BTCUSD"]
        await wait_until(lambda: btc.stats.live and btc.stats.updates >= 20)
    recs = read_records(tmp_path, "BTCUSD")
    assert reasons(recs) == ["start", "snapshot_timeout"]
    check_against_truth(sim, recs, "BTCUSD", api=api)


async def test_refused_handshake_honours_retry_after(sim, tmp_path, api):
    sim.inject("BTCUSD", "refuse", count=1, retry_after=1, status=429)
    cfg = config_for(api, sim, tmp_path, ["BTCUSD"])
    started = time.monotonic()
    async with running(cfg) as app:
        btc = app.feeds["BTCUSD"]
        await wait_until(lambda: btc.stats.live, what="live after the refusal")
        assert time.monotonic() - started >= 1.0, "Retry-After: 1 was not honoured"
        assert btc.stats.connects == 2
    recs = read_records(tmp_path, "BTCUSD")
    assert reasons(recs) == ["start", "refused"]
    assert recs[1]["status"] == 429 and recs[1]["retry_after"] == 1
    check_against_truth(sim, recs, "BTCUSD", api=api)


async def test_failed_reconnects_after_a_break_are_logged_not_written(sim, tmp_path):
    cfg = make_config(sim.ws_url, tmp_path, ["BTCUSD"])
    async with running(cfg) as app:
        btc = app.feeds["BTCUSD"]
        await wait_until(lambda: btc.stats.live and btc.stats.updates >= 20)
        sim.inject("BTCUSD", "refuse", count=3, retry_after=0, status=503)
        sim.inject("BTCUSD", "close")
        await wait_until(lambda: btc.stats.resyncs["refused"] == 3)
        await wait_until(lambda: btc.stats.live and btc.stats.connects == 5)
    recs = read_records(tmp_path, "BTCUSD")
    assert reasons(recs) == ["start", "closed"]
    check_against_truth(sim, recs, "BTCUSD")


async def test_unknown_symbol_is_reported_and_does_not_disturb_others(sim, tmp_path):
    cfg = make_config(sim.ws_url, tmp_path, ["BTCUSD", "NOPEUSD"])
    async with running(cfg) as app:
        nope, btc = app.feeds["NOPEUSD"], app.feeds["BTCUSD"]
        await wait_until(lambda: nope.stats.resyncs["refused"] == 1 and btc.stats.updates >= 100)
        assert nope.stats.connects == 1  # retried slowly (feed.refused_retry_s), not hammered
    recs = read_records(tmp_path, "NOPEUSD")
    assert reasons(recs) == ["start", "refused"] and recs[1]["status"] == 404
    assert reasons(read_records(tmp_path, "BTCUSD")) == ["start"]


async def test_unknown_event_types_are_counted_and_skipped(sim, tmp_path, api):
    cfg = config_for(api, sim, tmp_path, ["BTCUSD"])
    async with running(cfg) as app:
        btc = app.feeds["BTCUSD"]
        await wait_until(lambda: btc.stats.live and btc.stats.updates >= 20)
        for _ in range(3):
            sim.inject("BTCUSD", "unknown")
        await wait_until(lambda: sum(btc.stats.unknown.values()) >= 3)
        after = btc.stats.updates
        await wait_until(lambda: btc.stats.updates >= after + 20)
    recs = read_records(tmp_path, "BTCUSD")
    assert reasons(recs) == ["start"]
    check_against_truth(sim, recs, "BTCUSD", api=api)


async def test_a_quiet_book_never_flaps(sim, tmp_path, api):
    """v1: heartbeats keep a quiet stream live. Current API: no heartbeats, and silence
    is never staleness there; the connection's pings keep it."""
    cfg = config_for(api, sim, tmp_path, ["QUIETUSD"], feed={"stale_after_s": 0.3})
    async with running(cfg) as app:
        quiet = app.feeds["QUIETUSD"]
        await wait_until(lambda: quiet.stats.live)
        await asyncio.sleep(1.5)  # the condition is time passing: 5x stale_after_s of quiet
        assert quiet.stats.live and sum(quiet.stats.resyncs.values()) == 0
    recs = read_records(tmp_path, "QUIETUSD")
    assert [r["type"] for r in recs] == ["resync", "book"]


async def test_connection_budget_paces_a_flapping_symbol(sim, tmp_path, api):
    # burst of 2, then one attempt per second: the third connection waits for a token
    cfg = config_for(api, sim, tmp_path, ["BTCUSD"],
                     feed={"connect_burst": 2, "connects_per_minute": 60})
    t0 = time.monotonic()  # before the first attempt: a slow start must not eat into the pause
    async with running(cfg) as app:
        btc = app.feeds["BTCUSD"]
        await wait_until(lambda: btc.stats.live)
        sim.inject("BTCUSD", "close")
        await wait_until(lambda: btc.stats.connects == 2 and btc.stats.live)
        sim.inject("BTCUSD", "close")
        await wait_until(lambda: btc.stats.connects == 3 and btc.stats.live)
        assert time.monotonic() - t0 >= 0.9


async def test_a_crashing_feed_is_restarted_alone(sim, tmp_path, monkeypatch):
    real = V1Stream.feed
    crashes = {"left": 1}

    def buggy(self, raw, recv_ns):
        if self.symbol == "BTCUSD" and self.counts.updates == 30 and crashes["left"]:
            crashes["left"] -= 1
            raise RuntimeError("injected bug")
        return real(self, raw, recv_ns)

    monkeypatch.setattr(V1Stream, "feed", buggy)
    cfg = make_config(sim.ws_url, tmp_path, SYMBOLS)
    async with running(cfg) as app:
        btc = app.feeds["BTCUSD"]
        await wait_until(lambda: crashes["left"] == 0)
        await wait_until(lambda: btc.stats.live and btc.stats.updates >= 80)
    recs = read_records(tmp_path, "BTCUSD")
    assert reasons(recs) == ["start", "error"]
    assert "injected bug" in recs[[r["type"] for r in recs].index("resync", 1)]["detail"]
    check_against_truth(sim, recs, "BTCUSD")
    assert reasons(read_records(tmp_path, "ETHUSD")) == ["start"]


async def test_full_queue_makes_feeds_wait_without_losing_updates(sim, tmp_path, api):
    cfg = config_for(api, sim, tmp_path, SYMBOLS, output={"queue_size": 1, "batch_max": 1})
    async with running(cfg) as app:
        await wait_until(lambda: all(f.stats.updates >= 200 for f in app.feeds.values()))
        assert app.writer.queue_full_waits > 0
    for sym in SYMBOLS:
        recs = read_records(tmp_path, sym)
        assert reasons(recs) == ["start"]
        check_against_truth(sim, recs, sym, api=api)


async def test_dead_connection_found_by_ping_timeout(tmp_path):
    """A peer that stops answering (no frames, no pongs) is closed by the keepalive
    even when stale_after_s is long."""
    connected, finished = asyncio.Event(), asyncio.Event()

    async def frozen(ws):
        await ws.send('{"type":"update","eventId":1,"socket_sequence":0,"events":['
                      '{"type":"change","side":"bid","price":"1.00","remaining":"1","reason":"initial"},'
                      '{"type":"change","side":"ask","price":"2.00","remaining":"1","reason":"initial"}]}')
        ws.transport.pause_reading()  # pings go unread: no pong is ever sent
        connected.set()
        await finished.wait()

    async with serve(frozen, "127.0.0.1", 0, ping_interval=None) as server:
        port = server.sockets[0].getsockname()[1]
        cfg = make_config(f"ws://127.0.0.1:{port}/v1/marketdata", tmp_path, ["BTCUSD"],
                          feed={"stale_after_s": 60, "ping_interval_s": 0.2, "ping_timeout_s": 0.2})
        async with running(cfg) as app:
            await wait_until(lambda: app.feeds["BTCUSD"].stats.resyncs["closed"] >= 1)
        finished.set()
    recs = read_records(tmp_path, "BTCUSD")
    assert reasons(recs)[:2] == ["start", "closed"]
    assert "ping" in recs[2]["detail"] or "without a close frame" in recs[2]["detail"]


async def test_reconnects_leave_nothing_frozen(tmp_path, monkeypatch):
    """Books are frozen out of the garbage collector once live; a closed connection's
    cycles must not stay frozen with them (they leaked 45-170 objects per reconnect)."""
    monkeypatch.setattr(feed_module, "REFREEZE_S", 0.0)  # refreeze at every live stream
    async with (
        SimExchange(["BTCUSD"], seed=3, rate=500.0, depth=50, faults="close=0.02",
                    record_truth=False) as sim,
        running(make_config(sim.ws_url, tmp_path, ["BTCUSD"])) as app,
    ):
        feed = app.feeds["BTCUSD"]
        await wait_until(lambda: feed.stats.connects >= 10, timeout=20)
        frozen = gc.get_freeze_count()
        await wait_until(lambda: feed.stats.connects >= 50, timeout=30)
        grown = gc.get_freeze_count() - frozen
    assert feed.stats.resyncs["closed"] >= 40
    assert grown < 1000, f"{grown} more objects frozen after 40 reconnects"
