"""The original crawler's algorithm, for comparison (same transport as the collector).

    python -m bench.crawler --url ws://127.0.0.1:P/v1/marketdata --symbols A,B \
        --dir DIR --out FILE

Per message, as the crawler this project replaces did it: `json.loads`; the book is a
dict per side keyed by `float(price)`; after every message both sides are sorted and
truncated to 10 levels, the result deep-copied and `json.dumps`-ed, and the symbol's file
is opened, appended to and closed. It notes, for each update frame after the snapshot,
the eventId, the receive time and the time its line was appended; written to `--out` at
SIGTERM.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import copy
import json
import os
import time

from bench.common import dump_arrays, run_until_signal
from bench.floor import QUERY

DEPTH = 10


class Samples:
    def __init__(self) -> None:
        self.eids = array.array("q")
        self.recv_ns = array.array("q")
        self.done_ns = array.array("q")
        self.frames = 0


async def crawl(url: str, symbol: str, path: str, s: Samples) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    ws = await connect(url, open_timeout=60, ping_interval=20, ping_timeout=20, close_timeout=2,
                       max_size=64 * 2**20, max_queue=64, compression=None,
                       user_agent_header=None)
    book: dict[str, dict[float, float]] = {"bid": {}, "ask": {}}
    try:
        while True:
            raw = await ws.recv()
            t_recv = time.time_ns()
            msg = json.loads(raw)
            s.frames += 1
            if not s.frames % 64:  # let the loop run (signals, other symbols) under backlog
                await asyncio.sleep(0)
            if msg.get("type") != "update":
                continue
            for ev in msg["events"]:
                if ev["type"] == "change":
                    side = book[ev["side"]]
                    price, size = float(ev["price"]), float(ev["remaining"])
                    if size == 0.0:
                        side.pop(price, None)
                    else:
                        side[price] = size
            bids = sorted(book["bid"].items(), key=lambda kv: kv[0], reverse=True)[:DEPTH]
            asks = sorted(book["ask"].items(), key=lambda kv: kv[0])[:DEPTH]
            snap = copy.deepcopy({"bids": bids, "asks": asks})
            line = json.dumps({"symbol": symbol, "event_id": msg["eventId"],
                               "timestampms": msg.get("timestampms"), "recv_ns": t_recv,
                               "bids": snap["bids"], "asks": snap["asks"]})
            with open(path, "a") as f:
                f.write(line + "\n")
            if msg.get("timestampms") is not None:
                s.done_ns.append(time.time_ns())
                s.recv_ns.append(t_recv)
                s.eids.append(msg["eventId"])
    except ConnectionClosed:
        pass


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.crawler")
    p.add_argument("--url", required=True)
    p.add_argument("--symbols", required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    s = Samples()

    async def run(stop: asyncio.Event) -> None:
        tasks = [asyncio.create_task(crawl(f"{args.url}/{sym}?{QUERY}", sym,
                                           os.path.join(args.dir, f"{sym}.jsonl"), s))
                 for sym in args.symbols.split(",") if sym]
        await stop.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        dump_arrays(args.out, {"frames": s.frames}, eid=s.eids, recv_ns=s.recv_ns,
                    done_ns=s.done_ns)

    run_until_signal(run)


if __name__ == "__main__":
    main()
