"""Helpers for tests/publish: a config with [publish], the whole stream read back, and
what the files hold (as `collector cat DIR` prints it)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from collector import config
from collector.core import format
from collector.runtime import segments
from collector.tools.reading import read_lines
from tests.helpers.app import Logs
from tests.helpers.e2e import FAST_FEED


def publish_config(url: str, out: Path, symbols: list[str], publish: dict[str, Any],
                   output: dict[str, Any] | None = None) -> config.Config:
    return config.from_dict({
        "feed": {"url": url, "symbols": symbols, **FAST_FEED},
        "book": {"depth": 5, "emit": "every"},
        "output": {"dir": str(out), **(output or {})},
        "log": {"level": "warning"},
        "publish": publish,
    })


def config_text(sim_url: str, out: Path, symbols: list[str], publish: dict[str, Any],
                output: dict[str, Any] | None = None) -> str:
    """The same as a config.toml, for a `collector run` process."""
    def toml(table: dict[str, Any]) -> str:
        def value(v: Any) -> str:
            if isinstance(v, bool):
                return "true" if v else "false"
            if isinstance(v, (int, float)):
                return repr(v)
            if isinstance(v, list):
                return "[" + ", ".join(value(x) for x in v) + "]"
            return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
        return "\n".join(f"{k} = {value(v)}" for k, v in table.items())
    return (f"[feed]\n{toml({'url': sim_url, 'symbols': symbols, **FAST_FEED})}\n"
            f"[book]\n{toml({'depth': 5, 'emit': 'every'})}\n"
            f"[output]\n{toml({'dir': str(out), **(output or {})})}\n"
            f"[publish]\n{toml(publish)}\n")


async def stream_messages(url: str, stream: str = "GEMINI", **connect: Any) -> list[tuple[str, str, bytes]]:
    """Every message of the stream, in stream order: (subject, Nats-Msg-Id, payload)."""
    nc = await nats.connect(url, **connect)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        total = info.state.messages
        out: list[tuple[str, str, bytes]] = []
        if not total:
            return out
        sub = await js.pull_subscribe(">", stream=stream, config=ConsumerConfig(
            deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE, mem_storage=True))
        while len(out) < total:
            for m in await sub.fetch(1000, timeout=5):
                out.append((m.subject, (m.headers or {}).get("Nats-Msg-Id", ""), m.data))
        await sub.unsubscribe()
        return out
    finally:
        await nc.close()


async def start_collector(cfg: Path, *command: str) -> tuple[asyncio.subprocess.Process, Logs]:
    """`collector run --config CFG` (or another COMMAND) as a process, its JSON log lines read."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collector", *(command or ("run",)), "--config", str(cfg),
        stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    return proc, Logs(proc.stderr)


async def run_cli(*args: str, timeout: float = 15) -> tuple[int, bytes, bytes]:
    """`collector ARGS...` to its end: (exit status, stdout, stderr)."""
    pipe = asyncio.subprocess.PIPE
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "collector", *args,
                                                stdout=pipe, stderr=pipe)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:  # timed out: leave no process behind
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out, err


async def stop(proc: asyncio.subprocess.Process, logs: Logs, sig: int = signal.SIGTERM) -> int:
    proc.send_signal(sig)
    try:
        code = await asyncio.wait_for(proc.wait(), 15)
    finally:
        if proc.returncode is None:  # it would not stop: leave no process behind
            proc.kill()
            await proc.wait()
    await logs.task
    return code


def by_subject(messages: list[tuple[str, str, bytes]]) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = defaultdict(list)
    for subject, _, data in messages:
        out[subject].append(data)
    return dict(out)


def file_lines(out: Path, symbol: str) -> list[bytes]:
    """A symbol's records as `collector cat DIR` prints them, without their newlines."""
    return [line[:-1] for line in read_lines(out, symbol)]


async def wait_for(predicate: Any, timeout: float = 20.0, what: str = "") -> None:
    """Poll an async predicate with a deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        await asyncio.sleep(0.05)


# ---- segment files made by hand (tests/publish/test_follow.py) -----------------------------

SYM = "BTCUSD"  # the files made by hand are this symbol's
T0 = 1_764_900_000  # a period start


def book(ns: int, price: str = "100") -> bytes:
    return format.book(SYM, ns, ns, ns // 10**6, ns, [(price, "1")], [("200", "1")])


def trade(ns: int) -> bytes:
    return format.trade(SYM, ns, ns, ns, "150", "0.5", "bid", False, ns // 10**6, ns)


def head(start: int = T0) -> bytes:
    return format.header(SYM, "records", start, "test", {})


def write(folder: Path, name: str, *lines: bytes, compress: str = "none") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(b"".join(lines))
    if compress != "none":
        compress_segment(folder, name, compress)


def compress_segment(folder: Path, name: str, method: str = "zstd") -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        segments.compress_at(fd, folder, name, method)
    finally:
        os.close(fd)


def seg(start: int, n: int = 1) -> str:
    return format.SegmentName(start, n, SYM).plain


