"""One symbol's feed: connect, stream into a `Stream`, resync, back off (I/O shell).

States: waiting for a connection token -> connecting -> awaiting snapshot ->
live -> (break) -> backing off -> waiting for a token ... until stop().

A break is marked in the file by one `resync` record: the first failure after
the stream was last live (or after start) writes it; further failed attempts
before the next live stream are logged, not written. `start` (or `error`
after a crash) is written when the feed (re)starts.
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable

import structlog
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from collector import rawlog, records, transport
from collector.backoff import Backoff, TokenBucket, acquire_wait
from collector.config import Config
from collector.current_stream import CurrentStream
from collector.gemini import current
from collector.gemini.v1 import stream_url
from collector.metrics import Histogram
from collector.stream import Counts, Stream, StreamBroken
from collector.transport import Connection
from collector.writer import Writer, raw_key

_unknown_logged: set[str] = set()  # unknown event types are logged once per process
# Current API: breaks repaired on the same socket (UNSUBSCRIBE, ack, SUBSCRIBE, snapshot),
# this many times in a row before the socket is replaced.
RESUBSCRIBE_REASONS = ("gap", "crossed")
MAX_RESUBSCRIBES = 3
REFREEZE_S = 60.0  # at most one full garbage collection this often (freeze_books)
_refrozen_at = float("-inf")


def freeze_books(now: float) -> None:
    """Move what is alive out of the garbage collector's view once a book went live.

    A snapshot brings thousands of long-lived objects; frozen, full collections stop
    walking every book (23 ms on average at 100 symbols x 2000 levels, bench/README.md),
    and refcounting still frees them. But frozen objects are never collected as cycles,
    and a connection is full of cycles (protocol, transport, tasks, an exception's
    traceback): frozen while live, it would leak when it closes, about 40 kB per
    reconnect. So at most every REFREEZE_S, unfreeze and collect everything first (one
    full collection, only when a stream has just gone live); what was frozen since is
    collected then."""
    global _refrozen_at
    if now - _refrozen_at >= REFREEZE_S:
        _refrozen_at = now
        gc.unfreeze()
        gc.collect()
    gc.freeze()


@dataclass
class FeedStats(Counts):
    connects: int = 0
    resyncs: Counter[str] = field(default_factory=Counter)  # every failure, by reason
    marked: Counter[str] = field(default_factory=Counter)  # resync records written, by reason
    unknown: Counter[str] = field(default_factory=Counter)
    live: bool = False
    last_frame: float = 0.0  # monotonic time of the last frame received
    latency: Histogram | None = field(default_factory=Histogram)  # exchange -> receive


class Feed:
    def __init__(self, symbol: str, cfg: Config, writer: Writer, process_bucket: TokenBucket,
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self.symbol = symbol
        self.cfg = cfg.feed
        self.depth = cfg.book.depth
        self.emit_every = cfg.book.emit == "every"
        self.writer = writer
        self.clock = clock
        self.log = structlog.get_logger("feed").bind(symbol=symbol)
        self.stats = FeedStats()
        self.backoff = Backoff(self.cfg.backoff_initial_s, self.cfg.backoff_max_s, rng)
        self.buckets = (
            TokenBucket(self.cfg.connect_burst, self.cfg.connects_per_minute, clock()),
            process_bucket,
        )
        self.api = self.cfg.api
        if self.api == "current":
            self.url = current.connect_url(self.cfg.url)  # ?snapshot=-1
        else:
            self.url = stream_url(self.cfg.url, symbol, self.cfg.trades)
        self.raw_key = raw_key(symbol) if cfg.output.raw else None
        self._stopping = asyncio.Event()
        self._ws: Connection | None = None
        self._failures = 0  # failed attempts since the stream was last live
        self._stream: Stream | CurrentStream | None = None

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        """Finish the frame in hand, close the socket and return from run()."""
        self._stopping.set()
        if self._ws is not None:
            self._ws.transport.abort()  # nothing more is wanted from it; don't wait on a peer

    async def run(self, reason: str = "start", **detail: Any) -> None:
        await self._emit(records.resync(self.symbol, reason, time.time_ns(), **detail))
        self._failures = 0
        while not self._stopping.is_set():
            if not await self._acquire():
                break
            delay = await self._session()
            await self._sleep(delay)
        self.stats.live = False

    async def _acquire(self) -> bool:
        """Wait for a token from this symbol's and the process's budgets."""
        while True:
            wait = acquire_wait(self.buckets, self.clock())
            if wait == 0:
                return True
            if wait >= 1:
                self.log.info("waiting for connection budget", seconds=round(wait, 1))
            if await self._sleep(wait):
                return False

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopped; True if stop() came."""
        try:
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        except TimeoutError:
            pass
        return self._stopping.is_set()

    async def _session(self) -> float:
        """One connection, from handshake to break; returns the delay before the next."""
        cfg = self.cfg
        self.stats.connects += 1
        try:
            ws = await transport.connect(self.url, cfg)
        except InvalidStatus as exc:
            return await self._refused(exc)
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            await self._break("closed", detail=f"connect failed: {exc!r}")
            return self.backoff.next_delay()
        if self._stopping.is_set():
            await ws.close()
            return 0.0
        self._ws = ws
        self.log.info("connected", url=self.url)
        if self.raw_key:
            await self.writer.put(self.raw_key, rawlog.connect(self.url, time.time_ns()))
        if self.api == "current":
            return await self._current(ws)
        live_since: float | None = None
        stream = self._stream = Stream(self.symbol, self.depth, self.emit_every, self._unknown, self.stats)
        expired: list[StreamBroken] = []
        watch = asyncio.create_task(self._deadlines(ws, stream, expired))
        try:
            while True:
                try:
                    raw = await ws.recv(decode=False)
                except ConnectionClosed as exc:
                    if self._stopping.is_set():
                        return 0.0
                    if expired:
                        raise expired[0] from None
                    raise StreamBroken("closed", detail=_close_detail(exc)) from None
                if self.raw_key:
                    data = await self._consume(stream, raw)
                else:  # the per-frame path: no coroutine beyond recv() unless the queue is full
                    self.stats.last_frame = self.clock()
                    data = stream.feed(raw, time.time_ns())
                if live_since is None and stream.live:
                    live_since = self.clock()
                    self._went_live()
                if data and not self.writer.offer(self.symbol, data):
                    await self.writer.put(self.symbol, data)
        except StreamBroken as broken:
            return await self._broken(broken, live_since)
        finally:
            watch.cancel()
            await self._hang_up(ws)

    async def _deadlines(self, ws: Connection, stream: Stream, expired: list[StreamBroken]) -> None:
        """Snapshot and stale deadlines. One sleep per deadline, moved on by the frames
        that came meanwhile, instead of a timer armed around every recv (that cost ~15%
        of the per-frame time). On expiry the socket is aborted and recv() raises."""
        cfg = self.cfg
        opened = self.clock()
        while True:
            if stream.live:
                limit, since, what = cfg.stale_after_s, self.stats.last_frame, "stale"
            else:
                limit, since, what = cfg.snapshot_timeout_s, opened, "snapshot_timeout"
            left = since + limit - self.clock()
            if left <= 0:
                detail = f"no frame for {limit} s" if what == "stale" else f"no snapshot in {limit} s"
                expired.append(StreamBroken(what, detail=detail))
                ws.transport.abort()
                return
            await asyncio.sleep(left)

    async def _current(self, ws: Connection) -> float:
        """A current-API session on this symbol's own socket: SUBSCRIBE, then frames
        until a break. With feed.repair = "resubscribe" a gap or a crossed book is
        repaired on the same socket (`CurrentStream.resync`: UNSUBSCRIBE, its ack,
        SUBSCRIBE, a fresh snapshot), up to MAX_RESUBSCRIBES times in a row; anything
        else, every break with "reconnect", or no snapshot within snapshot_timeout_s,
        ends the session (reconnect).

        Liveness is websockets' keepalive (a ping every ping_interval_s, a pong within
        ping_timeout_s, else websockets fails the socket -> "stale"). Data silence is
        never a break: a quiet book may say nothing for half a minute. So a live stream
        receives with no timer at all; only the wait for a snapshot has a deadline."""
        cfg = self.cfg
        stream = self._stream = CurrentStream(self.symbol, self.depth, self.emit_every,
                                              self._unknown, self.stats, trades=cfg.trades)
        live_since: float | None = None
        stream.start()
        in_place = cfg.repair == "resubscribe"
        try:
            await self._send(ws, stream.take_requests())
            deadline = self.clock() + cfg.snapshot_timeout_s
            while True:
                try:
                    if stream.live:
                        raw = await ws.recv(decode=False)
                    else:
                        async with asyncio.timeout(max(0.0, deadline - self.clock())):
                            raw = await ws.recv(decode=False)
                except TimeoutError:
                    raise StreamBroken("snapshot_timeout",
                                       detail=f"no snapshot in {cfg.snapshot_timeout_s} s") from None
                except ConnectionClosed as exc:
                    if self._stopping.is_set():
                        return 0.0
                    if exc.rcvd is None and exc.sent is not None and exc.sent.code == 1011:
                        raise StreamBroken("stale", detail=f"no pong within {cfg.ping_timeout_s} s "
                                                           "(dead connection)") from None
                    raise StreamBroken("closed", detail=_close_detail(exc)) from None
                try:
                    data = await self._consume(stream, raw)
                except StreamBroken as broken:
                    if (not in_place or broken.reason not in RESUBSCRIBE_REASONS
                            or self._failures >= MAX_RESUBSCRIBES):
                        raise
                    await self._break(broken.reason, **broken.fields)
                    self.stats.live = False
                    live_since = None
                    stream.resync()
                    await self._send(ws, stream.take_requests())
                    deadline = self.clock() + cfg.snapshot_timeout_s
                    continue
                if requests := stream.take_requests():  # SUBSCRIBE once an UNSUBSCRIBE is acked
                    await self._send(ws, requests)
                if live_since is None and stream.live:
                    live_since = self.clock()
                    self._went_live()
                if data and not self.writer.offer(self.symbol, data):
                    await self.writer.put(self.symbol, data)
        except StreamBroken as broken:
            return await self._broken(broken, live_since)
        except ConnectionClosed as exc:  # while sending a request
            if self._stopping.is_set():
                return 0.0
            await self._break("closed", detail=_close_detail(exc))
            return self.backoff.next_delay()
        finally:
            await self._hang_up(ws)

    async def _hang_up(self, ws: Connection) -> None:
        """End a session's connection: abort it when stopping (nothing more is wanted
        from the peer), else close it cleanly."""
        self._ws = None
        self.stats.live = False
        ws.transport.abort() if self._stopping.is_set() else await ws.close()

    async def _send(self, ws: Connection, requests: list[bytes]) -> None:
        """Send a stream's requests; each is also logged raw (a `sent` line), so that a
        replay can redo the same repairs and check it asked for the same things."""
        for req in requests:
            await ws.send(req, text=True)
            if self.raw_key:
                await self.writer.put(self.raw_key, rawlog.sent(req, time.time_ns()))

    async def _consume(self, stream: Stream | CurrentStream, raw: bytes) -> bytes:
        """One frame into the stream (and the raw log, when on); StreamBroken propagates."""
        recv_ns = time.time_ns()
        self.stats.last_frame = self.clock()
        try:
            data = stream.feed(raw, recv_ns)
        except StreamBroken as broken:
            if self.raw_key:
                await self.writer.put(self.raw_key, rawlog.frame(
                    raw, recv_ns, parsed=broken.reason != "invalid"))
            raise
        if self.raw_key:
            await self.writer.put(self.raw_key, rawlog.frame(raw, recv_ns, parsed=True))
        return data

    async def _broken(self, broken: StreamBroken, live_since: float | None) -> float:
        """Mark a break; the delay before the next attempt."""
        if live_since is not None and self.clock() - live_since >= self.cfg.healthy_after_s:
            self.backoff.reset()
        await self._break(broken.reason, **broken.fields)
        return self.backoff.next_delay()

    def _went_live(self) -> None:
        freeze_books(time.monotonic())
        self.stats.live = True
        self._failures = 0
        self.log.info("live", levels=self._levels())

    async def _refused(self, exc: InvalidStatus) -> float:
        status = exc.response.status_code
        retry_after = _retry_after(exc.response.headers.get("Retry-After"))
        if status == 404:
            self.log.error("exchange does not know this symbol (HTTP 404); retrying slowly",
                           retry_in_s=self.cfg.refused_retry_s)
            await self._break("refused", status=status, detail="unknown or delisted symbol")
            return self.cfg.refused_retry_s
        await self._break("refused", status=status, retry_after=retry_after)
        return max(self.backoff.next_delay(), retry_after or 0.0)

    async def _break(self, reason: str, **fields: Any) -> None:
        self.stats.resyncs[reason] += 1
        first = self._failures == 0
        self._failures += 1
        self.log.warning("resync", reason=reason, attempt=self._failures, **fields)
        if first:
            self.stats.marked[reason] += 1
            await self._emit(records.resync(self.symbol, reason, time.time_ns(), **fields))

    async def _emit(self, data: bytes) -> None:
        await self.writer.put(self.symbol, data)
        if self.raw_key:  # so a replay of the raw frames marks the same breaks
            await self.writer.put(self.raw_key, data)

    def _unknown(self, kind: str) -> None:
        self.stats.unknown[kind] += 1
        if kind not in _unknown_logged:
            _unknown_logged.add(kind)
            self.log.warning("unknown event type skipped", kind=kind)

    def _levels(self) -> dict[str, int]:
        book = self._stream.book if self._stream else None
        return {"bids": len(book.bids), "asks": len(book.asks)} if book else {}

    def best(self) -> tuple[str | None, str | None]:
        """Best bid and ask prices of the live book, for status displays."""
        book = self._stream.book if self._stream and self.stats.live else None
        if book is None:
            return None, None
        bid, ask = book.bids.top(1), book.asks.top(1)
        return (bid[0][0] if bid else None), (ask[0][0] if ask else None)


def _close_detail(exc: ConnectionClosed) -> str:
    if exc.rcvd is None:
        return "connection lost without a close frame"
    return f"closed by peer: code {exc.rcvd.code} {exc.rcvd.reason!r}".rstrip()


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date; the backoff applies instead
