"""`collector probe` as a real subprocess against the simulator on 127.0.0.1, and its
report's pure parts."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import orjson
import pytest

from collector.gemini import limits
from collector.sim import SimExchange
from collector.tools.probe_report import ROWS, Row, conclusion, quantile, rows, table
from tests.helpers.rest import ScriptedRest


def probe_config(tmp_path: Path, ws_url: str, rest_url: str, api: str = "v1") -> Path:
    path = tmp_path / "probe.toml"
    path.write_text(f'[feed]\nsymbols = ["BTCUSD"]\napi = "{api}"\nurl = "{ws_url}"\n'
                    f'rest_url = "{rest_url}"\n')
    return path


async def probe(path: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collector", "probe", "--config", str(path), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_probe_prints_every_row_and_a_conclusion(make_sim, tmp_path):
    sim: SimExchange = await make_sim(rate=50.0)
    code, out, err = await probe(probe_config(tmp_path, sim.current_url, sim.rest_url, "current"),
                                 "--samples", "2")
    assert code == 0, err
    lines = out.splitlines()
    for _, label in ROWS:
        assert any(line.startswith(label) for line in lines), label
    assert "http: no TLS" in out  # against the simulator: n/a, said why
    assert "the server closes the connection after each answer" in out  # kept-alive: n/a, said why
    assert "Clock: the exchange runs on this host" in out
    paragraph = next(line for line in lines if line.startswith("REST answers in "))
    assert "ms after the exchange stamped it" in paragraph and "ms old" in paragraph


async def test_a_rest_delay_shows_in_the_rest_figures_only_and_requests_are_paced(make_sim, tmp_path):
    sim: SimExchange = await make_sim(rate=50.0, rest_delay=0.05)
    front = ScriptedRest(sim.rest_url, [])  # passes every request on, noting when it came
    rest_url = await front.start()
    try:
        code, out, err = await probe(probe_config(tmp_path, sim.ws_url, rest_url), "--samples", "3", "--json")
    finally:
        front.close()
    assert code == 0, err
    report = orjson.loads(out)
    got = report["rows"]
    for key in ("first_byte", "rest_fresh"):
        assert got[key]["n"] == 3 and min(got[key]["values_ms"]) >= 50, (key, got[key])
    for key in ("tcp", "ws_handshake", "ws_snapshot", "stream_delay"):
        assert got[key]["n"] >= 1 and got[key]["p50"] < 50, (key, got[key])
    assert got["stream_delay"]["n"] >= 10  # a change per update frame
    assert got["staleness"]["n"] >= 1
    assert report["conclusion"].startswith("REST answers in ")
    gaps = [b - a for a, b in zip(front.times, front.times[1:])]
    assert len(front.times) == 4 and min(gaps) >= limits.REST_RECOMMENDED_S * 0.95  # one a second


async def test_an_exchange_that_cannot_be_reached_exits_1_saying_so(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = probe_config(tmp_path, f"ws://127.0.0.1:{port}/v1/marketdata", f"http://127.0.0.1:{port}")
    code, out, err = await probe(path, "--samples", "2")
    assert code == 1 and out == ""
    assert "collector probe: cannot reach the exchange: stream ws://127.0.0.1:" in err
    assert "ConnectionRefusedError" in err


async def test_bad_usage_and_bad_config(tmp_path):
    path = probe_config(tmp_path, "ws://127.0.0.1:1/v1/marketdata", "http://127.0.0.1:1")
    assert (await probe(path, "--samples", "0"))[0] == 2
    assert (await probe(path, "--symbol", "btc/usd"))[0] == 2
    path.write_text('[feed]\nsymbols = ["BTCUSD"]\n[audit]\ndepth = 0\n')
    code, _, err = await probe(path)
    assert code == 78 and "audit.depth" in err


# ---- the report (pure) ---------------------------------------------------------------------


def test_quantiles_are_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert [quantile(values, q) for q in (0.5, 0.9, 0.99)] == [50, 90, 99]
    assert quantile([7.0], 0.99) == 7.0


def test_every_row_is_in_the_table_measured_or_not():
    report = rows()
    report["rest_fresh"].values_ms = [200.0, 210.0, 190.0]
    report["tls"].note = "http: no TLS"
    text = table(report)
    assert len(text.splitlines()) == 1 + len(ROWS)
    assert "TLS handshake" in text and "n/a" in text and "http: no TLS" in text
    assert "  200  " in text  # p50 of the three
    assert "REST answers in 200 ms" in conclusion(report, "one clock")
    assert Row("x", "x").stat("p50") is None


@pytest.mark.parametrize("missing", ["staleness", "stream_delay"])
def test_the_conclusion_says_what_could_not_be_measured(missing):
    report = rows()
    for key in ("rest_fresh", "staleness", "stream_delay"):
        report[key].values_ms = [10.0]
    report[missing].values_ms = []
    report[missing].note = "because"
    assert "(because)" in conclusion(report, "one clock")
