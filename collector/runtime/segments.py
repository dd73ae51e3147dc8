"""Segment files: names, UTC-aligned periods, compression, retention.

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
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog

from collector.core.format import (
    COMPRESSED,
    SegmentName,
)
from collector.runtime.tree import open_file

log = structlog.get_logger("segments")



def period_start(now: float, period_s: int) -> int:
    """Start (epoch seconds) of the UTC-aligned period holding `now`."""
    return int(now // period_s) * period_s


# ---- names --------------------------------------------------------------------------------

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


def free_name(names: Iterable[str], symbol: str, start: int) -> str:
    """Name for the next segment closed in the period starting at `start`, given the
    folder's `names` (whatever holds a segment's name, a symlink too, counts as taken)."""
    taken = {seg.n for seg in map(SegmentName.parse, names) if seg is not None and seg.start_s == start}
    n = 1
    while n in taken:
        n += 1
    return SegmentName(start, n, symbol).plain


# ---- compression and retention --------------------------------------------------------------

def compress_at(dir_fd: int, folder: Path, name: str, method: str) -> str:
    """Compress the closed plain segment `name` in `folder` (open at `dir_fd`); returns
    the final name."""
    if method == "none":
        return name
    final = name + COMPRESSED[method]
    tmp = final + ".tmp"
    src = open_file(dir_fd, name, folder / name, os.O_RDONLY)
    try:
        _unlink(dir_fd, tmp)  # a stale one; O_EXCL below never opens what is there
        dst = open_file(dir_fd, tmp, folder / tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            with open(src, "rb", closefd=False) as fsrc, open(dst, "wb", closefd=False) as fdst:
                if method == "zstd":
                    import zstandard

                    # level 3 (zstd's default) with 1 thread: fast, and leaves the other core alone
                    zstandard.ZstdCompressor(level=3).copy_stream(fsrc, fdst)
                else:
                    with gzip.GzipFile(fileobj=fdst, mode="wb", compresslevel=6, mtime=0) as gz:
                        shutil.copyfileobj(fsrc, gz, 1 << 20)
            os.fsync(dst)
        except BaseException:
            _unlink(dir_fd, tmp)  # a full disk leaves no half .tmp behind
            raise
        finally:
            os.close(dst)
    finally:
        os.close(src)
    os.rename(tmp, final, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    os.fsync(dir_fd)
    os.unlink(name, dir_fd=dir_fd)
    return final


def _unlink(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def pending_compression(dir_fd: int) -> list[str]:
    """Plain closed segments (regular files) still to compress in folder `dir_fd`; removes
    stale `.tmp` files and plain files whose compressed twin is complete (a crash between
    rename and unlink). Symlinks are left alone, and none counts as a twin."""
    names = set(os.listdir(dir_fd))
    out = []
    for name in sorted(names):
        if name.endswith(".tmp"):
            _unlink(dir_fd, name)
            continue
        seg = SegmentName.parse(name)
        if seg is None or seg.comp or not _is_file(dir_fd, name):
            continue
        if any(_is_file(dir_fd, name + suffix) for suffix in COMPRESSED.values() if suffix):
            _unlink(dir_fd, name)
            continue
        out.append(name)
    return out


def _is_file(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def expired(root: Path, retain_s: int | None, retain_bytes: int | None,
            now: float | None = None) -> list[Path]:
    """Closed segments under `root` beyond the age or the total-size bound, oldest first.
    Symlinks are neither counted nor listed, nor followed into."""
    if retain_s is None and not retain_bytes:
        return []
    now = time.time() if now is None else now
    segs: list[tuple[int, int, os.stat_result, Path]] = []
    for dirpath, _, _ in os.walk(root):
        for seg in closed_segments(Path(dirpath)):
            try:
                st = seg.path.lstat()
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                segs.append((seg.start, seg.n, st, seg.path))
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


