"""What the publisher process tells the collector, and what the collector makes of it (pure).

The publisher runs in a process of its own (service.py). Every STATUS_EVERY_S it rewrites
`<output.dir>/.publisher.json` (`encode`); the collector reads it back (`decode`) for its
/metrics and /healthz (supervisor.py). The collector treats the file as untrusted input:
anyone able to write in the output directory can put anything there, so `decode` bounds
its size, the number of streams and every value, and refuses the whole file otherwise.

Lag in records needs the collector's own count of lines written this run: the publisher
counts, per stream, the lines acknowledged this run that the collector's writer wrote
(`this_run`: lines of files begun at or after `run_ns`, the collector's start), and the
collector subtracts (`stream_stats`). A publisher process that ends hands its counts on
(`Totals`), so restarts of it do not reset the series.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from collector.core import versioned

STATUS_NAME = ".publisher.json"
LOCK_NAME = ".publisher.lock"  # one publisher per output directory
VERSION = 1
STATUS_EVERY_S = 0.5
MAX_STATUS_BYTES = 1 << 20  # read this far, no further; ~150 bytes a stream
MAX_STREAMS = 2048  # a whole exchange (about 350 symbols) with raw frames, and room to spare
MAX_ERROR_CHARS = 300
_KEY = re.compile(r"[A-Z0-9]{1,64}(?:/raw)?")
_BIG = 2**63
_COUNTS = ("published", "this_run", "skipped", "duplicates")


class StatusError(ValueError):
    """A status file that cannot be used; says why."""


@dataclass(frozen=True)
class StreamStatus:
    published: int = 0  # lines acknowledged by the stream (duplicates included)
    this_run: int = 0  # of them and of the skipped ones, lines this run's writer wrote
    skipped: int = 0  # lines that cannot be published (too large, unreadable)
    duplicates: int = 0  # acknowledged as stored already
    head_ns: int | None = None  # recv_ns of the oldest line read and not yet acknowledged


@dataclass(frozen=True)
class Status:
    pid: int
    seq: int  # grows with every write: a status that does not change is a process that does not run
    run_ns: int  # the collector's start (lines of files begun since are this run's)
    at_ns: int  # wall time of the write
    connected: bool
    errors: int  # failed connections and publishes
    last_error: str | None
    idle_s: float | None  # since the last progress (a stream advanced, or all were caught up); None: none yet
    down_s: float  # since the connection was lost (0 while connected)
    stopped: bool = False  # the process's last word
    streams: Mapping[str, StreamStatus] = field(default_factory=dict)


def encode(status: Status) -> bytes:
    return orjson.dumps({
        "v": VERSION, "pid": status.pid, "seq": status.seq, "run_ns": status.run_ns,
        "at_ns": status.at_ns, "connected": status.connected, "errors": status.errors,
        "last_error": status.last_error, "idle_s": status.idle_s, "down_s": status.down_s,
        "stopped": status.stopped,
        "streams": {k: [s.published, s.this_run, s.skipped, s.duplicates, s.head_ns]
                    for k, s in status.streams.items()},
    }, option=orjson.OPT_APPEND_NEWLINE)


def _int(rec: Mapping[str, Any], name: str, low: int = 0) -> int:
    value = rec.get(name)
    if type(value) is not int or not low <= value < _BIG:
        raise StatusError(f"{name}: not an integer from {low} to 2^63-1")
    return value


def _seconds(rec: Mapping[str, Any], name: str) -> float:
    value = rec.get(name)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
            or not 0 <= value < 1e9:
        raise StatusError(f"{name}: not a number of seconds")
    return float(value)


def _stream(key: object, value: object) -> StreamStatus:
    if type(key) is not str or not _KEY.fullmatch(key):
        raise StatusError("streams: a key that is not SYMBOL or SYMBOL/raw")
    if type(value) is not list or len(value) != 5:
        raise StatusError(f"streams.{key}: not a list of 5")
    nums = dict(zip(_COUNTS, value[:4], strict=True))
    published, this_run, skipped, duplicates = (_int(nums, name) for name in _COUNTS)
    head = value[4]
    if head is not None and (type(head) is not int or not 0 <= head < _BIG):
        raise StatusError(f"streams.{key}: head_ns not an integer")
    return StreamStatus(published, this_run, skipped, duplicates, head)


def decode(data: bytes) -> Status:
    """The status in `data` (the file's bytes), or StatusError saying what is wrong."""
    try:
        rec = versioned.load(data, MAX_STATUS_BYTES, VERSION, "status")
    except ValueError as exc:
        raise StatusError(str(exc)) from None
    streams = rec.get("streams")
    if type(streams) is not dict:
        raise StatusError("streams: not an object")
    if len(streams) > MAX_STREAMS:
        raise StatusError(f"streams: more than {MAX_STREAMS}")
    flags = {}
    for name in ("connected", "stopped"):
        if type(rec.get(name)) is not bool:
            raise StatusError(f"{name}: not true or false")
        flags[name] = rec[name]
    error = rec.get("last_error")
    if error is not None and type(error) is not str:
        raise StatusError("last_error: not a string")
    return Status(
        pid=_int(rec, "pid", 1), seq=_int(rec, "seq"), run_ns=_int(rec, "run_ns"), at_ns=_int(rec, "at_ns"),
        connected=flags["connected"], errors=_int(rec, "errors"),
        last_error=None if error is None else printable(error),
        idle_s=None if rec.get("idle_s") is None else _seconds(rec, "idle_s"),
        down_s=_seconds(rec, "down_s"), stopped=flags["stopped"],
        streams={k: _stream(k, v) for k, v in streams.items()})


def printable(text: str) -> str:
    """At most MAX_ERROR_CHARS, without control characters (it becomes a label and a log field)."""
    return "".join(c if c.isprintable() else " " for c in text[:MAX_ERROR_CHARS])


class Totals:
    """Counts of publisher processes that have ended, per stream: the series go on."""

    def __init__(self) -> None:
        self.streams: dict[str, StreamStatus] = {}

    def add(self, status: Status) -> None:
        for key, st in status.streams.items():
            old = self.streams.get(key, StreamStatus())
            if len(self.streams) >= MAX_STREAMS and key not in self.streams:
                continue
            self.streams[key] = _sum(old, st)

    def with_(self, status: Status | None) -> dict[str, StreamStatus]:
        """These totals plus a running process's counts (and its heads)."""
        out = dict(self.streams)
        for key, st in (status.streams.items() if status is not None else ()):
            old = out.get(key)
            if old is None and len(out) >= MAX_STREAMS:
                continue
            out[key] = _sum(old or StreamStatus(), st, st.head_ns)
        return out


def _sum(a: StreamStatus, b: StreamStatus, head_ns: int | None = None) -> StreamStatus:
    return StreamStatus(a.published + b.published, a.this_run + b.this_run, a.skipped + b.skipped,
                        a.duplicates + b.duplicates, head_ns)


def stream_stats(streams: Mapping[str, StreamStatus], written: Mapping[str, int] | None, now_ns: int,
                 down_since_ns: int | None) -> dict[str, dict[str, float]]:
    """Per stream: published, lag_s, lag_records (when `written`, this run's writer's
    lines per stream, is known), skipped, duplicates. `down_since_ns`: since when nothing
    is published (no connection, or no publisher), None while publishing."""
    out: dict[str, dict[str, float]] = {}
    for key, st in streams.items():
        lag_records = max(0, written.get(key, 0) - st.this_run) if written is not None else 0
        if st.head_ns is not None:
            lag_s = max(0.0, (now_ns - st.head_ns) / 1e9)
        elif lag_records and down_since_ns is not None:
            lag_s = max(0.0, (now_ns - down_since_ns) / 1e9)
        else:
            lag_s = 0.0
        row = {"published": float(st.published), "lag_s": lag_s, "skipped": float(st.skipped),
               "duplicates": float(st.duplicates)}
        if written is not None:
            row["lag_records"] = float(lag_records)
        out[key] = row
    return out


def stuck(stats: Mapping[str, Mapping[str, float]], idle_s: float, stuck_s: float, connected: bool,
          last_error: str | None, process: str | None = None) -> str | None:
    """Why publishing is stuck (nothing published for `stuck_s` while records wait), for
    /healthz; None when it is not. `process`: what is wrong with the publisher process."""
    if idle_s < stuck_s:
        return None
    worst = max((s["lag_s"] for s in stats.values()), default=0.0)
    waiting = sum(int(s.get("lag_records", 0)) for s in stats.values())
    if not worst and not waiting and process is None:
        return None
    state = "connected" if connected else "not connected"
    text = (f"nothing published for {idle_s:.0f} s with records waiting ({waiting} records, lag up to "
            f"{worst:.0f} s); NATS {state}; last error: {last_error or 'none'}")
    return f"{text}; publisher process: {process}" if process else text
