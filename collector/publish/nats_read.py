"""Reading the records back from a JetStream stream (I/O): `collector cat nats://...`,
`collector tail nats://...` and `collector.read("nats://...")`.

A source is `nats://[TOKEN@|USER:PASSWORD@]HOST:PORT/STREAM[?subject=S&creds=FILE&tls_ca=FILE]`
(`tls://` for TLS). Without `subject`, the stream's own subject filter `S.>` gives it.
Each symbol's records are its subject's messages, in stream order (the files' order);
several symbols are merged by `recv_ns` as `collector cat DIR` merges them, and the
same time and type filters apply, so the lines are the same, byte for byte, for any
span the stream still holds. The stream has no header records: `--type header` gives
none.

`read`, `read_lines` are synchronous iterators (like tools/reading.py's): the NATS client
runs on an event loop in a thread of its own, and each symbol is read in batches from an
ephemeral pull consumer, one batch per symbol in memory at a time.
"""

from __future__ import annotations

import asyncio
import heapq
import threading
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import orjson

from collector.tools.decoding import ReadError

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js.client import JetStreamContext

SCHEMES = ("nats://", "tls://")
FETCH = 500  # messages per fetch
FETCH_TIMEOUT_S = 2.0
T = TypeVar("T")


class SourceError(ReadError):
    """A nats:// source that cannot be read: says why (never with its credentials)."""

    def __init__(self, source: str, why: str) -> None:
        super().__init__(_hide(source), None, why)


@dataclass(frozen=True)
class Source:
    server: str  # scheme://[credentials@]host:port
    shown: str  # the same without credentials, for messages
    stream: str
    subject: str | None
    creds: str | None
    tls_ca: str | None


def is_source(text: object) -> bool:
    return isinstance(text, str) and text.startswith(SCHEMES)


def parse_source(text: str) -> Source:
    parts = urlsplit(text)
    query = parse_qs(parts.query)
    unknown = set(query) - {"subject", "creds", "tls_ca"}
    if unknown:
        raise SourceError(text, f"unknown option(s) {sorted(unknown)} (known: subject, creds, tls_ca)")
    stream = parts.path.strip("/")
    if not parts.hostname or not stream or "/" in stream:
        raise SourceError(text, f"not {SCHEMES[0]}HOST:PORT/STREAM")

    def one(name: str) -> str | None:
        values = query.get(name)
        return values[-1] if values else None

    server = f"{parts.scheme}://{parts.netloc}"
    return Source(server, _hide(text), stream, one("subject"), one("creds"), one("tls_ca"))


def _hide(url: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}"


# ---- the client on its own loop ------------------------------------------------------------

class _Loop:
    """An event loop in a daemon thread, for the synchronous iterators."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="collector-nats-read", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


async def open_stream(src: Source) -> tuple[Client, JetStreamContext, str]:
    """(client, JetStream, subject prefix); SourceError saying why not."""
    import ssl

    import nats
    from nats.errors import Error as NatsError
    from nats.js.errors import NotFoundError

    kw: dict[str, Any] = {}
    if src.creds:
        kw["user_credentials"] = src.creds
    if src.tls_ca:
        kw["tls"] = ssl.create_default_context(cafile=src.tls_ca)
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    try:
        async with asyncio.timeout(5):
            nc = await nats.connect(src.server, allow_reconnect=False, max_reconnect_attempts=1,
                                    reconnect_time_wait=0.2, connect_timeout=2, error_cb=on_error, **kw)
    except (NatsError, OSError, TimeoutError) as exc:
        why = errors[-1] if errors else exc
        raise SourceError(src.shown, f"cannot connect: {why or type(why).__name__}") from None
    js = nc.jetstream(timeout=5)
    try:
        info = await js.stream_info(src.stream)
    except NotFoundError:
        await nc.close()
        raise SourceError(src.shown, f"no stream {src.stream}") from None
    prefix = src.subject
    if prefix is None:
        subjects = [s for s in info.config.subjects or [] if s.endswith(".>")]
        if len(subjects) != 1:
            await nc.close()
            raise SourceError(src.shown, f"stream {src.stream} has subjects {info.config.subjects}: "
                              "say which with ?subject=PREFIX")
        prefix = subjects[0][:-2]
    return nc, js, prefix


async def list_symbols(js: JetStreamContext, stream: str, prefix: str) -> list[str]:
    info = await js.stream_info(stream, subjects_filter=f"{prefix}.*")
    subjects = info.state.subjects or {}
    return sorted(s[len(prefix) + 1:] for s in subjects)


async def consumer(js: JetStreamContext, stream: str, subjects: list[str], start_ns: int | None,
                   new_only: bool = False) -> Any:
    """An ephemeral pull consumer of `subjects`: from the first message stored at or after
    `start_ns` (every record received then was stored later), else from the start."""
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    if new_only:
        policy, since = DeliverPolicy.NEW, None
    elif start_ns is not None:
        policy, since = DeliverPolicy.BY_START_TIME, datetime.fromtimestamp(start_ns / 1e9, UTC)
    else:
        policy, since = DeliverPolicy.ALL, None
    cfg = ConsumerConfig(deliver_policy=policy, opt_start_time=since, ack_policy=AckPolicy.NONE,
                         inactive_threshold=30.0, mem_storage=True,
                         filter_subjects=subjects if len(subjects) > 1 else None)
    return await js.pull_subscribe(subjects[0], stream=stream, config=cfg)


async def fetch(sub: Any, wait: float = FETCH_TIMEOUT_S) -> tuple[list[bytes], bool]:
    """(payloads, more): the next batch; `more` False once the stream's end is reached."""
    import nats.errors

    try:
        msgs = await sub.fetch(FETCH, timeout=wait)
    except nats.errors.TimeoutError:
        return [], False
    more = bool(msgs) and msgs[-1].metadata.num_pending > 0
    return [m.data for m in msgs], more


# ---- reading, as tools/reading.py does ---------------------------------------------------

def _symbol_records(loop: _Loop, js: JetStreamContext, src: Source, subject: str, start: int | None,
                    end: int | None, types: frozenset[str] | None
                    ) -> Iterator[tuple[int, dict[str, Any], bytes]]:
    sub = loop.run(consumer(js, src.stream, [subject], start))
    loads = orjson.loads
    try:
        while True:
            try:
                payloads, more = loop.run(fetch(sub))
            except Exception as exc:  # the connection lost while reading, say
                raise SourceError(src.shown, f"{subject}: {type(exc).__name__}: {exc}") from None
            for data in payloads:
                rec = loads(data)
                recv = rec.get("recv_ns")
                if type(recv) is not int:
                    continue
                if (start is not None and recv < start) or (end is not None and recv >= end):
                    continue
                if types is None or rec.get("type") in types:
                    yield recv, rec, data + b"\n"
            if not more:
                return
    finally:
        loop.run(sub.unsubscribe())


def read_records(source: str, symbol: str | Iterable[str] | None, start: int | None, end: int | None,
                 types: frozenset[str] | None) -> Iterator[tuple[int, dict[str, Any], bytes]]:
    """(recv_ns, record, line) from a nats:// source; the arguments as tools/reading.py's
    (times in ns). Connects when called (SourceError), reads when iterated."""
    src = parse_source(source)
    loop = _Loop()
    try:
        nc, js, prefix = loop.run(open_stream(src))
        try:
            if symbol is None:
                symbols = loop.run(list_symbols(js, src.stream, prefix))
            else:
                symbols = list(dict.fromkeys([symbol] if isinstance(symbol, str) else symbol))
        except BaseException:
            loop.run(nc.close())
            raise
    except BaseException:
        loop.close()
        raise
    return _records(loop, nc, js, src, prefix, symbols, start, end, types)


def _records(loop: _Loop, nc: Client, js: JetStreamContext, src: Source, prefix: str, symbols: list[str],
             start: int | None, end: int | None, types: frozenset[str] | None
             ) -> Iterator[tuple[int, dict[str, Any], bytes]]:
    try:
        streams = [_symbol_records(loop, js, src, f"{prefix}.{s}", start, end, types) for s in symbols]
        if len(streams) == 1:
            yield from streams[0]
        else:
            yield from heapq.merge(*streams, key=itemgetter(0))
    finally:
        try:
            loop.run(nc.close())
        finally:
            loop.close()


async def follow(source: str, symbols: list[str] | None, start_ns: int | None) -> AsyncIterator[list[bytes]]:
    """`collector tail`: batches of the records of `symbols` (default: all) as they are
    stored, from now on (or from `start_ns`), without end."""
    src = parse_source(source)
    nc, js, prefix = await open_stream(src)
    try:
        subjects = [f"{prefix}.{s}" for s in symbols] if symbols else [f"{prefix}.*"]
        sub = await consumer(js, src.stream, subjects, start_ns, new_only=start_ns is None)
        while True:
            payloads, _ = await fetch(sub, wait=1.0)
            if payloads:
                yield payloads
    finally:
        await nc.close()
