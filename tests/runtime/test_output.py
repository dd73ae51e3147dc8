"""Production output end to end: rotation, compression, headers, raw frames and replay,
the directory lock."""

from __future__ import annotations

import asyncio
import io
import shutil
import subprocess

import orjson
import pytest

from collector.runtime import segments
from collector.runtime.app import App
from collector.sim import SimExchange
from collector.tools.replay import main_replay
from tests.helpers.e2e import (
    check_against_truth,
    make_config,
    read_records,
    reasons,
    running,
    segment_bytes,
    wait_until,
)

SYMBOLS = ["BTCUSD", "ETHUSD"]


@pytest.fixture
async def sim(make_sim):
    return await make_sim(symbols=SYMBOLS, seed=5, rate=400.0, heartbeat_s=0.05, depth=300)


def closed(folder):
    return segments.closed_segments(folder)


async def test_size_rotation_numbers_segments_and_each_starts_readable(sim, tmp_path):
    cfg = make_config(sim.ws_url, tmp_path, ["BTCUSD"],
                      output={"max_segment_mb": 0.05, "compress": "gzip", "rotate": "1d"})
    async with running(cfg) as app:
        await wait_until(lambda: len(closed(tmp_path / "BTCUSD")) >= 3, what="3 size rotations")
        await wait_until(lambda: all(s.compressed for s in closed(tmp_path / "BTCUSD")[:3]))
        assert app.writer.rotations >= 3
    segs = closed(tmp_path / "BTCUSD")
    names = [s.path.name for s in segs]
    day = names[0].split(".")[1]
    assert names[:3] == [f"BTCUSD.{day}.jsonl.gz", f"BTCUSD.{day}-2.jsonl.gz", f"BTCUSD.{day}-3.jsonl.gz"]
    for data in segment_bytes(tmp_path / "BTCUSD")[1:]:
        first, second = data.splitlines()[:2]
        head = orjson.loads(first)
        assert head["type"] == "header" and head["symbol"] == "BTCUSD" and head["schema"] == 1
        assert head["config"]["output"]["max_segment_mb"] == 0.05
        assert orjson.loads(second)["type"] == "book"  # the live book, carried over
    recs = read_records(tmp_path, "BTCUSD")
    assert reasons(recs) == ["start"]
    check_against_truth(sim, recs, "BTCUSD")


async def test_time_rotation_is_utc_aligned_and_compressed(sim, tmp_path):
    cfg = make_config(sim.ws_url, tmp_path, SYMBOLS, output={"rotate": "1s"})
    async with running(cfg):
        await wait_until(lambda: all(sum(s.compressed for s in closed(tmp_path / sym)) >= 2
                                     for sym in SYMBOLS), what="two zstd segments per symbol")
    for sym in SYMBOLS:
        starts = [s.start for s in closed(tmp_path / sym)]
        assert starts == sorted(set(starts))  # one segment per second, named by its second
        for data in segment_bytes(tmp_path / sym):
            head = orjson.loads(data.splitlines()[0])
            recv = [orjson.loads(x)["recv_ns"] for x in data.splitlines()[2:]]
            # a segment holds what was written in its second: received before its end,
            # and at most the writer's latency before its start
            start_ns = head["segment_start_s"] * 10**9
            assert all(start_ns - 200_000_000 <= r < start_ns + 10**9 for r in recv)
        recs = read_records(tmp_path, sym)
        assert reasons(recs) == ["start"]
        check_against_truth(sim, recs, sym)


@pytest.mark.skipif(shutil.which("tail") is None, reason="needs GNU tail")
async def test_tail_follows_rotations_and_sees_every_line_once(sim, tmp_path):
    out = tmp_path / "data"
    cfg = make_config(sim.ws_url, out, ["BTCUSD"], output={"rotate": "1s", "compress": "none"})
    (out / "BTCUSD").mkdir(parents=True)
    seen_path = tmp_path / "seen"
    current = out / "BTCUSD" / "current.jsonl"
    with open(seen_path, "wb") as seen_file:
        tail = subprocess.Popen(["tail", "-n", "+1", "-s", "0.05", "-F", str(current)],
                                stdout=seen_file, stderr=subprocess.DEVNULL)
    try:
        async with running(cfg):
            await wait_until(lambda: len(closed(out / "BTCUSD")) >= 3, what="3 rotations")
        written = b"".join(segment_bytes(out / "BTCUSD"))
        await wait_until(lambda: seen_path.stat().st_size >= len(written), what="tail to catch up")
    finally:
        tail.kill()
        tail.wait()
    seen = seen_path.read_bytes()
    seen_lines, written_lines = seen.splitlines(), written.splitlines()
    assert len(seen_lines) == len(written_lines)
    assert sorted(seen_lines) == sorted(written_lines)  # every line exactly once, none torn
    assert seen == written  # ... and in order


async def test_raw_frames_replay_to_the_same_records(tmp_path):
    chaos = "gap=0.003,garbage=0.003,close=0.002,crossed=0.003,unknown=0.01"
    async with SimExchange(SYMBOLS, seed=9, rate=400.0, heartbeat_s=0.05, faults=chaos) as sim:
        cfg = make_config(sim.ws_url, tmp_path, SYMBOLS, book={"emit": "change"},
                          output={"raw": True, "rotate": "1s"})
        async with running(cfg) as app:
            await wait_until(lambda: all(sum(f.stats.resyncs.values()) >= 3 for f in app.feeds.values()))
    out = io.BytesIO()
    assert main_replay([str(tmp_path)], stdout=out) == 0
    replayed = out.getvalue()
    expected = b"".join(orjson.dumps(r) + b"\n" for sym in SYMBOLS for r in read_records(tmp_path, sym))
    assert replayed == expected
    assert b'"reason":"invalid"' in replayed and b'"reason":"crossed"' in replayed


async def test_a_second_collector_on_the_same_directory_is_refused(sim, tmp_path):
    cfg = make_config(sim.ws_url, tmp_path, ["BTCUSD"])
    async with running(cfg) as first:
        await wait_until(lambda: first.feeds["BTCUSD"].stats.live)
        assert await asyncio.wait_for(App(cfg).run(handle_signals=False), 5) == 75
    recs = read_records(tmp_path, "BTCUSD")
    assert reasons(recs) == ["start"]


async def test_disk_full_keeps_books_live_and_marks_the_loss(sim, tmp_path, monkeypatch, os_write):
    import errno
    import os


    real = os.write
    full = {"on": False}

    def write(fd, data):
        if full["on"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    os_write(write)
    cfg = make_config(sim.ws_url, tmp_path, SYMBOLS)
    async with running(cfg) as app:
        await wait_until(lambda: all(f.stats.updates >= 50 for f in app.feeds.values()))
        full["on"] = True
        await wait_until(lambda: app.writer.dropped_total >= 200, what="lines dropped")
        during = {s: f.stats.updates for s, f in app.feeds.items()}
        await wait_until(lambda: all(f.stats.updates >= during[s] + 50 for s, f in app.feeds.items()),
                         what="feeds still live while the disk is full")
        assert all(f.stats.live for f in app.feeds.values())
        full["on"] = False
        await wait_until(lambda: all(f.stats.updates >= during[s] + 150 for s, f in app.feeds.items()))
    for sym in SYMBOLS:
        recs = read_records(tmp_path, sym)
        assert reasons(recs) == ["start", "dropped"]
        dropped = next(r for r in recs if r["type"] == "resync" and r["reason"] == "dropped")
        assert dropped["dropped"] > 0
        check_against_truth(sim, recs, sym)
    marked = sum(r["dropped"] for sym in SYMBOLS for r in read_records(tmp_path, sym)
                 if r["type"] == "resync" and r["reason"] == "dropped")
    assert marked == app.writer.dropped_total  # every lost line is counted in the files


async def test_compressing_a_large_segment_does_not_stall_the_loop(tmp_path):
    from collector import config
    from collector.runtime.writer import Writer

    folder = tmp_path / "BTCUSD"
    folder.mkdir()
    big = folder / "BTCUSD.20260101T000000Z.jsonl"
    line = orjson.dumps({"type": "book", "symbol": "BTCUSD", "bids": [[f"{60000 - i}.{i % 97:02d}", "1.5"]
                                                                      for i in range(10)]}) + b"\n"
    with open(big, "wb") as f:
        for i in range(160_000):  # ~40 MB, varied enough that zstd has work to do
            f.write(line.replace(b'"1.5"', b'"%d.%d"' % (i, i % 13)))
    out = config.from_dict({"feed": {"symbols": ["BTCUSD"]}, "output": {"dir": str(tmp_path)}}).output
    w = Writer(out)
    task = asyncio.create_task(w.run())
    loop = asyncio.get_running_loop()
    worst = 0.0
    deadline = loop.time() + 60
    while big.exists() or not (folder / (big.name + ".zst")).exists():  # renamed, then unlinked
        assert loop.time() < deadline, "compression did not finish"
        t = loop.time()
        await asyncio.sleep(0.001)
        worst = max(worst, loop.time() - t - 0.001)
    await w.stop()
    await task
    assert not big.exists()
    assert worst < 0.020, f"loop lag {worst * 1000:.1f} ms while compressing"


async def test_raw_frames_of_the_current_api_replay_to_the_same_records(tmp_path):
    # gaps and crossed books are repaired in place (UNSUBSCRIBE, ack, SUBSCRIBE), three in
    # a row or anything else reconnects; duplicates are stale frames, skipped
    chaos = "gap=0.004,garbage=0.002,close=0.001,crossed=0.003,unknown=0.01,duplicate=0.005"
    async with SimExchange(SYMBOLS, seed=9, rate=400.0, faults=chaos) as sim:
        cfg = make_config(sim.current_url, tmp_path, SYMBOLS, feed={"api": "current"},
                          book={"emit": "change"}, output={"raw": True, "rotate": "1s"})
        async with running(cfg) as app:
            await wait_until(lambda: all(
                f.stats.resyncs["gap"] + f.stats.resyncs["crossed"] >= 4 and f.stats.connects >= 2
                for f in app.feeds.values()), timeout=30)
    out = io.BytesIO()
    assert main_replay([str(tmp_path)], stdout=out) == 0
    replayed = out.getvalue()
    expected = b"".join(orjson.dumps(r) + b"\n" for sym in SYMBOLS for r in read_records(tmp_path, sym))
    assert replayed == expected
    for reason in (b"gap", b"crossed", b"invalid"):
        assert b'"reason":"%s"' % reason in replayed
    for sym in SYMBOLS:
        sent = [orjson.loads(line) for data in segment_bytes(tmp_path / sym / "raw")
                for line in data.splitlines() if line.startswith(b'{"type":"sent"')]
        methods = [orjson.loads(r["text"])["method"] for r in sent]
        # one SUBSCRIBE per connection, one UNSUBSCRIBE + SUBSCRIBE per repair in place
        assert methods.count("SUBSCRIBE") == app.feeds[sym].stats.connects + methods.count("UNSUBSCRIBE")
        assert methods.count("UNSUBSCRIBE") >= 1
        check_against_truth(sim, read_records(tmp_path, sym), sym, every=False, api="current")


def test_replay_of_the_current_api_checks_the_requests_sent(tmp_path, capsys):
    """A logged request the replayed stream would not have made is an error naming the line."""
    from collector import __version__
    from collector.core import format as fmt
    from collector.core import rawlog

    raw = tmp_path / "BTCUSD" / "raw"
    raw.mkdir(parents=True)
    (raw / "current.jsonl").write_bytes(
        fmt.header("BTCUSD", "raw", 0, __version__, {"feed": {"api": "current"}, "book": {}})
        + rawlog.connect("ws://127.0.0.1:1/?snapshot=-1", 1)
        + rawlog.sent(b'{"method":"SUBSCRIBE","params":["btcusd@depth@100ms"],"id":1}', 2))
    assert main_replay([str(tmp_path)], stdout=io.BytesIO()) == 1
    err = capsys.readouterr().err
    assert "current.jsonl line 3" in err and '"btcusd@trade"' in err  # feed.trades defaults on
