"""`collector demo`: pure rendering/config helpers, and the command as a real subprocess."""

from __future__ import annotations

import asyncio
import gzip
import os
import re
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector import config
from collector.cli import build_parser
from collector.tools import demo, demo_view
from collector.tools.demo_view import SymbolView

# ---- pure helpers -------------------------------------------------------------------------


def view(symbol: str = "BTCUSD", **kw: Any) -> SymbolView:
    base: dict[str, Any] = {"symbol": symbol, "live": True, "connects": 1, "updates": 100,
                            "trades": 7, "resyncs": {}, "unknown": 0, "bid": "60000.5",
                            "ask": "60001", "bytes_written": 12_345, "quiet_s": 0.1}
    base.update(kw)
    return SymbolView(**base)


def test_fmt_bytes() -> None:
    assert demo_view.fmt_bytes(0) == "0 B"
    assert demo_view.fmt_bytes(999) == "999 B"
    assert demo_view.fmt_bytes(12_345) == "12.3 kB"
    assert demo_view.fmt_bytes(5_600_000) == "5.6 MB"
    assert demo_view.fmt_bytes(7 * 10**12) == "7000.0 GB"


def test_fmt_spread_is_exact_decimal() -> None:
    assert demo_view.fmt_spread("60000.5", "60001") == "0.5 (0.08 bp)"
    assert demo_view.fmt_spread("0.1", "0.3") == "0.2 (10000 bp)"
    assert demo_view.fmt_spread("149.999", "150.001") == "0.002 (0.13 bp)"
    assert demo_view.fmt_spread(None, "1") == "-"
    assert demo_view.fmt_spread("x", "1") == "?"


def test_fmt_resyncs_compact_and_sorted() -> None:
    assert demo_view.fmt_resyncs({}) == "0"
    assert demo_view.fmt_resyncs({"gap": 0}) == "0"
    assert demo_view.fmt_resyncs({"closed": 1, "gap": 2, "crossed": 1}) == "4 (gap 2, closed 1, crossed 1)"


def test_state_label() -> None:
    assert demo_view.state_label(view()) == "live"
    assert demo_view.state_label(view(quiet_s=2.4)) == "quiet 2s"
    assert demo_view.state_label(view(live=False)) == "syncing"
    assert demo_view.state_label(view(live=False, connects=0)) == "starting"


def test_update_rates() -> None:
    prev = [view(updates=10), view("ETHUSD", updates=0)]
    cur = [view(updates=20), view("ETHUSD", updates=5), view("SOLUSD", updates=4)]
    assert demo_view.update_rates(prev, cur, 0.5) == {"BTCUSD": 20.0, "ETHUSD": 10.0, "SOLUSD": 8.0}
    assert demo_view.update_rates(None, cur, 1.0) == {"BTCUSD": 0.0, "ETHUSD": 0.0, "SOLUSD": 0.0}
    assert demo_view.update_rates(prev, cur, 0.0)["BTCUSD"] == 0.0


def test_render_table_rows_and_clipping() -> None:
    views = [view(resyncs={"gap": 2, "stale": 1}, unknown=3),
             view("ETHUSD", live=False, bid=None, ask=None)]
    lines = demo_view.render_table(views, {"BTCUSD": 19.5}, 12.3, ["12:00:01 BTCUSD resync reason=gap"],
                              width=None, seconds=30)
    text = "\n".join(lines)
    assert lines[0].startswith("running  12.3 s, stopping in 18 s")
    header = next(line for line in lines if line.startswith("symbol"))
    for col in ("state", "upd/s", "trades", "best bid", "best ask", "spread", "written", "resyncs"):
        assert col in header
    btc = next(line for line in lines if line.startswith("BTCUSD"))
    for part in ("live", "19.5", "100", "60000.5", "60001", "0.5 (0.08 bp)", "12.3 kB",
                 "3 (gap 2, stale 1); 3 unknown skipped"):
        assert part in btc
    assert "syncing" in next(line for line in lines if line.startswith("ETHUSD"))
    assert "recent events:" in text and "reason=gap" in text
    # Columns line up: every row has the written column at the same offset.
    assert btc.index("kB") == next(line for line in lines if line.startswith("ETHUSD")).index("kB")
    narrow = demo_view.render_table(views, {}, 1.0, width=40)
    assert all(len(line) < 40 for line in narrow)


def test_render_plain_one_line_per_symbol() -> None:
    lines = demo_view.render_plain([view(resyncs={"gap": 1}), view("ETHUSD")], {"BTCUSD": 20.0}, 5.0)
    assert len(lines) == 2
    assert lines[0] == ("[   5.0s] BTCUSD live upd/s=20.0 updates=100 trades=7 resyncs=1(gap1) "
                        "bid=60000.5 ask=60001 spread=0.5 written=12.3kB")
    assert "\x1b" not in "".join(lines)


def test_redraw_moves_up_over_the_previous_frame() -> None:
    assert demo_view.redraw(0, ["a", "b"]) == "\x1b[2Ka\n\x1b[2Kb\n\x1b[J"
    assert demo_view.redraw(2, ["c"]).startswith("\x1b[2F\x1b[2Kc\n")


def test_render_summary_points_at_the_files() -> None:
    files = {"BTCUSD": Path("data/BTCUSD/current.jsonl")}
    lines = demo_view.render_summary([view(resyncs={"closed": 1}), view("ETHUSD", updates=0)], 30.04,
                                files, Path("data"), chaos=True)
    text = "\n".join(lines)
    assert "demo stopped after 30.0 s." in text
    assert "data/BTCUSD/current.jsonl" in text and "1 (closed 1)" in text
    assert "tail -n 3 data/BTCUSD/current.jsonl" in text
    assert "grep -h" in text
    assert "(none)" in next(line for line in lines if line.startswith("ETHUSD"))


def test_fmt_event() -> None:
    line = demo_view.fmt_event({"timestamp": "12:00:01", "symbol": "BTCUSD", "event": "resync",
                           "level": "warning", "reason": "gap", "attempt": 1})
    assert line == "12:00:01 BTCUSD resync reason=gap attempt=1"


def test_demo_config_overrides_feed_keeps_book_and_output(tmp_path: Path) -> None:
    base = config.from_dict({"feed": {"symbols": ["ETHUSD"], "stale_after_s": 30},
                             "book": {"depth": 3, "emit": "every"},
                             "output": {"dir": str(tmp_path)}})
    cfg = demo.demo_config(base, None, "ws://127.0.0.1:1/v1/marketdata", chaos=False)
    assert cfg.feed.symbols == ("ETHUSD",) and cfg.feed.url == "ws://127.0.0.1:1/v1/marketdata"
    assert cfg.book == base.book and cfg.output == base.output
    assert cfg.feed.stale_after_s == 30 and cfg.feed.connect_burst > base.feed.connect_burst
    assert cfg.feed.connects_per_minute > base.feed.connects_per_minute
    chaos = demo.demo_config(base, ["BTCUSD"], "ws://x/v1/marketdata", chaos=True)
    assert chaos.feed.symbols == ("BTCUSD",) and chaos.feed.stale_after_s <= 3
    assert chaos.feed.snapshot_timeout_s > 2.0  # slow_snapshot's default delay must not break it
    assert chaos.feed.backoff_max_s >= chaos.feed.backoff_initial_s
    default = demo.demo_config(None, None, "ws://x/v1/marketdata", chaos=False)
    assert default.feed.symbols == demo.DEFAULT_SYMBOLS
    assert (default.output.dir, default.book.depth, default.book.emit) == (Path("data"), 10, "change")


def test_chaos_faults_parse() -> None:
    from collector.sim import parse_fault_spec

    assert len(parse_fault_spec(demo.CHAOS_FAULTS)) == 8


def test_demo_parser() -> None:
    args = build_parser().parse_args(["demo", "--seconds", "5", "--symbols", "btcusd, ethusd",
                                      "--chaos", "--rate", "50"])
    assert (args.seconds, args.symbols, args.chaos, args.rate) == (5.0, ("BTCUSD", "ETHUSD"), True, 50.0)
    for bad in (["--symbols", "BTCUSD,BTCUSD"], ["--symbols", ","], ["--seconds", "0"],
                ["--rate", "-1"], ["--symbols", "BTC-USD"]):
        with pytest.raises(SystemExit) as info:
            build_parser().parse_args(["demo", *bad])
        assert info.value.code == 2


# ---- the command, as a real subprocess ----------------------------------------------------------

DEMO = [sys.executable, "-m", "collector", "demo"]


def _env() -> dict[str, str]:
    # The package must import from any cwd (the demo writes into its cwd).
    root = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}


_SEGMENT = re.compile(r"^[A-Z0-9]+\.(\d{8}T\d{6}Z)(?:-(\d+))?\.jsonl(\.zst|\.gz)?$")


def _segment_lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    if path.suffix == ".zst":
        import zstandard

        data = zstandard.ZstdDecompressor().stream_reader(data).read()
    elif path.suffix == ".gz":
        data = gzip.decompress(data)
    assert data.endswith(b"\n"), f"{path}: torn last line"
    return data.splitlines()


def read_records(folder: Path) -> list[dict[str, Any]]:
    """One run's records in order: segments closed by rotation (a run that crosses the hour),
    then current.jsonl; segment headers, and the book a new segment repeats, left out."""
    closed = sorted((m.group(1), int(m.group(2) or 1), p) for p in folder.iterdir()
                    if (m := _SEGMENT.match(p.name)))
    out: list[dict[str, Any]] = []
    last_book: dict[str, Any] | None = None
    for path in [p for *_, p in closed] + [folder / "current.jsonl"]:
        recs = [orjson.loads(line) for line in _segment_lines(path)]  # every line is JSON
        if recs and recs[0]["type"] == "header":
            recs = recs[1:]
            if out and recs and recs[0] == last_book:
                recs = recs[1:]
        out += recs
        last_book = next((r for r in reversed(out) if r["type"] == "book"), None)
    return out


def check_file(folder: Path) -> list[dict[str, Any]]:
    """Starts with resync/start; books sorted, uncrossed; seq rising within each stream."""
    recs = read_records(folder)
    assert recs and recs[0]["type"] == "resync" and recs[0]["reason"] == "start", recs[:1]
    last_seq = last_book_seq = -1
    for r in recs:
        assert r["type"] in ("resync", "book", "trade", "auction"), r
        if r["type"] == "resync":
            last_seq = last_book_seq = -1
            continue
        assert r["seq"] >= last_seq, r  # a frame's trades and its book share its seq
        last_seq = r["seq"]
        if r["type"] == "book":
            assert r["seq"] > last_book_seq, r
            last_book_seq = r["seq"]
            bids = [Decimal(p) for p, _ in r["bids"]]
            asks = [Decimal(p) for p, _ in r["asks"]]
            assert bids == sorted(bids, reverse=True) and len(set(bids)) == len(bids), r
            assert asks == sorted(asks) and len(set(asks)) == len(asks), r
            assert not bids or not asks or bids[0] < asks[0], f"crossed book: {r}"
    return recs


def test_read_records_joins_rotated_segments(tmp_path: Path) -> None:
    import zstandard

    head = b'{"type":"header","symbol":"BTCUSD"}\n'
    start = b'{"type":"resync","symbol":"BTCUSD","reason":"start"}\n'
    book1 = b'{"type":"book","seq":0,"bids":[["2","1"]],"asks":[["3","1"]]}\n'
    book2 = b'{"type":"book","seq":1,"bids":[["2","1"]],"asks":[["4","1"]]}\n'
    (tmp_path / "BTCUSD.20260101T000000Z.jsonl.zst").write_bytes(
        zstandard.ZstdCompressor().compress(head + start + book1))
    (tmp_path / "current.jsonl").write_bytes(head + book1 + book2)
    recs = check_file(tmp_path)
    assert [r.get("seq") for r in recs] == [None, 0, 1]


def test_demo_runs_for_seconds_and_leaves_valid_files(tmp_path: Path) -> None:
    started = time.monotonic()
    proc = subprocess.run([*DEMO, "--seconds", "5", "--every", "1"], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 15
    out = proc.stdout
    assert "\x1b" not in out  # not a TTY: no cursor movement
    status = [line for line in out.splitlines() if line.startswith("[")]
    assert len(status) >= 9, out  # three symbols, at ~1, 2, 3(, 4) s
    assert any("BTCUSD live" in line for line in status), out
    assert "demo stopped after" in out
    assert "tail -n 3 data/BTCUSD/current.jsonl" in out
    for sym in demo.DEFAULT_SYMBOLS:
        assert f"data/{sym}/current.jsonl" in out
        recs = check_file(tmp_path / "data" / sym)
        books = [r for r in recs if r["type"] == "book"]
        assert len(books) > 10 and all(len(b["bids"]) <= 10 for b in books)


def test_demo_chaos_resyncs_heal_with_config(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        '[feed]\nsymbols = ["BTCUSD", "ETHUSD"]\nurl = "wss://example.invalid/v1/marketdata"\n'
        '[book]\ndepth = 5\nemit = "every"\n[output]\ndir = "rec"\n')
    proc = subprocess.run([*DEMO, "--seconds", "6", "--chaos", "--rate", "150"], cwd=tmp_path,
                          env=_env(), capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "chaos: random faults on" in proc.stdout and "reconnect budget raised" in proc.stdout
    assert "demo stopped after" in proc.stdout
    assert not (tmp_path / "data").exists()
    healed = 0
    for sym in ("BTCUSD", "ETHUSD"):
        recs = check_file(tmp_path / "rec" / sym)
        assert all(len(r["bids"]) <= 5 for r in recs if r["type"] == "book")
        breaks = [i for i, r in enumerate(recs) if r["type"] == "resync" and r["reason"] != "start"]
        if breaks and any(r["type"] == "book" for r in recs[breaks[0]:]):
            healed += 1
    assert healed >= 1, "no symbol showed a non-start resync followed by a book"


def test_demo_bad_config_exits_78(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('[feed]\nsymbols = ["BTCUSD"]\n[book]\ndepth = 0\n')
    proc = subprocess.run([*DEMO, "--seconds", "1"], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == config.EX_CONFIG
    assert "book.depth" in proc.stderr
    missing = subprocess.run([*DEMO, "--seconds", "1", "--config", "nope.toml"], cwd=tmp_path,
                             env=_env(), capture_output=True, text=True, timeout=30, check=False)
    assert missing.returncode == config.EX_CONFIG and "nope.toml" in missing.stderr


async def _read_until(stream: asyncio.StreamReader, pred: Any, timeout: float) -> list[str]:
    """Lines read until one satisfies `pred` (poll with a deadline)."""
    lines: list[str] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        left = deadline - loop.time()
        if left <= 0:
            raise AssertionError(f"timed out; read so far: {lines}")
        raw = await asyncio.wait_for(stream.readline(), left)
        if not raw:
            raise AssertionError(f"EOF; read so far: {lines}")
        lines.append(raw.decode())
        if pred(lines[-1]):
            return lines


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_demo_stops_on_signal_with_summary(tmp_path: Path, sig: signal.Signals) -> None:
    proc = await asyncio.create_subprocess_exec(
        *DEMO, "--every", "0.2", "--symbols", "SOLUSD", cwd=tmp_path, env=_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        await _read_until(proc.stdout, lambda line: "SOLUSD live" in line, 15)
        proc.send_signal(sig)
        rest = (await asyncio.wait_for(proc.stdout.read(), 10)).decode()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert "demo stopped after" in rest and "data/SOLUSD/current.jsonl" in rest
    check_file(tmp_path / "data" / "SOLUSD")
