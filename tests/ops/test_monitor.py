"""collector.ops.monitor: READY, WATCHDOG and STOPPING through a real datagram socket, with a
real Writer and feeds' real FeedStats; and the process watchdog, which exits when nothing can
make progress."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from types import SimpleNamespace

from collector import config
from collector.core.health import writer_done
from collector.ops.monitor import EX_SOFTWARE, Monitor, ProcessWatchdog
from collector.runtime.writer import Writer
from tests.helpers.health import feed
from tests.helpers.notify import NotifySocket

# ---- Monitor: READY, WATCHDOG, STOPPING through a real socket, a real Writer -------------------

def make_app(tmp_path: Path, feeds: dict[str, SimpleNamespace] | None = None) -> SimpleNamespace:
    cfg = config.from_dict({"feed": {"symbols": ["BTCUSD"], "stale_after_s": 1.0},
                            "output": {"dir": str(tmp_path / "data")}})
    cfg.output.dir.mkdir(exist_ok=True)
    return SimpleNamespace(cfg=cfg, feeds=feeds if feeds is not None else {}, writer=Writer(cfg.output))


async def test_ready_watchdog_while_healthy_none_while_writer_stuck_stopping(tmp_path, monkeypatch, os_write):
    gate, entered = threading.Event(), threading.Event()
    gate.set()

    def gated_write(fd: int, data: bytes) -> int:
        entered.set()
        assert gate.wait(30)
        return os.write(fd, data)

    os_write(gated_write)
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
    thread = ProcessWatchdog(monitor, loop, exit_after_s=0.01, exit=exits, poll_s=0.01)
    thread.start()
    thread.join(5)
    loop.close()
    assert not thread.is_alive() and exits.codes == []


def test_writer_done_counts_written_and_dropped(tmp_path):
    w = make_app(tmp_path).writer
    w.lines_written.update({"BTCUSD": 3, "ETHUSD": 4})
    w.dropped_total = 2
    assert writer_done(w) == 9

