"""The single writer: a bounded queue drained in batches into per-symbol files.

Feeds `put` each frame's records (whole lines, already rendered) on one bounded
queue; when it is full they wait, so a book never skips an update. One task
drains everything queued, groups it by symbol, and hands the batch to one
dedicated thread that appends it with as few `os.write` calls as it can. A
slow disk therefore never blocks the event loop, and the thread being single
keeps every file's lines in queue order.

Whole lines only: a write that fails part-way (ENOSPC, EIO) is cut back to the
last line boundary and the lines it held are counted as dropped; the next
successful write to that symbol starts with a `resync` record (reason
`dropped`) carrying the count, so the loss is marked in the file.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import structlog

from collector import records

log = structlog.get_logger("writer")

_STOP = ("", b"")
_os_write = os.write  # seam: tests inject ENOSPC and short writes here  # sentinel queued by stop(); the writer ends after it


class SymbolFile:
    """`<dir>/<SYMBOL>/current.jsonl`, appended with whole lines only."""

    def __init__(self, directory: Path, symbol: str) -> None:
        folder = directory / symbol
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "current.jsonl"
        created = not self.path.exists()
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self.size = cut_partial_line(self.fd, self.path)
        if created:
            fsync_dir(folder)

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

    def fsync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


def cut_partial_line(fd: int, path: Path) -> int:
    """Truncate a torn last line (left by a crash); return the file's size."""
    size = os.fstat(fd).st_size
    if size == 0:
        return 0
    end = size
    while end > 0:
        start = max(0, end - 65536)
        chunk = os.pread(fd, end - start, start)
        if end == size and chunk.endswith(b"\n"):
            return size
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            end = start + nl + 1
            break
        end = start
    os.ftruncate(fd, end)
    log.warning("cut a partial last line left by a crash", path=str(path), removed_bytes=size - end)
    return end


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Writer:
    def __init__(self, directory: Path, queue_size: int = 10000, batch_max: int = 1000) -> None:
        self.directory = directory
        self.batch_max = batch_max
        self.queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(queue_size)
        self.files: dict[str, SymbolFile] = {}
        self.bytes_written: Counter[str] = Counter()
        self.lines_written: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()  # lines lost since the last successful write
        self.dropped_total = 0
        self.queue_full_waits = 0
        self.write_errors = 0
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="collector-writer")

    async def put(self, symbol: str, data: bytes) -> None:
        """Queue whole lines for `symbol`; waits (and counts it) when the queue is full."""
        try:
            self.queue.put_nowait((symbol, data))
        except asyncio.QueueFull:
            self.queue_full_waits += 1
            if self.queue_full_waits == 1 or self.queue_full_waits % 1000 == 0:
                log.warning("queue full, feeds waiting for the writer",
                            waits=self.queue_full_waits, size=self.queue.maxsize)
            await self.queue.put((symbol, data))

    async def run(self) -> None:
        """Drain the queue until stop(); then flush and fsync every file."""
        loop = asyncio.get_running_loop()
        queue = self.queue
        stopping = False
        try:
            while not stopping:
                batch: dict[str, list[bytes]] = defaultdict(list)
                item = await queue.get()
                taken = 0
                while True:
                    if item is _STOP:
                        stopping = True
                        break
                    batch[item[0]].append(item[1])
                    taken += 1
                    if taken == self.batch_max or queue.empty():
                        break
                    item = queue.get_nowait()
                if batch:
                    await loop.run_in_executor(self._thread, self._write_batch, batch)
            await loop.run_in_executor(self._thread, self._close_all)
        finally:
            self._thread.shutdown(wait=True)

    async def stop(self) -> None:
        """Queue the stop sentinel: everything queued before it gets written."""
        await self.queue.put(_STOP)

    def _write_batch(self, batch: dict[str, list[bytes]]) -> None:
        for symbol, chunks in batch.items():
            data = b"".join(chunks)
            lines = data.count(b"\n")
            if self.dropped[symbol]:
                data = records.resync(symbol, "dropped", time.time_ns(),
                                      dropped=self.dropped[symbol]) + data
            try:
                f = self.files.get(symbol)
                if f is None:
                    f = self.files[symbol] = SymbolFile(self.directory, symbol)
                f.write(data)
            except OSError as exc:
                self.write_errors += 1
                self.dropped_total += lines
                if not self.dropped[symbol]:
                    log.error("write failed, dropping lines", symbol=symbol,
                              path=str(self.directory / symbol), error=str(exc), lines=lines)
                self.dropped[symbol] += lines
                continue
            if self.dropped[symbol]:
                log.warning("writing again after loss", symbol=symbol, dropped=self.dropped[symbol])
                self.dropped[symbol] = 0
            self.bytes_written[symbol] += len(data)
            self.lines_written[symbol] += lines

    def _close_all(self) -> None:
        for symbol, f in self.files.items():
            try:
                f.fsync()
            except OSError as exc:  # reported, never retried as if it had worked
                log.error("fsync failed", symbol=symbol, path=str(f.path), error=str(exc))
            f.close()
        self.files.clear()
