"""Opening a segment file as a stream of bytes, decompressed by its suffix, and
reading its lines with a bound on each.

Only regular files are opened (a FIFO, a device or a directory where a segment
should be is refused, never waited on or read without end). `.zst` files go through
`ZstdRaw`, which decodes every frame and raises on a cut (zstandard's own
stream_reader ends quietly there) and never inflates more than `_ZSTD_SLICE`
compressed bytes at a time; `.gz` through gzip (which inflates by the read);
anything else is read as it is. A compressed file of 0 bytes is an error (a
compression writes into a `.tmp` first, so it can only be damage). `bounded_lines`
yields at most `MAX_LINE` bytes per line (`MAX_RAW_LINE` for raw frame files): a
compression bomb or a file without newlines costs a bounded amount of memory and
ends in a `ReadError` (`path:line: why`). A damaged compressed file may also raise
one of `DECODE_ERRORS`.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from collector.core.format import COMPRESSED

# A record line is far shorter (a 1000-level book, the deepest book.depth, is ~100 kB).
MAX_LINE = 16 * 2**20
# A raw frame line holds a frame of up to the transport's 64 MiB message limit.
MAX_RAW_LINE = 80 * 2**20
# zstd frames needing a larger window are refused (the collector writes 2 MiB ones;
# `zstd -19` uses 8 MiB, `--long` 128 MiB): the window is memory the reader must hold.
MAX_ZSTD_WINDOW = 32 * 2**20

_BUF = 1 << 20
_PIECE = 1 << 20  # a long line is read in pieces of this size
# zstd inflates at most ~32768:1 (a 4-byte RLE block of 128 KiB), so each decompress
# call makes at most ~32 MiB (1 KiB slices decompress about as fast as 1 MiB ones).
_ZSTD_SLICE = 1024
_ZST, _GZ = COMPRESSED["zstd"], COMPRESSED["gzip"]


class ReadError(ValueError):
    """A file that cannot be read as records: `path:line: why`."""

    def __init__(self, path: Path | str, line: int | None, why: str) -> None:
        self.path, self.line, self.why = str(path), line, why
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {why}")


# Errors a damaged compressed file raises while being read (ReadError aside).
DECODE_ERRORS: tuple[type[BaseException], ...] = (EOFError, gzip.BadGzipFile, zlib.error)


class ZstdRaw(io.RawIOBase):
    """A zstd file as a raw stream, decoding every frame and raising on truncation
    (zstandard's own stream_reader ends quietly at a cut)."""

    def __init__(self, f: IO[bytes], path: Path) -> None:
        import zstandard

        self._zstd = zstandard
        self._f = f
        self._path = path
        self._dctx = zstandard.ZstdDecompressor(max_window_size=MAX_ZSTD_WINDOW)
        self._d = self._dctx.decompressobj()
        self._fed = False  # the current frame got input
        self._in = memoryview(b"")  # compressed bytes read and not decompressed yet
        self._out = memoryview(b"")
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while self._pos >= len(self._out):
            if not self._in:
                chunk = self._f.read(_BUF)
                if not chunk:
                    if self._fed and not self._d.eof:
                        raise ReadError(self._path, None,
                                        "cannot decompress: zstd stream truncated (incomplete frame)")
                    return 0
                self._in = memoryview(chunk)
            piece = self._in[:_ZSTD_SLICE]
            try:
                out = self._d.decompress(piece)
            except self._zstd.ZstdError as exc:
                raise ReadError(self._path, None, f"cannot decompress: {exc}") from None
            self._fed = True
            used = len(piece)
            if self._d.eof:  # a next frame may follow in the same piece
                used -= len(self._d.unused_data)
                self._d = self._dctx.decompressobj()
                self._fed = False
            self._in = self._in[used:]
            self._out, self._pos = memoryview(out), 0
        n = min(len(b), len(self._out) - self._pos)
        b[:n] = self._out[self._pos:self._pos + n]
        self._pos += n
        return n

    def close(self) -> None:
        self._f.close()
        super().close()


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _open_regular(path: Path) -> io.FileIO:
    """`path` opened for reading if it is a regular file. FileNotFoundError as it is
    (a segment may vanish: listing falls back); any other failure is a ReadError."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ReadError(path, None, f"cannot open: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a file")
            raise ReadError(path, None, f"not a regular file ({kind})")
        os.set_blocking(fd, True)
        return io.FileIO(fd, "rb", closefd=True)
    except BaseException:
        os.close(fd)
        raise


def open_binary(path: Path | str) -> IO[bytes]:
    """A segment file as a buffered binary stream, decompressed by its suffix.
    Raises FileNotFoundError, or ReadError for anything else that cannot be opened."""
    path = Path(path)
    name = path.name
    raw = _open_regular(path)
    try:
        if name.endswith((_ZST, _GZ)) and os.fstat(raw.fileno()).st_size == 0:
            raise ReadError(path, None, "empty compressed file (0 bytes): no data, not even a header")
        if name.endswith(_ZST):
            return io.BufferedReader(ZstdRaw(raw, path), _BUF)
        if name.endswith(_GZ):
            gz = gzip.GzipFile(fileobj=raw, mode="rb")
            gz.myfileobj = raw  # closed with it, as when gzip opens the file itself
            return gz  # type: ignore[return-value]  # a GzipFile, typed apart
        return io.BufferedReader(raw, _BUF)
    except BaseException:
        raw.close()
        raise


def bounded_lines(f: IO[bytes], path: Path | str, limit: int = MAX_LINE) -> Iterator[bytes]:
    """The lines of `f`, newline included (the last one may lack it). A line longer
    than `limit` raises ReadError (line None: the caller knows the number) once about
    `limit` bytes of it are read, never more."""
    readline = f.readline
    while True:
        line = readline(_PIECE)
        if len(line) < _PIECE or line[-1:] == b"\n":
            if not line:
                return
            yield line
            continue
        parts, size = [line], len(line)
        while True:
            piece = readline(_PIECE)
            size += len(piece)
            if size > limit:
                raise ReadError(path, None, f"line longer than {limit >> 20} MiB (the readers' limit)")
            parts.append(piece)
            if len(piece) < _PIECE or piece[-1:] == b"\n":
                break
        yield b"".join(parts)
