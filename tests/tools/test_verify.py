"""collector.tools.verify: clean data passes; each kind of damage is reported at its file:line."""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
from pathlib import Path

import orjson
import zstandard

from collector.core import format as fmt
from collector.tools.decoding import open_binary
from collector.tools.verify import MAX_SHOWN, main_verify, verify
from tests.helpers.layout import Layout, header, ns, stamp

VERIFY = "import sys; from collector.tools.verify import main_verify; sys.exit(main_verify(sys.argv[1:]))"


def run_verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", VERIFY, *args], capture_output=True, text=True,
                          timeout=30, check=False)


def problems(root: Path) -> list[str]:
    out = io.StringIO()
    verify([root], out)
    return out.getvalue().splitlines()


def lines_of(path: Path) -> list[bytes]:
    with open_binary(path) as f:
        return f.read().splitlines(keepends=True)


def rewrite(path: Path, lines: list[bytes]) -> None:
    data = b"".join(lines)
    if path.name.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    elif path.name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)


def edit(path: Path, lineno: int, change) -> None:
    """Replace line `lineno` (1-based) with change(record dict) rendered, or bytes."""
    lines = lines_of(path)
    old = lines[lineno - 1]
    new = change(orjson.loads(old)) if callable(change) else change
    lines[lineno - 1] = new if isinstance(new, bytes) else orjson.dumps(new) + b"\n"
    rewrite(path, lines)


def find_line(path: Path, pred, nth: int = 1) -> int:
    """Line number of the nth record matching `pred`."""
    for i, line in enumerate(lines_of(path), 1):
        if pred(orjson.loads(line)):
            nth -= 1
            if not nth:
                return i
    raise AssertionError("no such line")


def test_clean_data_passes(data: Layout) -> None:
    proc = run_verify(str(data.root))
    assert proc.returncode == 0, proc.stdout
    (summary,) = proc.stdout.splitlines()
    assert summary.startswith("verify: 11 files, ") and summary.endswith(
        "1 .tmp skipped: no problems")
    # one symbol's directory works too
    assert run_verify(str(data.root / "ETHUSD")).returncode == 0


def test_usage_errors(tmp_path: Path) -> None:
    proc = run_verify(str(tmp_path / "missing"))
    assert proc.returncode == 2 and "no such directory" in proc.stderr
    assert run_verify(str(tmp_path)).returncode == 2  # no record file at all
    assert run_verify().returncode == 2
    assert main_verify(["--help"]) == 0


def test_each_problem_at_its_file_and_line(data: Layout) -> None:
    btc, eth = data.files["BTCUSD"], data.files["ETHUSD"]
    zst06, gz07, plain07_2, plain08, current = btc
    expect = []

    # torn last line (current.jsonl, being cut by a crash)
    n = len(lines_of(current))
    with open(current, "ab") as f:
        f.write(b'{"type":"trade","sym')
    expect.append(f"{current}:{n + 1}: torn last line (no newline at the end of the file)")

    # invalid JSON inside a zstd segment
    edit(zst06, 10, b'{"type":"book","symbol":\n')
    expect.append(f"{zst06}:10: invalid JSON (")

    # missing header (gz segment starting with a book)
    lines = lines_of(gz07)
    assert orjson.loads(lines[0])["type"] == "header"
    rewrite(gz07, lines[1:])
    expect.append(f"{gz07}:1: missing header: the segment starts with a 'book' record")

    # seq going backwards inside a span
    k = find_line(plain07_2, lambda r: r["type"] == "book" and r["seq"] > 50) + 2
    edit(plain07_2, k, lambda r: {**r, "seq": r["seq"] - 10})
    expect.append(f"{plain07_2}:{k}: seq went backwards inside a span")

    # crossed book
    k = find_line(plain08, lambda r: r["type"] == "book", nth=5)
    best_ask = orjson.loads(lines_of(plain08)[k - 1])["asks"][0][0]
    edit(plain08, k, lambda r: {**r, "bids": [[best_ask, "1"]] + r["bids"]})
    expect.append(f"{plain08}:{k}: crossed book: best bid {best_ask} >= best ask {best_ask}")

    # unsorted bids (ETHUSD's legacy gz segment: legacy header rule, line numbers there)
    legacy = eth[0]
    k = find_line(legacy, lambda r: r["type"] == "book" and r["seq"] == 7)
    edit(legacy, k, lambda r: {**r, "bids": [r["bids"][1], r["bids"][0]] + r["bids"][2:]})
    expect.append(f"{legacy}:{k}: book bids not strictly descending: ")

    # wrong symbol
    eth_cur = eth[-1]
    edit(eth_cur, 5, lambda r: {**r, "symbol": "BTCUSD"})
    expect.append(f"{eth_cur}:5: symbol 'BTCUSD' in a file of ETHUSD")

    proc = run_verify(str(data.root))
    assert proc.returncode == 1
    out = proc.stdout.splitlines()
    assert len(out) == len(expect) + 1, proc.stdout
    for want in expect:
        assert sum(1 for line in out if line.startswith(want)) == 1, (want, proc.stdout)
    assert out[-1].endswith(f": {len(expect)} problems in {len(expect)} files")


def test_span_rules(data: Layout) -> None:
    cur = data.files["BTCUSD"][-1]
    lines = lines_of(cur)
    heads = [orjson.loads(ln) for ln in lines[:2]]
    assert heads[0]["type"] == "header" and heads[1]["type"] == "book"  # carry-over
    last = orjson.loads(lines[-1])
    assert last["type"] == "book"
    t = last["recv_ns"]
    book0 = fmt.book("BTCUSD", 0, 1, None, t + 1, [("1.5", "1")], [("1.6", "2")])
    extra = [
        fmt.trade("BTCUSD", last["seq"], 5, 4, "1.5", "1", "bid", False, 1, t + 2),  # after its book
        book0,                                                  # new connection, no resync
        fmt.resync("BTCUSD", fmt.Reason.CLOSED, t + 3, detail="eof"),
        book0,                                                  # fine after a resync
        fmt.resync("BTCUSD", fmt.Reason.DROPPED, t + 4, dropped=3),
        fmt.book("BTCUSD", 4, 2, 1, t + 5, [("1.5", "1")], [("1.6", "2")]),  # fine: new span
        fmt.book("BTCUSD", 5, 2, 1, t + 6, [("1.5", "0")], [("1.6", "2")]),
        b'{"type":"resync","symbol":"BTCUSD","reason":"nonsense","recv_ns":%d}\n' % (t + 7),
        b'{"type":"quote","symbol":"BTCUSD","recv_ns":1}\n',
        b"\n",
        b"[1,2]\n",
        header("BTCUSD", ns(3)),
    ]
    n = len(lines)
    rewrite(cur, lines + extra)
    edit(data.files["BTCUSD"][3], 1, lambda r: {**r, "segment_start": "2026-11-24T08:00:01Z"})
    out = problems(data.root)
    assert out == [
        (f"{data.files['BTCUSD'][3]}:1: header segment_start 2026-11-24T08:00:01Z differs from "
         "the start time in the file name"),
        f"{cur}:{n + 1}: seq {last['seq']} again after the book record of that frame",
        (f"{cur}:{n + 2}: seq 0 book (a new connection) without a resync before it "
         f"(previous seq {last['seq']})"),
        f"{cur}:{n + 7}: book bids level 1.5 has size zero (0)",
        f"{cur}:{n + 8}: unknown resync reason 'nonsense'",
        f"{cur}:{n + 9}: unknown record type 'quote'",
        f"{cur}:{n + 10}: empty line",
        f"{cur}:{n + 11}: not a JSON object: [1,2]",
        f"{cur}:{n + 12}: header record not at the start of the segment",
    ]


def test_raw_files_get_line_and_json_checks_only(data: Layout) -> None:
    raw = data.root / "BTCUSD" / "raw" / f"BTCUSD.{stamp(ns(2))}.jsonl.gz"
    lines = lines_of(raw)  # no header, not a record: fine for raw
    rewrite(raw, lines + [b"{oops\n", b'{"recv_ns":1}'])
    out = problems(data.root)
    assert [line.split(": ")[0] for line in out] == [f"{raw}:2", f"{raw}:3"]
    assert "torn last line" in out[1]


def test_truncated_compressed_files(data: Layout) -> None:
    zst06, gz07 = data.files["BTCUSD"][:2]
    for path in (zst06, gz07):
        blob = path.read_bytes()
        path.write_bytes(blob[: len(blob) - 30])
    out = problems(data.root)
    assert len(out) == 2, out
    assert out[0].startswith(f"{zst06}:") and "cannot decompress" in out[0]
    assert out[1].startswith(f"{gz07}:") and "cannot decompress" in out[1]


def test_problems_per_file_are_capped(data: Layout) -> None:
    cur = data.files["ETHUSD"][-1]
    rewrite(cur, lines_of(cur) + [b"x\n"] * (MAX_SHOWN + 50))
    out = problems(data.root)
    assert len(out) == MAX_SHOWN + 1
    assert out[-1] == f"{cur}: 50 more problems not shown ({MAX_SHOWN + 50} in all)"


def test_misnamed_file_is_reported(data: Layout) -> None:
    odd = data.root / "BTCUSD" / "backup.jsonl"
    odd.write_bytes(header("BTCUSD", ns(0)))
    out = problems(data.root)
    assert len(out) == 1 and out[0].startswith(f"{odd}:0: file name is neither current.jsonl")


def test_parallel_output_equals_serial(data: Layout) -> None:
    for path in data.files["BTCUSD"][:3]:
        edit(path, 3, b"{bad\n")
    serial, parallel = io.StringIO(), io.StringIO()
    a, b = verify([data.root], serial, jobs=1), verify([data.root], parallel, jobs=3)
    assert serial.getvalue() == parallel.getvalue() and serial.getvalue().count("\n") == 3
    assert (a.files, a.lines, a.problems) == (b.files, b.lines, b.problems)


def test_a_snapshot_frame_with_trades_is_not_a_new_connection() -> None:
    """A v1 snapshot frame that carries a trade writes the trade at seq 0, then the book at
    seq 0; that book is the same frame's, not an unmarked new connection."""
    from collector.tools.checks import check_records

    sym, levels = "BTCUSD", [("1", "1")]
    lines = [fmt.header(sym, "records", 0, "v", {}),
             fmt.resync(sym, fmt.Reason.START, 1),
             fmt.trade(sym, 0, 5, 1, "1", "1", "bid", False, None, 2),
             fmt.book(sym, 0, 5, None, 2, levels, [("2", "1")]),
             fmt.book(sym, 1, 6, 3, 3, levels, [("2", "2")]),
             fmt.trade(sym, 0, 7, 2, "1", "1", "bid", False, None, 4),  # an unmarked reconnect
             fmt.book(sym, 0, 7, None, 4, levels, [("2", "1")])]
    problems: list[tuple[int, str]] = []
    check_records(lines, sym, lambda n, p: problems.append((n, p)))
    assert [n for n, _ in problems] == [6], problems  # the reconnect's trade went backwards
