"""`collector demo --symbols all`: a whole simulated exchange, shown as a summary."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from collector import config
from collector.cli import build_parser
from collector.tools import demo, demo_view
from collector.tools.demo_view import ExchangeView, SymbolView
from tests.tools.test_demo import DEMO, _env, check_file

BUSY = ("BTCUSD", "ETHUSD", "SOLUSD")


def view(symbol: str, **kw: Any) -> SymbolView:
    base: dict[str, Any] = {"symbol": symbol, "live": True, "connects": 1, "updates": 10,
                            "trades": 1, "resyncs": {}, "unknown": 0, "bid": "1", "ask": "2",
                            "bytes_written": 1_000, "quiet_s": 3.0}
    base.update(kw)
    return SymbolView(**base)


def exchange(n: int = 40, not_live: int = 0) -> list[SymbolView]:
    quiet = [f"Q{i:03d}USD" for i in range(n - len(BUSY))]
    views = [view(s, updates=500) for s in BUSY] + [view(s) for s in quiet]
    for i in range(not_live):
        views[len(BUSY) + i] = view(quiet[i], live=False, connects=0 if i % 2 else 2)
    return views


EX = ExchangeView(listed=41, sockets=1, answered_429=0, busy=BUSY)


def test_the_terminal_view_is_a_summary_not_a_row_per_symbol() -> None:
    views = exchange(40, not_live=11)
    rates = {v.symbol: 20.0 for v in views[:3]} | {"Q000USD": 0.5}
    lines = demo_view.render_exchange(views, rates, 12.0, EX, ["12:00:01 Q001USD resync reason=gap"])
    text = "\n".join(lines)
    assert len(lines) < 20  # 40 symbols: not 40 rows
    assert not any(line.startswith("Q0") for line in lines)
    assert [line.split()[0] for line in lines if line.startswith(BUSY)] == list(BUSY)
    assert ("exchange: 41 listed, 40 recorded (29 live, 6 syncing, 5 starting); 1 sockets; "
            "0 answered 429") in text
    assert "all symbols: 60.5 upd/s, 1870 updates, 40 trades, 0 resyncs, 40.0 kB written" in text
    assert "busy books (3):" in text
    assert "quiet books (37): 26 live, 6 syncing, 5 starting; 1 just updated" in text
    not_live = next(line for line in lines if line.startswith("not live:"))
    assert not_live.startswith("not live: Q000USD, Q001USD") and not_live.endswith("(+3 more)")
    assert "recent events:" in text and "reason=gap" in text
    narrow = demo_view.render_exchange(views, rates, 12.0, EX, width=50)
    assert all(len(line) < 50 for line in narrow)
    everything_live = demo_view.render_exchange(exchange(40), rates, 1.0, EX)
    assert not any(line.startswith("not live") for line in everything_live)


def test_the_plain_view_is_one_totals_line_and_the_busy_books() -> None:
    views = exchange(40, not_live=2)
    lines = demo_view.render_exchange_plain(views, {"BTCUSD": 20.0}, 5.0, EX)
    assert lines[0] == ("[   5.0s] exchange listed=41 recorded=40 live=38 syncing=1 starting=1 sockets=1 "
                        "upd/s=20.0 updates=1870 resyncs=0 answered_429=0")
    assert [line.split()[2] for line in lines[1:]] == list(BUSY)


def test_the_summary_gives_totals_and_the_busy_books_only(tmp_path: Path) -> None:
    views = exchange(40)
    files = {"BTCUSD": Path("data/BTCUSD/current.jsonl")}
    lines = demo_view.render_exchange_summary(views, 30.0, files, Path("data"), False, EX)
    text = "\n".join(lines)
    assert lines[0] == "demo stopped after 30.0 s."
    assert "exchange: 41 listed, 40 recorded (40 live)" in text
    assert "all symbols: 1870 updates" in text  # no rate at the end
    assert not any(line.startswith("Q0") for line in lines)
    assert "data/BTCUSD/current.jsonl" in text and "tail -n 3 data/BTCUSD/current.jsonl" in text


def test_rates_count_from_zero_for_symbols_discovered_meanwhile() -> None:
    assert demo_view.update_rates([], [view("BTCUSD", updates=10)], 2.0) == {"BTCUSD": 5.0}


def test_symbols_all_asks_for_a_whole_exchange() -> None:
    for text in ("all", "ALL", " all "):
        assert build_parser().parse_args(["demo", "--symbols", text]).symbols == demo.ALL
    globs = config.from_dict({"feed": {"symbols": ["*USD"], "exclude": ["*PERP"]}})
    exact = config.from_dict({"feed": {"symbols": ["BTCUSD"]}})
    assert demo.wants_exchange(None, demo.ALL) and demo.wants_exchange(globs, None)
    assert not demo.wants_exchange(exact, None) and not demo.wants_exchange(None, None)
    assert not demo.wants_exchange(globs, ("BTCUSD",))


def test_exchange_config_points_the_collector_at_the_whole_simulated_exchange(tmp_path: Path) -> None:
    base = config.from_dict({"feed": {"symbols": ["*USD"], "exclude": ["*PERP"], "connect_burst": 3},
                             "book": {"depth": 4}, "output": {"dir": str(tmp_path)}})
    cfg = demo.exchange_config(base, demo.ALL, "ws://127.0.0.1:9", "http://127.0.0.1:9", chaos=False)
    feed = cfg.feed
    assert (feed.api, feed.url, feed.rest_url) == ("current", "ws://127.0.0.1:9", "http://127.0.0.1:9")
    assert (feed.symbols, feed.exclude) == (("*",), ())
    assert cfg.book == base.book and cfg.output == base.output
    # The simulator enforces Gemini's limits: the config's own budget, not the demo's raised one.
    assert feed.connect_burst == 3 and feed.connects_per_minute == base.feed.connects_per_minute
    own = demo.exchange_config(base, None, "ws://x", "http://x", chaos=True)
    assert (own.feed.symbols, own.feed.exclude) == (("*USD",), ("*PERP",))
    assert own.feed.stale_after_s == demo.CHAOS_FEED["stale_after_s"]
    default = demo.exchange_config(None, demo.ALL, "ws://x", "http://x", chaos=False)
    assert default.feed.symbols == ("*",) and default.output.dir == Path("data")


def test_demo_symbols_all_records_every_symbol_with_no_429(tmp_path: Path) -> None:
    proc = subprocess.run([*DEMO, "--symbols", "all", "--seconds", "4", "--every", "1"], cwd=tmp_path,
                          env=_env(), capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "347 symbols, 10 busy" in out and "on the current API, 50 symbols per socket" in out
    totals = [line for line in out.splitlines() if line.startswith("[") and " exchange " in line]
    assert totals, out
    assert "listed=347 recorded=347 live=347" in totals[-1], totals
    assert all("answered_429=0" in line for line in totals)
    assert len(out.splitlines()) < 120  # a summary: 347 symbols would need more than that
    assert "exchange: 347 listed, 347 recorded (347 live)" in out
    folders = sorted(p for p in (tmp_path / "data").iterdir() if p.is_dir())
    assert len(folders) == 347
    for folder in folders[::20] + [tmp_path / "data" / "BTCUSD"]:
        recs = check_file(folder)
        assert any(r["type"] == "book" for r in recs), folder.name
