"""``run_simulator``: a simulator on a port until cancelled (``python -m collector.sim``,
``collector simulate``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from pathlib import Path

from .capture import Capture
from .exchange import ExchangePlan
from .ratelimit import SimLimits
from .server import SimExchange
from .tape import Tape

__all__ = ["banner", "run_simulator"]


def banner(sim: SimExchange) -> str:
    """The one line printed once listening."""
    if sim.plan is not None:
        busy = sim.plan.busy
        limits = sim.limits
        return (f"gemini simulator: ws {sim.ws_url}/SYMBOL  current {sim.current_url}  "
                f"rest {sim.rest_url}  exchange {len(sim.symbols)} symbols, {len(busy)} busy "
                f"({','.join(busy)}), limits {'on' if limits is not None else 'off'}")
    mode = ""
    if sim.tape is not None:
        speed = sim.speed
        pace = "max" if speed == 0 else "manual" if speed is None else f"x{speed:g}"
        mode = f"  replay {sim.tape.path.name} speed {pace} {'loop' if sim.loop else 'no-loop'}"
    return (f"gemini simulator: ws {sim.ws_url}/SYMBOL  rest {sim.rest_url}  "
            f"symbols {','.join(sim.symbols)}{mode}")


async def run_simulator(
    port: int = 8765,
    symbols: Iterable[str] | None = None,
    rate: float | None = 50.0,
    seed: int = 1,
    faults: str = "",
    heartbeat_s: float = 5.0,
    *,
    host: str = "127.0.0.1",
    depth: int = 500,
    listed: Iterable[str] | None = None,
    ping_interval: float | None = 20.0,
    truth_path: str | Path | None = None,
    ready: Callable[[SimExchange], None] | None = None,
    replay: str | Path | Capture | Tape | None = None,
    speed: float | None = 1.0,
    loop: bool = True,
    exchange: ExchangePlan | None = None,
    limits: SimLimits | bool | None = None,
    rest_delay: float = 0.0,
) -> None:
    """Run a simulator until cancelled (the entry point for ``collector simulate``).

    ``symbols`` None: BTCUSD,ETHUSD (synthetic) or every symbol of the capture (replay);
    ``exchange``: a whole exchange instead (``exchange.plan_exchange``).
    Prints one line with the URLs once listening; ``ready(sim)`` is called then too.
    """
    if replay is None and symbols is None and exchange is None:
        symbols = ("BTCUSD", "ETHUSD")
    sim = SimExchange(symbols, seed=seed, rate=rate, heartbeat_s=heartbeat_s, depth=depth,
                      faults=faults, ping_interval=ping_interval, listed=listed,
                      truth_path=truth_path, replay=replay, speed=speed, loop=loop,
                      exchange=exchange, limits=limits, rest_delay=rest_delay)
    await sim.start(host, port)
    async with sim:
        print(banner(sim), flush=True)
        if ready is not None:
            ready(sim)
        await asyncio.Event().wait()
