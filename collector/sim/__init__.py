"""A simulated Gemini exchange (v1 market-data WebSocket + public REST) for tests and
benchmarks. Independent of the rest of ``collector`` on purpose: it is the truth the
collector is held against, so it has its own book and its own frame encoding.

    async with SimExchange(symbols=["BTCUSD"], seed=1, rate=50.0) as sim:
        url = f"{sim.ws_url}/BTCUSD?heartbeat=true"
        sim.inject("BTCUSD", "gap")
        await sim.wait_for(lambda: sim.stats["BTCUSD"].connections >= 1)
        bids, asks = sim.truth("BTCUSD").top_at(event_id, 10)

    async with SimExchange(replay="GEMINI.ws.1.0", speed=10) as sim:  # a recorded capture
        ...
"""

from .capture import Capture, load_capture
from .exchange import ExchangePlan, SymbolActivity, plan_exchange
from .faults import Fault, FaultKind, FiredFault, parse_fault_spec
from .frames import Subscription
from .market import FlowParams, Market, Update
from .ratelimit import SimLimits
from .replay import ReplayMarket
from .runner import run_simulator
from .server import SimExchange
from .stats import ExchangeStats, SymbolStats
from .symbols import BUILTIN, SymbolSpec, spec_for
from .tape import Tape, build_tape
from .truth import TruthCursor

__all__ = [
    "BUILTIN",
    "Capture",
    "ExchangePlan",
    "ExchangeStats",
    "Fault",
    "FaultKind",
    "FiredFault",
    "FlowParams",
    "Market",
    "ReplayMarket",
    "SimExchange",
    "SimLimits",
    "Subscription",
    "SymbolActivity",
    "SymbolSpec",
    "SymbolStats",
    "Tape",
    "TruthCursor",
    "Update",
    "build_tape",
    "load_capture",
    "parse_fault_spec",
    "plan_exchange",
    "run_simulator",
    "spec_for",
]
