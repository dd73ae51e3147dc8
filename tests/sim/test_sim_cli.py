"""``python -m collector.sim`` and ``run_simulator``."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys

import pytest

from collector.sim import SimExchange, run_simulator
from collector.sim.__main__ import build_parser
from tests.sim.sim_helpers import http_get, recv_json, ws_connect


def test_parser_validates_fault_specs(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["--symbols", "btcusd,ethusd", "--faults", "gap=0.01"])
    assert args.symbols == ["BTCUSD", "ETHUSD"] and args.faults == "gap=0.01" and args.port == 8765
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["--faults", "gap=2"])
    assert info.value.code == 2
    assert "probability" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_run_simulator_until_cancelled() -> None:
    port = _free_port()
    started: asyncio.Future[SimExchange] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_simulator(port, ["SOLUSD"], 20.0, 3, "", 0.05,
                                             ready=started.set_result))
    sim = await asyncio.wait_for(started, 3.0)
    assert sim.port == port
    async with ws_connect(f"{sim.ws_url}/SOLUSD?heartbeat=true") as ws:
        assert (await recv_json(ws))["socket_sequence"] == 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_module_entry_point_runs_and_stops_on_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collector.sim", "--port", "0", "--symbols", "BTCUSD",
        "--rate", "20", "--heartbeat", "0.05", stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 10.0)).decode()
        match = re.search(r"rest http://([\d.]+):(\d+)", line)
        assert match, line
        host, port = match.group(1), int(match.group(2))
        status, _, symbols = await http_get(host, port, "/v1/symbols")
        assert status == 200 and symbols == ["btcusd"]
        async with ws_connect(f"ws://{host}:{port}/v1/marketdata/BTCUSD") as ws:
            assert (await recv_json(ws))["socket_sequence"] == 0
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 5.0) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
