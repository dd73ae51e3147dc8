"""A data directory as the collector leaves it, built by hand: two symbols over 06:00-09:30
in hourly segments (rotated, compressed, legacy, half-compressed, .tmp, raw/), and the
records a reader must get back. For the tests of the readers and of `collector verify`."""

from __future__ import annotations

import gzip
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import zstandard

from collector.core import format as fmt
from collector.tools.reading import parse_time

HOUR_NS = 3600 * 10**9
T0 = datetime(2026, 11, 24, 6, tzinfo=UTC)
T0_NS = parse_time(T0)


def ns(hours: float = 0, seconds: float = 0) -> int:
    return T0_NS + int(hours * HOUR_NS) + int(seconds * 10**9)


def iso(t_ns: int) -> str:
    return datetime.fromtimestamp(t_ns // 10**9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stamp(t_ns: int) -> str:
    return datetime.fromtimestamp(t_ns // 10**9, UTC).strftime("%Y%m%dT%H%M%SZ")


def header(symbol: str, start_ns: int, stream: str = "records") -> bytes:
    return fmt.header(symbol, stream, start_ns // 10**9, "0.1.0", {"book": {"depth": 3}})


def stream_lines(symbol: str, start_ns: int, stop_ns: int, step_s: float, seed: int = 1,
                 breaks: tuple[int, ...] = ()) -> list[bytes]:
    """A realistic record stream: resync start, snapshot, frames of trades + a book,
    and a gap resync + new connection at each frame index in `breaks`."""
    rnd = random.Random(seed)
    mid = Decimal("11400.00")
    out = [fmt.resync(symbol, fmt.Reason.START, start_ns)]
    seq = 0
    event_id = 7_000_000_000
    t = start_ns + 10**6
    i = 0
    while t < stop_ns:
        if i in breaks:
            out.append(fmt.resync(symbol, fmt.Reason.GAP, t, expected_seq=seq + 1, got_seq=seq + 3))
            seq = -1
            t += 10**7
        seq += 1
        event_id += rnd.randint(1, 50)
        mid += Decimal(rnd.randint(-5, 5)) / 100
        if seq and rnd.random() < 0.5:
            out.append(fmt.trade(symbol, seq, event_id, event_id - 1, str(mid), "0.01",
                                     rnd.choice(["bid", "ask"]), False, t // 10**6, t))
        bids = [(str(mid - Decimal(k + 1) / 100), f"0.{k + 1}") for k in range(3)]
        asks = [(str(mid + Decimal(k + 1) / 100), f"1.{k}") for k in range(3)]
        out.append(fmt.book(symbol, seq, event_id, None if seq == 0 else t // 10**6, t,
                                bids, asks))
        t += int(step_s * 10**9)
        i += 1
    return out


def recv_ns(line: bytes) -> int:
    value = orjson.loads(line)["recv_ns"]
    assert isinstance(value, int), line
    return value


def write_file(path: Path, data: bytes, comp: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if comp == ".zst":
        path = path.with_name(path.name + ".zst")
        path.write_bytes(zstandard.ZstdCompressor().compress(data))
    elif comp == ".gz":
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


@dataclass
class Layout:
    """What the fixture wrote: files per symbol, and the records a reader must get."""

    root: Path
    files: dict[str, list[Path]] = field(default_factory=dict)
    expected: dict[str, list[bytes]] = field(default_factory=dict)
    carried: int = 0


def write_symbol(layout: Layout, symbol: str, lines: list[bytes], cuts: list[tuple[int, int, str]],
                 legacy_first: bool = False, lag_s: float = 2.0) -> None:
    """Split `lines` into segments as the collector rotates: `cuts` = (period start ns,
    N, compression) per closed segment, then current.jsonl. A segment takes the
    records received before the next cut + `lag_s` (rotation lags the boundary);
    each starts with a header (the first one not if `legacy_first`) and a copy of
    the last book line before it when the book is live."""
    folder = layout.root / symbol
    segs: list[list[bytes]] = []
    rest = list(lines)
    for k, (start, _n, _comp) in enumerate(cuts):
        period_end = min([c[0] for c in cuts if c[0] > start] + [start + HOUR_NS])
        take = sum(1 for ln in rest if recv_ns(ln) < period_end + int(lag_s * 10**9))
        if k + 1 < len(cuts) and cuts[k + 1][0] == start:
            take //= 2  # closed early by size
        segs.append(rest[:take])
        rest = rest[take:]
    segs.append(rest)
    layout.expected[symbol] = list(lines)
    files = []
    last_book: bytes | None = None
    for k, seg in enumerate(segs):
        closed = k < len(cuts)
        start = cuts[k][0] if closed else (cuts[-1][0] + HOUR_NS if cuts else T0_NS)
        data = b""
        if not (legacy_first and k == 0):
            data += header(symbol, start)
            if last_book is not None:
                data += last_book
                layout.carried += 1
        data += b"".join(seg)
        for ln in seg:
            if b'"type":"book"' in ln:
                last_book = ln
            elif b'"type":"resync"' in ln:
                last_book = None
        if closed:
            _, n, comp = cuts[k]
            name = f"{symbol}.{stamp(start)}{'' if n == 1 else f'-{n}'}.jsonl"
            files.append(write_file(folder / name, data, comp))
        else:
            files.append(write_file(folder / "current.jsonl", data))
    layout.files[symbol] = files


def build(root: Path) -> Layout:
    """Two symbols over 06:00-09:30, hourly periods:

    BTCUSD: 06:00 .zst, 07:00 .gz, 07:00-2 plain (split by size), 08:00 present
            plain and .zst (compression in progress), a 09:00 .zst.tmp (ignored),
            current.jsonl, and a raw/ directory (ignored).
    ETHUSD: a legacy 06:00 segment without a header (.gz), 07:00 .zst, current.jsonl."""
    layout = Layout(root)
    btc = stream_lines("BTCUSD", ns(0), ns(3.5), 10, seed=1, breaks=(500,))
    write_symbol(layout, "BTCUSD", btc, [(ns(0), 1, ".zst"), (ns(1), 1, ".gz"), (ns(1), 2, ""),
                                         (ns(2), 1, "")])
    eighth = root / "BTCUSD" / f"BTCUSD.{stamp(ns(2))}.jsonl"
    write_file(eighth, eighth.read_bytes(), ".zst")
    (root / "BTCUSD" / f"BTCUSD.{stamp(ns(3))}.jsonl.zst.tmp").write_bytes(b"\x28\xb5garbage")
    raw = root / "BTCUSD" / "raw"
    raw.mkdir()
    (raw / "current.jsonl").write_bytes(
        header("BTCUSD", ns(3), "raw")
        + b'{"recv_ns":%d,"frame":{"type":"heartbeat","socket_sequence":1}}\n' % ns(3, 1))
    (raw / f"BTCUSD.{stamp(ns(2))}.jsonl.gz").write_bytes(gzip.compress(
        b'{"recv_ns":%d,"frame":{"type":"heartbeat","socket_sequence":2}}\n' % ns(2, 1)))
    eth = stream_lines("ETHUSD", ns(0, 5), ns(3.5), 10, seed=2)
    write_symbol(layout, "ETHUSD", eth, [(ns(0), 1, ".gz"), (ns(1), 1, ".zst")], legacy_first=True)
    return layout

