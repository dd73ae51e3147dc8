"""Segment files: names, UTC-aligned periods, leftovers of a crash, compression, retention.

A symbol's directory holds the active `current.jsonl` and closed segments named
`<SYMBOL>.<UTC start YYYYMMDDTHHMMSSZ>[-N].jsonl[.zst|.gz]` (`format.SegmentName`),
N = 2, 3, ... for segments closed early by size within one period. Compression writes
`<name>.zst.tmp`, fsyncs, renames, then removes the plain file, so a crash at any
point leaves either the plain segment or the complete compressed one (a leftover
plain file beside its compressed twin is removed at the next start).
"""

from __future__ import annotations

import gzip
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog

from collector.core.format import COMPRESSED, SegmentName, header_start_s, parse_header

log = structlog.get_logger("segments")


def period_start(now: float, period_s: int) -> int:
    """Start (epoch seconds) of the UTC-aligned period holding `now`."""
    return int(now // period_s) * period_s


@dataclass(frozen=True, order=True)
class Closed:
    """A closed segment's file, ordered by (start, n)."""

    name: SegmentName
    path: Path

    @classmethod
    def at(cls, path: Path) -> Closed | None:
        name = SegmentName.parse(path.name)
        return None if name is None else cls(name, path)

    @property
    def start(self) -> int:
        return self.name.start_s

    @property
    def n(self) -> int:
        return self.name.n

    @property
    def compressed(self) -> bool:
        return bool(self.name.comp)


def closed_segments(folder: Path) -> list[Closed]:
    """Closed segments in order; a segment present plain and compressed counts once (plain)."""
    found: dict[tuple[int, int], Closed] = {}
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    for entry in entries:
        seg = Closed.at(Path(entry.path))
        if seg is None:
            continue
        key = (seg.start, seg.n)
        if key not in found or found[key].compressed:
            found[key] = seg
    return sorted(found.values())


def closed_name(folder: Path, symbol: str, start: int) -> Path:
    """Name for the next segment closed in the period starting at `start`."""
    taken = {s.n for s in closed_segments(folder) if s.start == start}
    n = 1
    while n in taken:
        n += 1
    return folder / SegmentName(start, n, symbol).plain


def first_line(path: Path) -> bytes:
    """The first line of `path` (at most 1 MiB of it); b"" when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.readline(1 << 20)
    except OSError:
        return b""


def peek_header(path: Path) -> dict[str, Any] | None:
    """The header record on the first line of `path` (a `current.jsonl`), or None
    when it has none (empty, unreadable, or written before segments had headers)."""
    return parse_header(first_line(path))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def compress(path: Path, method: str) -> Path:
    """Compress a closed plain segment; returns the final path. Runs off the loop."""
    if method == "none":
        return path
    final = path.with_name(path.name + COMPRESSED[method])
    tmp = final.with_name(final.name + ".tmp")
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        if method == "zstd":
            import zstandard

            # level 3 (zstd's default) with 1 thread: fast, and leaves the other core alone
            zstandard.ZstdCompressor(level=3).copy_stream(src, dst)
        else:
            with gzip.GzipFile(fileobj=dst, mode="wb", compresslevel=6, mtime=0) as gz:
                shutil.copyfileobj(src, gz, 1 << 20)
        dst.flush()
        os.fsync(dst.fileno())
    os.rename(tmp, final)
    fsync_dir(path.parent)
    os.unlink(path)
    return final


def pending_compression(folder: Path) -> Iterator[Path]:
    """Plain closed segments still to compress; removes stale `.tmp` files and plain
    files whose compressed twin is complete (a crash between rename and unlink)."""
    try:
        names = {e.name for e in os.scandir(folder)}
    except FileNotFoundError:
        return
    for name in sorted(names):
        if name.endswith(".tmp"):
            os.unlink(folder / name)
            continue
        seg = SegmentName.parse(name)
        if seg is None or seg.comp:
            continue
        if any(name + suffix in names for suffix in COMPRESSED.values() if suffix):
            os.unlink(folder / name)
            continue
        yield folder / name


def expired(root: Path, retain_s: int | None, retain_bytes: int | None,
            now: float | None = None) -> list[Path]:
    """Closed segments under `root` beyond the age or the total-size bound, oldest first."""
    if retain_s is None and not retain_bytes:
        return []
    now = time.time() if now is None else now
    segs: list[tuple[int, int, os.stat_result, Path]] = []
    for dirpath, _, _ in os.walk(root):
        for seg in closed_segments(Path(dirpath)):
            try:
                segs.append((seg.start, seg.n, seg.path.stat(), seg.path))
            except FileNotFoundError:
                continue
    segs.sort(key=lambda s: (s[0], s[1]))
    doomed: list[Path] = []
    total = sum(st.st_size for _, _, st, _ in segs)
    for _, _, st, path in segs:
        too_old = retain_s is not None and st.st_mtime < now - retain_s
        too_big = retain_bytes is not None and 0 < retain_bytes < total
        if not (too_old or too_big):
            continue
        doomed.append(path)
        total -= st.st_size
    return doomed


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


def leftover_start(path: Path, period_s: int) -> int:
    """Period of a leftover current.jsonl: its header's, else its first record's (a file
    from before segments had headers), else its mtime's."""
    head = peek_header(path)
    start = None if head is None else header_start_s(head)
    if start is not None:
        return start
    if head is None:
        try:
            recv_ns = orjson.loads(first_line(path)).get("recv_ns")
        except (orjson.JSONDecodeError, AttributeError):
            recv_ns = None
        if isinstance(recv_ns, int):
            return period_start(recv_ns / 1e9, period_s)
    return period_start(path.stat().st_mtime, period_s)
