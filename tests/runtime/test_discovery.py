"""Symbol discovery (issue 15) end to end: the collector in-process against the simulator
on 127.0.0.1, its GET /v1/symbols listing changed while the collector runs."""

from __future__ import annotations

import json
import socket

import pytest

from collector import config
from collector.runtime import segments
from collector.runtime.discovery import ListingError, parse
from collector.sim import SimExchange
from tests.helpers.e2e import FAST_FEED, make_config, read_records, reasons, running, wait_until


def discovering(sim, out, symbols, **feed):
    return make_config(sim.ws_url, out, symbols, feed={"rest_url": sim.rest_url, **feed})


def kinds(app):
    return {p.kind for p in app.monitor.problems()}


async def test_globs_and_exclude_record_the_listed_matches(make_sim, tmp_path):
    sim = await make_sim(symbols=["BTCUSD", "ETHUSD", "ETHBTC"], listed=["BTCGUSDPERP"], rate=100.0,
                         heartbeat_s=0.05)
    cfg = discovering(sim, tmp_path, ["*"], exclude=["*PERP"])
    async with running(cfg) as app:
        await wait_until(lambda: set(app.feeds) == {"BTCUSD", "ETHUSD", "ETHBTC"}, what="feeds")
        await wait_until(lambda: all(f.stats.updates >= 5 for f in app.feeds.values()), what="updates")
        assert app.listing == ("BTCUSD", "ETHUSD", "ETHBTC", "BTCGUSDPERP")
        assert "discovery" not in kinds(app)
    for sym in ("BTCUSD", "ETHUSD", "ETHBTC"):
        assert reasons(read_records(tmp_path, sym)) == ["start"]
    assert not (tmp_path / "BTCGUSDPERP").exists()


async def test_unlisted_symbol_stops_with_one_unlisted_resync_and_a_closed_segment(make_sim, tmp_path):
    sim = await make_sim(symbols=["BTCUSD", "ETHUSD"], rate=100.0, heartbeat_s=0.05)
    cfg = discovering(sim, tmp_path, ["*USD"], discover_s=0.1)
    async with running(cfg) as app:
        await wait_until(lambda: set(app.feeds) == {"BTCUSD", "ETHUSD"}
                         and all(f.stats.updates >= 5 for f in app.feeds.values()), what="both recording")
        sim.set_listed(["BTCUSD"])
        await wait_until(lambda: "ETHUSD" not in app.feeds, what="ETHUSD stopped")
        await wait_until(lambda: not (tmp_path / "ETHUSD" / "current.jsonl").exists(), what="closed")
        assert segments.closed_segments(tmp_path / "ETHUSD")
        btc = app.feeds["BTCUSD"].stats.updates
        await wait_until(lambda: app.feeds["BTCUSD"].stats.updates > btc + 5, what="BTCUSD goes on")
    recs = read_records(tmp_path, "ETHUSD")
    assert reasons(recs) == ["start", "unlisted"]
    assert recs[-1]["type"] == "resync" and recs[-1]["reason"] == "unlisted"
    assert reasons(read_records(tmp_path, "BTCUSD")) == ["start"]


async def test_newly_listed_symbol_starts(make_sim, tmp_path):
    sim = await make_sim(symbols=["BTCUSD", "ETHUSD", "SOLUSD"], rate=100.0, heartbeat_s=0.05)
    sim.set_listed(["BTCUSD", "ETHUSD"])
    cfg = discovering(sim, tmp_path, ["*"], discover_s=0.1)
    async with running(cfg) as app:
        await wait_until(lambda: set(app.feeds) == {"BTCUSD", "ETHUSD"}, what="two feeds")
        sim.set_listed(["BTCUSD", "ETHUSD", "SOLUSD"])
        await wait_until(lambda: "SOLUSD" in app.feeds and app.feeds["SOLUSD"].stats.updates >= 5,
                         what="SOLUSD recording")
    recs = read_records(tmp_path, "SOLUSD")
    assert reasons(recs) == ["start"] and any(r["type"] == "book" for r in recs)


async def test_listing_unreadable_at_start_is_retried_and_reported(tmp_path):
    with socket.socket() as s:  # a port nothing listens on (yet)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sim = SimExchange(symbols=["BTCUSD", "ETHUSD"], rate=100.0, heartbeat_s=0.05, depth=20, seed=1)
    cfg = make_config(f"ws://127.0.0.1:{port}/v1/marketdata", tmp_path, ["*"],
                      feed={"rest_url": f"http://127.0.0.1:{port}", "discover_s": 0.2})
    try:
        async with running(cfg) as app:
            await wait_until(lambda: "discovery" in kinds(app), what="the problem reported")
            await wait_until(lambda: app.listing is None and not app.feeds, timeout=0.5, what="")
            problem = next(p for p in app.monitor.problems() if p.kind == "discovery")
            assert "cannot read the symbol listing" in problem.detail and not problem.fatal
            await sim.start(port=port)
            await wait_until(lambda: set(app.feeds) == {"BTCUSD", "ETHUSD"}, what="feeds started")
            await wait_until(lambda: all(f.stats.updates >= 5 for f in app.feeds.values()), what="updates")
            assert "discovery" not in kinds(app)
    finally:
        await sim.stop()
    assert reasons(read_records(tmp_path, "BTCUSD")) == ["start"]


async def test_listing_that_shrinks_by_more_than_half_is_refused(make_sim, tmp_path):
    syms = ["BTCUSD", "ETHUSD", "SOLUSD", "ETHBTC"]
    sim = await make_sim(symbols=syms, rate=50.0, heartbeat_s=0.05)
    cfg = discovering(sim, tmp_path, ["*"], discover_s=0.1)
    async with running(cfg) as app:
        await wait_until(lambda: set(app.feeds) == set(syms), what="four feeds")
        sim.set_listed(["BTCUSD"])  # three of four gone
        await wait_until(lambda: "discovery" in kinds(app), what="the refusal reported")
        assert "shrank from 4 to 1" in (app.discovery_problem or "")
        assert set(app.feeds) == set(syms)
        sim.set_listed(syms)
        await wait_until(lambda: "discovery" not in kinds(app), what="the problem cleared")
        assert set(app.feeds) == set(syms)
    for sym in syms:
        assert "unlisted" not in reasons(read_records(tmp_path, sym))


def test_listing_must_be_a_json_list_of_symbols():
    assert parse(b'["btcusd", "ethusd", "BTCUSD"]') == ("BTCUSD", "ETHUSD")
    for body in (b"{}", b'["btcusd", 3]', b'["btc/usd"]', b"<html>", b'["ab"]'):
        with pytest.raises(ListingError):
            parse(body)


def write_toml(path, sim, out, symbols, exclude):
    lines = ["[feed]", f'url = "{sim.ws_url}"', f'rest_url = "{sim.rest_url}"', "discover_s = 0.1",
             f"symbols = {json.dumps(list(symbols))}", f"exclude = {json.dumps(list(exclude))}"]
    lines += [f"{k} = {v}" for k, v in FAST_FEED.items()]
    lines += ["[output]", f'dir = "{out}"', "[log]", 'level = "warning"']
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_sighup_applies_globs_and_exclude(make_sim, tmp_path):
    sim = await make_sim(symbols=["BTCUSD", "ETHUSD", "SOLUSD"], rate=50.0, heartbeat_s=0.05)
    out = tmp_path / "data"
    path = write_toml(tmp_path / "config.toml", sim, out, ["BTCUSD"], [])
    async with running(config.load(path)) as app:
        await wait_until(lambda: set(app.feeds) == {"BTCUSD"}, what="one feed")
        assert app.listing is None  # an exact-only list asks for no listing
        write_toml(path, sim, out, ["*"], ["ETH*"])
        assert await app.reload()
        await wait_until(lambda: set(app.feeds) == {"BTCUSD", "SOLUSD"}, what="glob applied")
        write_toml(path, sim, out, ["*"], ["ETH*", "SOL*"])
        assert await app.reload()
        await wait_until(lambda: set(app.feeds) == {"BTCUSD"}, what="exclude applied")
    assert reasons(read_records(out, "SOLUSD")) == ["start"]  # still listed: no `unlisted`


async def test_unlisting_on_a_shared_socket_and_the_discovery_metrics(make_sim, tmp_path):
    """Current API: the unlisted symbol leaves its shared socket, its neighbour goes on
    untouched, and the metrics give the listing's size and age."""
    from prometheus_client import generate_latest

    from collector.ops.metrics import build_registry

    sim = await make_sim(symbols=["BTCUSD", "ETHUSD", "SOLUSD"], rate=100.0, ping_interval=0.2)
    cfg = make_config(sim.current_url, tmp_path, ["*"], feed={
        "api": "current", "rest_url": sim.rest_url, "discover_s": 0.1})
    async with running(cfg) as app:
        await wait_until(lambda: len(app.feeds) == 3
                         and all(f.stats.live for f in app.feeds.values()), what="all live")
        assert app.pool is not None and app.pool.opened == 1
        text = generate_latest(build_registry(app, app.monitor)).decode()
        assert "collector_symbols_listed 3.0" in text and "collector_symbols_recorded 3.0" in text
        assert app.listed_at is not None
        stamp = float(text.split("\ncollector_discovery_last_refresh_timestamp_seconds ")[1].split()[0])
        assert abs(stamp - app.listed_at) < 1
        sim.set_listed(["BTCUSD", "SOLUSD"])
        await wait_until(lambda: "ETHUSD" not in app.feeds, what="ETHUSD stopped")
        assert [len(s.links) for s in app.pool.sockets.values()] == [2]
        btc = app.feeds["BTCUSD"].stats.updates
        await wait_until(lambda: app.feeds["BTCUSD"].stats.updates > btc + 20, what="BTCUSD goes on")
        text = generate_latest(build_registry(app, app.monitor)).decode()
        assert "collector_symbols_listed 2.0" in text and "collector_symbols_recorded 2.0" in text
    assert reasons(read_records(tmp_path, "ETHUSD")) == ["start", "unlisted"]
    for sym in ("BTCUSD", "SOLUSD"):
        assert reasons(read_records(tmp_path, sym)) == ["start"]


HOSTILE_ANSWERS = {
    "busy": b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n",
    "huge": b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n" + b"[" * 2_000_000,
    "error": b"HTTP/1.1 500 Oops\r\nContent-Length: 2\r\n\r\n[]",
    "moved": b"HTTP/1.1 301 Moved\r\nLocation: http://elsewhere/\r\nContent-Length: 0\r\n\r\n",
    "garbage": b"SSH-2.0-OpenSSH\r\n\r\n",
    "silent": b"",
}


@pytest.mark.parametrize("kind", HOSTILE_ANSWERS)
async def test_a_hostile_listing_server_gets_a_clear_listing_error(kind):
    """Each answer that is no listing is a ListingError saying why, within the timeout."""
    import asyncio

    from collector.runtime.discovery import RateLimited, fetch

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if HOSTILE_ANSWERS[kind]:
            writer.write(HOSTILE_ANSWERS[kind])
            await writer.drain()
        else:
            await asyncio.sleep(5)  # never answers
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ListingError) as caught:
            await asyncio.wait_for(fetch(f"http://127.0.0.1:{port}", timeout=0.5), 3)
    finally:
        server.close()
    message = str(caught.value)
    assert f"127.0.0.1:{port}/v1/symbols" in message
    expected = {"busy": "HTTP 429", "huge": "cannot read", "error": "HTTP 500", "moved": "HTTP 301",
                "garbage": "cannot read", "silent": "no answer in 0.5 s"}[kind]
    assert expected in message, message
    if kind == "busy":
        assert isinstance(caught.value, RateLimited) and caught.value.retry_after == ["7"]
