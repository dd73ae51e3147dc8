"""The publisher in a process of its own (collector/publish/service.py, supervisor.py): it
runs beside the collector and dies with it, is started again when it dies, runs alone as
`collector publish`, and its status file is read as untrusted input."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import orjson
import structlog

from collector import config
from collector.publish import status as pstatus
from collector.publish.status import Status, StreamStatus
from collector.publish.supervisor import PublisherProcess
from collector.sim import SimExchange
from tests.helpers.e2e import running, wait_until
from tests.helpers.nats_server import NatsServer
from tests.helpers.publish import (
    by_subject,
    config_text,
    file_lines,
    publish_config,
    run_cli,
    start_collector,
    stop,
    stream_messages,
    wait_for,
)

DOWN = "ws://127.0.0.1:9/v1/marketdata"  # no exchange: for configs whose feeds do not matter


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process; None once it is gone (a zombie is gone too)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = text.rpartition(")")[2].split()[:2]
    return None if state in ("Z", "X") else (state, int(ppid))


def status_file(out: Path) -> dict[str, Any] | None:
    try:
        rec: dict[str, Any] = orjson.loads((out / pstatus.STATUS_NAME).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return rec


async def published(url: str, n: int) -> bool:
    try:
        return len(await stream_messages(url)) >= n
    except Exception:
        return False


async def test_the_publisher_runs_apart_and_dies_with_the_collector(tmp_path, nats_server: NatsServer):
    out, cfg = tmp_path / "data", tmp_path / "config.toml"
    async with SimExchange(["BTCUSD"], seed=31, rate=300.0, depth=20) as sim:
        cfg.write_text(config_text(sim.ws_url, out, ["BTCUSD"], {"url": nats_server.url}))
        proc, logs = await start_collector(cfg)
        try:
            await wait_for(lambda: published(nats_server.url, 200), what="records in the stream")
            status = status_file(out)
            assert status is not None
            child = status["pid"]
            assert child != proc.pid and proc_stat(child) is not None
            assert proc_stat(child)[1] == proc.pid  # type: ignore[index]  # the collector's child
            niceness = os.getpriority(os.PRIO_PROCESS, proc.pid)
            assert os.getpriority(os.PRIO_PROCESS, child) == min(19, niceness + 10)  # publish.nice
            # a stray SIGHUP (a terminal closing) is the collector's to handle: the child goes on
            os.kill(child, signal.SIGHUP)
            seq = status["seq"]

            async def reports_on() -> bool:
                now = status_file(out)
                return now is not None and now["seq"] > seq + 2
            await wait_for(reports_on, timeout=10, what="the publisher reporting after SIGHUP")
            assert proc_stat(child) is not None
        finally:
            code = await stop(proc, logs, signal.SIGKILL)
        assert code == -signal.SIGKILL

        async def gone() -> bool:
            return proc_stat(child) is None
        await wait_for(gone, timeout=5, what="the publisher to die with the collector")
    started = [r for r in logs.lines if r.get("event") == "publisher started"]
    assert started and started[0]["process"] == "publisher"  # its lines join the collector's stderr


async def test_a_publisher_that_dies_is_started_again(tmp_path, nats_server: NatsServer):
    out = tmp_path / "data"
    seen: list[float] = []
    async with SimExchange(["BTCUSD"], seed=32, rate=300.0, depth=20) as sim:
        cfg = publish_config(sim.ws_url, out, ["BTCUSD"], {"url": nats_server.url})
        async with running(cfg) as app:
            pub = app.publisher
            assert isinstance(pub, PublisherProcess)

            def count(n: float) -> bool:
                seen.append(pub.stats().get("BTCUSD", {}).get("published", 0.0))
                return seen[-1] > n
            await wait_until(lambda: count(100) and pub.proc is not None, timeout=20)
            assert pub.proc is not None
            first, before = pub.proc.pid, seen[-1]
            os.kill(first, signal.SIGKILL)
            # sampled all along: the counter must not drop while no process runs, nor after
            await wait_until(lambda: count(before + 200) and pub.restarts == 1 and pub.proc is not None
                             and pub.proc.pid != first and pub.connected, timeout=20,
                             what="a new publisher process, publishing")
    assert seen == sorted(seen), "the published counter went back"
    messages = await stream_messages(nats_server.url)
    assert by_subject(messages)["gemini.BTCUSD"] == file_lines(out, "BTCUSD")


async def test_collector_publish_alone(tmp_path, nats_server: NatsServer):
    """By hand or as its own unit: it publishes what is there, holds the directory against a
    second publisher, is read by a collector with publish.spawn = false, and on SIGTERM
    exits 0 with the stream equal to the files."""
    out, path, off = tmp_path / "data", tmp_path / "config.toml", tmp_path / "off.toml"
    sim = SimExchange(["BTCUSD"], seed=33, rate=300.0, depth=20)
    async with sim, running(publish_config(sim.ws_url, out, ["BTCUSD"], {"url": ""})) as app:
        await wait_until(lambda: app.writer.lines_written["BTCUSD"] > 300, timeout=20)
    lines = file_lines(out, "BTCUSD")
    off.write_text(config_text(DOWN, out, ["BTCUSD"], {"url": ""}))
    code, _, err = await run_cli("publish", "--config", str(off))
    assert code == config.EX_CONFIG and b"publish.url: empty" in err
    path.write_text(config_text(DOWN, out, ["BTCUSD"], {"url": nats_server.url}))
    proc, logs = await start_collector(path, "publish")
    try:
        await wait_for(lambda: published(nats_server.url, len(lines)), what="the files in the stream")
        second, second_logs = await start_collector(path, "publish")
        try:
            assert await asyncio.wait_for(second.wait(), 15) == 75
        finally:
            if second.returncode is None:
                second.kill()
        await second_logs.task
        assert "another publisher" in second_logs.first("output directory already published")["error"]
        watching = publish_config(DOWN, out, ["BTCUSD"], {"url": nats_server.url, "spawn": False})
        async with running(watching) as app:
            pub = app.publisher
            assert isinstance(pub, PublisherProcess)
            # (this collector writes a few records too: its feed cannot connect)
            await wait_until(lambda: pub.connected and pub.stats()["BTCUSD"]["published"] >= len(lines))
            assert pub.proc is None and "lag_records" not in pub.stats()["BTCUSD"]  # another run's counts
    finally:
        code = await stop(proc, logs)
    assert code == 0
    assert by_subject(await stream_messages(nats_server.url))["gemini.BTCUSD"] == file_lines(out, "BTCUSD")
    assert status_file(out)["stopped"] is True  # type: ignore[index]


def _status(run_ns: int, pid: int, seq: int, streams: dict[str, StreamStatus]) -> bytes:
    return pstatus.encode(Status(pid=pid, seq=seq, run_ns=run_ns, at_ns=run_ns, connected=True, errors=0,
                                 last_error=None, idle_s=0.0, down_s=0.0, streams=streams))


async def test_a_hostile_status_file_is_refused_and_survived(tmp_path):
    """Garbage, a file too large, too many streams, a symlink, a FIFO, or (for a spawned
    publisher) another process's status: refused, logged once each, the last good one kept."""
    cfg = publish_config(DOWN, tmp_path, ["BTCUSD"], {"url": "nats://127.0.0.1:4222", "spawn": False})
    pub = PublisherProcess(cfg, written=lambda: {"BTCUSD": 120})
    path = tmp_path / pstatus.STATUS_NAME
    path.write_bytes(_status(pub.run_ns, 4242, 1, {"BTCUSD": StreamStatus(100, 100, 0, 0, None)}))
    await pub._read_once()
    good = pub.stats()
    assert pub.connected and good["BTCUSD"]["published"] == 100 and good["BTCUSD"]["lag_records"] == 20
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_bytes(_status(pub.run_ns, 4242, 9, {"EVIL": StreamStatus(1, 1, 0, 0, None)}))
    too_many = {f"S{i}": StreamStatus() for i in range(pstatus.MAX_STREAMS + 1)}

    def symlink() -> None:
        path.unlink()
        path.symlink_to(elsewhere)

    def fifo() -> None:
        path.unlink()
        os.mkfifo(path)

    hostile = [lambda: path.write_bytes(b"\x00garbage{"),
               lambda: path.write_bytes(b"{" + b" " * pstatus.MAX_STATUS_BYTES + b"}"),
               lambda: path.write_bytes(_status(pub.run_ns, 4242, 5, too_many)),
               symlink, fifo]
    with structlog.testing.capture_logs() as captured:
        for make in hostile:
            make()
            await pub._read_once()
            await pub._read_once()  # the same refusal twice: logged once
            assert pub.stats().keys() == good.keys() and pub.stats()["BTCUSD"]["published"] == 100
    refusals = [e for e in captured if e["event"] == "publisher status file refused"]
    assert len(refusals) == len(hostile)
    assert any("symbolic link" in e["error"] for e in refusals)
    spawned = PublisherProcess(publish_config(DOWN, tmp_path, ["BTCUSD"], {"url": "nats://127.0.0.1:4222"}))
    path.unlink()
    path.write_bytes(_status(spawned.run_ns, 4242, 1, {"BTCUSD": StreamStatus(100, 100, 0, 0, None)}))
    await spawned._read_once()
    assert spawned.status is None and not spawned.connected  # not its process's


async def test_a_publisher_left_running_by_hand_is_waited_for(tmp_path, nats_server: NatsServer):
    """Another publisher holds the directory: the collector's child exits 75 and is started
    again (not taken as a config error) until the directory is free."""
    out, path = tmp_path / "data", tmp_path / "config.toml"
    out.mkdir()
    path.write_text(config_text(DOWN, out, ["BTCUSD"], {"url": nats_server.url}))
    alone, logs = await start_collector(path, "publish")
    try:
        async def reporting() -> bool:
            return status_file(out) is not None
        await wait_for(reporting, what="the first publisher")
        async with running(publish_config(DOWN, out, ["BTCUSD"], {"url": nats_server.url})) as app:
            pub = app.publisher
            assert isinstance(pub, PublisherProcess)
            await wait_until(lambda: pub.restarts >= 1 and pub.exited == 75, timeout=10)
            assert app.exit_status == 0
            await stop(alone, logs)
            await wait_until(lambda: pub.running and pub.fresh and pub.status is not None
                             and pub.status.pid == (pub.proc.pid if pub.proc else 0), timeout=40)
    finally:
        if alone.returncode is None:
            await stop(alone, logs)


def test_the_lag_of_raw_frames_only_when_they_are_published(tmp_path):
    written = {"BTCUSD": 7, "BTCUSD/raw": 9}
    for publish_raw, keys in ((False, {"BTCUSD"}), (True, {"BTCUSD", "BTCUSD/raw"})):
        cfg = publish_config(DOWN, tmp_path, ["BTCUSD"], {"url": "nats://127.0.0.1:4222", "raw": publish_raw},
                             output={"raw": True})
        stats = PublisherProcess(cfg, written=lambda: written).stats()
        assert set(stats) == keys and stats["BTCUSD"]["lag_records"] == 7
