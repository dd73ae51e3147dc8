"""One symbol's feed: connect, stream into a `SymbolStream`, resync, back off (I/O shell).

One session loop serves both APIs; what differs comes from the stream class
(`SymbolStream`: its URL, whether the exchange sends heartbeats, whether a break can
be repaired on the same socket). The feed's states and their moves are the table
`TRANSITIONS`.

A break is marked in the file by one `resync` record: the first failure after
the stream was last live (or after start) writes it; further failed attempts
before the next live stream are logged, not written. `start` (or `error`
after a crash) is written when the feed (re)starts.

A peer's answers are bounded: Retry-After (`wire.retry_after_s`, at most
feed.retry_after_max_s), unknown kinds (`stream.count_unknown`, `Feed._unknown`).

The audit (runtime/audit.py) sees a stream's states through a `Tap` it arms on the feed
(`arm`, `disarm`; the loops call it after each frame only while one is armed) and breaks
a stream whose book differs from the exchange's (`force`).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, cast

import structlog
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from collector.config import Config
from collector.core import format, rawlog
from collector.core.audit import Tap
from collector.core.backoff import Backoff, TokenBucket, acquire_wait
from collector.core.book import HAVE_NATIVE
from collector.core.format import Reason
from collector.core.histogram import Histogram
from collector.core.stream import OTHER, Counts, StreamBroken, SymbolStream, count_unknown
from collector.gemini.current import Frame
from collector.gemini.current_stream import CurrentStream
from collector.gemini.v1_stream import V1Stream
from collector.gemini.wire import retry_after_s
from collector.runtime import transport
from collector.runtime.sockets import Link, SocketPool
from collector.runtime.transport import Connection, close_detail, closed
from collector.runtime.writer import Writer, raw_key

STREAMS: dict[str, type[V1Stream] | type[CurrentStream]] = {"v1": V1Stream, "current": CurrentStream}
# Unknown kinds: the first LOG_UNKNOWN_KINDS names are logged once per process, the rest
# in a summary per feed at most every UNKNOWN_SUMMARY_S (so a peer inventing kinds costs
# no log line per kind).
LOG_UNKNOWN_KINDS = 8
UNKNOWN_SUMMARY_S = 60.0
_unknown_logged: set[str] = set()
# Breaks repaired on the same socket (where the stream can: UNSUBSCRIBE, ack, SUBSCRIBE,
# snapshot), this many times in a row before the socket is replaced.
RESUBSCRIBE_REASONS = (Reason.GAP, Reason.CROSSED)
# On a shared socket every break of one symbol's stream is repaired that way (leaving and
# joining again could bring back the old subscription's frames as the new snapshot).
SHARED_REPAIRS = (*RESUBSCRIBE_REASONS, Reason.INVALID, Reason.SNAPSHOT_TIMEOUT, Reason.AUDIT)
MAX_RESUBSCRIBES = 3
REFREEZE_S = 60.0  # at most one full garbage collection this often (freeze_books)
_refrozen_at = float("-inf")


class FeedState(StrEnum):
    STOPPED = "stopped"  # not running (before run(), after it returned or crashed)
    WAITING = "waiting"  # for a token from the connection budgets
    CONNECTING = "connecting"
    SNAPSHOT = "snapshot"  # connected, waiting for the book
    LIVE = "live"
    BACKOFF = "backoff"  # after a break, before the next attempt


TRANSITIONS: dict[FeedState, frozenset[FeedState]] = {
    FeedState.STOPPED: frozenset({FeedState.WAITING}),
    FeedState.WAITING: frozenset({FeedState.CONNECTING, FeedState.STOPPED}),
    FeedState.CONNECTING: frozenset({FeedState.SNAPSHOT, FeedState.BACKOFF, FeedState.STOPPED}),
    FeedState.SNAPSHOT: frozenset({FeedState.LIVE, FeedState.BACKOFF, FeedState.STOPPED}),
    # LIVE -> SNAPSHOT: a break repaired on the same socket
    FeedState.LIVE: frozenset({FeedState.SNAPSHOT, FeedState.BACKOFF, FeedState.STOPPED}),
    FeedState.BACKOFF: frozenset({FeedState.WAITING, FeedState.STOPPED}),
}


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
    state: FeedState = FeedState.STOPPED
    last_frame: float = 0.0  # monotonic time of the last frame received
    latency: Histogram | None = field(default_factory=Histogram)  # exchange -> receive

    @property
    def live(self) -> bool:
        return self.state is FeedState.LIVE


class Feed:
    def __init__(self, symbol: str, cfg: Config, writer: Writer, process_bucket: TokenBucket,
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None, native: bool = HAVE_NATIVE,
                 pool: SocketPool | None = None) -> None:
        self.symbol = symbol
        self.cfg = cfg.feed
        self.depth = cfg.book.depth
        self.emit_every = cfg.book.emit == "every"
        self.native = native  # the C book core
        self.writer = writer
        self.clock = clock
        self.log = structlog.get_logger("feed").bind(symbol=symbol)
        self.stats = FeedStats()
        self.backoff = Backoff(self.cfg.backoff_initial_s, self.cfg.backoff_max_s, rng)
        own = TokenBucket(self.cfg.connect_burst, self.cfg.connects_per_minute, clock())
        # On a shared socket a symbol's attempt is a SUBSCRIBE; the pool budgets its sockets.
        self.buckets = (own,) if pool else (own, process_bucket)
        self.pool = pool
        self.stream_class = STREAMS[self.cfg.api]
        self.url = self.stream_class.url(self.cfg.url, symbol, self.cfg.trades)
        self.raw_key = raw_key(symbol) if cfg.output.raw else None
        self._stopping = asyncio.Event()
        self._ws: Connection | None = None
        self._link: Link | None = None  # on a shared socket
        self._joining: asyncio.Future[Link] | None = None
        self._alone = False  # kept breaking on a shared socket: take one of its own
        self._breaks = 0  # breaks on shared sockets since the stream was last healthy
        self._failures = 0  # failed attempts since the stream was last live
        self._stream: SymbolStream | None = None
        self._unknown_unlogged = 0  # unknown kinds not logged by name since the last summary
        self._unknown_summary_at = float("-inf")
        self.tap: Tap | None = None  # the audit's recorder, while one is armed
        # The running session's pending breaks and how to wake it (force, _deadlines).
        self._session_breaks: tuple[list[StreamBroken], Callable[[], object]] | None = None

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        """Finish the frame in hand, close the socket and return from run()."""
        self._stopping.set()
        if self._ws is not None:
            self._ws.transport.abort()  # nothing more is wanted from it; don't wait on a peer
        if self._link is not None:
            self._link.ready.set()
        if self._joining is not None:
            self._joining.cancel()

    def _to(self, state: FeedState) -> None:
        if state not in TRANSITIONS[self.stats.state]:
            raise RuntimeError(f"feed state {self.stats.state} cannot move to {state}")
        self.stats.state = state

    async def run(self, reason: Reason = Reason.START, **detail: Any) -> None:
        self._to(FeedState.WAITING)
        try:
            await self._emit(format.resync(self.symbol, reason, time.time_ns(), **detail))
            self._failures = 0
            while not self._stopping.is_set():
                if not await self._acquire():
                    break
                self._to(FeedState.CONNECTING)
                delay = await (self._shared_session() if self.pool else self._session())
                self._to(FeedState.BACKOFF)
                await self._sleep(delay)
                self._to(FeedState.WAITING)
        finally:
            self._to(FeedState.STOPPED)

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
        """One connection, from handshake to break; returns the delay before the next.

        Where the stream repairs in place and feed.repair = "resubscribe", a gap or a
        crossed book is repaired on the same socket (`_repair`), up to MAX_RESUBSCRIBES
        times in a row; every other break ends the session."""
        cfg = self.cfg
        self.stats.connects += 1
        try:
            ws = await transport.connect(self.url, cfg)
        except InvalidStatus as exc:
            return await self._refused(exc)
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            await self._break(Reason.CLOSED, detail=f"connect failed: {exc!r}")
            return self.backoff.next_delay()
        if self._stopping.is_set():
            await ws.close()
            return 0.0
        self._ws = ws
        stream = await self._opened(self.url)
        send = functools.partial(self._send, functools.partial(ws.send, text=True))
        in_place = stream.REPAIRS_IN_PLACE and cfg.repair == "resubscribe"
        live_since: float | None = None
        expired: list[StreamBroken] = []
        watch = self._watch(ws.transport.abort, stream, expired)
        self._session_breaks = (expired, ws.transport.abort)
        try:
            stream.start()
            await send(stream.take_requests())
            while True:
                try:
                    raw = await ws.recv(decode=False)
                except ConnectionClosed as exc:
                    if self._stopping.is_set():
                        return 0.0
                    if expired:
                        raise expired[0] from None
                    raise closed(exc, cfg.ping_timeout_s, stream.HEARTBEATS) from None
                try:
                    if self.raw_key:
                        data = await self._consume(stream, raw, None, time.time_ns())
                    else:  # the per-frame path: no coroutine beyond recv() unless the queue is full
                        self.stats.last_frame = self.clock()
                        data = stream.feed(raw, time.time_ns())
                except StreamBroken as broken:
                    if not (in_place and await self._repair(broken, stream, send, RESUBSCRIBE_REASONS)):
                        raise
                    live_since = None
                    watch.cancel()  # a new snapshot deadline
                    watch = self._watch(ws.transport.abort, stream, expired)
                    continue
                if stream.outbox:  # current API: SUBSCRIBE once an UNSUBSCRIBE is acked
                    await send(stream.take_requests())
                if live_since is None and stream.live:
                    live_since = self._went_live()
                if self.tap is not None:
                    self.tap.saw(stream)
                if data and not self.writer.offer(self.symbol, data):
                    await self.writer.put(self.symbol, data)
        except StreamBroken as broken:
            return await self._broken(broken, live_since)
        except ConnectionClosed as exc:  # while sending a request
            if self._stopping.is_set():
                return 0.0
            if expired:  # the socket was aborted for this break
                return await self._broken(expired[0], live_since)
            await self._break(Reason.CLOSED, detail=close_detail(exc))
            return self.backoff.next_delay()
        finally:
            self._session_breaks = None
            watch.cancel()
            await self._hang_up(ws)

    async def _shared_session(self) -> float:
        """`_session` on a socket shared with other symbols (`SocketPool`): frames come
        from this symbol's `Link`, a break is repaired by resubscribing this symbol alone,
        and a symbol whose repairs keep failing moves to a socket of its own."""
        assert self.pool is not None
        self.stats.connects += 1
        joining = self._joining = asyncio.ensure_future(self.pool.join(self.symbol, self._alone))
        try:
            link = await joining
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not self._stopping.is_set() or (task is not None and task.cancelling()):
                raise
            return 0.0
        except InvalidStatus as exc:
            return await self._refused(exc)
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            await self._break(Reason.CLOSED, detail=f"connect failed: {exc!r}")
            return self.backoff.next_delay()
        finally:
            self._joining = None
        self._link = link
        stream = await self._opened(f"{self.pool.url} (socket {link.socket.slot})", link.socket.ids)
        send = functools.partial(self._send, link.send)
        in_place = self.cfg.repair == "resubscribe"
        live_since: float | None = None
        expired: list[StreamBroken] = []
        watch = self._watch(link.ready.set, stream, expired)
        self._session_breaks = (expired, link.ready.set)
        inbox = link.inbox
        try:
            stream.start()
            await send(stream.take_requests())
            while True:
                if not inbox:
                    if self._stopping.is_set():
                        return 0.0
                    if link.ended is not None:
                        raise link.ended
                    if not expired:
                        link.ready.clear()
                        await link.ready.wait()
                        continue
                try:
                    if expired:
                        if stream.live:  # forced from outside: the book is forgotten first
                            cast(CurrentStream, stream).drop()
                        raise expired.pop()
                    recv_ns, raw, frame = inbox.popleft()
                    if not link.drained.is_set():
                        link.took()
                    data = await self._consume(stream, raw, frame, recv_ns)
                except StreamBroken as broken:
                    if self._keeps_breaking(live_since):
                        self._alone = True
                        self.log.warning("keeps breaking: moving to a socket of its own",
                                         breaks=self._breaks)
                        self._breaks = 0
                        raise
                    if not (in_place and await self._repair(broken, stream, send, SHARED_REPAIRS)):
                        raise
                    link.live = False
                    live_since = None
                    watch.cancel()
                    watch = self._watch(link.ready.set, stream, expired)
                    continue
                if stream.outbox:
                    await send(stream.take_requests())
                if live_since is None and stream.live:
                    live_since = self._went_live()
                    link.live = True
                if self.tap is not None:
                    self.tap.saw(stream)
                if data and not self.writer.offer(self.symbol, data):
                    await self.writer.put(self.symbol, data)
        except StreamBroken as broken:
            return await self._broken(broken, live_since)
        finally:
            self._session_breaks = None
            watch.cancel()
            link.live = False
            self._link = None
            link.socket.leave(link)

    def _keeps_breaking(self, live_since: float | None) -> bool:
        """One more break on a shared socket; True once more than MAX_RESUBSCRIBES came
        without the stream staying live feed.healthy_after_s in between."""
        if live_since is not None and self.clock() - live_since >= self.cfg.healthy_after_s:
            self._breaks = 0
        self._breaks += 1
        return self._breaks > MAX_RESUBSCRIBES

    async def _opened(self, where: str, ids: Iterator[int] | None = None) -> SymbolStream:
        """A connection is open (or a place on one): a new stream for it."""
        self._to(FeedState.SNAPSHOT)
        self.log.info("connected", url=where)
        if self.raw_key:
            await self.writer.put(self.raw_key, rawlog.connect(where, time.time_ns()))
        extra: dict[str, Any] = {} if ids is None else {"ids": ids}
        stream = self._stream = self.stream_class(
            self.symbol, self.depth, self.emit_every, self._unknown, self.stats, self.native,
            trades=self.cfg.trades, **extra)
        return stream

    async def _repair(self, broken: StreamBroken, stream: SymbolStream,
                      send: Callable[[list[bytes]], Awaitable[None]], reasons: tuple[Reason, ...]) -> bool:
        """Repair a break for one of `reasons` on the same socket (resubscribe), unless
        that has failed MAX_RESUBSCRIBES times in a row; False: the session must end."""
        if broken.reason not in reasons or self._failures >= MAX_RESUBSCRIBES:
            return False
        await self._break(broken.reason, **broken.fields)
        if self.stats.state is FeedState.LIVE:
            self._to(FeedState.SNAPSHOT)
        stream.resync()
        await send(stream.take_requests())
        return True

    def _watch(self, expire: Callable[[], object], stream: SymbolStream,
               expired: list[StreamBroken]) -> asyncio.Task[None]:
        return asyncio.create_task(self._deadlines(expire, stream, expired))

    async def _deadlines(self, expire: Callable[[], object], stream: SymbolStream,
                         expired: list[StreamBroken]) -> None:
        """The snapshot deadline, and (with heartbeats) the stale one. One sleep per
        deadline, moved on by the frames that came meanwhile, instead of a timer armed
        around every recv (that cost ~15% of the per-frame time). On expiry the break is
        noted and `expire` called: it aborts a socket of the symbol's own (recv() then
        raises), or wakes a shared socket's symbol. Without heartbeats data silence is
        never a break (a quiet book may say nothing for half a minute): websockets'
        keepalive pings prove the connection instead."""
        cfg = self.cfg
        opened = self.clock()
        while True:
            if not stream.live:
                limit, since, what = cfg.snapshot_timeout_s, opened, Reason.SNAPSHOT_TIMEOUT
            elif stream.HEARTBEATS:
                limit, since, what = cfg.stale_after_s, self.stats.last_frame, Reason.STALE
            else:
                return
            left = since + limit - self.clock()
            if left <= 0:
                detail = (f"no frame for {limit} s" if what is Reason.STALE
                          else f"no snapshot in {limit} s")
                expired.append(StreamBroken(what, detail=detail))
                expire()
                return
            await asyncio.sleep(left)

    async def _hang_up(self, ws: Connection) -> None:
        """End a session's connection: abort it when stopping (nothing more is wanted
        from the peer), else close it cleanly."""
        self._ws = None
        ws.transport.abort() if self._stopping.is_set() else await ws.close()

    async def _send(self, send: Callable[[bytes], Awaitable[None]], requests: list[bytes]) -> None:
        """Send a stream's requests; each is also logged raw (a `sent` line), so that a
        replay can redo the same repairs and check it asked for the same things."""
        for req in requests:
            await send(req)
            if self.raw_key:
                await self.writer.put(self.raw_key, rawlog.sent(req, time.time_ns()))

    async def _consume(self, stream: SymbolStream, raw: bytes, frame: Frame | None,
                       recv_ns: int) -> bytes:
        """One frame into the stream (and the raw log, when on); StreamBroken propagates.
        On a shared socket the frame comes parsed (`frame`), unless it was invalid."""
        self.stats.last_frame = self.clock()
        try:
            data = (stream.feed(raw, recv_ns) if frame is None
                    else cast(CurrentStream, stream).feed_frame(frame, recv_ns))
        except StreamBroken as broken:
            if self.raw_key:
                await self.writer.put(self.raw_key, rawlog.frame(
                    raw, recv_ns, parsed=broken.reason is not Reason.INVALID))
            raise
        if self.raw_key:
            await self.writer.put(self.raw_key, rawlog.frame(raw, recv_ns, parsed=True))
        return data

    async def _broken(self, broken: StreamBroken, live_since: float | None) -> float:
        """Mark a break; the delay before the next attempt."""
        if live_since is not None and self.clock() - live_since >= self.cfg.healthy_after_s:
            self.backoff.reset()
            self._alone = False  # healthy on a socket of its own: it may share again
        await self._break(broken.reason, **broken.fields)
        return self.backoff.next_delay()

    def _went_live(self) -> float:
        """The stream is live; when it went live."""
        freeze_books(time.monotonic())
        self._to(FeedState.LIVE)
        self._failures = 0
        self.log.info("live", levels=self._levels())
        return self.clock()

    async def _refused(self, exc: InvalidStatus) -> float:
        status = exc.response.status_code
        asked = exc.response.headers.get_all("Retry-After")
        retry_after = retry_after_s(asked, self.cfg.retry_after_max_s)
        if asked and retry_after is None:
            self.log.warning("Retry-After ignored: not a sane number of seconds",
                             value=[v[:40] for v in asked[:3]])
        if status == 404:
            self.log.error("exchange does not know this symbol (HTTP 404); retrying slowly",
                           retry_in_s=self.cfg.refused_retry_s)
            await self._break(Reason.REFUSED, status=status, detail="unknown or delisted symbol")
            return self.cfg.refused_retry_s
        await self._break(Reason.REFUSED, status=status, retry_after=retry_after)
        return max(self.backoff.next_delay(), retry_after or 0.0)

    def arm(self, tap: Tap) -> None:
        """Hand `tap` this symbol's stream after every frame until `disarm`, and now (the
        state at arming)."""
        self.tap = tap
        stream = self._stream
        if stream is not None and self.stats.live:
            tap.saw(stream)
        else:
            tap.lost()

    def disarm(self, tap: Tap) -> None:
        if self.tap is tap:
            self.tap = None

    def force(self, broken: StreamBroken) -> bool:
        """Break the live stream from outside (the audit): marked with `broken` and
        repaired as the session repairs it (a socket of its own is aborted, so the
        reconnect takes a fresh snapshot; on a shared one the symbol resubscribes).
        False when no stream is live."""
        if self._session_breaks is None or not self.stats.live:
            return False
        expired, expire = self._session_breaks
        expired.append(broken)
        expire()
        return True

    async def _break(self, reason: Reason, **fields: Any) -> None:
        if self.tap is not None:
            self.tap.lost()
        self.stats.resyncs[reason.value] += 1
        first = self._failures == 0
        self._failures += 1
        self.log.warning("resync", reason=reason, attempt=self._failures, **fields)
        if first:
            self.stats.marked[reason.value] += 1
            await self._emit(format.resync(self.symbol, reason, time.time_ns(), **fields))

    async def _emit(self, data: bytes) -> None:
        await self.writer.put(self.symbol, data)
        if self.raw_key:  # so a replay of the raw frames marks the same breaks
            await self.writer.put(self.raw_key, data)

    def _unknown(self, kind: str) -> None:
        counts = self.stats.unknown
        kind = count_unknown(counts, kind)
        if kind in _unknown_logged:
            return
        if len(_unknown_logged) < LOG_UNKNOWN_KINDS and kind != OTHER:
            _unknown_logged.add(kind)
            self.log.warning("unknown event type skipped", kind=kind)
            return
        self._unknown_unlogged += 1
        now = self.clock()
        if now - self._unknown_summary_at >= UNKNOWN_SUMMARY_S:
            self._unknown_summary_at = now
            self.log.warning("unknown event types skipped (summary)", kind=kind,
                             skipped=self._unknown_unlogged, kinds=len(counts))
            self._unknown_unlogged = 0

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

