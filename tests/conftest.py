"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

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
