"""The simulator's current API (``ws://HOST:PORT/?snapshot=-1``, SUBSCRIBE), observed
with a raw websockets client and an independent dict book held against the truth."""

from __future__ import annotations

import asyncio
import socket
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus
from websockets.frames import Opcode

from collector.sim import SimExchange
from tests.helpers.simulator import MakeSim
from tests.sim.sim_helpers import recv_json, recv_raw, ws_connect

Lvls = list[tuple[Decimal, Decimal]]


class CurBook:
    """Decimal price -> Decimal quantity per side, built from depthUpdate frames."""

    def __init__(self) -> None:
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self.last: int | None = None

    def apply(self, f: dict[str, Any], snapshot: bool = False) -> None:
        if snapshot:
            self.bids.clear()
            self.asks.clear()
        for side, key in ((self.bids, "b"), (self.asks, "a")):
            for p, q in f[key]:
                if Decimal(q) == 0:
                    side.pop(Decimal(p), None)
                else:
                    side[Decimal(p)] = Decimal(q)
        self.last = f["u"]

    def top(self, depth: int | None = None) -> tuple[Lvls, Lvls]:
        bids = sorted(self.bids.items(), reverse=True)[:depth]
        asks = sorted(self.asks.items())[:depth]
        return bids, asks

    def crossed(self) -> bool:
        return bool(self.bids and self.asks and max(self.bids) >= min(self.asks))


def truth(sim: SimExchange, symbol: str, u: int, depth: int | None = None) -> tuple[Lvls, Lvls]:
    bids, asks = sim.truth(symbol).top_at(u, depth)
    return ([(Decimal(p), Decimal(a)) for p, a in bids],
            [(Decimal(p), Decimal(a)) for p, a in asks])


def url(sim: SimExchange, snapshot: int = -1) -> str:
    return f"{sim.current_url}/?snapshot={snapshot}"


async def request(ws: ClientConnection, method: str, params: list[str], req_id: int) -> None:
    await ws.send(orjson.dumps({"method": method, "params": params, "id": req_id}).decode())


async def subscribed(ws: ClientConnection, symbol: str = "btcusd", req_id: int = 1,
                     trades: bool = True) -> dict[str, Any]:
    """Subscribe; return the snapshot (the ack may come before or after it)."""
    params = [f"{symbol}@depth@100ms"] + ([f"{symbol}@trade"] if trades else [])
    await request(ws, "SUBSCRIBE", params, req_id)
    snap = None
    acked = False
    while snap is None or not acked:
        f = await recv_json(ws)
        if f.get("id") == req_id:
            assert f == {"result": None, "id": req_id}
            acked = True
        else:
            assert f["e"] == "depthUpdate" and snap is None
            snap = f
    return snap


async def depth_frames(ws: ClientConnection, n: int, timeout: float = 2.0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while len(out) < n:
        f = await recv_json(ws, timeout)
        if f.get("e") == "depthUpdate":
            out.append(f)
    return out


async def quiet(ws: ClientConnection, seconds: float) -> None:
    with pytest.raises(TimeoutError):
        await recv_raw(ws, seconds)


def count_pings(ws: ClientConnection) -> list[float]:
    """Times at which the client received a WebSocket ping (wraps the client's handler)."""
    seen: list[float] = []
    original = ws.process_event
    loop = asyncio.get_running_loop()

    def spy(event: Any) -> None:
        if event.opcode is Opcode.PING:
            seen.append(loop.time())
        original(event)

    ws.process_event = spy  # type: ignore[method-assign]  # a spy wraps the client's own handler
    return seen


# --- wire format and ids -----------------------------------------------------------------

async def test_snapshot_then_deltas_overlapping_by_one_equal_the_truth(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None)
    async with ws_connect(url(sim)) as ws:
        snap = await subscribed(ws)
        assert snap["U"] == snap["u"] == sim.stats["BTCUSD"].last_event_id
        assert snap["s"] == "BTCUSD" and isinstance(snap["E"], int) and snap["E"] > 10**18
        # padded decimals, unsorted levels
        assert all(len(p.split(".")[1]) == 3 and len(q.split(".")[1]) == 8
                   for p, q in snap["b"] + snap["a"])
        prices = [Decimal(p) for p, _ in snap["b"]]
        assert prices != sorted(prices, reverse=True)
        book = CurBook()
        book.apply(snap, snapshot=True)
        assert book.top() == truth(sim, "BTCUSD", snap["u"])
        sim.advance("BTCUSD", 60)
        published = [u for u in sim.truth("BTCUSD").log.event_ids if u > snap["u"]]
        frames = await depth_frames(ws, len(published))
    assert [f["u"] for f in frames] == published  # one frame per book-changing update
    cursor = sim.truth("BTCUSD")
    for f in frames:
        assert f["U"] == book.last < f["u"]
        book.apply(f)
        bids, asks = cursor.top_at(f["u"])
        assert book.top() == ([(Decimal(p), Decimal(a)) for p, a in bids],
                              [(Decimal(p), Decimal(a)) for p, a in asks])


async def test_two_symbols_on_one_socket_share_one_id_range(make_sim: MakeSim) -> None:
    sim = await make_sim(symbols=["BTCUSD", "ETHUSD"], rate=None)
    async with ws_connect(url(sim)) as ws:
        await request(ws, "SUBSCRIBE", ["btcusd@depth@100ms", "ethusd@depth@100ms"], 5)
        books: dict[str, CurBook] = {}
        while len(books) < 2:
            f = await recv_json(ws)
            if "e" in f:
                books[f["s"]] = CurBook()
                books[f["s"]].apply(f, snapshot=True)
        for _ in range(20):
            sim.advance("BTCUSD", 2)
            sim.advance("ETHUSD", 1)
        want = sum(1 for s in ("BTCUSD", "ETHUSD")
                   for u in sim.truth(s).log.event_ids if u > (books[s].last or 0))
        seen: list[int] = []
        while len(seen) < want:
            f = await recv_json(ws)
            if f.get("e") != "depthUpdate":
                assert f == {"result": None, "id": 5}
                continue
            b = books[f["s"]]
            assert f["U"] == b.last < f["u"]
            b.apply(f)
            assert b.top(10) == truth(sim, f["s"], f["u"], 10)
            seen.append(f["u"])
    assert seen == sorted(seen) and len(set(seen)) == len(seen)


async def test_same_market_as_v1_trades_times_and_ids(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None)
    async with ws_connect(f"{sim.ws_url}/BTCUSD") as v1, ws_connect(url(sim)) as cur:
        snap0 = await recv_json(v1)
        snap = await subscribed(cur)
        assert snap["u"] == snap0["eventId"]
        sim.advance("BTCUSD", 300)
        v1_frames = [await recv_json(v1) for _ in range(300)]
        changes = [f for f in v1_frames if any(e["type"] == "change" for e in f["events"])]
        v1_trades = [e for f in v1_frames for e in f["events"]
                     if e["type"] == "trade" and e["makerSide"] in ("bid", "ask")]
        assert v1_trades, "the flow should have traded"
        frames: list[dict[str, Any]] = []
        while len([f for f in frames if f.get("e") == "depthUpdate"]) < len(changes):
            frames.append(await recv_json(cur))
    depth = [f for f in frames if f["e"] == "depthUpdate"]
    trades = [f for f in frames if f["e"] == "trade"]
    assert [f["u"] for f in depth] == [f["eventId"] for f in changes]
    assert [f["E"] // 1_000_000 for f in depth] == [f["timestampms"] for f in changes]
    assert [(t["t"], Decimal(t["p"]), Decimal(t["q"]), t["m"]) for t in trades] == [
        (e["tid"], Decimal(e["price"]), Decimal(e["amount"]), e["makerSide"] == "bid")
        for e in v1_trades]
    assert all(t["s"] == "BTCUSD" and t["p"].endswith("0") for t in trades)


async def test_unsubscribe_ack_ends_the_old_frames_and_resubscribe_snapshots(
        make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None)
    async with ws_connect(url(sim)) as ws:
        await subscribed(ws)
        sim.advance("BTCUSD", 5)
        await request(ws, "UNSUBSCRIBE", ["btcusd@depth@100ms"], 2)
        while (f := await recv_json(ws)).get("id") != 2:
            assert f["e"] in ("depthUpdate", "trade")  # the old subscription, before the ack
        assert f == {"result": None, "id": 2}
        sim.advance("BTCUSD", 50)
        await request(ws, "LIST_SUBSCRIPTIONS", [], 3)
        while (f := await recv_json(ws)).get("id") != 3:
            assert f["e"] == "trade"  # trades only now
        assert f == {"result": ["btcusd@trade"], "id": 3}
        snap = await subscribed(ws, req_id=4, trades=False)
        assert snap["U"] == snap["u"] == sim.stats["BTCUSD"].last_event_id
        book = CurBook()
        book.apply(snap, snapshot=True)
        assert book.top() == truth(sim, "BTCUSD", snap["u"])
        await request(ws, "UNSUBSCRIBE", ["btcusd@depth@100ms", "btcusd@trade"], 5)
        while (await recv_json(ws)).get("id") != 5:
            pass
        await sim.wait_for(lambda: sim.stats["BTCUSD"].connections == 0)
        sim.advance("BTCUSD", 20)
        await quiet(ws, 0.2)
    assert sim.stats["BTCUSD"].handshakes == 1  # the trade stream kept the subscription


async def test_snapshot_query_modes(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None)
    async with ws_connect(url(sim, 3)) as top3:
        snap = await subscribed(top3, trades=False)
        assert len(snap["b"]) == len(snap["a"]) == 3
        bids, asks = truth(sim, "BTCUSD", snap["u"], 3)
        assert sorted((Decimal(p), Decimal(q)) for p, q in snap["b"]) == sorted(bids)
        assert sorted((Decimal(p), Decimal(q)) for p, q in snap["a"]) == sorted(asks)
    async with ws_connect(sim.current_url) as none:  # no snapshot parameter: none sent
        last = sim.stats["BTCUSD"].last_event_id
        await request(none, "SUBSCRIBE", ["btcusd@depth"], 1)
        assert await recv_json(none) == {"result": None, "id": 1}
        sim.advance("BTCUSD", 3)
        (first,) = await depth_frames(none, 1)
        assert first["U"] == last < first["u"]


async def test_bad_requests_get_errors(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None)
    async with ws_connect(url(sim)) as ws:
        await request(ws, "SUBSCRIBE", ["nopeusd@depth@100ms"], 1)
        assert (await recv_json(ws))["id"] == 1 and sim.rejected_unknown == 1
        await request(ws, "SUBSCRIBE", ["btcusd@bookTicker"], 2)
        f = await recv_json(ws)
        assert f["id"] == 2 and "Invalid stream" in f["error"]["msg"]
        await ws.send('{"method":"SUBSCRIBE"')
        assert (await recv_json(ws)) == {"error": {"code": 3, "msg": "Invalid JSON"}, "id": None}
        await request(ws, "FROB", [], 4)
        assert (await recv_json(ws))["error"]["code"] == 1
        await quiet(ws, 0.1)  # nothing was subscribed
    assert sim.stats["BTCUSD"].handshakes == 0


async def test_quiet_book_is_silent_but_pinged(make_sim: MakeSim) -> None:
    sim = await make_sim(symbols=["BTCUSD"], listed=["XRPUSD"], rate=200.0, ping_interval=0.1)
    async with ws_connect(url(sim), ping_interval=None) as ws:
        pings = count_pings(ws)
        snap = await subscribed(ws, "xrpusd")
        assert snap["s"] == "XRPUSD" and snap["b"] and snap["a"]
        await quiet(ws, 0.6)  # a quiet book sends nothing, not even heartbeats
    assert len(pings) >= 3


async def test_rate_zero_market_resumes_when_the_socket_drains(make_sim: MakeSim) -> None:
    # rate 0: the market pauses while the socket's queue holds the low-water mark (256)
    # and must be woken when the socket drains
    sim = await make_sim(rate=0.0)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # small buffers both ways:
    sock.connect((sim.host, sim.port))  # unread, the socket fills in a few hundred frames
    async with ws_connect(url(sim), sock=sock, max_queue=1) as ws:
        assert sim._server is not None
        for conn in sim._server.connections:
            conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        snap = await subscribed(ws, trades=False)
        await asyncio.sleep(0.5)  # not reading: the queue grows, the market pauses
        paused = sim.stats["BTCUSD"].updates
        await asyncio.sleep(0.2)
        assert sim.stats["BTCUSD"].updates == paused
        frames = await depth_frames(ws, paused + 500)
    assert [f["U"] for f in frames] == [snap["u"]] + [f["u"] for f in frames[:-1]]


# --- faults -------------------------------------------------------------------------------

async def test_gap_skips_an_update_id_range(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None)
    async with ws_connect(url(sim)) as ws:
        snap = await subscribed(ws, trades=False)
        sim.advance("BTCUSD", 1)
        (f1,) = await depth_frames(ws, 1)
        sim.inject("BTCUSD", "gap")
        sim.advance("BTCUSD", 30)
        frames = await depth_frames(ws, 2)
    (fired,) = sim.stats["BTCUSD"].fired("gap")
    assert f1["U"] == snap["u"]
    assert frames[0]["U"] == fired.socket_sequence > f1["u"]  # U above the client's last
    assert frames[1]["U"] == frames[0]["u"]


async def test_gap_armed_before_subscribing_keeps_the_snapshot(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None)
    sim.inject("BTCUSD", "gap")
    async with ws_connect(url(sim)) as ws:
        snap = await subscribed(ws, trades=False)
        book = CurBook()
        book.apply(snap, snapshot=True)
        assert book.top() == truth(sim, "BTCUSD", snap["u"])
        sim.advance("BTCUSD", 30)
        (first,) = await depth_frames(ws, 1)
    assert first["U"] > snap["u"]


async def test_duplicate_resends_the_previous_depth_frame_and_itself(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None)
    async with ws_connect(url(sim)) as ws:
        await subscribed(ws, trades=False)
        sim.advance("BTCUSD", 1)
        (f1,) = await depth_frames(ws, 1)
        sim.inject("BTCUSD", "duplicate")
        sim.advance("BTCUSD", 2)
        frames = await depth_frames(ws, 4)
    f2, older, again, f3 = frames
    assert (older, again) == (f1, f2)  # already sent: below, then equal to the last u
    assert f2["U"] == f1["u"] and f3["U"] == f2["u"]  # the ids go on as if nothing happened
    (fired,) = sim.stats["BTCUSD"].fired("duplicate")
    assert fired.socket_sequence == f2["u"]


async def test_duplicate_armed_before_subscribing_resends_the_snapshot(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None)
    sim.inject("BTCUSD", "duplicate")
    async with ws_connect(url(sim)) as ws:
        snap = await subscribed(ws, trades=False)
        sim.advance("BTCUSD", 1)
        first, older, again = await depth_frames(ws, 3)
    assert older == snap and again == first and first["U"] == snap["u"]


async def test_garbage_unknown_and_crossed(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None)
    async with ws_connect(url(sim)) as ws:
        snap = await subscribed(ws, trades=False)
        sim.inject("BTCUSD", "garbage")
        raw = await recv_raw(ws)
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(raw)
        sim.inject("BTCUSD", "unknown")
        sim.advance("BTCUSD", 30)
        (f1,) = await depth_frames(ws, 1)
        assert f1["U"] == snap["u"]
        mystery = await recv_json(ws)
        assert mystery["e"] == "mystery" and mystery["s"] == "BTCUSD"
        (f2,) = await depth_frames(ws, 1)
        assert f2["U"] == f1["u"]  # the mystery frame takes no id
        sim.inject("BTCUSD", "crossed")
        book = CurBook()
        book.apply(snap, snapshot=True)
        book.apply(f1)
        book.apply(f2)
        while True:
            f = (await depth_frames(ws, 1))[0]
            book.apply(f)
            if book.crossed():
                break
    log = sim.truth("BTCUSD").log
    assert f["u"] not in log.update_ids and f["u"] == sim.stats["BTCUSD"].fired("crossed")[0].socket_sequence


async def test_close_aborts_the_socket(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=100.0)
    async with ws_connect(url(sim)) as ws:
        await subscribed(ws)
        sim.inject("BTCUSD", "close")
        with pytest.raises(ConnectionClosedError) as info:
            while True:
                await recv_json(ws)
    assert info.value.rcvd is None
    await sim.wait_for(lambda: sim.current_connections == 0 and sim.stats["BTCUSD"].connections == 0)


async def test_stall_is_a_dead_socket_no_data_no_ping_no_pong(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=200.0, ping_interval=0.1)
    async with ws_connect(url(sim), ping_interval=None, close_timeout=0.2) as ws:
        pings = count_pings(ws)
        await subscribed(ws)
        await sim.wait_for(lambda: len(pings) >= 2)
        pong = await ws.ping()
        await asyncio.wait_for(pong, 1.0)  # alive: answered
        sim.inject("BTCUSD", "stall")
        await asyncio.sleep(0.05)  # frames already in flight may still arrive
        while True:
            try:
                await recv_raw(ws, 0.3)
            except TimeoutError:
                break
        n = len(pings)
        pong = await ws.ping()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pong, 0.5)
        assert len(pings) == n  # no server ping for 0.5 s at a 0.1 s interval
        assert sim.stats["BTCUSD"].updates > 0 and sim.current_connections == 1
    await sim.wait_for(lambda: sim.current_connections == 0, timeout=5)
    assert sim.stats["BTCUSD"].connections == 0


async def test_refuse_429_with_retry_after(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None)
    sim.inject("BTCUSD", "refuse", count=1, retry_after=3, status=429)
    with pytest.raises(InvalidStatus) as info:
        async with ws_connect(url(sim)):
            pass
    assert info.value.response.status_code == 429
    assert info.value.response.headers["Retry-After"] == "3"
    assert sim.current_refused == 1 and sim.stats["BTCUSD"].refused == 1
    async with ws_connect(url(sim)) as ws:  # the next one is accepted
        await subscribed(ws)


async def test_slow_snapshot_holds_the_symbol_but_not_the_ack(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None)
    sim.inject("BTCUSD", "slow_snapshot", delay=0.4)
    loop = asyncio.get_running_loop()
    async with ws_connect(url(sim)) as ws:
        await request(ws, "SUBSCRIBE", ["btcusd@depth@100ms"], 1)
        t0 = loop.time()
        assert await recv_json(ws) == {"result": None, "id": 1}
        sim.advance("BTCUSD", 10)  # published while the snapshot is held
        snap = await recv_json(ws)
        assert loop.time() - t0 >= 0.35
        assert snap["U"] == snap["u"] < sim.stats["BTCUSD"].last_event_id
        book = CurBook()
        book.apply(snap, snapshot=True)
        for f in await depth_frames(ws, 1):
            assert f["U"] == book.last
            book.apply(f)
            assert book.top() == truth(sim, "BTCUSD", f["u"])


async def test_random_gaps_are_visible_to_the_continuity_rule(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None, faults="gap=0.1")
    async with ws_connect(url(sim)) as ws:
        snap = await subscribed(ws, trades=False)
        sim.advance("BTCUSD", 200)
        await asyncio.sleep(0.1)
        last, gaps, seen = snap["u"], 0, []
        while True:
            try:
                f = await recv_json(ws, 0.2)
            except TimeoutError:
                break
            assert f["U"] >= last
            gaps += f["U"] > last
            last = f["u"]
            seen.append(f["u"])
    fired = sim.stats["BTCUSD"].fired("gap")
    assert fired and all(f.random for f in fired) and gaps > 0
    dropped = [f.socket_sequence for f in fired]  # the u of each frame not sent
    published = [u for u in sim.truth("BTCUSD").log.event_ids if u > snap["u"]]
    assert sorted(seen + dropped) == published  # every update sent or visibly skipped


# --- replay mode ----------------------------------------------------------------------------

CAPTURES = Path(__file__).resolve().parents[3] / "shared" / "gemini" / "captures"


@pytest.mark.skipif(not (CAPTURES / "GEMINI.ws.1.0").is_file(), reason="captures absent")
async def test_replayed_capture_over_the_current_api_equals_the_truth() -> None:
    async with (
        SimExchange(replay=CAPTURES / "GEMINI.ws.1.0", symbols=["ZECLTC"], speed=0) as sim,
        ws_connect(url(sim)) as ws,
    ):
        snap = await subscribed(ws, "zecltc")
        book = CurBook()
        book.apply(snap, snapshot=True)
        cursor = sim.truth("ZECLTC")
        n = 0
        with pytest.raises(ConnectionClosed) as info:
            while True:
                f = await recv_json(ws, 5.0)
                if f["e"] != "depthUpdate":
                    continue
                assert f["U"] == book.last < f["u"]
                book.apply(f)
                bids, asks = cursor.top_at(f["u"])
                assert book.top() == ([(Decimal(p), Decimal(a)) for p, a in bids],
                                      [(Decimal(p), Decimal(a)) for p, a in asks])
                n += 1
    assert info.value.rcvd is not None and info.value.rcvd.code == 1012  # the loop restarts
    log = sim.truth("ZECLTC").log  # every book change but the loop's reset (no frame has it)
    assert n == len([u for u in log.event_ids if u > snap["u"] and u not in log.resets]) > 0
