"""The audit: each live book held against the exchange's REST book, one symbol at a time
(I/O shell; the comparison is collector/core/audit.py).

Round robin over the recorded symbols (sorted), one every audit.interval_s / symbols, but
never more often than Gemini's recommended one REST request a second
(`limits.REST_RECOMMENDED_S`), so each symbol comes round every interval_s or, with many
symbols, every symbols seconds. An audit of a symbol:

1. arms a `Tap` on its feed, then waits audit.max_age_s: the states the stream goes
   through from then on are kept (the state at arming too);
2. takes a token of the process's REST budget (shared with discovery) and asks
   `GET {feed.rest_url}/v1/book/<symbol>?limit_bids=depth&limit_asks=depth` over a
   kept-alive connection (a closed one is replaced once, on a new connection);
3. judges the answer against the states seen from max_age_s before the request to the
   answer, or, failing that, to max_age_s after it (the stream may lag the REST book),
   then disarms the tap: `match` (its age observed), `mismatch` (logged with both books), or why it could
   not be judged (`not_live`, `rate_limited`, `bad_answer`, `failed`).

Two mismatches in a row for one symbol and the feed is forced to resynchronise
(`Feed.force`): a `resync` record with reason `audit`, the differing levels in `detail`,
and a fresh snapshot. A 429 closes the REST budget for its Retry-After; a bad answer or
a failure pauses the audits with the feeds' backoff. Recording never waits for any of it.
"""

from __future__ import annotations

import asyncio
import random
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Protocol
from urllib.parse import urlsplit

import structlog

from collector.config import Config
from collector.core.audit import (
    ERRORS,
    MAX_ANSWER_BYTES,
    BadAnswer,
    Outcome,
    Tap,
    Track,
    judge,
    parse_book,
)
from collector.core.backoff import Backoff
from collector.core.format import Reason
from collector.core.health import StreamStats
from collector.core.histogram import Histogram
from collector.core.stream import StreamBroken
from collector.gemini import limits
from collector.gemini.wire import retry_after_s
from collector.runtime.discovery import TIMEOUT_S
from collector.runtime.http import Answer, HttpConnection, HttpError, Origin
from collector.runtime.restbudget import PAUSE_S, RestBudget

log = structlog.get_logger("audit")


class Audited(Protocol):
    """What the auditor needs of a Feed."""

    @property
    def stats(self) -> StreamStats: ...
    def arm(self, tap: Tap) -> None: ...
    def disarm(self, tap: Tap) -> None: ...
    def force(self, broken: StreamBroken) -> bool: ...


def book_target(rest_url: str, symbol: str, depth: int) -> str:
    """The request target (path and query) of a symbol's REST book."""
    base = urlsplit(rest_url).path.rstrip("/")
    return f"{base}/v1/book/{symbol.lower()}?limit_bids={depth}&limit_asks={depth}"


def next_symbol(symbols: list[str], last: str | None) -> str:
    """Round robin over sorted `symbols` (which may change between calls)."""
    if last is None:
        return symbols[0]
    i = bisect_right(symbols, last)
    return symbols[i % len(symbols)]


class Auditor:
    def __init__(self, config: Callable[[], Config], feeds: Mapping[str, Audited], budget: RestBudget,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None) -> None:
        self.config = config  # the running config (a reload may change feed.rest_url)
        self.feeds = feeds  # the App's, kept up to date by it
        self.budget = budget
        self.clock = clock
        cfg = config().feed
        self.backoff = Backoff(cfg.backoff_initial_s, cfg.backoff_max_s, rng)
        self.tracks: dict[str, Track] = {}
        self.results: Counter[tuple[str, str]] = Counter()  # (symbol, outcome) -> audits
        self.ages = Histogram()  # ms: how long the stream had moved past the matching REST book
        self._conn: HttpConnection | None = None
        self._lock = asyncio.Lock()  # one request at a time on the kept-alive connection
        self._running: dict[str, asyncio.Task[None]] = {}
        self._paused_until = float("-inf")
        self._last_error: str | None = None

    def problems(self) -> dict[str, str]:
        """Symbols whose audits keep failing, and why (health)."""
        return {s: why for s, t in self.tracks.items() if s in self.feeds and (why := t.problem)}

    def step_s(self, symbols: int) -> float:
        interval = self.config().audit.interval_s
        return max(interval / max(1, symbols), limits.REST_RECOMMENDED_S)

    async def run(self) -> None:
        last: str | None = None
        log.info("audit on", interval_s=self.config().audit.interval_s,
                 step_s=round(self.step_s(len(self.feeds)), 3), depth=self.config().audit.depth)
        try:
            while True:
                wait = max(self.budget.wait_time(), self._paused_until - self.clock())
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                symbols = sorted(self.feeds)
                if symbols:
                    last = next_symbol(symbols, last)
                    self._start(last)
                await asyncio.sleep(self.step_s(len(symbols)))
        finally:
            running = list(self._running.values())
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            if self._conn is not None:
                self._conn.close()

    def _start(self, symbol: str) -> None:
        feed = self.feeds[symbol]
        track = self.tracks.setdefault(symbol, Track())
        track.rebuilt(sum(feed.stats.resyncs.values()))
        if symbol in self._running:
            return  # its previous audit is still waiting for an answer
        if not feed.stats.live:
            self._note(symbol, track, Outcome.NOT_LIVE)
            return
        task = self._running[symbol] = asyncio.create_task(self._audit(symbol, feed, track),
                                                           name=f"audit-{symbol}")
        task.add_done_callback(lambda _: self._running.pop(symbol, None))

    async def _audit(self, symbol: str, feed: Audited, track: Track) -> None:
        cfg = self.config()
        depth, max_age = cfg.audit.depth, cfg.audit.max_age_s
        tap = Tap(depth, max_age, self.clock)
        feed.arm(tap)
        try:
            await self._judge(symbol, feed, track, tap, cfg, depth, max_age)
        finally:
            feed.disarm(tap)

    async def _judge(self, symbol: str, feed: Audited, track: Track, tap: Tap, cfg: Config,
                     depth: int, max_age: float) -> None:
        await asyncio.sleep(max_age)
        try:
            target = book_target(cfg.feed.rest_url, symbol, depth)
            answer, sent = await self._request(cfg.feed.rest_url, target)
        except (HttpError, TimeoutError, OSError) as exc:
            self._error(symbol, track, Outcome.FAILED, f"{type(exc).__name__}: {exc}"[:200])
            return
        arrived = self.clock()
        if answer.status == 429:
            wait = retry_after_s(answer.header("retry-after"), cfg.feed.retry_after_max_s)
            self.budget.refused(wait if wait is not None else max(PAUSE_S, self.backoff.next_delay()))
            self._error(symbol, track, Outcome.RATE_LIMITED, "HTTP 429", retry_after=wait)
            return
        if answer.status != 200:
            self._error(symbol, track, Outcome.BAD_ANSWER, f"HTTP {answer.status}: {answer.body[:80]!r}")
            return
        try:
            rest = parse_book(answer.body, depth)
        except BadAnswer as exc:
            self._error(symbol, track, Outcome.BAD_ANSWER, str(exc))
            return
        self._recovered()
        tap.trim(sent)  # states superseded more than max_age_s before the request are out
        verdict = judge(rest, tap.states, arrived)
        if not verdict.matched:  # the stream may not have caught up with the REST book yet
            await asyncio.sleep(max_age)
            verdict = judge(rest, tap.states, arrived)
        if verdict.compared == 0:
            self._note(symbol, track, Outcome.NOT_LIVE)
        elif verdict.matched:
            assert verdict.age_s is not None
            self.ages.observe(verdict.age_s * 1000)
            self._note(symbol, track, Outcome.MATCH)
        else:
            known = [s for s in tap.states if s.bids is not None]
            log.warning("audit mismatch: the live book differs from the exchange's REST book",
                        symbol=symbol, differences=list(verdict.differences), states=verdict.compared,
                        rest={"bids": [list(x) for x in rest.bids], "asks": [list(x) for x in rest.asks]},
                        stream={"bids": known[-1].bids, "asks": known[-1].asks},
                        in_a_row=track.mismatches + 1)
            if self._note(symbol, track, Outcome.MISMATCH):
                detail = "; ".join(verdict.differences)
                if feed.force(StreamBroken(Reason.AUDIT, detail=detail)):
                    log.warning("audit: two mismatches in a row, resynchronising", symbol=symbol)

    async def _request(self, rest_url: str, target: str) -> tuple[Answer, float]:
        """One GET within the budget, on the kept-alive connection (replaced once when the
        server had closed it); the answer and when it was sent."""
        origin = Origin.of(rest_url)
        async with self._lock:
            for attempt in (1, 2):
                await self.budget.take()
                conn = self._conn
                fresh = conn is None or not conn.open or conn.origin != origin
                try:
                    async with asyncio.timeout(TIMEOUT_S):
                        if conn is None or fresh:
                            if conn is not None:
                                conn.close()
                            conn = self._conn = await HttpConnection.connect(origin)
                        sent = self.clock()
                        return await conn.get(target, MAX_ANSWER_BYTES), sent
                except HttpError:
                    if fresh or attempt == 2:
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _note(self, symbol: str, track: Track, outcome: Outcome) -> bool:
        self.results[(symbol, outcome.value)] += 1
        return track.record(outcome)

    def _error(self, symbol: str, track: Track, outcome: Outcome, why: str, **fields: object) -> None:
        """An audit that got no book to judge: counted, logged when the trouble is new
        (then at most once per pause), and the audits pause with the backoff."""
        assert outcome in ERRORS
        self._note(symbol, track, outcome)
        delay = self.backoff.next_delay()
        self._paused_until = max(self._paused_until, self.clock() + delay)
        log.warning("audit failed: no REST book to compare", symbol=symbol, result=outcome.value,
                    error=why, attempt=self.backoff.failures, pause_s=round(delay, 3), **fields)
        self._last_error = why

    def _recovered(self) -> None:
        if self._last_error is not None:
            log.info("audit: REST book answered again", after=self.backoff.failures)
            self._last_error = None
        self.backoff.reset()
