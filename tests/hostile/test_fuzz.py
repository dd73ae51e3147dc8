"""Randomised hostile frames (issue 14): mutations of real captured frames (../shared) and
of simulator frames, thrown at both APIs' parsers and books on both cores; then over both
transports through a real App against a hostile server on 127.0.0.1.

Every outcome is records that `collector verify`'s checks accept, or a StreamBroken with a
known reason: never another exception, and never a feed crash. Each run is seeded and
bounded in frames and in time."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import itertools
import json
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from collector.core import format
from collector.core.format import Reason
from collector.core.stream import StreamBroken
from collector.gemini import current
from collector.gemini.current_stream import CurrentStream
from collector.gemini.v1 import stream_url
from collector.gemini.v1_stream import V1Stream
from collector.tools.checks import check_records
from tests.helpers import captures
from tests.helpers.cores import CORES
from tests.helpers.e2e import make_config, running
from tests.helpers.simulator import MakeSim

SYMBOL = "BTCUSD"
Frames = list[bytes]
TRANSPORTS = ["websockets"] + (["picows"] if importlib.util.find_spec("picows") else [])

# ---- the corpus: real frames ---------------------------------------------------------------


def as_current(v1_frames: Frames, symbol: str) -> Frames:
    """A v1 stream re-encoded for the current API: the SUBSCRIBE ack, then each update's
    changes as one depthUpdate (the first is the book; ids overlap by one) and its trades."""
    out, last = [b'{"result":null,"id":1}'], 0
    for raw in v1_frames:
        msg = json.loads(raw)
        if msg.get("type") != "update":
            continue
        ns = (msg.get("timestampms") or 1_700_000_000_000) * 1_000_000
        changes = [e for e in msg["events"] if e["type"] == "change"]
        if changes:
            sides = {s: [[c["price"], c["remaining"]] for c in changes if c["side"] == s]
                     for s in ("bid", "ask")}
            out.append(orjson.dumps({"e": "depthUpdate", "E": ns, "s": symbol, "U": last,
                                     "u": last + 1, "b": sides["bid"], "a": sides["ask"]}))
            last += 1
        for t in (e for e in msg["events"] if e["type"] == "trade"):
            out.append(orjson.dumps({"e": "trade", "E": ns, "s": symbol, "t": t["tid"], "p": t["price"],
                                     "q": t["amount"], "m": t["makerSide"] == "bid"}))
    return out


def with_auctions(frames: Frames) -> Frames:
    """Every 7th update also carries an auction event (real fields, as Gemini names them)."""
    out = []
    for i, raw in enumerate(frames):
        msg = json.loads(raw)
        if i % 7 == 3 and msg.get("type") == "update":
            msg["events"].append({"type": "auction_indicative", "eid": 2**40 + i, "result": "success",
                                  "time_ms": 1_700_000_000_000, "highest_bid_price": "101.5",
                                  "lowest_ask_price": "101.75", "collar_price": "101.62",
                                  "indicative_price": "101.6", "indicative_quantity": "0.9"})
            raw = json.dumps(msg, separators=(",", ":")).encode()
        out.append(raw)
    return out


def captured() -> dict[str, Frames]:
    """v1 frames of each capture's first symbol (their first 400)."""
    if not captures.CAPTURES.is_dir():
        return {}
    out = {}
    for name in captures.ALL_CAPTURES:
        messages = captures.read_capture(name)
        symbol = captures.symbols(messages)[0]
        out[symbol] = [f.raw for f in captures.v1_frames(messages, symbol)[:400]]
    return out


async def sim_frames(make_sim: MakeSim) -> tuple[Frames, Frames]:
    """About 300 frames of each API, as the simulator sends them on a real socket."""
    sim = await make_sim(symbols=[SYMBOL], rate=400.0, heartbeat_s=0.05, depth=60, seed=11)

    async def record(url: str, request: bytes | None) -> Frames:
        frames: Frames = []
        async with connect(url, max_size=None) as ws:
            if request:
                await ws.send(request.decode())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(3):
                    while len(frames) < 300:
                        frames.append(await ws.recv(decode=False))
        return frames

    return (await record(stream_url(sim.ws_url, SYMBOL, True), None),
            await record(current.connect_url(sim.current_url), current.subscribe(current.streams(SYMBOL), 1)))


# ---- mutations -------------------------------------------------------------------------------

DEEP = "[" * 300 + "]" * 300
DEEPER = "[" * 1000 + "]" * 1000
HOSTILE = [  # JSON text put where a value was, by kind (a kind is drawn first)
    [DEEP, DEEPER, "[" * 200 + "{}" + "]" * 200, '{"a":' * 300 + "1" + "}" * 300],
    ["18446744073709551616", "18446744073709551615", "-9223372036854775809", "-1", "0", "-0",
     "1e400", "1.10000000000000000001", "2.5e-324", "NaN", "Infinity", "1", "2", "3", "1.5"],
    ['"\\ud800"', '"\\u0000"', '""', '"0"', '"-1"', '"1e5"', '"0.00"', '"00.10"', '"' + "9" * 60 + '"',
     '"1.' + "0" * 40 + '1"', '"\u0663"', '"' + "x" * 5000 + '"', '"BTCUSD"', '"ETHUSD"'],
    ["null", "true", "{}", "[]", '{"type":"auction_result"}', '["1","2"]', '[["1","2"]]', '"bid"',
     '"ask"', '"auction"', '"change"', '"trade"', '"block_trade"', '"auction_open"', '"heartbeat"',
     '"update"', '"mystery"', '"depthUpdate"'],
]
TOKENS = [b"{", b"}", b"[", b"]", b",", b":", b'"', b"\\", b"\xff", b"\xc3", b"\x00", b" ", b"1e9", b"-"]


def _paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        yield from _paths(v, path + (k,))


def _json_mutation(raw: bytes, rng: random.Random) -> bytes:
    msg = json.loads(raw)
    path = rng.choice(list(_paths(msg))[1:] or [()])
    if not path:
        return raw
    parent = msg
    for k in path[:-1]:
        parent = parent[k]
    key = path[-1]
    r = rng.random()
    if r < 0.15 and isinstance(parent, dict):
        del parent[key]
        return json.dumps(msg, separators=(",", ":")).encode()
    if r < 0.25 and isinstance(parent, dict):  # a new field
        key = rng.choice(["x", "type", "e", "eventId", "socket_sequence", "events", "id", "error", "U"])
    parent[key] = "\x00RAW\x00"
    return json.dumps(msg, separators=(",", ":")).encode().replace(
        b'"\\u0000RAW\\u0000"', rng.choice(rng.choice(HOSTILE)).encode(), 1)


def mutate(raw: bytes, rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.6:
        try:
            return _json_mutation(raw, rng)
        except (ValueError, RecursionError):  # not JSON (any more), or nested too deep
            pass
    i = rng.randrange(len(raw) + 1)
    if r < 0.7:
        return raw[:i] + rng.choice(TOKENS) + raw[i:]
    if r < 0.8:
        return raw[:i] + raw[i + rng.randrange(1, 20):]
    if r < 0.9:
        return raw[:i] + bytes([rng.randrange(256)]) + raw[i + 1:]
    return raw[:i]


def hostile_stream(frames: Frames, rng: random.Random, rate: float) -> Iterator[bytes]:
    """One connection's frames: the sequence with a share of them mutated, dropped,
    sent twice or swapped with the next (the first frame mutated less often)."""
    i = 0
    while i < len(frames):
        raw = frames[i]
        r = rng.random()
        if r < rate * (0.3 if i == 0 else 1):
            yield mutate(mutate(raw, rng) if r < rate / 4 else raw, rng)
        elif r < rate * 1.1:
            pass  # dropped
        elif r < rate * 1.2:
            yield raw
            yield raw
        elif r < rate * 1.3 and i + 1 < len(frames):
            yield frames[i + 1]
            yield raw
            i += 1
        else:
            yield raw
        i += 1


# ---- the parsers and the books ---------------------------------------------------------------

def run_streams(make: Callable[[], Any], frames: Frames, symbol: str, seed: int,
                seconds: float, max_frames: int = 30_000) -> tuple[int, int]:
    """Connections one after another until the time or frame budget runs out; the
    records they wrote must pass `collector verify`'s checks. (frames fed, breaks)."""
    rng = random.Random(seed)
    lines = [format.header(symbol, "records", 1_700_000_000, "fuzz", {})]
    fed = breaks = 0
    deadline = time.monotonic() + seconds
    while fed < max_frames and time.monotonic() < deadline:
        stream = make()
        stream.start()
        stream.take_requests()
        for raw in hostile_stream(frames, rng, rate=0.05):
            fed += 1
            try:
                out = stream.feed(raw, 1_700_000_000_000_000_000 + fed)
            except StreamBroken as broken:
                assert isinstance(broken.reason, Reason)
                lines.append(format.resync(symbol, broken.reason, 1, **broken.fields))
                breaks += 1
                break
            stream.take_requests()
            lines.extend(out.splitlines(keepends=True))
        else:  # the frames ran out: the peer closed, as the feed would mark it
            lines.append(format.resync(symbol, Reason.CLOSED, 1, detail="end of frames"))
    problems: list[tuple[int, str]] = []
    check_records(lines, symbol, lambda n, p: problems.append((n, p)))
    assert not problems, [(n, p, lines[n - 1][:300]) for n, p in problems[:5]]
    return fed, breaks


@pytest.mark.parametrize("native", CORES)
async def test_fuzz_both_apis_on_each_core(make_sim: MakeSim, native: bool) -> None:
    v1_sim, current_sim = await sim_frames(make_sim)
    corpora: list[tuple[str, str, Frames]] = [("v1", SYMBOL, with_auctions(v1_sim)),
                                             ("current", SYMBOL, current_sim)]
    for symbol, frames in captured().items():
        corpora += [("v1", symbol, with_auctions(frames)), ("current", symbol, as_current(frames, symbol))]
    for n, (api, symbol, frames) in enumerate(corpora):
        stream_class = V1Stream if api == "v1" else CurrentStream
        make = functools.partial(stream_class, symbol, 10, True, native=native)
        fed, breaks = run_streams(make, frames, symbol, seed=n, seconds=3.0 / len(corpora))
        assert fed > 100 and breaks > 0, (api, symbol, fed, breaks)


def test_the_captures_are_there_or_skipped_with_a_reason() -> None:
    if not captures.CAPTURES.is_dir():
        pytest.skip(f"{captures.CAPTURES} is absent: the fuzz runs on simulator frames only")
    assert len(captured()) == len(captures.ALL_CAPTURES)


def problems(lines: Any) -> list[tuple[int, str]]:
    """What `collector verify`'s checks find in a record file's lines."""
    found: list[tuple[int, str]] = []
    check_records(lines, SYMBOL, lambda n, p: found.append((n, p)))
    return found


# ---- over both transports, through a real App ------------------------------------------------

@contextlib.asynccontextmanager
async def hostile_exchange(api: str, frames: Frames, seed: int) -> AsyncIterator[str]:
    """Each connection gets the frames with a share of them mutated; now and then a frame
    that is not UTF-8 in a text frame, or binary."""
    rng = random.Random(seed)

    async def handler(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            if api == "current":  # wait for the SUBSCRIBE; the recorded frames hold its ack
                await asyncio.wait_for(ws.recv(), 5)
            for raw in itertools.islice(hostile_stream(frames, rng, rate=0.1), 2000):
                r = rng.random()
                await ws.send(raw, text=r >= 0.002)  # bytes as a text frame, as they are
                await asyncio.sleep(0.0005)
            await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, compression=None, max_size=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}" + ("/v1/marketdata" if api == "v1" else "")


async def test_fuzz_over_both_transports(make_sim: MakeSim, tmp_path: Path) -> None:
    v1_sim, current_sim = await sim_frames(make_sim)
    with structlog.testing.capture_logs() as logs:
        for n, (kind, api) in enumerate(itertools.product(TRANSPORTS, ("v1", "current"))):
            out = tmp_path / f"{kind}-{api}"
            frames = with_auctions(v1_sim) if api == "v1" else current_sim
            feed = {"transport": kind, "api": api, "stale_after_s": 0.5}
            async with hostile_exchange(api, frames, seed=n) as url, running(
                    make_config(url, out, [SYMBOL], feed=feed)) as app:
                stats = app.feeds[SYMBOL].stats
                await asyncio.sleep(2.0)
            assert stats.connects >= 2 and stats.updates > 0, (kind, api, stats)
            assert set(stats.resyncs) <= {r.value for r in Reason} - {"error"}, stats.resyncs
            with (out / SYMBOL / "current.jsonl").open("rb") as f:
                assert not problems(f), (kind, api)
    crashes = [e for e in logs if "crash" in e["event"]]
    assert not crashes, crashes[:3]
