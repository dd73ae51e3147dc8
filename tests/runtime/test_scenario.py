"""The whole production story in one run of the real process: rotation under load, kill -9,
restart, a really full disk (a small tmpfs), a SIGHUP that adds a symbol, SIGTERM. The files
pass `collector verify`, every loss is marked, `collector cat` reads them back in order, and
every book equals the simulator's truth."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from collector.sim import SimExchange
from tests.helpers.app import Logs, write_config
from tests.helpers.e2e import check_against_truth, read_records, reasons, segment_bytes, wait_until


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def books(folder: Path) -> int:
    try:
        return sum(d.count(b'"type":"book"') for d in segment_bytes(folder))
    except (FileNotFoundError, OSError):
        return 0


async def collector(cfg: Path) -> tuple[asyncio.subprocess.Process, Logs]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collector", "run", "--config", str(cfg), stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None  # stderr=PIPE
    return proc, Logs(proc.stderr)


async def test_rotation_kill_restart_full_disk_sighup(tmp_path, small_disk):
    out = small_disk / "data"
    cfg = tmp_path / "config.toml"
    async with SimExchange(["BTCUSD", "ETHUSD", "SOLUSD"], seed=12, rate=400.0, heartbeat_s=0.05) as sim:
        def configure(symbols):
            write_config(cfg, sim.ws_url, out, symbols)
            with open(cfg, "a") as f:
                f.write('rotate = "1s"\nmin_free_mb = 4\n')

        configure(["BTCUSD", "ETHUSD"])
        btc = out / "BTCUSD"
        proc, logs = await collector(cfg)
        await wait_until(lambda: books(btc) >= 500, timeout=20)
        proc.kill()
        await proc.wait()
        await logs.task

        proc, logs = await collector(cfg)
        try:
            before = books(btc)
            await wait_until(lambda: books(btc) >= before + 300, timeout=20)
            # fill the disk for real
            filler = small_disk / "filler"
            subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M", "count=64"],
                           capture_output=True)
            await wait_until(lambda: logs.has("write failed, dropping lines"), timeout=20)
            await wait_until(lambda: logs.has("low free disk space"), timeout=10)
            await asyncio.sleep(0.5)  # a stretch of updates that cannot be written
            filler.unlink()
            await wait_until(lambda: logs.has("writing again after loss"), timeout=20)
            configure(["BTCUSD", "ETHUSD", "SOLUSD"])
            proc.send_signal(signal.SIGHUP)
            await wait_until(lambda: books(out / "SOLUSD") >= 100, timeout=20, what="SOLUSD after SIGHUP")
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 10) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
            await logs.task
        assert proc.returncode == 0

        verify = subprocess.run([sys.executable, "-m", "collector", "verify", str(out)],
                                capture_output=True, text=True, timeout=120)
        assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr[-2000:]
        dropped = 0
        for sym in ("BTCUSD", "ETHUSD", "SOLUSD"):
            recs = read_records(out, sym)
            check_against_truth(sim, recs, sym)
            dropped += sum(r["dropped"] for r in recs if r["type"] == "resync" and r["reason"] == "dropped")
            assert reasons(recs)[:2] == ["start", "start"] or sym == "SOLUSD"
        assert dropped > 0, "the full disk must be marked in the files"
        cat = subprocess.run([sys.executable, "-m", "collector", "cat", str(out), "--symbol", "BTCUSD"],
                             capture_output=True, timeout=120)
        assert cat.returncode == 0
        catted = [orjson.loads(line) for line in cat.stdout.splitlines()]
        assert catted == read_records(out, "BTCUSD")
