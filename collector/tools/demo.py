"""`collector demo`: the simulator and the collector in one process, with a live status view.

The first half of this module is pure (config overrides, formatting, rendering) so it
can be unit-tested; the second half is the I/O shell (event loop, signals, terminal).

Status output: on a terminal the table is redrawn in place (ANSI cursor-up and
clear-line, no curses) every 0.5 s, and warnings (resyncs...) appear in a short
"recent events" list under it instead of scrolling over it. When stdout is not a
terminal, plain status lines (one per symbol) are printed every 5 s and log lines
go to stderr at warning level. `--every` changes the interval, `--verbose` sends
info-level logs to stderr in both cases.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import shlex
import shutil
import signal
import sys
import time
from collections import deque
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TextIO

from collector import config

DEFAULT_SYMBOLS = ("BTCUSD", "ETHUSD", "SOLUSD")
DEFAULT_RATE = 20.0  # updates/s per symbol: lively, still readable
TTY_EVERY_S = 0.5
PLAIN_EVERY_S = 5.0
EVENTS_SHOWN = 6  # recent warnings listed under the table on a terminal

# Per-frame probabilities (heartbeats included) of each connection fault, and per-handshake
# ones for refusals and late snapshots. At 20 updates/s on three symbols this is about one
# resync every 4 s, so a newcomer watches several break and heal within 30 s.
CHAOS_FAULTS = ("gap=0.003,garbage=0.0015,close=0.0005,crossed=0.0005,stall=0.0003,"
                "unknown=0.002,refuse=0.1,slow_snapshot=0.1")
SIM_HEARTBEAT_S = 1.0  # keeps a short stale_after_s meaningful even at a low --rate

# Our own simulator on loopback: the reconnect budget that protects Gemini (1 connect
# per minute per symbol) would turn every chaos resync into a long wait.
DEMO_FEED: dict[str, Any] = {
    "connect_burst": 30,
    "connects_per_minute": 120.0,
    "max_connects_per_minute": 600.0,
}
# With --chaos: detect stalls and late snapshots fast, retry fast, so faults heal in
# seconds. slow_snapshot's 2 s delay stays under the snapshot timeout on purpose.
CHAOS_FEED: dict[str, Any] = {
    "stale_after_s": 3.0,
    "snapshot_timeout_s": 3.0,
    "backoff_initial_s": 0.2,
    "backoff_max_s": 2.0,
    "healthy_after_s": 5.0,
}


# ---- configuration (pure) ---------------------------------------------------------------

def check_symbols(symbols: Sequence[str]) -> tuple[str, ...]:
    """Validate symbols with the config's own rules; raises ConfigError."""
    cfg = config.from_dict({"feed": {"symbols": list(symbols)}})
    return cfg.feed.symbols


def demo_config(base: config.Config | None, symbols: Sequence[str] | None, url: str,
                chaos: bool) -> config.Config:
    """The collector's config for a demo: book/output/log settings from `base` (or the
    built-in defaults), the feed pointed at the simulator with a demo reconnect budget."""
    if base is None:
        base = config.from_dict({"feed": {"symbols": list(DEFAULT_SYMBOLS)}})
    feed = dataclasses.replace(base.feed, url=url, symbols=tuple(symbols or base.feed.symbols),
                               **DEMO_FEED, **(CHAOS_FEED if chaos else {}))
    return dataclasses.replace(base, feed=feed)


# ---- status model and formatting (pure) -------------------------------------------------

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
    if not prev or dt <= 0:
        return {v.symbol: 0.0 for v in cur}
    before = {v.symbol: v.updates for v in prev}
    return {v.symbol: max(0, v.updates - before.get(v.symbol, 0)) / dt for v in cur}


_COLUMNS = (  # header, width, right-aligned
    ("symbol", 8, False), ("state", 9, False), ("upd/s", 6, True), ("updates", 8, True),
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


def render_header(url: str, cfg: config.Config, rate: float, seed: int, chaos: bool) -> list[str]:
    feed = cfg.feed
    lines = [
        (f"collector demo: simulated Gemini exchange at {url} "
         f"({rate:g} updates/s per symbol, seed {seed})"),
        (f"recording {', '.join(feed.symbols)} into {cfg.output.dir}/ "
         f"(book depth {cfg.book.depth}, emit {cfg.book.emit})"),
        (f"reconnect budget raised for the demo since it is our own simulator: "
         f"{feed.connect_burst} at once, {feed.connects_per_minute:g}/min per symbol "
         f"(the real exchange gets 1/min)"),
    ]
    if chaos:
        lines.append(f"chaos: random faults on ({CHAOS_FAULTS}); stale after "
                     f"{feed.stale_after_s:g} s: watch resyncs happen and heal")
    return lines


def render_summary(views: Sequence[SymbolView], elapsed: float, files: Mapping[str, Path],
                   out_dir: Path, chaos: bool, closed: Mapping[str, int] | None = None) -> list[str]:
    """`files`: each symbol's current file; `closed`: how many closed segments sit beside it."""
    closed = closed or {}
    lines = [f"demo stopped after {elapsed:.1f} s.", ""]
    lines.append(f"{'symbol':<8}  {'updates':>8}  {'trades':>7}  {'written':>9}  {'file':<28}  resyncs")
    for v in views:
        path = str(files[v.symbol]) if v.symbol in files else "(none)"
        if closed.get(v.symbol):
            path += f" (+{closed[v.symbol]} closed segments)"
        extra = f"; {v.unknown} unknown events skipped" if v.unknown else ""
        lines.append(f"{v.symbol:<8}  {v.updates:>8}  {v.trades:>7}  "
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


# ---- I/O shell -----------------------------------------------------------------------------

@dataclass
class DemoOptions:
    seconds: float | None = None
    symbols: tuple[str, ...] | None = None
    chaos: bool = False
    rate: float = DEFAULT_RATE
    seed: int = 1
    every: float | None = None  # status interval; None: 0.5 s on a terminal, else 5 s
    verbose: bool = False


def snapshot(app: Any, now: float) -> list[SymbolView]:
    """Read the running collector's counters (App.feeds, App.writer)."""
    views = []
    for symbol, feed in app.feeds.items():
        st = feed.stats
        bid, ask = feed.best()
        views.append(SymbolView(
            symbol=symbol, live=st.live, connects=st.connects, updates=st.updates,
            trades=st.trades, resyncs=dict(st.resyncs), unknown=sum(st.unknown.values()),
            bid=bid, ask=ask, bytes_written=app.writer.bytes_written[symbol],
            quiet_s=now - st.last_frame if st.last_frame else 0.0,
        ))
    return views


class _EventSink(logging.Handler):
    """Collects warnings for the terminal view: structlog processor and stdlib handler."""

    def __init__(self, events: deque[str]) -> None:
        super().__init__(logging.WARNING)
        self.events = events

    def __call__(self, logger: Any, name: str, event: MutableMapping[str, Any]) -> Any:
        self.events.append(fmt_event(event))
        import structlog
        raise structlog.DropEvent

    def emit(self, record: logging.LogRecord) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        self.events.append(f"{stamp} {record.name}: {record.getMessage()}")


def _configure_logging(tty: bool, verbose: bool, events: deque[str]) -> None:
    import structlog

    from collector.ops import logs

    if tty and not verbose and sys.stderr.isatty():
        # stderr would scroll over the redrawn table: list warnings inside the view instead.
        sink = _EventSink(events)
        structlog.configure(
            processors=[structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False), sink],
            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
            cache_logger_on_first_use=False,
        )
        logging.basicConfig(level=logging.WARNING, handlers=[sink], force=True)
        return
    level = "info" if verbose else "warning"
    logs.configure(level)
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")


async def run_demo(base: config.Config | None, opts: DemoOptions, out: TextIO = sys.stdout) -> int:
    """Run simulator + collector until --seconds, SIGINT or SIGTERM; print the summary."""
    from collector.runtime.app import App
    from collector.sim import SimExchange

    tty = out.isatty()
    every = opts.every or (TTY_EVERY_S if tty else PLAIN_EVERY_S)
    events: deque[str] = deque(maxlen=EVENTS_SHOWN)
    _configure_logging(tty, opts.verbose, events)
    symbols = opts.symbols or (base.feed.symbols if base else DEFAULT_SYMBOLS)

    try:
        sim = SimExchange(symbols, seed=opts.seed, rate=opts.rate, heartbeat_s=SIM_HEARTBEAT_S,
                          faults=CHAOS_FAULTS if opts.chaos else "",
                          record_truth=False)  # a long demo must not grow memory
    except ValueError as exc:  # e.g. a config.toml symbol the simulator cannot list
        print(f"collector demo: {exc}", file=sys.stderr)
        return 2
    await sim.start("127.0.0.1", 0)
    url = sim.current_url if base is not None and base.feed.api == "current" else sim.ws_url
    cfg = demo_config(base, symbols, url, opts.chaos)
    app = App(cfg)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def write(text: str) -> None:
        out.write(text)
        out.flush()

    write("\n".join(render_header(url, cfg, opts.rate, opts.seed, opts.chaos)) + "\n\n")
    started = time.monotonic()
    app_task = asyncio.create_task(app.run(handle_signals=False), name="collector")
    stopped = asyncio.create_task(stop.wait())
    drawn = 0
    prev, prev_t = snapshot(app, started), started  # all zeros: the feeds start from here
    if tty:
        write("\x1b[?25l")  # hide the cursor while redrawing
    try:
        while not stop.is_set() and not app_task.done():
            wait, last = every, False
            if opts.seconds is not None:
                left = opts.seconds - (time.monotonic() - started)
                wait, last = min(every, left), left <= every
            # Wake early on a signal, or if the collector ends by itself (e.g. exit 75: the
            # output directory is locked by another collector; 1: the writer died).
            await asyncio.wait((stopped, app_task), timeout=max(0.0, wait),
                               return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set() or app_task.done() or last:
                break  # the summary follows; no partial-interval frame
            now = time.monotonic()
            views = snapshot(app, now)
            rates = update_rates(prev, views, now - prev_t)
            prev, prev_t = views, now
            if tty:
                width = shutil.get_terminal_size().columns
                lines = render_table(views, rates, now - started, list(events), width, opts.seconds)
                write(redraw(drawn, lines))
                drawn = len(lines)
            else:
                write("\n".join(render_plain(views, rates, now - started)) + "\n")
    finally:
        if tty:
            write("\r\x1b[K\x1b[?25h")  # wipe a "^C" echo; cursor back
        stopped.cancel()
        app.stop()  # signals stay caught meanwhile: a second Ctrl-C cannot tear the files
        status = await app_task
        await sim.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    elapsed = time.monotonic() - started
    views = snapshot(app, time.monotonic())
    files: dict[str, Path] = {}
    closed: dict[str, int] = {}
    for sym in cfg.feed.symbols:
        folder = cfg.output.dir / sym
        if (folder / "current.jsonl").exists():
            files[sym] = folder / "current.jsonl"
        if folder.is_dir():  # segments closed (rotated) by this or earlier runs
            closed[sym] = sum(1 for p in folder.iterdir()
                              if p.is_file() and p.name.startswith(f"{sym}."))
    if status == 0 or any(v.bytes_written for v in views):
        write("\n" + "\n".join(render_summary(views, elapsed, files, cfg.output.dir, opts.chaos,
                                              closed)) + "\n")
    if status:
        if events:  # on a terminal they were only shown in the view
            print("\n".join(events), file=sys.stderr)
        print(f"collector demo: the collector stopped with status {status}; see the log above",
              file=sys.stderr)
    return status
