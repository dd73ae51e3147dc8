"""`collector replay DIR`: rebuild from raw frames the records `collector run` wrote.

Each symbol's `raw/` segments are read in order; every frame goes through a fresh
stream per connection exactly as the live feed did, with the recorded receive
times, and the recorded resync records are passed through where the feed wrote
them. The output is therefore byte-for-byte the record lines of the run (without
segment headers), including the ones a full disk made the run drop.

Both APIs, as each segment's header says (`feed.api`): v1 frames go through a
`V1Stream`; current-API frames through a `CurrentStream`, started at each `connect`
line. A current-API stream that breaks was either repaired in place by the feed
(UNSUBSCRIBE, ack, SUBSCRIBE on the same socket) or dropped for a new connection;
the log tells which: a `connect` line next means a new connection, anything else on
the same connection (the feed's `sent` UNSUBSCRIBE, a frame) means the repair in
place, which the replay then does too. Every `sent` line must equal the next
request the replayed stream made, else `ReplayError` names the line: a replay that
asked for something else is not the run.
"""

from __future__ import annotations

import argparse
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import orjson

from collector.core import rawlog
from collector.core.stream import StreamBroken
from collector.gemini.current_stream import CurrentStream
from collector.gemini.v1_stream import V1Stream
from collector.tools import listing


class ReplayError(Exception):
    pass


class _Current:
    """One current-API connection as the feed handled it: its stream, whether that
    broke, and the requests it made that the log has not shown as sent yet."""

    def __init__(self, symbol: str, depth: int, every: bool, trades: bool) -> None:
        self.stream = CurrentStream(symbol, depth, every, trades=trades)
        self.stream.start()
        self.broken = False
        self.unsent: deque[bytes] = deque(self.stream.take_requests())

    def feed(self, raw: bytes | str, recv_ns: int) -> bytes:
        self._repaired_in_place()
        try:
            out = self.stream.feed(raw, recv_ns)
        except StreamBroken:
            self.broken = True  # the next lines say whether the feed repaired it in place
            return b""
        self.unsent.extend(self.stream.take_requests())
        return out

    def sent(self, text: str, where: str) -> None:
        self._repaired_in_place()
        want = self.unsent.popleft() if self.unsent else None
        if want != text.encode():
            expected = want.decode() if want is not None else "nothing"
            raise ReplayError(f"{where}: the run sent {text}, the replay would have sent {expected}")

    def _repaired_in_place(self) -> None:
        # More on the same connection after a break (no `connect` line came between):
        # the feed resubscribed on the same socket.
        if self.broken:
            self.broken = False
            self.stream.resync()
            self.unsent.extend(self.stream.take_requests())


def replay_symbol(folder: Path, depth: int | None = None, emit: str | None = None) -> Iterator[bytes]:
    """Records (as JSON lines) rebuilt from one symbol's raw folder."""
    symbol = folder.parent.name
    stream: V1Stream | _Current | None = None
    # until a header says the run's
    depth_now, every, api, trades = depth or 10, emit == "every", "v1", True
    for seg in listing.list_segments(folder):
        opened = listing.open_segment(seg)
        if opened is None:
            continue
        with opened[1] as f:
            for n, line in enumerate(f, 1):
                rec = orjson.loads(line)
                kind = rec.get("type")
                if kind == "header":
                    config = rec.get("config", {})
                    api = config.get("feed", {}).get("api", "v1")
                    if api not in ("v1", "current"):
                        raise ReplayError(f"{opened[0]}: raw frames of feed.api = {api!r}")
                    trades = config.get("feed", {}).get("trades", True)
                    book = config.get("book", {})
                    depth_now = depth or book.get("depth", 10)
                    every = (emit or book.get("emit", "change")) == "every"
                elif kind == "resync":
                    # v1: every break ends the connection. Current API: a gap or a crossed
                    # book may be repaired on the same connection (the lines after it
                    # tell, see _Current); only raw lines lost to a full disk leave
                    # nothing to go on until the next connection.
                    if api == "v1" or rec.get("reason") == "dropped":
                        stream = None
                    yield line
                elif kind == "connect":
                    stream = (V1Stream(symbol, depth_now, every) if api == "v1"
                              else _Current(symbol, depth_now, every, trades))
                elif kind == "sent":
                    if isinstance(stream, _Current):
                        stream.sent(rec["text"], f"{opened[0]} line {n}")
                elif stream is not None:
                    raw = rawlog.frame_bytes(line, rec["recv_ns"]) if "frame" in rec else rec["text"]
                    try:
                        out = stream.feed(raw, rec["recv_ns"])
                    except StreamBroken:  # v1 only
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
