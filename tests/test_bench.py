"""The benchmark (bench/) works: a short run end to end, and its parts.

Not a timed test: it checks that `python -m bench.run --quick` runs every kind of
contender against the simulator and writes well-formed JSON with positive figures. The
numbers themselves are for people (bench/README.md), never asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from bench.loopmarket import LoopMarket
from bench.profile import summarise
from bench.run import percentiles, symbols_for
from bench.simproc import frame
from collector.gemini.v1_stream import V1Stream
from collector.sim.market import Market
from collector.sim.symbols import spec_for

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(120)
def test_quick_run_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--json", str(out),
         "--workdir", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=110, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["settings"]["quick"] is True
    assert report["machine"]["python"] and report["machine"]["machine"]
    assert "python -m bench.run --quick" in report["command"]
    runs = {(r["contender"], r["mode"]): r for r in report["runs"]}
    assert not [r for r in report["runs"] if "error" in r], report["runs"]
    assert {("collector", "sat"), ("floor", "sat"), ("crawler", "sat"),
            ("collector", "paced")} <= set(runs)
    for r in runs.values():
        assert r["updates"] > 0, r
        assert r["updates_per_cpu_s"] > 0 and r["updates_per_wall_s"] > 0, r
        assert r["cpu_s"] > 0 and r["peak_rss_mb"] > 0, r
        lat = r["latency"]
        assert lat["n"] > 0 and 0 < lat["p50_ms"] <= lat["p99_ms"] <= lat["p999_ms"], r
    assert runs[("floor", "sat")]["x_floor_cpu"] == 1.0
    assert runs[("collector", "sat")]["x_floor_cpu"] > 0
    assert runs[("collector", "paced")]["offered_per_s"] == 500.0
    assert report["rss_per_symbol"]["per_symbol_mb"] > 0
    assert any("p99 latency" in t["target"] for t in report["targets"])
    assert "upd/CPU-s" in report["table"] and "upd/CPU-s" in proc.stdout


def test_loop_market_returns_to_its_initial_book() -> None:
    m = Market(spec_for("BTCUSD"), 3, 60)
    bids, asks = dict(m.bids.levels), dict(m.asks.levels)
    loop = LoopMarket(m, 300)
    first = [loop.step(1).event_id for _ in range(len(loop.frames))]
    assert first == sorted(first) and len(set(first)) == len(first)
    assert loop.pos == 0 and loop.bids.levels == bids and loop.asks.levels == asks
    for _ in range(7):
        loop.step(2)
    # a snapshot taken mid-loop is the book after the frames served so far
    best_bid, best_ask = loop.bids.best(), loop.asks.best()
    assert best_bid is not None and best_ask is not None and best_bid < best_ask


def test_loop_market_frames_keep_a_stream_live() -> None:
    """The looping tape read as the collector reads it: no gap, never crossed."""
    from collector.sim import frames as f

    m = Market(spec_for("ETHUSD"), 5, 40)
    sub = f.Subscription(heartbeat=True)
    loop = LoopMarket(m, 200)
    s = V1Stream("ETHUSD", 10, True)
    s.feed(f.snapshot_frame(m.spec, loop.bids, loop.asks, loop.event_id, sub, 0), 1)
    for seq in range(1, 2 * len(loop.frames) + 1):
        u = loop.step(1_764_559_146_000 + seq)
        s.feed(f.update_frame(u, f.filtered_events(u, sub) or b"[]", seq), seq)
    assert s.live


def test_profile_summary_ranks_self_time() -> None:
    raw = "\n".join([
        "thread (1): MainThread;main (collector/cli.py:1);parse (collector/gemini/v1.py:9) 6",
        "thread (1): MainThread;main (collector/cli.py:1);set (collector/core/book.py:3) 3",
        "thread (1): MainThread;main (collector/cli.py:1) 1",
    ])
    text = summarise(raw, title="t")
    lines = text.splitlines()
    assert "10 samples" in text
    self_rows = lines[lines.index("self time by function (top 30):") + 1:]
    assert "60.00%" in self_rows[0] and "parse (collector/gemini/v1.py)" in self_rows[0]
    assert "100.00%  main (collector/cli.py)" in text


def test_percentiles_and_symbols() -> None:
    p = percentiles([i * 1_000_000 for i in range(1, 1001)])  # 1..1000 ms
    assert p["n"] == 1000 and p["max_ms"] == 1000.0
    assert (p["p50_ms"], p["p99_ms"], p["p999_ms"]) == (500.0, 990.0, 999.0)
    assert percentiles([])["p50_ms"] is None
    syms = symbols_for(100)
    assert len(set(syms)) == 100 and syms[0] == "BTCUSD"
    assert all(orjson.loads(orjson.dumps(s)) == s for s in syms)


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
@pytest.mark.parametrize("text", [True, False])
def test_preframed_sends_are_the_bytes_websockets_writes(size: int, text: bool) -> None:
    from websockets.frames import Frame, Opcode

    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    want = Frame(Opcode.TEXT if text else Opcode.BINARY, data).serialize(mask=False, extensions=[])
    assert frame(data, text) == want
