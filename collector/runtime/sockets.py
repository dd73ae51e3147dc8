"""Current API: several symbols on one WebSocket (I/O shell).

A `SocketPool` packs the symbols' feeds onto `SharedSocket`s, up to
feed.symbols_per_socket each (one, for a symbol moved to a socket of its own). A
socket's reader parses each frame once and routes it by symbol (depth and trade
frames) or by request id (replies) into that symbol's `Link`; the symbol's feed
task drains its link, so each symbol keeps its own book, continuity and task, and
one symbol's work never holds up another's frames. Only a feed that falls
`HIGH_WATER` frames behind (its writer queue full) pauses the reader, which then
waits losslessly, as a socket of its own would.

Budgets, by construction (`collector.gemini.limits`): a new socket takes a token of
the process's connection budget (`bucket`: only sockets count, not symbols), every
request takes its weight from the request-weight budget, so a full start or a blip
never provokes a 429.

A socket that dies ends every link it carried with the same break (closed, stale,
or invalid for a frame nobody can own); each feed marks it, backs off briefly and
joins again, and the pool packs the returning symbols onto new sockets together.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

import orjson
import structlog
from websockets.exceptions import ConnectionClosed

from collector.config import FeedConfig
from collector.core.backoff import TokenBucket, acquire_wait
from collector.core.stream import StreamBroken, count_unknown
from collector.gemini import limits
from collector.gemini.current import (
    Ack,
    DepthUpdate,
    Error,
    Frame,
    Trade,
    UnknownFrame,
    connect_url,
    parse,
    streams,
)
from collector.gemini.current import unsubscribe as unsubscribe_request
from collector.gemini.wire import InvalidFrame, json_object
from collector.runtime import transport
from collector.runtime.transport import Connection, closed

log = structlog.get_logger("sockets")

Item = tuple[int, bytes, Frame | None]  # recv_ns, the frame, parsed (None: let the stream say why not)
HIGH_WATER = 10_000  # frames a link may hold before its socket's reader waits for it ...
LOW_WATER = 1_000  # ... until it is down to this many
WEIGHT_SHARE = 0.8  # of Gemini's request weight: what Gemini counts is not documented


class Link:
    """One symbol's place on a shared socket: the frames routed to it, in order, then
    at most one break (`ended`) once the socket is gone."""

    __slots__ = ("drained", "ended", "inbox", "live", "ready", "socket", "symbol")

    def __init__(self, symbol: str, socket: SharedSocket) -> None:
        self.symbol = symbol
        self.socket = socket
        self.inbox: deque[Item] = deque()
        self.ready = asyncio.Event()  # set when an item or the end arrived
        self.drained = asyncio.Event()  # set by the feed once a full inbox is down to LOW_WATER
        self.ended: StreamBroken | None = None
        self.live = False  # the feed's stream is live (per-socket metrics)

    def put(self, item: Item) -> bool:
        """Queue a frame; True when the inbox is full and the reader should wait."""
        self.inbox.append(item)
        self.ready.set()
        return len(self.inbox) > HIGH_WATER

    def end(self, broken: StreamBroken) -> None:
        if self.ended is None:
            self.ended = broken
        self.ready.set()
        self.drained.set()

    def took(self) -> None:
        """The feed took an item; wakes a reader waiting on this link."""
        if not self.drained.is_set() and len(self.inbox) <= LOW_WATER:
            self.drained.set()

    async def send(self, request: bytes) -> None:
        await self.socket.send(self, request)


class SharedSocket:
    """One connection, its reader, and the links of the symbols it carries."""

    def __init__(self, pool: SocketPool, slot: int, capacity: int) -> None:
        self.pool = pool
        self.slot = slot  # a small number for metrics, reused once the socket is gone
        self.capacity = capacity
        self.links: dict[str, Link] = {}
        self.left: set[str] = set()
        self.ids = itertools.count(1)  # request ids, shared by the streams on this socket
        self._owners: dict[int, Link] = {}  # request id -> the link whose stream sent it
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.ws: Connection | None = None
        self.gone = False  # no longer accepts symbols
        self.strays = 0  # frames for a symbol this socket does not carry (any more)
        self._task = asyncio.create_task(self._run(), name=f"socket-{slot}")

    def has_room(self, symbol: str) -> bool:
        """Room for `symbol`: never back on a socket it left, where frames of its old
        subscription may still come."""
        return not self.gone and len(self.links) < self.capacity and symbol not in self.left

    def add(self, symbol: str) -> Link:
        link = self.links[symbol] = Link(symbol, self)
        return link

    async def send(self, link: Link, request: bytes) -> None:
        """Send one of `link`'s requests; its reply is routed back to `link` by its id."""
        msg = orjson.loads(request)
        self._owners[msg["id"]] = link
        await self._send(request, msg.get("params") or (), link)

    async def _send(self, request: bytes, streams: Sequence[str], link: Link | None = None) -> None:
        """Send a request within the request-weight budget, unless the socket (or the
        link it is for) already has its break."""
        await self.pool.weigh(limits.request_weight(streams))
        if self.ws is None or self.gone or (link is not None and link.ended is not None):
            return
        try:
            await self.ws.send(request, text=True)
        except ConnectionClosed:
            pass  # the reader ends every link with the break

    def leave(self, link: Link) -> None:
        """A feed is done with its link. While the socket lives, its streams are
        unsubscribed (so the socket may serve others); the last one out closes it."""
        if self.links.get(link.symbol) is not link:
            return
        del self.links[link.symbol]
        self.left.add(link.symbol)
        link.drained.set()
        for req_id in [i for i, owner in self._owners.items() if owner is link]:
            del self._owners[req_id]
        if not self.links:
            self.close()
        elif not self.pool.closing and link.ended is None and self.ws is not None:
            names = streams(link.symbol, self.pool.cfg.trades)
            task = asyncio.create_task(self._send(unsubscribe_request(names, next(self.ids)), names))
            self.pool.background.add(task)
            task.add_done_callback(self.pool.background.discard)

    def close(self) -> None:
        self.gone = True
        self.pool.forget(self)
        if self.ws is not None:
            self.ws.transport.abort()
        elif not self._task.done():
            self._task.cancel()

    async def _run(self) -> None:
        try:
            await self.pool.connect_budget()
            ws = await transport.connect(self.pool.url, self.pool.cfg)
        except asyncio.CancelledError:  # closed before it opened: nobody is waiting
            self._failed(ConnectionError("socket closed before it opened"))
            raise
        except Exception as exc:
            self._failed(exc)
            return
        self.ws = ws
        self.opened.set_result(None)
        if self.gone:  # closed while connecting
            ws.transport.abort()
        broken = await self._read(ws)
        self.gone = True
        self.pool.forget(self)
        self.ws = None
        ws.transport.abort()
        for link in list(self.links.values()):
            link.end(broken)

    def _failed(self, exc: Exception) -> None:
        """Connecting failed: every symbol waiting to join gets `exc`."""
        self.gone = True
        self.pool.forget(self)
        if not self.opened.done():
            self.opened.set_exception(exc)
            self.opened.exception()  # retrieved: the joiners each get it

    async def _read(self, ws: Connection) -> StreamBroken:
        links, owners = self.links, self._owners
        while True:
            try:
                raw = await ws.recv(decode=False)
            except ConnectionClosed as exc:
                return closed(exc, self.pool.cfg.ping_timeout_s, heartbeats=False)
            recv_ns = time.time_ns()
            try:
                frame: Frame | None = parse(raw)
            except InvalidFrame:
                symbol = _symbol_of(raw)
                link = links.get(symbol) if symbol is not None else None
                frame = None  # the stream finds the same fault, marks it and resubscribes
                if link is None:  # nobody's: any symbol on this socket may have lost data
                    self.pool.invalid += 1
                    for each in list(links.values()):
                        each.put((recv_ns, raw, None))
                    continue
            else:
                kind = type(frame)
                if kind is DepthUpdate or kind is Trade:
                    link = links.get(frame.symbol)  # type: ignore[union-attr]
                elif kind is Ack or kind is Error:
                    req_id = frame.id  # type: ignore[union-attr]
                    link = owners.pop(req_id, None) if req_id is not None else None
                    if link is None:
                        if kind is Error:
                            self.pool.refusal(raw)
                        continue
                else:  # an unknown kind: its symbol's feed counts it, if it names one here
                    symbol = _symbol_of(raw)
                    link = links.get(symbol) if symbol is not None else None
                    if link is None:
                        self.pool.unknown(frame)  # type: ignore[arg-type]  # the one kind left
                        continue
                if link is None:
                    self.strays += 1
                    continue
            if link.put((recv_ns, raw, frame)):
                link.drained.clear()
                await link.drained.wait()


class SocketPool:
    """The shared sockets of one collector (current API, feed.symbols_per_socket > 1)."""

    def __init__(self, cfg: FeedConfig, bucket: TokenBucket) -> None:
        self.cfg = cfg
        self.url = connect_url(cfg.url)
        self.bucket = bucket  # the process's connection budget
        share = limits.REQUEST_WEIGHT * WEIGHT_SHARE
        self.weights = TokenBucket(share, share * 60 / limits.REQUEST_WINDOW_S, time.monotonic())
        self.sockets: dict[int, SharedSocket] = {}  # by slot
        self.opened = 0  # sockets opened (connection attempts)
        self.refusals = 0  # error replies no request of ours can own
        self.invalid = 0  # invalid frames naming no symbol of their socket: given to all its symbols
        self.unknowns: Counter[str] = Counter()  # frames of unknown kinds (bounded names)
        self.background: set[asyncio.Task[None]] = set()
        self.closing = False  # the collector is stopping: symbols leave without unsubscribing
        self._slots = itertools.count()
        self._free: list[int] = []
        self._gone_strays = 0

    async def join(self, symbol: str, alone: bool = False) -> Link:
        """A link for `symbol` on a socket with room (a new one if none has room, or
        `alone`), once that socket is open. Raises what connecting raised."""
        sock = None if alone else next((s for s in self.sockets.values() if s.has_room(symbol)), None)
        if sock is None:
            slot = self._free.pop() if self._free else next(self._slots)
            sock = self.sockets[slot] = SharedSocket(self, slot, 1 if alone else self.cfg.symbols_per_socket)
            self.opened += 1
        link = sock.add(symbol)
        try:
            await asyncio.shield(sock.opened)
        except BaseException:
            sock.leave(link)
            raise
        return link

    def forget(self, sock: SharedSocket) -> None:
        if self.sockets.get(sock.slot) is sock:
            del self.sockets[sock.slot]
            self._free.append(sock.slot)
            self._gone_strays += sock.strays

    async def connect_budget(self) -> None:
        while wait := acquire_wait((self.bucket,), time.monotonic()):
            if wait >= 1:
                log.info("waiting for connection budget", seconds=round(wait, 1))
            await asyncio.sleep(wait)

    async def weigh(self, weight: int) -> None:
        """Take `weight` from the request-weight budget, waiting while it is spent."""
        while wait := self.weights.wait_time(time.monotonic(), weight):
            await asyncio.sleep(wait)
        self.weights.take(time.monotonic(), weight)

    def refusal(self, raw: bytes) -> None:
        self.refusals += 1
        log.warning("error reply to no request of ours", sample=raw[:200].decode(errors="replace"))

    def unknown(self, frame: UnknownFrame) -> None:
        kind = count_unknown(self.unknowns, f"frame:{frame.kind}")
        if self.unknowns[kind] == 1:
            log.warning("unknown event type skipped", kind=kind)

    def close(self) -> None:
        self.closing = True
        for sock in list(self.sockets.values()):
            sock.close()
        for task in self.background:
            task.cancel()

    @property
    def strays(self) -> int:
        return sum(s.strays for s in self.sockets.values()) + self._gone_strays

    def status(self) -> list[dict[str, Any]]:
        """Per socket: symbols carried and live (metrics)."""
        # copies first (sorted and list take them in C): the metrics thread reads this
        # while the loop may change it
        return [{"slot": s.slot, "symbols": len(links), "live": sum(link.live for link in links)}
                for s in sorted(self.sockets.values(), key=lambda s: s.slot)
                for links in [list(s.links.values())]]


def _symbol_of(raw: bytes) -> str | None:
    """The upper-case symbol an invalid frame names, if it is a JSON object naming one."""
    try:
        s = json_object(raw).get("s")
    except InvalidFrame:
        return None
    return s.upper() if isinstance(s, str) else None

