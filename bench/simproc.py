"""The benchmark's load: the simulator (`collector.sim.SimExchange`) in its own process.

    python -m bench.simproc --symbols BTCUSD,ETHUSD --depth 2000 --rate 0 \
        [--paced 5000] [--stamps FILE] [--status FILE]

`--rate 0` is the simulator's maximum rate: each market publishes as fast as its
connection drains it. By default each symbol's market is the simulator's own `Market`
pre-stepped into a looping tape (`bench.loopmarket`), so that producing an update costs
the simulator next to nothing beyond sending it; `--market live` keeps the live `Market`
(about 13 us more per update at 2,000 levels: on 2 cores the simulator is then the limit).
`--paced N` instead publishes N updates/s in total, round-robin
over the symbols at fixed intervals (the offered load of the latency runs).

`--whole N --busy B` instead serves the whole exchange (`SimExchange.whole`: N listed
symbols, B busy ones at `--rate` updates/s with `--depth` levels, the rest quiet; current
API and REST), its schedule waking every `--tick` seconds; with `--stamps`, every current-API
depth frame is stamped by its update id `u` (unique across symbols).

`--stamps FILE`: every update frame's send time (`time.time_ns()` just before the
simulator's `ws.send`), keyed by its eventId (unique across symbols), written at exit.
`--status FILE`: per-symbol counters rewritten every 0.2 s, for the harness to see that
every symbol is connected. Prints `port N` once listening; runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import gc
import json
import os
import re
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

from bench.common import UPDATE_PREFIX, dump_arrays, run_until_signal
from bench.loopmarket import LoopMarket, loop_length
from collector.sim import SimExchange, server

_EID = len(UPDATE_PREFIX)
_TS = b'"timestamp"'
_DEPTH = b'{"e":"depthUpdate"'
_U = re.compile(rb'"u":(\d+)')


class CoalescingTransport:
    """A transport proxy that gathers the writes of one event-loop turn into one
    `writelines` (one syscall) at the end of the turn, instead of one `send` per frame.
    What the client receives is byte for byte the same; it just comes in fewer segments,
    as from a busy exchange, and the simulator spends its time making frames."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._t = transport
        self._buf: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        if not self._buf:
            self._loop.call_soon(self._flush)
        self._buf.append(data)

    def _flush(self) -> None:
        if self._buf:
            buf, self._buf = self._buf, []
            if not self._t.is_closing():
                self._t.writelines(buf)

    def writelines(self, data) -> None:  # type: ignore[no-untyped-def]  # a transport's own signature
        for d in data:
            self.write(d)

    def close(self) -> None:
        self._flush()
        self._t.close()

    def write_eof(self) -> None:
        self._flush()
        self._t.write_eof()

    def abort(self) -> None:
        self._buf = []
        self._t.abort()

    def get_write_buffer_size(self) -> int:
        return self._t.get_write_buffer_size() + sum(map(len, self._buf))

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]  # whatever the transport has
        return getattr(self._t, name)


def frame(message: bytes, text: bool) -> bytes:
    """`message` as the one WebSocket frame websockets writes for a server's `send` on a
    connection without extensions: final, unmasked, text or binary (RFC 6455 5.2)."""
    n = len(message)
    op = 0x81 if text else 0x82
    if n < 126:
        return bytes((op, n)) + message
    if n < 65536:
        return bytes((op, 126)) + n.to_bytes(2, "big") + message
    return bytes((op, 127)) + n.to_bytes(8, "big") + message


def v1_update_id(message: Any) -> int | None:
    """A v1 update frame's eventId; None for anything else, the seq-0 snapshot included
    (it has no timestamps)."""
    if message[:_EID] != UPDATE_PREFIX:
        return None
    j = message.index(b",", _EID)
    return int(message[_EID:j]) if message[j + 1:j + 12] == _TS else None


def depth_update_id(message: Any) -> int | None:
    """A current-API depth frame's update id `u` (unique across symbols); None otherwise."""
    if type(message) is not bytes or not message.startswith(_DEPTH):
        return None
    m = _U.search(message)
    return int(m.group(1)) if m else None


def install_send_hooks(eids: array.array[int] | None, times: array.array[int] | None,
                       coalesce: bool, preframe: bool,
                       update_id: Callable[[Any], int | None] = v1_update_id) -> None:
    """Wrap the server connections' send: coalesce their writes, frame the messages
    (`preframe`), and note when each update frame (`update_id`) is handed over
    (`eids`/`times`).

    With `preframe`, an open connection without extensions writes `frame(message)` itself,
    the same bytes websockets would write, and waits only when the transport pushes back
    (websockets' `drain`); websockets' own send path cost about 45% of the simulator's time
    (py-spy), and with it the simulator could not feed the floors fast enough."""
    original = ServerConnection.send
    now = time.time_ns

    async def send(self: ServerConnection, message, *, text=None):  # type: ignore[no-untyped-def]  # websockets' send
        if coalesce and type(self.transport) is not CoalescingTransport:  # type: ignore[comparison-overlap]  # it is, once wrapped
            self.transport = CoalescingTransport(self.transport)  # type: ignore[assignment]  # a stand-in
        if times is not None and (eid := update_id(message)) is not None:
            times.append(now())
            eids.append(eid)  # type: ignore[union-attr]  # given with times
        if (preframe and type(message) is bytes and self.protocol.state is State.OPEN
                and not self.protocol.extensions):
            self.transport.write(frame(message, bool(text)))
            await self.drain()
            return None
        return await original(self, message, text=text)

    ServerConnection.send = send  # type: ignore[method-assign,assignment]  # the hook


async def serve_whole(args: argparse.Namespace, stop: asyncio.Event) -> None:
    server.TICK_S = args.tick
    # No truth: nothing here reads it, and its ever-growing record of every change kept
    # feeding the oldest generation: full collections over it held the loop for ~14 ms.
    sim = SimExchange.whole(args.whole, busy=args.busy, rate=args.rate, depth=args.depth,
                            seed=args.seed, limits=False, record_truth=False)
    await sim.start("127.0.0.1", args.port)
    gc.collect()
    gc.freeze()  # the books are long-lived: no full collection over them mid-run
    print(f"port {sim.port}", flush=True)
    try:
        await stop.wait()
    finally:
        await sim.stop()


async def pace(sim: SimExchange, symbols: list[str], total_rate: float) -> None:
    """Publish `total_rate` updates/s, round-robin over the symbols, on a fixed schedule.

    The event loop's timers have millisecond resolution (shorter sleeps would spin), so
    every wake-up publishes the updates due by then: at 5,000/s, 5 per millisecond."""
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
        await asyncio.sleep(max(0.001, t0 + n * period - loop.time()))


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
    p.add_argument("--symbols", default="")
    p.add_argument("--whole", type=int, default=0, help="serve a whole exchange of this many symbols")
    p.add_argument("--busy", type=int, default=10, help="--whole: busy symbols")
    p.add_argument("--tick", type=float, default=0.001, help="--whole: the schedule's wake-up, s")
    p.add_argument("--depth", type=int, default=2000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rate", type=float, default=0.0, help="per symbol; 0 = maximum")
    p.add_argument("--paced", type=float, default=0.0, help="total updates/s (overrides --rate)")
    p.add_argument("--market", choices=("loop", "live"), default="loop")
    p.add_argument("--no-coalesce", action="store_true",
                   help="one socket write per frame (websockets' own behaviour)")
    p.add_argument("--no-preframe", action="store_true",
                   help="send every frame through websockets' send (slower, same bytes)")
    p.add_argument("--heartbeat", type=float, default=5.0)
    p.add_argument("--stamps", default=None)
    p.add_argument("--status", default=None)
    args = p.parse_args()
    symbols = [s for s in args.symbols.split(",") if s]
    eids, times = array.array("q"), array.array("q")
    if args.whole:
        if args.stamps:
            install_send_hooks(eids, times, coalesce=False, preframe=False, update_id=depth_update_id)

        async def whole(stop: asyncio.Event) -> None:
            try:
                await serve_whole(args, stop)
            finally:
                if args.stamps:
                    dump_arrays(args.stamps, u=eids, send_ns=times)
        run_until_signal(whole)
        return
    if not symbols:
        p.error("--symbols or --whole is required")
    install_send_hooks(eids if args.stamps else None, times if args.stamps else None,
                       coalesce=not args.no_coalesce, preframe=not args.no_preframe)

    async def run(stop: asyncio.Event) -> None:
        sim = SimExchange(symbols, seed=args.seed, rate=None if args.paced else args.rate,
                          heartbeat_s=args.heartbeat, depth=args.depth, ping_interval=None,
                          send_buffer=10_000_000, record_truth=False)
        if args.market == "loop":
            k = loop_length(len(symbols))
            for sym in symbols:
                hub = sim._hub(sym)  # the benchmark's one reach into the simulator
                hub.market = LoopMarket(hub.market, k)  # type: ignore[arg-type,assignment]  # same API
        # The tapes are millions of long-lived objects: a full collection over them stalled
        # the simulator for ~90 ms (a send stamped before the stall arrives after it, which
        # showed as collector latency). Freeze them out of the collector's view.
        gc.collect()
        gc.freeze()
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
