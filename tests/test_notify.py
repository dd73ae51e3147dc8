"""systemd's notify protocol and the process watchdog, through real datagram sockets.

The first tests drive `Notifier` and `Monitor` directly (a real Writer, feeds' real
FeedStats); the last runs the real `collector run` process, which needs the
Monitor wired into collector/app.py and skips until it is.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

import collector.app
from collector import config
from collector import writer as writer_mod
from collector.feed import FeedState, FeedStats
from collector.health import WriterProgress, check, writer_done
from collector.monitor import EX_SOFTWARE, Monitor, ProcessWatchdog
from collector.notify import Notifier, socket_address, watchdog_interval
from collector.writer import Writer

INTEGRATED = hasattr(collector.app, "Monitor")


class NotifySocket:
    """Stands in for systemd: a bound AF_UNIX datagram socket collecting messages."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def close(self) -> None:
        self.sock.close()

    async def wait_for(self, predicate: Callable[[list[str]], bool], timeout: float = 10.0,
                       what: str = "") -> list[str]:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                while not predicate(self.messages):
                    try:  # re-check now and then: some predicates watch more than messages
                        data = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), 0.05)
                    except TimeoutError:
                        continue
                    self.messages.append(data.decode())
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what or predicate}; got {self.messages}") from None
        return self.messages

    def count(self, text: str, after: int = 0) -> int:
        return sum(1 for m in self.messages[after:] if text in m.split("\n"))


def index_of(messages: list[str], text: str) -> int:
    return next(i for i, m in enumerate(messages) if text in m.split("\n"))


# ---- the protocol --------------------------------------------------------------------------

def test_path_socket_round_trip(tmp_path):
    path = str(tmp_path / "notify")
    listener = NotifySocket(path)
    listener.sock.setblocking(True)
    listener.sock.settimeout(5)
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    assert n.enabled
    started = time.perf_counter()
    assert n.send("READY=1", "STATUS=2/2 feeds live")
    assert listener.sock.recv(4096) == b"READY=1\nSTATUS=2/2 feeds live"
    took = time.perf_counter() - started
    print(f"notify round trip (send + recv, path socket): {took * 1e6:.0f} us")
    n.close()
    listener.close()


def test_abstract_socket_round_trip():
    name = f"collector-test-{uuid.uuid4().hex}"
    listener = NotifySocket("\0" + name)
    listener.sock.settimeout(5)
    listener.sock.setblocking(True)
    n = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
    assert n.address == "\0" + name
    assert n.send("WATCHDOG=1")
    assert listener.sock.recv(4096) == b"WATCHDOG=1"
    n.close()
    listener.close()


def test_without_notify_socket_every_send_is_a_noop():
    n = Notifier.from_env({})
    assert not n.enabled and not n.send("READY=1") and n.sent == 0


def test_unusable_socket_is_reported_not_raised(tmp_path):
    n = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert not n.send("READY=1") and not n.send("WATCHDOG=1")
    assert Notifier.from_env({"NOTIFY_SOCKET": "relative/path"}).address is None
    assert socket_address("vsock:2:1234") is None and socket_address("@") is None


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
])
def test_watchdog_interval_is_half_of_watchdog_usec(env, expected):
    assert watchdog_interval(env, pid=4242) == expected


# ---- the pure health check -----------------------------------------------------------------

def feed(live: bool = True, last_frame: float = 100.0, **resyncs: int) -> SimpleNamespace:
    st = FeedStats(state=FeedState.LIVE if live else FeedState.WAITING, last_frame=last_frame)
    st.resyncs.update(resyncs)
    return SimpleNamespace(stats=st)


def test_check_names_each_problem():
    feeds = {"BTCUSD": feed(), "ETHUSD": feed(live=False, stale=2), "SOLUSD": feed(last_frame=60.0),
             "XRPUSD": feed(live=False, last_frame=0.0)}
    problems = check(feeds, stale_after_s=15, queued=0, writer_stalled_s=0, now=101.0, since=91.0)
    assert [(p.kind, p.symbol) for p in problems] == [
        ("stream_down", "ETHUSD"), ("stream_quiet", "SOLUSD"), ("stream_down", "XRPUSD")]
    assert "stale x2" in problems[0].detail and "last frame 1.0 s ago" in problems[0].detail
    assert "limit 30 s" in problems[1].detail
    assert "connecting" in problems[2].detail and "no frame in 10.0 s" in problems[2].detail
    assert not any(p.fatal for p in problems)  # an exchange outage must not restart us


def test_silence_is_no_problem_without_heartbeats():
    # the current API: a quiet book may say nothing for minutes; keepalive proves the socket
    feeds = {"BTCUSD": feed(last_frame=10.0), "ETHUSD": feed(live=False, last_frame=10.0)}
    problems = check(feeds, stale_after_s=15, queued=0, writer_stalled_s=0, now=1000.0,
                     heartbeats=False)
    assert [(p.kind, p.symbol) for p in problems] == [("stream_down", "ETHUSD")]
    assert [p.kind for p in check(feeds, 15, 0, 0, now=1000.0)] == ["stream_quiet", "stream_down"]


def test_idle_writer_is_not_stuck_and_a_holding_one_is():
    assert check({}, 15, queued=0, writer_stalled_s=0, now=1000.0) == []
    assert check({}, 15, queued=5, writer_stalled_s=29.0, now=1000.0, writer_stuck_s=30) == []
    [p] = check({}, 15, queued=5, writer_stalled_s=31.0, now=1000.0, writer_stuck_s=30)
    assert p.kind == "writer_stuck" and p.fatal and "5 records queued" in p.detail


def test_writer_progress_times_a_stall_from_the_last_good_sample():
    p = WriterProgress(now=0.0)
    assert p.sample(queued=0, done=0, now=1.0) == 0  # idle for ever: never stalled
    assert p.sample(queued=0, done=0, now=500.0) == 0
    assert p.sample(queued=3, done=0, now=501.0) == 1.0  # records arrived; none done since
    assert p.sample(queued=9, done=0, now=510.0) == 10.0
    assert p.sample(queued=9, done=4, now=511.0) == 0  # progress, though still busy
    assert p.sample(queued=9, done=4, now=512.0) == 1.0


# ---- Monitor: READY, WATCHDOG, STOPPING through a real socket, a real Writer -------------------

def make_app(tmp_path: Path, feeds: dict[str, SimpleNamespace] | None = None) -> SimpleNamespace:
    cfg = config.from_dict({"feed": {"symbols": ["BTCUSD"], "stale_after_s": 1.0},
                            "output": {"dir": str(tmp_path / "data")}})
    cfg.output.dir.mkdir(exist_ok=True)
    return SimpleNamespace(cfg=cfg, feeds=feeds if feeds is not None else {}, writer=Writer(cfg.output))


async def test_ready_watchdog_while_healthy_none_while_writer_stuck_stopping(tmp_path, monkeypatch):
    gate, entered = threading.Event(), threading.Event()
    gate.set()

    def gated_write(fd: int, data: bytes) -> int:
        entered.set()
        assert gate.wait(30)
        return os.write(fd, data)

    monkeypatch.setattr(writer_mod, "_os_write", gated_write)
    listener = NotifySocket(str(tmp_path / "notify"))
    app = make_app(tmp_path)
    writer_task = asyncio.create_task(app.writer.run())
    monitor = Monitor(app, writer_stuck_s=0.3, exit_after_s=60, environ={
        "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "200000"})
    assert monitor.watchdog_s == 0.1
    await monitor.start()
    try:
        await listener.wait_for(lambda m: len(m) > 0, what="READY")
        assert listener.messages[0].split("\n")[0] == "READY=1"
        await listener.wait_for(lambda m: listener.count("WATCHDOG=1") >= 3, what="WATCHDOG=1 x3")

        gate.clear()  # the writer thread now blocks in os.write with records in hand ...
        await app.writer.put("BTCUSD", b'{"type":"resync"}\n')
        await asyncio.to_thread(entered.wait, 5)
        await app.writer.put("BTCUSD", b'{"type":"resync"}\n')  # ... and more queued behind
        await listener.wait_for(lambda m: any("WRITER STUCK" in x for x in m), what="stuck STATUS")
        stuck_at = next(i for i, m in enumerate(listener.messages) if "WRITER STUCK" in m)
        ticks = monitor.ticks
        await listener.wait_for(lambda m: monitor.ticks >= ticks + 6, timeout=5, what="six more ticks")
        assert listener.count("WATCHDOG=1", after=stuck_at) == 0, listener.messages[stuck_at:]
        assert [p.kind for p in monitor.problems()] == ["writer_stuck"]

        gate.set()  # unstuck: the watchdog resumes
        await listener.wait_for(lambda m: listener.count("WATCHDOG=1", after=stuck_at) >= 2,
                                what="WATCHDOG=1 after the writer recovered")
        assert monitor.problems() == []
        monitor.stopping()
        await listener.wait_for(lambda m: any("STOPPING=1" in x.split("\n") for x in m), what="STOPPING")
    finally:
        gate.set()
        await monitor.close()
        await app.writer.stop()
        await writer_task
        listener.close()


async def test_an_exchange_outage_keeps_the_watchdog_fed(tmp_path):
    """Every stream down and nothing to write: unhealthy for /healthz, but WATCHDOG=1 goes on."""
    listener = NotifySocket(str(tmp_path / "notify"))
    app = make_app(tmp_path, {"BTCUSD": feed(live=False, last_frame=0.0, closed=40)})
    writer_task = asyncio.create_task(app.writer.run())
    monitor = Monitor(app, writer_stuck_s=0.1, environ={
        "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "100000"})
    await monitor.start()
    try:
        await listener.wait_for(lambda m: listener.count("WATCHDOG=1") >= 5, what="WATCHDOG=1 x5")
        assert [p.kind for p in monitor.problems()] == ["stream_down"]
        assert any("0/1 feeds live; resyncs 40 (closed 40)" in m for m in listener.messages)
    finally:
        await monitor.close()
        await app.writer.stop()
        await writer_task
        listener.close()


async def test_ready_waits_for_the_writer_start_up(tmp_path):
    listener = NotifySocket(str(tmp_path / "notify"))
    app = make_app(tmp_path)
    app.writer.started = asyncio.Event()  # the attribute the Writer gets with the integration
    monitor = Monitor(app, environ={"NOTIFY_SOCKET": str(tmp_path / "notify")}, tick_s=0.02)
    await monitor.start()
    try:
        ticks = monitor.ticks
        await listener.wait_for(lambda m: monitor.ticks >= ticks + 3, timeout=5, what="ticks")
        assert listener.messages == [] and not monitor.ready_sent
        app.writer.started.set()
        await listener.wait_for(lambda m: len(m) > 0, what="READY")
        assert listener.messages[0].startswith("READY=1\n")
    finally:
        await monitor.close()
        listener.close()


# ---- the last resort: exit when nothing can make progress ------------------------------------

class Exits:
    def __init__(self) -> None:
        self.codes: list[int] = []
        self.fired = threading.Event()

    def __call__(self, code: int) -> None:
        self.codes.append(code)
        self.fired.set()


async def test_a_blocked_event_loop_exits_70(tmp_path, capfd):
    exits = Exits()
    monitor = Monitor(make_app(tmp_path), exit_after_s=0.3, exit=exits, tick_s=0.05)
    await monitor.start()
    try:
        assert exits.fired.wait(10)  # blocks the event loop itself, until the thread gives up
    finally:
        await monitor.close()
    assert exits.codes == [EX_SOFTWARE]
    err = capfd.readouterr().err
    assert "no progress; exiting" in err and "event loop blocked" in err
    assert "Thread" in err  # every thread's stack, for the post-mortem


async def test_a_writer_stuck_too_long_exits_70(tmp_path, capfd):
    exits = Exits()
    app = make_app(tmp_path)
    app.writer.queue.put_nowait(("BTCUSD", b"{}\n"))  # queued, and no writer task to take it
    monitor = Monitor(app, writer_stuck_s=0.1, exit_after_s=0.4, exit=exits, tick_s=0.05)
    await monitor.start()
    try:
        assert await asyncio.to_thread(exits.fired.wait, 10)
    finally:
        await monitor.close()
    assert exits.codes == [EX_SOFTWARE]
    assert "writer stuck for" in capfd.readouterr().err


def test_the_watchdog_thread_gives_up_quietly_when_the_loop_is_gone(tmp_path):
    exits = Exits()
    monitor = SimpleNamespace(last_tick=0.0, progress=SimpleNamespace(stalled_s=0.0))
    loop = asyncio.new_event_loop()  # never running
    thread = ProcessWatchdog(monitor, loop, exit_after_s=0.01, exit=exits, poll_s=0.01)  # type: ignore[arg-type]
    thread.start()
    thread.join(5)
    loop.close()
    assert not thread.is_alive() and exits.codes == []


def test_writer_done_counts_written_and_dropped(tmp_path):
    w = make_app(tmp_path).writer
    w.lines_written.update({"BTCUSD": 3, "ETHUSD": 4})
    w.dropped_total = 2
    assert writer_done(w) == 9


# ---- the real process ------------------------------------------------------------------------

@pytest.mark.skipif(not INTEGRATED, reason="needs app integration (Monitor in collector/app.py)")
async def test_collector_run_speaks_the_notify_protocol(tmp_path):
    from collector.sim import SimExchange
    from tests.test_app import write_config

    listener = NotifySocket(str(tmp_path / "notify"))
    async with SimExchange(["BTCUSD", "ETHUSD"], seed=8, rate=100.0, heartbeat_s=0.05) as sim:
        cfg = tmp_path / "config.toml"
        write_config(cfg, sim.ws_url, tmp_path / "data", ["BTCUSD", "ETHUSD"])
        env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"}
        with open(tmp_path / "stderr.log", "wb") as err:  # noqa: ASYNC230 - a local temp file
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "collector", "run", "--config", str(cfg), env=env, stderr=err)
        try:
            await listener.wait_for(lambda m: any("READY=1" in x.split("\n") for x in m), what="READY")
            ready = index_of(listener.messages, "READY=1")
            await listener.wait_for(lambda m: any("STATUS=2/2 feeds live" in x for x in m[ready:]),
                                    what="both feeds live in STATUS")
            await listener.wait_for(lambda m: listener.count("WATCHDOG=1", after=ready) >= 3,
                                    what="WATCHDOG=1 x3")
            assert listener.count("WATCHDOG=1", after=0) == listener.count("WATCHDOG=1", after=ready)
            proc.send_signal(signal.SIGTERM)
            await listener.wait_for(lambda m: any("STOPPING=1" in x.split("\n") for x in m),
                                    what="STOPPING")
            assert await asyncio.wait_for(proc.wait(), 10) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            listener.close()
    assert (tmp_path / "stderr.log").read_text().count('"ready"') == 1
