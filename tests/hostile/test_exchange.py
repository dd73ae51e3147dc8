"""The exchange side under attack (issue 14), against hostile servers on 127.0.0.1 and
hostile frames: no answer parks a symbol, unknown kinds stay bounded, a frame that
cannot be recorded exactly is `invalid` (never `error`), a deep snapshot never blocks
the loop, and errors say who closed what."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from http import HTTPStatus
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from collector import config
from collector.core import format
from collector.core.format import Reason
from collector.core.stream import StreamBroken
from collector.gemini.current_stream import CurrentStream
from collector.gemini.v1_stream import V1Stream
from collector.runtime import transport
from tests.helpers.cores import CORES
from tests.helpers.e2e import FAST_FEED, make_config, read_records, reasons, running, wait_until

Handler = Callable[[ServerConnection], Awaitable[None]]
TRANSPORTS = ["websockets"] + (["picows"] if importlib.util.find_spec("picows") else [])
BOOK = [{"type": "change", "side": "bid", "price": "1.00", "remaining": "1", "reason": "initial"},
        {"type": "change", "side": "ask", "price": "2.00", "remaining": "1", "reason": "initial"}]


def v1(seq: int, events: list[Any] | None = None) -> str:
    msg: dict[str, Any] = {"type": "update", "eventId": 100 + seq, "socket_sequence": seq,
                           "events": events or []}
    if seq:
        msg["timestampms"] = 1_700_000_000_000 + seq
    return orjson.dumps(msg).decode()


def v1_raw(seq: int, event: str) -> bytes:
    """An update frame holding one event given as JSON text (numbers written as they are)."""
    return (f'{{"type":"update","eventId":7,"timestampms":1700000000000,"socket_sequence":{seq},'
            f'"events":[{event}]}}').encode()


async def beat(ws: ServerConnection, seq: int) -> None:
    """Heartbeats from `seq` on (a live v1 stream) until the client goes; bounded to 60 s."""
    with contextlib.suppress(ConnectionClosed):
        for n in range(seq, seq + 1200):
            await ws.send(orjson.dumps({"type": "heartbeat", "socket_sequence": n}).decode())
            await asyncio.sleep(0.05)


async def small_book(ws: ServerConnection) -> None:
    await ws.send(v1(0, BOOK))
    await beat(ws, 1)


@contextlib.asynccontextmanager
async def exchange(handler: Handler = small_book, **kw: Any) -> AsyncIterator[str]:
    """A hostile v1 exchange on 127.0.0.1:0; its URL."""
    async with serve(handler, "127.0.0.1", 0, compression=None, max_size=None,
                     ping_interval=None, **kw) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        scheme = "wss" if kw.get("ssl") else "ws"
        yield f"{scheme}://127.0.0.1:{port}/v1/marketdata"


def refusing(values: list[str | tuple[str, ...]], status: HTTPStatus = HTTPStatus.SERVICE_UNAVAILABLE,
             log: list[float] | None = None) -> Callable[..., Any]:
    """process_request: refuse the first len(values) handshakes, each with the next
    Retry-After value (a tuple: that many headers); then accept."""
    answers = iter(values)

    def refuse(connection: ServerConnection, request: Any) -> Any:
        value = next(answers, None)
        if value is None:
            return None
        if log is not None:
            log.append(time.monotonic())
        response = connection.respond(status, "not now\n")
        for one in (value,) if isinstance(value, str) else value:
            response.headers["Retry-After"] = one  # each assignment adds a header
        return response
    return refuse


# ---- no answer parks a symbol ------------------------------------------------------------

INSANE_RETRY_AFTER: list[str | tuple[str, ...]] = [
    "inf", "Infinity", "1e309", "99999999999", "nan", "-5", "abc", "1e400", "", "3, 4", "0x10",
    "1_000", "Wed, 21 Oct 2015 07:28:00 GMT", ("1", "2")]


async def test_no_retry_after_parks_a_symbol(tmp_path: Path) -> None:
    async with (exchange(process_request=refusing(INSANE_RETRY_AFTER)) as url,
                running(make_config(url, tmp_path, ["BTCUSD"])) as app):
        btc = app.feeds["BTCUSD"]
        await wait_until(lambda: btc.stats.live, timeout=10, what="live after insane Retry-After")
        assert btc.stats.resyncs["refused"] == len(INSANE_RETRY_AFTER)
    recs = read_records(tmp_path, "BTCUSD")
    assert reasons(recs) == ["start", "refused"] and recs[1]["retry_after"] is None


async def test_retry_after_is_honoured_up_to_the_cap(tmp_path: Path) -> None:
    feed = {"retry_after_max_s": 1.0}
    refused: list[float] = []
    async with (exchange(process_request=refusing(["3600"], HTTPStatus.TOO_MANY_REQUESTS,
                                                   refused)) as url,
                running(make_config(url, tmp_path, ["BTCUSD"], feed=feed)) as app):
        await wait_until(lambda: app.feeds["BTCUSD"].stats.live, timeout=8, what="live, capped")
        waited = time.monotonic() - refused[0]
    assert 1.0 <= waited < 4.0
    recs = read_records(tmp_path, "BTCUSD")
    assert reasons(recs) == ["start", "refused"] and recs[1]["retry_after"] == 1.0


# ---- unknown kinds are bounded -----------------------------------------------------------

async def _scrape(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    try:
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_unknown_kinds_stay_bounded(tmp_path: Path) -> None:
    frames, per_frame, named_frames, long = 40, 1000, 500, 3
    total = frames * per_frame + named_frames + long

    async def inventive(ws: ServerConnection) -> None:
        await ws.send(v1(0, BOOK))
        seq = 1
        for i in range(frames):
            await ws.send(v1(seq, [{"type": f"kind-{i}-{j}"} for j in range(per_frame)]))
            seq += 1
        for i in range(named_frames):
            await ws.send(orjson.dumps({"type": f"frame-{i}", "socket_sequence": seq}).decode())
            seq += 1
        await ws.send(v1(seq, [{"type": f"{k}" + "x" * 100_000} for k in range(long)]))
        await ws.send(v1(seq + 1, [{"type": "change", "side": "bid", "price": "1.5",
                                    "remaining": "1", "reason": "place"}]))
        await beat(ws, seq + 2)

    with structlog.testing.capture_logs() as logs:
        async with exchange(inventive) as url:
            cfg = config.from_dict({
                "feed": {"url": url, "symbols": ["BTCUSD"], **FAST_FEED},
                "book": {"depth": 10, "emit": "every"}, "output": {"dir": str(tmp_path)},
                "log": {"level": "warning"}, "metrics": {"listen": "127.0.0.1:0"}})
            async with running(cfg) as app:
                btc = app.feeds["BTCUSD"]
                await wait_until(lambda: btc.stats.updates >= 1, timeout=20, what="all sent")
                assert app.monitor.server is not None
                body = await _scrape(app.monitor.server.port)
    unknown = btc.stats.unknown
    assert sum(unknown.values()) == total
    assert len(unknown) <= 64 and max(map(len, unknown)) <= 64
    series = [line for line in body.split(b"\n") if line.startswith(b"collector_unknown_events_total{")]
    assert 1 <= len(series) <= 64 and len(body) < 64_000
    lines = [e for e in logs if "unknown" in e["event"]]
    assert len(lines) <= 10, lines[:12]
    assert reasons(read_records(tmp_path, "BTCUSD")) == ["start"]


# ---- a frame that cannot be recorded exactly is invalid ----------------------------------

DEEP = "[" * 300 + "]" * 300  # orjson reads it, and refuses to write more than 254 levels
DEEPER = "[" * 1000 + "]" * 1000  # orjson reads it; repr() of it is a RecursionError
HUGE = '"' + "x" * 1_000_000 + '"'
V1_UNRECORDABLE = {
    "auction field nested 300 deep": '{"type":"auction_indicative","collar_price":' + DEEP + "}",
    "auction field nested 1000 deep": '{"type":"auction_open","x":' + DEEPER + "}",
    "change side nested": '{"type":"change","side":' + DEEPER + ',"price":"1","remaining":"1"}',
    "change price nested": '{"type":"change","side":"bid","price":' + DEEPER + ',"remaining":"1"}',
    "trade tid nested": '{"type":"trade","tid":' + DEEPER + ',"price":"1","amount":"1","makerSide":"bid"}',
    "trade makerSide nested": '{"type":"trade","tid":1,"price":"1","amount":"1","makerSide":' + DEEPER + "}",
    "trade price huge": '{"type":"trade","tid":1,"price":' + HUGE + ',"amount":"1","makerSide":"bid"}',
    "auction eventId beyond 64 bits": '{"type":"auction_open"}',  # (eventId replaced below)
    "auction key lone surrogate": '{"type":"auction_open","\\ud800":1}',
    "auction value lone surrogate": '{"type":"auction_open","x":"\\udfff"}',
    "auction NaN": '{"type":"auction_open","x":NaN}',
}
CURRENT_UNRECORDABLE = {
    "level nested": '{"e":"depthUpdate","s":"BTCUSD","U":1,"u":1,"E":1,"b":[' + DEEPER + '],"a":[]}',
    "event type nested": '{"e":' + DEEPER + "}",
    "request id nested": '{"id":' + DEEPER + ',"result":null}',
    "error nested": '{"id":1,"error":' + DEEPER + "}",
    "error huge": '{"id":1,"error":' + HUGE + "}",
    "trade m nested": '{"e":"trade","s":"BTCUSD","t":1,"p":"1","q":"1","m":' + DEEPER + ',"E":1}',
    "trade p huge": '{"e":"trade","s":"BTCUSD","t":1,"p":' + HUGE + ',"q":"1","m":true,"E":1}',
    "U nested": '{"e":"depthUpdate","s":"BTCUSD","U":' + DEEPER + ',"u":1,"E":1,"b":[],"a":[]}',
    "s nested": '{"e":"depthUpdate","s":' + DEEPER + ',"U":1,"u":1,"E":1,"b":[],"a":[]}',
    "u beyond 64 bits": '{"e":"depthUpdate","s":"BTCUSD","U":1,"u":18446744073709551616,"E":1,'
                        '"b":[],"a":[]}',
}


def _invalid_and_recordable(broken: StreamBroken) -> None:
    assert broken.reason is Reason.INVALID, broken.fields
    line = format.resync("BTCUSD", broken.reason, 1, **broken.fields)  # writable ...
    assert len(line) < 2000, line[:300]  # ... and short
    assert broken.fields.get("detail")


@pytest.mark.parametrize("native", CORES)
@pytest.mark.parametrize("name", list(V1_UNRECORDABLE))
def test_v1_frames_that_cannot_be_recorded_are_invalid(name: str, native: bool) -> None:
    stream = V1Stream("BTCUSD", 10, True, native=native)
    stream.feed(v1(0, BOOK).encode(), 1)
    raw = v1_raw(1, V1_UNRECORDABLE[name])
    if "eventId" in name:
        raw = raw.replace(b'"eventId":7', b'"eventId":18446744073709551616')
    with pytest.raises(StreamBroken) as caught:
        stream.feed(raw, 2)
    _invalid_and_recordable(caught.value)
    assert caught.value.fields.get("sample"), "the frame's first characters, for the log"


@pytest.mark.parametrize("native", CORES)
@pytest.mark.parametrize("name", list(CURRENT_UNRECORDABLE))
def test_current_frames_that_cannot_be_recorded_are_invalid(name: str, native: bool) -> None:
    stream = CurrentStream("BTCUSD", 10, True, native=native)
    stream.start()
    stream.take_requests()
    with pytest.raises(StreamBroken) as caught:
        stream.feed(CURRENT_UNRECORDABLE[name].encode(), 1)
    _invalid_and_recordable(caught.value)


EXACT = ['"collar_price":1.10000000000000000001', '"big":123456789012345678901234567890',
         '"u64":18446744073709551616', '"tiny":-1e-7', '"exp":1E+2', '"neg0":-0.0', '"n":-5',
         '"nested":{"x":[0.30000000000000004,2.5e-324,{"y":99999999999999999999.5}]}']


@pytest.mark.parametrize("native", CORES)
def test_auction_numbers_keep_their_exact_text(native: bool) -> None:
    stream = V1Stream("BTCUSD", 10, True, native=native)
    stream.feed(v1(0, BOOK).encode(), 1)
    out = stream.feed(v1_raw(1, '{"type":"auction_indicative",' + ",".join(EXACT) + "}"), 2)
    assert out.count(b"\n") == 1 and orjson.loads(out)["type"] == "auction"
    for text in EXACT:
        assert text.encode() in out, text
    # and a frame without numbers to keep is read as before
    out = stream.feed(v1_raw(2, '{"type":"auction_open","auction_open_ms":1,"x":"1.5"}'), 3)
    assert b'"auction_open_ms":1,"x":"1.5","exchange_ms":1700000000000' in out


async def test_an_unrecordable_frame_is_invalid_end_to_end(tmp_path: Path) -> None:
    sent: list[int] = []

    async def deep_auction(ws: ServerConnection) -> None:
        await ws.send(v1(0, BOOK))
        if sent:
            return await beat(ws, 1)
        sent.append(1)
        await ws.send(v1_raw(1, V1_UNRECORDABLE["auction field nested 300 deep"]).decode())
        await beat(ws, 2)

    with structlog.testing.capture_logs() as logs:
        async with exchange(deep_auction) as url, running(make_config(url, tmp_path, ["BTCUSD"])) as app:
            btc = app.feeds["BTCUSD"]
            await wait_until(lambda: btc.stats.connects >= 2 and btc.stats.live, timeout=10)
    assert not [e for e in logs if "crash" in e["event"]]
    recs = read_records(tmp_path, "BTCUSD")
    assert reasons(recs) == ["start", "invalid"]
    assert recs[2]["sample"].startswith('{"type":"update"')


# ---- a deep snapshot never blocks the loop -----------------------------------------------

def best_first(levels: int) -> tuple[bytes, bytes]:
    """A v1 and a current-API snapshot of `levels` levels, best first (the exchange's order)."""
    half = levels // 2
    bids = [f"{50_000 - i * 0.01:.2f}" for i in range(half)]
    asks = [f"{50_000.01 + i * 0.01:.2f}" for i in range(half)]
    events = [{"type": "change", "side": s, "price": p, "remaining": "1.5", "reason": "initial"}
              for s, prices in (("bid", bids), ("ask", asks)) for p in prices]
    current = {"e": "depthUpdate", "s": "BTCUSD", "U": 1, "u": 1, "E": 1,
               "b": [[p, "1.5"] for p in bids], "a": [[p, "1.5"] for p in asks]}
    return (orjson.dumps({"type": "update", "eventId": 1, "socket_sequence": 0, "events": events}),
            orjson.dumps(current))


@pytest.mark.parametrize("native", CORES)
def test_a_deep_snapshot_builds_in_n_log_n(native: bool) -> None:
    v1_frame, current_frame = best_first(200_000)
    v1_stream = V1Stream("BTCUSD", 10, True, native=native)
    current = CurrentStream("BTCUSD", 10, True, native=native)
    current.start()
    for stream, frame in ((v1_stream, v1_frame), (current, current_frame)):
        started = time.perf_counter()
        out = stream.feed(frame, 1)
        took = time.perf_counter() - started
        assert stream.book is not None and len(stream.book.bids) == len(stream.book.asks) == 100_000
        assert Decimal(orjson.loads(out)["bids"][0][0]) == 50_000
        assert took < 4.0, f"{type(stream).__name__}: {took:.1f} s for 200,000 levels"


@pytest.mark.parametrize("native", CORES)
def test_a_deep_update_is_merged_in_n_log_n_too(native: bool) -> None:
    """A live book, then one update of 100,000 levels best first (3.7 s on the C side,
    6.8 s on PySide when set one by one)."""
    levels = [f"{49_999 - i * 0.01:.2f}" for i in range(100_000)]
    v1_stream = V1Stream("BTCUSD", 10, True, native=native)
    v1_stream.feed(v1(0, BOOK).encode(), 1)
    update = orjson.dumps({"type": "update", "eventId": 9, "socket_sequence": 1, "events": [
        {"type": "change", "side": "ask", "price": f"{50_001 + i * 0.01:.2f}", "remaining": "1",
         "reason": "place"} for i in range(100_000)]})  # asks best (lowest) first
    current = CurrentStream("BTCUSD", 10, True, native=native)
    current.start()
    current.feed(b'{"e":"depthUpdate","s":"BTCUSD","U":1,"u":1,"E":1,"b":[["1","1"]],"a":[]}', 1)
    depth = orjson.dumps({"e": "depthUpdate", "s": "BTCUSD", "U": 1, "u": 2, "E": 2,
                          "b": [[p, "1"] for p in levels], "a": [["50000", "1"]]})
    for stream, frame in ((v1_stream, update), (current, depth)):
        started = time.perf_counter()
        stream.feed(frame, 2)
        took = time.perf_counter() - started
        assert stream.book is not None and len(stream.book.bids) + len(stream.book.asks) > 100_000
        assert took < 2.0, f"{type(stream).__name__}: {took:.1f} s for 100,000 levels"


async def test_sigterm_during_a_huge_snapshot_exits_within_5_s(tmp_path: Path) -> None:
    frame = best_first(400_000)[0].decode()
    sent = asyncio.Event()

    async def huge(ws: ServerConnection) -> None:
        await ws.send(frame)
        sent.set()
        await beat(ws, 1)

    async with exchange(huge) as url:
        cfg, out = tmp_path / "config.toml", tmp_path / "data"
        cfg.write_text(f'[feed]\nurl = "{url}"\nsymbols = ["BTCUSD"]\nsnapshot_timeout_s = 60\n'
                       f'[output]\ndir = "{out}"\n')
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "collector", "run", "--config", str(cfg),
            stderr=asyncio.subprocess.PIPE)
        try:
            await asyncio.wait_for(sent.wait(), 30)
            await asyncio.sleep(0.2)  # the frame is in; the book is being built
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 60)
            took = time.monotonic() - signalled
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert code == 0
    assert took < 5.0, f"exit took {took:.1f} s after SIGTERM"


# ---- errors say who closed what ----------------------------------------------------------

async def oversized(ws: ServerConnection) -> None:
    await ws.send(v1(0, BOOK))
    with contextlib.suppress(ConnectionClosed):
        await ws.send("x" * (transport.MAX_SIZE + 1))
    await beat(ws, 1)


async def test_an_oversized_frame_is_refused_by_the_collector(tmp_path: Path) -> None:
    """The collector refuses the frame (1009 sent): its record and log say so, with the size
    and the limit, on both transports; picows writes nothing but JSON lines on stderr."""
    for kind in TRANSPORTS:
        out = tmp_path / kind
        cfg = tmp_path / f"{kind}.toml"
        async with exchange(oversized) as url:
            feed = "\n".join(f"{k} = {v}" for k, v in FAST_FEED.items())
            cfg.write_text(f'[feed]\nurl = "{url}"\nsymbols = ["BTCUSD"]\ntransport = "{kind}"\n'
                           f'{feed}\n[output]\ndir = "{out}"\n')
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "collector", "run", "--config", str(cfg),
                stderr=asyncio.subprocess.PIPE)
            try:
                await wait_until(marked_closed(out / "BTCUSD" / "current.jsonl"), timeout=20)
                proc.send_signal(signal.SIGTERM)
                _, err = await asyncio.wait_for(proc.communicate(), 20)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        assert proc.returncode == 0
        closed = next(r for r in read_records(out, "BTCUSD") if r.get("reason") == "closed")
        detail = closed["detail"]
        assert "refused" in detail and str(transport.MAX_SIZE + 1) in detail, (kind, detail)
        assert str(transport.MAX_SIZE) in detail and "collector" in detail, (kind, detail)
        for line in err.splitlines():
            assert line.startswith(b"{") and orjson.loads(line), (kind, line[:200])


def marked_closed(path: Path) -> Callable[[], bool]:
    """Whether a `closed` resync record is in the file yet."""
    def marked() -> bool:
        try:
            return b'"reason":"closed"' in path.read_bytes()
        except FileNotFoundError:
            return False
    return marked


@pytest.mark.skipif("picows" not in TRANSPORTS, reason="picows is not installed")
@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl to make a certificate")
async def test_picows_tls_failures_say_why(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=localhost"],
                   check=True, capture_output=True, timeout=60)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    for kind in TRANSPORTS:  # websockets says why already: picows must say as much
        out = tmp_path / kind
        async with exchange(ssl=tls) as url, running(make_config(
                url, out, ["BTCUSD"], feed={"transport": kind})) as app:
            await wait_until(lambda: app.feeds["BTCUSD"].stats.resyncs["closed"] >= 1)
        detail = read_records(out, "BTCUSD")[1]["detail"]
        assert "CERTIFICATE_VERIFY_FAILED" in detail and "self-signed certificate" in detail, (
            kind, detail)
