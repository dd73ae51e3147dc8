"""Replay mode: recorded captures played as v1 streams, checked by raw websockets clients
against an independent dict book and against the truth.

The captures live outside the repository (``/work/shared/gemini/captures``, found relative
to this file) and are never copied into it; without them these tests are skipped.
"""

from __future__ import annotations

import asyncio
import gzip
import re
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.exceptions import ConnectionClosed

from collector.sim import SimExchange
from collector.sim.__main__ import build_parser
from collector.sim.capture import Capture, Message, load_capture
from collector.sim.tape import build_tape
from tests.sim.sim_helpers import DictBook, http_get, recv_json, ws_connect

CAPTURES = Path(__file__).resolve().parents[3] / "shared" / "gemini" / "captures"
needs_captures = pytest.mark.skipif(
    not CAPTURES.is_dir(), reason=f"Gemini captures not available ({CAPTURES} is absent)")

WS1 = CAPTURES / "GEMINI.ws.1.0"
WS36 = CAPTURES / "GEMINI.ws.36.0"
ZST = CAPTURES / "GEMINI.jsonl.zst"

# Counts as stated in the captures' README.
COUNTS = {
    "GEMINI.ws.36.0": {"l2_updates": 935, "trade": 51, "heartbeat": 7},
    "GEMINI.ws.1.0": {"l2_updates": 655, "trade": 16, "heartbeat": 7},
    "GEMINI-e6096f.0": {"l2_updates": 1758, "trade": 22, "heartbeat": 24},
    "GEMINI.jsonl.zst": {"l2_updates": 559, "trade": 2, "heartbeat": 2},
}


def _zstd() -> Any:
    return pytest.importorskip("zstandard", reason="zstandard is not installed (optional)")


async def read_until_closed(ws: Any, timeout: float = 5.0) -> tuple[list[dict[str, Any]], int | None, str]:
    """Every frame until the server closes; returns (frames, close code, close reason)."""
    frames: list[dict[str, Any]] = []
    try:
        while True:
            frames.append(orjson.loads(await asyncio.wait_for(ws.recv(), timeout)))
    except ConnectionClosed as exc:
        rcvd = exc.rcvd
        return frames, rcvd.code if rcvd else None, rcvd.reason if rcvd else ""


def snapshot_book(frame: dict[str, Any]) -> DictBook:
    book = DictBook()
    book.apply_frame(frame)
    return book


# ---- parsers -------------------------------------------------------------------------------

@needs_captures
@pytest.mark.parametrize("name", sorted(COUNTS))
def test_parsers_count_messages(name: str) -> None:
    if name.endswith(".zst"):
        _zstd()
    cap = load_capture(CAPTURES / name)
    assert dict(cap.counts) == COUNTS[name]
    assert len(cap.messages) == sum(COUNTS[name].values()) and cap.invalid_lines == 0
    assert len(cap.symbols) == 10
    times = [m.ts_ns for m in cap.messages]
    assert times == sorted(times)


@needs_captures
def test_plain_jsonl_and_zst_agree(tmp_path: Path) -> None:
    zstandard = _zstd()
    plain = tmp_path / "GEMINI.jsonl"
    plain.write_bytes(zstandard.ZstdDecompressor().decompressobj().decompress(ZST.read_bytes()))
    a, b = load_capture(ZST), load_capture(plain)
    assert a.counts == b.counts and [m.data for m in a.messages] == [m.data for m in b.messages]
    assert a.details["BTCUSDCPERP"]["quote_increment"] == 0.5 and len(a.details) == 347


@needs_captures
def test_zst_without_zstandard_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zstandard", None)  # import zstandard -> ImportError
    with pytest.raises(RuntimeError, match=r"install zstandard to replay \.zst files"):
        load_capture(ZST)


@needs_captures
def test_tape_from_text_capture() -> None:
    tape = build_tape(load_capture(WS36))
    btc = tape.symbols["BTCUSD"]
    assert len(btc.initial_bids) + len(btc.initial_asks) == 6614  # README: initial snapshot
    assert btc.spec.quote_increment == "0.01" and btc.spec.tick_size == "0.00000001"
    assert tape.span_ns == pytest.approx(30.71e9, rel=1e-3)
    trades = [e for st in btc.steps for e in st.events if e["type"] == "trade"]
    assert trades and all(e["makerSide"] in ("bid", "ask") for e in trades)
    reasons = {e["reason"] for st in btc.steps for e in st.events if e["type"] == "change"}
    assert reasons == {"place", "cancel", "trade"}
    # Asking for a symbol the capture does not have is an error, not an empty market.
    with pytest.raises(ValueError, match="no order book"):
        build_tape(load_capture(WS1), ["BTCUSD"])


def test_trades_label_their_changes_and_a_second_full_book_is_a_resync() -> None:
    book = {"type": "l2_updates", "symbol": "BTCUSD", "trades": [], "auction_events": []}
    cap = Capture(Path("synthetic"), [
        Message(1, {**book, "changes": [["buy", "100.00", "1"], ["sell", "101.00", "2"]]}),
        Message(2, {"type": "trade", "symbol": "BTCUSD", "price": "101.00", "quantity": "0.5",
                    "side": "buy", "event_id": 7, "timestamp": 2}),
        Message(3, {"type": "l2_updates", "symbol": "BTCUSD",
                    "changes": [["sell", "101.00", "1.5"], ["buy", "99", "0"], ["buy", "100", "1"]]}),
        Message(4, {"type": "l2_updates", "symbol": "BTCUSD", "changes": [["buy", "99.00", "0"]]}),
        Message(5, {**book, "changes": [["buy", "100", "1"], ["buy", "99.5", "3"]]}),
    ])
    tape = build_tape(cap).symbols["BTCUSD"]
    assert (tape.initial_bids, tape.initial_asks) == ([(10000, 100000000)], [(10100, 200000000)])
    assert [(st.kind, st.events) for st in tape.steps] == [
        ("trade", [{"type": "trade", "tid": 0, "price": "101", "amount": "0.5", "makerSide": "ask"}]),
        ("trade", [{"type": "change", "side": "ask", "price": "101", "remaining": "1.5",
                    "delta": "-0.5", "reason": "trade"}]),  # no-ops dropped; msg 4 is all no-op
        ("resync", [{"type": "change", "side": "bid", "price": "99.5", "remaining": "3",
                     "delta": "3", "reason": "place"},
                    {"type": "change", "side": "ask", "price": "101", "remaining": "0",
                     "delta": "-1.5", "reason": "cancel"}]),
    ]


# ---- streams against the truth ------------------------------------------------------------

async def _check_symbol(sim: SimExchange, symbol: str) -> tuple[int, int | None]:
    """One raw client: after every frame its dict book equals the truth at the frame's
    eventId; deltas, ids and timestamps are consistent. Returns (updates, close code)."""
    truth = sim.truth(symbol)
    book = DictBook()
    async with ws_connect(f"{sim.ws_url}/{symbol}?heartbeat=true") as ws:
        frames, code, reason = await read_until_closed(ws)
    assert [f["socket_sequence"] for f in frames] == list(range(len(frames)))
    snap = frames[0]
    assert snap["eventId"] == truth.log.initial_event_id  # speed 0 waits for a client
    last_id, last_ms, updates = 0, 0, 0
    now_ms = sim.clock_ms()
    for f in frames:
        if f["type"] == "heartbeat":
            continue
        assert f["eventId"] > last_id
        last_id = f["eventId"]
        if f["socket_sequence"]:
            updates += 1
            assert f["timestampms"] >= last_ms and abs(f["timestampms"] - now_ms) < 60_000
            last_ms = f["timestampms"]
            for e in f["events"]:
                if e["type"] == "change":
                    old = (book.bids if e["side"] == "bid" else book.asks).get(e["price"], "0")
                    assert Decimal(e["delta"]) == Decimal(e["remaining"]) - Decimal(old)
                    assert e["reason"] in ("place", "cancel", "trade")
                    assert (e["reason"] == "place") == (Decimal(e["delta"]) > 0)
                else:
                    assert e["type"] == "trade" and e["makerSide"] in ("bid", "ask")
        book.apply_frame(f)
        assert book.top() == truth.top_at(f["eventId"])
    assert (code, reason) == (1012, "service restart")
    return updates, code


@needs_captures
async def test_replay_speed0_every_frame_matches_truth() -> None:
    async with SimExchange(replay=WS1, speed=0, heartbeat_s=0.05) as sim:
        assert sim.tape is not None
        symbols = list(sim.tape.symbols)
        assert sim.symbols == symbols and len(symbols) == 10
        results = await asyncio.gather(*(_check_symbol(sim, s) for s in symbols))
        for sym, (updates, _) in zip(symbols, results, strict=True):
            assert updates == len(sim.tape.symbols[sym].steps) == sim.stats[sym].updates
            assert sim.stats[sym].loops == 1
        assert sum(u for u, _ in results) == 655 - 10 + 16 - 3  # 3 messages change nothing


@needs_captures
async def test_connection_opened_mid_replay_gets_the_current_book() -> None:
    sim = SimExchange(replay=WS36, symbols=["BTCUSD"], speed=None)
    async with sim:
        truth = sim.truth("BTCUSD")
        async with ws_connect(f"{sim.ws_url}/BTCUSD") as a:
            first = await recv_json(a)
            book_a = snapshot_book(first)
            assert len(book_a.bids) + len(book_a.asks) == 6614
            sim.advance("BTCUSD", 100)
            for _ in range(100):
                f = await recv_json(a)
                book_a.apply_frame(f)
            async with ws_connect(f"{sim.ws_url}/BTCUSD") as b:
                snap = await recv_json(b)
                assert snap["eventId"] == f["eventId"] == sim.stats["BTCUSD"].last_event_id
                assert "timestampms" not in snap
                events = snap["events"]
                assert all(e["reason"] == "initial" and e["delta"] == e["remaining"] for e in events)
                sides = [e["side"] for e in events]
                assert sides == sorted(sides, key=lambda s: s == "ask")  # bids, then asks
                book_b = snapshot_book(snap)
                assert book_b.top() == truth.top_at(snap["eventId"]) == book_a.top()
                assert book_b.top() != snapshot_book(first).top()  # the book did move
                sim.advance("BTCUSD", 50)
                for _ in range(50):
                    fa, fb = await recv_json(a), await recv_json(b)
                    assert fa["eventId"] == fb["eventId"] and fa["events"] == fb["events"]
                    book_a.apply_frame(fa)
                    book_b.apply_frame(fb)
                    assert book_a.top(10) == book_b.top(10) == truth.top_at(fa["eventId"], 10)


@needs_captures
async def test_loop_closes_connections_and_restarts_from_the_initial_book() -> None:
    async with SimExchange(replay=WS1, symbols=["ZECLTC"], speed=0) as sim:
        truth = sim.truth("ZECLTC")
        steps = len(sim.tape.symbols["ZECLTC"].steps) if sim.tape else 0
        passes = []
        for _ in range(2):
            async with ws_connect(f"{sim.ws_url}/ZECLTC") as ws:
                frames, code, reason = await read_until_closed(ws)
            assert (code, reason) == (1012, "service restart") and len(frames) == steps + 1
            passes.append(frames)
        (snap1, *ups1), (snap2, *ups2) = passes
        assert snap2["events"] == snap1["events"]  # the initial book again
        assert snap2["eventId"] > ups1[-1]["eventId"]
        assert snap2["eventId"] == truth.log.resets[0]
        assert truth.top_at(snap2["eventId"]) == truth.top_at(snap1["eventId"]) \
            == snapshot_book(snap1).top()
        book = snapshot_book(snap1)
        for f in ups1:
            book.apply_frame(f)
        assert book.top() == truth.top_at(ups1[-1]["eventId"]) != snapshot_book(snap1).top()
        assert [f["events"] for f in ups2] == [f["events"] for f in ups1]  # same pass
        assert ups2[0]["eventId"] > snap2["eventId"]
        assert sim.stats["ZECLTC"].loops == 2 and len(truth.log.resets) == 2


@needs_captures
async def test_truth_file_records_the_loop_reset(tmp_path: Path) -> None:
    path = tmp_path / "truth.jsonl"
    async with SimExchange(replay=WS1, symbols=["LTCETH"], speed=None, truth_path=path) as sim:
        sim.advance("LTCETH", 3)  # the whole tape (2 steps), then loop and play one
        final = sim.truth("LTCETH").top_at(sim.stats["LTCETH"].last_event_id)
        assert sim.stats["LTCETH"].loops == 1
    lines = [orjson.loads(x) for x in path.read_bytes().splitlines()]
    assert [x["type"] for x in lines] == ["initial", "cancel", "cancel", "reset", "cancel"]
    book = DictBook()
    book.bids.update(dict(lines[0]["bids"]))
    book.asks.update(dict(lines[0]["asks"]))
    for x in lines[1:]:
        for side, price, remaining in x["changes"]:
            book.apply({"type": "change", "side": side, "price": price, "remaining": remaining})
    assert book.top() == final


@needs_captures
async def test_real_speed_timing_and_timestamps() -> None:
    speed = 100.0  # 30.7 s capture -> 0.31 s per pass
    async with SimExchange(replay=WS1, symbols=["FILUSD"], speed=speed) as sim:
        assert sim.tape is not None
        tape = sim.tape.symbols["FILUSD"]
        loop = asyncio.get_running_loop()
        began = loop.time()
        async with ws_connect(f"{sim.ws_url}/FILUSD") as ws:
            frames, code, _ = await read_until_closed(ws)
        took = loop.time() - began
        assert code == 1012
        ups = frames[1:]
        # Connected after the start: the snapshot is the book at that moment, then the rest.
        assert 0 < len(ups) <= len(tape.steps)
        recorded = [st.ts_ns for st in tape.steps[len(tape.steps) - len(ups):]]
        for f, ts in zip(ups, recorded, strict=True):
            want = (ts - recorded[0]) / 1e6 / speed
            assert abs((f["timestampms"] - ups[0]["timestampms"]) - want) <= 1.5
        # The pass ends (and closes) at the capture's span / speed after the start.
        assert 0.1 < took < 0.31 + 1.0
        assert sim.stats["FILUSD"].loops >= 1


@needs_captures
async def test_no_loop_keeps_the_final_book_and_connections() -> None:
    async with SimExchange(replay=WS1, symbols=["LTCETH"], speed=None, loop=False,
                           heartbeat_s=0.02) as sim:
        async with ws_connect(f"{sim.ws_url}/LTCETH?heartbeat=true") as ws:
            await recv_json(ws)
            sim.advance("LTCETH", 100)
            assert sim.replay_finished("LTCETH") and sim.stats["LTCETH"].updates == 2
            frames = [await recv_json(ws) for _ in range(5)]
        assert [f["type"] for f in frames][:2] == ["update", "update"]
        assert {f["type"] for f in frames[2:]} == {"heartbeat"}
        assert sim.stats["LTCETH"].loops == 0


@needs_captures
async def test_a_symbol_with_only_a_book_is_quiet() -> None:
    async with SimExchange(replay=CAPTURES / "GEMINI-e6096f.0", symbols=["LTCBCH", "DAIUSD"],
                           speed=0, heartbeat_s=0.02) as sim:
        assert sim.tape is not None and not sim.tape.symbols["LTCBCH"].steps
        async with ws_connect(f"{sim.ws_url}/LTCBCH?heartbeat=true") as ws:
            snap = await recv_json(ws)
            assert len(snap["events"]) == 52  # its initial book: 4 bids + 48 asks
            assert [(await recv_json(ws))["type"] for _ in range(3)] == ["heartbeat"] * 3
        sim.advance("LTCBCH", 5)
        assert sim.stats["LTCBCH"].updates == 0 and sim.stats["LTCBCH"].loops == 0


@needs_captures
async def test_faults_and_rest_in_replay_mode() -> None:
    _zstd()
    async with SimExchange(replay=ZST, symbols=["BTCUSDCPERP", "ETHUSD"], speed=None,
                           listed=["XRPUSD"]) as sim:
        assert sim.symbols == ["BTCUSDCPERP", "ETHUSD", "XRPUSD"]
        status, _, details = await http_get(sim.host, sim.port, "/v1/symbols/details/BTCUSDCPERP")
        assert status == 200 and details["quote_increment"] == 0.5  # from the capture
        status, _, book = await http_get(sim.host, sim.port, "/v1/book/ETHUSD?limit_bids=3")
        assert status == 200 and len(book["bids"]) == 3
        truth = sim.truth("BTCUSDCPERP")
        async with ws_connect(f"{sim.ws_url}/BTCUSDCPERP") as ws:
            await recv_json(ws)
            sim.advance("BTCUSDCPERP", 2)
            sim.inject("BTCUSDCPERP", "gap")
            sim.advance("BTCUSDCPERP", 2)
            sim.inject("BTCUSDCPERP", "crossed")
            got = [await recv_json(ws) for _ in range(4)]
        assert [f["socket_sequence"] for f in got] == [1, 2, 4, 5]
        lie = got[3]
        assert lie["eventId"] not in truth.log.update_ids
        _, asks = truth.top_at(got[2]["eventId"], 1)
        assert Decimal(lie["events"][0]["price"]) > Decimal(asks[0][0])


@pytest.mark.parametrize("layout", ["lines", "collector-dir"])
async def test_raw_v1_frames_round_trip(tmp_path: Path, layout: str) -> None:
    """Frames recorded from the synthetic market (two overlapping connections, heartbeats)
    in the raw-frame shapes replay to the same book changes. ``lines``: one file of
    ``{"recv_ns","symbol","frame"}``; ``collector-dir``: the collector's raw log layout
    (``<SYMBOL>/raw/`` segments, ``connect`` lines, no symbol on the frame lines)."""
    conns: list[list[bytes]] = []
    clock = [1_700_000_000_000_000_000]

    def record(frame: dict[str, Any] | str) -> None:
        clock[0] += 1_000_000
        if layout == "lines":
            rec = {"recv_ns": clock[0], "symbol": "BTCUSD", "frame": frame}
        else:
            key = "text" if isinstance(frame, str) else "frame"
            rec = {"recv_ns": clock[0], key: frame}
        conns[-1].append(orjson.dumps(rec))

    def connect() -> None:
        conns.append([])
        if layout != "lines":
            conns[-1].append(orjson.dumps({"type": "connect", "recv_ns": clock[0],
                                           "url": "wss://api.gemini.com/v1/marketdata/btcusd"}))

    async with SimExchange(["BTCUSD"], rate=None, depth=20, heartbeat_s=0.01) as src:
        async with ws_connect(f"{src.ws_url}/BTCUSD?heartbeat=true") as a:
            a_snap = await recv_json(a)
            src.advance("BTCUSD", 60)
            a_frames: list[dict[str, Any]] = []
            while len([f for f in a_frames if f["type"] == "update"]) < 60:
                a_frames.append(await recv_json(a))
            async with ws_connect(f"{src.ws_url}/BTCUSD") as b:
                b_snap = await recv_json(b)
                src.advance("BTCUSD", 40)
                b_frames = [await recv_json(b) for _ in range(40)]
        connect()
        for f in [a_snap, *a_frames]:
            record(f)
        if layout != "lines":
            record('{"type":"upd')  # a frame that did not parse: not a message
        connect()  # a second connection: its snapshot is a duplicate, then new updates
        for f in [b_snap, *b_frames]:
            record(f)
        originals = [f for f in a_frames if f["type"] == "update"] + b_frames
        src_final = src.truth("BTCUSD").top_at(src.stats["BTCUSD"].last_event_id)
    if layout == "lines":
        path = tmp_path / "raw.jsonl"
        path.write_bytes(b"\n".join(conns[0] + conns[1]) + b"\n")
    else:
        path = tmp_path / "out"
        raw = path / "BTCUSD" / "raw"
        raw.mkdir(parents=True)
        header = orjson.dumps({"type": "header", "symbol": "BTCUSD"})
        with gzip.open(raw / "BTCUSD.20231114T221320Z.jsonl.gz", "wb") as gz:
            gz.write(b"\n".join([header, *conns[0]]) + b"\n")
        (raw / "current.jsonl").write_bytes(b"\n".join([header, *conns[1]]) + b"\n")

    tape = build_tape(load_capture(path))
    assert len(tape.symbols["BTCUSD"].steps) == 100 and tape.symbols["BTCUSD"].dropped == 1
    async with SimExchange(replay=tape, speed=None, loop=False) as sim:
        async with ws_connect(f"{sim.ws_url}/BTCUSD") as ws:
            await recv_json(ws)
            sim.advance("BTCUSD", 100)
            replayed = [await recv_json(ws) for _ in range(100)]
        for orig, rep in zip(originals, replayed, strict=True):
            strip = [{k: v for k, v in e.items() if k not in ("tid", "eid")} for e in orig["events"]]
            assert [{k: v for k, v in e.items() if k not in ("tid", "eid")}
                    for e in rep["events"]] == strip
        assert sim.truth("BTCUSD").top_at(replayed[-1]["eventId"]) == src_final


# ---- command line --------------------------------------------------------------------------

def test_parser_replay_options(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["--replay", str(WS1), "--speed", "10", "--no-loop"])
    assert args.replay == str(WS1) and args.speed == 10.0 and args.loop is False
    args = build_parser().parse_args([])
    assert args.replay is None and args.speed == 1.0 and args.loop is True and args.symbols is None
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["--speed", "-1"])
    assert info.value.code == 2 and "speed" in capsys.readouterr().err


@needs_captures
async def test_module_entry_point_replays() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collector.sim", "--port", "0", "--replay", str(WS1),
        "--speed", "0", "--symbols", "filusd,ZECLTC", stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 10.0)).decode()
        match = re.search(r"rest http://([\d.]+):(\d+)", line)
        assert match and "symbols FILUSD,ZECLTC" in line and "replay GEMINI.ws.1.0" in line, line
        async with ws_connect(f"ws://{match.group(1)}:{match.group(2)}/v1/marketdata/ZECLTC") as ws:
            frames, code, _ = await read_until_closed(ws)
        assert frames[0]["socket_sequence"] == 0 and len(frames) == 7 and code == 1012
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 5.0) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_module_entry_point_rejects_a_bad_capture(tmp_path: Path) -> None:
    bad = tmp_path / "empty.jsonl"
    bad.write_text('{"t":"header"}\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collector.sim", "--replay", str(bad),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 10.0)
    assert proc.returncode == 2 and b"no order book" in err
