"""The `corrupt` fault, seen from raw clients of both APIs: the carrier frame's numbers are
right and its content wrong (the best bid one increment too big), and the truth never holds
the wrong value. Also the REST delay: a book of the moment it was asked, answered late."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import orjson

from tests.helpers.simulator import MakeSim
from tests.sim.sim_helpers import DictBook, http_get, recv_json, ws_connect


async def test_v1_corrupt_frame_keeps_its_numbers_and_lies_about_the_best_bid(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None)
    async with ws_connect(f"{sim.ws_url}/BTCUSD") as ws:
        book = DictBook()
        book.apply_frame(await recv_json(ws))
        sim.advance("BTCUSD", 3)
        for _ in range(3):
            book.apply_frame(await recv_json(ws))
        sim.inject("BTCUSD", "corrupt")
        sim.advance("BTCUSD", 1)
        frame = await recv_json(ws)
        book.apply_frame(frame)
    event_id = sim.stats["BTCUSD"].last_event_id
    assert frame["socket_sequence"] == 4 and frame["eventId"] == event_id  # numbers right
    truth_bids, truth_asks = sim.truth("BTCUSD").top_at(event_id)
    bids, asks = book.top()
    assert asks == truth_asks and bids[1:] == truth_bids[1:]
    (best, ours), (_, true) = bids[0], truth_bids[0]
    assert best == truth_bids[0][0] and Decimal(ours) > Decimal(true)  # the wrong amount, truth unmoved
    (fired,) = sim.stats["BTCUSD"].fired("corrupt")
    assert fired.socket_sequence == 4 and not fired.random


async def test_current_api_corrupt_frame_keeps_its_update_ids(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None)
    async with ws_connect(f"{sim.current_url}/?snapshot=-1") as ws:
        request = {"method": "SUBSCRIBE", "params": ["btcusd@depth@100ms"], "id": 1}
        await ws.send(orjson.dumps(request).decode())
        frames = [await recv_json(ws), await recv_json(ws)]  # the ack and the snapshot, either order
        snap = next(f for f in frames if f.get("e") == "depthUpdate")
        sim.inject("BTCUSD", "corrupt")
        sim.advance("BTCUSD", 1)
        frame = await recv_json(ws)
    event_id = sim.stats["BTCUSD"].last_event_id
    assert (frame["U"], frame["u"]) == (snap["u"], event_id)  # ids right
    truth_bids, _ = sim.truth("BTCUSD").top_at(event_id)
    price, true = truth_bids[0]
    sent = {Decimal(p): Decimal(q) for p, q in frame["b"]}
    assert sent[Decimal(price)] > Decimal(true)  # content wrong


async def test_rest_delay_answers_late_with_the_book_of_the_moment_asked(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None, rest_delay=0.2)
    started = time.perf_counter()
    asked = asyncio.ensure_future(http_get(sim.host, sim.port, "/v1/book/btcusd?limit_bids=1&limit_asks=1"))
    await asyncio.sleep(0.1)
    before = sim.truth("BTCUSD").top_at(sim.stats["BTCUSD"].last_event_id, 1)
    sim.advance("BTCUSD", 20)  # moves on while the answer waits
    status, _, book = await asked
    assert status == 200 and time.perf_counter() - started >= 0.2
    got = tuple([[lv["price"], lv["amount"]] for lv in book[side]] for side in ("bids", "asks"))
    assert got == before and before != sim.truth("BTCUSD").top_at(sim.stats["BTCUSD"].last_event_id, 1)
