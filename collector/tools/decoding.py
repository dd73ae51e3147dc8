"""Opening a segment file as a stream of bytes, decompressed by its suffix.

`.zst` files go through `_ZstdRaw`, which decodes every frame and raises on a cut
(zstandard's own stream_reader ends quietly there); `.gz` through gzip; anything
else is read as it is. A file that cannot be read as records raises `ReadError`
(`path:line: why`); a damaged compressed file may also raise one of `DECODE_ERRORS`.
"""

from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path
from typing import IO, Any

from collector.core.format import COMPRESSED

_BUF = 1 << 20
_ZST, _GZ = COMPRESSED["zstd"], COMPRESSED["gzip"]


class ReadError(ValueError):
    """A file that cannot be read as records: `path:line: why`."""

    def __init__(self, path: Path | str, line: int | None, why: str) -> None:
        self.path, self.line, self.why = str(path), line, why
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {why}")


# Errors a damaged compressed file raises while being read (ReadError aside).
DECODE_ERRORS: tuple[type[BaseException], ...] = (EOFError, gzip.BadGzipFile, zlib.error)


class _ZstdRaw(io.RawIOBase):
    """A zstd file as a raw stream, decoding every frame and raising on truncation
    (zstandard's own stream_reader ends quietly at a cut)."""

    def __init__(self, f: IO[bytes]) -> None:
        import zstandard

        self._zstd = zstandard
        self._f = f
        self._dctx = zstandard.ZstdDecompressor()
        self._d = self._dctx.decompressobj()
        self._fed = False  # the current frame got input
        self._out = memoryview(b"")
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while self._pos >= len(self._out):
            chunk = self._f.read(_BUF)
            if not chunk:
                if self._fed and not self._d.eof:
                    raise ReadError(getattr(self._f, "name", "?"), None,
                                    "zstd stream truncated (incomplete frame)")
                return 0
            out = []
            while chunk:
                try:
                    out.append(self._d.decompress(chunk))
                except self._zstd.ZstdError as exc:
                    raise ReadError(getattr(self._f, "name", "?"), None, f"zstd: {exc}") from None
                self._fed = True
                if self._d.eof:  # a next frame may follow in the same chunk
                    chunk = self._d.unused_data
                    self._d = self._dctx.decompressobj()
                    self._fed = False
                else:
                    chunk = b""
            self._out, self._pos = memoryview(b"".join(out)), 0
        n = min(len(b), len(self._out) - self._pos)
        b[:n] = self._out[self._pos:self._pos + n]
        self._pos += n
        return n

    def close(self) -> None:
        self._f.close()
        super().close()


def open_binary(path: Path | str) -> IO[bytes]:
    """A segment file as a buffered binary stream, decompressed by its suffix."""
    path = Path(path)
    name = path.name
    if name.endswith(_ZST):
        return io.BufferedReader(_ZstdRaw(open(path, "rb")), _BUF)
    if name.endswith(_GZ):
        return gzip.open(path, "rb")  # type: ignore[return-value]  # a GzipFile, typed apart
    return open(path, "rb", buffering=_BUF)
