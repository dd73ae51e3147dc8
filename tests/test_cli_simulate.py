"""`collector simulate`: forwards to `python -m collector.sim`, options and all."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys

import orjson
from websockets.asyncio.client import connect

from collector.cli import build_parser


def test_parser_leaves_simulator_options_to_the_simulator() -> None:
    args, rest = build_parser().parse_known_args(["simulate", "--port", "0", "--faults", "gap=0.1"])
    assert args.command == "simulate" and rest == ["--port", "0", "--faults", "gap=0.1"]


def test_simulate_help_shows_simulator_options() -> None:
    proc = subprocess.run([sys.executable, "-m", "collector", "simulate", "--help"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0
    assert "--faults" in proc.stdout and "--rate" in proc.stdout


def test_simulate_bad_option_is_a_usage_error() -> None:
    proc = subprocess.run([sys.executable, "-m", "collector", "simulate", "--faults", "gap=2"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 2 and "probability" in proc.stderr


def test_other_commands_still_reject_unknown_options() -> None:
    proc = subprocess.run([sys.executable, "-m", "collector", "run", "--port", "0"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 2 and "unrecognized arguments: --port 0" in proc.stderr


async def test_simulate_serves_a_snapshot_and_stops_on_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collector", "simulate", "--port", "0", "--symbols", "BTCUSD",
        stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
        match = re.search(r"ws (ws://[\d.]+:\d+/v1/marketdata)/SYMBOL", line)
        assert match, line
        async with connect(f"{match.group(1)}/BTCUSD?heartbeat=true", open_timeout=5) as ws:
            first = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert first["type"] == "update" and first["socket_sequence"] == 0 and first["events"]
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
