"""The feed's WebSocket client: `websockets` (the default and the reference) or `picows`.

    ws = await connect(url, cfg)          # cfg: FeedConfig; cfg.transport picks the client
    raw = await ws.recv(decode=False)     # one whole message, as bytes
    await ws.send(request, text=True)
    await ws.close()                      # or ws.transport.abort()

"websockets" returns websockets' own `ClientConnection`, untouched: nothing is added on
the reference path.

"picows" exists because picows' receive path is several times cheaper than websockets'
(bench/README.md: the picows floor reads about 2.3x the updates per CPU-second of the
websockets floor, about 3.4 us against 8 us per update). `PicowsConnection` gives it the
few things the feed uses of a `ClientConnection`, and fails the same way, with websockets'
exception types, so the feed handles both alike:

* `ConnectionClosed(rcvd, sent)` once the socket is gone and every message received
  before has been returned: the peer's close frame in `rcvd`; `rcvd is None` when the
  connection was lost without one; a dead peer (no pong) is `rcvd is None` and
  `sent.code == 1011`, exactly like websockets' keepalive timeout;
* `InvalidStatus(response)` for a refused handshake (status code, headers, body);
  `InvalidMessage` for another bad handshake; `OSError` or `TimeoutError` when the
  connection or the handshake does not happen in time; a failed TLS handshake is
  `ssl.SSLError` with its reason in its message (picows raises it with none);
* a frame over MAX_SIZE is refused with 1009 (`close_detail` says so, with the size).

picows' own log lines (stdlib logging, the "picows" logger) go through structlog
(collector/ops/logs.py), and the failure picows keeps for `wait_disconnected()` is
retrieved, so nothing but structured lines reaches stderr.

picows stays optional: config.py checks that it is installed (without importing it) when
the config is loaded; this module imports it only when a picows connection is opened.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections import deque
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.datastructures import Headers
from websockets.exceptions import (
    ConcurrencyError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidMessage,
    InvalidStatus,
)
from websockets.frames import OK_CLOSE_CODES, Close, CloseCode
from websockets.http11 import Response

from collector.config import PICOWS_INSTALL_HINT, ConfigError, FeedConfig
from collector.core.format import Reason
from collector.core.stream import StreamBroken

if TYPE_CHECKING:
    from picows import WSFrame, WSTransport

__all__ = ["Connection", "PicowsConnection", "close_detail", "closed", "connect"]

MAX_SIZE = 64 * 2**20  # largest message accepted (a full-depth snapshot is far smaller)
MAX_QUEUE = 64  # received messages held before reading pauses (websockets' max_queue)
RESUME_AT = MAX_QUEUE // 4  # ... and resumes once the consumer is down to this many
CLOSE_TIMEOUT_S = 2.0  # close(): wait this long for the peer's side of the closing handshake

Connection: TypeAlias = "ClientConnection | PicowsConnection"


async def connect(url: str, cfg: FeedConfig) -> Connection:
    """Open the feed's connection with cfg.transport; see the module docstring."""
    if cfg.transport == "websockets":
        return await ws_connect(
            url, open_timeout=cfg.snapshot_timeout_s, ping_interval=cfg.ping_interval_s,
            ping_timeout=cfg.ping_timeout_s, close_timeout=CLOSE_TIMEOUT_S, max_size=MAX_SIZE,
            max_queue=MAX_QUEUE, compression=None, user_agent_header=None,
        )
    if cfg.transport == "picows":
        return await _picows_connect(url, cfg)
    raise ValueError(f"unknown feed.transport {cfg.transport!r}")


# picows names, bound on first use by _picows(); None until then (picows is optional).
_TEXT: Any = None
_BINARY: Any = None
_CONTINUATION: Any = None
_CLOSE: Any = None
_NORMAL_CLOSURE: Any = None
_ProtocolError: Any = None


@functools.cache
def _picows() -> tuple[Any, type[PicowsConnection]]:
    """Import picows once: the module, and PicowsConnection made a picows listener.
    The listener is the connection itself (a mixin over picows.WSListener), so a frame
    costs one Python call, not two."""
    global _TEXT, _BINARY, _CONTINUATION, _CLOSE, _NORMAL_CLOSURE, _ProtocolError
    try:
        import picows
    except ImportError as exc:
        raise ConfigError(f'feed.transport = "picows" {PICOWS_INSTALL_HINT}') from exc
    m = picows.WSMsgType
    _TEXT, _BINARY, _CONTINUATION, _CLOSE = m.TEXT, m.BINARY, m.CONTINUATION, m.CLOSE
    _NORMAL_CLOSURE = picows.WSCloseCode.OK
    _ProtocolError = picows.WSProtocolError
    listener = type("PicowsListener", (PicowsConnection, picows.WSListener), {})
    return picows, listener


async def _picows_connect(url: str, cfg: FeedConfig) -> PicowsConnection:
    picows, listener = _picows()
    conn = listener()
    # websockets pings every ping_interval and gives up ping_timeout later (then waits
    # close_timeout for a close frame). picows pings after auto_ping_idle_timeout with no
    # incoming data (any frame proves the peer alive), drops the socket when no pong
    # came within auto_ping_reply_timeout, and needs reply <= idle. So with ping_timeout
    # <= ping_interval (the default 20/20) a dead peer is found within ping_interval +
    # ping_timeout of its last byte; with a longer ping_timeout, within 2 x ping_timeout.
    idle = max(cfg.ping_interval_s, cfg.ping_timeout_s)
    try:
        # The outer timeout bounds TCP connect + handshake (websockets' open_timeout);
        # picows' own handshake timeout closes the socket if the outer one fires first.
        async with asyncio.timeout(cfg.snapshot_timeout_s):
            ws, _ = await picows.ws_connect(
                lambda *_: conn, url, websocket_handshake_timeout=cfg.snapshot_timeout_s,
                enable_auto_ping=True, auto_ping_idle_timeout=idle,
                auto_ping_reply_timeout=cfg.ping_timeout_s, max_frame_size=MAX_SIZE,
            )
    except picows.WSInvalidStatusError as exc:
        raise InvalidStatus(_response(exc)) from exc
    except ssl.SSLError as exc:
        if exc.args:
            raise
        raise _with_reason(exc) from None
    except picows.WSHandshakeError as exc:
        raise InvalidMessage(f"bad opening handshake: {exc}") from exc
    if conn._ws is None:  # the peer closed before answering the upgrade
        ws.disconnect(graceful=False)
        raise InvalidMessage("connection closed during the opening handshake")
    return conn


def _with_reason(exc: ssl.SSLError) -> ssl.SSLError:
    """picows' TLS failure (raised with no args, so its repr says nothing) as the ssl
    module raises it: (1, message), the verification reason in the message."""
    message = str(exc) or f"{getattr(exc, 'reason', None)}: {getattr(exc, 'verify_message', None)}"
    new = type(exc)(1, message)
    for name in ("reason", "library", "verify_code", "verify_message"):
        if hasattr(exc, name):
            setattr(new, name, getattr(exc, name))
    return new


def close_detail(exc: ConnectionClosed) -> str:
    """Who closed, and why. A close frame we sent first is the collector's own doing:
    1009 a frame refused for its size (both transports give the size and the limit in
    the reason), another code a frame that broke the protocol."""
    sent, rcvd = exc.sent, exc.rcvd
    if sent is not None and (rcvd is None or exc.rcvd_then_sent is False):
        if sent.code == CloseCode.MESSAGE_TOO_BIG:
            return f"frame refused by the collector (limit {MAX_SIZE} bytes): {sent.reason}"
        return f"closed by the collector: code {sent.code} {sent.reason!r}"
    if rcvd is None:
        return "connection lost without a close frame"
    return f"closed by peer: code {rcvd.code} {rcvd.reason!r}".rstrip()


def closed(exc: ConnectionClosed, ping_timeout_s: float, heartbeats: bool) -> StreamBroken:
    """The break a closed connection means. Without heartbeats the keepalive is what
    finds a stale connection: 1011 sent and nothing received is websockets giving up
    on a dead peer."""
    if (not heartbeats and exc.rcvd is None and exc.sent is not None
            and exc.sent.code == CloseCode.INTERNAL_ERROR):
        return StreamBroken(Reason.STALE, detail=f"no pong within {ping_timeout_s} s (dead connection)")
    return StreamBroken(Reason.CLOSED, detail=close_detail(exc))


def _response(exc: Any) -> Response:
    """picows' refused upgrade response as websockets' Response (for InvalidStatus)."""
    r = exc.response
    return Response(int(r.status), r.status.phrase, Headers(list(r.headers.items())),
                    exc.raw_body or b"")


class PicowsConnection:
    """A picows client connection with the part of websockets' ClientConnection API the
    feed uses: recv, send, close, transport.abort().

    Frames are appended to a deque by picows' callback, whole messages only (fragments
    are joined: websockets does that too, and a server may fragment). recv() takes from
    the deque without suspending while it has messages: no Future per frame; only an
    empty deque makes it wait. Flow control as in websockets: above MAX_QUEUE messages
    reading on the socket pauses (TCP then holds the sender back), it resumes when the
    consumer is down to RESUME_AT. The deque can pass MAX_QUEUE by the messages of the
    one read in progress when it pauses (picows parses each read to its end), so it
    stays bounded by MAX_QUEUE plus one read buffer of messages.

    A recv() cancelled while waiting (asyncio.timeout) loses nothing: the waiter is only
    a wake-up, the messages are in the deque.

    Use `connect(url, cfg)`; this class is made a picows listener on first use.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._ws: WSTransport | None = None  # set by on_ws_connected
        self._queue: deque[bytes] = deque()
        self._parts: list[bytes] = []  # a fragmented message being received
        self._parts_size = 0
        self._waiter: asyncio.Future[None] | None = None  # an empty-queue recv() waits on it
        self._paused = False  # reading paused by our flow control
        self._writable: asyncio.Future[None] | None = None  # set while picows' write buffer is full
        self._disconnected = asyncio.Event()
        self._closing = False  # close() was called: a close frame we sent is ours
        self._watch: asyncio.Task[None] | None = None  # retrieves picows' own failure

    # ---- the feed's API ----------------------------------------------------------------

    @property
    def transport(self) -> asyncio.Transport:
        """The TCP (or TLS) transport; abort() drops the connection at once."""
        assert self._ws is not None
        return self._ws.underlying_transport

    async def recv(self, decode: Literal[False] = False) -> bytes:
        """The next message, text or binary, as bytes (decode=False, all the feed asks).
        ConnectionClosed once the connection is gone and the queue is empty."""
        queue = self._queue
        while not queue:
            if self._disconnected.is_set():
                raise self._closed_error()
            if self._waiter is not None:
                raise ConcurrencyError("recv() is already waiting for the next message")
            self._waiter = waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        message = queue.popleft()
        if self._paused and len(queue) <= RESUME_AT:
            self._paused = False
            if not self._disconnected.is_set():
                self.transport.resume_reading()
        return message

    async def send(self, message: str | bytes, text: bool = True) -> None:
        """Send one message (text frame with text=True, else binary); waits while picows'
        write buffer is above its high-water mark."""
        ws = self._ws
        assert ws is not None
        if self._disconnected.is_set() or ws.is_close_frame_sent:
            raise self._closed_error()
        ws.send(_TEXT if text else _BINARY, message)
        while self._writable is not None and not self._disconnected.is_set():
            await asyncio.shield(self._writable)

    async def close(self) -> None:
        """The closing handshake (1000), waiting up to CLOSE_TIMEOUT_S for the peer to
        end it, then the socket is aborted. Idempotent."""
        ws = self._ws
        assert ws is not None
        if self._disconnected.is_set():
            return
        self._closing = True
        if not ws.is_close_frame_sent:
            ws.send_close(_NORMAL_CLOSURE)
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self._disconnected.wait()
        except TimeoutError:
            ws.disconnect(graceful=False)

    # ---- picows callbacks (WSListener) --------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._ws = transport
        self._watch = self._loop.create_task(self._wait_disconnected(transport))

    @staticmethod
    async def _wait_disconnected(transport: WSTransport) -> None:
        """picows keeps a failure of its own (a frame over the limit) for
        wait_disconnected(); unretrieved, asyncio prints it with a traceback on stderr.
        The close frame it sent already says what it was (_closed_error)."""
        try:
            await transport.wait_disconnected()
        except Exception:
            pass

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if frame.fin and not self._parts and (kind is _TEXT or kind is _BINARY):
            message = frame.get_payload_as_bytes()  # the common case: a whole message
        elif kind is _TEXT or kind is _BINARY or kind is _CONTINUATION:
            joined = self._fragment(frame, kind)
            if joined is None:
                return
            message = joined
        elif kind is _CLOSE:
            if not transport.is_close_frame_sent:  # the peer's close: answer it, then go
                code = frame.get_close_code()  # echoed; 0 (none given) can't go on the wire
                transport.send_close(code if _code(code) else _NORMAL_CLOSURE,
                                     frame.get_close_message())
            transport.disconnect()
            return
        else:
            return  # an unsolicited pong (pings are answered, pongs consumed by picows)
        queue = self._queue
        queue.append(message)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if len(queue) > MAX_QUEUE and not self._paused:
            self._paused = True
            transport.underlying_transport.pause_reading()

    def _fragment(self, frame: WSFrame, kind: Any) -> bytes | None:
        """A frame of a fragmented message; the whole message once its last frame came."""
        if (kind is _CONTINUATION) != bool(self._parts):
            raise _ProtocolError(CloseCode.PROTOCOL_ERROR, "unexpected continuation frame"
                                 if kind is _CONTINUATION else "expected a continuation frame")
        self._parts_size += frame.payload_size
        if self._parts_size > MAX_SIZE:  # picows checks frames; this is the message
            raise _ProtocolError(CloseCode.MESSAGE_TOO_BIG, f"message of {self._parts_size} bytes "
                                 f"so far exceeds limit of {MAX_SIZE} bytes")
        self._parts.append(frame.get_payload_as_bytes())
        if not frame.fin:
            return None
        message = b"".join(self._parts)
        self._parts, self._parts_size = [], 0
        return message

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._disconnected.set()
        for fut in (self._waiter, self._writable):
            if fut is not None and not fut.done():
                fut.set_result(None)

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        fut, self._writable = self._writable, None
        if fut is not None and not fut.done():
            fut.set_result(None)

    # ---- closing ----------------------------------------------------------------------

    def _closed_error(self) -> ConnectionClosed:
        """websockets' exception for the closing handshake so far (a new one per call)."""
        assert self._ws is not None
        hs = self._ws.close_handshake
        rcvd = sent = None
        rcvd_then_sent: bool | None = None
        if hs is not None:
            if hs.recv is not None:  # picows' 0 = no code in the frame; websockets says 1005
                rcvd = Close(_code(hs.recv.code) or CloseCode.NO_STATUS_RCVD, hs.recv.reason or "")
            if hs.sent is not None:
                sent = Close(_code(hs.sent.code) or CloseCode.NO_STATUS_RCVD, hs.sent.reason or "")
            if rcvd is not None and sent is not None:
                rcvd_then_sent = hs.recv_then_sent
        if (rcvd is None and sent is not None and sent.code == CloseCode.GOING_AWAY
                and not self._closing):
            # We only ever send 1000 (close()) or echo the peer's close (rcvd set): a 1001
            # sent with nothing received is picows' auto-ping giving up on a pong. Report
            # it as websockets does, so the feed says "stale".
            sent = Close(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
        ok = (rcvd is not None and sent is not None
              and rcvd.code in OK_CLOSE_CODES and sent.code in OK_CLOSE_CODES)
        return (ConnectionClosedOK if ok else ConnectionClosedError)(rcvd, sent, rcvd_then_sent)


def _code(code: Any) -> int:
    """A picows close code as an int (a WSCloseCode member, or a plain int for codes
    outside that enum, such as 4000)."""
    return int(code)
