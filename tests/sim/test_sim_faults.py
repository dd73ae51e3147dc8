"""Every fault kind, observed from a raw websockets client."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from tests.helpers.simulator import MakeSim
from tests.sim.sim_helpers import DictBook, recv_json, recv_raw, recv_until, ws_connect


async def test_gap_skips_one_sequence_number(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None)
    async with ws_connect(f"{sim.ws_url}/BTCUSD") as ws:
        assert (await recv_json(ws))["socket_sequence"] == 0
        sim.advance("BTCUSD", 2)
        sim.inject("BTCUSD", "gap")
        sim.advance("BTCUSD", 3)
        seqs = [(await recv_json(ws))["socket_sequence"] for _ in range(4)]
    assert seqs == [1, 2, 4, 5]
    (fired,) = sim.stats["BTCUSD"].fired("gap")
    assert fired.socket_sequence == 3 and not fired.random and fired.conn_id is not None


async def test_gap_armed_before_connecting_means_no_snapshot(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None)
    sim.inject("BTCUSD", "gap")
    async with ws_connect(f"{sim.ws_url}/BTCUSD") as ws:
        sim.advance("BTCUSD", 1)
        first = await recv_json(ws)
    assert first["socket_sequence"] == 1
    assert all(e["reason"] != "initial" for e in first["events"] if e["type"] == "change")
    assert sim.stats["BTCUSD"].fired("gap")[0].socket_sequence == 0


async def test_duplicate_sends_a_frame_again_with_its_sequence(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None)
    async with ws_connect(f"{sim.ws_url}/BTCUSD") as ws:
        assert (await recv_json(ws))["socket_sequence"] == 0
        sim.advance("BTCUSD", 1)
        sim.inject("BTCUSD", "duplicate")
        sim.advance("BTCUSD", 2)
        raw = [await recv_raw(ws) for _ in range(4)]
    assert [orjson.loads(r)["socket_sequence"] for r in raw] == [1, 2, 2, 3]
    assert raw[1] == raw[2]  # byte for byte
    (fired,) = sim.stats["BTCUSD"].fired("duplicate")
    assert fired.socket_sequence == 2 and not fired.random


async def test_garbage_is_not_json_and_takes_no_sequence(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None)
    async with ws_connect(f"{sim.ws_url}/BTCUSD") as ws:
        await recv_json(ws)
        sim.advance("BTCUSD", 1)
        sim.inject("BTCUSD", "garbage")
        sim.advance("BTCUSD", 1)
        raw = [await recv_raw(ws) for _ in range(3)]
    assert isinstance(raw[1], str)  # a text frame
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(raw[1])
    assert [orjson.loads(raw[0])["socket_sequence"], orjson.loads(raw[2])["socket_sequence"]] == [1, 2]


async def test_stall_sends_nothing_more(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=200.0, heartbeat_s=0.02)
    async with ws_connect(f"{sim.ws_url}/BTCUSD?heartbeat=true") as ws:
        await recv_until(ws, lambda f: f["socket_sequence"] >= 5)
        sim.inject("BTCUSD", "stall")
        # Frames already in flight may still arrive; then silence, connection still open.
        with pytest.raises(TimeoutError):
            while True:
                await recv_json(ws, timeout=0.3)
        assert sim.stats["BTCUSD"].connections == 1
        assert sim.stats["BTCUSD"].updates > 0
        await ws.ping()  # the socket itself is alive


async def test_close_aborts_without_a_close_frame(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=100.0)
    async with ws_connect(f"{sim.ws_url}/BTCUSD") as ws:
        await recv_json(ws)
        sim.inject("BTCUSD", "close")
        with pytest.raises(ConnectionClosedError) as info:
            while True:
                await recv_json(ws)
    assert info.value.rcvd is None  # no close frame was received
    st = sim.stats["BTCUSD"]
    await sim.wait_for(lambda: st.connections == 0)
    assert len(st.fired("close")) == 1


async def test_close_armed_before_connecting_hits_the_next_connection(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None)
    sim.inject("BTCUSD", "close")
    async with ws_connect(f"{sim.ws_url}/BTCUSD") as ws:
        with pytest.raises(ConnectionClosedError):
            await recv_json(ws)
    async with ws_connect(f"{sim.ws_url}/BTCUSD") as ws:  # one-shot: the next one is fine
        assert (await recv_json(ws))["socket_sequence"] == 0


async def test_crossed_is_a_lie_outside_the_truth(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None)
    truth = sim.truth("BTCUSD")
    book = DictBook()
    async with ws_connect(f"{sim.ws_url}/BTCUSD") as ws:
        book.apply_frame(await recv_json(ws))
        sim.advance("BTCUSD", 2)
        sim.inject("BTCUSD", "crossed")
        sim.advance("BTCUSD", 2)
        frames = [await recv_json(ws) for _ in range(5)]
    assert [f["socket_sequence"] for f in frames] == [1, 2, 3, 4, 5]
    for f in frames[:2]:
        book.apply_frame(f)
        assert not book.crossed()
    lie = frames[2]
    book.apply_frame(lie)
    assert book.crossed()
    assert lie["eventId"] > frames[1]["eventId"] and frames[3]["eventId"] > lie["eventId"]
    bids, asks = truth.top_at(lie["eventId"], 1)
    assert bids[0][0] != lie["events"][0]["price"]
    assert float(bids[0][0]) < float(asks[0][0])
    assert sim.stats["BTCUSD"].fired("crossed")[0].socket_sequence == 3


async def test_unknown_event_rides_on_a_real_update(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None)
    truth = sim.truth("BTCUSD")
    book = DictBook()
    async with ws_connect(f"{sim.ws_url}/BTCUSD") as ws:
        book.apply_frame(await recv_json(ws))
        sim.inject("BTCUSD", "unknown")
        sim.advance("BTCUSD", 2)
        frames = [await recv_json(ws) for _ in range(2)]
    carrier = frames[0]
    types = [e["type"] for e in carrier["events"]]
    assert types[-1] == "mystery" and "change" in types
    assert carrier["events"][-1] == {"type": "mystery", "foo": 1}
    assert all(e["type"] != "mystery" for e in frames[1]["events"])
    for f in frames:
        book.apply_frame(f)  # unknown types are no-ops; the real events are real
        assert book.top() == truth.top_at(f["eventId"])


@pytest.mark.parametrize("status", [429, 503])
async def test_refuse_with_retry_after(make_sim: MakeSim, status: int) -> None:
    sim = await make_sim(rate=None)
    sim.inject("BTCUSD", "refuse", count=2, retry_after=7, status=status)
    for _ in range(2):
        with pytest.raises(InvalidStatus) as info:
            async with ws_connect(f"{sim.ws_url}/BTCUSD"):
                pass
        assert info.value.response.status_code == status
        assert info.value.response.headers["Retry-After"] == "7"
    async with ws_connect(f"{sim.ws_url}/BTCUSD") as ws:
        assert (await recv_json(ws))["socket_sequence"] == 0
    st = sim.stats["BTCUSD"]
    assert (st.refused, st.handshakes) == (2, 1)
    assert [f.socket_sequence for f in st.fired("refuse")] == [None, None]


async def test_slow_snapshot_is_delayed(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=200.0)
    sim.inject("BTCUSD", "slow_snapshot", delay=0.4)
    loop = asyncio.get_running_loop()
    async with ws_connect(f"{sim.ws_url}/BTCUSD") as ws:
        start = loop.time()
        first = await recv_json(ws)
        waited = loop.time() - start
        frames = [await recv_json(ws) for _ in range(20)]
    assert first["socket_sequence"] == 0 and waited >= 0.35
    # Updates published meanwhile were kept, in order, after the snapshot.
    assert [f["socket_sequence"] for f in frames] == list(range(1, 21))
    assert frames[0]["eventId"] > first["eventId"]


async def test_inject_hits_every_open_connection_once(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None)
    async with ws_connect(f"{sim.ws_url}/BTCUSD") as a, ws_connect(f"{sim.ws_url}/BTCUSD") as b:
        await recv_json(a)
        await recv_json(b)
        await sim.wait_for(lambda: sim.stats["BTCUSD"].connections == 2)
        sim.inject("BTCUSD", "gap")
        sim.advance("BTCUSD", 3)
        for ws in (a, b):
            assert [(await recv_json(ws))["socket_sequence"] for _ in range(2)] == [2, 3]
    assert len(sim.stats["BTCUSD"].fired("gap")) == 2


async def test_random_faults_from_a_spec(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=300.0, faults="garbage=0.05,unknown=0.05,gap=0.02", seed=5)
    seen: dict[str, int] = {"garbage": 0, "mystery": 0, "jump": 0}
    async with ws_connect(f"{sim.ws_url}/BTCUSD") as ws:
        last = None
        while min(seen.values()) == 0:
            raw = await recv_raw(ws)
            try:
                frame: dict[str, Any] = orjson.loads(raw)
            except orjson.JSONDecodeError:
                seen["garbage"] += 1
                continue
            if any(e["type"] == "mystery" for e in frame["events"]):
                seen["mystery"] += 1
            if last is not None and frame["socket_sequence"] != last + 1:
                seen["jump"] += 1
            last = frame["socket_sequence"]
    fired = sim.stats["BTCUSD"].fired()
    assert fired and all(f.random for f in fired)
    assert {f.kind.value for f in fired} >= {"garbage", "unknown", "gap"}


async def test_random_refusals(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None, faults="refuse=1.0")
    with pytest.raises(InvalidStatus) as info:
        async with ws_connect(f"{sim.ws_url}/BTCUSD"):
            pass
    assert info.value.response.status_code == 429
    assert info.value.response.headers["Retry-After"] == "1"


async def test_inject_rejects_bad_requests(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None)
    with pytest.raises(KeyError):
        sim.inject("NOPEUSD", "gap")
    with pytest.raises(ValueError):
        sim.inject("BTCUSD", "meltdown")
    with pytest.raises(ValueError):
        sim.inject("BTCUSD", "refuse", count=0)


async def test_faults_armed_together_each_fire_once(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None)
    async with ws_connect(f"{sim.ws_url}/BTCUSD") as ws:
        await recv_json(ws)
        for kind in ("gap", "gap", "unknown"):
            sim.inject("BTCUSD", kind)
        sim.advance("BTCUSD", 4)
        frames = [await recv_json(ws) for _ in range(2)]
    # seq 1 and 2 dropped; the unknown event rides on the first update actually sent.
    assert [f["socket_sequence"] for f in frames] == [3, 4]
    assert frames[0]["events"][-1]["type"] == "mystery"
    assert all(e["type"] != "mystery" for e in frames[1]["events"])
    assert [f.kind.value for f in sim.stats["BTCUSD"].fired()] == ["gap", "gap", "unknown"]
