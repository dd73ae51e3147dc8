"""Small helpers shared by the benchmark's processes (no collector imports).

Per-update samples travel between processes as a file of int64 arrays: one JSON line
naming the arrays and their lengths, then each array's raw bytes in that order.
"""

from __future__ import annotations

import array
import asyncio
import json
import os
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

UPDATE_PREFIX = b'{"type":"update","eventId":'


def dump_arrays(path: str | Path, meta: dict[str, Any] | None = None,
                **arrays: array.array[Any]) -> None:
    head = {"meta": meta or {}, "arrays": {k: len(v) for k, v in arrays.items()}}
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(json.dumps(head).encode() + b"\n")
        for a in arrays.values():
            a.tofile(f)
    os.replace(tmp, path)


def load_arrays(path: str | Path) -> tuple[dict[str, Any], dict[str, array.array[Any]]]:
    with open(path, "rb") as f:
        head = json.loads(f.readline())
        out = {}
        for name, n in head["arrays"].items():
            a = array.array("q")
            a.fromfile(f, n)
            out[name] = a
    return head["meta"], out


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop, as `collector run` uses, when installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_until_signal(main: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
    """Run main(stop) on uvloop; SIGTERM/SIGINT set `stop`."""
    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    with asyncio.Runner(loop_factory=new_loop) as r:
        r.run(runner())
