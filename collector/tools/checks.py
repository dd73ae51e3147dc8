"""The checks of `collector verify`, one file's lines at a time (pure: lines in,
problems out through `report(lineno, problem)`).

Every file: each line whole (newline-terminated; a torn last line is reported),
no empty lines, each line valid JSON. Raw frame files (`raw/`) get only those
(`check_raw`). Record files also get (`check_records`):

- a header record first in each segment (in a closed segment, its `segment_start`
  equal to the time in the file name). Legacy rule: a file whose first record is
  a `resync` with reason `start` (written before segments and headers existed) is
  accepted without a header. A header anywhere else is a problem.
- each record a JSON object with a known `type`, a `symbol` equal to the
  directory's name, an integer `recv_ns` (headers: `schema` 1, an ISO
  `segment_start`);
- `seq` (book, trade, auction) never going back inside a stream span (spans are
  cut by resync records); the records of one frame share its seq and its book
  record comes last, so a seq repeated after a book record is a problem. A book at
  seq 0 (a new connection) must follow a resync, unless it is the first record
  after the header;
- books: `bids`/`asks` lists of [price, size] decimal strings, sizes non-zero,
  bids strictly descending and asks strictly ascending (by Decimal value), best
  bid < best ask;
- trades: `price`/`amount` decimal strings, `maker_side` bid/ask/auction/null;
  resyncs: a known `reason`.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from operator import gt, itemgetter, lt
from typing import Any

import orjson

from collector.core.format import (
    BOOK_LINE,
    MAKER_SIDES,
    SCHEMA,
    TYPES,
    Reason,
    is_decimal,
    is_zero,
)
from collector.tools.decoding import DECODE_ERRORS, ReadError
from collector.tools.reading import parse_time

Report = Callable[[int, str], None]

_TYPES = frozenset(t.value for t in TYPES)
_REASONS = frozenset(r.value for r in Reason)
_MAKER_SIDES = frozenset((*MAKER_SIDES, None))
_READ_ERRORS: tuple[type[BaseException], ...] = (ReadError, OSError, *DECODE_ERRORS)
_book_line = BOOK_LINE.fullmatch
_first = itemgetter(0)


def _book_ok_fast(line: bytes, rec: dict[str, Any]) -> bool:
    """True when a canonical book line (`format.BOOK_LINE`: every price a decimal
    string, every size a non-zero one) is sorted and uncrossed. Its order is checked
    on Decimals in C (map) instead of level by level. Anything else (another key
    order, spacing, a bad level) takes the slow path, which finds and names the
    problem, so the fast path changes speed only, never a verdict."""
    if not _book_line(line):
        return False
    bids = list(map(Decimal, map(_first, rec["bids"])))
    asks = list(map(Decimal, map(_first, rec["asks"])))
    return (all(map(gt, bids, bids[1:])) and all(map(lt, asks, asks[1:]))
            and (not bids or not asks or bids[0] < asks[0]))


def _check_side(levels: Any, name: str, bids: bool) -> tuple[Decimal | None, str | None]:
    """(best price, first problem) of one side of a book record."""
    if type(levels) is not list:
        return None, f"book {name} is not a list"
    best: Decimal | None = None
    prev: Decimal | None = None
    prev_text = ""
    for level in levels:
        if type(level) is not list or len(level) != 2:
            return best, f"book {name} level is not a [price, size] pair: {level!r}"
        price, size = level
        if type(price) is not str or not is_decimal(price):
            return best, f"book {name} price is not a decimal string: {price!r}"
        if type(size) is not str or not is_decimal(size):
            return best, f"book {name} size is not a decimal string: {size!r}"
        if is_zero(size):
            return best, f"book {name} level {price} has size zero ({size})"
        p = Decimal(price)
        if prev is None:
            best = p
        elif (p >= prev) if bids else (p <= prev):
            order = "descending" if bids else "ascending"
            return best, f"book {name} not strictly {order}: {price} after {prev_text}"
        prev, prev_text = p, price
    return best, None
def check_records(lines: Any, symbol: str, report: Report,
                  name_start_ns: int | None = None) -> tuple[int, int]:
    """Check one record file's lines; returns (lines, bytes) read. `name_start_ns`:
    the start time in a closed segment's name, which its header must repeat."""
    loads = orjson.loads
    JSONDecodeError = orjson.JSONDecodeError
    dec = is_decimal
    types = _TYPES
    book_ok_fast = _book_ok_fast
    lineno = nbytes = 0
    last_seq: int | None = None  # inside the current span
    last_was_book = False
    try:
        for line in lines:
            lineno += 1
            nbytes += len(line)
            if line[-1:] != b"\n":
                report(lineno, "torn last line (no newline at the end of the file)")
                break
            try:
                rec = loads(line)
            except JSONDecodeError as exc:
                if not line.strip():
                    report(lineno, "empty line")
                else:
                    report(lineno, f"invalid JSON ({exc})")
                continue
            if type(rec) is not dict:
                report(lineno, f"not a JSON object: {line[:60].decode('utf-8', 'replace').rstrip()}")
                continue
            kind = rec.get("type")
            if lineno == 1:
                if kind != "header" and not (kind == "resync" and rec.get("reason") == "start"):
                    report(lineno, f"missing header: the segment starts with a {kind!r} record")
            elif kind == "header":
                report(lineno, "header record not at the start of the segment")
            if kind not in types:
                report(lineno, f"unknown record type {kind!r}")
                continue
            if rec.get("symbol") != symbol:
                report(lineno, f"symbol {rec.get('symbol')!r} in a file of {symbol}")
            if kind == "header":
                if rec.get("schema") != SCHEMA:
                    report(lineno, f"unsupported header schema {rec.get('schema')!r}")
                if rec.get("stream", "records") != "records":
                    report(lineno, f"header of a {rec.get('stream')!r} stream in a record file")
                start = rec.get("segment_start")
                try:
                    if type(start) is not str:
                        raise ValueError
                    start_ns = parse_time(start)
                except ValueError:
                    report(lineno, f"header segment_start is not an ISO 8601 time: {start!r}")
                else:
                    if name_start_ns is not None and start_ns != name_start_ns:
                        report(lineno, f"header segment_start {start} differs from the "
                                       "start time in the file name")
                continue
            recv_ns = rec.get("recv_ns")
            if type(recv_ns) is not int:
                report(lineno, f"recv_ns is not an integer: {recv_ns!r}")
            if kind == "resync":
                if rec.get("reason") not in _REASONS:
                    report(lineno, f"unknown resync reason {rec.get('reason')!r}")
                last_seq, last_was_book = None, False
                continue
            seq = rec.get("seq")
            if type(seq) is not int or seq < 0:
                report(lineno, f"seq is not a non-negative integer: {seq!r}")
                continue
            is_book = kind == "book"
            if last_seq is not None:
                if is_book and seq == 0 and not (last_seq == 0 and not last_was_book):
                    # (after its own frame's trades, a snapshot's book is at seq 0 too)
                    report(lineno, f"seq 0 book (a new connection) without a resync before it "
                                   f"(previous seq {last_seq})")
                elif seq < last_seq:
                    report(lineno, f"seq went backwards inside a span: {seq} after {last_seq}")
                elif seq == last_seq and last_was_book:
                    report(lineno, f"seq {seq} again after the book record of that frame")
            last_seq, last_was_book = seq, is_book
            if is_book:
                if book_ok_fast(line, rec):
                    continue
                best_bid, problem = _check_side(rec.get("bids"), "bids", True)
                if problem:
                    report(lineno, problem)
                best_ask, problem = _check_side(rec.get("asks"), "asks", False)
                if problem:
                    report(lineno, problem)
                if best_bid is not None and best_ask is not None and best_bid >= best_ask:
                    report(lineno, f"crossed book: best bid {best_bid} >= best ask {best_ask}")
            elif kind == "trade":
                for key in ("price", "amount"):
                    v = rec.get(key)
                    if type(v) is not str or not dec(v):
                        report(lineno, f"trade {key} is not a decimal string: {v!r}")
                if rec.get("maker_side") not in _MAKER_SIDES:
                    report(lineno, f"trade maker_side {rec.get('maker_side')!r}")
    except _READ_ERRORS as exc:
        _decode_problem(exc, lineno + 1, report)
    return lineno, nbytes


def check_raw(lines: Any, report: Report) -> tuple[int, int]:
    """Check one raw-frame file: whole lines, each valid JSON."""
    loads = orjson.loads
    JSONDecodeError = orjson.JSONDecodeError
    lineno = nbytes = 0
    try:
        for line in lines:
            lineno += 1
            nbytes += len(line)
            if line[-1:] != b"\n":
                report(lineno, "torn last line (no newline at the end of the file)")
                break
            try:
                loads(line)
            except JSONDecodeError as exc:
                report(lineno, "empty line" if not line.strip() else f"invalid JSON ({exc})")
    except _READ_ERRORS as exc:
        _decode_problem(exc, lineno + 1, report)
    return lineno, nbytes


def _decode_problem(exc: BaseException, lineno: int, report: Report) -> None:
    if isinstance(exc, ReadError):  # a damaged zstd file, or a line over the limit
        report(lineno, exc.why)
    elif isinstance(exc, OSError) and not isinstance(exc, DECODE_ERRORS):
        report(lineno, f"read error: {exc.strerror or exc}")
    else:
        report(lineno, f"cannot decompress: {exc}")
