"""`collector demo`: the simulator and the collector in one process, with a live status view.

The config overrides here and the status view (`collector.tools.demo_view`) are pure,
so they can be unit-tested; the rest is the I/O shell (event loop, signals, terminal).

Status output: on a terminal the table is redrawn in place (ANSI cursor-up and
clear-line, no curses) every 0.5 s, and warnings (resyncs...) appear in a short
"recent events" list under it instead of scrolling over it. When stdout is not a
terminal, plain status lines (one per symbol) are printed every 5 s and log lines
go to stderr at warning level. `--every` changes the interval, `--verbose` sends
info-level logs to stderr in both cases.

`--symbols all` (or a config.toml whose feed.symbols has globs) records a whole simulated
exchange: the simulator lists 347 symbols (10 busy, the rest quiet) behind Gemini's limits,
and the collector discovers them from its REST listing (symbols = ["*"]) and records them
on the current API. The view then shows totals and the busy books, not 347 rows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import signal
import sys
import time
from collections import deque
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from collector import config
from collector.core.symbols import has_globs
from collector.tools.demo_view import (
    ExchangeView,
    SymbolView,
    fmt_event,
    redraw,
    render_exchange,
    render_exchange_plain,
    render_exchange_summary,
    render_plain,
    render_summary,
    render_table,
    update_rates,
)

if TYPE_CHECKING:
    from collector.runtime.app import App
    from collector.sim import SimExchange

DEFAULT_SYMBOLS = ("BTCUSD", "ETHUSD", "SOLUSD")
ALL = ("*",)  # --symbols all: every symbol a whole simulated exchange lists
EXCHANGE_SIZE = 347  # symbols the whole simulated exchange lists (Gemini's count) ...
EXCHANGE_BUSY = 10  # ... of which busy books, at --rate each
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


def wants_exchange(base: config.Config | None, symbols: Sequence[str] | None) -> bool:
    """`--symbols all`, or no --symbols and a config whose feed.symbols has globs."""
    if symbols is not None:
        return tuple(symbols) == ALL
    return base is not None and has_globs(base.feed.symbols)


def exchange_config(base: config.Config | None, symbols: Sequence[str] | None, url: str,
                    rest_url: str, chaos: bool) -> config.Config:
    """The collector's config for a whole simulated exchange: the current API at `url`, the
    listing from `rest_url`, every symbol (`--symbols all`) or the config's globs and
    excludes. The reconnect budget stays the config's (the simulator enforces Gemini's
    limits, so a raised budget would earn 429s). feed.symbols_per_socket: the config's."""
    if base is None:
        base = config.from_dict({"feed": {"symbols": list(ALL)}})
    every = symbols is not None or not has_globs(base.feed.symbols)
    feed = dataclasses.replace(base.feed, api="current", url=url, rest_url=rest_url,
                               symbols=ALL if every else base.feed.symbols,
                               exclude=() if every else base.feed.exclude,
                               **(CHAOS_FEED if chaos else {}))
    return dataclasses.replace(base, feed=feed)


def render_exchange_header(sim_line: str, cfg: config.Config, chaos: bool) -> list[str]:
    feed = cfg.feed
    what = "every listed symbol" if feed.symbols == ALL else (
        ", ".join(feed.symbols) + (f" minus {', '.join(feed.exclude)}" if feed.exclude else ""))
    lines = [
        f"collector demo: {sim_line}",
        (f"recording {what} on the current API, {feed.symbols_per_socket} symbols per socket, "
         f"listing from {feed.rest_url}/v1/symbols, into {cfg.output.dir}/ "
         f"(book depth {cfg.book.depth}, emit {cfg.book.emit})"),
    ]
    if chaos:
        lines.append(f"chaos: random faults on ({CHAOS_FAULTS}); stale after "
                     f"{feed.stale_after_s:g} s: watch resyncs happen and heal")
    return lines


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
    exchange: int = EXCHANGE_SIZE  # whole-exchange mode: symbols listed ...
    busy: int = EXCHANGE_BUSY  # ... and busy among them


def snapshot(app: App, now: float) -> list[SymbolView]:
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


def exchange_view(sim: SimExchange) -> ExchangeView:
    """Read the simulated exchange's counters."""
    return ExchangeView(listed=len(sim.symbols), sockets=sim.current_connections,
                        answered_429=sim.exchange_stats.total_429,
                        busy=tuple(sim.plan.busy) if sim.plan is not None else ())


def describe_exchange(sim: SimExchange, rate: float, seed: int) -> str:
    busy = sim.plan.busy if sim.plan is not None else []
    limits = "Gemini's limits on (429 beyond them)" if sim.limits is not None else "no limits"
    return (f"simulated Gemini exchange at {sim.current_url}: {len(sim.symbols)} symbols, "
            f"{len(busy)} busy at {rate:g} updates/s each ({', '.join(busy)}), the rest quiet; "
            f"{limits}; seed {seed}")


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
    whole = wants_exchange(base, opts.symbols)
    symbols = opts.symbols or (base.feed.symbols if base else DEFAULT_SYMBOLS)
    faults = CHAOS_FAULTS if opts.chaos else ""

    try:
        if whole:
            sim = SimExchange.whole(opts.exchange, busy=min(opts.busy, opts.exchange), rate=opts.rate,
                                    seed=opts.seed, heartbeat_s=SIM_HEARTBEAT_S, faults=faults,
                                    record_truth=False)
        else:
            sim = SimExchange(symbols, seed=opts.seed, rate=opts.rate, heartbeat_s=SIM_HEARTBEAT_S,
                              faults=faults, record_truth=False)  # a long demo must not grow memory
    except ValueError as exc:  # e.g. a config.toml symbol the simulator cannot list
        print(f"collector demo: {exc}", file=sys.stderr)
        return 2
    await sim.start("127.0.0.1", 0)
    if whole:
        url = sim.current_url
        cfg = exchange_config(base, opts.symbols, url, sim.rest_url, opts.chaos)
        header = render_exchange_header(describe_exchange(sim, opts.rate, opts.seed), cfg, opts.chaos)
    else:
        url = sim.current_url if base is not None and base.feed.api == "current" else sim.ws_url
        cfg = demo_config(base, symbols, url, opts.chaos)
        header = render_header(url, cfg, opts.rate, opts.seed, opts.chaos)
    app = App(cfg)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def write(text: str) -> None:
        out.write(text)
        out.flush()

    write("\n".join(header) + "\n\n")
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
                if whole:
                    lines = render_exchange(views, rates, now - started, exchange_view(sim),
                                            list(events), width, opts.seconds)
                else:
                    lines = render_table(views, rates, now - started, list(events), width, opts.seconds)
                write(redraw(drawn, lines))
                drawn = len(lines)
            elif whole:
                write("\n".join(render_exchange_plain(views, rates, now - started,
                                                       exchange_view(sim))) + "\n")
            else:
                write("\n".join(render_plain(views, rates, now - started)) + "\n")
    finally:
        if tty:
            write("\r\x1b[K\x1b[?25h")  # wipe a "^C" echo; cursor back
        stopped.cancel()
        ex = exchange_view(sim)  # before the sockets close ...
        live = {v.symbol for v in snapshot(app, time.monotonic()) if v.live}  # ... and the feeds stop
        app.stop()  # signals stay caught meanwhile: a second Ctrl-C cannot tear the files
        status = await app_task
        await sim.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    elapsed = time.monotonic() - started
    views = snapshot(app, time.monotonic())
    if whole:  # the counters as written, the state as it was before stopping
        views = [dataclasses.replace(v, live=v.symbol in live) for v in views]
    files: dict[str, Path] = {}
    closed: dict[str, int] = {}
    for sym in ex.busy if whole else cfg.feed.symbols:
        folder = cfg.output.dir / sym
        if (folder / "current.jsonl").exists():
            files[sym] = folder / "current.jsonl"
        if folder.is_dir():  # segments closed (rotated) by this or earlier runs
            closed[sym] = sum(1 for p in folder.iterdir()
                              if p.is_file() and p.name.startswith(f"{sym}."))
    if whole and (status == 0 or any(v.bytes_written for v in views)):
        write("\n" + "\n".join(render_exchange_summary(views, elapsed, files, cfg.output.dir,
                                                       opts.chaos, ex)) + "\n")
    elif status == 0 or any(v.bytes_written for v in views):
        write("\n" + "\n".join(render_summary(views, elapsed, files, cfg.output.dir, opts.chaos,
                                              closed)) + "\n")
    if status:
        if events:  # on a terminal they were only shown in the view
            print("\n".join(events), file=sys.stderr)
        print(f"collector demo: the collector stopped with status {status}; see the log above",
              file=sys.stderr)
    return status
