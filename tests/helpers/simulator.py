"""The type of the `make_sim` fixture (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from collector.sim import SimExchange

MakeSim = Callable[..., Awaitable[SimExchange]]  # make_sim(**SimExchange keywords), started
