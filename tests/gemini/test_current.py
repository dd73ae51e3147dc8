"""collector.gemini.current: URLs, requests and frame parsing of Gemini's current API."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from collector.core.format import canonical
from collector.gemini import current
from collector.gemini.current import (
    Ack,
    DepthUpdate,
    Error,
    InvalidFrame,
    Trade,
    UnknownFrame,
    parse,
)


def depth(**kw: Any) -> bytes:
    msg: dict[str, Any] = {"e": "depthUpdate", "E": 1_770_000_000_123_456_789, "s": "BTCUSD",
                           "U": 10, "u": 12, "b": [], "a": []}
    msg.update(kw)
    return orjson.dumps(msg)


def test_urls_and_stream_names() -> None:
    assert current.DEFAULT_URL == "wss://ws.gemini.com"
    assert current.connect_url("wss://ws.gemini.com") == "wss://ws.gemini.com/?snapshot=-1"
    assert current.connect_url("ws://127.0.0.1:9/", 0) == "ws://127.0.0.1:9/?snapshot=0"
    assert (current.connect_url("ws://h/x?a=1&snapshot=5", 20)
            == "ws://h/x?a=1&snapshot=20")
    assert current.depth_stream("BTCUSD") == "btcusd@depth@100ms"
    assert current.trade_stream("BTCUSD") == "btcusd@trade"
    assert current.streams("ETHUSD") == ["ethusd@depth@100ms", "ethusd@trade"]
    assert current.streams("ETHUSD", trades=False) == ["ethusd@depth@100ms"]


def test_requests() -> None:
    assert orjson.loads(current.subscribe(["btcusd@depth@100ms", "btcusd@trade"], 7)) == {
        "method": "SUBSCRIBE", "params": ["btcusd@depth@100ms", "btcusd@trade"], "id": 7}
    assert orjson.loads(current.unsubscribe(["btcusd@depth@100ms"], 8)) == {
        "method": "UNSUBSCRIBE", "params": ["btcusd@depth@100ms"], "id": 8}


@pytest.mark.parametrize(("text", "want"), [
    ("77401.500", "77401.5"), ("77401.5", "77401.5"), ("77401", "77401"),
    ("77401.000", "77401"), ("100", "100"), ("100.0", "100"), ("0100.10", "100.1"),
    ("0.00001000", "0.00001"), ("00.5", "0.5"), ("0", "0"), ("0.0", "0"),
    ("0.00000000", "0"), ("000", "0"), ("10.01", "10.01"),
])
def test_canonical(text: str, want: str) -> None:
    assert canonical(text) == want  # the text current.parse writes for prices and quantities


def test_depth_update_padded_unsorted_and_zero_spellings() -> None:
    frame = parse(depth(
        s="btcusd",
        b=[["77401.500", "0.50000000"], ["77402.000", "1"], ["77399.990", "0.00000000"]],
        a=[["77410.10", "0"], ["77405", "2.000"], ["77409.5", "0.0"]]))
    assert frame == DepthUpdate(
        "BTCUSD", 10, 12, 1_770_000_000_123_456_789,
        (("77401.5", "0.5"), ("77402", "1"), ("77399.99", "0")),  # frame order kept
        (("77410.1", "0"), ("77405", "2"), ("77409.5", "0")))


def test_snapshot_shape_u_equals_big_u() -> None:
    frame = parse(depth(U=99, u=99, b=[["1.0", "1"]], a=[["2.0", "1"]]))
    assert isinstance(frame, DepthUpdate) and frame.first_id == frame.last_id == 99


def test_trade() -> None:
    raw = orjson.dumps({"e": "trade", "E": 1_770_000_000_000_000_001, "s": "BTCUSD",
                        "t": 123, "p": "77401.500", "q": "0.00100000", "m": True})
    t = parse(raw)
    assert t == Trade("BTCUSD", 123, "77401.5", "0.001", True, 1_770_000_000_000_000_001)
    assert isinstance(t, Trade) and t.maker_side == "bid"
    assert Trade("BTCUSD", 1, "1", "1", False, 0).maker_side == "ask"


def test_replies_and_unknown_frames() -> None:
    assert parse(b'{"result":null,"id":3}') == Ack(3, None)
    assert parse(b'{"result":["btcusd@trade"],"id":4}') == Ack(4, ["btcusd@trade"])
    err = {"code": 2, "msg": "Invalid request"}
    assert parse(orjson.dumps({"error": err, "id": 5})) == Error(5, err)
    assert parse(b'{"error":"bad","id":null}') == Error(None, "bad")
    assert parse(b'{"e":"bookTicker","s":"BTCUSD"}') == UnknownFrame("bookTicker")


@pytest.mark.parametrize("raw", [
    b'{"e":"depthUpd',
    b"[1,2]",
    b"{}",
    b'{"result":null}',  # a reply without an id
    b'{"e":5}',
    b'{"result":null,"id":"x"}',
    depth(U=13, u=12),
    depth(U=True),
    depth(u=-1),
    depth(E=1.5),
    depth(E=None),
    depth(s=""),
    depth(s=None),
    depth(b=None),
    depth(a={"1": "2"}),
    depth(b=[["1.0"]]),
    depth(b=[["1.0", "1", "x"]]),
    depth(b=[[1.5, "1"]]),
    depth(b=[["1.5", 1]]),
    depth(b=[["-1.5", "1"]]),
    depth(b=[["1e5", "1"]]),
    depth(b=[["1.", "1"]]),
    depth(b=[[".5", "1"]]),
    depth(b=[["0.000", "1"]]),  # a zero price
    depth(a=[["1.5", "-1"]]),
    depth(a=[["1.5", " 1"]]),
    orjson.dumps({"e": "trade", "E": 1, "s": "BTCUSD", "t": 1, "p": "1", "q": "1", "m": 1}),
    orjson.dumps({"e": "trade", "E": 1, "s": "BTCUSD", "t": "1", "p": "1", "q": "1", "m": True}),
    orjson.dumps({"e": "trade", "E": 1, "s": "BTCUSD", "t": 1, "p": 1.0, "q": "1", "m": True}),
])
def test_invalid(raw: bytes) -> None:
    with pytest.raises(InvalidFrame) as info:
        parse(raw)
    assert info.value.sample == raw.decode()[:200]
