"""collector.reading (with listing, decoding): records read back across rotated,
compressed segments, and `collector cat`."""

from __future__ import annotations

import gzip
import random
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard

from collector import cat as cat_mod
from collector import decoding, listing, reading
from collector import format as fmt
from collector.cat import main_cat
from collector.decoding import ReadError
from collector.reading import parse_time, read, read_lines

HOUR_NS = 3600 * 10**9
T0 = datetime(2026, 11, 24, 6, tzinfo=UTC)
T0_NS = parse_time(T0)


# --------------------------------------------------------------------------- fixtures
# The helpers below are shared with tests/test_verify.py.

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
    out = [fmt.resync(symbol, "start", start_ns)]
    seq = 0
    event_id = 7_000_000_000
    t = start_ns + 10**6
    i = 0
    while t < stop_ns:
        if i in breaks:
            out.append(fmt.resync(symbol, "gap", t, expected_seq=seq + 1, got_seq=seq + 3))
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
    return orjson.loads(line)["recv_ns"]


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
    for k, (start, n, comp) in enumerate(cuts):
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


@pytest.fixture
def data(tmp_path: Path) -> Layout:
    return build(tmp_path / "data")


def loads_all(lines: list[bytes]) -> list[dict[str, Any]]:
    return [orjson.loads(ln) for ln in lines]


# --------------------------------------------------------------------------- read

def test_one_symbol_reads_every_record_once_in_order(data: Layout) -> None:
    got = list(read_lines(data.root, "BTCUSD"))
    assert got == data.expected["BTCUSD"]  # carry-overs dropped, 08:00 read once, .tmp ignored
    assert data.carried >= 4
    assert list(read(data.root, "BTCUSD")) == loads_all(data.expected["BTCUSD"])


def test_legacy_segment_without_header_and_carry_over_into_current(data: Layout) -> None:
    assert list(read_lines(data.root, "ETHUSD")) == data.expected["ETHUSD"]


def test_symbols_merged_by_recv_ns_stably(data: Layout) -> None:
    got = list(read(data.root))
    assert len(got) == sum(len(v) for v in data.expected.values())
    assert [r["recv_ns"] for r in got] == sorted(r["recv_ns"] for r in got)
    for sym in ("BTCUSD", "ETHUSD"):
        assert [r for r in got if r["symbol"] == sym] == loads_all(data.expected[sym])
    # the records of one frame share recv_ns and stay together, in file order
    assert list(read(data.root, ["ETHUSD", "BTCUSD"])) == got


def test_time_and_type_filters(data: Layout) -> None:
    lo, hi = ns(1, 30), ns(2, 600)
    want = [r for r in loads_all(data.expected["BTCUSD"])
            if lo <= r["recv_ns"] < hi and r["type"] in ("trade", "resync")]
    assert want and {r["type"] for r in want} == {"trade", "resync"}
    for start, end in [(lo // 10**6, hi // 10**6), ("2026-11-24T07:00:30Z", "2026-11-24T08:10"),
                       (datetime(2026, 11, 24, 7, 0, 30), datetime(2026, 11, 24, 8, 10))]:
        assert list(read(data.root, "BTCUSD", start, end, ["trade", "resync"])) == want


def test_records_just_after_start_in_the_previous_segment_are_found(data: Layout) -> None:
    # rotation lags the boundary: 06:00 holds records received until 07:00:02
    boundary = ns(1)
    got = list(read(data.root, "BTCUSD", start=boundary // 10**6, end=boundary // 10**6 + 3000))
    want = [r for r in loads_all(data.expected["BTCUSD"]) if boundary <= r["recv_ns"] < boundary + 3 * 10**9]
    assert want and got == want


def test_segments_outside_the_window_are_not_opened(data: Layout, monkeypatch) -> None:
    opened: list[str] = []
    real = decoding.open_binary

    def spy(path):
        opened.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(listing, "open_binary", spy)
    got = list(read(data.root, "BTCUSD", start=ns(2, 1200) // 10**6, end=ns(2, 1800) // 10**6))
    assert got == [r for r in loads_all(data.expected["BTCUSD"])
                   if ns(2, 1200) <= r["recv_ns"] < ns(2, 1800)]
    assert opened == ["BTCUSD.20261124T080000Z.jsonl"]


def test_headers_only_when_asked(data: Layout) -> None:
    assert all(r["type"] != "header" for r in read(data.root))
    heads = list(read(data.root, "BTCUSD", types=["header"]))
    assert [h["segment_start"] for h in heads] == [
        "2026-11-24T06:00:00Z", "2026-11-24T07:00:00Z", "2026-11-24T07:00:00Z",
        "2026-11-24T08:00:00Z", "2026-11-24T09:00:00Z"]
    # with a window: the header of each segment it touches, before its records
    got = list(read(data.root, "BTCUSD", start=ns(2, 3590) // 10**6, end=ns(3, 20) // 10**6, types=["header", "book"]))
    kinds = [r["type"] for r in got]
    assert kinds[0] == "header" and got[0]["segment_start"] == "2026-11-24T08:00:00Z"
    assert kinds.count("header") == 2
    second = kinds.index("header", 1)
    assert got[second]["segment_start"] == "2026-11-24T09:00:00Z"


def test_uncompressed_twin_vanishing_falls_back_to_compressed(data: Layout, monkeypatch) -> None:
    real = decoding.open_binary
    plain = f"BTCUSD.{stamp(ns(2))}.jsonl"

    def racing(path):  # the compression finished between listing and opening
        if Path(path).name == plain:
            Path(path).unlink()
        return real(path)

    monkeypatch.setattr(listing, "open_binary", racing)
    assert list(read_lines(data.root, "BTCUSD")) == data.expected["BTCUSD"]


def test_partial_last_line_of_current_is_not_a_record(data: Layout) -> None:
    cur = data.root / "BTCUSD" / "current.jsonl"
    with open(cur, "ab") as f:
        f.write(b'{"type":"trade","symbol":"BTC')
    assert list(read_lines(data.root, "BTCUSD")) == data.expected["BTCUSD"]


def test_bad_line_raises_with_path_and_line(data: Layout) -> None:
    cur = data.root / "ETHUSD" / "current.jsonl"
    lines = cur.read_bytes().splitlines(keepends=True)
    lines[3] = b'{"type":"book",\n'
    cur.write_bytes(b"".join(lines))
    with pytest.raises(ReadError) as err:
        list(read(data.root, "ETHUSD"))
    assert (err.value.path, err.value.line) == (str(cur), 4)


def test_truncated_zstd_raises(data: Layout) -> None:
    seg = data.files["BTCUSD"][0]
    assert seg.name.endswith(".zst")
    blob = zstandard.ZstdCompressor().compress(decoding.open_binary(seg).read())
    seg.write_bytes(blob[: len(blob) - 20])
    with pytest.raises(ReadError, match="zstd"):
        list(read(data.root, "BTCUSD"))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="nanoseconds"):
        parse_time(T0_NS)
    with pytest.raises(ValueError):
        parse_time("yesterday")
    with pytest.raises(ValueError, match="unknown record type"):
        read(".", types=["books"])
    with pytest.raises(FileNotFoundError):
        read("/nonexistent/dir")
    assert parse_time("2026-11-24T06:00:00Z") == parse_time("2026-11-24T06:00") == T0_NS
    assert parse_time("2026-11-24T07:00:00+01:00") == T0_NS
    assert parse_time(datetime(2026, 11, 24, 6)) == T0_NS
    assert parse_time(T0_NS // 10**6) == parse_time(str(T0_NS // 10**6)) == T0_NS


def test_to_dataframe_says_how_to_get_pandas(data: Layout, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        reading.to_dataframe(data.root)


# --------------------------------------------------------------------------- cat

CAT = "import sys; from collector.cat import main_cat; sys.exit(main_cat(sys.argv[1:]))"


def cat(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-c", CAT, *args], capture_output=True, timeout=30, check=False)


def test_cat_streams_exact_lines(data: Layout, capsysbinary) -> None:
    assert main_cat([str(data.root), "--symbol", "btcusd"]) == 0
    assert capsysbinary.readouterr().out == b"".join(data.expected["BTCUSD"])
    assert main_cat([str(data.root), "-s", "ETHUSD,BTCUSD", "--type", "resync", "--from",
                     "2026-11-24T06:00:00Z", "--to", str(ns(3.5) // 10**6)]) == 0
    out = loads_all(capsysbinary.readouterr().out.splitlines())
    assert [(r["symbol"], r["reason"]) for r in out] == [
        ("BTCUSD", "start"), ("ETHUSD", "start"), ("BTCUSD", "gap")]


def test_cat_usage_errors(tmp_path: Path, data: Layout, capsys) -> None:
    assert main_cat([str(tmp_path / "missing")]) == 2
    assert main_cat([str(data.root), "--from", "soon"]) == 2
    assert main_cat([str(data.root), "--type", "bok"]) == 2
    assert main_cat([str(data.root), "--symbol", "XRPUSD"]) == 2
    assert main_cat([]) == 2
    assert "collector cat DIR" in capsys.readouterr().err


def test_cat_into_a_closed_pipe_is_quiet(data: Layout) -> None:
    proc = subprocess.run(f"{sys.executable} -c '{CAT}' {data.root} -s BTCUSD | head -n 2",
                          shell=True, capture_output=True, timeout=30, check=False)
    assert proc.returncode == 0
    assert proc.stdout.splitlines(keepends=True) == data.expected["BTCUSD"][:2]
    assert proc.stderr == b""


def test_cat_subprocess_exit_codes(data: Layout, tmp_path: Path) -> None:
    assert cat(str(data.root), "--type", "resync").returncode == 0
    assert cat(str(tmp_path / "nope")).returncode == 2
    (data.root / "ETHUSD" / "current.jsonl").write_bytes(b"garbage\n")
    bad = cat(str(data.root), "-s", "ETHUSD")
    assert bad.returncode == 1 and b"current.jsonl:1" in bad.stderr


def test_zstd_segment_of_several_frames(data: Layout) -> None:
    seg = data.files["BTCUSD"][0]
    with decoding.open_binary(seg) as f:
        plain = f.read()
    cut = plain.index(b"\n", len(plain) // 2) + 1
    c = zstandard.ZstdCompressor()
    seg.write_bytes(c.compress(plain[:cut]) + c.compress(plain[cut:]))
    assert list(read_lines(data.root, "BTCUSD")) == data.expected["BTCUSD"]


def test_cat_help(capsys) -> None:
    assert main_cat(["--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: " + cat_mod.CAT_USAGE)
