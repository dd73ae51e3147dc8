"""The message ids and the cursor format (collector/publish/cursor.py), pure."""

from __future__ import annotations

import pytest

from collector.publish.cursor import (
    Cursor,
    CursorError,
    FileId,
    Position,
    book_digest,
    decode,
    encode,
    msg_id,
    parse_msg_id,
)


@pytest.mark.parametrize(("key", "at", "text"), [
    ("BTCUSD", Position(FileId(1764900000, 1764900000123456789), 412),
     "BTCUSD:1764900000:1764900000123456789:412"),
    ("BTCUSD/raw", Position(FileId(0, -1, 2), 0), "BTCUSD/raw:0:-1.2:0"),
])
def test_msg_id_round_trip(key, at, text):
    assert msg_id(key, at) == text
    assert parse_msg_id(text) == (key, at)


@pytest.mark.parametrize("text", ["", "BTCUSD:1:2", "btcusd:1:2:3", "BTCUSD:1:2:3\n", "BTCUSD:x:2:3",
                                  "BTCUSD/rawx:1:2:3", "BTCUSD:1:2:3:4"])
def test_other_ids_are_not_ours(text):
    assert parse_msg_id(text) is None


def test_positions_order_as_the_stream():
    a = Position(FileId(100, 5), 900)
    assert a < Position(FileId(100, 5), 901) < Position(FileId(100, 6), 0) < Position(FileId(101, 0), 0)
    assert Position(FileId(100, 5), 10**9) < Position(FileId(100, 5, 1), 0)  # a twin comes after


def test_cursor_round_trip():
    cur = Cursor("ETHUSD", Position(FileId(1764900000, 17, 1), 12345), book_digest(b'{"type":"book"}'))
    assert decode(encode(cur), "ETHUSD") == cur
    empty = Cursor("ETHUSD/raw", Position(FileId(0, -1), 0), None)
    assert decode(encode(empty), "ETHUSD/raw") == empty


@pytest.mark.parametrize(("data", "why"), [
    (b"", "not JSON"),
    (b"\x00\xff garbage", "not JSON"),
    (b"[1,2]", "not a version 1 cursor"),
    (b'{"v":2}', "not a version 1 cursor"),
    (b'{"v":1,"key":"BTCUSD","start_s":1,"first_ns":1,"dup":0,"offset":1,"book":null}', "not of 'ETHUSD'"),
    (b'{"v":1,"key":"ETHUSD","start_s":-5,"first_ns":1,"dup":0,"offset":1,"book":null}', "start_s -5"),
    (b'{"v":1,"key":"ETHUSD","start_s":1,"first_ns":1,"dup":0,"offset":1.5,"book":null}', "offset 1.5"),
    (b'{"v":1,"key":"ETHUSD","start_s":1,"first_ns":1,"dup":0,"offset":true,"book":null}', "offset True"),
    (b'{"v":1,"key":"ETHUSD","start_s":1,"first_ns":1,"dup":0,"offset":99999999999999999999,"book":null}',
     "offset"),
    (b'{"v":1,"key":"ETHUSD","start_s":1,"first_ns":1,"dup":0,"offset":1,"book":"../etc"}', "not a digest"),
    (b" " * 5000, "larger than"),
])
def test_a_corrupt_cursor_says_why(data, why):
    with pytest.raises(CursorError, match=why.replace("(", r"\(").replace(".", r"\.")):
        decode(data, "ETHUSD")
