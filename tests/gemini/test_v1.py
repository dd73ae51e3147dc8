"""collector.gemini.v1: stream URL and frame parsing."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest

from collector.gemini.v1 import (
    Auction,
    Change,
    Heartbeat,
    Trade,
    UnknownEvent,
    UnknownFrame,
    Update,
    parse,
    stream_url,
)
from collector.gemini.wire import InvalidFrame

V1_EXCERPTS = Path(__file__).resolve().parents[3] / "shared" / "gemini" / "captures" / "v1_excerpts"


def frame(**fields: object) -> bytes:
    return orjson.dumps(fields)


def update(events: list[object], seq: int = 1, event_id: int = 42, **extra: object) -> bytes:
    return frame(type="update", eventId=event_id, socket_sequence=seq, events=events, **extra)


def change(**over: object) -> dict[str, object]:
    ev: dict[str, object] = {"type": "change", "side": "bid", "price": "6513.20", "remaining": "1.5",
          "delta": "1.5", "reason": "place"}
    ev.update(over)
    return {k: v for k, v in ev.items() if v is not None}


# --- stream_url --------------------------------------------------------------------------

@pytest.mark.parametrize("trades", [True, False])
def test_stream_url_sends_every_filter_explicitly(trades: bool) -> None:
    url = stream_url("wss://api.gemini.com/v1/marketdata/", "BTCUSD", trades)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "wss", "api.gemini.com", "/v1/marketdata/BTCUSD")  # one slash, symbol as given
    pairs = parse_qsl(parts.query, strict_parsing=True)
    names = [k for k, _ in pairs]
    assert len(names) == len(set(names)), pairs
    params = dict(pairs)
    want = {"heartbeat": "true", "bids": "true", "offers": "true",
            "trades": "true" if trades else "false", "auctions": "true", "top_of_book": "false"}
    assert {k: params.get(k) for k in want} == want


def test_stream_url_base_without_trailing_slash() -> None:
    assert stream_url("wss://x/v1/marketdata", "ethusd", True).startswith(
        "wss://x/v1/marketdata/ethusd?")


# --- real v1 frames ----------------------------------------------------------------------

def _excerpt_lines() -> list[tuple[str, str]]:
    if not V1_EXCERPTS.is_dir():
        pytest.skip(f"v1 excerpts not found at {V1_EXCERPTS} (../shared is absent)")
    out = []
    for path in sorted(V1_EXCERPTS.glob("*.jsonl")):
        out += [(path.name, line) for line in path.read_text().splitlines() if line.strip()]
    return out


def test_real_v1_frames_parse_field_for_field() -> None:
    lines = _excerpt_lines()
    assert len(lines) == 35  # 12 + 5 + 5 + 7 + 6 (captures/README.md)
    for name, line in lines:
        msg = json.loads(line)
        got = parse(line.encode())
        where = f"{name}: {line[:80]}"
        if msg["type"] == "heartbeat":
            assert got == Heartbeat(msg["socket_sequence"]), where
            continue
        assert type(got) is Update, where
        assert got.seq == msg["socket_sequence"], where
        assert got.event_id == msg["eventId"], where
        assert got.timestamp_ms == msg.get("timestampms"), where
        assert len(got.events) == len(msg["events"]), where
        for ev, src in zip(got.events, msg["events"]):
            if src["type"] == "change":
                assert ev == Change(src["side"], src["price"], src["remaining"], src["reason"]), where
            else:
                assert src["type"] == "trade"
                assert ev == Trade(src["tid"], src["price"], src["amount"], src["makerSide"]), where
        # the same frame as str parses the same
        assert parse(line) == got


def test_real_v1_snapshots_have_no_timestamp() -> None:
    lines = _excerpt_lines()
    snapshots = [parse(line) for _, line in lines if '"socket_sequence":0' in line]
    assert len(snapshots) == 3
    for snap in snapshots:
        assert type(snap) is Update and snap.seq == 0 and snap.timestamp_ms is None
        changes = [e for e in snap.events if type(e) is Change]
        assert len(changes) == len(snap.events) and {e.reason for e in changes} == {"initial"}


def test_real_v1_trade_with_tid_distinct_from_event_id() -> None:
    (line,) = [text for _, text in _excerpt_lines() if '"tid":2840141029940425' in text]
    got = parse(line)
    assert type(got) is Update
    assert got.event_id == 1764559146475721 and got.timestamp_ms == 1790401261620
    assert got.events == (Trade(2840141029940425, "83955.14", "0.0011912", "ask"),)


def test_real_v1_trade_then_change_in_one_frame() -> None:
    (line,) = [text for _, text in _excerpt_lines()
               if '"socket_sequence":5,"events":[{"type":"trade"' in text]
    got = parse(line)
    assert type(got) is Update
    assert got.events == (
        Trade(4568099470, "6508.45", "0.02441407", "ask"),
        Change("ask", "6508.45", "0.45117186", "trade"),
    )


# --- valid frames ------------------------------------------------------------------------

def test_heartbeat() -> None:
    assert parse(b'{"type":"heartbeat","socket_sequence":272}') == Heartbeat(272)
    assert parse('{"socket_sequence":0,"type":"heartbeat"}') == Heartbeat(0)


def test_snapshot_without_timestampms() -> None:
    raw = frame(type="update", eventId=7275473603, socket_sequence=0, events=[
        change(reason="initial", side="ask", price="11386.12", remaining="1.307", delta="1.307"),
        change(reason="initial", side="bid", price="11386.1", remaining="0.00000001",
               delta="0.00000001"),
    ])
    assert parse(raw) == Update(0, 7275473603, None, (
        Change("ask", "11386.12", "1.307", "initial"),
        Change("bid", "11386.1", "0.00000001", "initial"),
    ))


def test_update_keeps_decimal_text_and_timestampms() -> None:
    raw = update([change(price="6513.20", remaining="0"), change(price="1", remaining="0.000")],
                 seq=7, event_id=4568099292, timestamp=1537974017, timestampms=1537974017597)
    assert parse(raw) == Update(7, 4568099292, 1537974017597, (
        Change("bid", "6513.20", "0", "place"), Change("bid", "1", "0.000", "place")))


def test_change_without_reason_or_delta() -> None:
    got = parse(update([change(reason=None, delta=None)]))
    assert type(got) is Update
    assert got.events == (Change("bid", "6513.20", "1.5", ""),)


def test_empty_events_is_a_valid_update() -> None:
    assert parse(update([], seq=3)) == Update(3, 42, None, ())


@pytest.mark.parametrize("maker", ["bid", "ask", "auction"])
def test_trade_event(maker: str) -> None:
    raw = update([{"type": "trade", "tid": 5, "price": "6508.45", "amount": "0.02441407",
                   "makerSide": maker}])
    got = parse(raw)
    assert type(got) is Update
    assert got.events == (Trade(5, "6508.45", "0.02441407", maker),)


def test_block_trade_event() -> None:
    raw = update([{"type": "block_trade", "tid": 9, "price": "8000", "amount": "12.5"}])
    got = parse(raw)
    assert type(got) is Update
    assert got.events == (Trade(9, "8000", "12.5", None, block=True),)
    (ev,) = got.events
    assert type(ev) is Trade
    assert ev.block is True and ev.maker_side is None


@pytest.mark.parametrize("kind,fields", [
    ("auction_open", {"auction_open_ms": 1, "auction_time_ms": 2, "first_indicative_ms": 3,
                      "last_cancel_time_ms": 4}),
    ("auction_indicative", {"eid": 7, "result": "failure", "time_ms": 5, "highest_bid_price": "1",
                            "lowest_ask_price": "2", "collar_price": "1.5",
                            "indicative_price": "0", "indicative_quantity": "0"}),
    ("auction_result", {"eid": 8, "result": "success", "time_ms": 6, "highest_bid_price": "1",
                        "lowest_ask_price": "2", "collar_price": "1.5", "auction_price": "1.6",
                        "auction_quantity": "3"}),
])
def test_auction_events(kind: str, fields: dict[str, object]) -> None:
    got = parse(update([{"type": kind, **fields}]))
    assert type(got) is Update
    assert got.events == (Auction(kind, fields),)


def test_unknown_event_type_is_not_an_error() -> None:
    raw = update([{"type": "auction", "whatever": [1, {"x": None}]}, change(),
                  {"type": "brand_new"}])
    got = parse(raw)
    assert type(got) is Update
    assert got.events == (
        UnknownEvent("auction"), Change("bid", "6513.20", "1.5", "place"), UnknownEvent("brand_new"))


def test_unknown_frame_type_keeps_its_sequence() -> None:
    assert parse(b'{"type":"status","socket_sequence":12,"x":[1]}') == UnknownFrame(12, "status")


# --- invalid frames ----------------------------------------------------------------------

_OK_TRADE = {"type": "trade", "tid": 5, "price": "1.5", "amount": "2", "makerSide": "ask"}

INVALID: list[tuple[str, bytes]] = [
    ("not JSON", b'{"type":"heartbeat","socket_sequence":1'),
    ("empty", b""),
    ("not UTF-8", b'{"type":"heartbeat","socket_sequence":1,"x":"\xff"}'),
    ("array", b'[{"type":"heartbeat","socket_sequence":1}]'),
    ("string", b'"heartbeat"'),
    ("number", b"1"),
    ("null", b"null"),
    ("seq missing", b'{"type":"heartbeat"}'),
    ("seq negative", b'{"type":"heartbeat","socket_sequence":-1}'),
    ("seq bool", b'{"type":"heartbeat","socket_sequence":true}'),
    ("seq false", b'{"type":"heartbeat","socket_sequence":false}'),
    ("seq float", b'{"type":"heartbeat","socket_sequence":1.0}'),
    ("seq string", b'{"type":"heartbeat","socket_sequence":"1"}'),
    ("seq null", b'{"type":"heartbeat","socket_sequence":null}'),
    ("type missing", b'{"socket_sequence":1}'),
    ("type not a string", b'{"type":5,"socket_sequence":1}'),
    ("eventId missing", frame(type="update", socket_sequence=1, events=[])),
    ("eventId string", frame(type="update", socket_sequence=1, eventId="42", events=[])),
    ("eventId bool", frame(type="update", socket_sequence=1, eventId=True, events=[])),
    ("eventId float", frame(type="update", socket_sequence=1, eventId=42.0, events=[])),
    ("timestampms string", update([], timestampms="1537974017597")),
    ("timestampms bool", update([], timestampms=True)),
    ("timestampms float", update([], timestampms=1.5)),
    ("events missing", frame(type="update", socket_sequence=1, eventId=42)),
    ("events object", update({"0": change()})),  # type: ignore[arg-type]  # not a list: the bad input under test
    ("events null", update(None)),  # type: ignore[arg-type]  # not a list: the bad input under test
    ("events string", update("[]")),  # type: ignore[arg-type]  # not a list: the bad input under test
    ("event not an object", update(["change"])),
    ("event list", update([[change()]])),
    ("event type missing", update([{k: v for k, v in change().items() if k != "type"}])),
    ("event type not a string", update([change(type=3)])),
    ("side buy", update([change(side="buy")])),
    ("side BID", update([change(side="BID")])),
    ("side missing", update([{k: v for k, v in change().items() if k != "side"}])),
    ("price float", update([change(price=6513.2)])),
    ("price int", update([change(price=6513)])),
    ("price missing", update([{k: v for k, v in change().items() if k != "price"}])),
    ("price exponent", update([change(price="6.5132e3")])),
    ("price exponent upper", update([change(price="1E-8")])),
    ("price negative", update([change(price="-6513.2")])),
    ("price plus", update([change(price="+6513.2")])),
    ("price leading dot", update([change(price=".5")])),
    ("price trailing dot", update([change(price="5.")])),
    ("price spaces", update([change(price=" 5")])),
    ("price trailing space", update([change(price="5 ")])),
    ("price trailing newline", update([change(price="5\n")])),
    ("price empty", update([change(price="")])),
    ("price NaN", update([change(price="NaN")])),
    ("price Infinity", update([change(price="Infinity")])),
    ("price underscore", update([change(price="6_513")])),
    ("price comma", update([change(price="6513,2")])),
    ("price hex", update([change(price="0x10")])),
    ("price zero", update([change(price="0")])),
    ("price zero decimals", update([change(price="0.00")])),
    ("price zeros", update([change(price="000.000")])),
    ("remaining negative", update([change(remaining="-1")])),
    ("remaining float", update([change(remaining=1.5)])),
    ("remaining exponent", update([change(remaining="1e-8")])),
    ("remaining missing", update([{k: v for k, v in change().items() if k != "remaining"}])),
    ("remaining null", update([{**change(), "remaining": None}])),
    ("makerSide buy", update([{**_OK_TRADE, "makerSide": "buy"}])),
    ("makerSide missing", update([{k: v for k, v in _OK_TRADE.items() if k != "makerSide"}])),
    ("makerSide null", update([{**_OK_TRADE, "makerSide": None}])),
    ("makerSide upper", update([{**_OK_TRADE, "makerSide": "ASK"}])),
    ("trade tid missing", update([{k: v for k, v in _OK_TRADE.items() if k != "tid"}])),
    ("trade tid string", update([{**_OK_TRADE, "tid": "5"}])),
    ("trade tid bool", update([{**_OK_TRADE, "tid": True}])),
    ("trade tid float", update([{**_OK_TRADE, "tid": 5.0}])),
    ("trade price float", update([{**_OK_TRADE, "price": 1.5}])),
    ("trade amount exponent", update([{**_OK_TRADE, "amount": "2e0"}])),
    ("trade amount negative", update([{**_OK_TRADE, "amount": "-2"}])),
    ("block_trade tid missing", update([{"type": "block_trade", "price": "1", "amount": "2"}])),
    ("block_trade price float", update([{"type": "block_trade", "tid": 1, "price": 1.0,
                                         "amount": "2"}])),
    ("block_trade amount missing", update([{"type": "block_trade", "tid": 1, "price": "1"}])),
    ("bad event after good ones", update([change(), _OK_TRADE, change(side="sell")])),
]


@pytest.mark.parametrize("raw", [r for _, r in INVALID], ids=[n for n, _ in INVALID])
def test_invalid_frame_raises_with_sample(raw: bytes) -> None:
    with pytest.raises(InvalidFrame) as info:
        parse(raw)
    exc = info.value
    assert isinstance(exc, ValueError)
    assert exc.why and str(exc) == exc.why
    assert exc.sample == raw.decode("utf-8", "replace")[:200]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return
    # the same frame passed as str fails the same way
    with pytest.raises(InvalidFrame) as again:
        parse(text)
    assert (again.value.why, again.value.sample) == (exc.why, exc.sample)


def test_invalid_frame_sample_is_truncated() -> None:
    raw = update([change(price="x" * 5000)])
    with pytest.raises(InvalidFrame) as info:
        parse(raw)
    assert len(info.value.sample) == 200 and raw.decode().startswith(info.value.sample)
    assert "price" in info.value.why


@pytest.mark.parametrize("text", ["0", "0.00000001", "6513.20", "6513.2", "100", "00.5",
                                  "123456789012345678901234567890.123456789012345678901234567890"])
def test_plain_decimal_spellings_are_accepted(text: str) -> None:
    got = parse(update([{"type": "trade", "tid": 1, "price": text, "amount": text,
                         "makerSide": "bid"}]))
    assert type(got) is Update
    assert got.events == (Trade(1, text, text, "bid"),)


# --- a bug: non-ASCII digits ---------------------------------------------------------------
# `_DECIMAL` in collector/gemini/v1.py is `\d+(?:\.\d+)?\Z` on str, and `\d` matches every
# Unicode decimal digit. `Decimal()` accepts those too, so "١٠" (Arabic-Indic 10) keys as 10, but
# the zero checks (`price.strip("0.")`, `size.strip("0.")` in book.py) only know ASCII "0": the
# price "٠" (Arabic-Indic zero) passes the "price is zero" check and a remaining of "٠" is kept
# as a level of size zero instead of removing it. Non-ASCII text would also reach the output.

def test_non_ascii_digits_are_invalid() -> None:
    cases = [
        ("price", "\u0661\u0660"),        # Arabic-Indic "10"
        ("price", "\u0660"),              # Arabic-Indic "0": a zero price passes the zero check
        ("remaining", "\u0660"),          # Arabic-Indic "0": not seen as zero by Book
        ("price", "\uff16\uff15\uff11\uff13.\uff12"),  # fullwidth "6513.2"
        ("remaining", "\U0001d7cf"),      # MATHEMATICAL BOLD DIGIT ONE
    ]
    accepted = []
    for field, text in cases:
        try:
            parse(update([change(**{field: text})]))
        except InvalidFrame:
            continue
        accepted.append((field, text))
    assert accepted == [], "non-ASCII digits accepted as decimals"
