"""The supervisor: one feed task per symbol, one writer task, signals, shutdown.

A feed that crashes (a bug) is logged with its traceback and restarted alone,
its restart marked by a `resync` record with reason `error`. A writer that
crashes ends the process non-zero, so systemd or Docker restarts it.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import time
from pathlib import Path

import structlog

from collector.backoff import TokenBucket
from collector import config
from collector.config import Config
from collector.feed import Feed
from collector.writer import Writer

log = structlog.get_logger("app")

FEED_STOP_TIMEOUT_S = 2.0  # then feeds are cancelled; the writer still drains
EX_LOCKED = 75  # EX_TEMPFAIL: another collector holds the output directory
LOCK_NAME = ".collector.lock"


class DirectoryLocked(Exception):
    pass


def lock_directory(path: Path) -> int:
    """One directory, one collector: hold an flock on a file in it for our lifetime."""
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise DirectoryLocked(f"{path} is being written by another collector (pid {holder})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class App:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.writer = Writer(cfg.output, config.to_dict(cfg))
        bucket = TokenBucket(cfg.feed.max_connects_per_minute, cfg.feed.max_connects_per_minute,
                             time.monotonic())
        self.feeds = {s: Feed(s, cfg, self.writer, bucket) for s in cfg.feed.symbols}
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self, handle_signals: bool = True) -> int:
        """Run until stop() or a signal; return the exit status."""
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            lock = lock_directory(self.cfg.output.dir)
        except DirectoryLocked as exc:
            log.error("output directory in use", error=str(exc))
            return EX_LOCKED
        try:
            return await self._run()
        finally:
            os.close(lock)

    async def _run(self) -> int:
        writer = asyncio.create_task(self.writer.run(), name="writer")
        feeds = [asyncio.create_task(self._guard(f), name=f"feed-{f.symbol}")
                 for f in self.feeds.values()]
        log.info("started", symbols=list(self.feeds), output=str(self.cfg.output.dir),
                 url=self.cfg.feed.url)
        stop = asyncio.create_task(self._stop.wait())
        await asyncio.wait([stop, writer], return_when=asyncio.FIRST_COMPLETED)
        if writer.done():
            stop.cancel()
            for t in feeds:
                t.cancel()
            err = writer.exception() if not writer.cancelled() else None
            log.critical("writer died; exiting", error=repr(err), exc_info=err)
            return 1
        started = time.monotonic()
        for f in self.feeds.values():
            f.stop()
        _, pending = await asyncio.wait(feeds, timeout=FEED_STOP_TIMEOUT_S)
        for t in pending:
            t.cancel()
        await self.writer.stop()
        await writer
        log.info("stopped", seconds=round(time.monotonic() - started, 3),
                 lines=sum(self.writer.lines_written.values()),
                 bytes=sum(self.writer.bytes_written.values()),
                 dropped=self.writer.dropped_total,
                 feeds={s: {"updates": f.stats.updates, "trades": f.stats.trades,
                            "resyncs": dict(f.stats.resyncs)} for s, f in self.feeds.items()})
        return 0

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("signal received, stopping", signal=sig.name)
        self.stop()

    async def _guard(self, feed: Feed) -> None:
        reason, detail = "start", dict[str, str]()
        while True:
            try:
                await feed.run(reason, **detail)
                return
            except Exception as exc:
                if feed.stopping:
                    return
                feed.log.exception("feed crashed; restarting it")
                reason, detail = "error", {"detail": repr(exc)[:200]}
                await asyncio.sleep(1.0)  # crash loops still draw on the connection budget
