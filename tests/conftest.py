"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from collector.runtime import writer
from collector.sim import SimExchange
from tests.helpers.simulator import MakeSim


@pytest.fixture
async def make_sim() -> AsyncIterator[MakeSim]:
    """Start simulators on 127.0.0.1:0 (small books by default); all stopped at teardown.
    Keywords are SimExchange's; symbols, depth and seed default to ["BTCUSD"], 20 and 1."""
    sims: list[SimExchange] = []

    async def factory(**kw: Any) -> SimExchange:
        kw.setdefault("symbols", ["BTCUSD"])
        kw.setdefault("depth", 20)
        kw.setdefault("seed", 1)
        sim = SimExchange(**kw)
        await sim.start()
        sims.append(sim)
        return sim

    yield factory
    for sim in sims:
        await sim.stop()


WriteFn = Callable[[int, Any], int]


@pytest.fixture
def os_write(monkeypatch: pytest.MonkeyPatch) -> Callable[[WriteFn], None]:
    """Put a function in the writer's place of `os.write` (to inject ENOSPC, short or
    stuck writes). Every batch then goes to the Python writer thread: the C appender's
    writes have no such seam (tests/runtime/test_appender.py fails them for real)."""
    def install(fn: WriteFn) -> None:
        monkeypatch.setattr(writer, "_os_write", fn)
        monkeypatch.setattr(writer, "APPENDER", None)
    return install
