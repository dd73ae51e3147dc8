"""The collector's side of the publisher process (I/O).

`PublisherProcess` starts `collector publish --child` (service.py) with the same Python,
hands it the effective config on stdin, and keeps it running: when it ends it is started
again after a jittered backoff (reset once a process lived RESET_AFTER_S). Exit 78 from
the first one (a certain config error at the collector's start) stops the collector with
78; later ones (after SIGHUP, or a restart) are told to report and retry instead. Its log
lines go to the collector's stderr, tagged `"process": "publisher"`.

It reads the process's status file every STATUS_EVERY_S, off the loop, as untrusted input
(status.py): a file that is too large, malformed, another process's, or a symlink is
refused (logged once per reason) and the last good status stays. From it come the
metrics and /healthz's `publish_stuck`, with the same interface the in-process publisher
had: `stats()`, `problem()`, `connected`, `errors`, `last_error`. A process that writes
no new status for SILENT_KILL_S is taken as hung: killed, and started again.

With publish.spawn = false nothing is started: the status of the publisher run by the
operator (`collector publish`, its own unit) is read all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import structlog

from collector import config
from collector.config import Config
from collector.core.backoff import Backoff
from collector.publish import status as pstatus
from collector.publish.service import EX_LOCKED, ChildArgs, handoff
from collector.runtime import tree

log = structlog.get_logger("publish")

BACKOFF_INITIAL_S, BACKOFF_MAX_S = 0.5, 30.0
RESET_AFTER_S = 30.0  # a process that lived this long was not a crash loop
STOP_MARGIN_S = 5.0  # beyond publish.stop_timeout_s: writing cursors, closing, interpreter exit
STALE_S = 5.0  # no new status for this long: not connected, as far as the collector knows
SILENT_KILL_S = 60.0  # ... and for this long: hung, killed and started again


def read_status(directory: Path) -> bytes:
    """The status file's bytes (at most one more than the bound), never through a symlink."""
    with tree.folder_fd(directory) as dir_fd:
        fd = tree.open_file(dir_fd, pstatus.STATUS_NAME, directory / pstatus.STATUS_NAME, os.O_RDONLY)
    try:
        return os.read(fd, pstatus.MAX_STATUS_BYTES + 1)
    finally:
        os.close(fd)


class PublisherProcess:
    """Runs and watches the publisher process (see the module docstring). `written(key)`:
    lines the writer wrote this run to a stream, for the lag in records."""

    def __init__(self, cfg: Config, written: Callable[[], Mapping[str, int]] | None = None,
                 on_fatal: Callable[[str], None] | None = None,
                 before: PublisherProcess | None = None) -> None:
        self.cfg = cfg
        self.pub = cfg.publish
        self.directory = cfg.output.dir
        self.spawn = cfg.publish.spawn
        self.written = written
        self.on_fatal = on_fatal  # the first process's exit 78 stops the collector
        self.run_ns: int = before.run_ns if before is not None else time.time_ns()
        self.raw = cfg.output.raw and cfg.publish.raw
        self.totals: pstatus.Totals = before.totals if before is not None else pstatus.Totals()
        self.restarts: int = before.restarts if before is not None else 0
        self._past_errors: int = before.errors if before is not None else 0  # of processes that ended
        self._last_error = before.last_error if before is not None else None
        self.proc: asyncio.subprocess.Process | None = None
        self.status: pstatus.Status | None = None  # the running process's last good status
        self.fresh_at = time.monotonic()  # when a new status last came (or the process started)
        self.exited: int | None = None  # the last process's exit status
        self.down_since_ns: int | None = time.time_ns()
        self._ok_at = time.monotonic()
        self._refused: str | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ---- what metrics and health read ------------------------------------------------------

    @property
    def fresh(self) -> bool:
        return self.status is not None and time.monotonic() - self.fresh_at < STALE_S

    @property
    def connected(self) -> bool:
        return self.fresh and self.status is not None and self.status.connected

    @property
    def errors(self) -> int:
        return (self.status.errors if self.status is not None else 0) + self._past_errors

    @property
    def last_error(self) -> str | None:
        return self.status.last_error if self.status is not None else self._last_error

    @property
    def running(self) -> bool:
        if not self.spawn:
            return self.fresh
        return self.proc is not None and self.proc.returncode is None

    def stats(self, now_ns: int | None = None) -> dict[str, dict[str, float]]:
        """Per stream: published, lag_s, lag_records, skipped, duplicates (status.py)."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        status = self.status
        # a stale status's heads stay: those lines are still waiting, and their age grows
        streams = self.totals.with_(status)
        # dict() copies the writer thread's Counter at once (a C-level copy under the GIL)
        written = dict(self.written()) if self.written is not None else None
        if written is not None:
            if status is not None and status.run_ns != self.run_ns:
                written = None  # a publisher the collector did not start counts another run
            else:
                for key in written:
                    if "/" not in key or self.raw:
                        streams.setdefault(key, pstatus.StreamStatus())
        return pstatus.stream_stats(streams, written, now_ns, None if self.connected else self._down_ns())

    def problem(self, now: float | None = None) -> str | None:
        """Why publishing is stuck, for /healthz; None when it is not."""
        now = time.monotonic() if now is None else now
        idle = now - self._ok_at
        return pstatus.stuck(self.stats(), idle, self.pub.stuck_s, self.connected, self.last_error,
                             self._process_problem(now))

    def _process_problem(self, now: float) -> str | None:
        if self.spawn and not self.running:
            return f"not running (last exit status {self.exited}, {self.restarts} restarts)"
        if not self.fresh:
            return f"no status for {now - self.fresh_at:.0f} s"
        return None

    def _down_ns(self) -> int:
        """Since when nothing is published, as far as the collector knows."""
        st = self.status
        if st is not None:
            return st.at_ns - int(st.down_s * 1e9) if not st.connected else st.at_ns  # else: gone quiet
        return self.down_since_ns or time.time_ns()

    # ---- running it --------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="publisher-process")

    async def stop(self) -> None:
        """SIGTERM: the process catches up with the files for at most publish.stop_timeout_s,
        writes its cursors and exits; SIGKILL if it takes longer than that and a margin."""
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(self.pub.stop_timeout_s + STOP_MARGIN_S):
                    await proc.wait()
            except TimeoutError:
                log.error("the publisher process did not stop in time; killed", pid=proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if proc is not None:
            await self._ended(proc)

    async def _run(self) -> None:
        reading = asyncio.create_task(self._read_loop(), name="publisher-status-read")
        try:
            if self.spawn:
                await self._supervise()
            else:
                await asyncio.Event().wait()
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)

    async def _supervise(self) -> None:
        backoff = Backoff(BACKOFF_INITIAL_S, BACKOFF_MAX_S)
        first = self.on_fatal is not None
        while not self._stopping:
            proc = await self._spawn(fatal=first)
            began = time.monotonic()
            code = await proc.wait()
            await self._ended(proc)
            if self._stopping:
                return
            if code == config.EX_CONFIG and first and self.on_fatal is not None:
                self.on_fatal(self.last_error or "the publisher process exited 78")
                return
            first = False
            if time.monotonic() - began >= RESET_AFTER_S:
                backoff.reset()
            delay = backoff.next_delay()
            self.restarts += 1
            why = ("another publisher holds the output directory" if code == EX_LOCKED
                   else "config error" if code == config.EX_CONFIG else "exited")
            (log.error if code in (EX_LOCKED, config.EX_CONFIG) else log.warning)(
                "publisher process ended; starting it again", why=why, exit_status=code,
                retry_s=round(delay, 3))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def _spawn(self, fatal: bool) -> asyncio.subprocess.Process:
        # stderr inherited: its JSON lines join the collector's; stdin: the config, then
        # held open: its end tells the process the collector is gone
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "collector", "publish", "--config", str(self.cfg.path or "-"), "--child",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL)
        self.proc = proc
        self.fresh_at = time.monotonic()
        assert proc.stdin is not None
        try:
            proc.stdin.write(handoff(self.cfg, ChildArgs(os.getpid(), self.run_ns, fatal)))
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # it died at once: its exit status says why
        log.info("publisher process started", pid=proc.pid)
        return proc

    async def _ended(self, proc: asyncio.subprocess.Process) -> None:
        """A process ended: take its last word, keep its counts."""
        if self.proc is not proc:
            return
        await self._read_once(final=True)
        if self.status is not None and self.status.pid == proc.pid:
            self.totals.add(self.status)
            self._past_errors += self.status.errors
            self._last_error = self.status.last_error
        self.status = None
        self.exited = proc.returncode
        self.proc = None
        self.down_since_ns = time.time_ns()
        if proc.stdin is not None:
            proc.stdin.close()

    async def _read_loop(self) -> None:
        while True:
            await asyncio.sleep(pstatus.STATUS_EVERY_S)
            await self._read_once()
            now = time.monotonic()
            proc = self.proc
            if (self.spawn and proc is not None and proc.returncode is None
                    and now - self.fresh_at >= SILENT_KILL_S):
                log.error("the publisher process wrote no status for a while; killing it",
                          pid=proc.pid, seconds=round(now - self.fresh_at))
                self.fresh_at = now
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()

    async def _read_once(self, final: bool = False) -> None:
        try:
            data = await asyncio.to_thread(read_status, self.directory)
            status = pstatus.decode(data)
            if self.spawn and (self.proc is None or status.pid != self.proc.pid):
                raise pstatus.StatusError(f"written by pid {status.pid}, not by the publisher process")
        except FileNotFoundError:
            return
        except (OSError, pstatus.StatusError) as exc:
            self._refuse(str(exc))
            return
        self._refused = None
        old = self.status
        if old is not None and old.pid == status.pid and status.seq <= old.seq:
            return  # not new
        self.status = status
        self.fresh_at = time.monotonic()
        if status.idle_s is not None:  # progress in this process (not merely its start)
            self._ok_at = max(self._ok_at, self.fresh_at - status.idle_s)
        if status.connected:
            self.down_since_ns = None

    def _refuse(self, why: str) -> None:
        if why != self._refused:
            log.warning("publisher status file refused", path=str(self.directory / pstatus.STATUS_NAME),
                        error=why)
        self._refused = why
