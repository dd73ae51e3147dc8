"""Counters the simulator exposes to tests, and a way to wait on them without sleeping."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from .faults import FaultKind, FiredFault

__all__ = ["ExchangeStats", "Notifier", "SymbolStats"]


@dataclass
class SymbolStats:
    """Per-symbol counters (all connections of the symbol together)."""

    handshakes: int = 0  # accepted WebSocket handshakes
    refused: int = 0  # handshakes answered 429/503 by the refuse fault
    connections: int = 0  # open now (stalled ones included)
    connections_closed: int = 0
    frames_queued: int = 0  # frames given a place in a send buffer (garbage included)
    frames_sent: int = 0  # frames written to a socket (garbage included)
    heartbeats: int = 0  # heartbeat frames numbered
    updates: int = 0  # market updates published
    last_event_id: int = 0  # latest published event id (initial book's id before any)
    slow_closes: int = 0  # connections dropped because their send buffer overflowed
    rest_requests: int = 0
    loops: int = 0  # replay mode: times the tape restarted from the beginning
    faults: list[FiredFault] = field(default_factory=list)

    def fired(self, kind: str | FaultKind | None = None) -> list[FiredFault]:
        """Fired faults, optionally of one kind."""
        if kind is None:
            return list(self.faults)
        k = FaultKind(kind)
        return [f for f in self.faults if f.kind is k]


@dataclass
class ExchangeStats:
    """Counters of the simulator as a whole: every 429 it answered, and its blips."""

    connect_limited: int = 0  # current-API handshakes refused 429: too many connection attempts
    request_limited: int = 0  # SUBSCRIBE/UNSUBSCRIBE answered code 429: too much request weight
    rest_limited: int = 0  # REST requests answered 429: too many per minute
    refused_429: int = 0  # handshakes (either API) refused 429 by the `refuse` fault
    request_weight: int = 0  # weight of the SUBSCRIBE/UNSUBSCRIBE requests admitted
    blips: int = 0  # sim.blip() calls
    blip_sockets: int = 0  # sockets those blips dropped

    @property
    def total_429(self) -> int:
        """Every 429 answered, by a limit or by an injected or random fault."""
        return self.connect_limited + self.request_limited + self.rest_limited + self.refused_429

    def as_dict(self) -> dict[str, int]:
        out = dict(vars(self))
        out["total_429"] = self.total_429
        return out


class Notifier:
    """Wakes waiters whenever some counter changes; waiters also re-check every ``poll``
    seconds so predicates over state the simulator does not own still work."""

    def __init__(self, poll: float = 0.02) -> None:
        self._event = asyncio.Event()
        self._waiters = 0
        self.poll = poll

    def notify(self) -> None:
        if self._waiters:
            self._event.set()
            self._event = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._waiters += 1
        try:
            while not predicate():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError(f"condition not met within {timeout} s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._event.wait(), min(self.poll, remaining))
        finally:
            self._waiters -= 1
