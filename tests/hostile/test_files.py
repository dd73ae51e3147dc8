"""A hostile file system and operator mistakes in the output tree (issue 14): reloads never
mislabel a segment, nothing outside output.dir is written, truncated, deleted or read into
the data, a corrupt leftover never stops the start, segment files share one mode.

The real Writer over real files in tmp_path (failures injected only through `os.fsync`),
and the real `collector run` process where the promise is about its exit status.
Symlinks point at a sentinel outside `tmp_path/out`, which must stay byte for byte as it was.
"""

from __future__ import annotations

import asyncio
import errno
import io
import os
import signal
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from collector import config
from collector.core import format
from collector.core.format import Reason, iso_time
from collector.ops.heartbeat import HEALTH_FILE, read_heartbeat, write_heartbeat
from collector.runtime.writer import Writer
from collector.tools.decoding import open_binary
from collector.tools.listing import list_segments
from collector.tools.verify import verify
from tests.helpers.app import Logs, write_config
from tests.helpers.e2e import wait_until
from tests.helpers.simulator import MakeSim

SENTINEL = b"precious data outside output.dir\nwithout a newline at its end"


def out_config(out: Path, **output: Any) -> config.OutputConfig:
    return config.from_dict({"feed": {"symbols": ["BTCUSD"]},
                             "output": {"dir": str(out), **output}}).output


def rec(symbol: str, n: int) -> bytes:
    return format.resync(symbol, Reason.START, time.time_ns(), n=n)


def header(**fields: Any) -> bytes:
    start = fields.get("segment_start_s", 3600)
    head = {"type": "header", "schema": 1, "stream": "records", "symbol": "BTCUSD",
            "segment_start": iso_time(start) if 0 <= start < 2**34 else "9999-12-31T00:00:00Z",
            "segment_start_s": start, "collector_version": "0", "config": {}}
    return orjson.dumps({**head, **fields}) + b"\n"


class Sentinel:
    """A file outside the output tree; `intact()` says it was neither written nor truncated."""

    def __init__(self, path: Path) -> None:
        path.write_bytes(SENTINEL)
        self.path = path
        self.stat = path.stat()

    def intact(self) -> bool:
        st = self.path.stat()
        return self.path.read_bytes() == SENTINEL and st.st_mtime_ns == self.stat.st_mtime_ns


async def start(w: Writer) -> asyncio.Task[None]:
    """Run the writer until its start-up is done (a writer that dies in it fails the test)."""
    task = asyncio.create_task(w.run())
    ready = asyncio.create_task(w.started.wait())
    await asyncio.wait([task, ready], timeout=10, return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    if task.done():
        raise AssertionError(f"the writer died at start-up: {task.exception()!r}")
    assert w.started.is_set()
    return task


async def finish(w: Writer, task: asyncio.Task[None]) -> None:
    await w.stop()
    await asyncio.wait_for(task, 10)


async def next_second() -> None:
    await asyncio.sleep(1 - time.time() % 1 + 0.03)


def files_under(root: Path) -> Iterator[Path]:
    """The regular files under `root` (symlinks neither listed nor followed)."""
    for dirpath, _, names in os.walk(root):
        for name in names:
            if Path(dirpath, name).is_file() and not Path(dirpath, name).is_symlink():
                yield Path(dirpath, name)


def clean_verify(out: Path) -> int:
    """`collector verify` over `out` finds nothing; every closed segment's header names the
    period in its file name. Returns the number of records (lines) checked."""
    buf = io.StringIO()
    tally = verify([out], buf)
    assert tally.problems == 0, buf.getvalue()
    for path in files_under(out):
        name = format.SegmentName.parse(path.name)
        if name is not None:
            with open_binary(path) as f:
                head = orjson.loads(f.readline())
            assert head["segment_start_s"] == name.start_s, path
    return tally.lines


def numbers(out: Path, symbol: str) -> list[int]:
    """The `n` of every test record of `symbol`, in read order."""
    found = []
    for seg in list_segments(out / symbol):
        path = next(p for p in seg.paths if p.exists() or p.is_symlink())
        if not path.is_symlink():  # the readers' concern, not the writer's
            with open_binary(path) as f:
                found += [r["n"] for r in map(orjson.loads, f) if "n" in r]
    return found


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# ---- a reload never mislabels a segment ------------------------------------------------

async def test_reloads_rotations_and_quiet_symbols_never_mislabel_a_segment(tmp_path):
    """After a reopen (SIGHUP), a symbol quiet until a later period used to append to the
    `current.jsonl` whose header named the earlier one, and rotation then named it for the
    later period: `collector verify` failed ("header segment_start ... differs from the
    start time in the file name")."""
    out = tmp_path / "out"
    w = Writer(out_config(out, rotate="1s", compress="none"))
    task = await start(w)
    sent = {"BTCUSD": 0, "ETHUSD": 0}
    await next_second()
    # "both": both symbols write, "BTCUSD": ETHUSD stays quiet; bounded: 4 period changes
    script = ["both", "reopen", "next", "BTCUSD", "next", "reopen", "both", "BTCUSD",
              "next", "next", "reopen", "both", "reopen", "BTCUSD"]
    for step in script:
        if step == "next":
            await next_second()
        elif step == "reopen":
            await w.reopen()
        else:
            for sym in ["BTCUSD", "ETHUSD"] if step == "both" else [step]:
                await w.put(sym, rec(sym, sent[sym]))
                sent[sym] += 1
            await asyncio.sleep(0.05)
    await finish(w, task)
    assert len(list(files_under(out))) >= 5  # closed segments of both symbols and two currents
    clean_verify(out)
    for sym, count in sent.items():
        assert numbers(out, sym) == list(range(count))


async def test_a_directory_fsync_failing_as_a_segment_opens_leaks_nothing_and_misnames_nothing(
        tmp_path, monkeypatch):
    """The directory fsync after a new segment's header failed: the open was abandoned with
    its descriptor still open (one leaked per failure), the batch's lines were dropped
    though the header stood, and the next period's writes went into that file under the
    wrong name."""
    real = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EIO, "Input/output error (injected)")
        real(fd)

    out = tmp_path / "out"
    w = Writer(out_config(out, rotate="1s", compress="none"))
    task = await start(w)
    monkeypatch.setattr("collector.runtime.segments.os.fsync", fsync)  # os.fsync, wherever called
    before = open_fds()
    await next_second()
    for n in range(4):  # four periods, a new segment (and a failing fsync) in each
        await w.put("BTCUSD", rec("BTCUSD", n))
        await asyncio.sleep(0.1)
        await next_second()
    await w.reopen()
    leaked = open_fds() - before
    monkeypatch.undo()
    await finish(w, task)
    assert leaked == 0
    assert w.fsync_errors >= 4 and w.dropped_total == 0
    clean_verify(out)
    assert numbers(out, "BTCUSD") == [0, 1, 2, 3]


async def test_an_operator_removing_current_jsonl_costs_neither_the_writer_nor_later_lines(tmp_path):
    """Time rotation renamed a `current.jsonl` that was no longer there: the error ended the
    writer task, and with it the process (exit 1)."""
    out = tmp_path / "out"
    w = Writer(out_config(out, rotate="1s", compress="none"))
    task = await start(w)
    await next_second()
    await w.put("BTCUSD", rec("BTCUSD", 0))
    await wait_until(lambda: w.lines_written["BTCUSD"] == 1)
    (out / "BTCUSD" / "current.jsonl").unlink()
    await next_second()  # the idle stream's time rotation
    await asyncio.sleep(0.2)
    assert not task.done(), task.exception()
    await w.put("BTCUSD", rec("BTCUSD", 1))
    await finish(w, task)
    assert w.dropped_total == 0
    clean_verify(out)
    assert numbers(out, "BTCUSD") == [1]


# ---- nothing outside output.dir ------------------------------------------------------------

def plant(out: Path, outside: Path, sentinel: Sentinel, where: str) -> Path:
    """A symlink out of the tree where the collector keeps `where`; returns the link."""
    link = out / where
    link.parent.mkdir(parents=True, exist_ok=True)
    target = outside if where in ("BTCUSD", "BTCUSD/raw") else sentinel.path
    link.symlink_to(target)
    return link


@pytest.mark.parametrize("where", [
    ".collector.lock", ".collector.health", ".collector.health.tmp", "BTCUSD",
    "BTCUSD/raw", "BTCUSD/current.jsonl", "BTCUSD/raw/current.jsonl",
    "BTCUSD/BTCUSD.20250101T000000Z.jsonl", "BTCUSD/BTCUSD.20250101T000000Z.jsonl.zst.tmp",
])
async def test_start_refuses_a_symlink_in_the_output_tree_with_exit_78(tmp_path, where):
    """`collector run` followed each of these: it truncated the sentinel and wrote its pid
    there (the lock), wrote records outside (a symbol's folder or raw/), truncated the
    sentinel's torn last line and renamed the link as a closed segment (current.jsonl), or
    compressed the sentinel into the data (a segment)."""
    out, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    sentinel = Sentinel(tmp_path / "sentinel")
    link = plant(out, outside, sentinel, where)
    cfg = tmp_path / "config.toml"
    write_config(cfg, "ws://127.0.0.1:9", out, ["BTCUSD"])
    with open(cfg, "a") as f:
        f.write('raw = true\ncompress = "zstd"\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collector", "run", "--config", str(cfg),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    try:  # refused at once, or still running (and following the link) 10 s later
        await asyncio.wait_for(proc.wait(), 10)
    except TimeoutError:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 10)
    text = (await proc.stderr.read()).decode()
    assert sentinel.intact() and os.listdir(outside) == []
    assert link.is_symlink()
    assert proc.returncode == config.EX_CONFIG, text
    assert str(link) in text and "symbolic link" in text and "Traceback" not in text
    for path in files_under(out):
        assert SENTINEL[:20] not in path.read_bytes()


@pytest.mark.parametrize("where", ["BTCUSD", "BTCUSD/raw", "BTCUSD/current.jsonl",
                                   "BTCUSD/raw/current.jsonl", "fifo"])
async def test_a_symlink_planted_while_running_is_refused_counted_and_marked(tmp_path, where):
    """Planted while the collector runs (here before a reopen, as SIGHUP does): the writer
    followed it, appending records outside the tree (or into a FIFO, where they vanish)."""
    out, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    sentinel = Sentinel(tmp_path / "sentinel")
    w = Writer(out_config(out, compress="none"))
    task = await start(w)
    keys = ("BTCUSD", "BTCUSD/raw")
    for key in keys:
        await w.put(key, rec("BTCUSD", 0))
    await wait_until(lambda: all(w.lines_written[k] == 1 for k in keys))
    await w.reopen()
    moved = tmp_path / "moved"  # the operator moves the real folder or file away...
    real = out / ("BTCUSD/current.jsonl" if where == "fifo" else where)
    real.rename(moved)
    if where == "fifo":  # ... and leaves a FIFO in its place
        os.mkfifo(real)
    else:  # ... and leaves a symlink out of the tree
        plant(out, outside, sentinel, where)
    with capture_logs() as logs:
        for n in (1, 2, 3):
            for key in keys:
                await w.put(key, rec("BTCUSD", n))
        await wait_until(lambda: w.dropped_total + sum(w.lines_written.values()) == 8,
                         what="three lines per stream written or refused")
    assert sentinel.intact() and os.listdir(outside) == []
    assert w.dropped_total >= 3
    refused = [r for r in logs if r["event"] == "write failed, dropping lines"]
    assert refused and str(real) in refused[0]["error"]
    real.unlink()  # the operator repairs it: writing resumes, the loss marked
    moved.rename(real)
    for key in keys:
        await w.put(key, rec("BTCUSD", 4))
    await finish(w, task)
    assert sentinel.intact() and os.listdir(outside) == []
    clean_verify(out)
    hit = [k for k in keys if (out / k / "current.jsonl").is_relative_to(real)
           or (where == "fifo" and k == "BTCUSD")]
    for key in keys:
        recs = [orjson.loads(line) for seg in list_segments(out / key)
                for line in open_binary(seg.paths[0])]
        marks = [r["dropped"] for r in recs if r.get("reason") == "dropped"]
        assert marks == ([3] if key in hit else []), key
        assert [r["n"] for r in recs if "n" in r] == ([0, 4] if key in hit else [0, 1, 2, 3, 4])
    assert w.dropped_total == 3 * len(hit)


async def test_start_up_tidying_never_follows_a_symlink(tmp_path):
    """At start the writer compressed every segment it found and removed stale .tmp files:
    through a symlinked symbol folder it compressed, and deleted, files outside the tree,
    and a segment-named symlink got the sentinel compressed into the data."""
    out, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    old = time.time() - 40 * 86400
    for name in ("ETHUSD.20200101T000000Z.jsonl", "ETHUSD.20200101T000000Z.jsonl.zst.tmp"):
        (outside / name).write_bytes(SENTINEL)
        os.utime(outside / name, (old, old))
    before = {p.name: p.read_bytes() for p in outside.iterdir()}
    (out / "BTCUSD").mkdir(parents=True)
    (out / "ETHUSD").symlink_to(outside)
    sentinel = Sentinel(tmp_path / "sentinel")
    os.utime(sentinel.path, (old, old))
    sentinel.stat = sentinel.path.stat()
    (out / "BTCUSD" / "BTCUSD.20200101T000000Z.jsonl").symlink_to(sentinel.path)
    # a real segment whose "compressed twin" is a symlink: it was deleted as if compressed
    plain = out / "BTCUSD" / "BTCUSD.20200102T000000Z.jsonl"
    plain.write_bytes(header(segment_start_s=1577923200) + rec("BTCUSD", 7))
    (out / "BTCUSD" / (plain.name + ".zst")).symlink_to(sentinel.path)
    w = Writer(out_config(out, compress="zstd", retain="30d"))
    task = await start(w)
    await w.put("BTCUSD", rec("BTCUSD", 0))
    await asyncio.sleep(0.5)  # compression and retention run in the background
    await finish(w, task)
    assert {p.name: p.read_bytes() for p in outside.iterdir()} == before
    assert sentinel.intact()
    assert 7 in numbers(out, "BTCUSD")  # compressed in the symlink's place, not lost
    for path in files_under(out):
        with open_binary(path) as f:
            assert SENTINEL[:20] not in f.read(), path


def test_the_heartbeat_never_writes_through_a_symlink(tmp_path):
    """The heartbeat's temp file was opened by name, following a symlink there: the
    sentinel was truncated and overwritten with the heartbeat."""
    sentinel = Sentinel(tmp_path / "sentinel")
    out = tmp_path / "out"
    out.mkdir()
    (out / (HEALTH_FILE + ".tmp")).symlink_to(sentinel.path)
    write_heartbeat(out / HEALTH_FILE, [], time.time())
    assert sentinel.intact()
    assert not (out / HEALTH_FILE).is_symlink()
    assert orjson.loads((out / HEALTH_FILE).read_bytes())["healthy"] is True
    (out / HEALTH_FILE).unlink()
    (out / HEALTH_FILE).symlink_to(sentinel.path)  # the file itself: replaced, not followed
    write_heartbeat(out / HEALTH_FILE, [], time.time())
    assert sentinel.intact() and not (out / HEALTH_FILE).is_symlink()


def test_collector_health_never_reads_a_symlinked_heartbeat(tmp_path):
    """`collector health` read whatever the heartbeat symlink pointed at as the verdict."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_heartbeat(elsewhere / HEALTH_FILE, [], time.time())  # a healthy verdict, not ours
    out = tmp_path / "out"
    out.mkdir()
    (out / HEALTH_FILE).symlink_to(elsewhere / HEALTH_FILE)
    healthy, text = read_heartbeat(out / HEALTH_FILE, time.time())
    assert not healthy and "unreadable" in text


# ---- a corrupt leftover never stops the start ------------------------------------------------

LEFTOVERS = {
    "binary": b"\x00\xff\xfe garbage \x00\n" + rec("BTCUSD", 99),
    "array": b"[1, 2]\n" + rec("BTCUSD", 99),
    "torn only": b'{"type":"header","sch',
    "a book first": b'{"type":"book","symbol":"BTCUSD","seq":1,"recv_ns":1}\n',
    "far future": header(segment_start_s=10**12) + rec("BTCUSD", 99),
    "negative": header(segment_start_s=-3600) + rec("BTCUSD", 99),
    "not aligned": header(segment_start_s=3601) + rec("BTCUSD", 99),
    "wrong symbol": header(symbol="ETHUSD") + rec("BTCUSD", 99),
    "schema 2": header(schema=2) + rec("BTCUSD", 99),
    "float start": header(segment_start_s=3600.5) + rec("BTCUSD", 99),
}


@pytest.mark.parametrize("case", sorted(LEFTOVERS))
async def test_a_corrupt_leftover_is_set_aside_and_the_start_goes_on(tmp_path, case):
    """Such a leftover was closed as a segment that `collector verify` rejects, under a
    name from its mtime or from the impossible start (a far-future one killed the writer:
    "year 33658 is out of range")."""
    out = tmp_path / "out"
    folder = out / "BTCUSD"
    folder.mkdir(parents=True)
    (folder / "current.jsonl").write_bytes(LEFTOVERS[case])
    w = Writer(out_config(out, compress="none"))
    with capture_logs() as logs:
        task = await start(w)
    await w.put("BTCUSD", rec("BTCUSD", 0))
    await finish(w, task)
    aside = [p for p in folder.iterdir() if p.name.startswith("current.jsonl.corrupt-")]
    assert len(aside) == 1 and aside[0].read_bytes() == LEFTOVERS[case]
    assert any(r["event"] == "set aside a corrupt current.jsonl" and r["path"] == str(aside[0])
               for r in logs)
    assert sorted(p.name for p in folder.iterdir()) == ["current.jsonl", aside[0].name]
    clean_verify(out)  # the set-aside file is no record file to verify, cat or read
    assert numbers(out, "BTCUSD") == [0]


async def test_collector_run_starts_past_a_far_future_leftover(tmp_path, make_sim: MakeSim):
    """The real process: the writer died at start-up and `collector run` exited 1, again
    at every restart."""
    sim = await make_sim(rate=200.0, heartbeat_s=0.05)
    out = tmp_path / "out"
    (out / "BTCUSD").mkdir(parents=True)
    leftover = header(segment_start_s=10**12) + rec("BTCUSD", 99)
    (out / "BTCUSD" / "current.jsonl").write_bytes(leftover)
    cfg = tmp_path / "config.toml"
    write_config(cfg, sim.ws_url, out, ["BTCUSD"])
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collector", "run", "--config", str(cfg),
        stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    logs = Logs(proc.stderr)
    current = out / "BTCUSD" / "current.jsonl"
    try:
        await wait_until(lambda: proc.returncode is not None or (
            current.exists() and current.read_bytes().count(b'"type":"book"') >= 20), what="books")
        assert proc.returncode is None, [r["event"] for r in logs.lines]
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    await asyncio.wait_for(logs.task, 5)
    aside = [p for p in (out / "BTCUSD").iterdir() if p.name.startswith("current.jsonl.corrupt-")]
    assert len(aside) == 1 and aside[0].read_bytes() == leftover
    assert logs.has("set aside a corrupt current.jsonl")
    clean_verify(out)


# ---- permissions ----------------------------------------------------------------------------

@pytest.fixture
def group_writable_umask() -> Iterator[int]:
    old = os.umask(0o002)
    try:
        yield 0o002
    finally:
        os.umask(old)


@pytest.mark.parametrize("compress", ["zstd", "gzip"])
async def test_closed_and_compressed_segments_get_the_mode_of_current_jsonl(
        tmp_path, compress, group_writable_umask):
    """Compressed segments were created by open(..., "wb"): 0o666 & ~umask, wider than
    current.jsonl's 0o644 & ~umask (0o664 against 0o644 under umask 002)."""
    out = tmp_path / "out"
    w = Writer(out_config(out, rotate="1s", compress=compress))
    task = await start(w)
    await next_second()
    await w.put("BTCUSD", rec("BTCUSD", 0))
    await next_second()
    await w.put("BTCUSD", rec("BTCUSD", 1))
    suffix = format.COMPRESSED[compress]
    await wait_until(lambda: any(p.name.endswith(suffix) for p in (out / "BTCUSD").iterdir()),
                     what="a compressed segment")
    await finish(w, task)
    want = 0o644 & ~group_writable_umask
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (out / "BTCUSD").iterdir()}
    assert modes and all(mode == want for mode in modes.values()), {k: oct(v) for k, v in modes.items()}
