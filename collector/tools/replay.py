"""`collector replay DIR`: rebuild from raw frames the records `collector run` wrote.

Each symbol's `raw/` segments are read in order; every frame goes through a fresh
stream per connection exactly as the live feed did, with the recorded receive
times, and the recorded resync records are passed through where the feed wrote
them. The output is therefore byte-for-byte the record lines of the run (without
segment headers), including the ones a full disk made the run drop.

Both APIs, as each segment's header says (`feed.api`): v1 frames go through a
`V1Stream`; current-API frames through a `CurrentStream`, started at each `connect`
line. A current-API stream that breaks (or that the audit broke: a resync `audit`) was
either repaired in place by the feed (UNSUBSCRIBE, ack, SUBSCRIBE on the same socket) or
dropped for a new connection;
the log tells which: a `connect` line next means a new connection, anything else on
the same connection (the feed's `sent` UNSUBSCRIBE, a frame) means the repair in
place, which the replay then does too. Every `sent` line must equal the next
request the replayed stream made, else `ReplayError` names the line: a replay that
asked for something else is not the run.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from collector.core import rawlog
from collector.core.format import Reason
from collector.core.stream import StreamBroken
from collector.gemini.current_stream import CurrentStream
from collector.gemini.v1_stream import V1Stream
from collector.tools import listing
from collector.tools.decoding import DECODE_ERRORS, MAX_RAW_LINE, ReadError, bounded_lines


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
        run, replay = _request(text), _request(want) if want is not None else None
        if replay is None or run is None or run[1] != replay[1]:
            expected = want.decode() if want is not None else "nothing"
            raise ReplayError(f"{where}: the run sent {text}, the replay would have sent {expected}")
        # A socket shared by several symbols numbers their requests in one series.
        self.stream.renumber(replay[0], run[0])

    def forced(self) -> None:
        """The feed broke a live stream from outside (an audit found its book wrong):
        the lines after say how it was repaired, as after a break found here."""
        if self.stream.live:
            self.stream.drop()
            self.broken = True

    def _repaired_in_place(self) -> None:
        # More on the same connection after a break (no `connect` line came between):
        # the feed resubscribed on the same socket.
        if self.broken:
            self.broken = False
            self.stream.resync()
            self.unsent.extend(self.stream.take_requests())


def _request(text: str | bytes) -> tuple[Any, Any] | None:
    """A request's id, and the rest of it; None if it is not a JSON object."""
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return (msg.pop("id", None), msg) if isinstance(msg, dict) else None


_REASONS = frozenset(r.value for r in Reason)
_MAX_DEPTH = 1000  # config's book.depth range is 1..1000


class _Bad(Exception):
    """A raw line that is not what the collector writes (the caller adds where)."""


def _depth_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= value <= _MAX_DEPTH:
        raise argparse.ArgumentTypeError(f"must be between 1 and {_MAX_DEPTH}, got {value}")
    return value


def _table(parent: dict[str, Any], key: str) -> dict[str, Any]:
    value = parent.get(key, {})
    if type(value) is not dict:
        raise _Bad(f"header {key} is not a table: {value!r}")
    return value


def _settings(rec: dict[str, Any]) -> tuple[str, bool, int, str]:
    """(api, trades, depth, emit) from a raw segment's header, each checked."""
    config = _table(rec, "config")
    feed, book = _table(config, "feed"), _table(config, "book")
    api, trades = feed.get("api", "v1"), feed.get("trades", True)
    depth, emit = book.get("depth", 10), book.get("emit", "change")
    if api not in ("v1", "current"):
        raise _Bad(f"raw frames of feed.api = {api!r}")
    if type(trades) is not bool:
        raise _Bad(f"header feed.trades is not true or false: {trades!r}")
    if type(depth) is not int or not 1 <= depth <= _MAX_DEPTH:
        raise _Bad(f"header book.depth is not between 1 and {_MAX_DEPTH}: {depth!r}")
    if emit not in ("change", "every"):
        raise _Bad(f"header book.emit is not change or every: {emit!r}")
    return api, trades, depth, emit


def _parse(line: bytes) -> tuple[dict[str, Any], Any]:
    """(the line's object, its type), checked to be a line rawlog writes."""
    try:
        rec = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise _Bad(f"not JSON ({exc})") from None
    if type(rec) is not dict:
        raise _Bad(f"not a JSON object: {line[:60].decode('utf-8', 'replace').rstrip()}")
    kind = rec.get("type")
    if kind == "header":
        return rec, kind
    if kind not in ("resync", "connect", "sent", None):
        raise _Bad(f"unknown line type {kind!r}")
    recv_ns = rec.get("recv_ns")
    if type(recv_ns) is not int:
        raise _Bad(f"recv_ns is not an integer: {recv_ns!r}")
    if kind == "resync" and rec.get("reason") not in _REASONS:
        raise _Bad(f"unknown resync reason {rec.get('reason')!r}")
    if kind == "sent" and type(rec.get("text")) is not str:
        raise _Bad(f"sent text is not a string: {rec.get('text')!r}")
    if kind is None:
        if "frame" in rec:
            if not line.startswith(rawlog.FRAME_PREFIX % recv_ns):
                raise _Bad("frame line not as the collector writes it (recv_ns first)")
        elif type(rec.get("text")) is not str:
            raise _Bad("neither a frame nor a text string")
    return rec, kind


def replay_symbol(folder: Path, depth: int | None = None, emit: str | None = None) -> Iterator[bytes]:
    """Records (as JSON lines) rebuilt from one symbol's raw folder. A line that is not
    what the collector writes, or a file that cannot be read, raises ReplayError naming
    the file and line; a last line without its newline (being written, or cut by a
    crash) is not a frame yet and is skipped, as `collector cat` does."""
    symbol = folder.parent.name
    stream: V1Stream | _Current | None = None
    # until a header says the run's
    depth_now, every, api, trades = depth or 10, emit == "every", "v1", True
    try:
        segs = listing.list_segments(folder)
    except ReadError as exc:
        raise ReplayError(str(exc)) from None
    for seg in segs:
        try:
            opened = listing.open_segment(seg)
        except ReadError as exc:
            raise ReplayError(str(exc)) from None
        if opened is None:  # gone (retention) between listing and opening
            continue
        path, f = opened
        n = 0
        try:
            with f:
                for n, line in enumerate(bounded_lines(f, path, MAX_RAW_LINE), 1):
                    if line[-1:] != b"\n":
                        break  # not a whole line yet (or torn): not a frame
                    rec, kind = _parse(line)
                    if kind == "header":
                        api, trades, run_depth, run_emit = _settings(rec)
                        depth_now = depth or run_depth
                        every = (emit or run_emit) == "every"
                    elif kind == "resync":
                        # v1: every break ends the connection. Current API: a gap or a crossed
                        # book may be repaired on the same connection (the lines after it
                        # tell, see _Current); only raw lines lost to a full disk leave
                        # nothing to go on until the next connection.
                        if api == "v1" or rec["reason"] == "dropped":
                            stream = None
                        elif rec["reason"] == Reason.AUDIT and isinstance(stream, _Current):
                            stream.forced()
                        yield line
                    elif kind == "connect":
                        stream = (V1Stream(symbol, depth_now, every) if api == "v1"
                                  else _Current(symbol, depth_now, every, trades))
                    elif kind == "sent":
                        if isinstance(stream, _Current):
                            stream.sent(rec["text"], f"{path} line {n}")
                    elif stream is not None:
                        recv_ns = rec["recv_ns"]
                        raw = rawlog.frame_bytes(line, recv_ns) if "frame" in rec else rec["text"]
                        try:
                            out = stream.feed(raw, recv_ns)
                        except StreamBroken:  # v1 only
                            stream = None  # the feed's resync record for it follows in the log
                            continue
                        if out:
                            yield out
        except _Bad as exc:
            raise ReplayError(f"{path}:{n}: {exc}") from None
        except ReadError as exc:
            raise ReplayError(f"{path}:{n + 1}: {exc.why}") from None
        except DECODE_ERRORS as exc:
            raise ReplayError(f"{path}:{n + 1}: cannot decompress: {exc}") from None
        except OSError as exc:
            raise ReplayError(f"{path}:{n + 1}: read error: {exc.strerror or exc}") from None


def main_replay(argv: list[str], stdout: IO[bytes] | None = None) -> int:
    """`collector replay`: 0 done, 1 a raw file that cannot be replayed (one line on
    stderr naming it), 2 usage error."""
    parser = argparse.ArgumentParser(
        prog="collector replay",
        description="Rebuild records from raw frames (output.raw = true) as JSON lines on stdout.",
        epilog="exit status: 0 done; 1 a raw file that cannot be replayed (named on stderr); "
               "2 usage error, or no raw frames under DIR.")
    parser.add_argument("dir", type=Path, help="the output directory of a run with raw frames")
    parser.add_argument("--symbol", action="append", help="only these symbols (repeatable)")
    parser.add_argument("--depth", type=_depth_arg,
                        help=f"levels per side, 1 to {_MAX_DEPTH} (default: the run's)")
    parser.add_argument("--emit", choices=("change", "every"), help="default: the run's")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed
        return int(exc.code or 0)
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
        # the reader went away (`collector replay ... | head`): stop quietly, and keep
        # Python from complaining again when it flushes stdout at exit
        if stdout is None:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, out.fileno())
            os.close(devnull)
        return 0
    except ReplayError as exc:
        out.flush()
        print(f"collector replay: {exc}", file=sys.stderr)
        return 1
    return 0
