"""The stream equals the files, record for record per symbol, each once: a real
`collector run` process against the simulator and a real nats-server, through a NATS
kill -9 and restart, a collector kill -9 and restart, and rotations with zstd."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import orjson

from collector.sim import SimExchange
from tests.helpers.nats_server import NatsServer, free_port
from tests.helpers.publish import (
    by_subject,
    config_text,
    file_lines,
    start_collector,
    stop,
    stream_messages,
    wait_for,
)

SYMBOLS = ["BTCUSD", "ETHUSD"]


async def count(url: str) -> int:
    try:
        return len(await stream_messages(url))
    except Exception:  # not up yet
        return 0


def assert_stream_equals_files(messages: list[tuple[str, str, bytes]], out: Path) -> None:
    ids = [mid for _, mid, _ in messages]
    assert len(ids) == len(set(ids)), "a message id twice"
    subjects = by_subject(messages)
    assert set(subjects) == {f"gemini.{s}" for s in SYMBOLS}
    for symbol in SYMBOLS:
        lines = file_lines(out, symbol)
        got = subjects[f"gemini.{symbol}"]
        assert len(got) == len(set(got)), f"{symbol}: a record twice"
        assert got == lines, f"{symbol}: {len(got)} in the stream, {len(lines)} in the files"


async def test_nats_killed_and_restarted_mid_run(tmp_path, nats_server: NatsServer):
    out, cfg = tmp_path / "data", tmp_path / "config.toml"
    metrics = free_port()
    async with SimExchange(SYMBOLS, seed=21, rate=400.0, depth=20, heartbeat_s=0.05) as sim:
        cfg.write_text(config_text(sim.ws_url, out, SYMBOLS, {"url": nats_server.url, "stuck_s": 1.0},
                                   output={"rotate": "1s", "compress": "zstd"})
                       + f'[metrics]\nlisten = "127.0.0.1:{metrics}"\n')
        proc, logs = await start_collector(cfg)
        try:
            await wait_for(lambda: _more(nats_server.url, 300), what="records in the stream")
            up_since = time.time_ns()
            await asyncio.sleep(1.0)
            nats_server.kill()  # kill -9: NATS gone mid-run
            down_at = time.time_ns()
            await asyncio.sleep(2.0)
            health = await _get(metrics, "/healthz")
            scrape = (await _get(metrics, "/metrics")).decode()
            nats_server.start()
            up_at = time.time_ns()
            await asyncio.sleep(0.3)
        finally:
            code = await stop(proc, logs)  # SIGTERM: catches up with the files before it exits
        assert code == 0
    assert b'"publish_stuck"' in health and b'"stream_down"' not in health  # recording healthy
    assert "collector_publish_connected 0.0" in scrape
    assert 'collector_publish_lag_records{stream="records",symbol="BTCUSD"} 0.0' not in scrape
    for symbol in SYMBOLS:  # the feeds kept recording at full rate, without delay, while NATS was down
        recs = [orjson.loads(line) for line in file_lines(out, symbol)]
        times = [r["recv_ns"] for r in recs]
        before = sum(up_since <= t < down_at for t in times) / ((down_at - up_since) / 1e9)
        during = sum(down_at <= t < up_at for t in times) / ((up_at - down_at) / 1e9)
        assert during > 0.8 * before, (symbol, before, during)
        delays = sorted(r["recv_ns"] - r["exchange_ms"] * 10**6 for r in recs
                        if r["type"] == "book" and r["exchange_ms"] and down_at <= r["recv_ns"] < up_at)
        assert delays[len(delays) // 2] < 100 * 10**6, "frames were received late: the loop was held up"
    assert_stream_equals_files(await stream_messages(nats_server.url), out)


async def test_collector_killed_9_and_restarted(tmp_path, nats_server: NatsServer):
    out, cfg = tmp_path / "data", tmp_path / "config.toml"
    async with SimExchange(SYMBOLS, seed=22, rate=400.0, depth=20, heartbeat_s=0.05) as sim:
        cfg.write_text(config_text(sim.ws_url, out, SYMBOLS, {"url": nats_server.url},
                                   output={"rotate": "1s", "compress": "zstd"}))
        proc, logs = await start_collector(cfg)
        try:
            await wait_for(lambda: _more(nats_server.url, 500), what="records in the stream")
        finally:
            assert await stop(proc, logs, signal.SIGKILL) == -9
        before = await count(nats_server.url)
        proc, logs = await start_collector(cfg)
        try:
            await wait_for(lambda: _more(nats_server.url, before + 500), what="more records")
        finally:
            assert await stop(proc, logs) == 0
    assert (out / "BTCUSD" / ".published").is_file()
    assert_stream_equals_files(await stream_messages(nats_server.url), out)


async def _more(url: str, n: int) -> bool:
    return await count(url) >= n


async def _get(port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    return data.partition(b"\r\n\r\n")[2]
