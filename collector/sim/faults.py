"""Fault kinds, their parameters, random-fault specs and the record of fired faults.

Two families:
* connection faults act on the frames of an open connection:
  gap, garbage, stall, close, crossed, unknown, duplicate, corrupt;
* handshake faults act on the next WebSocket handshakes of a symbol:
  refuse (HTTP 429/503 with Retry-After), slow_snapshot (seq-0 frame delayed).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .ladder import Ladder

__all__ = [
    "CONNECTION_KINDS",
    "HANDSHAKE_KINDS",
    "UPDATE_ONLY",
    "Fault",
    "FaultKind",
    "FiredFault",
    "RandomFaults",
    "corrupt_level",
    "parse_fault_spec",
]


class FaultKind(StrEnum):
    GAP = "gap"  # drop one frame but consume its socket_sequence
    GARBAGE = "garbage"  # a non-JSON text frame; consumes no sequence number
    STALL = "stall"  # connection stays open, nothing more is sent
    CLOSE = "close"  # TCP transport aborted, no close frame
    CROSSED = "crossed"  # an update whose change crosses the book (not in the truth)
    UNKNOWN = "unknown"  # an update that also carries an event of an unknown type
    # An already-sent frame sent again: v1, the carrier frame with its socket_sequence (a
    # gap to the client); current API, the previous depth frame and the carrier (stale).
    DUPLICATE = "duplicate"
    # The next update's frame, its numbers right and its content wrong: the best bid (or,
    # with no bid, the best ask) one amount increment more than the truth, which keeps it.
    CORRUPT = "corrupt"
    REFUSE = "refuse"  # handshake answered 429 (or 503) with Retry-After
    SLOW_SNAPSHOT = "slow_snapshot"  # the seq-0 frame is sent late


HANDSHAKE_KINDS = frozenset({FaultKind.REFUSE, FaultKind.SLOW_SNAPSHOT})
CONNECTION_KINDS = frozenset(FaultKind) - HANDSHAKE_KINDS
UPDATE_ONLY = frozenset({FaultKind.UNKNOWN, FaultKind.CORRUPT})  # carried by an update frame only

# Accepted parameters and their defaults, per kind.
_PARAMS: dict[FaultKind, dict[str, Any]] = {
    FaultKind.REFUSE: {"count": 1, "retry_after": 1, "status": 429},
    FaultKind.SLOW_SNAPSHOT: {"delay": 2.0},
}


@dataclass(frozen=True)
class Fault:
    """One armed fault with its (validated) parameters."""

    kind: FaultKind
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def make(cls, kind: str | FaultKind, **params: Any) -> Fault:
        try:
            k = FaultKind(kind)
        except ValueError:
            raise ValueError(f"unknown fault kind {kind!r}; valid: {', '.join(FaultKind)}") from None
        allowed = _PARAMS.get(k, {})
        extra = set(params) - set(allowed)
        if extra:
            raise ValueError(f"fault {k.value!r} takes no parameter(s) {sorted(extra)}; "
                             f"accepted: {sorted(allowed) or 'none'}")
        merged = {**allowed, **params}
        if k is FaultKind.REFUSE:
            if int(merged["count"]) < 1:
                raise ValueError("refuse count must be >= 1")
            if int(merged["status"]) not in (429, 503):
                raise ValueError("refuse status must be 429 or 503")
            if float(merged["retry_after"]) < 0:
                raise ValueError("refuse retry_after must be >= 0")
        if k is FaultKind.SLOW_SNAPSHOT and float(merged["delay"]) < 0:
            raise ValueError("slow_snapshot delay must be >= 0")
        return cls(k, merged)


@dataclass(frozen=True)
class FiredFault:
    """A fault that took effect. ``socket_sequence`` is the sequence number the fault
    concerned: the dropped one for gap, the lie's for crossed, the carrier frame's for
    unknown and duplicate, otherwise the next number the connection would have used
    (None for handshake refusals); on the current API, the update id `u` instead.
    ``event_id`` is the symbol's latest published event id then."""

    kind: FaultKind
    symbol: str
    conn_id: int | None
    socket_sequence: int | None
    event_id: int
    random: bool
    at: float  # time.monotonic()


def corrupt_level(bids: Ladder, asks: Ladder) -> tuple[bool, int, int] | None:
    """The level a ``corrupt`` frame lies about, (is_bid, price, units): the best bid (or,
    with no bid, the best ask) with one amount increment more than the true book has."""
    for is_bid, ladder in ((True, bids), (False, asks)):
        best = ladder.best()
        if best is not None:
            return is_bid, best, ladder.get(best) + 1
    return None


def parse_fault_spec(spec: str) -> dict[FaultKind, float]:
    """Parse ``"gap=0.001,garbage=0.0005"`` into per-kind probabilities.

    Connection kinds: probability per frame (update or heartbeat) of each connection.
    Handshake kinds: probability per WebSocket handshake. "" means no faults.
    """
    rates: dict[FaultKind, float] = {}
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep:
            raise ValueError(f"fault spec item {item!r} must look like KIND=PROBABILITY")
        try:
            kind = FaultKind(name)
        except ValueError:
            raise ValueError(f"fault spec: unknown kind {name!r}; valid: {', '.join(FaultKind)}") from None
        try:
            p = float(value)
        except ValueError:
            raise ValueError(f"fault spec: {name}={value!r} is not a number") from None
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"fault spec: {name}={value} must be a probability in [0, 1]")
        if kind in rates:
            raise ValueError(f"fault spec: {name} given twice")
        rates[kind] = p
    return rates


class RandomFaults:
    """Seeded random faults from a parsed spec."""

    def __init__(self, rates: dict[FaultKind, float], seed: int | str) -> None:
        self.rates = {k: p for k, p in rates.items() if p > 0}
        self.rng = random.Random(f"{seed}:faults")
        self._frame = [(k, p) for k, p in self.rates.items() if k in CONNECTION_KINDS]

    def roll_frame(self, is_update: bool) -> list[FaultKind]:
        """Kinds that fire on this frame (``unknown`` and ``corrupt`` only on updates)."""
        if not self._frame:
            return []
        rnd = self.rng.random
        return [k for k, p in self._frame
                if rnd() < p and (is_update or k not in UPDATE_ONLY)]

    def roll_handshake(self, kind: FaultKind) -> bool:
        """Whether a handshake fault of this kind fires on this handshake."""
        p = self.rates.get(kind, 0.0)
        return p > 0 and self.rng.random() < p
