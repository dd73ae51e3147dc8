"""Hostile clients against the metrics listener.

A crowd of idle clients, a crowd of slowloris clients (a byte a second) and a client
that never reads its response must cost the process neither its file descriptors nor
a record: the listener keeps at most `MAX_CONNECTIONS` open (the oldest one still
waiting for its request makes room for a new one), cuts a request not sent within
`REQUEST_TIMEOUT_S` and a response not taken within it, and a scrape still answers.
The crowd tests run the real `collector run` process against the simulator, with a
low file-descriptor limit and a segment a second to open, and count its descriptors
in /proc; the last one runs MetricsServer in-process with a stand-in app whose
/metrics is several MB, and watches the server's socket in /proc/net/tcp.
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from collector import config
from collector.core.histogram import Histogram
from collector.ops.metrics import MAX_CONNECTIONS, REQUEST_TIMEOUT_S, MetricsServer
from collector.ops.monitor import Monitor
from collector.runtime.feed import FeedState, FeedStats
from collector.runtime.writer import Writer
from collector.sim import SimExchange
from collector.tools.reading import read
from tests.helpers.app import write_config

NOFILE = 160  # the process's descriptor limit: a few dozen in use, room for the bound
CROWD = 300  # more than NOFILE: without a bound the crowd takes every descriptor
SLACK = 10  # descriptors that come and go on their own (segments, a reconnect)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), f"no HTTP response to GET {path}: {data[:100]!r}"
    return int(head.split()[1]), body


async def status_of(port: int, path: str, timeout: float) -> int | str:
    """The status of GET `path`, or what went wrong (to assert on after other checks)."""
    try:
        return (await http_get(port, path, timeout))[0]
    except (OSError, TimeoutError, AssertionError) as exc:
        return f"{type(exc).__name__}: {exc}"


def metric(body: bytes, name: str) -> float:
    m = re.search(rb"^" + re.escape(name.encode()) + rb" (\S+)$", body, re.M)
    assert m, name
    return float(m.group(1))


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Running:
    proc: asyncio.subprocess.Process
    port: int
    out: Path
    log: Path  # its stderr: JSON log lines


@pytest.fixture
async def collector_run(tmp_path: Path) -> AsyncIterator[Running]:
    """`collector run` against the simulator: metrics on, a segment a second, NOFILE fds."""
    async with SimExchange(["BTCUSD"], seed=3, rate=200.0, heartbeat_s=0.05, depth=20) as sim:
        cfg, out, port = tmp_path / "config.toml", tmp_path / "data", free_port()
        write_config(cfg, sim.ws_url, out, ["BTCUSD"])
        cfg.write_text(cfg.read_text() + f'rotate = "1s"\n[metrics]\nlisten = "127.0.0.1:{port}"\n')

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))

        with open(tmp_path / "stderr.log", "wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "collector", "run", "--config", str(cfg),
                stderr=err, preexec_fn=limit)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if (await http_get(port, "/healthz", 2.0))[0] == 200:
                        break
                except (OSError, TimeoutError):
                    pass
                assert time.monotonic() < deadline, "the collector never became healthy"
                await asyncio.sleep(0.1)
            yield Running(proc, port, out, tmp_path / "stderr.log")
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 15) == 0


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def open_crowd(port: int, n: int) -> list[Conn]:
    async def one() -> Conn | None:
        try:
            return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 3)
        except (OSError, TimeoutError):
            return None  # reset as it came (no room), or the backlog is full

    conns = await asyncio.gather(*(one() for _ in range(n)))
    return [c for c in conns if c is not None]


async def closed_by_server(conn: Conn, timeout: float) -> float | None:
    """Seconds until the server closed `conn` (EOF or reset), None if not within `timeout`."""
    t0 = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            while await conn[0].read(65536):
                pass
    except TimeoutError:
        return None
    except OSError:
        pass  # a reset: closed too
    return time.monotonic() - t0


async def watch_fds(pid: int, seconds: float) -> int:
    """The most descriptors the process held, sampled every 20 ms for `seconds`."""
    most = 0
    for _ in range(int(seconds / 0.02)):
        most = max(most, fds(pid))
        await asyncio.sleep(0.02)
    return most


async def no_records_lost(run: Running) -> None:
    """Every segment opened, nothing dropped, still live: the crowd cost no record."""
    await asyncio.sleep(2.5)  # two more rotations: two more files to open
    status, body = await http_get(run.port, "/metrics")
    assert status == 200
    assert metric(body, "collector_write_errors_total") == 0
    assert metric(body, "collector_dropped_lines_total") == 0
    assert metric(body, 'collector_stream_live{symbol="BTCUSD"}') == 1
    run.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(run.proc.wait(), 15) == 0
    dropped = [r for r in read(run.out) if r.get("reason") == "dropped"]
    assert dropped == []
    errors = [line for line in run.log.read_text().splitlines() if '"level":"error"' in line]
    assert errors == []  # no write failure, no exception in the listener


async def test_a_crowd_of_idle_clients_is_bounded_and_timed_out(collector_run: Running) -> None:
    run = collector_run
    pid = run.proc.pid
    base = fds(pid)
    crowd = await open_crowd(run.port, CROWD)
    watcher = asyncio.create_task(watch_fds(pid, 1.0))
    status = await status_of(run.port, "/metrics", 3.0)  # a scrape gets in while they wait
    most = await watcher
    assert most <= base + MAX_CONNECTIONS + SLACK, (base, most)
    assert status == 200
    # every idle one is closed by the server, at the latest REQUEST_TIMEOUT_S after it came
    waits = await asyncio.gather(*(closed_by_server(c, REQUEST_TIMEOUT_S + 2) for c in crowd))
    assert crowd and None not in waits, (len(crowd), waits.count(None))
    assert fds(pid) <= base + SLACK
    for _, w in crowd:
        w.close()
    await no_records_lost(run)


async def test_slowloris_clients_are_bounded_and_cut(collector_run: Running) -> None:
    """A byte a second each: cut at REQUEST_TIMEOUT_S (the whole request head, not per byte)."""
    run = collector_run
    pid = run.proc.pid
    base = fds(pid)
    crowd = await open_crowd(run.port, 2 * MAX_CONNECTIONS)
    assert crowd  # (the others were reset as they came)
    t0 = time.monotonic()

    async def trickle(conn: Conn) -> float | None:
        reader, writer = conn
        for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n":
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except OSError:
                break
            if reader.at_eof() or time.monotonic() - t0 > REQUEST_TIMEOUT_S + 3:
                break
            await asyncio.sleep(1.0)
        return await closed_by_server(conn, max(0.0, REQUEST_TIMEOUT_S + 3 - (time.monotonic() - t0)))

    tasks = [asyncio.create_task(trickle(c)) for c in crowd]
    most = await watch_fds(pid, 2.0)
    status = await status_of(run.port, "/healthz", 3.0)
    ended = await asyncio.gather(*tasks)
    assert most <= base + MAX_CONNECTIONS + SLACK, (base, most)
    assert status == 200
    assert None not in ended, ended.count(None)
    assert time.monotonic() - t0 <= REQUEST_TIMEOUT_S + 3.5
    assert fds(pid) <= base + SLACK
    for _, w in crowd:
        w.close()
    await no_records_lost(run)


# ---- a client that never reads its response ------------------------------------------------

def big_app(tmp_path: Path, symbols: int = 4000) -> SimpleNamespace:
    """A stand-in App whose /metrics is about 6 MB (more than the socket buffers hold)."""
    names = [f"S{i:04d}USD" for i in range(symbols)]
    cfg = config.from_dict({"feed": {"symbols": names[:1]}, "output": {"dir": str(tmp_path)}})
    feeds = {}
    for name in names:
        stats = FeedStats(state=FeedState.LIVE, last_frame=time.monotonic())
        stats.latency = Histogram()
        feeds[name] = SimpleNamespace(stats=stats, _levels=lambda: {"bids": 1, "asks": 1})
    return SimpleNamespace(cfg=cfg, feeds=feeds, writer=Writer(cfg.output))


def held_socket(local_port: int, remote_port: int) -> str | None:
    """The kernel's state of the 127.0.0.1 socket local_port -> remote_port ("01"
    established) while a process holds it; None once it is gone or orphaned (inode 0)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
        if int(local.split(":")[1], 16) == local_port and int(remote.split(":")[1], 16) == remote_port:
            return None if inode == "0" else state
    return None


async def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_a_client_that_never_reads_is_dropped(tmp_path: Path) -> None:
    app = big_app(tmp_path)
    server = MetricsServer(app, Monitor(app))
    await server.start("127.0.0.1", 0)
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
        sock.settimeout(5)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        mine = sock.getsockname()[1]
        # the server's side of it, once accepted (in the accept queue it has no inode yet)
        assert await wait_for(lambda: held_socket(server.port, mine) == "01", 5)
        # read phase + render + REQUEST_TIMEOUT_S to take the response, then it must go
        gone = await wait_for(lambda: held_socket(server.port, mine) is None,
                              2 * REQUEST_TIMEOUT_S + 5)
        assert gone, f"the server still holds the connection: {held_socket(server.port, mine)}"
        ok, body = await http_get(server.port, "/healthz", 10.0)
        assert ok == 200 and body.startswith(b'{"status":"ok"')
    finally:
        sock.close()
        await server.close()
