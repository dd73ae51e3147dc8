"""`collector replay DIR`: rebuild from raw frames the records `collector run` wrote.

Each symbol's `raw/` segments are read in order; every frame goes through a fresh
`Stream` per connection exactly as the live feed did, with the recorded receive
times, and the recorded resync records are passed through where the feed wrote
them. The output is therefore byte-for-byte the record lines of the run (without
segment headers), including the ones a full disk made the run drop.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import orjson

from collector import rawlog, readback
from collector.stream import Stream, StreamBroken


class ReplayError(Exception):
    pass


def replay_symbol(folder: Path, depth: int | None = None, emit: str | None = None) -> Iterator[bytes]:
    """Records (as JSON lines) rebuilt from one symbol's raw folder."""
    symbol = folder.parent.name
    stream: Stream | None = None
    depth_now, every = depth or 10, emit == "every"  # until a header says the run's
    for seg in readback.list_segments(folder):
        opened = readback.open_segment(seg)
        if opened is None:
            continue
        with opened[1] as f:
            for line in f:
                rec = orjson.loads(line)
                kind = rec.get("type")
                if kind == "header":
                    if rec.get("config", {}).get("feed", {}).get("api", "v1") != "v1":
                        raise ReplayError(f"{opened[0]}: raw frames of feed.api = "
                                          f"{rec['config']['feed']['api']!r}: replay reads v1 only")
                    book = rec.get("config", {}).get("book", {})
                    depth_now = depth or book.get("depth", 10)
                    every = (emit or book.get("emit", "change")) == "every"
                elif kind == "resync":
                    stream = None
                    yield line
                elif kind == "connect":
                    stream = Stream(symbol, depth_now, every)
                elif stream is not None:
                    raw = rawlog.frame_bytes(line, rec["recv_ns"]) if "frame" in rec else rec["text"]
                    try:
                        out = stream.feed(raw, rec["recv_ns"])
                    except StreamBroken:
                        stream = None  # the feed's resync record for it follows in the log
                        continue
                    if out:
                        yield out


def main_replay(argv: list[str], stdout: IO[bytes] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="collector replay",
        description="Rebuild records from raw frames (output.raw = true) as JSON lines on stdout.")
    parser.add_argument("dir", type=Path, help="the output directory of a run with raw frames")
    parser.add_argument("--symbol", action="append", help="only these symbols (repeatable)")
    parser.add_argument("--depth", type=int, help="levels per side (default: the run's)")
    parser.add_argument("--emit", choices=("change", "every"), help="default: the run's")
    args = parser.parse_args(argv)
    folders = sorted(p for p in args.dir.glob("*/raw") if p.is_dir())
    if args.symbol:
        folders = [p for p in folders if p.parent.name in args.symbol]
    if not folders:
        print(f"collector replay: no raw frames under {args.dir}", file=sys.stderr)
        return 2
    out = stdout or sys.stdout.buffer
    try:
        for folder in folders:
            for data in replay_symbol(folder, args.depth, args.emit):
                out.write(data)
        out.flush()
    except BrokenPipeError:
        return 0
    except ReplayError as exc:
        print(f"collector replay: {exc}", file=sys.stderr)
        return 1
    return 0
