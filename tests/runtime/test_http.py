"""The small GET client of the audit and the probe (collector/runtime/http.py) against real
servers on 127.0.0.1: the answers HTTP/1.1 allows, kept-alive connections, and peers that
send too much, too little or nothing HTTP."""

from __future__ import annotations

import asyncio

import pytest

from collector.runtime.http import MAX_HEAD, HttpConnection, HttpError, Origin, get_once
from tests.helpers.rest import ScriptedRest


async def one(answer: bytes, max_bytes: int = 1000) -> bytes:
    rest = ScriptedRest("", [answer])
    url = await rest.start()
    try:
        async with asyncio.timeout(5):
            return (await get_once(url + "/v1/book/btcusd", max_bytes)).body
    finally:
        rest.close()


async def test_sized_chunked_and_read_to_close_answers():
    assert await one(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello") == b"hello"
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5;x=y\r\nhello\r\n1\r\n!\r\n0\r\nT: 1\r\n\r\n")
    assert await one(chunked) == b"hello!"
    assert await one(b"HTTP/1.0 200 OK\r\n\r\n{\"bids\":[]}") == b'{"bids":[]}'


@pytest.mark.parametrize("answer, says", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n", "larger than 1000"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", "bad Content-Length"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n" + b"x" * 2048, "larger than 1000"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "not supported"),
    (b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 1001, "larger than 1000"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"y" * (MAX_HEAD + 10) + b"\r\n\r\n", "cut short"),
    (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 200 + b"\r\n", "lines"),
    (b"HTTP/1.1 200 OK\r\n folded: header\r\n\r\n", "malformed header"),
    (b"SSH-2.0-OpenSSH_9.6\r\n", "not an HTTP/1.x status line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf", "cut short"),
    (b"", "closed before an answer"),
])
async def test_what_a_peer_cannot_make_it_do(answer: bytes, says: str):
    with pytest.raises(HttpError, match=says):
        await one(answer)


async def test_a_kept_alive_connection_serves_one_get_after_another():
    served: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await reader.readuntil(b"\r\n\r\n"):
            served.append(head.split(b" ")[1])
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        origin = Origin.of(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        async with asyncio.timeout(5):
            conn = await HttpConnection.connect(origin)
            answers = [await conn.get(f"/v1/book/x?n={i}", 10) for i in range(3)]
        assert all(a.body == b"ok" and a.keep_alive for a in answers) and conn.open
        assert conn.setup.tcp_s is not None and conn.setup.tls_s is None  # http: no TLS
        assert served == [b"/v1/book/x?n=0", b"/v1/book/x?n=1", b"/v1/book/x?n=2"]
        conn.close()
    finally:
        server.close()


async def test_nothing_listening_is_an_http_error():
    rest = ScriptedRest("", [])
    url = await rest.start()
    rest.close()
    assert rest.server is not None
    await rest.server.wait_closed()
    with pytest.raises(HttpError, match="cannot connect"):
        await get_once(url + "/", 10)
