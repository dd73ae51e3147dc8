"""The writer's C appender (collector/runtime/_appender.c), and the writer on it.

Failures here are real ones: /dev/full (ENOSPC), a closed descriptor (EBADF), a pipe
nobody reads (a write that blocks), and a file size limit (RLIMIT_FSIZE: a write cut
short, then EFBIG) in a child process."""

from __future__ import annotations

import errno
import os
import select
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from collector.runtime import writer as writer_mod
from tests.helpers.cores import REQUIRE_NATIVE

pytestmark = pytest.mark.skipif(
    writer_mod.APPENDER is None and not REQUIRE_NATIVE,
    reason="collector.runtime._appender is not built (no C compiler at `pip install`?); "
           "COLLECTOR_REQUIRE_NATIVE=1 makes this a failure")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def serve():
    """Start appenders, each served by a thread of its own as the writer does; at the end
    each is closed and its thread must end."""
    served = []

    def start():
        assert writer_mod.APPENDER is not None, "collector.runtime._appender is not built"
        a = writer_mod.APPENDER()
        thread = threading.Thread(target=a.serve, daemon=True)
        thread.start()
        served.append((a, thread))
        return a, thread

    yield start
    for a, thread in served:
        a.close()
        thread.join(10)
        assert not thread.is_alive()


def results(a, timeout=5.0):
    """The batch's results once its eventfd turns readable."""
    ready, _, _ = select.select([a.fileno()], [], [], timeout)
    assert ready, "no results"
    return a.results()


def test_appends_in_order_and_reports_each_failure_without_stopping_the_rest(tmp_path, serve):
    a, _ = serve()
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    full = os.open("/dev/full", os.O_WRONLY)
    closed = os.open(tmp_path / "g", os.O_WRONLY | os.O_CREAT)
    os.close(closed)
    try:
        a.submit([(fd, b"one\n"), (full, b"lost\n"), (fd, b"two\n"), (closed, b"x"), (fd, b"three\n")])
        got = results(a)
        assert [(n, err) for n, err, _ in got] == [
            (4, 0), (0, errno.ENOSPC), (4, 0), (0, errno.EBADF), (6, 0)]
        assert got[0][2] <= got[2][2] <= got[4][2]  # each append's end, in order
        assert (tmp_path / "f").read_bytes() == b"one\ntwo\nthree\n"
        assert a.results() is None  # handed back once
        a.submit([])
        assert results(a) == []
    finally:
        os.close(fd)
        os.close(full)


def test_one_batch_in_flight_and_serve_ends_after_it(serve):
    a, thread = serve()
    r, w = os.pipe()
    data = b"x" * (4 << 20)  # far more than the pipe holds: the append blocks until read
    try:
        a.submit([(w, data)])
        assert select.select([a.fileno()], [], [], 0.2)[0] == []
        assert a.results() is None
        with pytest.raises(RuntimeError, match="in flight"):
            a.submit([(w, b"more")])
        got = bytearray()
        while len(got) < len(data):
            got += os.read(r, 1 << 20)
        assert [(n, err) for n, err, _ in results(a)] == [(len(data), 0)]
        assert got == data
        a.submit([(w, b"x" * len(data))])  # blocks again ...
        a.close()
        thread.join(0.3)
        assert thread.is_alive()  # ... and serve() waits for it
        got = bytearray()
        while len(got) < len(data):
            got += os.read(r, 1 << 20)
        thread.join(10)
        assert not thread.is_alive()
        a.close()  # again: nothing
        with pytest.raises(ValueError, match="closed"):
            a.submit([])
        with pytest.raises(RuntimeError, match="closed"):
            a.serve()
    finally:
        os.close(r)
        os.close(w)


def test_bad_batches_are_refused_whole(tmp_path, serve):
    a, _ = serve()
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for bad in ([(fd, "text")], [(fd,)], [b"raw"], [("fd", b"x")], 5):
            with pytest.raises(TypeError):
                a.submit(bad)
        a.submit([(fd, b"ok\n")])  # nothing of the refused ones went out
        assert [(n, err) for n, err, _ in results(a)] == [(3, 0)]
        assert (tmp_path / "f").read_bytes() == b"ok\n"
    finally:
        os.close(fd)


# The writer on the appender, with its file size limited mid-run: the append of the line
# that crosses the limit is cut short by the kernel, then fails (EFBIG). The writer must
# cut the torn line back, count it, and mark the loss once the disk takes lines again.
CHILD = textwrap.dedent("""
    import asyncio, os, resource, signal, sys
    from pathlib import Path
    from collector import config
    from collector.runtime import writer

    calls = []
    real = writer._os_write
    writer._os_write = lambda fd, data: calls.append(len(data)) or real(fd, data)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the limit answers EFBIG, not a signal

    def rec(n, pad=0):
        return b'{"type":"x","symbol":"BTCUSD","n":%d,"pad":"%s"}\\n' % (n, b"p" * pad)

    async def main():
        out = config.from_dict({"feed": {"symbols": ["BTCUSD"]},
                                "output": {"dir": sys.argv[1], "batch_max": 1}}).output
        w = writer.Writer(out)
        task = asyncio.create_task(w.run())

        async def until(what):
            for _ in range(1000):
                if what():
                    return
                await asyncio.sleep(0.005)
            raise SystemExit("timed out")

        await w.put("BTCUSD", rec(0))
        await until(lambda: w.lines_written["BTCUSD"] == 1)
        await w.put("BTCUSD", rec(1))  # the file is open now: this one goes to the appender
        await until(lambda: w.lines_written["BTCUSD"] == 2)
        python_writes = len(calls)
        size = os.path.getsize(Path(sys.argv[1]) / "BTCUSD" / "current.jsonl")
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 10, resource.RLIM_INFINITY))
        await w.put("BTCUSD", rec(2, pad=100))
        await until(lambda: w.dropped["BTCUSD"] == 1)
        assert len(calls) == python_writes, "the appends went through the Python thread"
        assert os.path.getsize(Path(sys.argv[1]) / "BTCUSD" / "current.jsonl") == size
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        await w.put("BTCUSD", rec(3))
        await w.stop()
        await asyncio.wait_for(task, 10)
        print("counts", w.write_errors, w.dropped_total)

    asyncio.run(main())
""")


def test_a_torn_append_is_cut_back_counted_and_marked(tmp_path):
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], cwd=ROOT, capture_output=True,
                          timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    assert proc.stdout.splitlines()[-1] == b"counts 1 1"  # one write error, one line lost
    data = (tmp_path / "BTCUSD" / "current.jsonl").read_bytes()
    assert data.endswith(b"\n")
    lines = data.splitlines()[1:]  # after the header
    assert [line[:40] for line in lines[:2]] == [
        b'{"type":"x","symbol":"BTCUSD","n":0,"pad', b'{"type":"x","symbol":"BTCUSD","n":1,"pad']
    assert b'"reason":"dropped"' in lines[2] and b'"dropped":1' in lines[2]
    assert lines[3].startswith(b'{"type":"x","symbol":"BTCUSD","n":3,')
    assert len(lines) == 4


@pytest.mark.parametrize("native", [True, False])
async def test_appends_to_open_files_take_the_c_appender_unless_told_not_to(tmp_path, monkeypatch, native):
    """The header opens the file on the Python thread; later appends to it go to the C
    appender, or with native=False (COLLECTOR_PURE_PYTHON=1) through the Python thread."""
    import asyncio

    from collector import config

    calls = []
    real = writer_mod._os_write

    def counted(fd, data):
        calls.append(fd)
        return real(fd, data)
    monkeypatch.setattr(writer_mod, "_os_write", counted)
    out = config.from_dict({"feed": {"symbols": ["BTCUSD"]},
                            "output": {"dir": str(tmp_path), "batch_max": 1}}).output
    w = writer_mod.Writer(out, native=native)
    task = asyncio.create_task(w.run())
    for n in range(5):
        await w.put("BTCUSD", b'{"n":%d}\n' % n)
        while w.lines_written["BTCUSD"] <= n:
            await asyncio.sleep(0.002)
    await w.stop()
    await asyncio.wait_for(task, 10)
    assert (tmp_path / "BTCUSD" / "current.jsonl").read_bytes().splitlines()[1:] == [
        b'{"n":%d}' % n for n in range(5)]
    # the header and the first line (that batch opens the file) on the Python thread, then
    # the C appender; or every line on the Python thread
    assert len(calls) == (2 if native else 6)
