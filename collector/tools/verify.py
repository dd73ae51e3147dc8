"""`collector verify DIR`: check recorded files line by line, streaming.

Every `*.jsonl`, `*.jsonl.zst` and `*.jsonl.gz` under `DIR/<SYMBOL>/` (and
`DIR/<SYMBOL>/raw/`) is read once, never whole into memory, each line at most
`decoding.MAX_LINE` (`MAX_RAW_LINE` in `raw/`); `*.tmp` files (a compression in
progress) are skipped and counted. Such a name that is not a regular file (a FIFO,
a directory, a symlink loop), an empty compressed file, and a directory that cannot be
listed are problems too. DIR may also be one symbol's directory. Problems print as
`path:line: problem` (at most `MAX_SHOWN` per file, then a count), then one summary
line. Exit status: 0 clean, 1 problems, 2 usage error (DIR missing, or no record
file under it).

The checks, for every file and for record files (`raw/` aside): `collector.tools.checks`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.core.format import CURRENT, RAW_DIR, RECORD_SUFFIXES, SegmentName
from collector.tools.checks import Report, check_raw, check_records
from collector.tools.decoding import MAX_LINE, MAX_RAW_LINE, ReadError, bounded_lines, open_binary

MAX_SHOWN = 100
USAGE = "collector verify [--jobs N] DIR [DIR ...]"


# --------------------------------------------------------------------------- one file

def check_file(path: Path, symbol: str, raw: bool, report: Report) -> tuple[int, int]:
    """Check one file (decompressing by suffix); returns (lines, uncompressed bytes)."""
    name = SegmentName.parse(path.name)
    name_start_ns = None if name is None else name.start_s * 10**9
    try:
        f = open_binary(path)
    except ReadError as exc:
        report(0, exc.why)
        return 0, 0
    except OSError as exc:  # gone since it was listed
        report(0, f"cannot open: {exc.strerror or exc}")
        return 0, 0
    with f:
        if raw:
            return check_raw(bounded_lines(f, path, MAX_RAW_LINE), report)
        return check_records(bounded_lines(f, path, MAX_LINE), symbol, report, name_start_ns)


# --------------------------------------------------------------------------- a tree

@dataclass
class Target:
    path: Path
    symbol: str
    raw: bool
    named_ok: bool
    error: str | None = None  # a directory that could not be listed: the one problem


@dataclass
class Tally:
    files: int = 0
    lines: int = 0
    bytes_in: int = 0    # uncompressed
    bytes_disk: int = 0
    problems: int = 0
    bad_files: int = 0
    tmp_skipped: list[Path] = field(default_factory=list)


def _sort_key(name: str) -> tuple[int, int | str, int, str]:
    if name == CURRENT:
        return (1, "", 0, name)
    seg = SegmentName.parse(name)
    if seg is None:
        return (2, name, 0, name)
    return (0, seg.start_s, seg.n, name)


class _Unlisted(Exception):
    pass


def _scan(folder: Path) -> list[os.DirEntry[str]]:
    try:
        return list(os.scandir(folder))
    except OSError as exc:
        raise _Unlisted(f"cannot list the directory: {exc.strerror or exc}") from None


def _files_in(folder: Path, symbol: str, raw: bool, tally: Tally) -> list[Target]:
    """Every entry named like a record file, whatever it is (a FIFO, a directory or a
    symlink loop there is a problem `check_file` reports, not something to skip)."""
    out = []
    try:
        entries = _scan(folder)
    except _Unlisted as exc:
        return [Target(folder, symbol, raw, True, str(exc))]
    for entry in entries:
        name = entry.name
        if name.endswith(".tmp"):
            tally.tmp_skipped.append(folder / name)
            continue
        if not name.endswith(RECORD_SUFFIXES):
            continue
        seg = SegmentName.parse(name)
        named_ok = name == CURRENT or (seg is not None and seg.symbol == symbol)
        out.append(Target(folder / name, symbol, raw, named_ok))
    out.sort(key=lambda t: _sort_key(t.path.name))
    return out


def _is_symbol_dir(folder: Path) -> bool:
    """By the names in it (the files themselves may be anything)."""
    try:
        names = [e.name for e in _scan(folder)]
    except _Unlisted:
        return False
    return CURRENT in names or any(
        (seg := SegmentName.parse(name)) and seg.symbol == folder.name for name in names)


def find_targets(root: Path, tally: Tally) -> list[Target]:
    """The files to check under `root` (the output dir, or one symbol's dir)."""
    if _is_symbol_dir(root):
        return _in_folder(root, tally)
    try:
        entries = sorted(_scan(root), key=lambda e: e.name)
    except _Unlisted as exc:
        return [Target(root, root.name, False, True, str(exc))]
    out: list[Target] = []
    for entry in entries:
        try:
            is_dir = entry.is_dir()
        except OSError as exc:  # a symlink loop, say
            why = f"cannot read: {exc.strerror or exc}"
            out.append(Target(Path(entry.path), entry.name, False, True, why))
            continue
        if is_dir:
            out += _in_folder(Path(entry.path), tally)
    return out


def _in_folder(folder: Path, tally: Tally) -> list[Target]:
    out = _files_in(folder, folder.name, False, tally)
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

    if target.error is not None:
        report(0, target.error)
        return FileResult(path, shown, count, 0, 0, 0)
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
                    "`path:line: problem` for each problem found.",
        epilog="exit status: 0 clean; 1 problems found; 2 usage error.")
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
