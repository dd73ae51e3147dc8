"""The v1 WebSocket endpoint seen from a raw websockets client."""

from __future__ import annotations

import asyncio
import socket
from decimal import Decimal
from typing import Any

import orjson
import pytest
from websockets.exceptions import InvalidStatus

from collector.sim import FlowParams, SimExchange
from tests.helpers.simulator import MakeSim
from tests.sim.sim_helpers import recv_json, recv_until, ws_connect

RICH = FlowParams(block_trade=0.05, auction=0.03, market=0.2)


async def test_snapshot_first_then_one_sequence_for_updates_and_heartbeats(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=200.0, heartbeat_s=0.05, depth=30)
    async with ws_connect(f"{sim.ws_url}/BTCUSD?heartbeat=true") as ws:
        first = await recv_json(ws)
        assert list(first) == ["type", "eventId", "socket_sequence", "events"]  # no timestamps
        assert first["type"] == "update" and first["socket_sequence"] == 0
        events = first["events"]
        assert len(events) == 60
        assert all(e["type"] == "change" and e["reason"] == "initial" and e["delta"] == e["remaining"]
                   for e in events)
        bids = [Decimal(e["price"]) for e in events if e["side"] == "bid"]
        asks = [Decimal(e["price"]) for e in events if e["side"] == "ask"]
        assert bids == sorted(bids, reverse=True) and asks == sorted(asks) and bids[0] < asks[0]

        counts = {"update": 0, "heartbeat": 0}

        def enough(frame: dict[str, Any]) -> bool:
            counts[frame["type"]] += 1
            return counts["heartbeat"] >= 3 and counts["update"] >= 5

        frames = await recv_until(ws, enough)
        assert [f["socket_sequence"] for f in frames] == list(range(1, len(frames) + 1))
        last_id = first["eventId"]
        for f in frames:
            if f["type"] == "heartbeat":
                assert f == {"type": "heartbeat", "socket_sequence": f["socket_sequence"]}
                continue
            assert list(f) == ["type", "eventId", "timestamp", "timestampms", "socket_sequence", "events"]
            assert f["timestamp"] == f["timestampms"] // 1000
            assert f["eventId"] > last_id
            last_id = f["eventId"]


async def test_no_heartbeats_unless_asked(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None, heartbeat_s=0.05)
    async with ws_connect(f"{sim.ws_url}/btcusd") as ws:  # lower case works too
        assert (await recv_json(ws))["socket_sequence"] == 0
        sim.advance("BTCUSD", 3)
        got = [await recv_json(ws) for _ in range(3)]
        assert [g["type"] for g in got] == ["update"] * 3
        assert [g["socket_sequence"] for g in got] == [1, 2, 3]
        with pytest.raises(TimeoutError):  # bounded check that nothing else comes
            await recv_json(ws, timeout=0.25)


async def _drain(sim: SimExchange, ws: Any, symbol: str = "BTCUSD") -> list[dict[str, Any]]:
    """All frames queued so far for the (single) connection, snapshot included."""
    st = sim.stats[symbol]
    await sim.wait_for(lambda: st.frames_sent == st.frames_queued)
    return [await recv_json(ws) for _ in range(st.frames_queued)]


@pytest.mark.parametrize("query", ["", "bids=false", "offers=false", "trades=false", "auctions=false",
                                   "bids=false&offers=false", "bids=true&offers=true&trades=true"])
async def test_filters(make_sim: MakeSim, query: str) -> None:
    sim = await make_sim(rate=None, flow=RICH)
    flags = dict(p.split("=") for p in query.split("&") if p)
    async with ws_connect(f"{sim.ws_url}/BTCUSD?{query}") as ws:
        sim.advance("BTCUSD", 400)
        frames = await _drain(sim, ws)
    assert [f["socket_sequence"] for f in frames] == list(range(len(frames)))
    snapshot_sides = {e["side"] for e in frames[0]["events"]}
    if flags.get("bids") == "false" and flags.get("offers") == "false":
        assert frames[0]["events"] == []  # trades only: the initial book is empty
    else:
        assert snapshot_sides == {"bid", "ask"}  # both sides regardless of the filters
    types = set()
    for f in frames[1:]:
        assert f["events"], "frames with every event filtered out are not sent"
        for e in f["events"]:
            types.add(e["type"] if e["type"] != "change" else f"change-{e['side']}")
    expected = {"change-bid", "change-ask", "trade", "block_trade", "auction_open",
                "auction_indicative", "auction_result"}
    if flags.get("bids") == "false":
        expected.discard("change-bid")
    if flags.get("offers") == "false":
        expected.discard("change-ask")
    if flags.get("trades") == "false":
        expected -= {"trade", "block_trade"}
    if flags.get("auctions") == "false":
        expected -= {"auction_open", "auction_indicative", "auction_result"}
    assert types == expected
    if expected == {"change-bid", "change-ask", "trade", "block_trade", "auction_open",
                    "auction_indicative", "auction_result"}:
        assert len(frames) == 401


@pytest.mark.parametrize("query", ["top_of_book=true", "top_of_book=true&bids=false"])
async def test_top_of_book(make_sim: MakeSim, query: str) -> None:
    sim = await make_sim(rate=None)
    truth = sim.truth("BTCUSD")
    async with ws_connect(f"{sim.ws_url}/BTCUSD?{query}") as ws:
        sim.advance("BTCUSD", 300)
        frames = await _drain(sim, ws)
    want_bids = "bids=false" not in query
    snap = frames[0]["events"]
    assert [e["side"] for e in snap] == (["bid", "ask"] if want_bids else ["ask"])
    best = {e["side"]: [e["price"], e["remaining"]] for e in snap}
    tob_frames = 0
    for f in frames[1:]:
        for e in f["events"]:
            if e["type"] == "change":
                assert e["reason"] == "top-of-book" and "delta" not in e
                best[e["side"]] = [e["price"], e["remaining"]]
        if any(e["type"] == "change" for e in f["events"]):
            tob_frames += 1
        bids, asks = truth.top_at(f["eventId"], 1)
        assert best["ask"] == asks[0]
        if want_bids:
            assert best["bid"] == bids[0]
        else:
            assert "bid" not in best
    assert tob_frames > 20


async def test_unknown_symbol_is_404(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None)
    with pytest.raises(InvalidStatus) as info:
        async with ws_connect(f"{sim.ws_url}/NOPEUSD"):
            pass
    resp = info.value.response
    assert resp.status_code == 404
    assert orjson.loads(resp.body)["reason"] == "InvalidSymbol"
    assert sim.rejected_unknown == 1
    with pytest.raises(InvalidStatus):
        async with ws_connect(f"ws://{sim.host}:{sim.port}/v1/marketdata/BTCUSD/extra"):
            pass


async def test_listed_symbol_is_quiet(make_sim: MakeSim) -> None:
    sim = await make_sim(symbols=["BTCUSD"], listed=["XRPUSD"], rate=500.0, heartbeat_s=0.05)
    assert sim.symbols == ["BTCUSD", "XRPUSD"]
    async with ws_connect(f"{sim.ws_url}/XRPUSD?heartbeat=true") as ws:
        first = await recv_json(ws)
        assert first["socket_sequence"] == 0 and len(first["events"]) == 40
        rest = [await recv_json(ws) for _ in range(3)]
    assert [f["type"] for f in rest] == ["heartbeat"] * 3
    assert sim.stats["XRPUSD"].updates == 0 and sim.stats["BTCUSD"].updates > 0


async def test_connections_of_a_symbol_see_the_same_market(make_sim: MakeSim) -> None:
    sim = await make_sim(symbols=["BTCUSD", "ETHUSD"], rate=300.0)
    async with ws_connect(f"{sim.ws_url}/BTCUSD") as a, ws_connect(f"{sim.ws_url}/BTCUSD") as b:
        a_frames = await recv_until(a, lambda f: f["socket_sequence"] >= 40)
        a_last = a_frames[-1]["eventId"]
        b_frames = await recv_until(b, lambda f: f["eventId"] >= a_last)
    b_snap = b_frames[0]["eventId"]
    a_by_id = {f["eventId"]: f["events"] for f in a_frames[1:]}
    b_by_id = {f["eventId"]: f["events"] for f in b_frames[1:]}
    common = {i for i in a_by_id if i > b_snap}
    assert common and common <= set(b_by_id)
    assert all(a_by_id[i] == b_by_id[i] for i in common)
    assert sim.stats["BTCUSD"].handshakes == 2


async def test_slow_consumer_is_dropped_without_holding_others(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=0.0, send_buffer=200, close_timeout=0.2)  # rate 0: as fast as clients take them
    st = sim.stats["BTCUSD"]
    async with ws_connect(f"{sim.ws_url}/BTCUSD") as fast:
        # A client with a tiny receive buffer that never reads.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((sim.host, sim.port))
        sock.setblocking(False)
        async with ws_connect(f"{sim.ws_url}/BTCUSD", sock=sock, max_queue=1) as slow:
            received = 0

            async def reader() -> None:
                nonlocal received
                while True:
                    await fast.recv()
                    received += 1

            task = asyncio.create_task(reader())
            try:
                await sim.wait_for(lambda: st.slow_closes >= 1, timeout=8.0)
                # The slow one is gone on the server side; the fast one keeps receiving.
                await sim.wait_for(lambda: st.connections == 1, timeout=3.0)
                before = received
                await sim.wait_for(lambda: received > before + 500, timeout=3.0)
            finally:
                task.cancel()
            assert slow.transport is not None
            slow.transport.abort()  # skip draining megabytes of kernel buffers
        assert st.slow_closes == 1


async def test_async_with_and_urls() -> None:
    async with SimExchange(["ethusd"], rate=None, depth=5) as sim:
        assert sim.ws_url == f"ws://127.0.0.1:{sim.port}/v1/marketdata"
        assert sim.rest_url == f"http://127.0.0.1:{sim.port}"
        assert sim.port > 0 and list(sim.stats) == ["ETHUSD"]
    with pytest.raises(ValueError):
        SimExchange([], rate=1.0)
    with pytest.raises(ValueError, match="unknown kind"):
        SimExchange(["BTCUSD"], faults="boom=1")
