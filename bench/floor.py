"""The floor client: receive and parse only, with the collector's transport.

    python -m bench.floor --url ws://127.0.0.1:P/v1/marketdata --symbols A,B \
        --out FILE [--transport websockets|picows]

One connection per symbol with the collector's URL flags; each frame is received
(`websockets`: the same `connect` options and `recv(decode=False)` as the feed;
`picows`: frames straight from its listener callback) and parsed with `orjson.loads`,
and nothing else. It notes, for each update frame after the snapshot, the eventId and
the time it finished parsing it (the time base for its latency and for the window
count). Writes them to `--out` at SIGTERM.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import time

import orjson

from bench.common import dump_arrays, run_until_signal

QUERY = "heartbeat=true&bids=true&offers=true&trades=true&auctions=true&top_of_book=false"


class Tally:
    __slots__ = ("done_ns", "eids", "frames")

    def __init__(self) -> None:
        self.eids = array.array("q")
        self.done_ns = array.array("q")
        self.frames = 0

    def dump(self, path: str, transport: str) -> None:
        dump_arrays(path, {"frames": self.frames, "transport": transport},
                    eid=self.eids, recv_ns=self.done_ns, done_ns=self.done_ns)


async def websockets_symbol(url: str, tally: Tally) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    ws = await connect(url, open_timeout=60, ping_interval=20, ping_timeout=20, close_timeout=2,
                       max_size=64 * 2**20, max_queue=64, compression=None,
                       user_agent_header=None)
    loads, now = orjson.loads, time.time_ns
    eids, done = tally.eids, tally.done_ns
    try:
        while True:
            msg = loads(await ws.recv(decode=False))
            tally.frames += 1
            if msg.get("timestampms") is not None:  # an update after the snapshot
                done.append(now())
                eids.append(msg["eventId"])
            if not tally.frames % 256:  # let the loop run (signals, other symbols) under backlog
                await asyncio.sleep(0)
    except ConnectionClosed:
        pass


async def picows_symbol(url: str, tally: Tally) -> None:
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    loads, now = orjson.loads, time.time_ns
    eids, done = tally.eids, tally.done_ns
    closed = asyncio.get_running_loop().create_future()

    class Listener(WSListener):
        def __init__(self) -> None:
            self.parts: list[bytes] = []

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            kind = frame.msg_type
            if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY or kind is WSMsgType.CONTINUATION:
                if not frame.fin or self.parts:  # a fragmented message: reassemble
                    self.parts.append(frame.get_payload_as_bytes())
                    if not frame.fin:
                        return
                    data: bytes | memoryview = b"".join(self.parts)
                    self.parts = []
                else:
                    data = frame.get_payload_as_memoryview()
                msg = loads(data)
                tally.frames += 1
                if msg.get("timestampms") is not None:
                    done.append(now())
                    eids.append(msg["eventId"])
            elif kind is WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            if not closed.done():
                closed.set_result(None)

    transport, _ = await ws_connect(Listener, url, websocket_handshake_timeout=60,
                                    max_frame_size=64 * 2**20)
    try:
        await closed
    finally:
        transport.disconnect()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.floor")
    p.add_argument("--url", required=True, help="base URL, e.g. ws://127.0.0.1:8765/v1/marketdata")
    p.add_argument("--symbols", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--transport", choices=("websockets", "picows"), default="websockets")
    args = p.parse_args()
    tally = Tally()
    one = websockets_symbol if args.transport == "websockets" else picows_symbol

    async def run(stop: asyncio.Event) -> None:
        tasks = [asyncio.create_task(one(f"{args.url}/{s}?{QUERY}", tally))
                 for s in args.symbols.split(",") if s]
        await stop.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        tally.dump(args.out, args.transport)

    run_until_signal(run)


if __name__ == "__main__":
    main()
