"""The on-disk format, every fact of it in one place (pure).

Record files are JSON lines, one record per line, UTF-8, newline-terminated. Each
record type's keys come in a fixed order (`FIELDS`), so lines are stable to diff and
grep; the renderers below, the C core (`collector/core/_fastbook.c`, held to them
byte for byte by tests/core/test_format.py), the readers and `collector verify` all
follow this module. Prices and sizes stay decimal text: the grammar is `DECIMAL`,
and `canonical` gives one text per number.

Files: `<dir>/<SYMBOL>/current.jsonl` is the active segment; closed segments are
`<SYMBOL>.<UTC start YYYYMMDDTHHMMSSZ>[-N].jsonl[.zst|.gz]` (`SegmentName`), and a
symbol's raw frames live the same way under `<SYMBOL>/raw/`. Every segment starts
with a `header` record (`header`, `parse_header`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

SCHEMA = 1
_NL = orjson.OPT_APPEND_NEWLINE


class RecordType(StrEnum):
    HEADER = "header"
    BOOK = "book"
    TRADE = "trade"
    AUCTION = "auction"
    RESYNC = "resync"


TYPES = tuple(RecordType)


class Reason(StrEnum):
    """Why a stream broke: the `reason` of a `resync` record (README, "Records")."""

    START = "start"  # the process (or this symbol's feed) started
    GAP = "gap"  # a sequence or update id skipped, or the first frame was not 0
    SNAPSHOT_TIMEOUT = "snapshot_timeout"  # no snapshot within feed.snapshot_timeout_s
    STALE = "stale"  # no frame for feed.stale_after_s (v1), or no pong (current API)
    INVALID = "invalid"  # unparseable or invalid frame
    CROSSED = "crossed"  # best bid >= best ask after an update
    CLOSED = "closed"  # connection closed, failed or never opened
    REFUSED = "refused"  # handshake refused (HTTP 404/429/503...)
    ERROR = "error"  # a bug in the feed; it was restarted
    DROPPED = "dropped"  # the writer lost lines (disk full); `dropped` counts them
    UNLISTED = "unlisted"  # the exchange stopped listing the symbol: its last record (discovery)
    AUDIT = "audit"  # the live book differed from the exchange's REST book twice in a row ([audit])


# Each record type's keys, in the order every line has them. A key in parentheses is
# written only when present: `exchange_ns` (current API), `block` (block trades).
FIELDS: dict[str, tuple[str, ...]] = {
    RecordType.HEADER: ("type", "schema", "stream", "symbol", "segment_start", "segment_start_s",
                        "collector_version", "config"),
    RecordType.BOOK: ("type", "symbol", "seq", "event_id", "exchange_ms", "(exchange_ns)",
                      "recv_ns", "bids", "asks"),
    RecordType.TRADE: ("type", "symbol", "seq", "event_id", "tid", "price", "amount",
                       "maker_side", "(block)", "exchange_ms", "(exchange_ns)", "recv_ns"),
    # then the auction event's own fields, then exchange_ms, recv_ns
    RecordType.AUCTION: ("type", "symbol", "seq", "event_id", "event"),
    # then the reason's detail fields, then recv_ns
    RecordType.RESYNC: ("type", "symbol", "reason"),
}

MAKER_SIDES = ("bid", "ask", "auction")  # a trade's resting side; None for block trades


# ---- decimal text ------------------------------------------------------------------------

# Plain non-negative ASCII decimals, as Gemini writes them ("0", "6513.20", "0.00000001"):
# no sign, no exponent, digits on both sides of a point.
DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?\Z")
is_decimal = DECIMAL.match

Level = tuple[str, str]  # (price text, size text)


def canonical(text: str) -> str:
    """The canonical text of a decimal matching `DECIMAL`: no leading zeros before the
    units digit, no trailing zeros after the point, no bare point, "0" for zero
    ("06513.20" -> "6513.2", "0.00000000" -> "0"). One number, one text."""
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text[:1] != "0":
        return text
    text = text.lstrip("0")
    if not text:
        return "0"
    return "0" + text if text[0] == "." else text


def is_zero(text: str) -> bool:
    """A decimal that is zero in any spelling ("0", "0.0", "0.00000000")."""
    return not text.strip("0.")


# ---- records -----------------------------------------------------------------------------

def book(symbol: str, seq: int, event_id: int, exchange_ms: int | None, recv_ns: int,
         bids: list[Level] | orjson.Fragment, asks: list[Level] | orjson.Fragment,
         exchange_ns: int | None = None) -> bytes:
    if exchange_ns is None:
        rec = {"type": "book", "symbol": symbol, "seq": seq, "event_id": event_id,
               "exchange_ms": exchange_ms, "recv_ns": recv_ns, "bids": bids, "asks": asks}
    else:
        rec = {"type": "book", "symbol": symbol, "seq": seq, "event_id": event_id,
               "exchange_ms": exchange_ms, "exchange_ns": exchange_ns, "recv_ns": recv_ns,
               "bids": bids, "asks": asks}
    return orjson.dumps(rec, option=_NL)


def trade(symbol: str, seq: int, event_id: int, tid: int, price: str, amount: str,
          maker_side: str | None, block: bool, exchange_ms: int | None, recv_ns: int,
          exchange_ns: int | None = None) -> bytes:
    rec: dict[str, Any] = {
        "type": "trade", "symbol": symbol, "seq": seq, "event_id": event_id, "tid": tid,
        "price": price, "amount": amount, "maker_side": maker_side,
    }
    if block:
        rec["block"] = True
    rec["exchange_ms"] = exchange_ms
    if exchange_ns is not None:
        rec["exchange_ns"] = exchange_ns
    rec["recv_ns"] = recv_ns
    return orjson.dumps(rec, option=_NL)


def auction(symbol: str, seq: int, event_id: int, kind: str, fields: dict[str, Any],
            exchange_ms: int | None, recv_ns: int) -> bytes:
    rec: dict[str, Any] = {"type": "auction", "symbol": symbol, "seq": seq,
                           "event_id": event_id, "event": kind}
    # The event's own fields, never overriding ours.
    rec.update((k, v) for k, v in fields.items() if k not in rec)
    rec["exchange_ms"] = exchange_ms
    rec["recv_ns"] = recv_ns
    return orjson.dumps(rec, option=_NL)


def resync(symbol: str, reason: Reason, recv_ns: int, **detail: Any) -> bytes:
    rec: dict[str, Any] = {"type": "resync", "symbol": symbol, "reason": Reason(reason).value}
    rec.update(detail)
    rec["recv_ns"] = recv_ns
    return orjson.dumps(rec, option=_NL)


def header(symbol: str, stream: str, start_s: int, version: str, config: dict[str, Any]) -> bytes:
    """First line of every segment, so each segment can be read on its own. `stream`:
    "records", or "raw" for a raw-frame file."""
    return orjson.dumps(
        {"type": "header", "schema": SCHEMA, "stream": stream, "symbol": symbol,
         "segment_start": iso_time(start_s), "segment_start_s": start_s,
         "collector_version": version, "config": config},
        option=_NL,
    )


HEADER_LINE_MAX = 1 << 20  # a segment's first line is read this far, at most, for its header


def parse_header(line: bytes) -> dict[str, Any] | None:
    """The header record on `line` (a segment's first line), or None when it is not one."""
    try:
        rec = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return rec if type(rec) is dict and rec.get("type") == "header" else None


def header_start_s(rec: dict[str, Any]) -> int | None:
    """A header's period start in epoch seconds, if it states a possible one."""
    start = rec.get("segment_start_s")
    return start if type(start) is int and start >= 0 else None


# The book line exactly as `book` renders it, every price a decimal string and every
# size a non-zero one (`collector verify` then checks only the order of the levels).
_PRICE = rb'"[0-9]++(?:\.[0-9]++)?+"'
_SIZE = rb'"(?=[0-9.]*[1-9])[0-9]++(?:\.[0-9]++)?+"'
_PAIRS = rb'(?:\[' + _PRICE + rb',' + _SIZE + rb'\](?:,\[' + _PRICE + rb',' + _SIZE + rb'\])*+)?+'
BOOK_LINE = re.compile(
    rb'\{"type":"book","symbol":"[^"\\]*+","seq":[0-9]++,"event_id":-?[0-9]++,'
    rb'"exchange_ms":(?:-?[0-9]++|null),(?:"exchange_ns":[0-9]++,)?+"recv_ns":[0-9]++,'
    rb'"bids":\[' + _PAIRS + rb'\],"asks":\[' + _PAIRS + rb'\]\}\n')


# ---- file names --------------------------------------------------------------------------

CURRENT = "current.jsonl"
RAW_DIR = "raw"  # a symbol's raw frames: <SYMBOL>/raw/
COMPRESSED = {"zstd": ".zst", "gzip": ".gz", "none": ""}  # output.compress -> suffix
RECORD_SUFFIXES = (".jsonl", ".jsonl.zst", ".jsonl.gz")
_STAMP = "%Y%m%dT%H%M%SZ"
_SEGMENT = re.compile(
    r"(?P<symbol>[^/]+?)\.(?P<ts>[0-9]{8}T[0-9]{6}Z)(?:-(?P<n>[0-9]+))?\.jsonl(?P<comp>\.zst|\.gz)?\Z")


def iso_time(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, order=True)
class SegmentName:
    """A closed segment's name: `<symbol>.<start>[-N].jsonl<comp>`; ordered by (start, n)."""

    start_s: int  # the UTC period start in the name, epoch seconds
    n: int  # 1, then 2, 3, ... for segments closed early by size within one period
    symbol: str
    comp: str = ""  # "", ".zst" or ".gz"

    @classmethod
    def parse(cls, name: str) -> SegmentName | None:
        m = _SEGMENT.match(name)
        if m is None:
            return None
        start = datetime.strptime(m["ts"], _STAMP).replace(tzinfo=UTC)
        return cls(int(start.timestamp()), int(m["n"] or 1), m["symbol"], m["comp"] or "")

    @property
    def plain(self) -> str:
        """The uncompressed file's name."""
        n = "" if self.n == 1 else f"-{self.n}"
        return f"{self.symbol}.{datetime.fromtimestamp(self.start_s, UTC).strftime(_STAMP)}{n}.jsonl"

    def __str__(self) -> str:
        return self.plain + self.comp
