from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from collector.sim import SimExchange
from tests.sim.sim_helpers import MakeSim


@pytest.fixture
async def make_sim() -> AsyncIterator[MakeSim]:
    """Start simulators on 127.0.0.1:0 (small books by default); all stopped at teardown."""
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
