"""collector.runtime.transport against real servers on 127.0.0.1 (the simulator, a websockets
server on port 0, raw TCP servers for a dead peer), for both transports: the picows
adapter must deliver and fail exactly as websockets' ClientConnection does."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import importlib.util
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidStatus,
)

from collector import config
from collector.config import ConfigError, FeedConfig
from collector.runtime import transport
from collector.sim import SimExchange

HAVE_PICOWS = importlib.util.find_spec("picows") is not None
needs_picows = pytest.mark.skipif(
    not HAVE_PICOWS, reason="picows is not installed (pip install -e '.[picows]')")


@pytest.fixture(params=["websockets", pytest.param("picows", marks=needs_picows)])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def feed_cfg(kind: str, **kw: Any) -> FeedConfig:
    values: dict[str, Any] = {"snapshot_timeout_s": 2.0, "ping_interval_s": 5.0,
                              "ping_timeout_s": 5.0, **kw}
    return FeedConfig(symbols=("BTCUSD",), transport=kind, **values)


@contextlib.asynccontextmanager
async def ws_server(handler: Callable[[ServerConnection], Awaitable[None]],
                    **kw: Any) -> AsyncIterator[str]:
    async with serve(handler, "127.0.0.1", 0, compression=None, **kw) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/"


@contextlib.asynccontextmanager
async def tcp_server(handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                       Awaitable[None]]) -> AsyncIterator[str]:
    writers: list[asyncio.StreamWriter] = []

    async def keep(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await handler(reader, writer)

    server = await asyncio.start_server(keep, "127.0.0.1", 0)
    try:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    finally:
        for w in writers:
            w.transport.abort()
        server.close()
        await server.wait_closed()


async def upgrade_then_silence(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Complete the WebSocket handshake, then never send a byte (no pongs either)."""
    head = await reader.readuntil(b"\r\n\r\n")
    key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
               if line.lower().startswith(b"sec-websocket-key:"))
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    await read_to_eof(reader)


async def read_to_eof(reader: asyncio.StreamReader) -> None:
    """Swallow whatever comes (pings included) until the client goes away."""
    while await reader.read(65536):
        pass


async def drain_until_closed(ws: Any, limit: float = 5.0) -> ConnectionClosed:
    async with asyncio.timeout(limit):
        while True:
            try:
                await ws.recv(decode=False)
            except ConnectionClosed as exc:
                return exc


async def test_messages_arrive_whole_and_in_order(kind: str) -> None:
    big = "x" * 1_000_000  # many TCP reads
    numbered = [f"{i}" for i in range(500)]

    async def handler(ws: ServerConnection) -> None:
        await ws.send("hello")
        await ws.send(b"\x00\x01binary")
        await ws.send(big)
        await ws.send(["frag", "mented ", "text"])  # one message in three frames
        await ws.send([b"bin", b"ary"])
        for n in numbered:
            await ws.send(n)
        await ws.close()

    async with ws_server(handler) as url:
        ws = await transport.connect(url, feed_cfg(kind))
        got = [await ws.recv(decode=False) for _ in range(5 + len(numbered))]
        await drain_until_closed(ws)
    assert got[:5] == [b"hello", b"\x00\x01binary", big.encode(), b"fragmented text", b"binary"]
    assert got[5:] == [n.encode() for n in numbered]


async def test_simulator_frames_arrive_in_sequence(kind: str) -> None:
    async with SimExchange(["BTCUSD"], seed=3, rate=2000.0, heartbeat_s=0.05, depth=50) as sim:
        ws = await transport.connect(f"{sim.ws_url}/BTCUSD?heartbeat=true", feed_cfg(kind))
        try:
            seqs = [orjson.loads(await ws.recv(decode=False))["socket_sequence"]
                    for _ in range(300)]
        finally:
            await ws.close()
    assert seqs == list(range(300))


async def test_peer_close_keeps_queued_messages_then_reports_code_and_reason(kind: str) -> None:
    closed = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await ws.send("a")
        await ws.send(b"b")
        await ws.close(4000, "maintenance")
        closed.set()

    async with ws_server(handler) as url:
        ws = await transport.connect(url, feed_cfg(kind))
        await asyncio.wait_for(closed.wait(), 5)  # the socket is gone before we read
        assert [await ws.recv(decode=False), await ws.recv(decode=False)] == [b"a", b"b"]
        for _ in range(2):  # and stays closed
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv(decode=False)
            assert info.value.rcvd is not None
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (4000, "maintenance")
            assert info.value.sent is not None and info.value.sent.code == 4000  # the echo
        with pytest.raises(ConnectionClosed):
            await ws.send(b'{"type":"subscribe"}', text=True)


async def test_aborted_connection_is_closed_without_a_close_frame(kind: str) -> None:
    async with SimExchange(["BTCUSD"], seed=3, rate=500.0, heartbeat_s=0.05, depth=50) as sim:
        ws = await transport.connect(f"{sim.ws_url}/BTCUSD", feed_cfg(kind))
        await ws.recv(decode=False)
        sim.inject("BTCUSD", "close")  # the simulator aborts the TCP connection
        exc = await drain_until_closed(ws)
    assert exc.rcvd is None
    assert exc.sent is None


async def test_our_abort_is_closed_without_a_close_frame(kind: str) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("one")
        await ws.wait_closed()

    async with ws_server(handler) as url:
        ws = await transport.connect(url, feed_cfg(kind))
        assert await ws.recv(decode=False) == b"one"
        waiting = asyncio.create_task(ws.recv(decode=False))
        await asyncio.sleep(0.05)
        ws.transport.abort()  # what Feed.stop() and the feed's deadlines do
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(waiting, 5)
    assert info.value.rcvd is None and info.value.sent is None


async def test_dead_peer_is_found_by_keepalive_as_1011(kind: str) -> None:
    interval, timeout = 0.2, 0.2
    async with tcp_server(upgrade_then_silence) as url:
        ws = await transport.connect(url, feed_cfg(kind, ping_interval_s=interval,
                                                   ping_timeout_s=timeout))
        started = time.monotonic()
        exc = await drain_until_closed(ws)
        took = time.monotonic() - started
    assert exc.rcvd is None  # what the feed reads as "stale"
    assert exc.sent is not None and exc.sent.code == 1011
    # websockets then waits close_timeout for the peer's close frame before dropping the
    # socket; the adapter drops it at once (picows aborts right after its close frame).
    extra = transport.CLOSE_TIMEOUT_S if kind == "websockets" else 0.0
    assert timeout <= took <= interval + timeout + extra + 0.5, took


async def test_refused_handshake_is_invalid_status_with_retry_after(kind: str) -> None:
    async with SimExchange(["BTCUSD"], seed=3, rate=None) as sim:
        with pytest.raises(InvalidStatus) as info:
            await transport.connect(f"{sim.ws_url}/NOPEUSD", feed_cfg(kind))
        assert info.value.response.status_code == 404
        sim.inject("BTCUSD", "refuse", count=1, retry_after=7, status=429)
        with pytest.raises(InvalidStatus) as info:
            await transport.connect(f"{sim.ws_url}/BTCUSD", feed_cfg(kind))
        assert info.value.response.status_code == 429
        assert info.value.response.headers.get("Retry-After") == "7"
        ws = await transport.connect(f"{sim.ws_url}/BTCUSD", feed_cfg(kind))  # count=1: open again
        await ws.close()


async def test_connect_failures_are_oserror_timeout_or_invalid_handshake(kind: str) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OSError):
        await transport.connect(f"ws://127.0.0.1:{port}/", feed_cfg(kind))

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_to_eof(reader)  # accepts, never answers the upgrade

    async with tcp_server(mute) as url:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await transport.connect(url, feed_cfg(kind, snapshot_timeout_s=0.3))
        assert time.monotonic() - started < 2.0

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()  # reads the upgrade request, answers nothing, closes

    async with tcp_server(hang_up) as url:
        with pytest.raises(InvalidHandshake):
            await transport.connect(url, feed_cfg(kind))


async def test_slow_consumer_pauses_reading_then_gets_everything_in_order(kind: str) -> None:
    total = 40_000  # 1 KiB each: far more than the socket buffers hold
    sent = [0]
    pad = "." * 1000

    async def handler(ws: ServerConnection) -> None:
        for i in range(total):
            await ws.send(f"{i:08d}{pad}")  # waits while the client does not read
            sent[0] = i + 1

    async with ws_server(handler) as url:
        ws = await transport.connect(url, feed_cfg(kind))
        # Read nothing until the server is held back (no progress for 0.3 s).
        async with asyncio.timeout(10):
            while True:
                before = sent[0]
                await asyncio.sleep(0.3)
                if sent[0] == before:
                    break
        assert sent[0] < total, "nothing held the server back"
        if isinstance(ws, transport.PicowsConnection):
            assert ws._paused
            # bounded: the high-water mark plus the one read in progress when it paused
            assert len(ws._queue) <= transport.MAX_QUEUE + 512, len(ws._queue)
        got = 0
        async with asyncio.timeout(20):
            while got < total:
                msg = await ws.recv(decode=False)
                assert int(msg[:8]) == got
                got += 1
        if isinstance(ws, transport.PicowsConnection):
            assert not ws._paused and not ws._queue
        await ws.close()
    assert sent[0] == total


async def test_cancelled_recv_leaves_the_connection_usable(kind: str) -> None:
    go = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await go.wait()
        await ws.send("late")
        await ws.send("later")
        await ws.wait_closed()

    async with ws_server(handler) as url:
        ws = await transport.connect(url, feed_cfg(kind))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):  # as Feed._current waits for a snapshot
                await ws.recv(decode=False)
        go.set()
        async with asyncio.timeout(5):
            assert await ws.recv(decode=False) == b"late"
            assert await ws.recv(decode=False) == b"later"
        await ws.close()


async def test_close_is_a_clean_closing_handshake(kind: str) -> None:
    seen: list[int | None] = []
    requests: list[bytes] = []

    async def handler(ws: ServerConnection) -> None:
        async for msg in ws:
            requests.append(msg if isinstance(msg, bytes) else msg.encode())
        seen.append(ws.close_code)

    async with ws_server(handler) as url:
        ws = await transport.connect(url, feed_cfg(kind))
        await ws.send(b'{"type":"subscribe"}', text=True)
        started = time.monotonic()
        await ws.close()
        assert time.monotonic() - started < 1.0  # the peer answered; no close timeout
        await ws.close()  # idempotent
        with pytest.raises(ConnectionClosedOK) as info:
            await ws.recv(decode=False)
        assert info.value.sent is not None and info.value.sent.code == 1000
        await asyncio.sleep(0.05)
    assert requests == [b'{"type":"subscribe"}']
    assert seen == [1000]


def test_importing_transport_does_not_import_picows() -> None:
    code = "import sys, collector.runtime.transport; assert 'picows' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


async def test_picows_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    transport._picows.cache_clear()
    monkeypatch.setitem(sys.modules, "picows", None)  # import picows -> ImportError
    monkeypatch.setattr(config, "find_spec", lambda name: None)
    try:
        with pytest.raises(ConfigError, match=r"pip install .*gemini-collector\[picows\]"):
            await transport.connect("ws://127.0.0.1:9/", feed_cfg("picows"))
        with pytest.raises(ValueError, match="needs picows"):
            config.check_transport(feed_cfg("picows"))
        config.check_transport(feed_cfg("websockets"))  # the default never needs it
    finally:
        transport._picows.cache_clear()
