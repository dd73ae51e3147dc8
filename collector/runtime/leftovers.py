"""What a crash or an earlier run leaves in a stream's folder (I/O): a torn last line,
and a `current.jsonl` to close under the period its header names, or to set aside as
`current.jsonl.corrupt-<UTC stamp>[-N]` when no period can be trusted."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import structlog

from collector.core.format import (
    CURRENT,
    HEADER_LINE_MAX,
    SCHEMA,
    header_start_s,
    iso_time,
    parse_header,
)
from collector.runtime.segments import free_name, period_start
from collector.runtime.tree import open_file

log = structlog.get_logger("segments")

FUTURE_SLACK_S = 86400  # a leftover's header may start this far past the clock (a skewed clock)
CORRUPT = ".corrupt-"  # a set-aside leftover: current.jsonl.corrupt-<UTC stamp>[-N]


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


def leftover_period(fd: int, symbol: str, raw: bool, period_s: int,
                    now: float) -> tuple[int | None, str]:
    """(period start, "") of a leftover current.jsonl open at `fd`, from its header (or, in
    a file from before segments had headers, its first record); (None, "") when it is
    empty, else (None, why it is corrupt)."""
    line = os.pread(fd, HEADER_LINE_MAX, 0)
    if not line:
        return None, ""
    nl = line.find(b"\n")
    if nl < 0:
        return None, "no complete first line"
    line = line[:nl + 1]
    head = parse_header(line)
    if head is None:
        return _legacy_period(line, raw, period_s, now)
    start = header_start_s(head)
    want = "raw" if raw else "records"
    if type(head.get("schema")) is not int or head["schema"] != SCHEMA:
        return None, f"header schema {head.get('schema')!r}, not {SCHEMA}"
    if head.get("symbol") != symbol or head.get("stream", "records") != want:
        return None, f"header of {head.get('symbol')!r} {head.get('stream')!r}, not {symbol!r} {want!r}"
    if start is None or start > now + FUTURE_SLACK_S:
        return None, f"impossible segment_start_s {head.get('segment_start_s')!r}"
    if start % _header_period(head, period_s) or head.get("segment_start") != iso_time(start):
        return None, f"segment_start_s {start} not a period start, or not its segment_start"
    return start, ""


def _header_period(head: dict[str, Any], period_s: int) -> int:
    """The rotation period the leftover was written with (its header's config), else ours."""
    from collector.config import parse_duration  # lazy: only leftovers need it

    cfg = head.get("config")
    out = cfg.get("output") if isinstance(cfg, dict) else None
    rotate = out.get("rotate") if isinstance(out, dict) else None
    try:
        return parse_duration(rotate) or period_s if isinstance(rotate, str) else period_s
    except ValueError:
        return period_s


def _legacy_period(line: bytes, raw: bool, period_s: int, now: float) -> tuple[int | None, str]:
    """A file from before headers: records began with a `resync` (reason `start`), raw
    frame files with any line carrying `recv_ns`."""
    try:
        rec = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None, "the first line is not JSON"
    if type(rec) is not dict or not (raw or (rec.get("type") == "resync" and rec.get("reason") == "start")):
        return None, "the first line is not a header record"
    recv_ns = rec.get("recv_ns")
    if type(recv_ns) is not int or not 0 <= recv_ns <= (now + FUTURE_SLACK_S) * 1e9:
        return None, f"the first record's recv_ns {recv_ns!r} is no possible time"
    return period_start(recv_ns / 1e9, period_s), ""


def set_aside(dir_fd: int, now: float) -> str:
    """Rename a corrupt current.jsonl beside itself, out of every reader's way; its new name."""
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
    base = f"{CURRENT}{CORRUPT}{stamp}"
    names = set(os.listdir(dir_fd))
    name, n = base, 1
    while name in names:
        n += 1
        name = f"{base}-{n}"
    os.rename(CURRENT, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    os.fsync(dir_fd)
    return name


def settle(dir_fd: int, folder: Path, symbol: str, raw: bool, period_s: int,
           keep: int | None) -> str | None:
    """A `current.jsonl` already in `folder` (a previous run's, or ours after a reopen or a
    failed rotation) is kept to append to if its header names period `keep`, else closed
    under the period it names (its new name is returned; the caller fsyncs the folder),
    or set aside if that is impossible."""
    path = folder / CURRENT
    try:
        fd = open_file(dir_fd, CURRENT, path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        start, why = leftover_period(fd, symbol, raw, period_s, time.time())
        if start is not None and start == keep:
            return None
        if start is not None:
            cut_partial_line(fd, path)
            os.fsync(fd)
    finally:
        os.close(fd)
    if start is None:  # empty, or no possible header
        if not why:
            os.unlink(CURRENT, dir_fd=dir_fd)
            return None
        name = set_aside(dir_fd, time.time())
        log.error("set aside a corrupt current.jsonl", path=str(folder / name), why=why)
        return None
    target = free_name(os.listdir(dir_fd), symbol, start)
    os.rename(CURRENT, target, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    log.info("closed an earlier segment", path=str(folder / target))
    return target
