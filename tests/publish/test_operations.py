"""Running with [publish]: credentials, start-up refusals (exit 78), a NATS that is not
there yet, a corrupt cursor, SIGHUP, retention, and reading the stream back with
`collector cat nats://`, `collector tail nats://` and `collector.read("nats://...")`."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

import nats
import orjson
from nats.js.api import StreamConfig

from collector import config
from collector.publish import store
from collector.publish.cursor import Cursor, FileId, Position
from collector.publish.retention import KeepUnpublished
from collector.runtime.app import App
from collector.sim import SimExchange
from collector.tools.reading import read
from tests.helpers.e2e import running, wait_until
from tests.helpers.nats_server import NatsServer, free_port
from tests.helpers.publish import (
    T0,
    by_subject,
    config_text,
    file_lines,
    head,
    publish_config,
    run_cli,
    seg,
    stream_messages,
    trade,
    wait_for,
    write,
)

SECRET = "s3cret-token-4242"


async def published(url: str, n: int, **kw: Any) -> bool:
    try:
        return len(await stream_messages(url, **kw)) >= n
    except Exception:
        return False


async def test_credentials_refused_exit_78_and_accepted(tmp_path):
    server = NatsServer(tmp_path / "nats", ["--auth", SECRET])
    server.start()
    try:
        async with SimExchange(["BTCUSD"], seed=5, rate=200.0, depth=20) as sim:
            token, cfg, out = tmp_path / "token", tmp_path / "config.toml", tmp_path / "data"
            token.write_text("wrong-token\n")
            publish = {"url": server.url, "token_file": str(token)}
            cfg.write_text(config_text(sim.ws_url, out, ["BTCUSD"], publish))
            code, _, err = await run_cli("run", "--config", str(cfg))
            assert code == config.EX_CONFIG
            assert b"NATS refused the credentials" in err and b"wrong-token" not in err
            token.write_text(SECRET + "\n")
            proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "collector", "run", "--config",
                                                        str(cfg), stderr=asyncio.subprocess.PIPE)
            try:
                await wait_for(lambda: published(server.url, 100, token=SECRET), what="records in the stream")
            finally:
                proc.send_signal(signal.SIGTERM)
                _, err = await asyncio.wait_for(proc.communicate(), 10)
            assert proc.returncode == 0
            assert SECRET.encode() not in err
        messages = await stream_messages(server.url, token=SECRET)
        assert by_subject(messages)["gemini.BTCUSD"] == file_lines(out, "BTCUSD")
    finally:
        server.kill()


async def test_a_stream_with_conflicting_subjects_exits_78(tmp_path, nats_server):
    nc = await nats.connect(nats_server.url)
    await nc.jetstream().add_stream(StreamConfig(name="OTHER", subjects=["gemini.>"]))
    await nc.jetstream().add_stream(StreamConfig(name="ELSEWHERE", subjects=["elsewhere.>"]))
    await nc.close()
    cfg, out = tmp_path / "config.toml", tmp_path / "data"
    for publish, says in (({"url": nats_server.url}, b"cannot create stream GEMINI"),
                          ({"url": nats_server.url, "stream": "ELSEWHERE"}, b"which do not take gemini.>")):
        cfg.write_text(config_text("ws://127.0.0.1:9/v1/marketdata", out, ["BTCUSD"], publish))
        code, _, err = await run_cli("run", "--config", str(cfg))
        assert code == config.EX_CONFIG, err
        assert says in err


async def test_a_nats_that_is_not_there_yet_is_waited_for(tmp_path):
    """Not reachable at the start: recording goes on, the lag is reported, and once NATS
    comes the stream catches up with the files."""
    server = NatsServer(tmp_path / "nats", port=free_port())
    out = tmp_path / "data"
    async with SimExchange(["BTCUSD"], seed=6, rate=300.0, depth=20) as sim:
        cfg = publish_config(sim.ws_url, out, ["BTCUSD"], {"url": server.url})
        async with running(cfg) as app:
            assert app.publisher is not None
            publisher = app.publisher
            await wait_until(lambda: publisher.stats().get("BTCUSD", {}).get("lag_records", 0) > 200
                             and publisher.last_error is not None, what="a lag while NATS is down")
            assert not publisher.connected and "cannot connect to NATS" in (publisher.last_error or "")
            assert publisher.stats()["BTCUSD"]["lag_s"] > 0
            server.start()
            await wait_until(lambda: publisher.connected and publisher.stats()["BTCUSD"]["published"] > 300)
        messages = await stream_messages(server.url)
    server.kill()
    assert by_subject(messages)["gemini.BTCUSD"] == file_lines(out, "BTCUSD")


async def test_a_corrupt_cursor_resumes_after_the_streams_last_message(tmp_path, nats_server):
    """With a duplicate window too short to help, a restart with a garbage cursor still
    publishes nothing twice: the subject's last message says where the stream stands."""
    nc = await nats.connect(nats_server.url)
    await nc.jetstream().add_stream(StreamConfig(name="GEMINI", subjects=["gemini.>"], duplicate_window=0.1))
    await nc.close()
    out = tmp_path / "data"
    async with SimExchange(["BTCUSD"], seed=7, rate=300.0, depth=20) as sim:
        cfg = publish_config(sim.ws_url, out, ["BTCUSD"], {"url": nats_server.url})
        async with running(cfg) as app:
            await wait_until(lambda: app.publisher is not None and app.publisher.stats().get(
                "BTCUSD", {}).get("published", 0) > 200)
        (out / "BTCUSD" / store.CURSOR).write_bytes(b"\x00garbage{")
        await asyncio.sleep(0.3)  # past the duplicate window
        async with running(cfg) as app:
            await wait_until(lambda: app.publisher is not None and app.publisher.stats().get(
                "BTCUSD", {}).get("published", 0) > 200)
    messages = await stream_messages(nats_server.url)
    assert by_subject(messages)["gemini.BTCUSD"] == file_lines(out, "BTCUSD")


async def test_sighup_switches_publishing_on_and_off(tmp_path, nats_server):
    out, path = tmp_path / "data", tmp_path / "config.toml"
    async with SimExchange(["BTCUSD"], seed=8, rate=300.0, depth=20) as sim:
        path.write_text(config_text(sim.ws_url, out, ["BTCUSD"], {"url": ""}))
        app = App(config.load(path))
        task = asyncio.create_task(app.run(handle_signals=False))
        try:
            await wait_until(lambda: app.writer.lines_written["BTCUSD"] > 100)
            assert app.publisher is None
            path.write_text(config_text(sim.ws_url, out, ["BTCUSD"], {"url": nats_server.url}))
            assert await app.reload()
            assert app.publisher is not None
            await wait_for(lambda: published(nats_server.url, app.writer.lines_written["BTCUSD"]))
            path.write_text(config_text(sim.ws_url, out, ["BTCUSD"], {"url": ""}))
            assert await app.reload()
            assert app.publisher is None
            frozen = len(await stream_messages(nats_server.url))
            written = app.writer.lines_written["BTCUSD"]
            await wait_until(lambda: app.writer.lines_written["BTCUSD"] > written + 100)
            assert len(await stream_messages(nats_server.url)) == frozen
        finally:
            app.stop()
            assert await asyncio.wait_for(task, 10) == 0
    messages = by_subject(await stream_messages(nats_server.url))["gemini.BTCUSD"]
    assert messages == file_lines(out, "BTCUSD")[:len(messages)]


def test_retention_keeps_what_is_not_published(tmp_path):
    """The writer's retention asks the cursors on disk; a segment from the cursor on stays,
    and so does every segment of a stream whose cursor is missing or unusable."""
    folder = tmp_path / "BTCUSD"
    for k in range(3):
        write(folder, seg(T0 + 60 * k), head(T0 + 60 * k), trade((T0 + 60 * k) * 10**9 + 1))
    keep = KeepUnpublished(tmp_path)
    assert all(keep(folder / seg(T0 + 60 * k)) for k in range(3))  # no cursor: nothing known published
    store.save(tmp_path, Cursor("BTCUSD", Position(FileId(T0 + 60, (T0 + 60) * 10**9 + 1), 10), None))
    assert [keep(folder / seg(T0 + 60 * k)) for k in range(3)] == [False, True, True]
    (folder / store.CURSOR).write_bytes(b"garbage")
    assert all(keep(folder / seg(T0 + 60 * k)) for k in range(3))
    write(tmp_path / "BTCUSD" / "raw", seg(T0), head(T0), trade(T0 * 10**9 + 1))
    assert not keep(folder / "raw" / seg(T0))  # raw frames are not published: not kept
    assert KeepUnpublished(tmp_path, raw=True)(folder / "raw" / seg(T0))


async def test_cat_read_and_tail_of_the_stream_are_the_files(tmp_path, nats_server):
    out = tmp_path / "data"
    symbols = ["BTCUSD", "ETHUSD"]
    source = f"{nats_server.url}/GEMINI"
    async with SimExchange(symbols, seed=9, rate=300.0, depth=20) as sim:
        cfg = publish_config(sim.ws_url, out, symbols, {"url": nats_server.url}, output={"rotate": "1s"})
        async with running(cfg) as app:
            await wait_for(lambda: published(nats_server.url, 1), what="the stream, made by the publisher")
            tail = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "collector", "tail", source, "--symbol", "ETHUSD", "--type", "trade",
                stdout=asyncio.subprocess.PIPE)
            await wait_until(lambda: sum(app.writer.lines_written.values()) > 1200, timeout=20)
            assert tail.stdout is not None
            followed = [await asyncio.wait_for(tail.stdout.readline(), 5) for _ in range(3)]
            tail.send_signal(signal.SIGINT)
            await tail.wait()
    assert all(b'"type":"trade","symbol":"ETHUSD"' in line for line in followed)
    assert all(line in file_lines(out, "ETHUSD") for line in (x[:-1] for x in followed))
    lines = [line for s in symbols for line in file_lines(out, s)]
    times = sorted(orjson.loads(line)["recv_ns"] for line in lines)
    middle = str(times[len(times) // 2] // 10**6)
    for args in ([], ["--symbol", "BTCUSD"], ["--type", "book,resync", "--from", middle],
                 ["-s", "ETHUSD", "-s", "BTCUSD", "--to", middle, "--type", "trade"]):
        code_a, from_dir, _ = await run_cli("cat", str(out), *args)
        code_b, from_nats, err = await run_cli("cat", source, *args)
        assert (code_a, code_b) == (0, 0), err
        assert from_nats == from_dir and from_dir, args
    assert list(read(source, "BTCUSD", start=int(middle))) == list(read(out, "BTCUSD", start=int(middle)))
    code, _, err = await run_cli("cat", f"nats://127.0.0.1:{free_port()}/GEMINI")
    assert code == 1 and b"cannot connect" in err


async def test_the_writers_retention_keeps_what_the_filter_keeps(tmp_path):
    from collector.runtime.writer import Writer

    folder = tmp_path / "BTCUSD"
    for k in range(3):
        write(folder, seg(T0 + 60 * k), head(T0 + 60 * k), trade((T0 + 60 * k) * 10**9 + 1))
        os.utime(folder / seg(T0 + 60 * k), (T0, T0))  # long ago
    writer = Writer(config.OutputConfig(dir=tmp_path, retain="1d"))
    kept = folder / seg(T0 + 60)
    writer.retain_filter = lambda path: path == kept
    writer._retain()  # every segment is older than a day
    assert sorted(p.name for p in folder.iterdir()) == [kept.name]


async def test_raw_frames_too_with_publish_raw(tmp_path, nats_server):
    from collector.tools.listing import list_segments, open_segment

    out = tmp_path / "data"
    async with SimExchange(["BTCUSD"], seed=10, rate=300.0, depth=20) as sim:
        cfg = publish_config(sim.ws_url, out, ["BTCUSD"], {"url": nats_server.url, "raw": True},
                             output={"raw": True, "rotate": "1s"})
        async with running(cfg) as app:
            await wait_until(lambda: app.writer.lines_written["BTCUSD/raw"] > 500, timeout=20)
    raw_lines = []
    for segment in list_segments(out / "BTCUSD" / "raw"):
        opened = open_segment(segment)
        assert opened is not None
        with opened[1] as f:
            raw_lines += [line[:-1] for line in f if not line.startswith(b'{"type":"header"')]
    subjects = by_subject(await stream_messages(nats_server.url))
    assert subjects["gemini.raw.BTCUSD"] == raw_lines
    assert subjects["gemini.BTCUSD"] == file_lines(out, "BTCUSD")
