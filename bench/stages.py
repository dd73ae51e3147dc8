"""Per-call costs of the collector's hot path, stage by stage, without sockets.

    python -m bench.stages [--frames 20000] [--depth 2000] [--json FILE]

Frames are the simulator's own (`collector.sim` market at `--depth` levels per side,
encoded as the simulator sends them: one snapshot, then update frames). Each stage runs
over all of them, best of 5, and is reported in microseconds per frame (update):

* `orjson.loads`: what the floor client does per frame;
* `v1.parse`: frame -> `Update` of slotted dataclasses (validation included);
* `book.apply`: `Book.apply` (the C side when built) of every change of the frame (parsing not included);
* `book.apply, 8 books interleaved`: the same over 8 books (other seeds) whose frames
  take turns, as 8 symbols' do in the collector: each book is cold in the caches by its
  next turn;
* `render`: `format.book(...)` with `Side.top(10)` of both sides;
* `stream.feed`: the whole core (`V1Stream.feed`, emit = every), on the core the collector
  runs (C when built) and on the pure-Python one;
* `asyncio.timeout`: entering and leaving `asyncio.timeout(15)` once (uvloop), what a
  timeout around every `recv` would cost (the feed no longer does that);
* `queue put+get`: one `Writer.offer`-style `put_nowait` plus the writer's `get_nowait`,
  on asyncio.Queue and on the writer's `LineQueue`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import orjson

from bench.common import new_loop


def make_frames(n: int, depth: int, symbol: str = "BTCUSD", seed: int = 1) -> list[bytes]:
    from collector.sim import frames as f
    from collector.sim.market import Market
    from collector.sim.symbols import spec_for

    m = Market(spec_for(symbol), seed, depth)
    sub = f.Subscription(heartbeat=True)
    out = [f.snapshot_frame(m.spec, m.bids, m.asks, m.event_id, sub, 0)]
    seq = 1
    clock = 1_764_559_146_000
    while len(out) <= n:
        u = m.step(clock)
        clock += 1
        ev = f.filtered_events(u, sub)
        if ev is None:
            continue
        out.append(f.update_frame(u, ev, seq))
        seq += 1
    return out


def best(fn: Callable[[], None], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def measure(frames: list[bytes], depth: int) -> dict[str, Any]:
    from collector.core import format
    from collector.core.book import HAVE_NATIVE as NATIVE
    from collector.core.book import Book
    from collector.gemini.v1 import Change, parse
    from collector.gemini.v1_stream import V1Stream
    from collector.runtime.linequeue import LineQueue

    updates = frames[1:]
    n = len(updates)
    parsed: list[Any] = [parse(r) for r in frames]
    snap, ups = parsed[0], parsed[1:]
    changes = sum(sum(1 for e in u.events if type(e) is Change) for u in ups)
    out: dict[str, Any] = {"frames": n, "changes_per_frame": round(changes / n, 3),
                           "mean_frame_bytes": round(sum(map(len, updates)) / n, 1)}
    us: dict[str, float] = {}

    def loads() -> None:
        for r in updates:
            orjson.loads(r)
    us["orjson.loads"] = best(loads) / n * 1e6

    def do_parse() -> None:
        for r in updates:
            parse(r)
    us["v1.parse"] = best(do_parse) / n * 1e6

    def fresh_book() -> Book:
        b = Book()
        for e in snap.events:
            b.apply(e.side, e.price, e.remaining, 10)
        return b

    def apply() -> None:
        b = book_holder[0]
        for u in ups:
            for e in u.events:
                if type(e) is Change:
                    b.apply(e.side, e.price, e.remaining, 10)
    book_holder = [fresh_book()]

    def timed_apply() -> float:
        book_holder[0] = fresh_book()
        t = time.perf_counter()
        apply()
        return time.perf_counter() - t
    us["book.apply (all changes of a frame)"] = min(timed_apply() for _ in range(5)) / n * 1e6

    # The same work across 8 books, their changes interleaved as 8 symbols' frames arrive
    # in the collector: each book's data is cold in the caches by its next turn.
    others = [[parse(r) for r in make_frames(n // 8, depth, seed=seed)] for seed in range(2, 10)]

    def timed_interleaved() -> float:
        books = []
        for frames_ in others:
            b = Book()
            for e in frames_[0].events:  # type: ignore[union-attr]  # the snapshot, an Update
                b.apply(e.side, e.price, e.remaining, 10)  # type: ignore[union-attr]  # Changes
            books.append(b)
        steps = list(zip(*(f[1:] for f in others)))  # frame i of every book, in turn
        t = time.perf_counter()
        for step in steps:
            for b, u in zip(books, step):
                for e in u.events:
                    if type(e) is Change:
                        b.apply(e.side, e.price, e.remaining, 10)
        return (time.perf_counter() - t) / (len(steps) * len(books))
    us["book.apply, 8 books interleaved"] = min(timed_interleaved() for _ in range(5)) * 1e6

    b = book_holder[0]

    def render() -> None:
        for u in ups:
            format.book("BTCUSD", u.seq, u.event_id, u.timestamp_ms, 1_764_559_146_000_000_000,
                         b.bids.top(10), b.asks.top(10))
    us["render (top 10 + format.book)"] = best(render) / n * 1e6

    def run_stream(native: bool) -> float:
        feed = V1Stream("BTCUSD", 10, True, native=native).feed
        feed(frames[0], 1_764_559_146_000_000_000)  # the snapshot, not timed
        t = time.perf_counter()
        for i, r in enumerate(updates, 1):
            feed(r, 1_764_559_146_000_000_000 + i)
        return time.perf_counter() - t

    us[f"stream.feed (parse + book + render), {'C' if NATIVE else 'Python'} core"] = min(
        run_stream(NATIVE) for _ in range(3)) / n * 1e6
    us["stream.feed, Python core"] = min(run_stream(False) for _ in range(3)) / n * 1e6

    async def timeouts() -> float:
        fut_done = asyncio.get_running_loop().create_future()
        fut_done.set_result(None)
        t = time.perf_counter()
        for _ in range(n):
            async with asyncio.timeout(15):
                await fut_done
        return time.perf_counter() - t

    async def bare() -> float:
        fut_done = asyncio.get_running_loop().create_future()
        fut_done.set_result(None)
        t = time.perf_counter()
        for _ in range(n):
            await fut_done
        return time.perf_counter() - t

    async def queue(q: Any) -> float:
        t = time.perf_counter()
        for _ in range(n):
            q.put_nowait(("BTCUSD", b"x"))
            q.get_nowait()
        return time.perf_counter() - t

    with asyncio.Runner(loop_factory=new_loop) as runner:
        us["asyncio.timeout enter+exit (uvloop)"] = max(0.0, min(
            runner.run(timeouts()) - runner.run(bare()) for _ in range(5))) / n * 1e6
        us["queue put+get (asyncio.Queue)"] = min(
            runner.run(queue(asyncio.Queue(10000))) for _ in range(5)) / n * 1e6
        us["queue put+get (LineQueue, the writer's)"] = min(
            runner.run(queue(LineQueue(10000))) for _ in range(5)) / n * 1e6

    out["us_per_frame"] = {k: round(v, 3) for k, v in us.items()}

    return out


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.stages")
    p.add_argument("--frames", type=int, default=20000)
    p.add_argument("--depth", type=int, default=2000)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    res = measure(make_frames(args.frames, args.depth), args.depth)
    res["depth"] = args.depth
    print(f"{res['frames']} update frames, {res['depth']} levels per side, "
          f"{res['changes_per_frame']} changes and {res['mean_frame_bytes']:.0f} bytes per frame")
    for k, v in res["us_per_frame"].items():
        print(f"  {v:8.3f} us  {k}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
