"""The single writer: a bounded queue drained in batches into rotated segment files.

Feeds `put` each frame's records (whole lines, already rendered) on one bounded
queue; when it is full they wait, so a book never skips an update. One task
drains everything queued, groups it by stream (a symbol's records, or its raw
frames), and hands the batch to a thread that appends it with one write per stream,
so a slow disk never blocks the event loop. A batch of appends to files already open
goes to the C appender (`_appender.c`, when built), whose thread never takes the GIL;
a batch that opens or rotates a file, marks a loss, or finds housekeeping due goes to
the Python writer thread, which does all of that. One batch is in flight at a time,
which keeps every file's lines in queue order. Each hand-off still costs more than
the lines it carries, so once a batch comes out large, the feeds are busy and the next
one is given LINGER_S to gather; under light load batches are written at once.
Compression and retention run on a third thread, so shutdown never waits for them.

Whole lines only: a write that fails part-way (ENOSPC, EIO) is cut back to the
last line boundary and the lines it held are counted as dropped; the next
successful write to that stream starts with a `resync` record (reason
`dropped`) carrying the count, so the loss is marked in the file.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import structlog

from collector import __version__
from collector.config import OutputConfig
from collector.core import format
from collector.core.format import Reason
from collector.core.histogram import WRITE_BOUNDS_S, Histogram
from collector.runtime import leftovers, segments, tree
from collector.runtime.linequeue import LineQueue

log = structlog.get_logger("writer")

_STOP = ("", b"")  # sentinel queued by stop(); the writer ends after it
_CLOSE = bytes(bytearray(b"close"))  # queued by close(symbol), recognised by identity
_os_write = os.write  # seam: tests inject ENOSPC and short writes here (the Python thread's writes)
try:
    from collector.runtime._appender import Appender
    APPENDER: Callable[[], Appender] | None = Appender  # None: every batch on the Python thread
except ImportError:  # built without a C compiler
    APPENDER = None
_BOOK = b'{"type":"book"'
_RESYNC = b'{"type":"resync"'
FREE_CHECK_S = 5.0
# A batch of LINGER_ITEMS queue items (frames) or more: the next gathers for LINGER_S,
# unless a whole batch is queued already (lingering then would only fall further
# behind). At 8 symbols at the simulator's full rate this cut the collector's CPU per
# update by about a fifth (bench/README.md); at 5,000 updates/s batches stay far smaller.
LINGER_ITEMS = 64
LINGER_S = 0.002


def raw_key(symbol: str) -> str:
    """Queue key (and folder below the output dir) of a symbol's raw frames."""
    return f"{symbol}/raw"


class SegmentFile:
    """The active `current.jsonl` of one stream, appended with whole lines only. It owns
    `dir_fd`, its folder's descriptor (opened from `folder` when not given)."""

    def __init__(self, folder: Path, start: int, dir_fd: int | None = None) -> None:
        self.folder = folder
        self.path = folder / format.CURRENT
        self.start = start  # the UTC-aligned period it belongs to
        self.dir_fd = tree.open_folder(folder) if dir_fd is None else dir_fd
        self.fd = -1
        try:
            self.fd = tree.open_file(self.dir_fd, format.CURRENT, self.path,
                                         os.O_RDWR | os.O_CREAT | os.O_APPEND)
            self.size = leftovers.cut_partial_line(self.fd, self.path)
        except BaseException:
            self.close()
            raise
        self.header_size = 0  # a segment holding only its header is not rotated by size
        self.dirty = False

    def write(self, data: bytes) -> None:
        """Append `data` (whole lines) or nothing: on error cut back and raise."""
        view = memoryview(data)
        done = 0
        try:
            while done < len(data):
                done += _os_write(self.fd, view[done:])
        except OSError:
            if done:
                os.ftruncate(self.fd, self.size)
            raise
        self.size += done
        self.dirty = True

    def fsync(self) -> None:
        self.dirty = False
        os.fsync(self.fd)

    def close(self) -> None:
        """Close the file and its folder (again: nothing)."""
        for fd in (self.fd, self.dir_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.dir_fd = -1


class Append(NamedTuple):
    """One stream's part of a batch, as the C appender writes it."""
    key: str
    file: SegmentFile
    chunks: list[bytes]
    data: bytes


class Writer:
    def __init__(self, out: OutputConfig, config_dump: dict[str, Any] | None = None,
                 native: bool = True) -> None:
        self.out = out
        self.native = native and APPENDER is not None  # appends to open files on the C appender
        self.directory = out.dir
        self.period_s = out.rotate_s
        self.max_bytes = int(out.max_segment_mb * 2**20)
        self.config_dump = config_dump or {}
        self.queue: LineQueue[tuple[str, bytes]] = LineQueue(out.queue_size)
        self.files: dict[str, SegmentFile] = {}
        self.last_book: dict[str, bytes | None] = {}  # carried into the next segment
        self.bytes_written: Counter[str] = Counter()
        self.lines_written: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()  # lines lost since the last successful write
        self.dropped_total = 0
        self.queue_full_waits = 0
        self.write_errors = 0
        self.fsync_errors = 0
        self.rotations = 0
        self.free_bytes: int | None = None
        self.started = asyncio.Event()  # start-up done: READY=1 waits for it
        self.write_latency = Histogram(WRITE_BOUNDS_S, scale=1.0)  # seconds per batch
        self.queue_wait_s = 0.0  # time feeds spent waiting on a full queue
        self._low_space = False
        self._next_free_check = 0.0
        self._rotated_for: int | None = None  # the period whose idle files time rotation has closed
        self._last_fsync = time.monotonic()
        # retention keeps a segment for which this says True (not yet published: publish/)
        self.retain_filter: Callable[[Path], bool] | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="collector-writer")
        self._appender: Appender | None = None  # while run() runs, if built
        self._appender_thread: threading.Thread | None = None  # runs its serve()
        self._appended: asyncio.Future[list[tuple[int, int, int]]] | None = None
        self._io = asyncio.Lock()  # one batch (or reopen) at a time on the files
        self._background = ThreadPoolExecutor(1, thread_name_prefix="collector-compress")

    # ---- the loop side --------------------------------------------------------------------

    def offer(self, key: str, data: bytes) -> bool:
        """Queue whole lines if there is room, without a coroutine (the per-frame path);
        False when the queue is full: then `await put(...)`."""
        try:
            self.queue.put_nowait((key, data))
        except asyncio.QueueFull:
            return False
        return True

    async def put(self, key: str, data: bytes) -> None:
        """Queue whole lines for a stream; waits (and counts it) when the queue is full."""
        if self.offer(key, data):
            return
        self.queue_full_waits += 1
        if self.queue_full_waits == 1 or self.queue_full_waits % 1000 == 0:
            log.warning("queue full, feeds waiting for the writer",
                        waits=self.queue_full_waits, size=self.queue.maxsize)
        waited = time.monotonic()
        await self.queue.put((key, data))
        self.queue_wait_s += time.monotonic() - waited

    async def run(self) -> None:
        """Drain the queue until stop(); then flush and fsync every file."""
        loop = asyncio.get_running_loop()
        queue = self.queue
        stopping = busy = False
        await loop.run_in_executor(self._thread, self._start_up)
        if self.native and APPENDER is not None:
            self._appender = APPENDER()
            self._appender_thread = threading.Thread(target=self._appender.serve, daemon=True,
                                                     name="collector-appender")
            self._appender_thread.start()
            loop.add_reader(self._appender.fileno(), self._on_appended)
        self.started.set()
        try:
            while not stopping:
                try:
                    async with asyncio.timeout(self._idle_timeout()):
                        item = await queue.get()
                except TimeoutError:
                    await loop.run_in_executor(self._thread, self._housekeeping, {})
                    continue
                if busy and queue.qsize() < self.out.batch_max:  # behind: no time to lose
                    await asyncio.sleep(LINGER_S)
                batch: dict[str, list[bytes]] = defaultdict(list)
                taken = 0
                closing = None
                while True:
                    if item is _STOP:
                        stopping = True
                        break
                    if item[1] is _CLOSE:
                        closing = item[0]
                        break
                    batch[item[0]].append(item[1])
                    taken += 1
                    if taken == self.out.batch_max or queue.empty():
                        break
                    item = queue.get_nowait()
                busy = taken >= LINGER_ITEMS
                if batch:
                    began = loop.time()
                    async with self._io:
                        appends = self._appends(batch)
                        if appends is None:
                            await loop.run_in_executor(self._thread, self._write_batch, batch)
                        else:
                            await self._append(appends)
                    self.write_latency.observe(loop.time() - began)
                if closing is not None:
                    await loop.run_in_executor(self._thread, self._close_stream, closing)
            await loop.run_in_executor(self._thread, self._close_all)
        finally:
            if self._appender is not None:
                loop.remove_reader(self._appender.fileno())
                self._appender.close()
                if self._appender_thread is not None:
                    self._appender_thread.join()  # after a batch still in flight
                self._appender = self._appender_thread = None
            self._thread.shutdown(wait=True)
            self._background.shutdown(wait=False, cancel_futures=True)

    async def stop(self) -> None:
        """Queue the stop sentinel: everything queued before it gets written."""
        await self.queue.put(_STOP)

    async def close(self, symbol: str) -> None:
        """Close a stream's current.jsonl (and its raw file) as a segment once what is
        queued before this is written (a symbol no longer recorded: unlisted)."""
        await self.queue.put((symbol, _CLOSE))

    async def reopen(self) -> None:
        """Close every file (fsynced); the next write reopens `current.jsonl` by name."""
        async with self._io:  # never while the appender writes to them
            await asyncio.get_running_loop().run_in_executor(self._thread, self._close_all)

    def _idle_timeout(self) -> float:
        """Seconds until the next period boundary or interval fsync is due."""
        now = time.time()
        wait = segments.period_start(now, self.period_s) + self.period_s - now
        if self.out.fsync == "interval":
            wait = min(wait, self.out.fsync_interval_s)
        return max(wait, 0.001)

    def _appends(self, batch: dict[str, list[bytes]]) -> list[Append] | None:
        """The batch as appends to open files, for the C appender; None when it needs the
        Python thread: a file to open or rotate, a loss to mark, housekeeping due."""
        if self._appender is None:
            return None
        now, mono = time.time(), time.monotonic()
        start = segments.period_start(now, self.period_s)
        if start != self._rotated_for or mono >= self._next_free_check or (
                self.out.fsync == "interval" and mono - self._last_fsync >= self.out.fsync_interval_s):
            return None
        appends = []
        for key, chunks in batch.items():
            f = self.files.get(key)
            data = b"".join(chunks)
            if (f is None or f.start != start or self.dropped[key]
                    or (f.size + len(data) > self.max_bytes and f.size > f.header_size)):
                return None
            appends.append(Append(key, f, chunks, data))
        return appends

    async def _append(self, appends: list[Append]) -> None:
        """Write the appends on the C appender's thread; a failed one is cut back to its
        last whole line and counted on the Python thread, as `_write_batch` does."""
        assert self._appender is not None
        self._appended = asyncio.get_running_loop().create_future()
        self._appender.submit([(a.file.fd, a.data) for a in appends])
        results = await self._appended
        failed = []
        for a, (written, err, _) in zip(appends, results, strict=True):
            if err:
                failed.append((a, written, OSError(err, os.strerror(err))))
            else:
                a.file.size += written
                a.file.dirty = True
                self._wrote(a.key, a.chunks, written, a.data.count(b"\n"))
        if failed:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._cut_back, failed)

    def _on_appended(self) -> None:
        assert self._appender is not None
        results = self._appender.results()
        if results is not None and self._appended is not None and not self._appended.done():
            self._appended.set_result(results)

    # ---- the writer thread --------------------------------------------------------------

    def _start_up(self) -> None:
        """Close every leftover current.jsonl as a segment; compress what is pending."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for key in tree.stream_folders(self.directory):
            try:
                with tree.folder_fd(self.directory, key.split("/")) as dir_fd:
                    self._settle(dir_fd, key)
                    pending = segments.pending_compression(dir_fd)
            except OSError as exc:  # that stream's writes fail (and are marked) instead
                log.error("cannot tidy a folder at start-up", path=str(self.directory / key),
                          error=str(exc))
                continue
            for name in pending:
                self._background.submit(self._compress, key, name)
        self._background.submit(self._retain)

    def _settle(self, dir_fd: int, key: str, keep: int | None = None) -> str | None:
        """`leftovers.settle` a stream's folder; the name of the segment it closed."""
        folder = self.directory / key
        target = leftovers.settle(dir_fd, folder, key.split("/")[0], "/" in key, self.period_s, keep)
        if target is not None:
            self._fsync_dir(folder, dir_fd)
        return target

    def _write_batch(self, batch: dict[str, list[bytes]]) -> None:
        now = time.time()
        for key, chunks in batch.items():
            data = b"".join(chunks)
            lines = data.count(b"\n")
            if self.dropped[key]:
                data = format.resync(key.split("/")[0], Reason.DROPPED, time.time_ns(),
                                      dropped=self.dropped[key]) + data
            try:
                f = self._file_for(key, now, len(data))
                f.write(data)
            except OSError as exc:
                self._lost(key, lines, exc)
                continue
            self._wrote(key, chunks, len(data), lines)
        self._housekeeping(batch)

    def _cut_back(self, failed: list[tuple[Append, int, OSError]]) -> None:
        """Appends the C appender could not finish: cut each file back to its last whole
        line (`SegmentFile.write`'s rule) and count the lines as lost."""
        for a, written, exc in failed:
            if written:
                try:
                    os.ftruncate(a.file.fd, a.file.size)
                except OSError as cut:
                    exc = cut
            self._lost(a.key, a.data.count(b"\n"), exc)

    def _wrote(self, key: str, chunks: list[bytes], size: int, lines: int) -> None:
        if self.dropped[key]:
            log.warning("writing again after loss", stream=key, dropped=self.dropped[key])
            self.dropped[key] = 0
        self.bytes_written[key] += size
        self.lines_written[key] += lines
        if "/" not in key:
            self._track_book(key, chunks)

    def _lost(self, key: str, lines: int, exc: OSError) -> None:
        self.write_errors += 1
        self.dropped_total += lines
        if not self.dropped[key]:
            log.error("write failed, dropping lines", stream=key,
                      path=str(self.directory / key), error=str(exc), lines=lines)
        self.dropped[key] += lines
        self.last_book[key] = None  # the book lines lost may have changed it

    def _track_book(self, key: str, chunks: list[bytes]) -> None:
        """Remember the stream's last book record (a resync ends its book)."""
        for data in reversed(chunks):
            if data.startswith(_RESYNC):
                self.last_book[key] = None
                return
            i = data.rfind(b"\n", 0, len(data) - 1) + 1
            if data.startswith(_BOOK, i):
                self.last_book[key] = data[i:]
                return

    def _file_for(self, key: str, now: float, incoming: int) -> SegmentFile:
        f = self.files.get(key)
        start = segments.period_start(now, self.period_s)
        if f is not None and (f.start != start or (
                f.size + incoming > self.max_bytes and f.size > f.header_size)):
            self._rotate(key)
            f = None
        if f is None:
            f = self._open(key, start)
        return f

    def _open(self, key: str, start: int) -> SegmentFile:
        folder = self.directory / key
        dir_fd = tree.open_folder(self.directory, key.split("/"), create=True)
        try:
            closed = self._settle(dir_fd, key, keep=start)
        except BaseException:
            os.close(dir_fd)
            raise
        if closed:
            self._background.submit(self._compress, key, closed)
        f = SegmentFile(folder, start, dir_fd)
        try:
            if f.size == 0:  # a new segment (a reopened one of this period has its header)
                head = format.header(key.split("/")[0], "raw" if "/" in key else "records",
                                      start, __version__, self.config_dump)
                try:
                    f.write(head + (self.last_book.get(key) or b""))
                except OSError:
                    os.unlink(format.CURRENT, dir_fd=f.dir_fd)
                    raise
                f.header_size = f.size
                self._fsync_dir(folder, f.dir_fd)
        except BaseException:
            f.close()
            raise
        self.files[key] = f
        return f

    def _rotate(self, key: str) -> None:
        """Close the stream's segment under its period's name. If the rename fails, the
        file stays `current.jsonl` and the stream's next open closes it (`_settle`)."""
        f = self.files.pop(key)
        try:
            self._fsync(key, f)
            target = segments.free_name(os.listdir(f.dir_fd), key.split("/")[0], f.start)
            os.rename(format.CURRENT, target, src_dir_fd=f.dir_fd, dst_dir_fd=f.dir_fd)
            self._fsync_dir(f.folder, f.dir_fd)
        except OSError as exc:
            self.write_errors += 1
            log.error("cannot close the segment", path=str(f.path), error=str(exc))
            return
        finally:
            f.close()
        self.rotations += 1
        self._background.submit(self._compress, key, target)

    def _close_stream(self, symbol: str) -> None:
        for key in (symbol, raw_key(symbol)):
            self.last_book.pop(key, None)
            if key in self.files:
                self._rotate(key)

    def _housekeeping(self, batch: dict[str, list[bytes]]) -> None:
        """Time rotation of idle files, interval fsync, the free-space check."""
        now = time.time()
        start = segments.period_start(now, self.period_s)
        if start != self._rotated_for:  # a new period: each file of an older one, once
            stale = [k for k, f in self.files.items() if f.start != start]
            for key in stale:
                if key not in batch:
                    self._rotate(key)  # reopened, with its header and book, on the stream's next write
            if not any(k in batch for k in stale):
                self._rotated_for = start
        mono = time.monotonic()
        if self.out.fsync == "interval" and mono - self._last_fsync >= self.out.fsync_interval_s:
            self._last_fsync = mono
            for key, f in self.files.items():
                if f.dirty:
                    self._fsync(key, f)
        if mono >= self._next_free_check:
            self._next_free_check = mono + FREE_CHECK_S
            self._check_free_space()

    def _check_free_space(self) -> None:
        try:
            self.free_bytes = shutil.disk_usage(self.directory).free
        except OSError:
            return
        low = self.free_bytes < self.out.min_free_mb * 2**20
        if low and not self._low_space:
            log.warning("low free disk space", path=str(self.directory),
                        free_mb=self.free_bytes // 2**20, min_free_mb=self.out.min_free_mb)
        elif self._low_space and not low:
            log.info("free disk space recovered", free_mb=self.free_bytes // 2**20)
        self._low_space = low

    def _fsync(self, key: str, f: SegmentFile) -> None:
        try:
            f.fsync()
        except OSError as exc:  # reported, never retried as if it had worked
            self.fsync_errors += 1
            log.error("fsync failed", stream=key, path=str(f.path), error=str(exc))

    def _fsync_dir(self, folder: Path, dir_fd: int) -> None:
        try:
            os.fsync(dir_fd)
        except OSError as exc:
            self.fsync_errors += 1
            log.error("fsync of directory failed", path=str(folder), error=str(exc))

    def _close_all(self) -> None:
        for key, f in self.files.items():
            self._fsync(key, f)
            self._fsync_dir(f.folder, f.dir_fd)
            f.close()
        self.files.clear()

    # ---- the background thread ----------------------------------------------------------

    def _compress(self, key: str, name: str) -> None:
        folder = self.directory / key
        try:
            with tree.folder_fd(self.directory, key.split("/")) as dir_fd:
                final = segments.compress_at(dir_fd, folder, name, self.out.compress)
        except OSError as exc:
            log.error("compression failed; the plain segment is kept", path=str(folder / name),
                      error=str(exc))
            return
        if final != name:
            log.info("segment compressed", path=str(folder / final))
        self._retain()

    def _retain(self) -> None:
        retain_bytes = int(self.out.retain_gb * 2**30) or None
        keep = self.retain_filter
        for path in segments.expired(self.directory, self.out.retain_s, retain_bytes):
            if keep is not None and keep(path):
                continue  # the filter logs it
            parts = path.relative_to(self.directory).parts
            try:  # by name in its folder, reached without following a symlink
                with tree.folder_fd(self.directory, parts[:-1]) as dir_fd:
                    os.unlink(parts[-1], dir_fd=dir_fd)
                log.info("retention: deleted segment", path=str(path))
            except OSError as exc:
                log.error("retention: cannot delete", path=str(path), error=str(exc))
