"""The blip: every socket of both APIs dropped at once (``sim.blip()``, ``GET /sim/blip``,
SIGUSR1 to ``python -m collector.sim``); and the whole exchange from the command line."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys

import orjson
import pytest
from websockets.exceptions import ConnectionClosed

from collector.sim import SimExchange
from tests.sim.sim_helpers import http_get, recv_json, ws_connect


async def drain_until_closed(ws) -> int | None:
    """Read until the socket closes; its close code as the client saw it."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 3.0)
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None


async def subscribe(ws, symbols: list[str], req_id: int = 1) -> None:
    params = [f"{s.lower()}@depth@100ms" for s in symbols]
    await ws.send(orjson.dumps({"method": "SUBSCRIBE", "params": params, "id": req_id}).decode())
    while (await recv_json(ws)).get("id") != req_id:
        pass


@pytest.mark.parametrize("how", ["python", "rest"])
async def test_blip_drops_every_socket_of_both_apis_at_once(how: str) -> None:
    async with SimExchange.whole(20, busy=2, rate=50.0, depth=20, quiet_depth=5, limits=False) as sim:
        names = sim.symbols
        current = [await ws_connect(f"{sim.current_url}/?snapshot=-1") for _ in range(2)]
        await subscribe(current[0], names[:10])
        await subscribe(current[1], names[10:])
        v1 = [await ws_connect(f"{sim.ws_url}/{s}") for s in names[:2]]
        sockets = current + v1
        await sim.wait_for(lambda: sim.current_connections == 2
                           and sum(st.connections for st in sim.stats.values()) == 22)
        if how == "python":
            assert sim.blip() == 4
        else:
            status, _, body = await http_get(sim.host, sim.port, "/sim/blip")
            assert status == 200 and body == {"dropped": 4}
        codes = await asyncio.gather(*(drain_until_closed(ws) for ws in sockets))
        assert codes == [None] * 4  # no close frame: the TCP connection just went
        await sim.wait_for(lambda: sim.current_connections == 0
                           and all(st.connections == 0 for st in sim.stats.values()))
        assert (sim.exchange_stats.blips, sim.exchange_stats.blip_sockets) == (1, 4)
        # The exchange itself carries on: new sockets get books and updates.
        async with ws_connect(f"{sim.current_url}/?snapshot=-1") as ws:
            await subscribe(ws, ["BTCUSD"])
            assert (await recv_json(ws))["s"] == "BTCUSD"


async def test_blip_with_no_socket_open_drops_nothing() -> None:
    async with SimExchange(["BTCUSD"], rate=None, depth=10) as sim:
        assert sim.blip() == 0
        assert sim.exchange_stats.blips == 1


async def test_command_line_whole_exchange_with_sigusr1_blip() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collector.sim", "--port", "0", "--exchange", "30", "--busy", "2",
        "--depth", "50", "--limit-scale", "0.1", stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 10.0)).decode()
        assert "exchange 30 symbols, 2 busy (BTCUSD,ETHUSD), limits on" in line, line
        match = re.search(r"rest http://([\d.]+):(\d+)", line)
        assert match, line
        host, port = match.group(1), int(match.group(2))
        status, _, listing = await http_get(host, port, "/v1/symbols")
        assert status == 200 and len(listing) == 30 and listing[-1].endswith("perp")
        async with ws_connect(f"ws://{host}:{port}/?snapshot=-1") as ws:
            await subscribe(ws, ["BTCUSD"])
            proc.send_signal(signal.SIGUSR1)
            assert await drain_until_closed(ws) is None
        _, _, stats = await http_get(host, port, "/sim/stats")
        assert stats["blips"] == 1 and stats["blip_sockets"] == 1 and stats["listed"] == 30
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 5.0) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_command_line_refuses_exchange_with_symbols(capsys: pytest.CaptureFixture[str]) -> None:
    from collector.sim.__main__ import main

    with pytest.raises(SystemExit) as info:
        main(["--exchange", "--symbols", "BTCUSD"])
    assert info.value.code == 2 and "--exchange lists its own symbols" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--exchange", "5", "--busy", "6"])
    assert "busy must be between 0 and n" in capsys.readouterr().err
