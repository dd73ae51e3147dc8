"""Round trip under chaos: with every fault kind firing at random, every book record the
collector writes equals the simulator's true book at its event id, every update inside a
continuous span is written, and every break is marked."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from collector.sim import SimExchange
from tests.helpers.e2e import check_against_truth, make_config, read_records, reasons, running, wait_until

SYMBOLS = ["BTCUSD", "ETHUSD", "SOLUSD"]
# per-frame probabilities (refuse and slow_snapshot: per handshake)
CHAOS = "gap=0.004,garbage=0.004,close=0.003,crossed=0.004,stall=0.002,unknown=0.01," \
        "refuse=0.2,slow_snapshot=0.2"
EXPECTED = {"gap", "invalid", "closed", "crossed", "stale"}


@pytest.mark.parametrize("api", ["v1", "current"])
async def test_chaos_round_trip(tmp_path, api):
    async with SimExchange(SYMBOLS, seed=11, rate=400.0, heartbeat_s=0.05, depth=400,
                           faults=CHAOS, ping_interval=0.2) as sim:
        url = sim.ws_url if api == "v1" else sim.current_url
        cfg = make_config(url, tmp_path, SYMBOLS,
                          feed={"stale_after_s": 0.3, "snapshot_timeout_s": 0.5, "api": api,
                                "ping_interval_s": 0.1, "ping_timeout_s": 0.2})
        async with running(cfg) as app:
            def seen() -> set[str]:
                return {r for f in app.feeds.values() for r, n in f.stats.marked.items() if n}
            await wait_until(lambda: seen() >= EXPECTED, timeout=40, what=f"all of {EXPECTED}")
        written: Counter[str] = Counter()
        for sym in SYMBOLS:
            recs = read_records(tmp_path, sym)
            check_against_truth(sim, recs, sym, api=api)
            written.update(reasons(recs))
            stats = app.feeds[sym].stats
            assert Counter(reasons(recs)[1:]) == stats.marked  # every record the feed wrote
            assert sum(stats.resyncs.values()) >= sum(stats.marked.values())
        assert set(written) >= EXPECTED, written


SHARED = Path(__file__).resolve().parents[3] / "shared" / "gemini" / "captures"


@pytest.mark.skipif(not (SHARED / "GEMINI.ws.36.0").exists(),
                    reason="needs ../shared/gemini/captures (real Gemini data, not in the repo)")
async def test_collector_records_a_replayed_real_capture_exactly(tmp_path):
    capture = SHARED / "GEMINI.ws.36.0"
    async with SimExchange(None, replay=capture, speed=0, loop=False, heartbeat_s=0.05) as sim:
        symbols = sim.symbols
        cfg = make_config(sim.ws_url, tmp_path, symbols)
        async with running(cfg) as app:
            def done(sym: str) -> bool:
                last = sim.truth(sym).log.last_event_id
                return (sim.replay_finished(sym) and (tmp_path / sym / "current.jsonl").exists()
                        and f'"event_id":{last},'.encode() in (tmp_path / sym / "current.jsonl").read_bytes())
            await wait_until(lambda: all(done(s) for s in symbols), timeout=30, what="whole capture recorded")
        for sym in symbols:
            recs = read_records(tmp_path, sym)
            assert reasons(recs) == ["start"]
            assert check_against_truth(sim, recs, sym) >= 1
            assert app.feeds[sym].stats.updates == len(sim.truth(sym).log.event_ids)
