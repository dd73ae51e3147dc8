"""REST routes answer in Gemini's shapes."""

from __future__ import annotations

from decimal import Decimal

from tests.helpers.simulator import MakeSim
from tests.sim.sim_helpers import http_get, http_get_raw


async def test_symbols_and_details(make_sim: MakeSim) -> None:
    sim = await make_sim(symbols=["BTCUSD", "SOLUSDCPERP"], listed=["ethusd"], rate=None)
    status, headers, body = await http_get(sim.host, sim.port, "/v1/symbols")
    assert status == 200 and headers["content-type"] == "application/json"
    assert body == ["btcusd", "solusdcperp", "ethusd"]

    status, _, details = await http_get(sim.host, sim.port, "/v1/symbols/details/btcusd")
    assert status == 200
    assert details == {
        "symbol": "BTCUSD", "quote_currency": "USD", "tick_size": 1e-8, "quote_increment": 0.01,
        "min_order_size": "0.00001", "status": "open", "wrap_enabled": False,
        "product_type": "spot", "contract_type": "vanilla", "contract_price_currency": "USD",
        "base_currency": "BTC"}
    # JSON numbers spelled as Gemini spells them.
    _, _, raw = await http_get_raw(sim.host, sim.port, "/v1/symbols/details/BTCUSD")
    assert b'"tick_size":0.00000001,"quote_increment":0.01,' in raw

    _, _, perp = await http_get(sim.host, sim.port, "/v1/symbols/details/SOLUSDCPERP")
    assert (perp["product_type"], perp["contract_type"], perp["quote_increment"]) == ("swap", "linear", 0.005)

    status, _, every = await http_get(sim.host, sim.port, "/v1/symbols/details/all")
    assert status == 200 and [d["symbol"] for d in every] == ["BTCUSD", "SOLUSDCPERP", "ETHUSD"]


async def test_book(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None, depth=80)
    sim.advance("BTCUSD", 100)
    status, _, book = await http_get(sim.host, sim.port, "/v1/book/btcusd")
    assert status == 200 and set(book) == {"bids", "asks"}
    assert len(book["bids"]) == 50 and len(book["asks"]) == 50  # default limit
    level = book["bids"][0]
    assert list(level) == ["price", "amount", "timestamp"]
    assert len({lv["timestamp"] for lv in book["bids"] + book["asks"]}) == 1
    bids = [Decimal(lv["price"]) for lv in book["bids"]]
    asks = [Decimal(lv["price"]) for lv in book["asks"]]
    assert bids == sorted(bids, reverse=True) and asks == sorted(asks) and bids[0] < asks[0]
    truth_bids, truth_asks = sim.truth("BTCUSD").top_at(sim.stats["BTCUSD"].last_event_id, 50)
    assert [[lv["price"], lv["amount"]] for lv in book["bids"]] == truth_bids
    assert [[lv["price"], lv["amount"]] for lv in book["asks"]] == truth_asks

    _, _, limited = await http_get(sim.host, sim.port, "/v1/book/BTCUSD?limit_bids=3&limit_asks=0")
    assert len(limited["bids"]) == 3 and len(limited["asks"]) == len(sim.market("BTCUSD").asks)


async def test_errors(make_sim: MakeSim) -> None:
    sim = await make_sim(rate=None)
    for path in ("/v1/book/nopeusd", "/v1/symbols/details/nopeusd"):
        status, _, body = await http_get(sim.host, sim.port, path)
        assert status == 404
        assert body["result"] == "error" and body["reason"] == "InvalidSymbol"
        assert "nopeusd" in body["message"]
    status, _, body = await http_get(sim.host, sim.port, "/v2/whatever")
    assert status == 404 and body["result"] == "error"
    status, _, body = await http_get(sim.host, sim.port, "/v1/book/btcusd?limit_bids=-1")
    assert status == 400 and body["reason"] == "InvalidParameter"
    # A plain GET (no upgrade) on the WebSocket path is not a REST route.
    status, _, _ = await http_get_raw(sim.host, sim.port, "/v1/marketdata/btcusd")
    assert status == 426
