"""Gemini's limits on the simulator: 429 for too many current-API handshakes, too much
request weight and too many REST requests, each counted in ``sim.exchange_stats``."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from websockets.exceptions import InvalidStatus

from collector.gemini import limits as gemini
from collector.sim import SimExchange, SimLimits
from collector.sim.ratelimit import Window
from tests.helpers.simulator import MakeSim
from tests.sim.sim_helpers import http_get, recv_json, ws_connect


def test_window_admits_up_to_its_cap_and_says_when_there_is_room() -> None:
    w = Window(3, 10.0)
    assert [w.admit(t) for t in (0.0, 1.0, 2.0)] == [None, None, None]
    assert w.admit(3.0) == pytest.approx(7.0)  # the attempt at 0.0 leaves at 10.0
    assert w.used == 3  # a refusal is not counted
    assert w.admit(10.0) is None
    heavy = Window(10, 10.0)
    assert heavy.admit(0.0, 6) is None and heavy.admit(1.0, 3) is None
    assert heavy.admit(2.0, 5) == pytest.approx(8.0)  # needs the 6 from t=0 gone
    assert heavy.admit(2.0, 11) == 10.0  # never fits: a whole window


def test_limits_come_from_gemini_s_numbers_and_scale() -> None:
    lim = SimLimits()
    assert (lim.connect_attempts, lim.connect_window_s) == (gemini.CONNECT_ATTEMPTS, gemini.CONNECT_WINDOW_S)
    assert (lim.request_weight, lim.request_window_s) == (gemini.REQUEST_WEIGHT, gemini.REQUEST_WINDOW_S)
    assert (lim.rest_per_minute, lim.rest_burst) == (gemini.REST_PER_MINUTE, gemini.REST_BURST)
    small = lim.scaled(0.01)
    assert (small.connect_attempts, small.request_weight, small.rest_per_minute) == (3, 70, 1)
    assert small.connect_window_s == lim.connect_window_s
    with pytest.raises(ValueError, match="connect_attempts"):
        SimLimits(connect_attempts=0)


async def test_sixth_handshake_over_a_limit_of_five_gets_429_with_retry_after(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None, limits=SimLimits(connect_attempts=5))
    url = f"{sim.current_url}/?snapshot=-1"
    for _ in range(5):
        async with ws_connect(url):
            pass
    with pytest.raises(InvalidStatus) as info:
        async with ws_connect(url):
            pass
    response = info.value.response
    assert response.status_code == 429
    retry = int(response.headers["Retry-After"])
    assert 1 <= retry <= gemini.CONNECT_WINDOW_S
    assert orjson.loads(response.body)["reason"] == "RateLimited"
    assert sim.exchange_stats.connect_limited == 1 and sim.exchange_stats.total_429 == 1
    async with ws_connect(f"{sim.ws_url}/BTCUSD") as ws:  # v1 handshakes are not limited
        assert (await recv_json(ws))["socket_sequence"] == 0


async def test_a_client_that_waits_retry_after_gets_in(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None, limits=SimLimits(connect_attempts=1, connect_window_s=0.3))
    url = f"{sim.current_url}/?snapshot=-1"
    async with ws_connect(url):
        pass
    with pytest.raises(InvalidStatus) as info:
        async with ws_connect(url):
            pass
    await asyncio.sleep(int(info.value.response.headers["Retry-After"]))  # what a client must do
    async with ws_connect(url):
        pass
    assert sim.exchange_stats.connect_limited == 1


async def request(ws, method: str, params: list[str], req_id: int) -> dict[str, Any]:
    """Send a request; return its reply (the snapshots that come with it are skipped)."""
    await ws.send(orjson.dumps({"method": method, "params": params, "id": req_id}).decode())
    while True:
        frame = await recv_json(ws)
        if frame.get("id") == req_id:
            return frame


async def test_request_weight_over_the_limit_gets_an_error_reply_with_code_429(make_sim: MakeSim) -> None:
    sim = await make_sim(symbols=["BTCUSD", "ETHUSD", "SOLUSD"], rate=None,
                         limits=SimLimits(request_weight=10))
    async with ws_connect(f"{sim.current_url}/?snapshot=-1") as ws:
        both = ["btcusd@depth@100ms", "btcusd@trade", "ethusd@depth@100ms", "ethusd@trade"]
        assert await request(ws, "SUBSCRIBE", both, 1) == {"result": None, "id": 1}  # weight 4
        assert await request(ws, "UNSUBSCRIBE", ["ethusd@trade"], 2) == {"result": None, "id": 2}  # 5
        sol = ["solusd@depth@100ms", "solusd@trade", "ethusd@trade", "btcusd@depth", "ethusd@depth"]
        assert (await request(ws, "SUBSCRIBE", sol, 3))["result"] is None  # 10: at the limit
        refused = await request(ws, "SUBSCRIBE", ["solusd@trade"], 4)  # 11: over it
        assert set(refused) == {"error", "id"} and refused["id"] == 4
        assert refused["error"]["code"] == 429 and "weight" in refused["error"]["msg"]
        refused = await request(ws, "UNSUBSCRIBE", ["solusd@trade"], 5)  # unsubscribes weigh too
        assert refused["error"]["code"] == 429
        listed = await request(ws, "LIST_SUBSCRIPTIONS", [], 6)  # not weighed; nothing was undone
        assert "solusd@trade" in listed["result"]
    assert sim.exchange_stats.request_limited == 2
    assert sim.exchange_stats.request_weight == 10
    assert sim.exchange_stats.total_429 == 2


async def test_rest_over_the_limit_gets_429_and_the_control_routes_are_not_counted(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None, limits=SimLimits(rest_per_minute=3, rest_burst=2))
    for _ in range(5):
        status, _, _ = await http_get(sim.host, sim.port, "/v1/symbols")
        assert status == 200
    status, headers, body = await http_get(sim.host, sim.port, "/v1/book/btcusd")
    assert status == 429 and body["reason"] == "RateLimited"
    assert 1 <= int(headers["retry-after"]) <= 60
    status, _, stats = await http_get(sim.host, sim.port, "/sim/stats")
    assert status == 200 and stats["rest_limited"] == 1 and stats["total_429"] == 1
    assert sim.exchange_stats.rest_limited == 1


async def test_limits_off_by_default_outside_whole_exchange_mode(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None)
    for _ in range(gemini.REST_PER_MINUTE + gemini.REST_BURST + 1):
        status, _, _ = await http_get(sim.host, sim.port, "/v1/symbols")
        assert status == 200
    assert sim.exchange_stats.total_429 == 0


async def test_refuse_fault_429s_are_counted_and_503s_are_not(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None)
    sim.inject("BTCUSD", "refuse", count=2)
    sim.inject("BTCUSD", "refuse", status=503)
    for url, status in ((f"{sim.ws_url}/BTCUSD", 429), (f"{sim.current_url}/", 429),
                        (f"{sim.ws_url}/BTCUSD", 503)):
        with pytest.raises(InvalidStatus) as info:
            async with ws_connect(url):
                pass
        assert info.value.response.status_code == status
    assert sim.exchange_stats.refused_429 == 2 and sim.exchange_stats.total_429 == 2


async def test_a_full_start_of_the_whole_exchange_within_the_limits_gets_no_429() -> None:
    """What the collector must do: 347 symbols, 50 per socket (7 handshakes, weight 694)."""
    async with SimExchange.whole(rate=None, depth=10, quiet_depth=3) as sim:
        _, _, listing = await http_get(sim.host, sim.port, "/v1/symbols")
        sockets = []
        try:
            for i in range(0, len(listing), 50):
                ws = await ws_connect(f"{sim.current_url}/?snapshot=-1")
                sockets.append(ws)
                params = [f"{s}@{k}" for s in listing[i:i + 50] for k in ("depth@100ms", "trade")]
                assert (await request(ws, "SUBSCRIBE", params, i))["result"] is None
            await sim.wait_for(lambda: all(st.connections == 1 for st in sim.stats.values()))
        finally:
            for ws in sockets:
                await ws.close()
        assert sim.exchange_stats.request_weight == 2 * 347
        assert sim.exchange_stats.total_429 == 0
