"""A small HTTP/1.1 GET client on asyncio streams, for the REST audit and `collector probe`.

One connection (`HttpConnection`) serves GETs one after another while the server keeps
it alive. Its set-up is three separate steps, each timed (`Timings`): name resolution,
TCP connect, TLS handshake (https only), so the probe can show what `curl -w` shows; the
auditor just uses it. A peer cannot make it hold more than it allows: a status line and
headers of at most MAX_HEAD bytes and MAX_HEADERS lines, a body of at most the caller's
`max_bytes` (Content-Length, chunked, or until close). Deadlines are the caller's
(`asyncio.timeout` around a call); an error closes the connection.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from collector import __version__

MAX_HEAD = 64 * 1024  # status line and headers together
MAX_HEADERS = 100
_STATUS = re.compile(rb"HTTP/1\.([01]) ([1-5][0-9][0-9])(?: [^\r\n]*)?\r\n")
_CHUNK = re.compile(rb"([0-9A-Fa-f]{1,8})(?:;[^\r\n]*)?\r\n")


class HttpError(Exception):
    """No usable answer: unreachable, TLS failed, closed early, malformed or too big."""


@dataclass
class Timings:
    """Seconds spent in each step; None for a step not taken (TLS on http, or set-up on a
    kept-alive connection)."""

    dns_s: float | None = None
    tcp_s: float | None = None
    tls_s: float | None = None
    first_byte_s: float | None = None  # request written -> first byte of the answer
    answer_s: float | None = None  # request written -> whole answer read


@dataclass
class Answer:
    status: int
    headers: dict[str, list[str]]  # lower-case names
    body: bytes
    keep_alive: bool
    timings: Timings = field(default_factory=Timings)

    def header(self, name: str) -> list[str]:
        return self.headers.get(name, [])


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int
    netloc: str  # for the Host header

    @classmethod
    def of(cls, url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL with a host: {url[:80]!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, parts.netloc)


class HttpConnection:
    def __init__(self, origin: Origin, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 timings: Timings, clock: Callable[[], float]) -> None:
        self.origin = origin
        self.setup = timings  # of the set-up (dns, tcp, tls)
        self._reader = reader
        self._writer = writer
        self._clock = clock
        self.open = True
        self.answers = 0

    @classmethod
    async def connect(cls, origin: Origin, clock: Callable[[], float] = time.perf_counter) -> HttpConnection:
        """Resolve, connect (each address in turn), and on https shake hands; HttpError if
        that fails."""
        t = Timings()
        loop = asyncio.get_running_loop()
        start = clock()
        try:
            infos = await loop.getaddrinfo(origin.host, origin.port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise HttpError(f"cannot resolve {origin.host}: {exc}") from None
        t.dns_s = clock() - start
        errors = []
        for family, _, _, _, addr in infos:
            ip = str(addr[0])
            start = clock()
            try:
                reader, writer = await asyncio.open_connection(ip, origin.port, family=family,
                                                               limit=MAX_HEAD)
            except OSError as exc:
                errors.append(f"{ip}: {exc.strerror or exc}")
                continue
            t.tcp_s = clock() - start
            break
        else:
            raise HttpError(f"cannot connect to {origin.netloc}: {'; '.join(errors) or 'no address'}")
        if origin.scheme == "https":
            start = clock()
            try:
                await writer.start_tls(ssl.create_default_context(), server_hostname=origin.host)
            except (OSError, ssl.SSLError) as exc:
                writer.transport.abort()
                raise HttpError(f"TLS with {origin.netloc} failed: {exc}") from None
            t.tls_s = clock() - start
        return cls(origin, reader, writer, t, clock)

    def close(self) -> None:
        self.open = False
        self._writer.transport.abort()

    async def get(self, target: str, max_bytes: int) -> Answer:
        """GET `target` (path and query); the answer, whatever its status. HttpError (and
        the connection closed) when none comes, or it is malformed or over `max_bytes`."""
        if not self.open:
            raise HttpError("connection closed")
        t = Timings()
        try:
            self._writer.write(
                f"GET {target} HTTP/1.1\r\nHost: {self.origin.netloc}\r\n"
                f"User-Agent: gemini-collector/{__version__}\r\nAccept: application/json\r\n"
                "Connection: keep-alive\r\n\r\n".encode("ascii"))
            sent = self._clock()
            first = await self._reader.read(1)
            if not first:
                raise HttpError("connection closed before an answer")
            t.first_byte_s = self._clock() - sent
            answer = await self._answer(first, max_bytes, t)
            t.answer_s = self._clock() - sent
        except BaseException as exc:  # a half-read answer leaves nothing reusable
            self.close()
            if isinstance(exc, (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError)):
                raise HttpError(f"answer cut short: {exc!r}"[:200]) from None
            raise
        self.answers += 1
        if not answer.keep_alive:
            self.close()
        return answer

    async def _answer(self, first: bytes, max_bytes: int, t: Timings) -> Answer:
        line = first + await self._reader.readuntil(b"\r\n")
        m = _STATUS.fullmatch(line)
        if m is None:
            raise HttpError(f"not an HTTP/1.x status line: {line[:60]!r}")
        status = int(m.group(2))
        headers: dict[str, list[str]] = {}
        size = len(line)
        while (line := await self._reader.readuntil(b"\r\n")) != b"\r\n":
            size += len(line)
            if size > MAX_HEAD or sum(map(len, headers.values())) >= MAX_HEADERS:
                raise HttpError(f"answer head over {MAX_HEAD} bytes or {MAX_HEADERS} lines")
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep or not name or name != name.strip():
                raise HttpError(f"malformed header line: {line[:60]!r}")
            headers.setdefault(name.lower(), []).append(value.strip())
        if 100 <= status < 200:
            raise HttpError(f"unexpected interim answer {status}")
        connection = ",".join(headers.get("connection", [])).lower()
        keep = (m.group(1) == b"1" and "close" not in connection) or "keep-alive" in connection
        coding = ",".join(headers.get("transfer-encoding", [])).lower().strip()
        if coding:
            if coding != "chunked":
                raise HttpError(f"transfer encoding {coding[:40]!r} not supported")
            body = await self._chunked(max_bytes)
        elif "content-length" in headers:
            body = await self._sized(headers["content-length"], max_bytes)
        elif status in (204, 304):
            body = b""
        else:  # until the peer closes
            body = await self._reader.read(max_bytes + 1)
            while len(body) <= max_bytes and (more := await self._reader.read(max_bytes + 1 - len(body))):
                body += more
            if len(body) > max_bytes:
                raise HttpError(f"answer larger than {max_bytes} bytes")
            keep = False
        return Answer(status, headers, body, keep, t)

    async def _sized(self, values: list[str], max_bytes: int) -> bytes:
        if len(set(values)) != 1 or not values[0].isdigit() or len(values[0]) > 12:
            raise HttpError(f"bad Content-Length: {values[:2]!r}"[:80])
        length = int(values[0])
        if length > max_bytes:
            raise HttpError(f"answer of {length} bytes, larger than {max_bytes}")
        return await self._reader.readexactly(length)

    async def _chunked(self, max_bytes: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = await self._reader.readuntil(b"\r\n")
            m = _CHUNK.fullmatch(line)
            if m is None:
                raise HttpError(f"bad chunk size line: {line[:40]!r}")
            size = int(m.group(1), 16)
            if size == 0:
                break
            total += size
            if total > max_bytes:
                raise HttpError(f"answer larger than {max_bytes} bytes")
            parts.append(await self._reader.readexactly(size))
            if await self._reader.readexactly(2) != b"\r\n":
                raise HttpError("chunk not followed by CRLF")
        trailers = 0
        while await self._reader.readuntil(b"\r\n") != b"\r\n":
            trailers += 1
            if trailers > MAX_HEADERS:
                raise HttpError(f"more than {MAX_HEADERS} trailer lines")
        return b"".join(parts)


async def get_once(url: str, max_bytes: int) -> Answer:
    """One GET on a connection of its own (closed after). The caller sets the deadline."""
    parts = urlsplit(url)
    conn = await HttpConnection.connect(Origin.of(url))
    try:
        return await conn.get(parts.path + (f"?{parts.query}" if parts.query else ""), max_bytes)
    finally:
        conn.close()
