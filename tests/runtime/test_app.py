"""The real `collector run` process: SIGTERM/SIGINT drain everything and exit 0 in time."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import orjson
import pytest

from collector.sim import SimExchange
from tests.helpers.app import Logs, write_config
from tests.helpers.e2e import (
    FAST_FEED,
    check_against_truth,
    read_records,
    reasons,
    segment_bytes,
    wait_until,
)

SYMBOLS = ["BTCUSD", "ETHUSD"]


def book_count(path: Path) -> int:
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
        from tests.helpers.e2e import make_config, running

        cfg = make_config(sim.ws_url, tmp_path, ["BTCUSD"])
        for _ in range(2):
            async with running(cfg) as app:
                await wait_until(lambda: app.feeds["BTCUSD"].stats.updates >= 50)
        recs = read_records(tmp_path, "BTCUSD")
        assert reasons(recs) == ["start", "start"]
        check_against_truth(sim, recs, "BTCUSD")


async def test_sighup_adds_and_removes_symbols_and_keeps_a_good_config(tmp_path):
    async with SimExchange(["BTCUSD", "ETHUSD"], seed=6, rate=200.0, heartbeat_s=0.05) as sim:
        cfg, out = tmp_path / "config.toml", tmp_path / "data"
        write_config(cfg, sim.ws_url, out, ["BTCUSD"])
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "collector", "run", "--config", str(cfg),
            stderr=asyncio.subprocess.PIPE)
        assert proc.stderr is not None  # stderr=PIPE
        logs = Logs(proc.stderr)
        try:
            btc, eth = (out / s / "current.jsonl" for s in ("BTCUSD", "ETHUSD"))
            await wait_until(lambda: book_count(btc) >= 20)
            # add ETHUSD, change a restart-only key
            write_config(cfg, sim.ws_url, out, ["BTCUSD", "ETHUSD"], depth=5)
            proc.send_signal(signal.SIGHUP)
            await wait_until(lambda: book_count(eth) >= 20, what="ETHUSD recorded after SIGHUP")
            assert logs.first("reload: these changes need a restart to apply")["keys"] == ["book.depth"]
            # a broken config is reported and the running one kept
            cfg.write_text("[feed]\nsymbols = 3\n")
            proc.send_signal(signal.SIGHUP)
            await wait_until(lambda: logs.has("reload: config rejected, keeping the running one"))
            assert "feed.symbols" in logs.first("reload: config rejected, keeping the running one")["error"]
            # remove BTCUSD: its feed stops, ETHUSD goes on
            write_config(cfg, sim.ws_url, out, ["ETHUSD"])
            proc.send_signal(signal.SIGHUP)
            await wait_until(lambda: sum(r["event"] == "reloaded" for r in logs.lines) == 2)
            assert logs.lines[-1]["removed"] == ["BTCUSD"] or any(
                r.get("removed") == ["BTCUSD"] for r in logs.lines)
            frozen = book_count(btc)
            before = book_count(eth)
            await wait_until(lambda: book_count(eth) >= before + 50)
            assert book_count(btc) == frozen
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 10) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
            await logs.task
        for sym in ("BTCUSD", "ETHUSD"):
            recs = read_records(out, sym)
            assert reasons(recs) == ["start"]
            check_against_truth(sim, recs, sym)


async def test_kill_9_then_restart_leaves_files_that_verify(tmp_path):
    async with SimExchange(["BTCUSD", "ETHUSD"], seed=8, rate=1500.0, heartbeat_s=0.05) as sim:
        cfg, out = tmp_path / "config.toml", tmp_path / "data"
        write_config(cfg, sim.ws_url, out, ["BTCUSD", "ETHUSD"])
        with open(cfg, "a") as f:
            f.write('rotate = "1s"\n')
        def books() -> int:
            try:
                return sum(d.count(b'"type":"book"') for d in segment_bytes(out / "BTCUSD"))
            except FileNotFoundError:  # a segment compressed away while we listed
                return 0

        for sig in (signal.SIGKILL, signal.SIGTERM):
            before = books() if (out / "BTCUSD").exists() else 0
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "collector", "run", "--config", str(cfg),
                stderr=asyncio.subprocess.DEVNULL)
            try:
                await wait_until(lambda: books() >= before + 300,  # noqa: B023  # awaited in this iteration
                                 timeout=20)
                proc.send_signal(sig)
                code = await asyncio.wait_for(proc.wait(), 10)
            finally:
                if proc.returncode is None:
                    proc.kill()
            assert code == (-9 if sig == signal.SIGKILL else 0)
        verify = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "collector", "verify", str(out),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        report, _ = await verify.communicate()
        assert verify.returncode == 0, report.decode()[-3000:]
        for sym in ("BTCUSD", "ETHUSD"):
            recs = read_records(out, sym)
            assert reasons(recs) == ["start", "start"]
            check_against_truth(sim, recs, sym)


@pytest.mark.parametrize("api", ["v1", "current"])
def test_default_connection_budget_fits_gemini_limit(tmp_path, api):
    """Gemini allows 300 connection attempts per 5 minutes; the default budget uses it all."""
    from collector import config
    from collector.runtime.app import App

    cfg = config.from_dict({"feed": {"symbols": ["BTCUSD"], "api": api},
                            "output": {"dir": str(tmp_path)}})
    bucket = App(cfg).bucket
    # the most attempts any 5 minutes can hold: the whole burst, then 5 minutes of refill
    assert bucket.capacity + 5 * 60 * bucket.rate == pytest.approx(300)
