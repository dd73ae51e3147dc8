"""`collector demo`'s status view (pure): what it shows of each symbol, and the table,
the plain lines and the summary it renders."""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class SymbolView:
    """What the status display shows for one symbol at one instant."""

    symbol: str
    live: bool
    connects: int
    updates: int
    trades: int
    resyncs: Mapping[str, int]  # failed attempts by reason (the `start` record excluded)
    unknown: int  # unknown event types skipped
    bid: str | None
    ask: str | None
    bytes_written: int
    quiet_s: float  # seconds since the last frame (0 before the first)


def fmt_bytes(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    size = float(n)
    for unit in ("kB", "MB", "GB"):
        size /= 1000
        if size < 1000 or unit == "GB":
            return f"{size:.1f} {unit}"
    raise AssertionError  # pragma: no cover


def fmt_spread(bid: str | None, ask: str | None) -> str:
    """`0.5 (0.8 bp)`: ask - bid, and in basis points of the mid."""
    if bid is None or ask is None:
        return "-"
    try:
        b, a = Decimal(bid), Decimal(ask)
    except InvalidOperation:
        return "?"
    spread = a - b
    mid = (a + b) / 2
    bp = ""
    if mid > 0:
        x = spread / mid * 10000
        bp = f" ({x:.2f} bp)" if abs(x) < 10 else f" ({x:.0f} bp)"
    return f"{spread.normalize():f}{bp}"


def fmt_resyncs(resyncs: Mapping[str, int]) -> str:
    """`3 (gap 2, closed 1)`; `0` when none."""
    total = sum(resyncs.values())
    if not total:
        return "0"
    parts = ", ".join(f"{r} {n}" for r, n in sorted(resyncs.items(), key=lambda kv: (-kv[1], kv[0])) if n)
    return f"{total} ({parts})"


def state_label(v: SymbolView) -> str:
    if v.live:
        return "live" if v.quiet_s < 1.0 else f"quiet {v.quiet_s:.0f}s"
    return "syncing" if v.connects else "starting"


def update_rates(prev: Sequence[SymbolView] | None, cur: Sequence[SymbolView],
                 dt: float) -> dict[str, float]:
    """Updates per second per symbol between two snapshots."""
    if prev is None or dt <= 0:
        return {v.symbol: 0.0 for v in cur}
    before = {v.symbol: v.updates for v in prev}
    return {v.symbol: max(0, v.updates - before.get(v.symbol, 0)) / dt for v in cur}


_COLUMNS = (  # header, width, right-aligned
    ("symbol", 11, False), ("state", 9, False), ("upd/s", 6, True), ("updates", 8, True),
    ("trades", 7, True), ("best bid", 12, True), ("best ask", 12, True),
    ("spread", 18, True), ("written", 9, True),
)


def _row(cells: Sequence[str]) -> str:
    """Fixed columns, then a free-width last cell (resyncs)."""
    fixed = [c.rjust(w) if right else c.ljust(w) for (_, w, right), c in zip(_COLUMNS, cells)]
    return "  ".join(fixed + list(cells[len(_COLUMNS):]))


def _clip(line: str, width: int | None) -> str:
    # A line that wraps would break the cursor-up redraw.
    return line if width is None or len(line) < width else line[: max(1, width - 4)] + "..."


def render_table(views: Sequence[SymbolView], rates: Mapping[str, float], elapsed: float,
                 events: Sequence[str] = (), width: int | None = None,
                 seconds: float | None = None) -> list[str]:
    """The terminal view: a status line, one row per symbol, recent events."""
    left = f", stopping in {math.ceil(max(0.0, seconds - elapsed))} s" if seconds else ""
    lines = [f"running {elapsed:5.1f} s{left}  (Ctrl-C to stop)", ""]
    lines.append(_row([c[0] for c in _COLUMNS] + ["resyncs"]))
    for v in views:
        resyncs = fmt_resyncs(v.resyncs) + (f"; {v.unknown} unknown skipped" if v.unknown else "")
        lines.append(_row([
            v.symbol, state_label(v), f"{rates.get(v.symbol, 0.0):.1f}", str(v.updates),
            str(v.trades), v.bid or "-", v.ask or "-", fmt_spread(v.bid, v.ask),
            fmt_bytes(v.bytes_written), resyncs,
        ]))
    if events:
        lines += ["", "recent events:"] + [f"  {e}" for e in events]
    return [_clip(line, width) for line in lines]


def render_plain(views: Sequence[SymbolView], rates: Mapping[str, float],
                 elapsed: float) -> list[str]:
    """Non-terminal status: one self-contained line per symbol (greppable)."""
    out = []
    for v in views:
        unknown = f" unknown={v.unknown}" if v.unknown else ""
        out.append(
            f"[{elapsed:6.1f}s] {v.symbol} {state_label(v).replace(' ', '=')} "
            f"upd/s={rates.get(v.symbol, 0.0):.1f} updates={v.updates} trades={v.trades} "
            f"resyncs={fmt_resyncs(v.resyncs).replace(' ', '')}{unknown} "
            f"bid={v.bid or '-'} ask={v.ask or '-'} spread={fmt_spread(v.bid, v.ask).split(' ')[0]} "
            f"written={fmt_bytes(v.bytes_written).replace(' ', '')}")
    return out


def redraw(prev_lines: int, lines: Sequence[str]) -> str:
    """ANSI to replace the `prev_lines` lines above the cursor with `lines`."""
    up = f"\x1b[{prev_lines}F" if prev_lines else ""
    body = "".join(f"\x1b[2K{line}\n" for line in lines)
    return up + body + "\x1b[J"  # clear whatever a longer previous frame left below


def render_summary(views: Sequence[SymbolView], elapsed: float, files: Mapping[str, Path],
                   out_dir: Path, chaos: bool, closed: Mapping[str, int] | None = None) -> list[str]:
    """`files`: each symbol's current file; `closed`: how many closed segments sit beside it."""
    closed = closed or {}
    lines = [f"demo stopped after {elapsed:.1f} s.", ""]
    lines.append(f"{'symbol':<11}  {'updates':>8}  {'trades':>7}  {'written':>9}  {'file':<28}  resyncs")
    for v in views:
        path = str(files[v.symbol]) if v.symbol in files else "(none)"
        if closed.get(v.symbol):
            path += f" (+{closed[v.symbol]} closed segments)"
        extra = f"; {v.unknown} unknown events skipped" if v.unknown else ""
        lines.append(f"{v.symbol:<11}  {v.updates:>8}  {v.trades:>7}  "
                     f"{fmt_bytes(v.bytes_written):>9}  {path:<28}  "
                     f"{fmt_resyncs(v.resyncs)}{extra}")
    lines += ["", f"Files are in {out_dir}/, one JSON record per line."]
    if files:
        first = next(iter(files.values()))
        lines.append(f"Look at the latest records:  tail -n 3 {shlex.quote(str(first))}")
        if chaos:
            where = shlex.quote(str(out_dir)) + "/*/current.jsonl"
            lines.append(f"And at the resyncs:          grep -h '\"type\":\"resync\"' {where} | tail -n 5")
    return lines


def fmt_event(event: Mapping[str, Any]) -> str:
    """One structlog event dict as a short line: `12:00:01 BTCUSD resync reason=gap ...`."""
    ts = str(event.get("timestamp", ""))
    head = " ".join(str(x) for x in (ts, event.get("symbol", ""), event.get("event", "")) if x)
    skip = {"timestamp", "symbol", "event", "level", "exc_info"}
    rest = " ".join(f"{k}={v}" for k, v in event.items() if k not in skip)
    return f"{head} {rest}".rstrip()




# ---- a whole exchange (`collector demo --symbols all`): a summary, not one row per symbol ----

@dataclass(frozen=True)
class ExchangeView:
    """What the demo shows of the simulated exchange itself."""

    listed: int  # symbols the simulator lists
    sockets: int  # current-API sockets open on it
    answered_429: int  # 429s it answered (limits and faults): the collector should cause none
    busy: tuple[str, ...]  # its busy books, shown one row each


NOT_LIVE_SHOWN = 8  # symbols named on the "not live" line


def _counts(views: Sequence[SymbolView]) -> tuple[int, int, int]:
    live = sum(v.live for v in views)
    syncing = sum(1 for v in views if not v.live and v.connects)
    return live, syncing, len(views) - live - syncing


def _not_live(views: Sequence[SymbolView]) -> str:
    names = [v.symbol for v in views if not v.live]
    more = f" (+{len(names) - NOT_LIVE_SHOWN} more)" if len(names) > NOT_LIVE_SHOWN else ""
    return ", ".join(names[:NOT_LIVE_SHOWN]) + more


def _state(views: Sequence[SymbolView]) -> str:
    """`340 live, 7 syncing` (zero counts left out, but for live)."""
    live, syncing, starting = _counts(views)
    return f"{live} live" + (f", {syncing} syncing" if syncing else "") + (
        f", {starting} starting" if starting else "")


def exchange_totals(views: Sequence[SymbolView], rates: Mapping[str, float] | None,
                    ex: ExchangeView) -> list[str]:
    """Two lines: the exchange and the recording as a whole (the rate left out without `rates`)."""
    resyncs = sum(sum(v.resyncs.values()) for v in views)
    rate = "" if rates is None else f"{sum(rates.get(v.symbol, 0.0) for v in views):.1f} upd/s, "
    return [
        f"exchange: {ex.listed} listed, {len(views)} recorded ({_state(views)}); "
        f"{ex.sockets} sockets; {ex.answered_429} answered 429",
        f"all symbols: {rate}"
        f"{sum(v.updates for v in views)} updates, {sum(v.trades for v in views)} trades, "
        f"{resyncs} resyncs, {fmt_bytes(sum(v.bytes_written for v in views))} written",
    ]


def render_exchange(views: Sequence[SymbolView], rates: Mapping[str, float], elapsed: float,
                    ex: ExchangeView, events: Sequence[str] = (), width: int | None = None,
                    seconds: float | None = None) -> list[str]:
    """The terminal view of a whole exchange: totals, a row per busy book, one line for
    the quiet ones, the symbols not live."""
    busy = [v for v in views if v.symbol in set(ex.busy)]
    quiet = [v for v in views if v.symbol not in set(ex.busy)]
    table = render_table(busy, rates, elapsed, (), None, seconds)
    moving = sum(1 for v in quiet if rates.get(v.symbol, 0.0) > 0)
    lines = table[:2] + exchange_totals(views, rates, ex) + ["", f"busy books ({len(busy)}):"]
    lines += table[2:]
    lines.append(f"quiet books ({len(quiet)}): {_state(quiet)}; {moving} just updated")
    if any(not v.live for v in views):
        lines.append(f"not live: {_not_live(views)}")
    if events:
        lines += ["", "recent events:"] + [f"  {e}" for e in events]
    return [_clip(line, width) for line in lines]


def render_exchange_plain(views: Sequence[SymbolView], rates: Mapping[str, float], elapsed: float,
                          ex: ExchangeView) -> list[str]:
    """Non-terminal status of a whole exchange: one totals line, then a line per busy book."""
    live, syncing, starting = _counts(views)
    head = (f"[{elapsed:6.1f}s] exchange listed={ex.listed} recorded={len(views)} live={live} "
            f"syncing={syncing} starting={starting} sockets={ex.sockets} "
            f"upd/s={sum(rates.get(v.symbol, 0.0) for v in views):.1f} "
            f"updates={sum(v.updates for v in views)} "
            f"resyncs={sum(sum(v.resyncs.values()) for v in views)} answered_429={ex.answered_429}")
    busy = set(ex.busy)
    return [head] + render_plain([v for v in views if v.symbol in busy], rates, elapsed)


def render_exchange_summary(views: Sequence[SymbolView], elapsed: float, files: Mapping[str, Path],
                            out_dir: Path, chaos: bool, ex: ExchangeView) -> list[str]:
    """The summary at exit: totals, a row per busy book, where the files are. `views` and
    `ex` as they were just before the collector stopped."""
    busy = [v for v in views if v.symbol in set(ex.busy)]
    lines = render_summary(busy, elapsed, files, out_dir, chaos)
    totals = exchange_totals(views, None, ex)
    if any(not v.live for v in views):
        totals.append(f"not live at the end: {_not_live(views)}")
    return lines[:2] + totals + ["", f"busy books ({len(busy)}):"] + lines[2:]
