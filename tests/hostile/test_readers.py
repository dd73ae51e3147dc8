"""Hostile files against the readers: `collector cat`, `collector verify`, `collector replay`
and `collector.read`, each run as a real subprocess.

Memory stays bounded on any input (compression bombs, a multi-GB line, a line over
`MAX_LINE`): the peak RSS of the reader process (VmHWM, which the process reports as it
exits: wait4's ru_maxrss would also count the test process's own RSS at the fork, which
grows with the suite) stays under `MAX_RSS_MB`. The reader also runs under an address-space limit,
only so that a reader that does read everything fails fast with MemoryError instead
of taking the machine's memory. Files that are not what they should be (a symlink loop,
a directory, a FIFO, a device, an unreadable file, an empty compressed segment, garbage
raw lines, wrong field types) each give one line on stderr, the right exit status and no
traceback.
"""

from __future__ import annotations

import gzip
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import zstandard

from collector.core import format as fmt
from collector.core import rawlog
from collector.tools.decoding import MAX_LINE, MAX_RAW_LINE
from tests.helpers.layout import header, ns, stamp, stream_lines

ROOT = Path(__file__).resolve().parents[2]
MAX_RSS_MB = 200
AS_LIMIT = 2 * 2**30  # bytes of address space for the reader: a safety net, see above
GIB = 2**30


@dataclass
class Run:
    status: int
    out: bytes
    err: str
    rss_mb: float  # peak resident set of the process after its exec (VmHWM)


# Runs `python ARGV...` as python would (-m MODULE or -c CODE), and as the process exits
# writes its VmHWM (kB) to the file named first.
_HWM = """\
import atexit, runpy, sys
out = sys.argv.pop(1)
def hwm():
    with open("/proc/self/status") as f:
        kb = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
    with open(out, "w") as f:
        f.write(kb)
atexit.register(hwm)
flag, what = sys.argv.pop(1), sys.argv.pop(1)
if flag == "-m":
    sys.argv[0] = what
    runpy.run_module(what, run_name="__main__", alter_sys=True)
else:
    sys.argv[0] = "-c"
    exec(compile(what, "<string>", "exec"), {"__name__": "__main__"})
"""


def _limits(drop_dac: bool) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))
        if drop_dac:
            _without_dac_override()
    return apply


def run(*argv: str, timeout: float = 40.0, drop_dac: bool = False) -> Run:
    """`python argv...` to completion (killed after `timeout` s: a hang is a failure)."""
    with (tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err,
          tempfile.NamedTemporaryFile() as hwm):
        proc = subprocess.Popen([sys.executable, "-c", _HWM, hwm.name, *argv], cwd=ROOT,
                                stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err, preexec_fn=_limits(drop_dac))
        deadline = time.monotonic() + timeout
        hung = False
        while True:
            pid, wstatus, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                hung = True
                proc.kill()
                pid, wstatus, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(wstatus)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        reported = Path(hwm.name).read_text()
        result = Run(proc.returncode, out.read(), err.read().decode("utf-8", "replace"),
                     int(reported) / 1024 if reported else usage.ru_maxrss / 1024)
    assert not hung, f"{argv[:3]} still running after {timeout} s: {result.err[-2000:]}"
    return result


def collector(*argv: str, timeout: float = 40.0) -> Run:
    return run("-m", "collector", *argv, timeout=timeout)


READ = """\
import sys
import collector
try:
    n = sum(1 for _ in collector.read(sys.argv[1]))
except ValueError as exc:  # ReadError
    print(exc, file=sys.stderr)
    raise SystemExit(1)
print(n)
"""
READERS = ("cat", "read", "verify")  # read: collector.read, in a script


def reader(name: str, data: Path, timeout: float = 40.0, drop_dac: bool = False) -> Run:
    if name == "read":
        return run("-c", READ, str(data), timeout=timeout, drop_dac=drop_dac)
    jobs = ("--jobs", "2") if name == "verify" else ()
    return run("-m", "collector", name, *jobs, str(data), timeout=timeout, drop_dac=drop_dac)


def one_line(r: Run, *needles: str) -> str:
    """The one stderr line, holding each of `needles`; no traceback, no MemoryError."""
    assert "Traceback" not in r.err and "MemoryError" not in r.err, r.err[-3000:]
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def refused(name: str, r: Run, where: str, why: str) -> None:
    """cat, read: exit 1 and one stderr line naming `where` (path or path:line) and `why`;
    verify: exit 1, that one problem at `where`, then the summary."""
    if name != "verify":
        assert r.status == 1, r
        one_line(r, where, why)
        return
    assert "Traceback" not in r.err and r.err == "", r.err[-3000:]
    out = r.out.decode().splitlines()
    assert r.status == 1 and len(out) == 2, out
    assert out[0].startswith(f"{where}:") and why in out[0], out
    assert out[1].endswith("1 problems in 1 files"), out


def bounded(r: Run) -> None:
    assert r.rss_mb < MAX_RSS_MB, f"peak RSS {r.rss_mb:.0f} MB"


# ---- data ------------------------------------------------------------------------------------

SYMBOL = "BTCUSD"
CLOSED = f"{SYMBOL}.{stamp(ns(0))}.jsonl"  # the closed segment of 06:00


def good_dir(root: Path) -> Path:
    """A small valid output directory: BTCUSD with one closed segment (06:00, plain)
    and current.jsonl (07:00). Returns the symbol's folder."""
    folder = root / SYMBOL
    folder.mkdir(parents=True)
    lines = stream_lines(SYMBOL, ns(0), ns(0, 60), 10)
    (folder / CLOSED).write_bytes(header(SYMBOL, ns(0)) + b"".join(lines[:4]))
    (folder / fmt.CURRENT).write_bytes(header(SYMBOL, ns(1)) + b"".join(lines[4:]))
    return folder


def zstd_bomb(size: int = GIB, window_log: int | None = None) -> bytes:
    """`size` bytes of b"a" (no newline), zstd-compressed: about 32 kB per GiB."""
    params = (zstandard.ZstdCompressionParameters.from_level(3, window_log=window_log)
              if window_log else None)
    comp = (zstandard.ZstdCompressor(compression_params=params) if params
            else zstandard.ZstdCompressor(level=3)).compressobj()
    chunk = b"a" * 2**20
    return b"".join([*(comp.compress(chunk) for _ in range(size // len(chunk))), comp.flush()])


def gzip_bomb(size: int = GIB) -> bytes:
    """`size` bytes of b"a" as a multi-member gzip file (one member per MiB): about 1 MB."""
    member = gzip.compress(b"a" * 2**20, mtime=0)
    return member * (size // 2**20)


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    return {".zst": zstd_bomb(), ".gz": gzip_bomb()}


# ---- memory: bombs, a multi-GB line, a line over MAX_LINE -----------------------------------

def _bomb_segment(tmp_path: Path, kind: str, bombs: dict[str, bytes]) -> tuple[Path, Path]:
    """(data dir, the hostile file) with the closed segment replaced by `kind`."""
    folder = good_dir(tmp_path / "data")
    (folder / CLOSED).unlink()
    if kind == "sparse":  # 4 GiB of zeros without a newline, taking no disk space
        path = folder / CLOSED
        with open(path, "wb") as f:
            f.truncate(4 * GIB)
    elif kind == "zst-window":  # a bomb that also asks for a 128 MiB window
        path = folder / (CLOSED + ".zst")
        path.write_bytes(zstd_bomb(GIB // 4, window_log=27))
    else:
        path = folder / (CLOSED + kind)
        path.write_bytes(bombs[kind])
    return tmp_path / "data", path


HOSTILE_BIG = [".zst", ".gz", "sparse", "zst-window"]


@pytest.mark.parametrize("kind", HOSTILE_BIG)
@pytest.mark.parametrize("name", READERS)
def test_memory_stays_bounded(tmp_path: Path, name: str, kind: str, bombs: dict[str, bytes]) -> None:
    data, path = _bomb_segment(tmp_path, kind, bombs)
    r = reader(name, data)
    bounded(r)
    why = ("Frame requires too much memory" if kind == "zst-window"
           else f"line longer than {MAX_LINE >> 20} MiB")
    refused(name, r, str(path), why)
    assert name != "cat" or r.out == b""


@pytest.mark.parametrize("name", READERS)
def test_a_line_over_max_line_is_refused(tmp_path: Path, name: str) -> None:
    """A valid record padded to 1 byte over MAX_LINE: refused, at its file and line."""
    folder = good_dir(tmp_path / "data")
    path = folder / CLOSED
    rec = orjson.loads(stream_lines(SYMBOL, ns(0), ns(0, 60), 10)[0])
    line = orjson.dumps({**rec, "pad": ""})
    line = line[:-2] + b"x" * (MAX_LINE - len(line)) + b'"}\n'
    assert len(line) == MAX_LINE + 1
    path.write_bytes(header(SYMBOL, ns(0)) + line)
    refused(name, reader(name, tmp_path / "data"), f"{path}:2", f"line longer than {MAX_LINE >> 20} MiB")


@pytest.mark.parametrize("kind", [".zst", ".gz", "sparse"])
def test_replay_memory_stays_bounded(tmp_path: Path, kind: str, bombs: dict[str, bytes]) -> None:
    raw = tmp_path / "data" / SYMBOL / "raw"
    raw.mkdir(parents=True)
    path = raw / (CLOSED + ("" if kind == "sparse" else kind))
    if kind == "sparse":
        with open(path, "wb") as f:
            f.truncate(4 * GIB)
    else:
        path.write_bytes(bombs[kind])
    r = collector("replay", str(tmp_path / "data"))
    bounded(r)
    assert r.status == 1 and r.out == b""
    one_line(r, "collector replay: ", str(path), f"longer than {MAX_RAW_LINE >> 20} MiB")


# ---- files that are not what they should be --------------------------------------------------

ODD: dict[str, tuple[Callable[[Path], object], str]] = {  # how to make it, what is said
    "fifo": (os.mkfifo, "not a regular file"),
    "directory": (Path.mkdir, "directory"),
    "symlink-loop": (lambda p: p.symlink_to(p.name), "symbolic links"),
    "device": (lambda p: p.symlink_to("/dev/zero"), "not a regular file"),  # endless, no newline
    "empty-zst": (lambda p: p.with_name(p.name + ".zst").write_bytes(b""), "empty compressed file"),
    "empty-gz": (lambda p: p.with_name(p.name + ".gz").write_bytes(b""), "empty compressed file"),
}


def _odd_dir(tmp_path: Path, kind: str, name: str = CLOSED) -> tuple[Path, Path]:
    folder = good_dir(tmp_path / "data")
    target = folder / name
    target.unlink()
    make, _ = ODD[kind]
    make(target)
    shown = target if kind not in ("empty-zst", "empty-gz") else next(folder.glob(name + ".*"))
    return tmp_path / "data", shown


@pytest.mark.parametrize(("kind", "name"), [  # current.jsonl is never compressed
    (kind, name) for kind in ODD for name in (CLOSED, fmt.CURRENT)
    if not (name == fmt.CURRENT and kind.startswith("empty"))])
def test_odd_file_where_a_segment_should_be(tmp_path: Path, kind: str, name: str) -> None:
    """Every reader refuses it at once (no hang on a FIFO or a device); cat prints the
    records before it, as they are."""
    data, path = _odd_dir(tmp_path, kind, name)
    for reader_name in READERS:
        r = reader(reader_name, data, timeout=20)
        refused(reader_name, r, str(path), ODD[kind][1])
        if reader_name == "cat":
            assert len(r.out.splitlines()) == (0 if name == CLOSED else 4)


def test_symlink_loop_where_a_symbol_directory_should_be(tmp_path: Path) -> None:
    good_dir(tmp_path / "data")
    loop = tmp_path / "data" / "LOOP"
    loop.symlink_to("LOOP")
    for name in READERS:
        refused(name, reader(name, tmp_path / "data"), str(loop), "symbolic links")


def _without_dac_override() -> None:
    """Drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set (prctl
    PR_CAPBSET_DROP) before exec: a root process then obeys file permissions."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_unreadable_file(tmp_path: Path) -> None:
    """chmod 000 on a segment: cat, collector.read and verify each say so. Root reads
    it anyway; when the tests run as root the readers run without the capabilities that
    let root ignore permissions (skipped if even that is not allowed here)."""
    folder = good_dir(tmp_path / "data")
    path = folder / CLOSED
    path.chmod(0)
    drop = os.geteuid() == 0
    if drop:
        try:
            subprocess.run([sys.executable, "-c", ""], preexec_fn=_without_dac_override, check=True)
        except (subprocess.SubprocessError, OSError) as exc:
            pytest.skip(f"running as root and cannot drop CAP_DAC_OVERRIDE: {exc}")
    for name in READERS:
        refused(name, reader(name, tmp_path / "data", drop_dac=drop), str(path), "Permission denied")


# ---- replay: garbage, truncation, wrong types, bad depth -------------------------------------

def _raw_dir(tmp_path: Path, lines: list[bytes], name: str = fmt.CURRENT,
             config: dict[str, object] | None = None) -> Path:
    raw = tmp_path / "data" / SYMBOL / "raw"
    raw.mkdir(parents=True)
    cfg = config if config is not None else {"feed": {"api": "v1"}, "book": {"depth": 3}}
    (raw / name).write_bytes(fmt.header(SYMBOL, "raw", ns(0) // 10**9, "0.1.0", cfg)
                             + b"".join(lines))
    return raw / name


def _v1_frames() -> list[bytes]:
    snap = {"type": "update", "eventId": 1, "socket_sequence": 0, "events": [
        {"type": "change", "reason": "initial", "side": "bid", "price": "100", "remaining": "1",
         "delta": "1"},
        {"type": "change", "reason": "initial", "side": "ask", "price": "101", "remaining": "2",
         "delta": "2"}]}
    hb = {"type": "heartbeat", "socket_sequence": 1}
    return [rawlog.connect("ws://x/BTCUSD", ns(0, 1)),
            rawlog.frame(orjson.dumps(snap), ns(0, 2), parsed=True),
            rawlog.frame(orjson.dumps(hb), ns(0, 3), parsed=True)]


BAD_RAW = {
    "garbage": b"\x00\x01garbage\n",
    "not-an-object": b"[1,2,3]\n",
    "recv_ns-string": b'{"recv_ns":"soon","frame":{"type":"heartbeat","socket_sequence":2}}\n',
    "no-recv_ns": b'{"frame":{"type":"heartbeat","socket_sequence":2}}\n',
    "text-number": b'{"recv_ns":5,"text":5}\n',
    "frame-not-verbatim": b'{"frame":{"type":"heartbeat","socket_sequence":2},"recv_ns":5}\n',
    "resync-bad-reason": b'{"type":"resync","reason":7,"recv_ns":5}\n',
    "unknown-type": b'{"type":"surprise","recv_ns":5}\n',
}


@pytest.mark.parametrize("kind", list(BAD_RAW))
def test_replay_bad_raw_line(tmp_path: Path, kind: str) -> None:
    path = _raw_dir(tmp_path, [*_v1_frames(), BAD_RAW[kind]])
    r = collector("replay", str(tmp_path / "data"))
    assert r.status == 1
    one_line(r, "collector replay: ", f"{path}:5:")
    assert [orjson.loads(x)["type"] for x in r.out.splitlines()] == ["book"]  # what came before


BAD_CONFIG: dict[str, dict[str, object]] = {
    "feed-not-a-table": {"feed": 5},
    "trades-string": {"feed": {"api": "current", "trades": "yes"}},
    "depth-string": {"book": {"depth": "ten"}},
    "depth-zero": {"book": {"depth": 0}},
    "emit-unknown": {"book": {"emit": "sometimes"}},
}


@pytest.mark.parametrize("kind", list(BAD_CONFIG))
def test_replay_bad_header_config(tmp_path: Path, kind: str) -> None:
    path = _raw_dir(tmp_path, _v1_frames(), config=BAD_CONFIG[kind])
    r = collector("replay", str(tmp_path / "data"))
    assert r.status == 1 and r.out == b""
    one_line(r, "collector replay: ", f"{path}:1:")


def test_replay_skips_a_torn_last_line(tmp_path: Path) -> None:
    """A last line without its newline (being written, or cut by a crash) is not a frame
    yet, as for `collector cat`."""
    _raw_dir(tmp_path, [*_v1_frames(), b'{"recv_ns":9,"frame":{"type":"heartb'])
    r = collector("replay", str(tmp_path / "data"))
    assert (r.status, r.err) == (0, "")
    assert [orjson.loads(x)["type"] for x in r.out.splitlines()] == ["book"]


@pytest.mark.parametrize("comp", [".zst", ".gz"])
def test_replay_truncated_compressed_raw_segment(tmp_path: Path, comp: str) -> None:
    path = _raw_dir(tmp_path, _v1_frames() * 50, name=CLOSED)
    data = path.read_bytes()
    packed = zstandard.ZstdCompressor().compress(data) if comp == ".zst" else gzip.compress(data)
    path.unlink()
    cut = path.with_name(path.name + comp)
    cut.write_bytes(packed[: len(packed) // 2])
    r = collector("replay", str(tmp_path / "data"))
    assert r.status == 1
    one_line(r, "collector replay: ", str(cut))


@pytest.mark.parametrize("kind", ["fifo", "directory", "symlink-loop", "empty-zst"])
def test_replay_odd_raw_files(tmp_path: Path, kind: str) -> None:
    raw = tmp_path / "data" / SYMBOL / "raw"
    raw.mkdir(parents=True)
    make, why = ODD[kind]
    make(raw / CLOSED)
    shown = raw / (CLOSED + ".zst" if kind == "empty-zst" else CLOSED)
    r = collector("replay", str(tmp_path / "data"), timeout=20)
    assert r.status == 1
    one_line(r, "collector replay: ", str(shown), why)


@pytest.mark.parametrize("depth", ["0", "-3", "1001"])
def test_replay_depth_must_be_a_book_depth(tmp_path: Path, depth: str) -> None:
    _raw_dir(tmp_path, _v1_frames())
    r = collector("replay", str(tmp_path / "data"), f"--depth={depth}")
    assert r.status == 2 and r.out == b""
    assert "Traceback" not in r.err and "--depth" in r.err.splitlines()[-1], r.err

