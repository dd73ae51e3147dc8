"""The supervisor: one feed task per symbol, one writer task, signals, shutdown.

A feed that crashes (a bug) is logged with its traceback and restarted alone,
its restart marked by a `resync` record with reason `error`. A writer that
crashes ends the process non-zero, so systemd or Docker restarts it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path

import structlog

from collector import config
from collector.config import Config, PublishConfig
from collector.core import book, format
from collector.core.backoff import Backoff, TokenBucket
from collector.core.format import CURRENT, RAW_DIR, Reason, SegmentName
from collector.core.symbols import has_globs, select, shrunk
from collector.ops import logs
from collector.ops.heartbeat import HEALTH_FILE
from collector.ops.monitor import Monitor
from collector.publish.retention import KeepUnpublished
from collector.publish.supervisor import PublisherProcess
from collector.runtime import discovery, tree
from collector.runtime.audit import Auditor
from collector.runtime.feed import Feed
from collector.runtime.restbudget import RestBudget
from collector.runtime.sockets import SocketPool
from collector.runtime.writer import Writer, raw_key

log = structlog.get_logger("app")

FEED_STOP_TIMEOUT_S = 2.0  # then feeds are cancelled; the writer still drains
EX_LOCKED = 75  # EX_TEMPFAIL: another collector holds the output directory
LOCK_NAME = ".collector.lock"
HEALTH_FILES = (HEALTH_FILE, HEALTH_FILE + ".tmp")
MAX_REFUSED_SHOWN = 20  # start-up refusals logged, one line each


class DirectoryLocked(Exception):
    pass


def lock_directory(path: Path) -> int:
    """One directory, one collector: hold an flock on a file in it for our lifetime.
    A symlink (or a non-file) in the lock's place is refused (`UnsafePath`), not followed."""
    try:
        return tree.hold_lock(path, LOCK_NAME, create=True)
    except tree.Held as held:
        raise DirectoryLocked(f"{path} is being written by another collector (pid {held.holder})") from None


def unsafe_paths(directory: Path, symbols: Iterable[str]) -> list[tree.UnsafePath]:
    """The start-up check of the output tree: a symlink (or the wrong kind of file) where
    the collector keeps a file or a folder: the lock, the heartbeat file and its temp
    file, the symbols' folders and their raw/, and in every stream folder current.jsonl,
    segments and .tmp files. Each would be followed or refused later: refused now."""
    with tree.folder_fd(directory) as fd:
        found = [tree.refusal(fd, n, directory / n, "file") for n in (LOCK_NAME, *HEALTH_FILES)]
        found += [tree.refusal(fd, s, directory / s, "folder") for s in symbols]
    for key in tree.stream_folders(directory):
        try:
            with tree.folder_fd(directory, key.split("/")) as fd:
                for name in os.listdir(fd):
                    if name == RAW_DIR and "/" not in key:
                        found.append(tree.refusal(fd, name, directory / key / name, "folder"))
                    elif name == CURRENT or name.endswith(".tmp") or SegmentName.parse(name):
                        found.append(tree.refusal(fd, name, directory / key / name, "file"))
        except FileNotFoundError:
            continue
    return [exc for exc in found if exc is not None]


def use_native_book(environ: Mapping[str, str] = os.environ) -> bool:
    """The C book core when it was built, unless COLLECTOR_PURE_PYTHON=1 asks for the
    Python reference (the same records, slower; the writer then appends from its Python
    thread too)."""
    return book.HAVE_NATIVE and not environ.get("COLLECTOR_PURE_PYTHON")


class App:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.native = use_native_book()
        self.writer = Writer(cfg.output, config.to_dict(cfg), native=self.native)
        per_minute = cfg.feed.max_connects_per_minute
        self.bucket = TokenBucket(per_minute, per_minute, time.monotonic())
        self.pool = (SocketPool(cfg.feed, self.bucket)
                     if cfg.feed.api == "current" and cfg.feed.symbols_per_socket > 1 else None)
        self.listing: tuple[str, ...] | None = None  # the last good symbol listing (globs)
        self.listed_at: float | None = None  # when it was read (unix time)
        self.discovery_problem: str | None = None  # health: why the listing is not in use
        self._rediscover = asyncio.Event()  # reload: read the listing now
        self._changing = asyncio.Lock()  # one change of the symbol set at a time
        self.feeds = {s: self._feed(s) for s in self._wanted()}
        self.rest = RestBudget()  # every public REST request: discovery and the audit
        self.auditor = Auditor(lambda: self.cfg, self.feeds, self.rest) if cfg.audit.interval_s > 0 else None
        self.reloads = 0
        self.exit_status = 0
        self.publisher = self._publisher(cfg.publish)
        self.monitor = Monitor.for_app(self)  # notify, watchdog, metrics, health
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self, handle_signals: bool = True) -> int:
        """Run until stop() or a signal; return the exit status."""
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig)
            loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        try:
            lock = lock_directory(self.cfg.output.dir)
        except DirectoryLocked as exc:
            log.error("output directory in use", error=str(exc))
            return EX_LOCKED
        except tree.UnsafePath as exc:
            return self._refuse([exc])
        try:
            refused = unsafe_paths(self.cfg.output.dir, list(self.feeds))
            if refused:
                return self._refuse(refused)
            return await self._run()
        finally:
            os.close(lock)

    def _refuse(self, refused: list[tree.UnsafePath]) -> int:
        """Exit 78 (EX_CONFIG) naming each path of the output tree that cannot be used."""
        for exc in refused[:MAX_REFUSED_SHOWN]:
            log.error("output.dir refused", error=str(exc), config=str(self.cfg.path))
        if len(refused) > MAX_REFUSED_SHOWN:
            log.error("output.dir refused: more paths not shown", count=len(refused))
        return config.EX_CONFIG

    async def _run(self) -> int:
        try:
            await self.monitor.start()
        except OSError as exc:
            log.error("cannot listen for metrics", listen=self.monitor.listen, error=str(exc))
            return 1
        try:
            return await self._supervise()
        finally:
            await self.monitor.close()

    async def _supervise(self) -> int:
        writer = asyncio.create_task(self.writer.run(), name="writer")
        for feed in self.feeds.values():
            self._start_feed(feed)
        discover = asyncio.create_task(self._discover(), name="discovery")
        audit = asyncio.create_task(self.auditor.run() if self.auditor else asyncio.sleep(0), name="audit")
        publishing = asyncio.create_task(self._start_publisher(), name="publisher-start")
        log.info("started", symbols=list(self.feeds), output=str(self.cfg.output.dir),
                 url=self.cfg.feed.url, book_core="C" if self.native else "Python",
                 appends="C appender" if self.writer.native else "Python thread")
        stop = asyncio.create_task(self._stop.wait())
        await asyncio.wait([stop, writer], return_when=asyncio.FIRST_COMPLETED)
        self.monitor.stopping()
        discover.cancel()
        audit.cancel()
        await asyncio.gather(audit, return_exceptions=True)
        publishing.cancel()
        await asyncio.gather(discover, publishing, return_exceptions=True)
        if writer.done():
            stop.cancel()
            for t in self._tasks.values():
                t.cancel()
            err = writer.exception() if not writer.cancelled() else None
            log.critical("writer died; exiting", error=repr(err), exc_info=err)
            if self.publisher is not None:
                await self.publisher.stop()
            return 1
        started = time.monotonic()
        if self.pool is not None:
            self.pool.closing = True
        await self._stop_feeds(list(self.feeds))
        if self.pool is not None:
            self.pool.close()
        await self.writer.stop()
        await writer
        if self.publisher is not None:  # the files are complete: its process catches up with them
            await self.publisher.stop()
        log.info("stopped", seconds=round(time.monotonic() - started, 3),
                 lines=sum(self.writer.lines_written.values()),
                 bytes=sum(self.writer.bytes_written.values()),
                 dropped=self.writer.dropped_total,
                 feeds={s: {"updates": f.stats.updates, "trades": f.stats.trades,
                            "resyncs": dict(f.stats.resyncs)} for s, f in self.feeds.items()})
        return self.exit_status

    def _publisher(self, pub: PublishConfig) -> PublisherProcess | None:
        """[publish] on: the publisher, a process of its own (collector/publish/supervisor.py);
        retention keeps what its cursors on disk are not past yet."""
        self.writer.retain_filter = None
        if not pub.enabled:
            return None
        self.writer.retain_filter = KeepUnpublished(self.cfg.output.dir, raw=self.cfg.output.raw and pub.raw)
        return PublisherProcess(replace(self.cfg, publish=pub), written=lambda: self.writer.lines_written,
                                on_fatal=self._publish_fatal, before=getattr(self, "publisher", None))

    async def _start_publisher(self) -> None:
        await self.writer.started.wait()  # leftovers settled: the files are what they will stay
        if self.publisher is not None:
            self.publisher.start()

    def _publish_fatal(self, why: str) -> None:
        """A certain config error on publishing's first attempt: stop, exit 78."""
        log.error("publish: config error, stopping", error=why, config=str(self.cfg.path))
        self.exit_status = config.EX_CONFIG
        self.stop()

    def _wanted(self) -> tuple[str, ...]:
        """The symbols to record: exact ones always, globs from the last good listing."""
        feed = self.cfg.feed
        return select(self.listing or (), feed.symbols, feed.exclude)

    async def _discover(self) -> None:
        """With a glob in feed.symbols: read the listing (retrying with backoff until a
        first one loads), then every feed.discover_s; start and stop feeds to match. A
        listing that fails or lost more than half its symbols keeps the current set and
        is reported (log and health) until a good one comes."""
        backoff = Backoff(self.cfg.feed.backoff_initial_s, self.cfg.feed.backoff_max_s)
        while True:
            feed = self.cfg.feed
            if not has_globs(feed.symbols):
                self.discovery_problem = None
                await self._rediscover.wait()
                self._rediscover.clear()
                continue
            delay = feed.discover_s
            try:
                listing = await discovery.fetch(feed.rest_url, budget=self.rest,
                                                retry_after_max_s=feed.retry_after_max_s)
            except discovery.ListingError as exc:
                if self.listing is None:
                    delay = min(backoff.next_delay(), feed.discover_s)
                    self._report(f"cannot read the symbol listing, recording no glob-matched "
                                 f"symbol until it loads: {exc}",
                                 attempt=backoff.failures, retry_s=round(delay, 3))
                else:
                    self._report(f"cannot read the symbol listing, keeping the current symbols: {exc}")
            else:
                if self.listing is not None and shrunk(self.listing, listing):
                    self._report(f"symbol listing refused: it shrank from {len(self.listing)} to "
                                 f"{len(listing)} symbols (more than half gone); keeping the current symbols")
                else:
                    backoff.reset()
                    self.discovery_problem = None
                    self.listing, self.listed_at = listing, time.time()
                    await self._apply()
            try:
                async with asyncio.timeout(delay):
                    await self._rediscover.wait()
            except TimeoutError:
                pass
            self._rediscover.clear()

    def _report(self, problem: str, **fields: object) -> None:
        log.warning("symbol discovery", problem=problem, url=self.cfg.feed.rest_url, **fields)
        self.discovery_problem = problem

    async def _apply(self) -> tuple[list[str], list[str]]:
        """Start and stop feeds to match `_wanted()`. A symbol stopped because the listing
        no longer has it gets one `resync` record `unlisted`, then its segment is closed."""
        async with self._changing:
            wanted = self._wanted()
            added = [s for s in wanted if s not in self.feeds]
            removed = [s for s in self.feeds if s not in wanted]
            unlisted = [s for s in removed if self.listing is not None and s not in self.listing]
            await self._stop_feeds(removed)
            for s in removed:
                del self.feeds[s]
                if s in unlisted:
                    mark = format.resync(s, Reason.UNLISTED, time.time_ns())
                    await self.writer.put(s, mark)
                    if self.cfg.output.raw:
                        await self.writer.put(raw_key(s), mark)
                    await self.writer.close(s)
            for s in added:
                self.feeds[s] = self._feed(s)
                self._start_feed(self.feeds[s])
            if added or removed:
                log.info("symbols changed", added=added, removed=removed, unlisted=unlisted)
            return added, removed

    def _feed(self, symbol: str) -> Feed:
        return Feed(symbol, self.cfg, self.writer, self.bucket, native=self.native, pool=self.pool)

    def _start_feed(self, feed: Feed) -> None:
        self._tasks[feed.symbol] = asyncio.create_task(self._guard(feed), name=f"feed-{feed.symbol}")

    async def _stop_feeds(self, symbols: list[str]) -> None:
        for s in symbols:
            self.feeds[s].stop()
        tasks = [self._tasks.pop(s) for s in symbols if s in self._tasks]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=FEED_STOP_TIMEOUT_S)
            for t in pending:
                t.cancel()

    async def reload(self) -> bool:
        """SIGHUP: reopen the files and re-read the config. Symbols added or removed
        start or stop their feeds; other changes are named as needing a restart; a
        config that does not validate is reported and the running one kept."""
        self.reloads += 1
        await self.writer.reopen()
        if self.cfg.path is None:
            return False
        try:
            new = config.load(self.cfg.path)
        except config.ConfigError as exc:
            log.error("reload: config rejected, keeping the running one", error=str(exc))
            return False
        restart = restart_keys(self.cfg, new)
        if new.log.level != self.cfg.log.level:
            logs.configure(new.log.level)
        # keep the running settings except what can change live
        if new.publish != self.cfg.publish:  # [publish] applies live: on, off, or anew
            if self.publisher is not None:  # it catches up with the files, then ends
                await self.publisher.stop()
            self.publisher = self._publisher(new.publish)
            if self.publisher is not None:
                self.publisher.on_fatal = None  # past the start: reported and retried
                self.publisher.start()
            log.info("reload: publishing " + ("on" if self.publisher else "off"))
        self.cfg = replace(self.cfg, feed=replace(
            self.cfg.feed, **{k: getattr(new.feed, k) for k in LIVE_FEED_KEYS}), log=new.log,
            publish=new.publish)
        added, removed = await self._apply()
        self._rediscover.set()  # a new rest_url or glob: read the listing now
        log.info("reloaded", added=added, removed=removed)
        if restart:
            log.warning("reload: these changes need a restart to apply", keys=restart)
        return True

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("signal received, stopping", signal=sig.name)
        self.stop()

    async def _guard(self, feed: Feed) -> None:
        reason, detail = Reason.START, dict[str, str]()
        while True:
            try:
                await feed.run(reason, **detail)
                return
            except Exception as exc:
                if feed.stopping:
                    return
                feed.log.exception("feed crashed; restarting it")
                reason, detail = Reason.ERROR, {"detail": repr(exc)[:200]}
                await asyncio.sleep(1.0)  # crash loops still draw on the connection budget


LIVE_FEED_KEYS = ("symbols", "exclude", "rest_url", "discover_s")  # SIGHUP applies these


def restart_keys(old: Config, new: Config) -> list[str]:
    """Dotted keys whose change only a restart applies (LIVE_FEED_KEYS and log.level apply live)."""
    a, b = config.to_dict(old), config.to_dict(new)
    return [f"{section}.{key}" for section in a for key in a[section]
            if a[section][key] != b[section][key]
            and f"{section}.{key}" not in (*(f"feed.{k}" for k in LIVE_FEED_KEYS), "log.level")
            and section != "publish"]
