"""Reading recorded data back: records across a symbol's segments, in order.

Layout (see README "Output"): `<dir>/<SYMBOL>/current.jsonl` is the active
segment; closed segments are `<SYMBOL>.<YYYYMMDDTHHMMSSZ>[-N].jsonl`, possibly
compressed (`.jsonl.zst`, `.jsonl.gz`). A symbol's segments are read in
(start time, N) order, `current.jsonl` last. `raw/` is not read.

- `*.tmp` files (a compression in progress) are never read. When a segment is
  present both uncompressed and compressed, only the uncompressed file (which is
  complete) is read; if it disappears before it is opened (the compression just
  finished) the compressed one is read instead.
- Each segment starts with a header record. The book line right after a header
  that is byte-identical to the last book line of the previous segment of the
  same symbol is a carry-over copy and is dropped. Files without a header (a
  `current.jsonl` written before segments existed) are read as they are.
- A last line without its newline (being written right now, or torn by a crash)
  is not a record yet and is skipped. Anything else unreadable raises `ReadError`
  naming the file and line; `collector verify` lists every such problem.

Times (`start`, `end`, `--from`, `--to`): a `datetime` (naive means UTC), an ISO
8601 string ("2026-11-24T06:00:00Z", "2026-11-24T06:00", "2026-11-24",
"20261124T060000Z"; no offset means UTC), or an int of epoch *milliseconds*
(on the command line: a string of digits). A record is kept when
`start <= recv_ns < end`. Ints so large they can only be micro- or nanoseconds
are refused rather than misread.
"""

from __future__ import annotations

import argparse
import gzip
import heapq
import importlib
import io
import os
import sys
import zlib
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import IO, Any

import orjson

from collector.segments import CURRENT, SEGMENT_RE

TYPES = ("header", "book", "trade", "auction", "resync")
RAW_DIR = "raw"
# When a segment may be read, by its name: rotation can lag the period boundary
# (and records received just before it can land just after it), so names are
# only trusted to this margin.
SKIP_SLACK_NS = 10 * 60 * 10**9
_COMP_PREFERENCE = ("", ".zst", ".gz")  # uncompressed first: it is complete
_MAX_MS = 10**15  # epoch ms beyond year 33000: surely us or ns
_BUF = 1 << 20


class ReadError(ValueError):
    """A file that cannot be read as records: `path:line: why`."""

    def __init__(self, path: Path | str, line: int | None, why: str) -> None:
        self.path, self.line, self.why = str(path), line, why
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {why}")


# --------------------------------------------------------------------------- times

def parse_time(value: datetime | str | int) -> int:
    """A time (see the module docstring) as Unix epoch nanoseconds."""
    if isinstance(value, bool):
        raise TypeError(f"not a time: {value!r}")
    if isinstance(value, int):
        if abs(value) >= _MAX_MS:
            raise ValueError(f"{value} is too large for epoch milliseconds (micro- or nanoseconds?)")
        return value * 1_000_000
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return parse_time(int(text))
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"not an ISO 8601 time or epoch milliseconds: {value!r}") from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        delta = value - _EPOCH
        return (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000
    raise TypeError(f"not a time: {value!r}")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def name_time_ns(ts: str) -> int:
    """The time in a segment's name (YYYYMMDDTHHMMSSZ) as epoch ns."""
    return parse_time(datetime.strptime(ts, "%Y%m%dT%H%M%SZ"))


# --------------------------------------------------------------------------- files

@dataclass(frozen=True)
class Segment:
    """One segment of a symbol: the files that may hold it, preferred first."""

    symbol: str
    key: tuple[int, int]  # (start ns from the name, N); current.jsonl: (max, max)
    paths: tuple[Path, ...]

    @property
    def is_current(self) -> bool:
        return self.paths[0].name == CURRENT

    @property
    def start_ns(self) -> int | None:
        return None if self.is_current else self.key[0]


_CURRENT_KEY = (sys.maxsize, sys.maxsize)


def list_segments(folder: Path | str, symbol: str | None = None) -> list[Segment]:
    """The segments in `folder` (a symbol's directory, or its `raw/`), in read order.

    Files named for another symbol than `symbol` (default: the folder's name, or
    its parent's for `raw/`) and `*.tmp` files are left out."""
    folder = Path(folder)
    if symbol is None:
        symbol = folder.parent.name if folder.name == RAW_DIR else folder.name
    found: dict[tuple[int, int], dict[str, Path]] = {}
    has_current = False
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    for entry in entries:
        name = entry.name
        if name == CURRENT:
            has_current = True
            continue
        m = SEGMENT_RE.match(name)
        if m is None or m["symbol"] != symbol:
            continue
        key = (name_time_ns(m["ts"]), int(m["n"] or 1))
        found.setdefault(key, {})[m["comp"] or ""] = folder / name
    segs = []
    for key in sorted(found):
        variants = found[key]
        base = next(iter(variants.values())).name
        base = base[: base.index(".jsonl") + len(".jsonl")]
        # every variant, preferred first; unlisted ones too, for the file that
        # appears while we read (its uncompressed twin was just removed)
        segs.append(Segment(symbol, key, tuple(folder / (base + c) for c in _COMP_PREFERENCE)))
    if has_current:
        segs.append(Segment(symbol, _CURRENT_KEY, (folder / CURRENT,)))
    return segs


def list_symbols(directory: Path | str) -> list[str]:
    """Symbol directories under `directory` that hold at least one segment."""
    out = []
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if entry.is_dir() and list_segments(entry.path):
            out.append(entry.name)
    return out


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
    if name.endswith(".zst"):
        return io.BufferedReader(_ZstdRaw(open(path, "rb")), _BUF)
    if name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb", buffering=_BUF)


# Errors a damaged compressed file raises while being read (ReadError aside).
DECODE_ERRORS: tuple[type[BaseException], ...] = (EOFError, gzip.BadGzipFile, zlib.error)


def open_segment(seg: Segment) -> tuple[Path, IO[bytes]] | None:
    for path in seg.paths:
        try:
            return path, open_binary(path)
        except FileNotFoundError:
            continue
    return None


# --------------------------------------------------------------------------- reading

def _time_ns(value: datetime | str | int | None) -> int | None:
    return None if value is None else parse_time(value)


def _symbol_records(folder: Path, symbol: str, start: int | None, end: int | None,
                    types: frozenset[str] | None) -> Iterator[tuple[int, dict[str, Any], bytes]]:
    """(merge key, record, line) for one symbol, in segment order."""
    want_header = types is not None and "header" in types
    done: tuple[int, int] | None = None
    last_book: bytes | None = None  # the last book line of the previous segment read
    key = 0
    timed = start is not None or end is not None
    loads = orjson.loads
    while True:
        segs = [s for s in list_segments(folder, symbol) if done is None or s.key > done]
        if not segs:
            return
        closed = [s for s in segs if not s.is_current]
        if not closed:
            segs = segs[-1:]  # current.jsonl, read once every closed one is done
        # Period starts, to skip by time: every record of a segment was received
        # before the next period's segment was started (give or take the slack).
        starts = sorted({s.start_ns for s in closed if s.start_ns is not None})
        current_start = _peek_segment_start(folder / CURRENT) if timed else None
        if current_start is not None:
            starts = sorted({*starts, current_start})
        for seg in segs:
            if seg.is_current and closed:
                break  # list again first: a rotation may have happened meanwhile
            seg_start = current_start if seg.is_current else seg.start_ns
            if end is not None and seg_start is not None and seg_start >= end + SKIP_SLACK_NS:
                return  # this one and every later one start after `end`
            done = seg.key
            if start is not None and seg_start is not None:
                i = bisect_right(starts, seg_start)
                if i < len(starts) and starts[i] + SKIP_SLACK_NS <= start:
                    last_book = None
                    continue
            opened = open_segment(seg)
            if opened is None:  # gone (retention) between listing and opening
                last_book = None
                continue
            path, f = opened
            header: dict[str, Any] | None = None
            header_line = b""
            after_header = False
            seg_last_book: bytes | None = None
            lineno = 0
            try:
                with f:
                    for line in f:
                        lineno += 1
                        if line[-1:] != b"\n":
                            break  # not a whole line yet (or torn): not a record
                        try:
                            rec = loads(line)
                            kind = rec["type"]
                        except (orjson.JSONDecodeError, TypeError, KeyError):
                            raise ReadError(path, lineno, "not a JSON record: "
                                            + line[:80].decode("utf-8", "replace").rstrip()) from None
                        if kind == "header":
                            header, header_line, after_header = rec, line, True
                            continue
                        if kind == "book":
                            if after_header and line == last_book:
                                after_header = False
                                seg_last_book = line
                                continue  # carry-over copy of the previous segment's last book
                            seg_last_book = line
                        after_header = False
                        recv_ns = rec.get("recv_ns")
                        if type(recv_ns) is not int:
                            raise ReadError(path, lineno, f"{kind} record without an integer recv_ns")
                        if (start is not None and recv_ns < start) or (end is not None and recv_ns >= end):
                            continue
                        key = recv_ns
                        if header is not None:
                            if want_header:
                                yield key, header, header_line
                            header = None
                        if types is None or kind in types:
                            yield key, rec, line
                    if header is not None and want_header and not timed:
                        yield key, header, header_line
            except ReadError as exc:
                if exc.line is None:
                    raise ReadError(path, lineno + 1, exc.why) from None
                raise
            except DECODE_ERRORS as exc:
                raise ReadError(path, lineno + 1, f"cannot decompress: {exc}") from None
            last_book = seg_last_book


def _peek_segment_start(path: Path) -> int | None:
    """The `segment_start` of the header of `path`, if it has one."""
    try:
        with open(path, "rb") as f:
            first = f.readline(1 << 16)
        rec = orjson.loads(first)
        if rec.get("type") == "header":
            return parse_time(rec["segment_start"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        pass
    return None


def _symbols_arg(directory: Path, symbol: str | Iterable[str] | None) -> list[str]:
    if not directory.is_dir():
        raise FileNotFoundError(f"no such directory: {directory}")
    if symbol is None:
        return list_symbols(directory)
    names = [symbol] if isinstance(symbol, str) else list(symbol)
    out = []
    for name in names:
        if not (directory / name).is_dir():
            raise FileNotFoundError(f"no directory for symbol {name}: {directory / name}")
        if name not in out:
            out.append(name)
    return out


def _types_arg(types: str | Iterable[str] | None) -> frozenset[str] | None:
    if types is None:
        return None
    wanted = frozenset([types] if isinstance(types, str) else types)
    unknown = wanted - set(TYPES)
    if unknown:
        raise ValueError(f"unknown record type(s) {sorted(unknown)}; known: {', '.join(TYPES)}")
    return wanted


def _read(directory: Path | str, symbol: str | Iterable[str] | None,
          start: datetime | str | int | None, end: datetime | str | int | None,
          types: str | Iterable[str] | None) -> Iterator[tuple[int, dict[str, Any], bytes]]:
    directory = Path(directory)
    lo, hi, wanted = _time_ns(start), _time_ns(end), _types_arg(types)
    symbols = _symbols_arg(directory, symbol)
    streams = [_symbol_records(directory / s, s, lo, hi, wanted) for s in symbols]
    if len(streams) == 1:
        return streams[0]
    return heapq.merge(*streams, key=itemgetter(0))  # stable: ties keep symbol order


def read(directory: Path | str, symbol: str | Iterable[str] | None = None,
         start: datetime | str | int | None = None, end: datetime | str | int | None = None,
         types: str | Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
    """Records of `symbol` (one name, several, or None for every symbol directory).

    One symbol: in file order across its segments. Several: merged by `recv_ns`
    (stable; each symbol's own order is kept). Kept when `start <= recv_ns < end`
    (times: see the module docstring) and, if `types` is given, of those types
    (`"header"` included only when asked for: a header comes just before the first
    record of its segment inside the time bounds, whatever that record's type; with
    no time bounds, every header comes, an empty segment's too). Carry-over book copies are dropped. Arguments are checked (and
    missing directories raise FileNotFoundError) when called, not when iterated."""
    it = _read(directory, symbol, start, end, types)
    return (rec for _, rec, _ in it)


def read_lines(directory: Path | str, symbol: str | Iterable[str] | None = None,
               start: datetime | str | int | None = None, end: datetime | str | int | None = None,
               types: str | Iterable[str] | None = None) -> Iterator[bytes]:
    """As `read`, but each record's line exactly as stored (newline included)."""
    it = _read(directory, symbol, start, end, types)
    return (line for _, _, line in it)


def to_dataframe(directory: Path | str, symbol: str | Iterable[str] | None = None,
                 start: datetime | str | int | None = None, end: datetime | str | int | None = None,
                 types: str | Iterable[str] | None = None) -> Any:
    """`read(...)` as a pandas DataFrame (one row per record, a `recv_time` column
    in UTC added). Needs pandas, which the collector itself does not."""
    try:
        pd = importlib.import_module("pandas")
    except ImportError:
        raise ImportError("to_dataframe needs pandas: pip install pandas") from None
    frame = pd.DataFrame.from_records(list(read(directory, symbol, start, end, types)))
    if "recv_ns" in frame.columns:
        frame["recv_time"] = pd.to_datetime(frame["recv_ns"], unit="ns", utc=True)
    return frame


# --------------------------------------------------------------------------- collector cat

CAT_USAGE = "collector cat DIR [--symbol S ...] [--from T] [--to T] [--type TYPE ...]"


def _cat_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="collector cat", usage=CAT_USAGE,
        description="Print recorded records as JSON lines, in order across segments "
                    "(compressed or not); several symbols are merged by recv_ns.",
        epilog="T: ISO 8601 (2026-11-24T06:00:00Z; no offset means UTC) or epoch milliseconds. "
               "Records with FROM <= recv_ns < TO are printed. Carry-over book copies at "
               "segment starts are dropped; headers are printed only with --type header.")
    p.add_argument("dir", metavar="DIR", help="the output directory (output.dir)")
    p.add_argument("--symbol", "-s", action="append", default=None, metavar="S",
                   help="only this symbol (repeat, or comma-separate, for several; default: all)")
    p.add_argument("--from", dest="start", metavar="T", help="first receive time (inclusive)")
    p.add_argument("--to", dest="end", metavar="T", help="last receive time (exclusive)")
    p.add_argument("--type", "-t", action="append", default=None, metavar="TYPE",
                   help="only records of this type: book, trade, auction, resync, header "
                        "(repeat, or comma-separate, for several)")
    return p


def _split(values: list[str] | None, upper: bool = False) -> list[str] | None:
    if values is None:
        return None
    out = [v.strip() for item in values for v in item.split(",") if v.strip()]
    return [v.upper() for v in out] if upper else out


def main_cat(argv: list[str]) -> int:
    """`collector cat`: 0 done (also when the reader of stdout went away), 1 unreadable
    data, 2 usage error (bad arguments, missing directory)."""
    parser = _cat_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed
        return int(exc.code or 0)
    try:
        lines = read_lines(args.dir, _split(args.symbol, upper=True), args.start, args.end,
                           _split(args.type))
    except (ValueError, TypeError, FileNotFoundError, NotADirectoryError) as exc:
        print(f"collector cat: error: {exc}", file=sys.stderr)
        return 2
    out = sys.stdout.buffer
    try:
        batch: list[bytes] = []
        for line in lines:
            batch.append(line)
            if len(batch) >= 512:
                out.writelines(batch)
                batch.clear()
        out.writelines(batch)
        out.flush()
    except BrokenPipeError:
        # the reader went away (`collector cat ... | head`): stop quietly, and keep
        # Python from complaining again when it flushes stdout at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)
        return 0
    except ReadError as exc:
        out.flush()
        print(f"collector cat: {exc} (run `collector verify` for every problem)", file=sys.stderr)
        return 1
    except OSError as exc:  # unreadable file, failed write to stdout
        print(f"collector cat: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
