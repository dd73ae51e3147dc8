"""Prometheus metrics, /healthz and `collector health`.

The end-to-end test runs the real App against the simulator with a Monitor
listening beside it; the subprocess test (the `collector run` process serving
[metrics] listen, `collector health` probing it) needs the integration in
collector/runtime/app.py, cli.py and config.py, and skips until it is there.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

import collector.runtime.app
from collector import config
from collector.config import parse_listen
from collector.core.health import Problem
from collector.core.histogram import Histogram
from collector.ops.heartbeat import HEALTH_FILE, probe, read_heartbeat, write_heartbeat
from collector.ops.metrics import MetricsServer
from collector.ops.monitor import Monitor
from collector.runtime.feed import FeedState, FeedStats
from collector.runtime.writer import Writer
from collector.sim import SimExchange
from tests.helpers.e2e import make_config, running, wait_until

INTEGRATED = hasattr(collector.runtime.app, "Monitor")


async def http_get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]  # (name, labels) -> value


def samples(text: str) -> Samples:
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(series: Samples, name: str, **labels: str) -> float:
    return series[(name, frozenset(labels.items()))]


# ---- the histogram -------------------------------------------------------------------------

def test_histogram_buckets_are_cumulative_with_prometheus_le():
    h = Histogram((1, 5, 10), scale=0.001)
    for v in (-3, 0, 1, 2, 5, 6, 10, 11, 5000):
        h.observe(v)
    assert h.cumulative() == [("0.001", 3), ("0.005", 5), ("0.01", 7), ("+Inf", 9)]
    assert h.count == 9 and h.sum == 0 + 1 + 2 + 5 + 6 + 10 + 11 + 5000  # a negative adds nothing


# ---- the collector and the HTTP server, on a still App ---------------------------------------

def still_app(tmp_path: Path) -> SimpleNamespace:
    cfg = config.from_dict({"feed": {"symbols": ["BTCUSD", "ETHUSD"], "stale_after_s": 5.0},
                            "output": {"dir": str(tmp_path)}})
    btc = FeedStats(state=FeedState.LIVE, last_frame=time.monotonic(), updates=120, trades=7, connects=3)
    btc.resyncs.update(stale=1, closed=2)
    btc.marked.update(stale=1)
    btc.unknown.update(mystery=1)
    btc.latency = Histogram()
    for ms in (3, 40, 40, 700):
        btc.latency.observe(ms)
    eth = FeedStats()
    writer = Writer(cfg.output)
    writer.bytes_written.update({"BTCUSD": 1000, "ETHUSD": 24})
    writer.lines_written.update({"BTCUSD": 10, "ETHUSD": 1})
    writer.free_bytes = 5 * 2**30
    writer.write_latency = Histogram((0.001, 0.01), scale=1.0)
    writer.write_latency.observe(0.002)
    writer.queue_wait_s = 1.5
    writer.queue.put_nowait(("BTCUSD", b"{}\n"))
    feeds = {"BTCUSD": SimpleNamespace(stats=btc, _levels=lambda: {"bids": 500, "asks": 498}),
             "ETHUSD": SimpleNamespace(stats=eth, _levels=dict)}
    return SimpleNamespace(cfg=cfg, feeds=feeds, writer=writer)


async def test_metrics_and_healthz_over_http(tmp_path):
    app = still_app(tmp_path)
    monitor = Monitor(app, listen="127.0.0.1:0")
    await monitor.start()
    try:
        assert monitor.server is not None  # listening
        port = monitor.server.port
        status, headers, body = await http_get(port, "/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=")
        s = samples(body.decode())
        assert value(s, "collector_updates_total", symbol="BTCUSD") == 120
        assert value(s, "collector_trades_total", symbol="BTCUSD") == 7
        assert value(s, "collector_resyncs_total", symbol="BTCUSD", reason="closed") == 2
        assert value(s, "collector_resync_records_total", symbol="BTCUSD", reason="stale") == 1
        assert value(s, "collector_reconnects_total", symbol="BTCUSD") == 2
        assert value(s, "collector_unknown_events_total", symbol="BTCUSD", kind="mystery") == 1
        assert value(s, "collector_stream_live", symbol="BTCUSD") == 1
        assert value(s, "collector_stream_live", symbol="ETHUSD") == 0
        assert 0 <= value(s, "collector_last_frame_age_seconds", symbol="BTCUSD") < 5
        assert value(s, "collector_book_levels", symbol="BTCUSD", side="asks") == 498
        assert value(s, "collector_book_levels", symbol="ETHUSD", side="bids") == 0
        assert value(s, "collector_exchange_latency_seconds_bucket", symbol="BTCUSD", le="0.005") == 1
        assert value(s, "collector_exchange_latency_seconds_bucket", symbol="BTCUSD", le="0.05") == 3
        assert value(s, "collector_exchange_latency_seconds_count", symbol="BTCUSD") == 4
        assert value(s, "collector_exchange_latency_seconds_sum", symbol="BTCUSD") == pytest.approx(0.783)
        assert value(s, "collector_queue_depth") == 1
        assert value(s, "collector_queue_capacity") == 10000
        assert value(s, "collector_queue_full_wait_seconds_total") == 1.5
        assert value(s, "collector_write_seconds_bucket", le="0.01") == 1
        assert value(s, "collector_written_bytes_total") == 1024
        assert value(s, "collector_written_lines_total") == 11
        assert value(s, "collector_free_disk_bytes") == 5 * 2**30
        assert value(s, "collector_healthy") == 0  # ETHUSD is down
        assert value(s, "collector_info", version=collector.__version__) == 1
        assert any(name.startswith("process_") for name, _ in s)

        status, headers, body = await http_get(port, "/healthz")
        assert status == 503 and headers["Content-Type"] == "application/json"
        assert orjson.loads(body) == {"status": "unhealthy", "problems": [
            {"kind": "stream_down", "symbol": "ETHUSD",
             "detail": orjson.loads(body)["problems"][0]["detail"]}]}
        app.feeds["ETHUSD"].stats.state = FeedState.LIVE
        app.feeds["ETHUSD"].stats.last_frame = time.monotonic()
        status, _, body = await http_get(port, "/healthz")
        assert (status, orjson.loads(body)) == (200, {"status": "ok", "problems": []})

        assert (await http_get(port, "/healthz", "HEAD"))[::2] == (200, b"")
        assert (await http_get(port, "/nope"))[0] == 404
        assert (await http_get(port, "/metrics", "POST"))[0] == 405
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"nonsense\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.1 400 ")
        writer.close()
    finally:
        await monitor.close()


async def test_without_the_writer_additions_their_series_are_left_out(tmp_path):
    app = still_app(tmp_path)
    del app.writer.write_latency, app.writer.queue_wait_s
    server = MetricsServer(app, Monitor(app))
    await server.start("127.0.0.1", 0)
    try:
        _, _, body = await http_get(server.port, "/metrics")
    finally:
        await server.close()
    names = {name for name, _ in samples(body.decode())}
    assert "collector_queue_depth" in names
    assert not any(n.startswith(("collector_write_seconds", "collector_queue_full_wait_seconds"))
                   for n in names)


async def test_metrics_are_generated_off_the_loop_and_a_scrape_storm_costs_no_more(tmp_path):
    """A slow exposition (hundreds of symbols: about 100 ms) runs in a thread, so the
    loop keeps its pace; clients asking meanwhile share one, and a finished one is reused
    for 9x as long as it took."""
    import threading

    app = still_app(tmp_path)
    server = MetricsServer(app, Monitor(app))
    runs: list[str] = []

    class Slow:
        def collect(self):
            runs.append(threading.current_thread().name)
            time.sleep(0.1)
            return []

    server.registry.register(Slow())
    await server.start("127.0.0.1", 0)
    lag = 0.0

    async def ticker() -> None:
        nonlocal lag
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.005)
            lag = max(lag, time.monotonic() - t - 0.005)

    tick = asyncio.create_task(ticker())
    try:
        first = await asyncio.gather(*(http_get(server.port, "/metrics") for _ in range(20)))
        assert {status for status, _, _ in first} == {200}
        storm_until = time.monotonic() + 1.0
        while time.monotonic() < storm_until:
            assert (await http_get(server.port, "/metrics"))[0] == 200
    finally:
        tick.cancel()
        await server.close()
    assert threading.main_thread().name not in runs
    assert 2 <= len(runs) <= 4, runs  # 20 at once: one run; then one a second at most 1 / (0.1 * 10)
    assert lag < 0.05, lag  # on the loop, each run would have held it for 100 ms


def test_a_busy_port_is_an_error_at_start(tmp_path):
    async def main() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            monitor = Monitor(still_app(tmp_path), listen=f"127.0.0.1:{taken.getsockname()[1]}")
            with pytest.raises(OSError):
                await monitor.start()

    asyncio.run(main())


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:9464", ("127.0.0.1", 9464)),
    ("0.0.0.0:9464", ("0.0.0.0", 9464)),
    ("[::1]:9464", ("::1", 9464)),
    ("localhost:0", ("localhost", 0)),
])
def test_parse_listen(text, expected):
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["9464", ":9464", "127.0.0.1", "127.0.0.1:99999", "::1:9464",
                                  "127.0.0.1:http"])
def test_parse_listen_rejects(text):
    with pytest.raises(ValueError):
        parse_listen(text)


# ---- `collector health` ----------------------------------------------------------------------

async def test_probe_asks_healthz(tmp_path):
    app = still_app(tmp_path)
    monitor = Monitor(app, listen="127.0.0.1:0")
    await monitor.start()
    try:
        assert monitor.server is not None  # listening
        listen = f"127.0.0.1:{monitor.server.port}"
        ok, text = await asyncio.to_thread(probe, listen, tmp_path)
        assert not ok and "ETHUSD" in text
        app.feeds["ETHUSD"].stats.state = FeedState.LIVE
        app.feeds["ETHUSD"].stats.last_frame = time.monotonic()
        assert await asyncio.to_thread(probe, listen, tmp_path) == (True, '{"status":"ok","problems":[]}')
    finally:
        await monitor.close()
    ok, text = await asyncio.to_thread(probe, listen, tmp_path, 2.0)  # nobody listens now
    assert not ok and listen in text


def test_probe_reads_the_heartbeat_file_when_metrics_are_off(tmp_path):
    path = tmp_path / HEALTH_FILE
    assert not probe("", tmp_path)[0]  # no file: not running
    write_heartbeat(path, [], time.time())
    assert probe("", tmp_path) == (True, '{"status":"ok","problems":[],"age_s":0.0}')
    write_heartbeat(path, [Problem("stream_down", "stream not live", "BTCUSD")], time.time())
    ok, text = probe("", tmp_path)
    assert not ok and orjson.loads(text)["problems"][0]["symbol"] == "BTCUSD"
    write_heartbeat(path, [], time.time() - 60)
    ok, text = read_heartbeat(path, time.time())
    assert not ok and "60 s old" in text
    path.write_text("{")
    assert not probe("", tmp_path)[0]


async def test_the_monitor_keeps_the_heartbeat_file_and_removes_it_at_the_end(tmp_path):
    app = still_app(tmp_path)
    monitor = Monitor(app)  # no listener: heartbeat file
    await monitor.start()
    try:
        await wait_until(lambda: (tmp_path / HEALTH_FILE).exists(), what="heartbeat file")
        ok, text = probe("", tmp_path)
        assert not ok and "ETHUSD" in text
    finally:
        await monitor.close()
    assert not (tmp_path / HEALTH_FILE).exists()


# ---- against the simulator -------------------------------------------------------------------

async def test_series_move_and_healthz_follows_a_stall_and_its_resync(tmp_path):
    symbols = ["BTCUSD", "ETHUSD"]
    async with SimExchange(symbols, seed=11, rate=100.0, heartbeat_s=0.05) as sim:
        cfg = make_config(sim.ws_url, tmp_path, symbols)
        async with running(cfg) as app:
            monitor = Monitor(app, listen="127.0.0.1:0")
            await monitor.start()
            try:
                assert monitor.server is not None  # listening
                port = monitor.server.port

                async def scrape() -> Samples:
                    status, _, body = await http_get(port, "/metrics")
                    assert status == 200
                    return samples(body.decode())

                await healthz_becomes(port, 200, "both streams live")
                first = await scrape()
                await wait_until(lambda: all(app.feeds[s].stats.updates >= value(
                    first, "collector_updates_total", symbol=s) + 50 for s in symbols))
                second = await scrape()
                for s in symbols:
                    for series in ("collector_updates_total", "collector_trades_total"):
                        assert value(second, series, symbol=s) > value(first, series, symbol=s)
                    assert value(second, "collector_stream_live", symbol=s) == 1
                    assert value(second, "collector_last_frame_age_seconds", symbol=s) < 1.0
                    assert value(second, "collector_book_levels", symbol=s, side="bids") > 100
                assert value(second, "collector_written_lines_total") > value(
                    first, "collector_written_lines_total")

                # BTCUSD stalls: stale after feed.stale_after_s (1 s here), then a resync whose
                # snapshot comes 0.7 s late, so the 503 lasts long enough to be seen.
                sim.inject("BTCUSD", "stall")
                sim.inject("BTCUSD", "slow_snapshot", delay=0.7)
                body = await healthz_becomes(port, 503, "BTCUSD unhealthy")
                problems = orjson.loads(body)["problems"]
                assert [(p["kind"], p["symbol"]) for p in problems] == [("stream_down", "BTCUSD")]
                assert "stale" in problems[0]["detail"]
                await healthz_becomes(port, 200, "BTCUSD live again")
                third = await scrape()
                assert value(third, "collector_resyncs_total", symbol="BTCUSD", reason="stale") == 1
                assert value(third, "collector_resync_records_total", symbol="BTCUSD", reason="stale") == 1
                assert value(third, "collector_reconnects_total", symbol="BTCUSD") == 1
                assert value(third, "collector_reconnects_total", symbol="ETHUSD") == 0
            finally:
                await monitor.close()


async def healthz_becomes(port: int, want: int, what: str, timeout: float = 10.0) -> bytes:
    """Poll /healthz until it answers `want`; return that body."""
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = await http_get(port, "/healthz")
        if status == want:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}: {status} {body!r}")
        await asyncio.sleep(0.01)


# ---- the real process ------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def collector_health(cfg: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collector", "health", "--config", str(cfg),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@pytest.mark.skipif(not INTEGRATED, reason="needs app integration (Monitor in collector/runtime/app.py)")
@pytest.mark.parametrize("listen", [True, False], ids=["metrics", "heartbeat-file"])
async def test_collector_run_serves_metrics_and_collector_health_probes_it(tmp_path, listen):
    from tests.helpers.app import write_config

    async with SimExchange(["BTCUSD"], seed=12, rate=100.0, heartbeat_s=0.05) as sim:
        cfg, out = tmp_path / "config.toml", tmp_path / "data"
        write_config(cfg, sim.ws_url, out, ["BTCUSD"])
        port = free_port()
        if listen:
            cfg.write_text(cfg.read_text() + f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
        assert (await collector_health(cfg))[0] == 1  # not running
        with open(tmp_path / "stderr.log", "wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "collector", "run", "--config", str(cfg),
                env={**os.environ}, stderr=err)
        try:
            deadline = time.monotonic() + 20
            while (result := await collector_health(cfg))[0] != 0:
                assert time.monotonic() < deadline, result
            assert '"status":"ok"' in result[1]
            if listen:
                status, _, body = await http_get(port, "/metrics")
                assert status == 200 and b'collector_updates_total{symbol="BTCUSD"}' in body
            sim.inject("BTCUSD", "stall")  # then every reconnection is refused: down for good
            sim.inject("BTCUSD", "refuse", count=10**6, retry_after=0.5, status=503)
            deadline = time.monotonic() + 20
            while (result := await collector_health(cfg))[0] != 1:
                assert time.monotonic() < deadline, result
            assert "BTCUSD" in result[1]
        finally:
            if proc.returncode is None:
                proc.terminate()
            assert await asyncio.wait_for(proc.wait(), 10) == 0
        assert not (out / HEALTH_FILE).exists()


@pytest.mark.skipif(not INTEGRATED, reason="needs the [metrics] and [health] config sections")
@pytest.mark.parametrize(("section", "why"), [
    ({"metrics": {"listen": "localhost"}}, "metrics.listen: not HOST:PORT"),
    ({"metrics": {"listen": "127.0.0.1:70000"}}, "metrics.listen: not HOST:PORT"),
    ({"health": {"writer_stuck_s": 0}}, "health.writer_stuck_s: must be greater than 0"),
    ({"health": {"writer_stuck_s": 60, "exit_after_s": 30}},
     "health.exit_after_s: must be at least health.writer_stuck_s"),
])
def test_config_rejects_bad_metrics_and_health_keys(section, why):
    with pytest.raises(config.ConfigError, match=why.replace(".", r"\.")):
        config.from_dict({"feed": {"symbols": ["BTCUSD"]}, **section})


@pytest.mark.skipif(not INTEGRATED, reason="needs the `collector health` command")
async def test_collector_health_exits_1_on_a_bad_config(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[feed]\nsymbols = ["BTCUSD"]\n[metrics]\nlisten = "nope"\n')
    status, out = await collector_health(cfg)
    assert status == 1 and "metrics.listen" in out
