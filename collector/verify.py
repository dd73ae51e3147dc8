"""`collector verify DIR`: check recorded files line by line, streaming.

Every `*.jsonl`, `*.jsonl.zst` and `*.jsonl.gz` under `DIR/<SYMBOL>/` (and
`DIR/<SYMBOL>/raw/`) is read once, never whole into memory; `*.tmp` files (a
compression in progress) are skipped and counted. DIR may also be one symbol's
directory. Problems print as `path:line: problem` (at most `MAX_SHOWN` per file,
then a count), then one summary line. Exit status: 0 clean, 1 problems, 2 usage
error (DIR missing, or no record file under it).

Checks, for every file: each line whole (newline-terminated; a torn last line is
reported), no empty lines, each line valid JSON. Raw frame files (`raw/`) get
only those. Record files also get:

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

import argparse
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from operator import gt, itemgetter, lt
from pathlib import Path
from typing import Any

import orjson

from collector.readback import (
    CURRENT,
    DECODE_ERRORS,
    RAW_DIR,
    SEGMENT_RE,
    ReadError,
    name_time_ns,
    open_binary,
    parse_time,
)
from collector.records import RESYNC_REASONS

MAX_SHOWN = 100
USAGE = "collector verify [--jobs N] DIR [DIR ...]"

_DEC = re.compile(r"[0-9]+(?:\.[0-9]+)?\Z").match  # as collector.gemini.v1 accepts them
_SUFFIXES = (".jsonl", ".jsonl.zst", ".jsonl.gz")
_TYPES = frozenset(("header", "book", "trade", "auction", "resync"))
_REASONS = frozenset(RESYNC_REASONS)
_MAKER_SIDES = frozenset(("bid", "ask", "auction", None))

Report = Callable[[int, str], None]

# A book line exactly as collector.records renders it, every price a decimal string
# and every size a non-zero one: such a line only needs its order checked, which
# is done on Decimals in C (map) instead of level by level. Anything else (another
# key order, spacing, a bad level) takes the slow path, which finds and names the
# problem, so the fast path changes speed only, never a verdict.
_PRICE = rb'"[0-9]++(?:\.[0-9]++)?+"'
_SIZE = rb'"(?=[0-9.]*[1-9])[0-9]++(?:\.[0-9]++)?+"'
_PAIRS = rb'(?:\[' + _PRICE + rb',' + _SIZE + rb'\](?:,\[' + _PRICE + rb',' + _SIZE + rb'\])*+)?+'
_CANONICAL_BOOK = re.compile(
    rb'\{"type":"book","symbol":"[^"\\]*+","seq":[0-9]++,"event_id":-?[0-9]++,'
    rb'"exchange_ms":(?:-?[0-9]++|null),(?:"exchange_ns":[0-9]++,)?+"recv_ns":[0-9]++,'
    rb'"bids":\[' + _PAIRS + rb'\],"asks":\[' + _PAIRS + rb'\]\}\n').fullmatch
_first = itemgetter(0)


def _book_ok_fast(line: bytes, rec: dict[str, Any]) -> bool:
    """True when a canonical book line is sorted and uncrossed (else: slow path)."""
    if not _CANONICAL_BOOK(line):
        return False
    bids = list(map(Decimal, map(_first, rec["bids"])))
    asks = list(map(Decimal, map(_first, rec["asks"])))
    return (all(map(gt, bids, bids[1:])) and all(map(lt, asks, asks[1:]))
            and (not bids or not asks or bids[0] < asks[0]))


# --------------------------------------------------------------------------- one file

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
        if type(price) is not str or not _DEC(price):
            return best, f"book {name} price is not a decimal string: {price!r}"
        if type(size) is not str or not _DEC(size):
            return best, f"book {name} size is not a decimal string: {size!r}"
        if not size.strip("0."):
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
    dec = _DEC
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
                if rec.get("schema") != 1:
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
                if is_book and seq == 0:
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


_READ_ERRORS: tuple[type[BaseException], ...] = (ReadError, OSError, *DECODE_ERRORS)


def _decode_problem(exc: BaseException, lineno: int, report: Report) -> None:
    if isinstance(exc, ReadError):
        report(lineno, f"cannot decompress: {exc.why}")
    elif isinstance(exc, OSError) and not isinstance(exc, DECODE_ERRORS):
        report(lineno, f"read error: {exc}")
    else:
        report(lineno, f"cannot decompress: {exc}")


def check_file(path: Path, symbol: str, raw: bool, report: Report) -> tuple[int, int]:
    """Check one file (decompressing by suffix); returns (lines, uncompressed bytes)."""
    m = SEGMENT_RE.match(path.name)
    name_start_ns = name_time_ns(m["ts"]) if m else None
    try:
        f = open_binary(path)
    except OSError as exc:
        report(0, f"cannot open: {exc}")
        return 0, 0
    with f:
        return check_raw(f, report) if raw else check_records(f, symbol, report, name_start_ns)


# --------------------------------------------------------------------------- a tree

@dataclass
class Target:
    path: Path
    symbol: str
    raw: bool
    named_ok: bool


@dataclass
class Tally:
    files: int = 0
    lines: int = 0
    bytes_in: int = 0    # uncompressed
    bytes_disk: int = 0
    problems: int = 0
    bad_files: int = 0
    tmp_skipped: list[Path] = field(default_factory=list)


def _sort_key(name: str) -> tuple[int, str, int, str]:
    if name == CURRENT:
        return (1, "", 0, name)
    m = SEGMENT_RE.match(name)
    if m is None:
        return (2, name, 0, name)
    return (0, m["ts"], int(m["n"] or 1), name)


def _files_in(folder: Path, symbol: str, raw: bool, tally: Tally) -> list[Target]:
    out = []
    for entry in os.scandir(folder):
        if not entry.is_file():
            continue
        name = entry.name
        if name.endswith(".tmp"):
            tally.tmp_skipped.append(folder / name)
            continue
        if not name.endswith(_SUFFIXES):
            continue
        m = SEGMENT_RE.match(name)
        named_ok = name == CURRENT or (m is not None and m["symbol"] == symbol)
        out.append(Target(folder / name, symbol, raw, named_ok))
    out.sort(key=lambda t: _sort_key(t.path.name))
    return out


def _is_symbol_dir(folder: Path) -> bool:
    if (folder / CURRENT).is_file():
        return True
    return any((m := SEGMENT_RE.match(e.name)) and m["symbol"] == folder.name
               for e in os.scandir(folder) if e.is_file())


def find_targets(root: Path, tally: Tally) -> list[Target]:
    """The files to check under `root` (the output dir, or one symbol's dir)."""
    folders = [root] if _is_symbol_dir(root) else sorted(
        (Path(e.path) for e in os.scandir(root) if e.is_dir()), key=lambda p: p.name)
    out: list[Target] = []
    for folder in folders:
        out += _files_in(folder, folder.name, False, tally)
        if (folder / RAW_DIR).is_dir():
            out += _files_in(folder / RAW_DIR, folder.name, True, tally)
    return out


@dataclass
class FileResult:
    path: Path
    shown: list[str]  # the first MAX_SHOWN problems, as printed
    count: int        # all problems
    lines: int
    bytes_in: int
    bytes_disk: int


def check_target(target: Target) -> FileResult:
    """Check one file; picklable in and out, for a process pool."""
    shown: list[str] = []
    count = 0
    path = target.path

    def report(lineno: int, problem: str) -> None:
        nonlocal count
        count += 1
        if len(shown) < MAX_SHOWN:
            shown.append(f"{path}:{lineno}: {problem}")

    if not target.named_ok:
        report(0, "file name is neither current.jsonl nor "
                  f"{target.symbol}.<YYYYMMDDTHHMMSSZ>[-N].jsonl[.zst|.gz]: collector cat skips it")
    lines, nbytes = check_file(path, target.symbol, target.raw, report)
    try:
        disk = path.stat().st_size
    except OSError:
        disk = 0
    return FileResult(path, shown, count, lines, nbytes, disk)


def verify(roots: list[Path], out: Any = None, jobs: int = 1) -> Tally:
    """Check every file under `roots` (`jobs` processes at once), printing problems
    to `out` (stdout) file by file, in order."""
    out = out or sys.stdout
    tally = Tally()
    targets = [t for root in roots for t in find_targets(root, tally)]
    pool = None
    if jobs > 1 and len(targets) > 1:
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(min(jobs, len(targets)))
        results: Iterator[FileResult] = pool.map(check_target, targets)
    else:
        results = map(check_target, targets)
    try:
        for res in results:
            for line in res.shown:
                out.write(line + "\n")
            if res.count > len(res.shown):
                out.write(f"{res.path}: {res.count - len(res.shown)} more problems not shown "
                          f"({res.count} in all)\n")
            tally.files += 1
            tally.lines += res.lines
            tally.bytes_in += res.bytes_in
            tally.bytes_disk += res.bytes_disk
            if res.count:
                tally.problems += res.count
                tally.bad_files += 1
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return tally


def main_verify(argv: list[str]) -> int:
    """`collector verify`: 0 clean, 1 problems found, 2 usage error."""
    parser = argparse.ArgumentParser(
        prog="collector verify", usage=USAGE,
        description="Check recorded files (compressed or not, raw/ included): whole lines, "
                    "valid JSON, a header first in each segment, seq order inside spans, "
                    "books sorted and uncrossed, decimal strings, symbols. Prints "
                    "`path:line: problem`; exits 0 clean, 1 problems, 2 usage error.")
    parser.add_argument("dirs", nargs="+", metavar="DIR",
                        help="an output directory (output.dir), or one symbol's directory")
    parser.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1, metavar="N",
                        help="files checked at once, in N processes (default: the CPU count)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    roots = [Path(d) for d in args.dirs]
    for root in roots:
        if not root.is_dir():
            print(f"collector verify: error: no such directory: {root}", file=sys.stderr)
            return 2
    t0 = time.perf_counter()
    out = sys.stdout
    try:
        tally = verify(roots, out, max(1, args.jobs))
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1
    secs = time.perf_counter() - t0
    if tally.files == 0:
        print(f"collector verify: error: no record files (*.jsonl[.zst|.gz]) under "
              f"{', '.join(map(str, roots))}", file=sys.stderr)
        return 2
    mb = tally.bytes_in / 1e6
    rate = f", {mb / secs:.0f} MB/s" if secs > 0 else ""
    tmp = f", {len(tally.tmp_skipped)} .tmp skipped" if tally.tmp_skipped else ""
    verdict = (f"{tally.problems} problems in {tally.bad_files} files" if tally.problems
               else "no problems")
    out.write(f"verify: {tally.files} files, {tally.lines} lines, {mb:.1f} MB "
              f"({tally.bytes_disk / 1e6:.1f} MB on disk) in {secs:.2f} s{rate}{tmp}: {verdict}\n")
    out.flush()
    return 1 if tally.problems else 0
