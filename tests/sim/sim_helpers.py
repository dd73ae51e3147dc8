"""Independent helpers for the simulator tests: a tiny dict book, a raw v1 client,
and a minimal HTTP GET. Nothing here imports the simulator's book or encoder."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect


class DictBook:
    """price string -> amount string per side; ordering by Decimal only when asked."""

    def __init__(self) -> None:
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}

    def apply(self, ev: dict[str, Any]) -> None:
        if ev.get("type") != "change":
            return
        side = self.bids if ev["side"] == "bid" else self.asks
        if Decimal(ev["remaining"]) == 0:
            side.pop(ev["price"], None)
        else:
            side[ev["price"]] = ev["remaining"]

    def apply_frame(self, frame: dict[str, Any]) -> None:
        if frame.get("socket_sequence") == 0 or any(
                e.get("reason") == "initial" for e in frame.get("events", [])):
            self.bids.clear()
            self.asks.clear()
        for ev in frame.get("events", []):
            self.apply(ev)

    def top(self, depth: int | None = None) -> tuple[list[list[str]], list[list[str]]]:
        bids = sorted(self.bids.items(), key=lambda kv: Decimal(kv[0]), reverse=True)
        asks = sorted(self.asks.items(), key=lambda kv: Decimal(kv[0]))
        if depth is not None:
            bids, asks = bids[:depth], asks[:depth]
        return [list(x) for x in bids], [list(x) for x in asks]

    def crossed(self) -> bool:
        if not self.bids or not self.asks:
            return False
        return max(map(Decimal, self.bids)) >= min(map(Decimal, self.asks))


async def recv_json(ws: ClientConnection, timeout: float = 2.0) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    msg = orjson.loads(raw)
    assert isinstance(msg, dict), raw  # every frame of both APIs is a JSON object
    return msg


async def recv_raw(ws: ClientConnection, timeout: float = 2.0) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), timeout)


async def recv_until(ws: ClientConnection, pred: Any, limit: int = 2000,
                     timeout: float = 3.0) -> list[dict[str, Any]]:
    """Receive JSON frames until pred(frame) is true; returns all frames seen."""
    seen: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(seen) < limit:
        frame = await recv_json(ws, max(0.01, deadline - loop.time()))
        seen.append(frame)
        if pred(frame):
            return seen
    raise AssertionError(f"condition not met in {limit} frames")


def ws_connect(url: str, **kw: Any) -> Any:
    kw.setdefault("open_timeout", 3)
    kw.setdefault("close_timeout", 1)
    kw.setdefault("max_size", None)
    kw.setdefault("max_queue", 10_000)  # unread frames must not stall the close handshake
    return connect(url, **kw)


async def http_get_raw(host: str, port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    """GET over a raw socket; returns (status, lower-case headers, body bytes)."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 3.0)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    return status, headers, body


async def http_get(host: str, port: int, path: str) -> tuple[int, dict[str, str], Any]:
    """Like ``http_get_raw`` with the body parsed as JSON."""
    status, headers, body = await http_get_raw(host, port, path)
    return status, headers, orjson.loads(body) if body else None
