"""What every symbol stream shares, whichever API feeds it (pure, no I/O).

A stream is the sans-I/O protocol of one symbol: the feed (the I/O shell) hands it
each frame with `feed(raw, recv_ns)` and writes the records it returns, sends the
requests it queues (`outbox`, `take_requests()`), and on `StreamBroken` marks the
break in the file. `SymbolStream` is all the feed knows of it; `V1Stream` and
`CurrentStream` implement it, and what differs between the APIs (the URL, whether
the exchange sends heartbeats, whether a break can be repaired on the same socket)
is said by the stream class.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Protocol

from collector.core.book import Book
from collector.core.format import Reason


class StreamBroken(Exception):
    def __init__(self, reason: Reason, **fields: Any) -> None:
        super().__init__(reason, fields)
        self.reason = Reason(reason)
        self.fields = fields


class StreamState(StrEnum):
    IDLE = "idle"  # nothing asked for yet (current API, before start())
    SUBSCRIBING = "subscribing"  # waiting for the snapshot: the next book is the whole book
    LIVE = "live"  # the book is known; continuity is checked frame by frame
    UNSUBSCRIBING = "unsubscribing"  # repairing on the same socket: old frames dropped until the ack
    BROKEN = "broken"  # the book is forgotten until a repair or a new connection


# The only moves a stream makes; anything else is a bug (`advance` raises).
TRANSITIONS: dict[StreamState, frozenset[StreamState]] = {
    StreamState.IDLE: frozenset({StreamState.SUBSCRIBING, StreamState.BROKEN}),
    # SUBSCRIBING -> UNSUBSCRIBING: a snapshot that never came, asked for again
    StreamState.SUBSCRIBING: frozenset({StreamState.LIVE, StreamState.BROKEN, StreamState.UNSUBSCRIBING}),
    StreamState.LIVE: frozenset({StreamState.BROKEN}),
    StreamState.BROKEN: frozenset({StreamState.UNSUBSCRIBING, StreamState.BROKEN}),
    StreamState.UNSUBSCRIBING: frozenset({StreamState.SUBSCRIBING, StreamState.BROKEN}),
}


def advance(state: StreamState, to: StreamState) -> StreamState:
    if to not in TRANSITIONS[state]:
        raise RuntimeError(f"stream state {state} cannot move to {to}")
    return to


class Observer(Protocol):
    """Where latencies (whole ms) go: a `Histogram`, or anything with its `observe`."""

    def observe(self, value: int) -> None: ...


@dataclass
class Counts:
    """Running totals; a feed passes one object to each of its streams."""

    updates: int = 0  # frames carrying book changes (the snapshot excluded)
    trades: int = 0
    latency: Observer | None = None  # receive - exchange ms of every update frame


class SymbolStream(Protocol):
    """One symbol's protocol state on one connection, as the feed drives it."""

    HEARTBEATS: ClassVar[bool]  # the exchange sends frames even when the book is quiet
    REPAIRS_IN_PLACE: ClassVar[bool]  # a gap can be repaired without a new socket

    symbol: str
    book: Book | None
    state: StreamState

    @staticmethod
    def url(base: str, symbol: str, trades: bool) -> str:
        """The URL to connect to for this symbol."""
        ...

    @property
    def live(self) -> bool: ...

    @property
    def outbox(self) -> Sequence[bytes]:
        """Requests waiting to be sent (empty for most frames)."""
        ...

    def start(self) -> None:
        """The connection is open: queue what to ask for."""

    def feed(self, raw: bytes, recv_ns: int) -> bytes:
        """Consume one frame; the records it produced (possibly b"")."""
        ...

    def take_requests(self) -> list[bytes]:
        """The requests to send now, in order."""
        ...

    def resync(self) -> None:
        """After a break, get a fresh snapshot on the same socket (REPAIRS_IN_PLACE)."""


OnUnknown = Callable[[str], None]  # called with each unknown event or frame type

# However many unknown kinds a peer invents, a feed counts them under at most
# MAX_UNKNOWN_KINDS names (OTHER included) of at most MAX_KIND_CHARS characters, so its
# memory, and the metrics' series, stay bounded.
MAX_UNKNOWN_KINDS = 64
MAX_KIND_CHARS = 64
OTHER = "other"


def count_unknown(counts: Counter[str], kind: str) -> str:
    """Count one unknown event or frame type; the name it was counted under."""
    kind = kind[:MAX_KIND_CHARS]
    if kind not in counts and len(counts) >= MAX_UNKNOWN_KINDS - 1:
        kind = OTHER
    counts[kind] += 1
    return kind
