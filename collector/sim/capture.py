"""Reading recorded market-data captures: the received messages, in order, with their
receive times. No book logic here (that is ``tape.py``).

Formats, detected from the file:

* cryptofeed text captures (``GEMINI.ws.1.0``): header lines, then one ``<recv ts>: {json}``
  line per received message. Lines containing `` <- `` (sent), `` <-> `` (connect),
  `` -> `` (REST) or starting with ``configuration:`` are not received messages.
* JSON lines, plain (``.jsonl``) or zstd-compressed (``.zst``; needs the optional
  ``zstandard`` package), one record per line, any mix of:

  - cryptofeed v3 records ``{"t":"recv","ts":<epoch s>,"data":<message or its JSON text>}``;
    ``{"t":"http","url":".../v1/symbols/details/<sym>","data":...}`` records are kept as
    symbol details (increments); other ``t`` values are ignored;
  - raw v1 frames (our own collector's shape) ``{"recv_ns":<epoch ns>,"symbol":"BTCUSD",
    "frame":{...v1 frame...}}``; ``frame`` may also be the frame's JSON text.

Messages are v2 (``l2_updates``, ``trade``, ``heartbeat``...; they carry ``symbol``) or v1
frames (``update``/``heartbeat``; the symbol comes from the record).
"""

from __future__ import annotations

import gzip
import heapq
import io
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import orjson

__all__ = ["Capture", "Message", "load_capture"]

_RECV_LINE = re.compile(r"^(\d+(?:\.\d+)?): (.*)$")
_NOT_RECEIVED = (" <- ", " <-> ", " -> ")
# Closed segments of the collector: <SYMBOL>.<YYYYMMDDTHHMMSSZ>[-N].jsonl[.zst|.gz]
_SEGMENT = re.compile(r"^(?P<symbol>[A-Z0-9]+)\.(?P<start>\d{8}T\d{6}Z)(?:-(?P<n>\d+))?"
                      r"\.jsonl(?:\.zst|\.gz)?$")


@dataclass(frozen=True, slots=True)
class Message:
    """One received message. ``v1_symbol`` is set for raw v1 frames (which carry no symbol)."""

    ts_ns: int
    data: dict[str, Any]
    v1_symbol: str | None = None

    @property
    def symbol(self) -> str | None:
        if self.v1_symbol is not None:
            return self.v1_symbol
        sym = self.data.get("symbol")
        return sym.upper() if isinstance(sym, str) else None

    @property
    def type(self) -> str:
        t = self.data.get("type")
        return t if isinstance(t, str) else "?"


@dataclass
class Capture:
    """The received messages of one capture file, in file order."""

    path: Path
    messages: list[Message] = field(default_factory=list)
    details: dict[str, dict[str, Any]] = field(default_factory=dict)  # /v1/symbols/details bodies
    invalid_lines: int = 0  # unparseable lines (a torn last line, ...), skipped

    @property
    def counts(self) -> Counter[str]:
        """Received messages by ``type`` (``l2_updates``, ``trade``, ``heartbeat``, ``update``...)."""
        return Counter(m.type for m in self.messages)

    @property
    def symbols(self) -> list[str]:
        """Symbols in order of first appearance."""
        return list(dict.fromkeys(s for m in self.messages if (s := m.symbol) is not None))

    @property
    def start_ns(self) -> int:
        return self.messages[0].ts_ns if self.messages else 0

    @property
    def end_ns(self) -> int:
        return self.messages[-1].ts_ns if self.messages else 0  # times are non-decreasing


def _ns(text: str | float) -> int:
    """Epoch seconds (text or number) -> ns, exactly for text."""
    try:
        return int(Decimal(str(text)) * 1_000_000_000)
    except InvalidOperation:
        raise ValueError(f"bad timestamp {text!r}") from None


def _as_dict(value: Any) -> dict[str, Any] | None:
    if isinstance(value, (str, bytes)):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
    return value if isinstance(value, dict) else None


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".zst":
        try:
            import zstandard  # type: ignore[import-not-found, unused-ignore]  # optional
        except ImportError:
            raise RuntimeError(
                f"install zstandard to replay .zst files ({path.name}): pip install zstandard"
            ) from None
        raw = path.open("rb")
        reader = zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
        return io.TextIOWrapper(reader, encoding="utf-8")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return path.open("r", encoding="utf-8")


def _text_lines(lines: Iterator[str], cap: Capture, out: list[Message]) -> None:
    for line in lines:
        line = line.rstrip("\r\n")
        if not line.strip() or line.startswith("configuration:") or any(
                s in line for s in _NOT_RECEIVED):
            continue
        m = _RECV_LINE.match(line)
        data = _as_dict(m.group(2)) if m else None
        if m is None or data is None:
            cap.invalid_lines += 1
            continue
        out.append(Message(_ns(m.group(1)), data))


def _url_symbol(url: str) -> str | None:
    path = url.split("?", 1)[0].rstrip("/")
    head, _, sym = path.rpartition("/")
    return sym.upper() if head.endswith("/marketdata") and sym else None


def _jsonl_lines(lines: Iterator[str], cap: Capture, out: list[Message],
                 symbol: str | None) -> None:
    """``symbol``: the stream's symbol when the file does not say (a collector raw segment
    in ``<SYMBOL>/raw/``); a ``connect`` line's URL or a record's ``symbol`` overrides it."""
    for line in lines:
        if not line.strip():
            continue
        rec = _as_dict(line)
        if rec is None:
            cap.invalid_lines += 1
            continue
        if "recv_ns" in rec and "frame" in rec:  # a raw v1 frame
            frame = _as_dict(rec["frame"])
            sym = rec.get("symbol", symbol)
            if frame is None or not isinstance(sym, str):
                cap.invalid_lines += 1
                continue
            out.append(Message(int(rec["recv_ns"]), frame, sym.upper()))
            continue
        t = rec.get("t")
        if t == "recv":
            data = _as_dict(rec.get("data"))
            if data is None or "ts" not in rec:
                cap.invalid_lines += 1
                continue
            out.append(Message(_ns(rec["ts"]), data))
        elif t == "http":
            url = str(rec.get("url", ""))
            _, sep, sym = url.rpartition("/symbols/details/")
            body = _as_dict(rec.get("data"))
            if sep and body is not None and "tick_size" in body and sym.lower() != "all":
                cap.details[sym.upper()] = body
        elif rec.get("type") == "connect":  # collector raw log: a new connection
            symbol = _url_symbol(str(rec.get("url", ""))) or symbol
        # anything else (headers, resync records, unparsed "text" frames...) is not a message


def _monotonic(msgs: list[Message]) -> list[Message]:
    """File order is the order of reception; a receive clock that stepped back is clamped
    (never reordered: the per-symbol order is what keeps a v2 book right)."""
    last = 0
    for i, m in enumerate(msgs):
        if m.ts_ns < last:
            msgs[i] = Message(last, m.data, m.v1_symbol)
        else:
            last = m.ts_ns
    return msgs


def _parse_file(path: Path, cap: Capture, symbol: str | None = None) -> list[Message]:
    out: list[Message] = []
    with _open_text(path) as f:
        lines = iter(f)
        first = ""
        for first in lines:
            if first.strip():
                break
        chained = _chain(first, lines)
        if first.lstrip().startswith("{"):
            _jsonl_lines(chained, cap, out, symbol)
        else:
            _text_lines(chained, cap, out)
    return _monotonic(out)


def _segment_key(path: Path) -> tuple[int, str, int]:
    """Closed segments by (UTC start, early-close number), then ``current.jsonl``."""
    m = _SEGMENT.match(path.name)
    if m is None:
        return (1, "", 0)
    return (0, m["start"], int(m["n"] or 1))


def _raw_folders(root: Path) -> list[Path]:
    if root.name == "raw":
        return [root]
    if (root / "raw").is_dir():
        return [root / "raw"]
    return sorted(p for p in root.glob("*/raw") if p.is_dir())


def load_capture(path: str | Path) -> Capture:
    """Parse a capture. A file: format detected (``.zst``/``.gz`` are decompressed; a
    first non-blank line starting with ``{`` means JSON lines, else the text format).
    A directory: a collector output directory (every ``<SYMBOL>/raw/`` stream), one
    symbol's directory, or one ``raw/`` folder; segments in order, streams merged by
    receive time."""
    p = Path(path)
    cap = Capture(p)
    if not p.is_dir():
        cap.messages = _parse_file(p, cap, _file_symbol(p))
        return cap
    streams: list[list[Message]] = []
    for folder in _raw_folders(p):
        files = sorted((f for f in folder.iterdir() if f.is_file() and _is_segment(f)),
                       key=_segment_key)
        msgs: list[Message] = []
        for f in files:
            msgs.extend(_parse_file(f, cap, folder.parent.name.upper()))
        streams.append(_monotonic(msgs))
    if not streams:
        raise ValueError(f"no raw frames under {p} (expected <SYMBOL>/raw/ segments)")
    cap.messages = list(heapq.merge(*streams, key=lambda m: m.ts_ns))
    return cap


def _is_segment(path: Path) -> bool:
    return path.name == "current.jsonl" or _SEGMENT.match(path.name) is not None


def _file_symbol(path: Path) -> str | None:
    """A collector raw segment's symbol, from its name or its ``<SYMBOL>/raw/`` folder."""
    m = _SEGMENT.match(path.name)
    if m is not None:
        return m["symbol"]
    if path.parent.name == "raw" and path.parent.parent.name:
        return path.parent.parent.name.upper()
    return None


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    if first:
        yield first
    yield from rest
