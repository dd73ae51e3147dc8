"""`collector probe [--config PATH] [--symbol S] [--samples N] [--json]`: REST against the
stream, measured against the configured exchange (the real Gemini, or the simulator).

1. The symbol's stream is opened (handshake and snapshot timed) and read in the background:
   each change's delay from the exchange's stamp (`timestampms`, or `E` on the current
   API) to its receipt, and each top-`audit.depth` state it goes through (a `Tap`).
2. N REST books over a new connection each: DNS, TCP, TLS and first byte timed apart, as
   `curl -w` shows them; then N over one kept-alive connection. One request a second at
   most (`limits.REST_RECOMMENDED_S`), so 2 N requests take about 2 N seconds.
3. Up to feed.connect_burst streams more are opened and closed (handshake, snapshot).
4. Each REST book is judged against the stream's states (`core.audit.judge`): its age
   is how long the stream had moved past it when it arrived.

Every step has STEP_TIMEOUT_S. An exchange that cannot be reached (the first stream or
the first REST book fails) ends it with status 1 and a message saying which and why.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import ipaddress
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from collector import config
from collector.config import Config
from collector.core.audit import MAX_ANSWER_BYTES, BadAnswer, RestBook, Tap, judge, parse_book
from collector.core.stream import StreamBroken
from collector.core.symbols import SYMBOL
from collector.gemini import limits
from collector.runtime import transport
from collector.runtime.audit import book_target
from collector.runtime.feed import STREAMS
from collector.runtime.http import Answer, HttpConnection, HttpError, Origin
from collector.tools.probe_report import Row, as_json, conclusion, rows, table

DEFAULT_SAMPLES = 10
MAX_SAMPLES = 100
STEP_TIMEOUT_S = 10.0  # any one step: a lookup, a connect, an answer, a snapshot
LATE_S = 1.0  # a stream state seen this long after a REST answer still matches it
EX_UNREACHABLE = 1


class Unreachable(Exception):
    """The exchange could not be reached, or refused what was asked."""


def _ms(seconds: float) -> float:
    return seconds * 1000.0


class LiveStream:
    """One stream of the symbol, read in the background once open."""

    def __init__(self, cfg: Config, symbol: str, depth: int, clock: Callable[[], float]) -> None:
        self.cfg = cfg
        cls = STREAMS[cfg.feed.api]
        self.url = cls.url(cfg.feed.url, symbol, cfg.feed.trades)
        self.stream = cls(symbol, depth, True, trades=cfg.feed.trades)
        self.tap = Tap(depth, float("inf"), clock)
        self.delays_ms: list[float] = []
        self.broken: str | None = None
        self._ws: transport.Connection | None = None
        self._reader: asyncio.Task[None] | None = None

    async def open(self) -> tuple[float, float]:
        """Connect and wait for the snapshot: (handshake s, handshake -> snapshot s)."""
        start = time.perf_counter()
        async with asyncio.timeout(STEP_TIMEOUT_S):
            ws = self._ws = await transport.connect(self.url, self.cfg.feed)
        shaken = time.perf_counter()
        async with asyncio.timeout(STEP_TIMEOUT_S):
            self.stream.start()
            for req in self.stream.take_requests():
                await ws.send(req, text=True)
            while not self.stream.live:
                self._take(await ws.recv(decode=False))
        return shaken - start, time.perf_counter() - shaken

    def read_on(self) -> None:
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            while True:
                self._take(await self._ws.recv(decode=False))
                if self.stream.outbox:
                    for req in self.stream.take_requests():
                        await self._ws.send(req, text=True)
        except StreamBroken as exc:
            self.broken = f"the stream broke: {exc.reason}"
        except Exception as exc:  # closed: what was read stands
            self.broken = f"the stream ended: {type(exc).__name__}"
        self.tap.lost()

    def _take(self, raw: bytes) -> None:
        was_live = self.stream.live
        records = self.stream.feed(raw, time.time_ns())
        if was_live:  # the snapshot carries no change of its own
            for line in records.splitlines():
                rec = orjson.loads(line)
                if rec["type"] == "book" and rec.get("exchange_ms") is not None:
                    stamp_ns = rec.get("exchange_ns") or rec["exchange_ms"] * 1_000_000
                    self.delays_ms.append((rec["recv_ns"] - stamp_ns) / 1e6)
        self.tap.saw(self.stream)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._ws is not None:
            self._ws.transport.abort()


def clock_note(host: str) -> str:
    """How far the local clock may be from true time (the exchange stamps with its own)."""
    if host == "localhost" or _is_loopback(host):
        return "the exchange runs on this host: one clock, no offset"
    err = _kernel_clock_error()
    if err is None:
        return "local clock error unknown (no adjtimex): compare with care"
    synced, est_ms, max_ms = err
    if not synced:
        return "local clock NOT synchronised (no NTP): delays may be off by seconds"
    return (f"local clock within about ±{est_ms:.1f} ms of true time (NTP estimate; at most "
            f"±{max_ms:.0f} ms), the exchange's own clock error unknown")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Timex(ctypes.Structure):
    # struct timex (linux/timex.h); only modes, maxerror, esterror and status are read
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("rest", ctypes.c_long * 32)]


def _kernel_clock_error() -> tuple[bool, float, float] | None:
    """(synchronised, estimated error ms, maximum error ms) from adjtimex(2), read-only."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    sta_unsync, time_error = 0x0040, 5
    return (state != time_error and not tx.status & sta_unsync), tx.esterror / 1000, tx.maxerror / 1000


async def _paced(last: list[float]) -> None:
    """At most one REST request every REST_RECOMMENDED_S (`last` holds the previous start)."""
    wait = last[0] + limits.REST_RECOMMENDED_S - time.monotonic()
    if wait > 0:
        await asyncio.sleep(wait)
    last[0] = time.monotonic()


def _book(answer: Answer, what: str, depth: int) -> RestBook:
    if answer.status != 200:
        raise Unreachable(f"{what}: HTTP {answer.status}: {answer.body[:120]!r}")
    try:
        return parse_book(answer.body, depth)
    except BadAnswer as exc:
        raise Unreachable(f"{what}: not a book: {exc}") from None


async def measure(cfg: Config, symbol: str, samples: int) -> tuple[dict[str, Row], dict[str, Any]]:
    report = rows()
    depth = cfg.audit.depth
    origin = Origin.of(cfg.feed.rest_url)
    target = book_target(cfg.feed.rest_url, symbol, depth)
    what = f"GET {cfg.feed.rest_url.rstrip('/')}/v1/book/{symbol.lower()}"
    live = LiveStream(cfg, symbol, depth, time.monotonic)
    try:
        shake, snap = await live.open()
    except Exception as exc:  # whatever stops the first stream: say what it was
        await live.close()
        why = (f"{exc.reason}: {exc.fields.get('detail', '')}" if isinstance(exc, StreamBroken)
               else f"{type(exc).__name__}: {exc}")
        raise Unreachable(f"stream {live.url}: {why}"[:300]) from None
    report["ws_handshake"].values_ms.append(_ms(shake))
    report["ws_snapshot"].values_ms.append(_ms(snap))
    live.read_on()
    answers: list[tuple[RestBook, float]] = []
    last = [float("-inf")]
    try:
        await _rest_fresh(report, origin, target, what, depth, samples, last, answers)
        await _rest_kept(report, origin, target, what, depth, samples, last, answers)
        await asyncio.sleep(LATE_S)  # the stream may show the last REST book a little later
    finally:
        await live.close()
    for book, arrived in answers:
        verdict = judge(book, [s for s in live.tap.states if s.at <= arrived + LATE_S], arrived)
        if verdict.matched and verdict.age_s is not None:
            report["staleness"].values_ms.append(_ms(verdict.age_s))
    unmatched = len(answers) - len(report["staleness"].values_ms)
    if unmatched:
        report["staleness"].note = f"{unmatched} of {len(answers)} REST books matched no stream state"
    report["stream_delay"].values_ms = live.delays_ms
    if cfg.feed.api == "v1":
        report["stream_delay"].note = "v1 stamps whole ms: up to 1 ms more"
    if live.broken:
        report["stream_delay"].note = live.broken
    await _ws_more(report, cfg, symbol, depth, min(samples, cfg.feed.connect_burst) - 1)
    if origin.scheme == "http":
        report["tls"].note = "http: no TLS"
    if _is_ip(origin.host):
        report["dns"].note = "numeric host: no lookup"
    meta = {"symbol": symbol, "api": cfg.feed.api, "rest_url": cfg.feed.rest_url, "stream_url": live.url,
            "samples": samples, "clock": clock_note(origin.host)}
    return report, meta


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _rest_fresh(report: dict[str, Row], origin: Origin, target: str, what: str, depth: int,
                      samples: int, last: list[float], answers: list[tuple[RestBook, float]]) -> None:
    failed = 0
    for i in range(samples):
        await _paced(last)
        try:
            async with asyncio.timeout(STEP_TIMEOUT_S):
                conn = await HttpConnection.connect(origin)
                try:
                    answer = await conn.get(target, MAX_ANSWER_BYTES)
                finally:
                    conn.close()
        except (HttpError, TimeoutError) as exc:
            if i == 0:
                raise Unreachable(f"{what}: {type(exc).__name__}: {exc}"[:300]) from None
            failed += 1
            continue
        arrived = time.monotonic()
        if answer.status == 429:
            report["rest_fresh"].note = "stopped: rate limited (429)"
            return
        answers.append((_book(answer, what, depth), arrived))
        setup, t = conn.setup, answer.timings
        for key, value in (("dns", setup.dns_s), ("tcp", setup.tcp_s), ("tls", setup.tls_s),
                           ("first_byte", t.first_byte_s)):
            if value is not None:
                report[key].values_ms.append(_ms(value))
        total = sum(v or 0.0 for v in (setup.dns_s, setup.tcp_s, setup.tls_s, t.answer_s))
        report["rest_fresh"].values_ms.append(_ms(total))
    if failed:
        report["rest_fresh"].note = f"{failed} failed"


async def _rest_kept(report: dict[str, Row], origin: Origin, target: str, what: str, depth: int,
                     samples: int, last: list[float], answers: list[tuple[RestBook, float]]) -> None:
    row = report["rest_kept"]
    conn: HttpConnection | None = None
    try:
        for _ in range(samples):
            await _paced(last)
            try:
                async with asyncio.timeout(STEP_TIMEOUT_S):
                    if conn is None:
                        conn = await HttpConnection.connect(origin)
                    answer = await conn.get(target, MAX_ANSWER_BYTES)
            except (HttpError, TimeoutError) as exc:
                row.note = f"stopped: {type(exc).__name__}: {exc}"[:80]
                return
            arrived = time.monotonic()
            if answer.status == 429:
                row.note = "stopped: rate limited (429)"
                return
            answers.append((_book(answer, what, depth), arrived))
            if not answer.keep_alive:
                row.note = "the server closes the connection after each answer"
                return
            assert answer.timings.answer_s is not None
            row.values_ms.append(_ms(answer.timings.answer_s))
    finally:
        if conn is not None:
            conn.close()


async def _ws_more(report: dict[str, Row], cfg: Config, symbol: str, depth: int, n: int) -> None:
    """More stream openings (within the connection burst), each closed once it has its book."""
    for _ in range(max(0, n)):
        extra = LiveStream(cfg, symbol, depth, time.monotonic)
        try:
            shake, snap = await extra.open()
        except Exception as exc:
            report["ws_handshake"].note = f"a later stream failed: {type(exc).__name__}"
            return
        finally:
            await extra.close()
        report["ws_handshake"].values_ms.append(_ms(shake))
        report["ws_snapshot"].values_ms.append(_ms(snap))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="collector probe",
        description="Measure REST against the stream on the configured exchange (feed.url, "
                    "feed.rest_url, feed.api): connection set-up (DNS, TCP, TLS, first byte), "
                    "REST round trips over new and kept-alive connections, the WebSocket's "
                    "handshake, snapshot and exchange-to-receive delay, and how old the REST "
                    "book is against the live stream; a table of p50/p90/p99/max and a "
                    "conclusion. At most one REST request a second: about 2 x N seconds.",
        epilog="exit status: 0 measured; 1 the exchange cannot be reached (or refused the "
               "symbol); 2 usage error; 78 a config that does not validate")
    p.add_argument("--config", default="config.toml", help="TOML config (default ./config.toml)")
    p.add_argument("--symbol", default=None,
                   help="the symbol to probe (default: the first exact symbol of feed.symbols)")
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES,
                   help=f"REST requests of each kind, 1 to {MAX_SAMPLES} (default {DEFAULT_SAMPLES})")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    return p


def main_probe(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 1 <= args.samples <= MAX_SAMPLES:
        parser.error(f"--samples must be 1 to {MAX_SAMPLES}, got {args.samples}")
    try:
        cfg = config.load(args.config)
    except config.ConfigError as exc:
        print(f"collector probe: config error: {exc}", file=sys.stderr)
        return config.EX_CONFIG
    symbol = args.symbol.upper() if args.symbol else next(
        (s for s in cfg.feed.symbols if SYMBOL.fullmatch(s)), None)
    if symbol is None:
        parser.error("feed.symbols holds only globs: name one symbol with --symbol")
    if not SYMBOL.fullmatch(symbol):
        parser.error(f"--symbol: not a symbol (3 to 24 letters and digits): {args.symbol!r}")
    if not args.json:
        print(f"probing {symbol} on {cfg.feed.rest_url} and {cfg.feed.url} ({cfg.feed.api}): "
              f"{args.samples} samples, about {2 * args.samples} s", file=sys.stderr)
    try:
        report, meta = asyncio.run(measure(cfg, symbol, args.samples))
    except Unreachable as exc:
        print(f"collector probe: cannot reach the exchange: {exc}", file=sys.stderr)
        return EX_UNREACHABLE
    text = conclusion(report, meta["clock"])
    if args.json:
        print(orjson.dumps(as_json(report, text, meta), option=orjson.OPT_INDENT_2).decode())
    else:
        print(table(report))
        print()
        print(f"Clock: {meta['clock']}.")
        print(text)
    return 0
