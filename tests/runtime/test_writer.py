import asyncio
import errno
import os
import time
from pathlib import Path

import orjson

from collector import config
from collector.runtime import leftovers
from collector.runtime import writer as writer_mod
from collector.runtime.writer import SegmentFile, Writer


def out_config(tmp_path: Path, **output) -> config.OutputConfig:
    return config.from_dict({"feed": {"symbols": ["BTCUSD"]},
                             "output": {"dir": str(tmp_path), **output}}).output


def lines_of(path):
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n")
    return [orjson.loads(line) for line in data.splitlines()]


def body(path):
    """Records of a segment after its header."""
    recs = lines_of(path)
    assert recs[0]["type"] == "header"
    return recs[1:]


def rec(symbol, n):
    return orjson.dumps({"type": "x", "symbol": symbol, "n": n}) + b"\n"


async def run_writer(w: Writer, items):
    task = asyncio.create_task(w.run())
    for symbol, data in items:
        await w.put(symbol, data)
    await w.stop()
    await asyncio.wait_for(task, 10)


async def test_lines_land_per_symbol_in_order(tmp_path):
    w = Writer(out_config(tmp_path, queue_size=16, batch_max=7))
    items = [(s, rec(s, i)) for i in range(500) for s in ("BTCUSD", "ETHUSD")]
    await run_writer(w, items)
    for s in ("BTCUSD", "ETHUSD"):
        got = body(tmp_path / s / "current.jsonl")
        assert [r["n"] for r in got] == list(range(500))
        assert w.lines_written[s] == 500
    assert w.queue_full_waits > 0  # 1000 puts through a queue of 16


async def test_a_restart_closes_the_previous_file_after_cutting_a_torn_line(tmp_path):
    folder = tmp_path / "BTCUSD"
    folder.mkdir()
    (folder / "current.jsonl").write_bytes(
        orjson.dumps({"type": "resync", "symbol": "BTCUSD", "reason": "start",
                      "recv_ns": 1_700_000_000_000_000_000}) + b"\n" + b'{"type":"x","sym')
    w = Writer(out_config(tmp_path, compress="none"))
    await run_writer(w, [("BTCUSD", rec("BTCUSD", 1))])
    closed = folder / "BTCUSD.20231114T220000Z.jsonl"  # named from the first record's hour
    assert [r["type"] for r in lines_of(closed)] == ["resync"]
    assert [r["n"] for r in body(folder / "current.jsonl")] == [1]


def test_cut_partial_line_longer_than_a_chunk(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"a\n" + b"x" * 200_000)
    fd = os.open(path, os.O_RDWR)
    try:
        assert leftovers.cut_partial_line(fd, path) == 2
    finally:
        os.close(fd)
    assert path.read_bytes() == b"a\n"
    path.write_bytes(b"y" * 100_000)
    fd = os.open(path, os.O_RDWR)
    try:
        assert leftovers.cut_partial_line(fd, path) == 0
    finally:
        os.close(fd)


def test_short_writes_complete_the_line(tmp_path, monkeypatch, os_write):
    real = os.write
    os_write(lambda fd, data: real(fd, bytes(data[:3])))
    f = SegmentFile(tmp_path, 0)
    f.write(rec("BTCUSD", 1) + rec("BTCUSD", 2))
    f.close()
    assert [r["n"] for r in lines_of(f.path)] == [1, 2]


async def test_disk_full_is_cut_back_counted_and_marked(tmp_path, monkeypatch, os_write):
    real = os.write
    state = {"full": False, "calls": 0}

    def fake_write(fd, data):
        if state["full"]:
            state["calls"] += 1
            if state["calls"] % 2:  # a short write first, then ENOSPC: a torn line on disk
                return real(fd, bytes(data[:5]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    os_write(fake_write)
    w = Writer(out_config(tmp_path, queue_size=100, batch_max=1))
    task = asyncio.create_task(w.run())
    await w.put("BTCUSD", rec("BTCUSD", 0))
    await w.put("ETHUSD", rec("ETHUSD", 0))
    while w.lines_written["ETHUSD"] < 1:
        await asyncio.sleep(0.005)
    state["full"] = True
    for i in (1, 2, 3):
        await w.put("BTCUSD", rec("BTCUSD", i))
    while w.dropped["BTCUSD"] < 3:
        await asyncio.sleep(0.005)
    state["full"] = False
    await w.put("BTCUSD", rec("BTCUSD", 4))
    await w.stop()
    await asyncio.wait_for(task, 10)
    got = body(tmp_path / "BTCUSD" / "current.jsonl")
    assert [r.get("n") for r in got] == [0, None, 4]
    assert got[1]["type"] == "resync" and got[1]["reason"] == "dropped"
    assert got[1]["dropped"] == 3
    assert w.dropped_total == 3 and w.write_errors == 3
    assert [r["n"] for r in body(tmp_path / "ETHUSD" / "current.jsonl")] == [0]


async def test_a_large_batch_makes_the_next_one_linger(tmp_path, monkeypatch, os_write):
    """After a batch of LINGER_ITEMS or more the writer waits LINGER_S before taking the
    next, so lines that come meanwhile share one write; after a small batch it does not."""
    real = os.write
    writes: list[list[int]] = []  # the n of every record in each write

    def recording_write(fd, data):
        writes.append([orjson.loads(line).get("n") for line in bytes(data).splitlines()])
        return real(fd, data)

    os_write(recording_write)
    monkeypatch.setattr(writer_mod, "LINGER_S", 0.3)
    w = Writer(out_config(tmp_path))
    task = asyncio.create_task(w.run())
    await asyncio.wait_for(w.started.wait(), 10)

    async def written(n):
        while not any(n in ns for ns in writes):
            await asyncio.sleep(0.002)

    async def spaced(first, last):  # one line each, 50 ms apart
        for n in range(first, last):
            await w.put("BTCUSD", rec("BTCUSD", n))
            await asyncio.sleep(0.05)

    await spaced(0, 3)  # small batches: each line written on its own
    await written(2)
    for n in range(100, 100 + writer_mod.LINGER_ITEMS):  # one large batch, queued at once
        w.offer("BTCUSD", rec("BTCUSD", n))
    await written(100 + writer_mod.LINGER_ITEMS - 1)
    await spaced(200, 203)  # within the 0.3 s linger: one write
    await written(202)
    await spaced(300, 303)  # that batch was small again: no linger
    await w.stop()
    await asyncio.wait_for(task, 10)
    body_writes = [ns for ns in writes if None not in ns]  # the header's write has no n
    assert body_writes[:3] == [[0], [1], [2]]
    assert body_writes[3] == list(range(100, 100 + writer_mod.LINGER_ITEMS))
    assert body_writes[4:] == [[200, 201, 202], [300], [301], [302]]


async def test_no_linger_while_a_whole_batch_is_queued(tmp_path, monkeypatch, os_write):
    """Behind by a batch or more, the writer does not linger: it would fall further behind."""
    real = os.write
    written_at: list[float] = []

    def timed_write(fd, data):
        written_at.append(time.monotonic())
        return real(fd, data)

    os_write(timed_write)
    monkeypatch.setattr(writer_mod, "LINGER_S", 0.5)
    w = Writer(out_config(tmp_path, batch_max=writer_mod.LINGER_ITEMS))
    lines = 3 * writer_mod.LINGER_ITEMS + 10  # three whole batches and a bit, queued at once
    for n in range(lines):
        w.offer("BTCUSD", rec("BTCUSD", n))
    await run_writer(w, [])
    assert [r["n"] for r in body(tmp_path / "BTCUSD" / "current.jsonl")] == list(range(lines))
    assert len(written_at) == 5  # the header, then one write per batch
    assert written_at[3] - written_at[1] < 0.4  # two batches later: no 0.5 s linger between
    assert written_at[4] - written_at[3] >= 0.5  # less than a batch was left: it lingered


async def test_stop_fsyncs_and_closes(tmp_path, monkeypatch):
    synced: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr("collector.runtime.writer.os.fsync", fsync)
    w = Writer(out_config(tmp_path))
    await run_writer(w, [("BTCUSD", rec("BTCUSD", 1)), ("ETHUSD", rec("ETHUSD", 1))])
    assert len(synced) >= 2
    assert w.files == {}


async def test_fsync_interval_syncs_dirty_files_off_the_loop(tmp_path, monkeypatch):
    import threading

    calls: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        calls.append(threading.current_thread().name)
        real(fd)

    monkeypatch.setattr("collector.runtime.writer.os.fsync", fsync)
    w = Writer(out_config(tmp_path, fsync="interval", fsync_interval_s=0.05))
    task = asyncio.create_task(w.run())
    for i in range(3):
        await w.put("BTCUSD", rec("BTCUSD", i))
        before = len(calls)
        while len(calls) == before:  # each dirty stretch gets synced within the interval
            await asyncio.sleep(0.01)
    await w.stop()
    await asyncio.wait_for(task, 10)
    assert len(calls) >= 3
    assert all(name.startswith("collector-writer") for name in calls)  # never the loop thread


async def test_retention_deletes_old_closed_segments_at_start(tmp_path):
    import time

    folder = tmp_path / "BTCUSD"
    folder.mkdir()
    old = folder / "BTCUSD.20200101T000000Z.jsonl.zst"
    keep = folder / "BTCUSD.20200102T000000Z.jsonl.zst"
    for path, age_days in ((old, 40), (keep, 2)):
        path.write_bytes(b"x")
        t = time.time() - age_days * 86400
        os.utime(path, (t, t))
    w = Writer(out_config(tmp_path, retain="30d"))
    task = asyncio.create_task(w.run())
    while old.exists():
        await asyncio.sleep(0.01)
    await w.stop()
    await asyncio.wait_for(task, 10)
    assert keep.exists()


async def test_an_idle_stream_is_closed_at_the_period_end_while_others_keep_writing(tmp_path):
    """Time rotation reaches a file nothing writes to: once the period ends it is closed
    as a segment, whether the writer is idle or busy with other streams' batches."""
    w = Writer(out_config(tmp_path, rotate="1s", compress="none"))
    task = asyncio.create_task(w.run())
    await w.put("ETHUSD", rec("ETHUSD", 0))  # then silent
    for i in range(30):  # BTCUSD keeps the writer busy across at least one boundary
        await w.put("BTCUSD", rec("BTCUSD", i))
        await asyncio.sleep(0.1)
    try:
        assert not (tmp_path / "ETHUSD" / "current.jsonl").exists()
        closed = [p for p in (tmp_path / "ETHUSD").iterdir() if p.name.startswith("ETHUSD.")]
        assert len(closed) == 1 and [r["n"] for r in body(closed[0])] == [0]
    finally:
        await w.stop()
        await asyncio.wait_for(task, 10)
