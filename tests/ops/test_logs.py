"""The log sink (ops/logs.py): stderr that can go away without taking the collector with it."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

from tests.helpers.simulator import MakeSim


async def test_a_collector_whose_stderr_reader_is_gone_records_and_stops_on_sigterm(
        tmp_path: Path, make_sim: MakeSim) -> None:
    """A log line written to a closed pipe raised BrokenPipeError: in the SIGTERM handler
    (before it stopped anything), so the collector would not stop."""
    sim = await make_sim(symbols=["BTCUSD"], rate=50.0, heartbeat_s=0.05)
    out = tmp_path / "data"
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[feed]\nsymbols = ["BTCUSD"]\nurl = "{sim.ws_url}"\n'
                   f'[output]\ndir = "{out}"\n[log]\nlevel = "info"\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collector", "run", "--config", str(cfg), cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    await proc.stderr.readline()  # it has started logging; now nobody reads its stderr
    proc._transport.get_pipe_transport(2).close()  # type: ignore[attr-defined]  # the read end, closed
    current = out / "BTCUSD" / "current.jsonl"
    try:
        deadline = time.monotonic() + 20
        while not (current.exists() and current.read_bytes().count(b"\n") > 20):
            assert proc.returncode is None and time.monotonic() < deadline, "not recording"
            await asyncio.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:  # it would not stop: leave no process behind
            proc.kill()
            await proc.wait()
    assert current.read_bytes().endswith(b"\n")  # whole lines, flushed at the stop
