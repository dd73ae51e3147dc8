"""Following one stream's files from a position (I/O, blocking: called in a thread).

A `Follower` reads a stream's closed segments in order (plain, `.zst` or `.gz`), then
its `current.jsonl` as it grows, and hands out whole lines only, each with its message
id and the position just after it (cursor.py). It keeps its file open across rotation
(the rename keeps the inode): once `current.jsonl` by name is another file or none, the
open one is read to its end and the next file is taken. Files are opened inside the
stream's folder without following a symlink (runtime/tree.py).

Not handed out, as `collector cat` skips them (tools/reading.py): header lines, and the
book line right after a header that repeats the last book line of the file before (the
copy a segment carries so it can be read alone). A line longer than `max_line` (only a
damaged or hostile file has one) is skipped and reported, and so is a file that cannot
be read.

Files are taken in `FileId` order (cursor.py): for closed segments their name order,
which stays right even when retention frees a name that a later segment then takes.
"""

from __future__ import annotations

import gzip
import io
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import IO, NamedTuple

import structlog
import zstandard

from collector.core.format import CURRENT, HEADER_LINE_MAX, SegmentName, header_start_s, parse_header
from collector.publish.cursor import Cursor, FileId, Position, book_digest, id_prefix
from collector.runtime import tree
from collector.tools.decoding import DECODE_ERRORS, MAX_LINE, ReadError, ZstdRaw

log = structlog.get_logger("publish")

BOOK = b'{"type":"book"'
HEADER = b'{"type":"header"'
CHUNK = 1 << 20
END = 2**63 - 1  # an offset past every line: the whole file
_NEWEST = FileId(2**62, 0)  # current.jsonl before its first line: after every file
_RECV_NS = re.compile(rb'"recv_ns":(-?[0-9]+)')
_PLAIN_FIRST = {"": 0, ".zst": 1, ".gz": 2}
# what a damaged or vanishing file raises
_UNREADABLE: tuple[type[BaseException], ...] = (OSError, ReadError, zstandard.ZstdError, *DECODE_ERRORS)


class Line(NamedTuple):
    msg_id: str
    data: bytes  # the line without its newline
    file: FileId
    end: int  # offset just after the line
    book: bytes | str | None  # the file's last book line so far (or its digest)


def recv_ns(line: bytes) -> int | None:
    """The line's own `recv_ns` (the first in it: records and raw lines write it before
    anything nested)."""
    m = _RECV_NS.search(line)
    return int(m[1]) if m else None


def digest(book: bytes | str | None) -> str | None:
    return book_digest(book) if isinstance(book, bytes) else book


def _header_start(line: bytes) -> int:
    head = parse_header(line[:HEADER_LINE_MAX])
    return (header_start_s(head) or 0) if head is not None else 0


def head_of(lines: list[bytes]) -> tuple[int, int] | None:
    """(start_s, first_ns) from a file's first whole lines; None before a line after
    the header."""
    start = 0
    if lines and lines[0].startswith(HEADER):
        start = _header_start(lines[0])
        lines = lines[1:]
    if not lines:
        return None
    first_ns = recv_ns(lines[0])
    return start, -1 if first_ns is None else first_ns


class _Open:
    """The file being read: its bytes, and what has been read of them."""

    def __init__(self, name: str, fd: int, offset: int, path: Path | None = None) -> None:
        self.name = name
        self.fd = fd
        self.current = name == CURRENT
        st = os.fstat(fd)
        self.inode = (st.st_dev, st.st_ino)
        self.stream: IO[bytes] | gzip.GzipFile | None = None  # compressed: the decompressed bytes
        self.read_pos = 0  # bytes read (decompressed ones for a compressed file)
        self.buf = b""  # bytes read; buf[i:] not yet handed out (a partial line at the end)
        self.i = 0
        self.pos = 0  # the offset of buf[i]
        self.file: FileId | None = None
        self.prefix = ""
        self.start_s = 0
        self.first = True  # the next line is the file's first
        self.after_header = False
        self.last_book: bytes | str | None = None
        self.skipping = False  # inside an over-long line
        self.rotated = False
        if name.endswith((".zst", ".gz")):
            raw = io.FileIO(fd, "rb", closefd=False)
            if name.endswith(".zst"):
                self.stream = io.BufferedReader(ZstdRaw(raw, path or Path(name)), CHUNK)
            else:
                self.stream = gzip.GzipFile(fileobj=raw, mode="rb")
            stream = self.stream
            while self.read_pos < offset:  # decompress up to the offset, in bounded pieces
                got = stream.read(min(CHUNK, offset - self.read_pos))
                if not got:
                    break
                self.read_pos += len(got)
        else:
            self.read_pos = min(offset, self.size())
        self.pos = self.read_pos

    def at(self, file: FileId, key: str, book: bytes | str | None) -> None:
        """Start in the middle of a known file."""
        self.file, self.prefix, self.last_book = file, id_prefix(key, file), book
        self.first = False

    def fill(self) -> bool:
        """Read more bytes; False at the end (for now, for current.jsonl)."""
        if self.stream is not None:
            got = self.stream.read(CHUNK)
        else:
            got = os.pread(self.fd, CHUNK, self.read_pos)
        if not got:
            return False
        self.read_pos += len(got)
        rest = self.buf[self.i:]
        self.buf, self.i = (rest + got if rest else got), 0
        return True

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def close(self) -> None:
        try:
            if self.stream is not None:
                self.stream.close()
        finally:
            os.close(self.fd)


class Follower:
    """One stream's lines from a cursor (or from its first file) on. One call at a time,
    in a worker thread; `ready()` alone is cheap enough for the event loop."""

    def __init__(self, root: Path, key: str, start: Cursor | None = None, max_line: int = MAX_LINE,
                 on_skip: Callable[[str], None] | None = None) -> None:
        self.root = root
        self.key = key
        self.parts = key.split("/")
        self.symbol = self.parts[0]
        self.folder = root / key
        self.max_line = max_line
        self.on_skip = on_skip  # called with why, once per line or file skipped as unreadable
        self.dir_fd = -1
        self.open: _Open | None = None
        # Everything before `after` is handled; `book` is the last book line of its file
        # before it (of the whole file once it is read to its END).
        self.after: Position | None = None if start is None else start.at
        self.book: bytes | str | None = None if start is None else start.book
        self.skip_through: Position | None = None  # lines up to this one are in the stream
        self.heads: dict[str, tuple[int, int] | None] = {}  # closed segment -> head_of
        self.refused: set[str] = set()

    # ---- the event loop's cheap check ------------------------------------------------

    def ready(self) -> bool:
        """Whether `read` may find something: whole lines read and not handed out,
        the open current.jsonl grew or was rotated away, another file is open, or none is."""
        f = self.open
        if f is None or not f.current or f.buf.find(b"\n", f.i) >= 0:
            return True
        try:
            if f.size() != f.read_pos:
                return True
            st = os.stat(CURRENT, dir_fd=self.dir_fd, follow_symlinks=False)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != f.inode

    # ---- reading ---------------------------------------------------------------------------

    def read(self, max_lines: int, max_bytes: int) -> list[Line]:
        """Up to `max_lines` lines (and about `max_bytes`); none means none for now."""
        out: list[Line] = []
        size = 0
        while len(out) < max_lines and size < max_bytes:
            f = self.open
            if f is None:
                if not self._next():
                    break
                continue
            try:
                size += self._lines(f, out, max_lines, max_bytes - size)
            except _UNREADABLE as exc:  # damaged: what it held up to here is all it gives
                self._refuse(f.name, exc)
                self._finish(f)
                continue
            if len(out) >= max_lines or size >= max_bytes:
                break
            if f.current and not f.rotated:
                if not self._rotated(f):
                    break  # at the end for now
                f.rotated = True  # renamed: what is left is read, then the next file
                continue
            self._finish(f)
        return out

    def skip_to(self, line: Position) -> None:
        """The line starting at `line`, and every one before it, is in the stream (its
        last message says so): go on after it."""
        where = self.position()
        if where is not None and line < where:
            return
        self.skip_through = line
        f = self.open
        if f is not None and f.file == line.file:
            return  # reading on in this file drops them
        self._close()
        self.after, self.book = Position(line.file, 0), None

    def position(self) -> Position | None:
        """Just after the last line handed out (or skipped)."""
        f = self.open
        if f is not None and f.file is not None:
            return Position(f.file, f.pos)
        return self.after

    def cursor(self, line: Line) -> Cursor:
        return Cursor(self.key, Position(line.file, line.end), digest(line.book))

    def close(self) -> None:
        self._close()
        if self.dir_fd >= 0:
            os.close(self.dir_fd)
            self.dir_fd = -1

    # ---- lines -----------------------------------------------------------------------------

    def _lines(self, f: _Open, out: list[Line], max_lines: int, max_bytes: int) -> int:
        """Whole lines of `f` into `out`; returns the bytes handed out."""
        size = 0
        take = self._take
        append = out.append
        while len(out) < max_lines and size < max_bytes:
            buf, i = f.buf, f.i
            nl = buf.find(b"\n", i)
            if nl < 0:
                if len(buf) - i > self.max_line:
                    self._skip_long(f)
                if not f.fill():
                    return size
                continue
            start = f.pos
            f.i = nl + 1
            f.pos = start + nl + 1 - i
            if f.skipping or nl - i > self.max_line:  # (the tail of) an over-long line
                if not f.skipping:
                    self._report_long(f, start)
                f.skipping = False
                continue
            line = buf[i:nl]
            if take(f, line, start):
                append(Line(f.prefix + str(start), line, f.file, f.pos, f.last_book))  # type: ignore[arg-type]
                size += len(line)
        return size

    def _take(self, f: _Open, line: bytes, start: int) -> bool:
        """Whether `line` (at `start` in `f`) is published; keeps the file's state."""
        first, f.first = f.first, False
        if line.startswith(HEADER):
            if first:
                f.start_s = _header_start(line)
            f.after_header = True
            return False
        if f.file is None:
            first_ns = recv_ns(line)
            head = (f.start_s, -1 if first_ns is None else first_ns)
            dup = self._rank(head, f.name)
            f.at(FileId(*head, dup), self.key, None)
        after_header, f.after_header = f.after_header, False
        if line.startswith(BOOK):
            prev = self.book
            carried = after_header and prev is not None and (
                line == prev if isinstance(prev, bytes) else book_digest(line) == prev)
            f.last_book = line
            if carried:
                return False
        skip = self.skip_through
        if skip is not None:
            if Position(f.file, start) <= skip:  # type: ignore[arg-type]
                return False
            self.skip_through = None
        return True

    def _report_long(self, f: _Open, offset: int) -> None:
        log.error("a line too long to publish, skipped", path=str(self.folder / f.name),
                  offset=offset, limit=self.max_line)
        if self.on_skip is not None:
            self.on_skip("too long")

    def _skip_long(self, f: _Open) -> None:
        if not f.skipping:
            self._report_long(f, f.pos)
        f.pos += len(f.buf) - f.i
        f.buf, f.i = b"", 0
        f.skipping = True

    def _rotated(self, f: _Open) -> bool:
        """Whether current.jsonl by name is no longer the open file."""
        try:
            st = os.stat(CURRENT, dir_fd=self.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return True
        if (st.st_dev, st.st_ino) != f.inode:
            return True
        size = f.size()
        if size < f.read_pos:  # cut back under us (a failed write): read on from there
            log.error("current.jsonl shrank while being published", path=str(self.folder / CURRENT),
                      size=size, was=f.read_pos)
            f.read_pos = f.pos = min(f.pos, size)
            f.buf, f.i = b"", 0
        return False

    def _finish(self, f: _Open) -> None:
        if len(f.buf) > f.i and not f.skipping:  # torn by a crash, or a cut compressed file
            log.warning("a last line without its newline, not published",
                        path=str(self.folder / f.name), offset=f.pos)
            if self.on_skip is not None:
                self.on_skip("no newline")
        if f.file is not None:
            self.after, self.book = Position(f.file, END), f.last_book
        self._close()

    def _close(self) -> None:
        if self.open is not None:
            self.open.close()
            self.open = None

    # ---- files ------------------------------------------------------------------------------

    def _folder(self) -> int:
        if self.dir_fd < 0:
            self.dir_fd = tree.open_folder(self.root, self.parts)
        return self.dir_fd

    def _closed(self) -> list[str]:
        """The closed segments of the period of `after` and later, in name order: one
        name per (start, n), the plain file first."""
        since = self.after.file.start_s if self.after is not None else 0
        found: dict[tuple[int, int], SegmentName] = {}
        for name in os.listdir(self._folder()):
            seg = SegmentName.parse(name)
            if seg is None or seg.symbol != self.symbol or seg.start_s < since:
                continue
            key = (seg.start_s, seg.n)
            if key not in found or _PLAIN_FIRST[seg.comp] < _PLAIN_FIRST[found[key].comp]:
                found[key] = seg
        return [str(found[key]) for key in sorted(found)]

    def _head(self, name: str) -> tuple[int, int] | None:
        """A closed segment's head_of, read once (they do not change)."""
        plain = name.removesuffix(".zst").removesuffix(".gz")
        if plain not in self.heads:
            try:
                self.heads[plain] = read_head(self._folder(), self.folder, name, self.max_line)
            except FileNotFoundError:
                return None  # compressed meanwhile: the next listing has it
            except _UNREADABLE as exc:
                self._refuse(name, exc)
                return None
        return self.heads[plain]

    def _rank(self, head: tuple[int, int], name: str) -> int:
        """`dup` of a file with this head: how many files with the same head come
        before it (current.jsonl comes after every closed one)."""
        rank = 0
        for other in self._closed():
            if other == name:
                break
            if self._head(other) == head:
                rank += 1
        return rank

    def _refuse(self, name: str, exc: BaseException) -> None:
        if name not in self.refused:
            self.refused.add(name)
            log.error("cannot read a file to publish it, skipped", path=str(self.folder / name),
                      error=str(exc))
            if self.on_skip is not None:
                self.on_skip("unreadable file")

    def _candidates(self) -> list[tuple[FileId, str]]:
        """Every file of the stream not read to its end, in order."""
        files: list[tuple[FileId, str]] = []
        ranks: dict[tuple[int, int], int] = {}
        for name in self._closed():
            head = self._head(name)
            if head is None:
                continue  # nothing to publish in it (or unreadable)
            rank = ranks.get(head, 0)
            ranks[head] = rank + 1
            files.append((FileId(*head, rank), name))
        try:
            fd = tree.open_file(self._folder(), CURRENT, self.folder / CURRENT, os.O_RDONLY)
        except FileNotFoundError:
            pass
        except OSError as exc:
            self._refuse(CURRENT, exc)
        else:
            try:
                head = head_of(os.pread(fd, HEADER_LINE_MAX + CHUNK, 0).split(b"\n")[:-1][:2])
            finally:
                os.close(fd)
            files.append((_NEWEST if head is None else FileId(*head, ranks.get(head, 0)), CURRENT))
        files.sort()
        after = self.after
        if after is None:
            return files
        return [(fid, name) for fid, name in files
                if fid > after.file or (fid == after.file and after.offset != END)]

    def _next(self) -> bool:
        """Open the next file to read; False when there is none (yet)."""
        try:
            candidates = self._candidates()
        except FileNotFoundError:
            return False  # the stream has no folder yet
        except OSError as exc:
            self._refuse(".", exc)
            return False
        after = self.after
        for fid, name in candidates:
            offset = after.offset if after is not None and fid == after.file else 0
            try:
                fd = tree.open_file(self._folder(), name, self.folder / name, os.O_RDONLY)
            except FileNotFoundError:
                continue  # compressed or deleted since the listing
            except OSError as exc:
                self._refuse(name, exc)
                continue
            try:
                f = _Open(name, fd, offset, self.folder / name)
            except _UNREADABLE as exc:
                os.close(fd)
                self._refuse(name, exc)
                continue
            if offset:
                f.at(fid, self.key, self.book)
                if f.read_pos < offset:
                    log.warning("the cursor is past the end of its file (lost in a crash?)",
                                path=str(self.folder / name), offset=offset, size=f.read_pos)
            self.open = f
            if fid != (after.file if after is not None else None):
                # a new file: the book to compare its first line with is the last one's
                self.book = self.book if after is not None and after.offset == END else None
            return True
        return False


def read_head(dir_fd: int, folder: Path, name: str, max_line: int = MAX_LINE) -> tuple[int, int] | None:
    """head_of the file `name` in `folder` (open at `dir_fd`), from its first lines."""
    f = _Open(name, tree.open_file(dir_fd, name, folder / name, os.O_RDONLY), 0, folder / name)
    try:
        while f.buf.count(b"\n") < 2 and len(f.buf) <= HEADER_LINE_MAX + max_line:
            if not f.fill():
                break
        return head_of(f.buf.split(b"\n")[:-1][:2])
    finally:
        f.close()


def segment_head(root: Path, path: Path) -> tuple[int, int] | None:
    """head_of a segment at `path` under `root`, reached without following a symlink."""
    parts = path.relative_to(root).parts
    with tree.folder_fd(root, parts[:-1]) as dir_fd:
        return read_head(dir_fd, path.parent, parts[-1])
