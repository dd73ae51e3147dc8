"""The real `collector run` process: SIGTERM/SIGINT drain everything and exit 0 in time."""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import orjson
import pytest

from collector.sim import SimExchange
from tests.e2e import FAST_FEED, check_against_truth, read_records, reasons, wait_until

SYMBOLS = ["BTCUSD", "ETHUSD"]


def book_count(path) -> int:
    try:
        return path.read_bytes().count(b'"type":"book"')
    except FileNotFoundError:
        return 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_drains_everything_and_exits_0(tmp_path, sig):
    async with SimExchange(SYMBOLS, seed=3, rate=500.0, heartbeat_s=0.05, depth=500) as sim:
        feed = "\n".join(f"{k} = {v}" for k, v in FAST_FEED.items())
        cfg = tmp_path / "config.toml"
        cfg.write_text(
            f'[feed]\nurl = "{sim.ws_url}"\nsymbols = ["BTCUSD", "ETHUSD"]\n{feed}\n'
            f'[book]\nemit = "every"\n[output]\ndir = "{tmp_path / "data"}"\n'
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "collector", "run", "--config", str(cfg),
            stderr=asyncio.subprocess.PIPE)
        try:
            files = [tmp_path / "data" / s / "current.jsonl" for s in SYMBOLS]
            await wait_until(lambda: all(book_count(f) >= 300 for f in files), timeout=20)
            sent = time.monotonic()
            proc.send_signal(sig)
            _, err = await asyncio.wait_for(proc.communicate(), 10)
            took = time.monotonic() - sent
        finally:
            if proc.returncode is None:
                proc.kill()
        assert proc.returncode == 0, err.decode()[-2000:]
        assert took < 5.0
        logs = [orjson.loads(line) for line in err.splitlines()]
        stopped = next(r for r in logs if r["event"] == "stopped")
        for sym in SYMBOLS:
            recs = read_records(tmp_path / "data", sym)
            assert reasons(recs) == ["start"]
            check_against_truth(sim, recs, sym)
            # every frame the collector processed before the signal is on disk
            counts = stopped["feeds"][sym]
            assert counts["updates"] == sum(1 for r in recs if r["type"] == "book" and r["seq"] > 0)
            assert counts["trades"] == sum(1 for r in recs if r["type"] == "trade")
        assert any(r["event"] == "signal received, stopping" for r in logs)


async def test_restart_is_marked_and_appends(tmp_path):
    """A second run appends to the same files; its first record is a start resync."""
    async with SimExchange(["BTCUSD"], seed=4, rate=200.0, heartbeat_s=0.05) as sim:
        from tests.e2e import make_config, running

        cfg = make_config(sim.ws_url, tmp_path, ["BTCUSD"])
        for _ in range(2):
            async with running(cfg) as app:
                await wait_until(lambda: app.feeds["BTCUSD"].stats.updates >= 50)
        recs = read_records(tmp_path, "BTCUSD")
        assert reasons(recs) == ["start", "start"]
        check_against_truth(sim, recs, "BTCUSD")
