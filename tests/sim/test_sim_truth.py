"""The truth: a client's independent book equals ``truth.top_at(eventId)`` after every frame."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from collector.sim import FlowParams, SimExchange
from tests.helpers.simulator import MakeSim
from tests.sim.sim_helpers import DictBook, recv_json, ws_connect


@pytest.mark.parametrize("symbol", ["BTCUSD", "SOLUSDCPERP"])
async def test_client_book_matches_truth_after_every_frame(make_sim: MakeSim, symbol: str) -> None:
    sim = await make_sim(symbols=["BTCUSD", "SOLUSDCPERP"], rate=400.0, depth=40, heartbeat_s=0.01,
                         flow=FlowParams(block_trade=0.02, auction=0.01, market=0.2))
    truth = sim.truth(symbol)
    book = DictBook()
    updates = 0
    async with ws_connect(f"{sim.ws_url}/{symbol}?heartbeat=true") as ws:
        expected_seq = 0
        while updates < 300:
            frame = await recv_json(ws)
            assert frame["socket_sequence"] == expected_seq
            expected_seq += 1
            if frame["type"] == "heartbeat":
                continue
            updates += 1
            book.apply_frame(frame)
            assert book.top() == truth.top_at(frame["eventId"])
            assert book.top(5) == truth.top_at(frame["eventId"], 5)
            assert not book.crossed()


async def test_two_clients_joining_late_agree_with_truth(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None, depth=30)
    sim.advance("BTCUSD", 500)  # history before anyone connects
    truth = sim.truth("BTCUSD")
    async with ws_connect(f"{sim.ws_url}/BTCUSD") as ws:
        snap = await recv_json(ws)
        assert snap["eventId"] == sim.stats["BTCUSD"].last_event_id
        book = DictBook()
        book.apply_frame(snap)
        assert book.top() == truth.top_at(snap["eventId"])
        sim.advance("BTCUSD", 200)
        for _ in range(200):
            frame = await recv_json(ws)
            book.apply_frame(frame)
            assert book.top(10) == truth.top_at(frame["eventId"], 10)


async def test_cursor_semantics() -> None:
    sim = SimExchange(["ETHUSD"], rate=None, depth=10)
    m = sim.market("ETHUSD")
    initial = ([[m.price(p), m.amount(u)] for p, u in m.bids.top()],
               [[m.price(p), m.amount(u)] for p, u in m.asks.top()])
    first_id = sim.stats["ETHUSD"].last_event_id
    sim.advance("ETHUSD", 50)
    cur = sim.truth("ETHUSD")
    final = cur.top_at(sim.stats["ETHUSD"].last_event_id)
    assert final == ([[m.price(p), m.amount(u)] for p, u in m.bids.top()],
                     [[m.price(p), m.amount(u)] for p, u in m.asks.top()])
    assert cur.top_at(first_id) == initial  # backwards: replays from the start
    assert cur.top_at(0) == initial  # before any event: the initial book
    assert cur.top_at(10**18, 3) == (final[0][:3], final[1][:3])
    assert cur.top_at(10**18, 0) == ([], [])


async def test_truth_log_file(tmp_path: Path) -> None:
    path = tmp_path / "truth.jsonl"
    sim = SimExchange(["BTCUSD", "ETHUSD"], rate=None, depth=8, truth_path=path)
    await sim.start()
    sim.advance("BTCUSD", 40)
    sim.advance("ETHUSD", 40)
    finals = {s: sim.truth(s).top_at(sim.stats[s].last_event_id) for s in ("BTCUSD", "ETHUSD")}
    await sim.stop()
    books: dict[str, DictBook] = {}
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [x["type"] for x in lines[:2]] == ["initial", "initial"]
    for line in lines:
        if line["type"] == "initial":
            book = books[line["symbol"]] = DictBook()
            book.bids.update(dict(line["bids"]))
            book.asks.update(dict(line["asks"]))
            continue
        for side, price, remaining in line["changes"]:
            books[line["symbol"]].apply({"type": "change", "side": side, "price": price,
                                         "remaining": remaining})
    assert len(lines) == 82
    assert {s: b.top() for s, b in books.items()} == finals


async def test_truth_can_be_turned_off() -> None:
    sim = SimExchange(["BTCUSD"], rate=None, depth=5, record_truth=False)
    sim.advance("BTCUSD", 10)
    with pytest.raises(RuntimeError):
        sim.truth("BTCUSD")


async def test_event_ids_are_the_book_changing_updates() -> None:
    sim = SimExchange(["BTCUSD"], rate=None, depth=10,
                      flow=FlowParams(block_trade=0.1, auction=0.05))
    sim.advance("BTCUSD", 300)
    log = sim.truth("BTCUSD").log
    assert len(log.update_ids) == 300 == sim.stats["BTCUSD"].updates
    assert log.update_ids[-1] == log.last_event_id == sim.stats["BTCUSD"].last_event_id
    assert set(log.event_ids) < set(log.update_ids)
    assert len(log.event_ids) == len(log.changes) and all(log.changes)
