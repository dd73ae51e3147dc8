"""`collector publish`: the publisher in a process of its own (I/O).

Publishing shares nothing with recording but the files, so it runs beside the collector,
not inside it: its own event loop, GIL and CPU. `collector run` with [publish] on starts
it as a child (supervisor.py) and hands it the effective config as one JSON line on
stdin; it can also run by hand or as its own systemd unit (`collector publish --config
PATH`, with publish.spawn = false in the collector's config).

* One publisher per output directory: it holds an flock on `.publisher.lock` there
  (another one holding it: exit 75).
* Every STATUS_EVERY_S it rewrites `.publisher.json` (status.py) for the collector's
  /metrics and /healthz, atomically, never through a symlink; the last one on exit.
* It runs publish.nice below the niceness it starts with: with every CPU busy, the
  collector's recording comes first and the lag grows instead (reported).
* SIGTERM or SIGINT: catch up with the files for at most publish.stop_timeout_s, then
  exit 0. A certain config error at the start (credentials refused, conflicting
  subjects): exit 78.
* As a child it dies with the collector: PR_SET_PDEATHSIG (SIGKILL) on Linux, and the
  end of its stdin (the collector's end of the pipe closes when it dies) anywhere. The
  cursors make an abrupt end lose nothing. SIGHUP is the collector's to handle (it
  restarts its child when [publish] changed); alone, SIGHUP re-reads the config and
  applies [publish]: anew, or off (exit 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog

from collector import config
from collector.config import Config
from collector.ops import logs
from collector.publish import status as pstatus
from collector.publish.publisher import Publisher
from collector.runtime import tree

log = structlog.get_logger("publish")

EX_LOCKED = 75  # EX_TEMPFAIL: another publisher holds the output directory
MAX_HANDOFF_BYTES = 1 << 20
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class Locked(Exception):
    pass


@dataclass(frozen=True)
class ChildArgs:
    """What `collector run` tells its publisher besides the config."""

    parent: int  # the collector's pid
    run_ns: int  # the collector's start
    fatal: bool  # a certain config error ends the process with 78 (the collector's first start)


def handoff(cfg: Config, args: ChildArgs) -> bytes:
    """The line `collector run` writes on its child's stdin."""
    return orjson.dumps({"config": config.to_dict(cfg), "path": str(cfg.path or ""), "parent": args.parent,
                         "run_ns": args.run_ns, "fatal": args.fatal}, option=orjson.OPT_APPEND_NEWLINE)


def read_handoff(fd: int = 0) -> tuple[Config, ChildArgs]:
    """The config and ChildArgs from the line on `fd`; ConfigError for a config that
    does not validate, ValueError for anything else wrong (or EOF: the parent is gone)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 65536)
        if not chunk:
            raise ValueError("stdin closed before the config came")
        data += chunk
        if len(data) > MAX_HANDOFF_BYTES:
            raise ValueError(f"more than {MAX_HANDOFF_BYTES} bytes on stdin")
    rec = orjson.loads(data)
    path = Path(rec["path"]) if rec["path"] else None
    cfg = config.from_dict(rec["config"], path)
    return cfg, ChildArgs(int(rec["parent"]), int(rec["run_ns"]), bool(rec["fatal"]))


def die_with_parent(parent: int) -> None:
    """SIGKILL when the parent dies (Linux); exit now if it is already gone."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed; the end of stdin says when the collector is gone",
                        errno=ctypes.get_errno())
    if os.getppid() != parent:  # it died before prctl: no signal will come
        os._exit(1)


def lock(directory: Path) -> int:
    """Hold an flock on LOCK_NAME in `directory` for the process's lifetime (Locked when
    another publisher holds it; UnsafePath for a symlink there)."""
    try:
        return tree.hold_lock(directory, pstatus.LOCK_NAME)
    except tree.Held as held:
        raise Locked(f"{directory} is being published by another publisher (pid {held.holder})") from None


def write_status(directory: Path, data: bytes) -> None:
    """Replace STATUS_NAME atomically: a temp file created anew (whatever had its name,
    a symlink too, is removed first, never written through), renamed over it."""
    tmp = pstatus.STATUS_NAME + ".tmp"
    with tree.folder_fd(directory) as dir_fd:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        fd = tree.open_file(dir_fd, tmp, directory / tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, pstatus.STATUS_NAME, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def _tag(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event.setdefault("process", "publisher")
    return event


def configure_logs(level: str) -> None:
    """The collector's log format, each line tagged `"process": "publisher"` (as a child
    its lines go to the collector's stderr)."""
    logs.configure(level)
    structlog.configure(processors=[_tag, *structlog.get_config()["processors"]])


class Service:
    """The publisher process: lock, Publisher, status file, signals."""

    def __init__(self, cfg: Config, child: ChildArgs | None = None) -> None:
        self.cfg = cfg
        self.child = child
        self.directory = cfg.output.dir
        self.publisher: Publisher | None = None
        self.exit_status = 0
        self.seq = 0
        self._stop = asyncio.Event()
        self._budget: float | None = None  # None: publish.stop_timeout_s
        self._status_failing = False
        self._reloading: asyncio.Future[None] | None = None

    async def run(self) -> int:
        self._lower_priority()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        try:
            lock_fd = lock(self.directory)
        except Locked as exc:
            log.error("output directory already published", error=str(exc))
            return EX_LOCKED
        except OSError as exc:
            log.error("cannot lock the output directory", error=str(exc), config=str(self.cfg.path))
            return config.EX_CONFIG if isinstance(exc, tree.UnsafePath) else 1
        try:
            if self.child is not None:
                self._watch_parent(loop)
            self.publisher = self._new(None)
            self.publisher.start()
            log.info("publisher started", stream=self.cfg.publish.stream, output=str(self.directory),
                     child=self.child is not None)
            reporting = asyncio.create_task(self._report(), name="publisher-status")
            await self._stop.wait()
            await self.publisher.stop(self._budget)
            reporting.cancel()
            await asyncio.gather(reporting, return_exceptions=True)
            await self._write(stopped=True)
            return self.exit_status
        finally:
            os.close(lock_fd)

    def _lower_priority(self) -> None:
        """publish.nice below the niceness it starts with (the collector's, as its child).
        A system-call filter may forbid it (systemd's ~@resources): then said, and gone on."""
        try:
            os.nice(self.cfg.publish.nice)
        except OSError as exc:
            log.warning("cannot lower the publisher's priority (publish.nice); it runs at the "
                        "collector's", error=str(exc))

    def _new(self, before: Publisher | None) -> Publisher:
        fatal = self.child.fatal if self.child is not None else before is None
        return Publisher(self.cfg.publish, self.directory, raw=self.cfg.output.raw,
                         run_ns=self.child.run_ns if self.child is not None else None,
                         on_fatal=self._fatal if fatal else None, before=before, on_crash=self._crashed)

    def _fatal(self, why: str) -> None:
        log.error("publish: config error, stopping", error=why, config=str(self.cfg.path))
        self.exit_status = config.EX_CONFIG
        self._budget = 0.0
        self._stop.set()

    def _crashed(self, _: BaseException) -> None:
        """A bug: exit 1 (the collector starts its publisher again; a unit's Restart= does)."""
        self.exit_status = 1
        self._budget = 0.0
        self._stop.set()

    async def _report(self) -> None:
        while True:
            await self._write()
            await asyncio.sleep(pstatus.STATUS_EVERY_S)

    async def _write(self, stopped: bool = False) -> None:
        if self.publisher is None:
            return
        self.seq += 1
        data = pstatus.encode(self.publisher.status(self.seq, stopped))
        try:
            await asyncio.to_thread(write_status, self.directory, data)
        except OSError as exc:
            if not self._status_failing:
                log.error("cannot write the publisher's status file", error=str(exc))
            self._status_failing = True
        else:
            self._status_failing = False

    def _watch_parent(self, loop: asyncio.AbstractEventLoop) -> None:
        """The end of stdin: the collector is gone (where PR_SET_PDEATHSIG is not)."""
        def wait_eof() -> None:
            with contextlib.suppress(OSError):
                while os.read(0, 4096):
                    pass
            loop.call_soon_threadsafe(self._parent_gone)

        threading.Thread(target=wait_eof, name="collector-parent", daemon=True).start()

    def _parent_gone(self) -> None:
        if not self._stop.is_set():
            log.warning("the collector is gone; stopping")
            self._budget = 0.0
            self._stop.set()

    def _on_hup(self) -> None:
        if self.child is not None:
            log.info("SIGHUP: the collector applies [publish] changes (it restarts this process)")
            return
        self._reloading = asyncio.ensure_future(self.reload())

    async def reload(self) -> None:
        """Alone: re-read the config; [publish] changed: publish anew, or stop (off)."""
        if self.cfg.path is None:
            return
        try:
            new = config.load(self.cfg.path)
        except config.ConfigError as exc:
            log.error("reload: config rejected, keeping the running one", error=str(exc))
            return
        if new.log.level != self.cfg.log.level:
            configure_logs(new.log.level)
        if new.publish == self.cfg.publish or self.publisher is None or self._stop.is_set():
            return
        if not new.publish.enabled:
            log.info("reload: publishing off; stopping")
            self._stop.set()
            return
        old = self.publisher
        await old.stop(0)
        self.cfg = new
        self.publisher = self._new(old)
        self.publisher.start()
        log.info("reload: publishing anew", stream=new.publish.stream)


async def child_main() -> int:
    """`collector publish --child`: the config from stdin, then as Service."""
    started = time.monotonic()
    try:
        cfg, args = read_handoff()
    except config.ConfigError as exc:
        print(f"collector publish: config error: {exc}", file=sys.stderr)
        return config.EX_CONFIG
    except (ValueError, KeyError, TypeError, OSError) as exc:
        print(f"collector publish: no usable config from the collector on stdin: {exc}", file=sys.stderr)
        return 1
    configure_logs(cfg.log.level)
    die_with_parent(args.parent)
    log.debug("publisher child ready", seconds=round(time.monotonic() - started, 3))
    return await Service(cfg, args).run()
