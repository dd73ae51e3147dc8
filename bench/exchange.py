"""The whole exchange: the collector with `symbols = ["*"]` against the simulator's
347-symbol exchange (issue 15's figures).

    .venv/bin/python -m bench.exchange             # about 3 minutes, prints the table
    .venv/bin/python -m bench.exchange --v1        # also v1's start and blip (about 15 minutes)
    .venv/bin/python -m bench.exchange --quick     # seconds, small sizes: proves it works

The collector (`collector run` through `bench.probe`, which notes the time of every file
write) runs in its own process; the simulator (`SimExchange.whole`) in this one for the
start and blip runs, in its own (`bench.simproc --whole`) for the load runs. Runs:

* **start / blip** (current API, shared sockets; with `--v1`, v1 too): 10 busy books at
  50 updates/s with 2,000 levels, the rest quiet, Gemini's limits on (a 429 is counted).
  Time from spawning the collector to a book record in every listed symbol's file, then
  from `sim.blip()` (every socket dropped) to a book record after the `closed` resync in
  every file; peak RSS; the time one /metrics scrape takes (it blocks the collector's loop:
  nothing else scrapes during the runs).
* **load** (current API, `symbols_per_socket` 50 and 1): the busy books at 500 updates/s
  each, 5,000/s in total. Over a window after a warm-up: the collector's CPU time per
  update (/proc/PID/stat over the book records received in the window), and the latency of every book
  record from the simulator's `ws.send` of its frame (stamped in the simulator's process,
  keyed by the frame's update id `u`, unique across symbols) to the write that completed
  its line, also split at the collector's receipt (`recv_ns`). The
  simulator's schedule wakes every millisecond here (5 updates a wake-up, as `bench.run`
  paces its load), not every 5 ms: a burst of 25 frames would put the last one 25 frames'
  work behind the first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import load_arrays
from bench.run import (
    ROOT,
    TICK,
    cpu_ticks,
    measured_output,
    percentiles,
    pyspy,
    read_port,
    steal_ticks,
    stop,
    written_books,
)
from collector.sim import SimExchange


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text: str = r.read().decode()
        return text


def config(url: str, rest_url: str, out: Path, port: int, api: str, per_socket: int) -> str:
    return f"""[feed]
api = "{api}"
url = "{url}"
rest_url = "{rest_url}"
symbols = ["*"]
symbols_per_socket = {per_socket}
max_connects_per_minute = {50 if per_socket > 1 or api == "v1" else 100000}
snapshot_timeout_s = 30

[metrics]
listen = "127.0.0.1:{port}"

{measured_output(out)}"""


class Collector:
    def __init__(self, url: str, rest_url: str, work: Path, name: str, api: str, per_socket: int) -> None:
        self.dir = work / name
        self.dir.mkdir(parents=True)
        self.port = free_port()
        cfg = self.dir / "config.toml"
        cfg.write_text(config(url, rest_url, self.dir / "data", self.port, api, per_socket))
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.started = time.monotonic()
        with open(self.dir / "collector.err", "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.probe", "--write-log", str(self.dir / "writes.bin"),
                 "run", "--config", str(cfg)], cwd=ROOT, env=env, stderr=err)

    def metrics(self) -> str:
        try:
            return scrape(self.port)
        except OSError:
            return ""

    def booked(self, symbol: str, after: bytes | None) -> bool:
        """The symbol's file has a book record (after the first `after` marker, if given)."""
        try:
            data = (self.dir / "data" / symbol / "current.jsonl").read_bytes()
        except FileNotFoundError:
            return False
        if after is not None:
            at = data.find(after)
            if at < 0:
                return False
            data = data[at:]
        return b'"type":"book"' in data

    async def wait_books(self, symbols: list[str], timeout: float, after: bytes | None = None) -> float:
        """Seconds until every symbol has a book record (after `after`). Read from the
        files: scraping /metrics meanwhile would block the collector's loop."""
        t0 = time.monotonic()
        waiting = list(symbols)
        while waiting:
            if self.proc.poll() is not None:
                raise RuntimeError(f"collector exited {self.proc.returncode}: see {self.dir}/collector.err")
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"{len(waiting)} of {len(symbols)} without a book after {timeout} s")
            waiting = [s for s in waiting if not self.booked(s, after)]
            await asyncio.sleep(0.05)
        return time.monotonic() - t0

    def stop(self) -> tuple[int, float]:
        """SIGTERM; (exit status, peak RSS in MB over the whole run)."""
        status, _, _, maxrss_kb = stop(self.proc)
        return status, maxrss_kb / 1024


async def start_and_blip(args: argparse.Namespace, work: Path, api: str) -> dict[str, Any]:
    async with SimExchange.whole(args.symbols, busy=args.busy, rate=args.rate, depth=args.depth,
                                 seed=1, limits=True) as sim:
        listed = list(sim.specs)
        url = sim.current_url if api == "current" else sim.ws_url
        c = Collector(url, sim.rest_url, work, f"start-{api}", api, 50)
        try:
            await c.wait_books(listed, args.timeout)
            start_s = time.monotonic() - c.started
            scrape_ms = []
            for _ in range(3):
                t = time.perf_counter()
                c.metrics()
                scrape_ms.append((time.perf_counter() - t) * 1000)
            await asyncio.sleep(args.settle)
            dropped = sim.blip()
            back_s = await c.wait_books(listed, args.timeout, after=b'"reason":"closed"')
        finally:
            status, rss_mb = c.stop()
        return {"api": api, "symbols": len(listed), "start_s": round(start_s, 2),
                "sockets_dropped": dropped, "blip_back_s": round(back_s, 2),
                "peak_rss_mb": round(rss_mb, 1), "sim_429": sim.exchange_stats.total_429,
                "metrics_scrape_ms": round(max(scrape_ms), 1),
                "exit_status": status}


class LoadSim:
    """The load runs' simulator in its own process (`bench.simproc --whole`), as
    `bench.run` runs its own: in this process it shared a core with the harness and its
    sends stalled for up to 39 ms, then burst, which showed as collector latency."""

    def __init__(self, args: argparse.Namespace, work: Path, seed: int) -> None:
        self.stamps = work / f"stamps-{seed}-{time.monotonic_ns()}.bin"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.simproc", "--whole", str(args.symbols), "--busy", str(args.busy),
             "--rate", str(args.load_rate), "--depth", str(args.depth), "--seed", str(seed),
             "--stamps", str(self.stamps)], cwd=ROOT, stdout=subprocess.PIPE,
            env=dict(os.environ, PYTHONPATH=str(ROOT)))
        base = f"127.0.0.1:{read_port(self.proc)}"
        self.url, self.rest_url = f"ws://{base}", f"http://{base}"
        with urllib.request.urlopen(f"{self.rest_url}/v1/symbols", timeout=10) as r:
            self.listed = [s.upper() for s in json.load(r)]

    def stop(self) -> dict[int, int]:
        """Stop it; each depth frame's send time, by update id."""
        stop(self.proc)
        _, a = load_arrays(self.stamps)
        return dict(zip(a["u"], a["send_ns"]))


async def load(args: argparse.Namespace, work: Path, per_socket: int) -> dict[str, Any]:
    sim = LoadSim(args, work, seed=2)
    try:
        c = Collector(sim.url, sim.rest_url, work, f"load-{per_socket}", "current", per_socket)
        try:
            await c.wait_books(sim.listed, args.timeout)
            await asyncio.sleep(args.warmup)
            # no /metrics scrape in the window: generating it blocks the collector's loop
            profiler = None
            if args.profile and per_socket > 1:
                profiler = subprocess.Popen(
                    [pyspy() or "py-spy", "record", "--pid", str(c.proc.pid), "--rate", "250", "--gil",
                     "--duration", str(int(args.window)), "--format", "raw", "--output", str(args.profile)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            k0, s0, t0 = cpu_ticks(c.proc.pid), steal_ticks(), time.time_ns()
            await asyncio.sleep(args.window)
            if profiler is not None:
                profiler.wait()
            k1, s1, t1 = cpu_ticks(c.proc.pid), steal_ticks(), time.time_ns()
        finally:
            c.stop()
    finally:
        sent = sim.stop()
    books = [(r, written) for r, written in written_books(c.dir / "writes.bin")
             if t0 <= r["recv_ns"] < t1]
    timed = [(sent[r["seq"]], r["recv_ns"], written) for r, written in books
             if written is not None and r["seq"] in sent]
    updates = len(books)
    cpu_s = (k1 - k0) / TICK
    return {"symbols_per_socket": per_socket, "updates_per_s": round(updates / ((t1 - t0) / 1e9)),
            "cpu_util": round(cpu_s / ((t1 - t0) / 1e9), 3),
            "steal": round((s1 - s0) / TICK / ((t1 - t0) / 1e9) / (os.cpu_count() or 1), 3),
            "cpu_us_per_update": round(cpu_s / updates * 1e6, 1) if updates else None,
            "latency": percentiles([written - sent for sent, _, written in timed]),
            "latency_recv": percentiles([recv - sent for sent, recv, _ in timed]),
            "latency_write": percentiles([written - recv for _, recv, written in timed])}


def table(res: dict[str, Any]) -> str:
    out = ["run                       symbols  to all live  back after blip  peak RSS  429s  /metrics",
           *(f"start/blip {r['api']:<14} {r['symbols']:>7} {r['start_s']:>10.1f} s "
             f"{r['blip_back_s']:>14.1f} s {r['peak_rss_mb']:>6.0f} MB {r['sim_429']:>5} "
             f"{r['metrics_scrape_ms']:>6.0f} ms" for r in res["start"]),
           "",
           "load (5,000 upd/s)        updates/s   CPU  us/update  latency p50/p99/max ms  "
           "(send->recv p99, recv->written p99)  host steal"]
    for r in res["load"]:
        lat = r["latency"]
        out.append(f"symbols_per_socket={r['symbols_per_socket']:<6} {r['updates_per_s']:>12} "
                   f"{r['cpu_util']:>5.2f} {r['cpu_us_per_update'] or 0:>10.1f}  "
                   f"{lat['p50_ms']}/{lat['p99_ms']}/{lat['max_ms']}  "
                   f"({r['latency_recv']['p99_ms']}, {r['latency_write']['p99_ms']})  {r['steal']:.1%}")
    return "\n".join(out)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
        work = Path(tmp) if args.keep is None else args.keep
        work.mkdir(parents=True, exist_ok=True)
        res: dict[str, Any] = {"start": [], "load": []}
        for api in () if args.only_load else ("current", "v1") if args.v1 else ("current",):
            res["start"].append(await start_and_blip(args, work, api))
            print(json.dumps(res["start"][-1]), file=sys.stderr, flush=True)
        for per_socket in () if args.no_load else (50, 1):
            res["load"].append(await load(args, work, per_socket))
            print(json.dumps(res["load"][-1]), file=sys.stderr, flush=True)
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.exchange", description=__doc__.split("\n\n")[0])
    p.add_argument("--symbols", type=int, default=347)
    p.add_argument("--busy", type=int, default=10)
    p.add_argument("--rate", type=float, default=50.0, help="busy books' updates/s, start/blip runs")
    p.add_argument("--load-rate", type=float, default=500.0, help="busy books' updates/s, load runs")
    p.add_argument("--depth", type=int, default=2000)
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--window", type=float, default=15.0)
    p.add_argument("--settle", type=float, default=3.0, help="seconds live before the blip")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--v1", action="store_true", help="also v1's start and blip (minutes: its budget)")
    p.add_argument("--no-load", action="store_true", help="skip the load runs")
    p.add_argument("--quick", action="store_true", help="small sizes, seconds")
    p.add_argument("--profile", type=Path, default=None,
                   help="py-spy the shared-socket load run into this file (raw folded stacks)")
    p.add_argument("--keep", type=Path, default=None,
                   help="work in this new folder and keep it (configs, files, write logs, stamps)")
    p.add_argument("--only-load", action="store_true", help="skip the start/blip runs")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "exchange.json")
    args = p.parse_args(argv)
    if args.quick:
        args.symbols, args.busy, args.depth, args.warmup, args.window, args.settle = 20, 2, 100, 1.0, 2.0, 0.5
        args.load_rate = 100.0
    res = asyncio.run(main_async(args))
    print(table(res))
    if not args.quick:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
