"""The benchmark's load: the simulator (`collector.sim.SimExchange`) in its own process.

    python -m bench.simproc --symbols BTCUSD,ETHUSD --depth 2000 --rate 0 \
        [--paced 5000] [--stamps FILE] [--status FILE]

`--rate 0` is the simulator's maximum rate: each market publishes as fast as its
connection drains it. `--paced N` instead publishes N updates/s in total, round-robin
over the symbols at fixed intervals (the offered load of the latency runs).

`--stamps FILE`: every update frame's send time (`time.time_ns()` just before the
simulator's `ws.send`), keyed by its eventId (unique across symbols), written at exit.
`--status FILE`: per-symbol counters rewritten every 0.2 s, for the harness to see that
every symbol is connected. Prints `port N` once listening; runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import os
import time

from websockets.asyncio.server import ServerConnection

from bench.common import UPDATE_PREFIX, dump_arrays, run_until_signal
from collector.sim import SimExchange

_EID = len(UPDATE_PREFIX)
_TS = b'"timestamp"'


def install_stamps(eids: array.array, times: array.array) -> None:
    """Wrap the server connections' send: note when each update frame is handed over."""
    original = ServerConnection.send
    now = time.time_ns

    async def send(self: ServerConnection, message, *, text=None):  # type: ignore[no-untyped-def]
        if message[:_EID] == UPDATE_PREFIX:
            j = message.index(b",", _EID)
            if message[j + 1:j + 12] == _TS:  # not the seq-0 snapshot (no timestamps)
                times.append(now())
                eids.append(int(message[_EID:j]))
        return await original(self, message, text=text)

    ServerConnection.send = send  # type: ignore[method-assign]


async def pace(sim: SimExchange, symbols: list[str], total_rate: float) -> None:
    """Publish `total_rate` updates/s, round-robin over the symbols, on a fixed schedule."""
    loop = asyncio.get_running_loop()
    period = 1.0 / total_rate
    t0 = loop.time()
    n = i = 0
    count = len(symbols)
    while True:
        due = int((loop.time() - t0) / period) + 1
        if due - n > total_rate:  # more than a second behind: skip rather than burst
            n = due - 1
        while n < due:
            sim.advance(symbols[i % count])
            i += 1
            n += 1
        await asyncio.sleep(max(0.0, t0 + n * period - loop.time()))


def write_status(sim: SimExchange, path: str) -> None:
    body = {"t_ns": time.time_ns(), "symbols": {
        s: {"connections": st.connections, "handshakes": st.handshakes,
            "frames_sent": st.frames_sent, "updates": st.updates,
            "slow_closes": st.slow_closes}
        for s, st in sim.stats.items()}}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(body, f)
    os.replace(tmp, path)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.simproc")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--symbols", required=True)
    p.add_argument("--depth", type=int, default=2000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rate", type=float, default=0.0, help="per symbol; 0 = maximum")
    p.add_argument("--paced", type=float, default=0.0, help="total updates/s (overrides --rate)")
    p.add_argument("--heartbeat", type=float, default=5.0)
    p.add_argument("--stamps", default=None)
    p.add_argument("--status", default=None)
    args = p.parse_args()
    symbols = [s for s in args.symbols.split(",") if s]
    eids, times = array.array("q"), array.array("q")
    if args.stamps:
        install_stamps(eids, times)

    async def run(stop: asyncio.Event) -> None:
        sim = SimExchange(symbols, seed=args.seed, rate=None if args.paced else args.rate,
                          heartbeat_s=args.heartbeat, depth=args.depth, ping_interval=None,
                          send_buffer=10_000_000, record_truth=False)
        await sim.start("127.0.0.1", args.port)
        print(f"port {sim.port}", flush=True)
        tasks = []
        if args.paced:
            tasks.append(asyncio.create_task(pace(sim, symbols, args.paced)))
        try:
            while not stop.is_set():
                if args.status:
                    write_status(sim, args.status)
                try:
                    await asyncio.wait_for(stop.wait(), 0.2)
                except TimeoutError:
                    pass
        finally:
            for t in tasks:
                t.cancel()
            await sim.stop()
            if args.stamps:
                dump_arrays(args.stamps, eid=eids, send_ns=times)

    run_until_signal(run)


if __name__ == "__main__":
    main()
