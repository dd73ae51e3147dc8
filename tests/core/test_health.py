"""collector.core.health: the pure check (each problem named, silence without heartbeats,
an idle writer against a stuck one) and WriterProgress."""

from __future__ import annotations

from collector.core.health import WriterProgress, check
from tests.helpers.health import feed


def test_check_names_each_problem():
    feeds = {"BTCUSD": feed(), "ETHUSD": feed(live=False, stale=2), "SOLUSD": feed(last_frame=60.0),
             "XRPUSD": feed(live=False, last_frame=0.0)}
    problems = check(feeds, stale_after_s=15, queued=0, writer_stalled_s=0, now=101.0, since=91.0)
    assert [(p.kind, p.symbol) for p in problems] == [
        ("stream_down", "ETHUSD"), ("stream_quiet", "SOLUSD"), ("stream_down", "XRPUSD")]
    assert "stale x2" in problems[0].detail and "last frame 1.0 s ago" in problems[0].detail
    assert "limit 30 s" in problems[1].detail
    assert "connecting" in problems[2].detail and "no frame in 10.0 s" in problems[2].detail
    assert not any(p.fatal for p in problems)  # an exchange outage must not restart us


def test_silence_is_no_problem_without_heartbeats():
    # the current API: a quiet book may say nothing for minutes; keepalive proves the socket
    feeds = {"BTCUSD": feed(last_frame=10.0), "ETHUSD": feed(live=False, last_frame=10.0)}
    problems = check(feeds, stale_after_s=15, queued=0, writer_stalled_s=0, now=1000.0,
                     heartbeats=False)
    assert [(p.kind, p.symbol) for p in problems] == [("stream_down", "ETHUSD")]
    assert [p.kind for p in check(feeds, 15, 0, 0, now=1000.0)] == ["stream_quiet", "stream_down"]


def test_idle_writer_is_not_stuck_and_a_holding_one_is():
    assert check({}, 15, queued=0, writer_stalled_s=0, now=1000.0) == []
    assert check({}, 15, queued=5, writer_stalled_s=29.0, now=1000.0, writer_stuck_s=30) == []
    [p] = check({}, 15, queued=5, writer_stalled_s=31.0, now=1000.0, writer_stuck_s=30)
    assert p.kind == "writer_stuck" and p.fatal and "5 records queued" in p.detail


def test_writer_progress_times_a_stall_from_the_last_good_sample():
    p = WriterProgress(now=0.0)
    assert p.sample(queued=0, done=0, now=1.0) == 0  # idle for ever: never stalled
    assert p.sample(queued=0, done=0, now=500.0) == 0
    assert p.sample(queued=3, done=0, now=501.0) == 1.0  # records arrived; none done since
    assert p.sample(queued=9, done=0, now=510.0) == 10.0
    assert p.sample(queued=9, done=4, now=511.0) == 0  # progress, though still busy
    assert p.sample(queued=9, done=4, now=512.0) == 1.0

