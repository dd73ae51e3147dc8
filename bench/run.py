"""The benchmark: the collector against the simulator at maximum rate, side by side with
a floor client and the original crawler's algorithm.

    .venv/bin/python -m bench.run                 # the full run (about 6 minutes)
    .venv/bin/python -m bench.run --quick         # seconds: proves it works (CI, tests)
    .venv/bin/python -m bench.run --profile       # also py-spy the collector at 8 symbols

Every run is one contender process against its own fresh simulator process
(`bench.simproc`), one at a time, so the two share the machine's cores and nothing else:

* `collector`: `collector run` with a generated config (`book.emit = "every"`, depth 10),
  through `bench.probe`, which notes the time of each file write;
* `collector-picows`: the same with `feed.transport = "picows"` (when picows is installed);
* `floor`, `floor-picows`: receive and parse only (`bench.floor`);
* `crawler`: the original crawler's algorithm (`bench.crawler`).

Modes: `sat` (the simulator at maximum rate: as fast as the contender reads) and `paced`
(a fixed offered load, total across symbols). After every symbol is connected and a
warm-up, a window of `--seconds` is measured: CPU time (user + sys, all threads) of the
contender from /proc/PID/stat, and the updates it handled in that window (update frames
after the snapshot whose receive time falls in it: book records by `recv_ns` for the
collector, the clients' own notes for the others). Latency is from the simulator handing
a frame to `ws.send` to the record being written (collector), the line appended
(crawler), or the frame parsed (floor). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.common import load_arrays

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")
BUILTIN_ORDER = ["BTCUSD", "ETHUSD", "SOLUSD", "LTCUSD", "DOGEUSD", "LINKUSD", "XRPUSD",
                 "SHIBUSD", "ETHBTC", "BTCEUR", "BTCGBP", "BTCUSDT", "ETHUSDT"]
BOOK = b'{"type":"book"'


def symbols_for(n: int) -> list[str]:
    out = BUILTIN_ORDER[:n]
    i = 1
    while len(out) < n:
        out.append(f"X{i:03d}USD")
        i += 1
    return out


def has_picows() -> bool:
    try:
        import picows  # noqa: F401  # only whether it imports
    except ImportError:
        return False
    return True


# ---- process helpers -----------------------------------------------------------------------


def cpu_ticks(pid: int) -> int:
    """utime + stime of the whole process (all threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])


def machine_busy_ticks() -> int:
    """Busy ticks of all CPUs together (/proc/stat), to tell other load on the machine."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2]  # user, nice, system (not irq/softirq: loopback traffic)


def steal_ticks() -> int:
    """Ticks all CPUs together waited for the hypervisor (/proc/stat): on a VM, the host's
    other guests; latency figures of a window with much of it are the host's, not ours."""
    with open("/proc/stat") as f:
        return int(f.readline().split()[8])


def status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> tuple[int, float, float, int]:
    """SIGTERM a child and reap it: (status, user s, sys s, max RSS KB)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, ru.ru_utime, ru.ru_stime, ru.ru_maxrss
        if time.monotonic() > deadline:
            proc.kill()
            _, status, ru = os.wait4(proc.pid, 0)
            proc.returncode = -9
            return -9, ru.ru_utime, ru.ru_stime, ru.ru_maxrss
        time.sleep(0.02)


def read_port(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> int:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise RuntimeError("simulator did not start")
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError("simulator exited before listening")
            buf += chunk
    line = buf.split(b"\n", 1)[0].decode()
    assert line.startswith("port "), line
    return int(line.split()[1])


def pyspy() -> str | None:
    near = Path(sys.executable).parent / "py-spy"
    return str(near) if near.exists() else shutil.which("py-spy")


def percentiles(values: list[int]) -> dict[str, Any]:
    """p50, p99, p99.9 (nearest rank) of nanosecond samples, in ms."""
    if not values:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "p999_ms": None, "max_ms": None}
    v = sorted(values)
    n = len(v)

    def rank(q: float) -> float:
        return round(v[min(n - 1, max(0, int(q * n + 0.999999) - 1))] / 1e6, 3)

    return {"n": n, "p50_ms": rank(0.50), "p99_ms": rank(0.99), "p999_ms": rank(0.999),
            "max_ms": round(v[-1] / 1e6, 3)}


# ---- one run ---------------------------------------------------------------------------------


@dataclass
class Settings:
    depth: int
    seconds: float
    warmup: float
    load: float
    seed: int
    workdir: Path
    keep: bool = False
    python: str = sys.executable
    profile_out: Path | None = None  # py-spy this run's contender during the window
    market: str = "loop"  # bench.simproc --market
    sim_args: tuple[str, ...] = ()  # more bench.simproc options (experiments)


@dataclass
class Run:
    contender: str
    symbols: int
    mode: str  # "sat" | "paced"
    offered: float | None = None
    result: dict[str, Any] = field(default_factory=dict)


def measured_output(out: Path) -> str:
    """The benchmarks' [book] and [output]: every book change written, depth 10, into
    one uncompressed file per stream that never rotates."""
    return f"""[book]
depth = 10
emit = "every"

[output]
dir = "{out}"
rotate = "1d"
max_segment_mb = 1000000
compress = "none"
min_free_mb = 0

[log]
level = "warning"
"""


def collector_config(port: int, symbols: list[str], out: Path, transport: str | None) -> str:
    feed_extra = f'transport = "{transport}"\n' if transport else ""
    return f"""[feed]
url = "ws://127.0.0.1:{port}/v1/marketdata"
symbols = {json.dumps(symbols)}
snapshot_timeout_s = 120
stale_after_s = 120
connect_burst = 5
max_connects_per_minute = 6000
{feed_extra}
{measured_output(out)}"""


def contender_cmd(name: str, s: Settings, port: int, symbols: list[str], rundir: Path) -> list[str]:
    url = f"ws://127.0.0.1:{port}/v1/marketdata"
    sym = ",".join(symbols)
    if name.startswith("collector"):
        cfg = rundir / "config.toml"
        transport = "picows" if name == "collector-picows" else None
        cfg.write_text(collector_config(port, symbols, rundir / "data", transport))
        return [s.python, "-m", "bench.probe", "--write-log", str(rundir / "writes.bin"),
                "run", "--config", str(cfg)]
    if name.startswith("floor"):
        transport = "picows" if name == "floor-picows" else "websockets"
        return [s.python, "-m", "bench.floor", "--url", url, "--symbols", sym,
                "--out", str(rundir / "samples.bin"), "--transport", transport]
    if name == "crawler":
        return [s.python, "-m", "bench.crawler", "--url", url, "--symbols", sym,
                "--dir", str(rundir / "data"), "--out", str(rundir / "samples.bin")]
    raise ValueError(name)


def wait_connected(status: Path, symbols: list[str], contender: subprocess.Popen[bytes],
                   timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if contender.poll() is not None:
            raise RuntimeError(f"contender exited with {contender.returncode} before going live")
        try:
            st = json.loads(status.read_text())["symbols"]
        except (OSError, ValueError, KeyError):
            st = {}
        if st and all(st.get(x, {}).get("connections", 0) >= 1
                      and st[x]["frames_sent"] >= 2 for x in symbols):
            return
        time.sleep(0.05)
    raise RuntimeError(f"not every symbol connected within {timeout} s")


def run_one(run: Run, s: Settings) -> dict[str, Any]:
    symbols = symbols_for(run.symbols)
    rundir = s.workdir / f"{run.contender}-{run.symbols}-{run.mode}"
    shutil.rmtree(rundir, ignore_errors=True)
    rundir.mkdir(parents=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    sim_cmd = [s.python, "-m", "bench.simproc", "--symbols", ",".join(symbols), "--depth",
               str(s.depth), "--seed", str(s.seed), "--stamps", str(rundir / "stamps.bin"),
               "--status", str(rundir / "status.json"), "--market", s.market]
    sim_cmd += ["--paced", str(run.offered)] if run.mode == "paced" else ["--rate", "0"]
    sim_cmd += list(s.sim_args)
    with open(rundir / "sim.err", "wb") as err:  # the child keeps its own copy
        sim = subprocess.Popen(sim_cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err)
    contender: subprocess.Popen[bytes] | None = None
    try:
        port = read_port(sim)
        cmd = contender_cmd(run.contender, s, port, symbols, rundir)
        with open(rundir / "contender.err", "wb") as err:
            contender = subprocess.Popen(cmd, cwd=rundir, env=env, stdout=subprocess.DEVNULL,
                                         stderr=err)
        wait_connected(rundir / "status.json", symbols, contender, 60 + run.symbols)
        time.sleep(s.warmup * (1 + run.symbols / 50))  # 100 snapshots of 4,000 levels take a while
        if contender.poll() is not None:
            raise RuntimeError(f"contender exited with {contender.returncode}")
        profiler = None
        if s.profile_out is not None:
            with open(rundir / "py-spy.err", "wb") as err:
                profiler = subprocess.Popen(
                    [pyspy() or "py-spy", "record", "--pid", str(contender.pid), "--rate", "250",
                     "--gil", "--duration", str(int(s.seconds)), "--format", "raw", "--threads",
                     "--output", str(s.profile_out)],
                    stdout=subprocess.DEVNULL, stderr=err)
        c0, k0, m0, t0 = (cpu_ticks(contender.pid), cpu_ticks(sim.pid), machine_busy_ticks(),
                          time.time_ns())
        time.sleep(s.seconds)
        c1, k1, m1, t1 = (cpu_ticks(contender.pid), cpu_ticks(sim.pid), machine_busy_ticks(),
                          time.time_ns())
        hwm_kb = status_kb(contender.pid, "VmHWM")
        rss_kb = status_kb(contender.pid, "VmRSS")
        if profiler is not None:
            profiler.wait(timeout=60)
        code, _, _, _ = stop(contender)  # (ru_maxrss would count the pre-exec fork)
        contender = None
    finally:
        if contender is not None:
            stop(contender, 5)
        stop(sim)
    wall = (t1 - t0) / 1e9
    cpu = (c1 - c0) / TICK
    samples = gather(run.contender, rundir, t0, t1)
    n = samples["updates"]
    res: dict[str, Any] = {
        "contender": run.contender, "symbols": run.symbols, "mode": run.mode,
        "offered_per_s": run.offered, "window_s": round(wall, 3), "updates": n,
        "cpu_s": round(cpu, 3),
        "updates_per_cpu_s": round(n / cpu, 1) if cpu > 0 else None,
        "updates_per_wall_s": round(n / wall, 1),
        "cpu_util": round(cpu / wall, 3),
        "sim_cpu_util": round((k1 - k0) / TICK / wall, 3),
        # everything else the machine ran meanwhile (other users, the kernel), in CPUs
        "other_cpu_util": round(max(0, (m1 - m0) - (c1 - c0) - (k1 - k0)) / TICK / wall, 3),
        "peak_rss_mb": round(hwm_kb / 1024, 1),
        "rss_mb": round(rss_kb / 1024, 1),
        "exit_status": code,
        "latency": samples["latency"],
        "latency_recv": samples.get("latency_recv"),
    }
    if run.mode == "paced" and run.offered and n < 0.9 * run.offered * wall:
        res["overloaded"] = True  # fell behind the offered load: its latency keeps growing
    if not s.keep:
        shutil.rmtree(rundir, ignore_errors=True)
    return res


def written_books(write_log: Path) -> Iterator[tuple[dict[str, Any], int | None]]:
    """Every book record of every current.jsonl `bench.probe` saw written, with the time
    of the write that completed its line (None if no write did)."""
    meta, w = load_arrays(write_log)
    for fd_text, path in meta["paths"].items():
        if not path.endswith("/current.jsonl") or "/raw/" in path:
            continue
        fd = int(fd_text)
        writes = [(t, size) for t, f, size in zip(w["t_ns"], w["fd"], w["n"]) if f == fd]
        data = Path(path).read_bytes() if Path(path).exists() else b""
        k, end_k = 0, writes[0][1] if writes else 0
        pos = 0
        for line in data.splitlines(keepends=True):
            pos += len(line)
            while k < len(writes) - 1 and end_k < pos:
                k += 1
                end_k += writes[k][1]
            if line.startswith(BOOK):
                yield orjson.loads(line), writes[k][0] if writes and end_k >= pos else None


def gather(contender: str, rundir: Path, t0: int, t1: int) -> dict[str, Any]:
    """Updates in [t0, t1) by receive time, and their latencies from the send stamps."""
    _, st = load_arrays(rundir / "stamps.bin")
    sent = dict(zip(st["eid"], st["send_ns"]))
    lat: list[int] = []
    lat_recv: list[int] = []
    n = 0
    if contender.startswith("collector"):
        for rec, written in written_books(rundir / "writes.bin"):
            if rec["seq"] == 0 or not t0 <= rec["recv_ns"] < t1:
                continue
            n += 1
            t_sent = sent.get(rec["event_id"])
            if t_sent is not None and written is not None:
                lat.append(written - t_sent)
                lat_recv.append(rec["recv_ns"] - t_sent)
        return {"updates": n, "latency": percentiles(lat), "latency_recv": percentiles(lat_recv)}
    _, cs = load_arrays(rundir / "samples.bin")
    for eid, recv, done in zip(cs["eid"], cs["recv_ns"], cs["done_ns"]):
        if t0 <= recv < t1:
            n += 1
            t_sent = sent.get(eid)
            if t_sent is not None:
                lat.append(done - t_sent)
                lat_recv.append(recv - t_sent)
    return {"updates": n, "latency": percentiles(lat),
            "latency_recv": percentiles(lat_recv) if contender == "crawler" else None}


# ---- the whole benchmark ------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    info = {"machine": platform.machine(), "cpu": model, "cpus": os.cpu_count(),
            "python": platform.python_version(), "kernel": platform.release(),
            "websockets": version("websockets")}
    try:
        info["picows"] = version("picows")
    except PackageNotFoundError:
        pass
    return info


def plan(args: argparse.Namespace) -> list[Run]:
    contenders = args.contenders.split(",")
    paced = args.paced_contenders.split(",")
    if not has_picows():
        contenders = [c for c in contenders if not c.endswith("picows")]
        paced = [c for c in paced if not c.endswith("picows")]
    runs = []
    for n in (int(x) for x in args.symbols.split(",")):
        runs += [Run(c, n, "sat") for c in contenders]
        if args.load > 0:
            runs += [Run(c, n, "paced", args.load) for c in paced if c in contenders]
    return runs


def ratios(results: list[dict[str, Any]]) -> None:
    """x floor: updates per CPU-second over the websockets floor's, same symbols and mode."""
    floor = {(r["symbols"], r["mode"]): r["updates_per_cpu_s"] for r in results
             if r["contender"] == "floor"}
    for r in results:
        f = floor.get((r["symbols"], r["mode"]))
        r["x_floor_cpu"] = round(r["updates_per_cpu_s"] / f, 3) if f and r["updates_per_cpu_s"] else None


def targets(results: list[dict[str, Any]], load: float) -> list[dict[str, Any]]:
    def get(c: str, n: int, mode: str) -> dict[str, Any] | None:
        return next((r for r in results if r["contender"] == c and r["symbols"] == n
                     and r["mode"] == mode), None)

    out = []
    r = get("collector", 8, "sat")
    if r and r.get("x_floor_cpu") is not None:
        out.append({"target": "8 symbols: collector (websockets) >= 0.6x floor updates/CPU-s",
                    "value": r["x_floor_cpu"], "met": r["x_floor_cpu"] >= 0.6})
    r = get("collector-picows", 8, "sat")
    out.append({"target": "8 symbols: collector (picows) >= 1.0x websockets floor",
                "value": r.get("x_floor_cpu") if r else None,
                "met": (r.get("x_floor_cpu") or 0) >= 1.0 if r else None,
                **({} if r else {"note": "collector has no feed.transport yet"})})
    for n in sorted({r["symbols"] for r in results}):
        r = get("collector", n, "paced")
        if r and r["latency"]["p99_ms"] is not None:
            out.append({"target": f"{n} symbols: collector p99 latency at {load:g}/s < 2 ms",
                        "value": r["latency"]["p99_ms"], "met": r["latency"]["p99_ms"] < 2.0})
    r = get("collector", 100, "sat")
    if r:
        out.append({"target": "100 symbols: collector peak RSS < 400 MB",
                    "value": r["peak_rss_mb"], "met": r["peak_rss_mb"] < 400})
    return out


def fmt_lat(lat: dict[str, Any] | None) -> str:
    if not lat or lat.get("p50_ms") is None:
        return "-"
    return f"{lat['p50_ms']:.2f}/{lat['p99_ms']:.2f}/{lat['p999_ms']:.2f}"


def table(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"command: {report['command']}",
        (f"machine: {m['machine']}, {m['cpu']}, {m['cpus']} CPUs, Python {m['python']}, "
         f"websockets {m['websockets']}" + (f", picows {m['picows']}" if "picows" in m else "")),
        (f"load: simulator (own process) at max rate ('sat') or {report['settings']['load']:g} "
         f"updates/s total ('paced'); {report['settings']['depth']} levels per side; "
         f"emit=every, depth 10; window {report['settings']['seconds']:g} s; "
         f"CPU/sim/other: CPUs used by the contender / the simulator / everything else"),
        "",
    ]
    head = (f"{'sym':>4} {'contender':<17}{'upd/CPU-s':>10} {'x floor':>7} {'upd/wall-s':>10} "
            f"{'CPU':>5} {'sim':>5} {'other':>5}  {'lat p50/p99/p99.9 ms':>22} {'@paced':>22}  "
            f"{'peak RSS':>8}")
    lines += [head, "-" * len(head)]
    by = {(r["contender"], r["symbols"], r["mode"]): r for r in report["runs"] if "error" not in r}
    failed = [r for r in report["runs"] if "error" in r]
    order = ["collector", "collector-picows", "floor", "floor-picows", "crawler"]
    for n in sorted({r["symbols"] for r in report["runs"]}):
        for c in order:
            sat, paced = by.get((c, n, "sat")), by.get((c, n, "paced"))
            if sat is None:
                continue
            xf = f"{sat['x_floor_cpu']:.2f}" if sat.get("x_floor_cpu") is not None else "-"
            plat = fmt_lat(paced["latency"]) if paced else "-"
            if paced and paced.get("overloaded"):
                plat = "overloaded " + plat.split("/")[0]
            lines.append(
                f"{n:>4} {c:<17}{sat['updates_per_cpu_s']:>10,.0f} {xf:>7} "
                f"{sat['updates_per_wall_s']:>10,.0f} {sat['cpu_util']:>5.0%} "
                f"{sat['sim_cpu_util']:>5.0%} {sat['other_cpu_util']:>5.0%}  "
                f"{fmt_lat(sat['latency']):>22} {plat:>22}  "
                f"{sat['peak_rss_mb']:>6.0f}MB")
        lines.append("")
    for r in failed:
        lines.append(f"failed: {r['contender']} {r['symbols']} symbols {r['mode']}: {r['error']}")
    per = report.get("rss_per_symbol")
    if per:
        lines.append(f"collector RSS at {per['symbols']} symbols: {per['peak_rss_mb']:.0f} MB peak, "
                     f"{per['per_symbol_mb']:.2f} MB per symbol "
                     f"({per['marginal_mb']:.2f} MB per symbol above 1 symbol)")
    for t in report["targets"]:
        verdict = "n/a" if t["met"] is None else ("met" if t["met"] else "NOT met")
        val = "-" if t["value"] is None else t["value"]
        lines.append(f"target: {t['target']}: {val} -> {verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes, about ten seconds: proves the benchmark works")
    p.add_argument("--symbols", default=None, help="symbol counts (default 1,8,100)")
    p.add_argument("--depth", type=int, default=None, help="levels per side (default 2000)")
    p.add_argument("--seconds", type=float, default=None, help="measured window per run (8)")
    p.add_argument("--warmup", type=float, default=None, help="seconds before the window (2)")
    p.add_argument("--load", type=float, default=None,
                   help="offered load of the paced runs, updates/s total (5000; 0 = none)")
    p.add_argument("--contenders", default="collector,collector-picows,floor,floor-picows,crawler")
    p.add_argument("--paced-contenders", default="collector,collector-picows,floor,crawler")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--market", choices=("loop", "live"), default="loop",
                   help="simulator market: pre-stepped looping tape (default) or the live "
                        "Market (then the simulator is the limit on 2 cores)")
    p.add_argument("--sim-args", default="", help="extra bench.simproc options, e.g. --no-coalesce")
    p.add_argument("--json", default=None, help="where to write the JSON (bench/results.json)")
    p.add_argument("--workdir", default=None,
                   help="scratch directory, where the contenders write (default: a temporary "
                        "one on /dev/shm, so that the disk is not measured)")
    p.add_argument("--keep", action="store_true", help="keep each run's files")
    p.add_argument("--profile", action="store_true",
                   help="also profile the collector (py-spy) at 8 symbols, saturated, into "
                        "bench/profile-8sym.txt (and -picows.txt over picows)")
    args = p.parse_args(argv)
    quick = args.quick
    args.symbols = args.symbols or ("2" if quick else "1,8,100")
    args.depth = args.depth or (50 if quick else 2000)
    args.seconds = args.seconds or (1.0 if quick else 8.0)
    args.warmup = args.warmup if args.warmup is not None else (0.3 if quick else 2.0)
    args.load = args.load if args.load is not None else (500.0 if quick else 5000.0)
    if quick and args.paced_contenders == p.get_default("paced_contenders"):
        args.paced_contenders = "collector"
    if quick and args.contenders == p.get_default("contenders"):
        args.contenders = "collector,floor,crawler"
    out_json = Path(args.json) if args.json else (
        Path(tempfile.gettempdir()) / "bench-quick.json" if quick else ROOT / "bench" / "results.json")
    scratch = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    work = Path(args.workdir) if args.workdir else Path(
        tempfile.mkdtemp(prefix="collector-bench-", dir=scratch))
    s = Settings(args.depth, args.seconds, args.warmup, args.load, args.seed, work, args.keep,
                 market=args.market, sim_args=tuple(shlex.split(args.sim_args)))
    command = "python -m bench.run" + ("" if argv is None and len(sys.argv) <= 1 else " " + shlex.join(
        argv if argv is not None else sys.argv[1:]))
    runs = plan(args)
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        for i, run in enumerate(runs, 1):
            label = f"[{i}/{len(runs)}] {run.contender} {run.symbols} sym {run.mode}"
            print(label, "...", end=" ", file=sys.stderr, flush=True)
            try:
                r = run_one(run, s)
            except Exception as exc:
                print(f"failed: {exc!r}", file=sys.stderr, flush=True)
                results.append({"contender": run.contender, "symbols": run.symbols,
                                "mode": run.mode, "error": repr(exc)})
                continue
            results.append(r)
            print(f"{r['updates_per_cpu_s'] or 0:,.0f} upd/CPU-s, {r['updates_per_wall_s']:,.0f} "
                  f"upd/s, p99 {r['latency']['p99_ms']} ms", file=sys.stderr, flush=True)
        profile = None
        if args.profile:
            profile = [run_profile(s, args, c) for c in ("collector", "collector-picows")
                       if c == "collector" or has_picows()]
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    ok = [r for r in results if "error" not in r]
    ratios(ok)
    report: dict[str, Any] = {
        "command": command, "machine": machine(),
        "settings": {"symbols": args.symbols, "depth": args.depth, "seconds": args.seconds,
                     "warmup": args.warmup, "load": args.load, "seed": args.seed,
                     "quick": quick, "emit": "every", "book_depth": 10,
                     "market": args.market},
        "elapsed_s": round(time.monotonic() - started, 1),
        "runs": results,
    }
    col = {r["symbols"]: r for r in ok if r["contender"] == "collector" and r["mode"] == "sat"}
    if col:
        big, small = max(col), min(col)
        report["rss_per_symbol"] = {
            "symbols": big, "peak_rss_mb": col[big]["peak_rss_mb"],
            "per_symbol_mb": round(col[big]["peak_rss_mb"] / big, 3),
            "marginal_mb": round((col[big]["peak_rss_mb"] - col[small]["peak_rss_mb"])
                                 / max(1, big - small), 3)}
    report["targets"] = targets(ok, args.load)
    if profile:
        report["profile"] = profile
    report["table"] = table(report)
    out_json.write_text(json.dumps(report, indent=1) + "\n")
    print(report["table"])
    print(f"\nJSON: {out_json}  ({report['elapsed_s']} s)")
    return 0


def run_profile(s: Settings, args: argparse.Namespace,
                contender: str = "collector") -> dict[str, Any] | None:
    """py-spy a collector contender at 8 symbols, saturated; summarise into
    bench/profile-8sym.txt (collector) or bench/profile-8sym-picows.txt."""
    from bench.profile import summarise

    if pyspy() is None:
        print("py-spy not found: pip install py-spy", file=sys.stderr)
        return None
    suffix = contender.removeprefix("collector")
    raw = s.workdir / f"profile-8sym{suffix}.raw"
    ps = Settings(s.depth, max(s.seconds, 10.0), s.warmup, s.load, s.seed, s.workdir, s.keep,
                  s.python, raw, s.market, s.sim_args)
    print(f"profile: {contender} 8 sym sat under py-spy ...", file=sys.stderr, flush=True)
    r = run_one(Run(contender, 8, "sat"), ps)
    text = summarise(raw.read_text(), title=(
        f"py-spy record --rate 250 --gil (samples of the thread holding the GIL) on `collector run` "
        f"({contender}: 8 symbols x {s.depth} levels, simulator at max rate, emit=every), "
        f"{ps.seconds:g} s window; {r['updates_per_wall_s']:,.0f} updates/s during the profile"))
    out = ROOT / "bench" / f"profile-8sym{suffix}.txt"
    out.write_text(text)
    print(f"profile: {out}", file=sys.stderr)
    return {"path": str(out.relative_to(ROOT)), "run": r}

if __name__ == "__main__":
    sys.exit(main())
