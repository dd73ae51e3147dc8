"""The REST audit ([audit], collector/runtime/audit.py) end to end: the collector in-process
against the simulator on 127.0.0.1, its books held against the simulator's REST book; a
silent corruption found and healed; a REST server that answers 429 and garbage."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector import config
from collector.runtime import discovery
from collector.runtime.audit import Auditor, book_target, next_symbol
from collector.runtime.http import get_once
from collector.runtime.restbudget import RestBudget
from collector.sim import SimExchange
from collector.tools.replay import main_replay
from tests.helpers.e2e import FAST_FEED, check_against_truth, read_records, reasons, running, wait_until
from tests.helpers.rest import ScriptedRest


def audited(sim: SimExchange, out: Path, api: str, rest_url: str | None = None, raw: bool = False,
            **audit: Any) -> config.Config:
    feed: dict[str, Any] = {"rest_url": rest_url or sim.rest_url, **FAST_FEED}
    if api == "current":
        feed["api"] = "current"
    return config.from_dict({
        "feed": {"url": sim.ws_url if api == "v1" else sim.current_url, "symbols": ["BTCUSD"], **feed},
        "book": {"depth": 10, "emit": "every"},
        "output": {"dir": str(out), "raw": raw},
        "log": {"level": "warning"},
        "metrics": {"listen": "127.0.0.1:0"},
        "audit": {"interval_s": 1.0, "max_age_s": 0.25, **audit},
    })


def count(auditor: Auditor | None, result: str) -> int:
    assert auditor is not None
    return sum(n for (_, r), n in auditor.results.items() if r == result)


@pytest.mark.parametrize("api", ["v1", "current"])
async def test_audits_every_second_all_match(make_sim, tmp_path, api):
    sim = await make_sim(rate=50.0, heartbeat_s=0.2)
    async with running(audited(sim, tmp_path, api, max_age_s=0.5)) as app:
        await wait_until(lambda: count(app.auditor, "match") >= 4, timeout=8, what="four audits")
        auditor = app.auditor
        assert auditor is not None
    outcomes = {r for (_, r) in auditor.results}
    assert outcomes <= {"match", "not_live"}, auditor.results  # not_live: before the first snapshot
    assert auditor.ages.count == count(auditor, "match")
    assert app.rest.requests == sim.stats["BTCUSD"].rest_requests  # every request through the budget
    recs = read_records(tmp_path, "BTCUSD")
    assert reasons(recs) == ["start"]
    check_against_truth(sim, recs, "BTCUSD", api=api)


@pytest.mark.parametrize("api", ["v1", "current"])
async def test_silent_corruption_is_found_within_two_intervals_and_healed(make_sim, tmp_path, api):
    sim = await make_sim(rate=None, heartbeat_s=0.2)  # the book moves only when the test says
    interval = 1.0
    async with running(audited(sim, tmp_path, api, raw=True, interval_s=interval)) as app:
        feed, auditor = app.feeds["BTCUSD"], app.auditor
        await wait_until(lambda: feed.stats.live, what="live")
        sim.advance("BTCUSD", 10)
        await wait_until(lambda: count(auditor, "match") >= 1, what="a first audit")
        sim.inject("BTCUSD", "corrupt")
        sim.advance("BTCUSD", 1)  # its frame: the right numbers, a wrong best bid
        await wait_until(lambda: count(auditor, "mismatch") >= 1, timeout=2 * interval,
                         what="the mismatch, within two audit intervals")
        await wait_until(lambda: feed.stats.marked["audit"] == 1, timeout=3 * interval,
                         what="the audit resync")
        await wait_until(lambda: feed.stats.live, what="live again")
        matched = count(auditor, "match")
        sim.advance("BTCUSD", 10)
        await wait_until(lambda: count(auditor, "match") > matched, timeout=3 * interval,
                         what="an audit that matches again")
    assert sim.stats["BTCUSD"].fired("corrupt")
    recs = read_records(tmp_path, "BTCUSD")
    assert reasons(recs) == ["start", "audit"]  # nothing else saw it: the numbering was right
    mark = next(r for r in recs if r["type"] == "resync" and r["reason"] == "audit")
    assert mark["detail"].startswith("bids[0] rest ")  # the differing level, both values
    i = recs.index(mark)
    with pytest.raises(AssertionError, match="book at event"):
        check_against_truth(sim, recs[:i], "BTCUSD", api=api)  # the wrong book was recorded ...
    assert check_against_truth(sim, [recs[0], *recs[i:]], "BTCUSD", api=api) >= 11  # ... and healed
    # v1: a socket of its own, reconnected; current API: resubscribed on its shared socket
    assert sim.stats["BTCUSD"].handshakes == (2 if api == "v1" else 1)
    replayed = io.BytesIO()  # the raw frames replay to the same records, the repair included
    assert main_replay([str(tmp_path)], stdout=replayed) == 0
    assert replayed.getvalue() == b"".join(orjson.dumps(r) + b"\n" for r in recs)


async def test_rest_429_and_garbage_are_backed_off_reported_and_never_stop_recording(make_sim, tmp_path):
    sim = await make_sim(rate=50.0, heartbeat_s=0.2)
    rest = ScriptedRest(sim.rest_url, [
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 2\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\n<html>oops<",
        b'HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{"bids":[',  # then closed: cut short
        b"SSH-2.0-OpenSSH_9.6\r\n",  # not HTTP at all
    ])
    url = await rest.start()
    try:
        async with running(audited(sim, tmp_path, "v1", rest_url=url)) as app:
            feed, auditor = app.feeds["BTCUSD"], app.auditor
            await wait_until(lambda: "audit_failing" in {p.kind for p in app.monitor.problems()},
                             timeout=8, what="the symbol reported in health")
            updates = feed.stats.updates
            await wait_until(lambda: count(auditor, "match") >= 1, timeout=8, what="a match at last")
            assert "audit_failing" not in {p.kind for p in app.monitor.problems()}
            assert feed.stats.live and feed.stats.updates > updates  # recording went on all along
            assert app.monitor.server is not None
            metrics = (await get_once(f"http://127.0.0.1:{app.monitor.server.port}/metrics", 1 << 22)).body
    finally:
        rest.close()
    assert auditor is not None
    assert {r: count(auditor, r) for r in ("rate_limited", "bad_answer", "failed")} == {
        "rate_limited": 1, "bad_answer": 1, "failed": 2}
    assert rest.times[1] - rest.times[0] >= 2.0  # Retry-After: 2 obeyed (the audits come every 1 s)
    assert app.rest.limited == 1
    assert b'collector_audits_total{result="rate_limited",symbol="BTCUSD"} 1.0' in metrics
    assert b"collector_audit_match_age_seconds_count" in metrics
    recs = read_records(tmp_path, "BTCUSD")
    assert reasons(recs) == ["start"]
    check_against_truth(sim, recs, "BTCUSD")


async def test_discovery_draws_on_the_same_budget_and_a_429_closes_it():
    rest = ScriptedRest("", [b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\n"
                             b"Content-Length: 0\r\n\r\n"])
    url = await rest.start()
    budget = RestBudget()
    try:
        with pytest.raises(discovery.ListingError, match="429"):
            await discovery.fetch(url, budget=budget)
    finally:
        rest.close()
    assert budget.requests == 1 and budget.limited == 1
    assert 6.0 < budget.wait_time() <= 7.0


def test_rest_budget_is_gemini_burst_then_its_rate():
    now = [0.0]
    budget = RestBudget(clock=lambda: now[0])
    for _ in range(5):  # limits.REST_BURST at once ...
        assert budget.wait_time() == 0
        budget.bucket.take(now[0])
    assert budget.wait_time() == pytest.approx(0.5)  # ... then 120 a minute
    now[0] = 0.5
    assert budget.wait_time() == 0
    budget.refused(30.0)
    assert budget.wait_time() == pytest.approx(30.0)


def test_round_robin_and_request_target():
    assert next_symbol(["BTCUSD", "ETHUSD"], None) == "BTCUSD"
    assert next_symbol(["BTCUSD", "ETHUSD"], "BTCUSD") == "ETHUSD"
    assert next_symbol(["BTCUSD", "ETHUSD"], "ETHUSD") == "BTCUSD"
    assert next_symbol(["BTCUSD", "SOLUSD"], "ETHUSD") == "SOLUSD"  # ETHUSD left meanwhile
    assert (book_target("https://api.gemini.com", "BTCUSD", 10)
            == "/v1/book/btcusd?limit_bids=10&limit_asks=10")
    assert book_target("http://h:1/api/", "ETHBTC", 3) == "/api/v1/book/ethbtc?limit_bids=3&limit_asks=3"


@pytest.mark.parametrize("key, value, says", [
    ("interval_s", -1, "audit.interval_s: must be between 0"),
    ("interval_s", "60", "audit.interval_s: must be a number"),
    ("depth", 0, "audit.depth: must be between 1 and 1000"),
    ("max_age_s", 0, "audit.max_age_s: must be greater than 0"),
    ("every", 1, "audit.every: unknown key"),
])
def test_audit_config_errors_name_the_key(key, value, says):
    with pytest.raises(config.ConfigError, match=says):
        config.from_dict({"feed": {"symbols": ["BTCUSD"]}, "audit": {key: value}})
    assert config.from_dict({"feed": {"symbols": ["BTCUSD"]}}).audit.interval_s == 0  # off by default
