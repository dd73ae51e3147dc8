"""Reading recorded data back: records across a symbol's segments, in order.

Which files, in which order: `collector.tools.listing` (`raw/` is not read). Opening
them, compressed or not: `collector.tools.decoding`.

- Each segment starts with a header record. The book line right after a header
  that is byte-identical to the last book line of the previous segment of the
  same symbol is a carry-over copy and is dropped. Files without a header (a
  `current.jsonl` written before segments existed) are read as they are.
- A last line without its newline (being written right now, or torn by a crash)
  is not a record yet and is skipped. Anything else unreadable raises `ReadError`
  naming the file and line; `collector verify` lists every such problem. That
  includes a line longer than `decoding.MAX_LINE` (16 MiB): memory stays bounded
  whatever a file holds (a compression bomb, gigabytes without a newline), and a
  file that is not a regular file (a FIFO, a device, a directory) is not read.

Times (`start`, `end`, `--from`, `--to`): a `datetime` (naive means UTC), an ISO
8601 string ("2026-11-24T06:00:00Z", "2026-11-24T06:00", "2026-11-24",
"20261124T060000Z"; no offset means UTC), or an int of epoch *milliseconds*
(on the command line: a string of digits). A record is kept when
`start <= recv_ns < end`. Ints so large they can only be micro- or nanoseconds
are refused rather than misread.
"""

from __future__ import annotations

import heapq
import importlib
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import Any

import orjson

from collector.core.format import CURRENT, HEADER_LINE_MAX, TYPES, header_start_s, parse_header
from collector.tools.decoding import DECODE_ERRORS, MAX_LINE, ReadError, bounded_lines, open_binary
from collector.tools.listing import list_segments, list_symbols, open_segment

__all__ = ["ReadError", "parse_time", "read", "read_lines", "to_dataframe"]

# When a segment may be read, by its name: rotation can lag the period boundary
# (and records received just before it can land just after it), so names are
# only trusted to this margin.
SKIP_SLACK_NS = 10 * 60 * 10**9
_MAX_MS = 10**15  # epoch ms beyond year 33000: surely us or ns
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Time = datetime | str | int


def parse_time(value: Time) -> int:
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


def _time_ns(value: Time | None) -> int | None:
    return None if value is None else parse_time(value)


def _current_start_ns(path: Path) -> int | None:
    """The period start stated by the header of `path`, in epoch ns, if it has one."""
    try:
        with open_binary(path) as f:  # only a regular file: never waits on a FIFO
            head = parse_header(f.readline(HEADER_LINE_MAX))
    except (OSError, ReadError):
        return None  # reading it says what is wrong
    start = None if head is None else header_start_s(head)
    return None if start is None else start * 10**9


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
        current_start = _current_start_ns(folder / CURRENT) if timed else None
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
                    for line in bounded_lines(f, path, MAX_LINE):
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
            except OSError as exc:
                raise ReadError(path, lineno + 1, f"read error: {exc.strerror or exc}") from None
            last_book = seg_last_book


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
          start: Time | None, end: Time | None,
          types: str | Iterable[str] | None) -> Iterator[tuple[int, dict[str, Any], bytes]]:
    lo, hi, wanted = _time_ns(start), _time_ns(end), _types_arg(types)
    if isinstance(directory, str) and directory.startswith(("nats://", "tls://")):
        from collector.publish import nats_read  # a JetStream stream the collector publishes to

        return nats_read.read_records(directory, symbol, lo, hi, wanted)
    directory = Path(directory)
    symbols = _symbols_arg(directory, symbol)
    streams = [_symbol_records(directory / s, s, lo, hi, wanted) for s in symbols]
    if len(streams) == 1:
        return streams[0]
    return heapq.merge(*streams, key=itemgetter(0))  # stable: ties keep symbol order


def read(directory: Path | str, symbol: str | Iterable[str] | None = None,
         start: Time | None = None, end: Time | None = None,
         types: str | Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
    """Records of `symbol` (one name, several, or None for every symbol directory).

    One symbol: in file order across its segments. Several: merged by `recv_ns`
    (stable; each symbol's own order is kept). Kept when `start <= recv_ns < end`
    (times: see the module docstring) and, if `types` is given, of those types
    (`"header"` included only when asked for: a header comes just before the first
    record of its segment inside the time bounds, whatever that record's type; with
    no time bounds, every header comes, an empty segment's too). Carry-over book copies
    are dropped. Arguments are checked (and missing directories raise
    FileNotFoundError) when called, not when iterated.

    `directory` may also be a stream the collector publishes to ([publish]),
    "nats://HOST:PORT/STREAM" (collector/publish/nats_read.py): the same records, for
    the span the stream holds; it has no headers."""
    it = _read(directory, symbol, start, end, types)
    return (rec for _, rec, _ in it)


def read_lines(directory: Path | str, symbol: str | Iterable[str] | None = None,
               start: Time | None = None, end: Time | None = None,
               types: str | Iterable[str] | None = None) -> Iterator[bytes]:
    """As `read`, but each record's line exactly as stored (newline included)."""
    it = _read(directory, symbol, start, end, types)
    return (line for _, _, line in it)


def to_dataframe(directory: Path | str, symbol: str | Iterable[str] | None = None,
                 start: Time | None = None, end: Time | None = None,
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
