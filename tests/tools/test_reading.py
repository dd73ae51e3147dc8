"""collector.tools.reading (with listing, decoding): records read back across rotated,
compressed segments, and `collector cat`."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard

from collector.tools import cat as cat_mod
from collector.tools import decoding, listing, reading
from collector.tools.cat import main_cat
from collector.tools.decoding import ReadError
from collector.tools.reading import Time, parse_time, read, read_lines
from tests.helpers.layout import T0_NS, Layout, ns, stamp

# `data`, the Layout built in tmp_path: tests/tools/conftest.py


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
    windows: list[tuple[Time, Time]] = [
        (lo // 10**6, hi // 10**6), ("2026-11-24T07:00:30Z", "2026-11-24T08:10"),
        (datetime(2026, 11, 24, 7, 0, 30), datetime(2026, 11, 24, 8, 10))]
    for start, end in windows:
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
    got = list(read(data.root, "BTCUSD", start=ns(2, 3590) // 10**6, end=ns(3, 20) // 10**6,
                    types=["header", "book"]))
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

CAT = "import sys; from collector.tools.cat import main_cat; sys.exit(main_cat(sys.argv[1:]))"


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
