"""The publisher process's status (collector/publish/status.py): what the collector accepts
from the file, what it refuses, and the lag and stuck verdicts it draws from it."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest

from collector.publish import status as pstatus
from collector.publish.status import Status, StatusError, StreamStatus, Totals

GOOD = Status(pid=42, seq=3, run_ns=10**18, at_ns=10**18 + 5 * 10**9, connected=True, errors=2,
              last_error="refused", idle_s=0.25, down_s=0.0,
              streams={"BTCUSD": StreamStatus(100, 90, 1, 3, 10**18 + 4 * 10**9),
                       "BTCUSD/raw": StreamStatus(5, 5, 0, 0, None)})


def good() -> dict[str, object]:
    rec: dict[str, object] = orjson.loads(pstatus.encode(GOOD))
    return rec


def test_a_status_reads_back_as_written():
    assert pstatus.decode(pstatus.encode(GOOD)) == GOOD
    assert pstatus.decode(pstatus.encode(replace(GOOD, idle_s=None))).idle_s is None


@pytest.mark.parametrize(("change", "says"), [
    ({"v": 2}, "version"),
    ({"pid": 0}, "pid"),
    ({"seq": -1}, "seq"),
    ({"errors": 2**63}, "errors"),
    ({"errors": 1.5}, "errors"),
    ({"errors": True}, "errors"),
    ({"run_ns": "1"}, "run_ns"),
    ({"connected": 1}, "connected"),
    ({"stopped": None}, "stopped"),
    ({"last_error": ["x"]}, "last_error"),
    ({"idle_s": 1e300}, "idle_s"),
    ({"idle_s": -1}, "idle_s"),
    ({"down_s": "0"}, "down_s"),
    ({"streams": []}, "streams"),
    ({"streams": {"btcusd": [0, 0, 0, 0, None]}}, "SYMBOL"),
    ({"streams": {"../etc": [0, 0, 0, 0, None]}}, "SYMBOL"),
    ({"streams": {"A" * 65: [0, 0, 0, 0, None]}}, "SYMBOL"),
    ({"streams": {"BTCUSD/raw/x": [0, 0, 0, 0, None]}}, "SYMBOL"),
    ({"streams": {"BTCUSD": [0, 0, 0, 0]}}, "list of 5"),
    ({"streams": {"BTCUSD": [0, -1, 0, 0, None]}}, "this_run"),
    ({"streams": {"BTCUSD": [0, 0, 0, 0, "now"]}}, "head_ns"),
    ({"streams": {f"S{i}": [0, 0, 0, 0, None] for i in range(pstatus.MAX_STREAMS + 1)}}, "more than"),
])
def test_a_hostile_status_is_refused_naming_what_is_wrong(change, says):
    rec = {**good(), **change}
    with pytest.raises(StatusError, match=says):
        pstatus.decode(orjson.dumps(rec))


@pytest.mark.parametrize("data", [b"", b"\x00garbage{", b"[1,2]", b'{"v":1}', b"NaN",
                                  b" " * (pstatus.MAX_STATUS_BYTES + 1)])
def test_garbage_is_refused(data):
    with pytest.raises(StatusError):
        pstatus.decode(data)


def test_an_error_text_is_bounded_and_printable():
    rec = {**good(), "last_error": "a\x1b[31mb\nc" + "x" * 10_000}
    error = pstatus.decode(orjson.dumps(rec)).last_error
    assert error is not None and error.startswith("a [31mb c") and len(error) == pstatus.MAX_ERROR_CHARS


def test_lag_in_records_and_seconds():
    now = 10**18 + 10 * 10**9
    streams = {"BTCUSD": StreamStatus(100, 90, 0, 0, now - 2 * 10**9), "ETHUSD": StreamStatus(50, 50)}
    stats = pstatus.stream_stats(streams, {"BTCUSD": 120, "ETHUSD": 60}, now, None)
    assert stats["BTCUSD"]["lag_records"] == 30 and stats["BTCUSD"]["lag_s"] == 2.0
    assert stats["ETHUSD"]["lag_records"] == 10 and stats["ETHUSD"]["lag_s"] == 0.0  # caught up a moment ago
    down = pstatus.stream_stats(streams, {"BTCUSD": 120, "ETHUSD": 60}, now, now - 7 * 10**9)
    assert down["ETHUSD"]["lag_s"] == 7.0  # nothing read while down: as long as it is down
    assert "lag_records" not in pstatus.stream_stats(streams, None, now, None)["BTCUSD"]
    assert pstatus.stream_stats(streams, {"BTCUSD": 10}, now, None)["BTCUSD"]["lag_records"] == 0


def test_counts_go_on_across_processes():
    totals = Totals()
    totals.add(GOOD)
    merged = totals.with_(replace(GOOD, streams={"BTCUSD": StreamStatus(7, 7, 0, 0, 99)}))
    assert merged["BTCUSD"] == StreamStatus(107, 97, 1, 3, 99)
    assert merged["BTCUSD/raw"] == StreamStatus(5, 5, 0, 0, None)


def test_stuck_only_with_records_waiting_or_no_publisher():
    waiting = {"BTCUSD": {"lag_s": 80.0, "lag_records": 5.0}}
    caught_up = {"BTCUSD": {"lag_s": 0.0, "lag_records": 0.0}}
    assert pstatus.stuck(waiting, 59.0, 60.0, False, None) is None
    why = pstatus.stuck(waiting, 61.0, 60.0, False, "refused")
    assert why is not None and "5 records" in why and "not connected" in why and "refused" in why
    assert pstatus.stuck(caught_up, 600.0, 60.0, True, None) is None
    gone = pstatus.stuck(caught_up, 61.0, 60.0, False, None, "not running")
    assert gone is not None and gone.endswith("publisher process: not running")
