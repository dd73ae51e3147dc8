"""A simulated Gemini exchange (v1 market-data WebSocket + public REST) for tests and
benchmarks. Independent of the rest of ``collector`` on purpose: it is the truth the
collector is held against, so it has its own book and its own frame encoding.

    async with SimExchange(symbols=["BTCUSD"], seed=1, rate=50.0) as sim:
        url = f"{sim.ws_url}/BTCUSD?heartbeat=true"
        sim.inject("BTCUSD", "gap")
        await sim.wait_for(lambda: sim.stats["BTCUSD"].connections >= 1)
        bids, asks = sim.truth("BTCUSD").top_at(event_id, 10)
"""

from .faults import Fault, FaultKind, FiredFault, parse_fault_spec
from .frames import Subscription
from .market import FlowParams, Market, Update
from .server import SimExchange, run_simulator
from .stats import SymbolStats
from .symbols import BUILTIN, SymbolSpec, spec_for
from .truth import TruthCursor

__all__ = [
    "BUILTIN",
    "Fault",
    "FaultKind",
    "FiredFault",
    "FlowParams",
    "Market",
    "SimExchange",
    "Subscription",
    "SymbolSpec",
    "SymbolStats",
    "TruthCursor",
    "Update",
    "parse_fault_spec",
    "run_simulator",
    "spec_for",
]
