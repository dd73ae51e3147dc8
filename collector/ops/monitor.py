"""The health Monitor: the I/O shell around health.py's pure verdict.

`Monitor` is one task on the event loop ticking every second: it samples the writer
(`WriterProgress`), sends READY/STATUS/WATCHDOG/STOPPING through notify.py, serves
/metrics and /healthz (metrics.py) when `metrics.listen` is set, else writes the
heartbeat file (heartbeat.py), and stamps a heartbeat that `ProcessWatchdog`, a
thread, watches. The thread is the last resort for a process that cannot make
progress, under Docker too (which never restarts an unhealthy container): the loop
blocked, or the writer stuck, for `exit_after_s` makes it dump every thread's stack
and `os._exit(70)`.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson
import structlog

from collector.config import Config, parse_listen
from collector.core.health import (
    EXIT_AFTER_S,
    HEARTBEAT_S,
    WRITER_STUCK_S,
    Problem,
    WriterProgress,
    check,
    writer_done,
)
from collector.ops.heartbeat import HEALTH_FILE, write_heartbeat
from collector.ops.notify import Notifier, watchdog_interval

if TYPE_CHECKING:
    from collector.ops.metrics import FeedView, MetricsServer, WriterView

log = structlog.get_logger("health")

EX_SOFTWARE = 70  # sysexits: the process could not go on
TICK_S = 1.0


class MonitoredApp(Protocol):
    """What Monitor reads of the App; metrics.py reads `feeds` and `writer` too. The
    writer's optional `started` (an asyncio.Event, set after start-up) delays READY=1."""

    @property
    def cfg(self) -> Config: ...
    @property
    def feeds(self) -> Mapping[str, FeedView]: ...
    @property
    def writer(self) -> WriterView: ...


class Watched(Protocol):
    """What the watchdog thread reads of the Monitor: two numbers the loop keeps fresh."""

    @property
    def last_tick(self) -> float: ...
    @property
    def progress(self) -> WriterProgress: ...


def _publish_problem(app: object, now: float) -> str | None:
    """Why publishing is stuck, with [publish] on: from what the publisher process last
    reported, or its absence (collector/publish/supervisor.py)."""
    publisher = getattr(app, "publisher", None)
    problem: str | None = None if publisher is None else publisher.problem(now)
    return problem


def _audit_problems(app: object) -> dict[str, str] | None:
    """Symbols whose audits keep failing, with [audit] on (collector/runtime/audit.py)."""
    auditor = getattr(app, "auditor", None)
    problems: dict[str, str] | None = None if auditor is None else auditor.problems()
    return problems


class ProcessWatchdog(threading.Thread):
    """Exits the process when the event loop stops ticking or the writer stays stuck.

    A thread, so that it still runs when the loop does not. Its verdict comes from
    two numbers the loop keeps fresh: the monotonic time of the last tick and the
    writer's stall (sampled on the loop, so it also goes stale while the loop is
    blocked, which the first number then covers)."""

    def __init__(self, monitor: Watched, loop: asyncio.AbstractEventLoop, exit_after_s: float,
                 exit: Callable[[int], Any] = os._exit, poll_s: float = TICK_S) -> None:
        super().__init__(name="collector-watchdog", daemon=True)
        self.monitor = monitor
        self.loop = loop
        self.exit_after_s = exit_after_s
        self.exit = exit
        self.poll_s = poll_s
        self.halt = threading.Event()

    def verdict(self, now: float) -> str | None:
        blocked = now - self.monitor.last_tick
        if blocked >= self.exit_after_s:
            return f"event loop blocked for {blocked:.1f} s"
        stalled = self.monitor.progress.stalled_s
        if stalled >= self.exit_after_s:
            return f"writer stuck for {stalled:.1f} s with records queued"
        return None

    def run(self) -> None:
        while not self.halt.wait(self.poll_s):
            if not self.loop.is_running():
                return  # the loop ended without Monitor.close(): nothing left to guard
            why = self.verdict(time.monotonic())
            if why is None:
                continue
            # Plain writes: the logging pipeline may be what is stuck.
            line = orjson.dumps({"event": "no progress; exiting", "reason": why, "level": "critical",
                                 "exit_status": EX_SOFTWARE, "logger": "health",
                                 "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
            try:
                os.write(2, line + b"\n")
                faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
            except (OSError, ValueError):
                pass
            self.exit(EX_SOFTWARE)
            return


class Monitor:
    """Watches a running App (`feeds`, `writer`, `cfg`): notify, metrics, heartbeat, watchdog."""

    def __init__(self, app: MonitoredApp, *, listen: str = "", writer_stuck_s: float = WRITER_STUCK_S,
                 exit_after_s: float = EXIT_AFTER_S, environ: Mapping[str, str] | None = None,
                 exit: Callable[[int], Any] = os._exit, tick_s: float = TICK_S) -> None:
        self.app = app
        self.listen = listen
        self.writer_stuck_s = writer_stuck_s
        self.exit_after_s = exit_after_s
        self.notifier = Notifier.from_env(environ)
        self.watchdog_s = watchdog_interval(environ)
        self.tick_s = min(tick_s, self.watchdog_s) if self.watchdog_s else tick_s
        self._exit = exit
        now = time.monotonic()
        self.started_at = now
        self.last_tick = now
        self.progress = WriterProgress(now)
        self.server: MetricsServer | None = None  # when listening
        self.ready_sent = False
        self.watchdogs_sent = 0
        self.ticks = 0
        self._last_watchdog = 0.0
        self._last_status = ""
        self._next_heartbeat = 0.0
        self._heartbeat_busy = False
        self._heartbeat_write: asyncio.Future[None] | None = None
        self._heartbeat_failing = False
        self._heartbeat_verdict: list[tuple[str, str | None]] = []
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._thread: ProcessWatchdog | None = None

    @classmethod
    def for_app(cls, app: MonitoredApp, **kwargs: Any) -> Monitor:
        """Settings from `app.cfg.metrics` and `app.cfg.health` (defaults when absent)."""
        metrics, health = getattr(app.cfg, "metrics", None), getattr(app.cfg, "health", None)
        return cls(app, listen=getattr(metrics, "listen", ""),
                   writer_stuck_s=getattr(health, "writer_stuck_s", WRITER_STUCK_S),
                   exit_after_s=getattr(health, "exit_after_s", EXIT_AFTER_S), **kwargs)

    @property
    def heartbeat_path(self) -> Path | None:
        return None if self.listen else Path(self.app.cfg.output.dir) / HEALTH_FILE

    def problems(self, now: float | None = None) -> list[Problem]:
        now = time.monotonic() if now is None else now
        feed = self.app.cfg.feed
        return check(self.app.feeds, feed.stale_after_s, self.app.writer.queue.qsize(),
                     self.progress.stalled_s, now, self.writer_stuck_s, self.started_at,
                     heartbeats=feed.api == "v1",
                     discovery=getattr(self.app, "discovery_problem", None),
                     publish=_publish_problem(self.app, now), audits=_audit_problems(self.app))

    async def start(self) -> None:
        """Listen for scrapes (OSError if the address cannot be bound), start ticking
        and the watchdog thread. READY=1 follows once the writer has started."""
        self.started_at = self.last_tick = time.monotonic()
        if self.listen:
            # prometheus_client (about 50 ms to import) only when a listener is asked for
            from collector.ops.metrics import MetricsServer

            host, port = parse_listen(self.listen)
            self.server = MetricsServer(self.app, self)
            await self.server.start(host, port)
            log.info("metrics listening", listen=f"{host}:{self.server.port}")
        if not faulthandler.is_enabled():
            faulthandler.enable(all_threads=True)  # systemd's watchdog SIGABRT prints stacks
        self._tasks = [asyncio.create_task(self._ticker(), name="monitor"),
                       asyncio.create_task(self._announce_ready(), name="monitor-ready")]
        self._thread = ProcessWatchdog(self, asyncio.get_running_loop(), self.exit_after_s,
                                       self._exit, min(TICK_S, self.tick_s))
        self._thread.start()

    def stopping(self) -> None:
        """Shutdown began (SIGTERM): STOPPING=1. Ticks and watchdog go on while draining."""
        if not self._stopping:
            self._stopping = True
            self.notifier.send("STOPPING=1", "STATUS=stopping: draining the queue")

    async def close(self) -> None:
        if self._thread is not None:
            self._thread.halt.set()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.close()
        path = self.heartbeat_path
        if path is not None:
            if self._heartbeat_write is not None:  # lest it recreate the file after the unlink
                await asyncio.wait([self._heartbeat_write], timeout=2)
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass
        self.notifier.close()

    async def _announce_ready(self) -> None:
        started = getattr(self.app.writer, "started", None)  # asyncio.Event, set after start-up
        if started is not None:
            await started.wait()
        self.ready_sent = True
        status = self.status_text(self.problems())
        if self.notifier.send("READY=1", f"STATUS={status}"):
            self._last_status = status
        log.info("ready", notify=self.notifier.enabled, watchdog_s=self.watchdog_s)

    async def _ticker(self) -> None:
        while True:
            self.tick(time.monotonic())
            await asyncio.sleep(self.tick_s)

    def tick(self, now: float) -> None:
        self.last_tick = now
        self.ticks += 1
        writer = self.app.writer
        self.progress.sample(writer.queue.qsize(), writer_done(writer), now)
        problems = self.problems(now)
        interval = self.watchdog_s
        due = interval is not None and now - self._last_watchdog >= interval * 0.999
        if (due and self.ready_sent and not any(p.fatal for p in problems)
                and self.notifier.send("WATCHDOG=1")):
            self._last_watchdog = now
            self.watchdogs_sent += 1
        if self.ready_sent and not self._stopping:
            status = self.status_text(problems)
            if status != self._last_status and self.notifier.send(f"STATUS={status}"):
                self._last_status = status
        path = self.heartbeat_path
        verdict = [(p.kind, p.symbol) for p in problems]
        if (path is not None and not self._heartbeat_busy
                and (now >= self._next_heartbeat or verdict != self._heartbeat_verdict)):
            self._next_heartbeat = now + HEARTBEAT_S
            self._heartbeat_verdict = verdict
            self._heartbeat_busy = True
            fut = self._heartbeat_write = asyncio.get_running_loop().run_in_executor(
                None, write_heartbeat, path, problems, time.time())
            fut.add_done_callback(self._heartbeat_done)

    def _heartbeat_done(self, fut: asyncio.Future[None]) -> None:
        self._heartbeat_busy = False
        error = None if fut.cancelled() else fut.exception()
        if error is not None and not self._heartbeat_failing:
            log.error("cannot write the heartbeat file", path=str(self.heartbeat_path), error=str(error))
        elif error is None and self._heartbeat_failing:
            log.info("heartbeat file written again", path=str(self.heartbeat_path))
        self._heartbeat_failing = error is not None

    def status_text(self, problems: list[Problem]) -> str:
        feeds = self.app.feeds
        live = sum(1 for f in feeds.values() if f.stats.live)
        resyncs: dict[str, int] = {}
        for f in feeds.values():
            for reason, n in f.stats.resyncs.items():
                resyncs[reason] = resyncs.get(reason, 0) + n
        text = f"{live}/{len(feeds)} feeds live; resyncs {sum(resyncs.values())}"
        if resyncs:
            text += " (" + ", ".join(f"{r} {n}" for r, n in sorted(resyncs.items())) + ")"
        if any(p.fatal for p in problems):  # no numbers that change every tick: sent on change
            text += f"; WRITER STUCK: records queued, none written for {self.writer_stuck_s:g} s or more"
        return text
