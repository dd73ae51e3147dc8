"""The audit's pure part: the exchange's REST book held against a live book's states.

Theory of operation. While an audit of a symbol is armed, its feed hands a `Tap` the
stream after every applied frame; the tap keeps each distinct top-`depth` state with the
(monotonic) time it was first seen, and the state at arming. The REST answer
(`parse_book`, defensive: anything that is not a plain book is `BadAnswer`) then
`judge`s against those states: it matches when one of them equals it level for level,
by exact decimal value (REST writes "60000.5" where the stream may write "60000.500").
Its age is how long before the answer arrived the stream had already moved past the
matching state (0: the answer still showed the live book; negative: the stream showed it
only after the answer came: the REST book can be ahead of the stream, whose current API
sends depth every 100 ms). `Track` keeps one symbol's run of results: two mismatches in a
row mean the live book cannot be trusted.

Nothing here reads a clock or a socket: times are passed in (the tap's clock is injected).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol

import orjson

from collector.core.book import Book
from collector.core.format import DECIMAL, Level, canonical, is_zero

MAX_ANSWER_BYTES = 4 << 20  # a full 5,000-level side is about 400 kB
MAX_NUMBER_CHARS = 64  # no price or amount is longer; longer text is refused unread
MAX_STATES = 20_000  # per tap, newest kept: far more than a busy book changes in max_age_s
MAX_DIFFERENCES = 6  # levels named in a detail
MISMATCHES_TO_RESYNC = 2  # in a row, for one symbol
FAILING_AFTER = 3  # audits in a row that did not match: a health problem


class BadAnswer(Exception):
    """The REST answer is not a usable book; the message says why (bounded)."""


Levels = tuple[Level, ...]  # canonical (price, amount), best first


@dataclass(frozen=True)
class RestBook:
    bids: Levels
    asks: Levels


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _side(raw: Any, name: str, bids: bool, depth: int) -> Levels:
    if not isinstance(raw, list):
        raise BadAnswer(f"{name}: not a list but {type(raw).__name__}")
    seen: dict[str, tuple[Decimal, Level]] = {}
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise BadAnswer(f"{name}[{i}]: not an object: {_show(entry)}")
        price, amount = entry.get("price"), entry.get("amount")
        for key, text in (("price", price), ("amount", amount)):
            if not isinstance(text, str) or len(text) > MAX_NUMBER_CHARS or not DECIMAL.match(text):
                raise BadAnswer(f"{name}[{i}].{key}: not a decimal string: {_show(text)}")
        assert isinstance(price, str) and isinstance(amount, str)
        if is_zero(amount):
            raise BadAnswer(f"{name}[{i}]: amount is zero at price {price}")
        canon = canonical(price)
        if canon in seen:
            raise BadAnswer(f"{name}: price {price} listed twice")
        seen[canon] = (Decimal(canon), (canon, canonical(amount)))
    ordered = sorted(seen.values(), key=lambda kv: kv[0], reverse=bids)
    return tuple(level for _, level in ordered[:depth])


def parse_book(body: bytes, depth: int) -> RestBook:
    """`GET /v1/book/<symbol>`'s answer, `{"bids":[{"price","amount","timestamp"}..],
    "asks":[..]}`, as its best `depth` levels per side in canonical text; BadAnswer for
    anything else (too big, not JSON, other shapes, a bad number, a price twice). Levels
    are ordered here (best first), whatever order they came in."""
    if len(body) > MAX_ANSWER_BYTES:
        raise BadAnswer(f"answer of {len(body)} bytes, more than {MAX_ANSWER_BYTES}")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadAnswer(f"not JSON: {str(exc)[:80]}; starts {_show(body[:40])}") from None
    if not isinstance(data, dict):
        raise BadAnswer(f"not a JSON object: {_show(data)}")
    if "bids" not in data or "asks" not in data:
        raise BadAnswer(f"no bids and asks: {_show(data)}")
    return RestBook(_side(data["bids"], "bids", True, depth), _side(data["asks"], "asks", False, depth))


# ---- the live side ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class State:
    """A top-`depth` book the stream had from `at` (monotonic) until the next state;
    bids None: the book was unknown from then on (the stream broke)."""

    at: float
    bids: list[Level] | None
    asks: list[Level] | None


class Tapped(Protocol):
    """What a tap reads of a stream: its book, None while it is not live."""

    @property
    def book(self) -> Book | None: ...


class Tap:
    """A feed's states while one audit is armed. The feed calls `saw(stream)` after each
    applied frame (only while armed: one attribute test per frame otherwise). Bounded:
    a state superseded more than `keep_s` ago can never match (an audit compares the
    states of `max_age_s` before its request), so it is dropped; at most MAX_STATES."""

    __slots__ = ("clock", "depth", "keep_s", "states")

    def __init__(self, depth: int, keep_s: float, clock: Callable[[], float]) -> None:
        self.depth = depth
        self.keep_s = keep_s
        self.clock = clock
        self.states: deque[State] = deque(maxlen=MAX_STATES)

    def saw(self, stream: Tapped) -> None:
        book = stream.book
        if book is None:
            self.lost()
            return
        states = self.states
        last = states[-1] if states else None
        depth = self.depth
        bids, asks = book.bids.top(depth), book.asks.top(depth)
        if last is not None and last.bids == bids and last.asks == asks:
            return  # a trade, or a change below the top: the same state
        now = self.clock()
        states.append(State(now, bids, asks))
        self.trim(now)

    def lost(self) -> None:
        """The book is unknown from now on (the stream broke, or is not live)."""
        states = self.states
        if not states or states[-1].bids is not None:
            states.append(State(self.clock(), None, None))

    def trim(self, now: float) -> None:
        """Drop the states superseded before `now - keep_s`."""
        states, horizon = self.states, now - self.keep_s
        while len(states) > 1 and states[1].at <= horizon:
            states.popleft()


@dataclass(frozen=True)
class Verdict:
    matched: bool
    # matched: how long the stream had moved past the REST book when it arrived (0: it had
    # not; negative: the stream reached it only that long after the answer)
    age_s: float | None
    compared: int  # known states compared
    differences: tuple[str, ...]  # mismatched: the levels that differ from the closest state


def _canonical(levels: Sequence[Level]) -> Levels:
    return tuple((canonical(p), canonical(q)) for p, q in levels)


def differences(rest: RestBook, bids: Levels, asks: Levels) -> list[str]:
    """Each level that differs, as `bids[i] rest P Q, stream P Q` ("none" where absent)."""
    out = []
    for name, theirs, ours in (("bids", rest.bids, bids), ("asks", rest.asks, asks)):
        for i in range(max(len(theirs), len(ours))):
            a = theirs[i] if i < len(theirs) else None
            b = ours[i] if i < len(ours) else None
            if a != b:
                out.append(f"{name}[{i}] rest {' '.join(a) if a else 'none'}, "
                           f"stream {' '.join(b) if b else 'none'}")
    return out


def judge(rest: RestBook, states: Sequence[State], arrived: float) -> Verdict:
    """The REST book against the states (oldest first) a tap kept; `arrived` is when the
    answer came (the tap's clock). The newest matching state counts: current at
    `arrived`, it is 0 s old; superseded, as old as the time since its successor came;
    first seen after `arrived`, minus the time it came later."""
    best: tuple[int, Levels, Levels] | None = None
    compared = 0
    for i in range(len(states) - 1, -1, -1):  # newest first: the newest match counts
        state = states[i]
        if state.bids is None or state.asks is None:
            continue
        compared += 1
        bids, asks = _canonical(state.bids), _canonical(state.asks)
        if bids == rest.bids and asks == rest.asks:
            if state.at > arrived:
                return Verdict(True, arrived - state.at, compared, ())
            end = states[i + 1].at if i + 1 < len(states) else arrived
            return Verdict(True, max(0.0, arrived - end), compared, ())
        diff = len(differences(rest, bids, asks))
        if best is None or diff < best[0]:
            best = (diff, bids, asks)
    if best is None:
        return Verdict(False, None, 0, ())
    found = differences(rest, best[1], best[2])
    shown = found[:MAX_DIFFERENCES]
    if len(found) > MAX_DIFFERENCES:
        shown.append(f"and {len(found) - MAX_DIFFERENCES} more")
    return Verdict(False, None, compared, tuple(shown))


# ---- one symbol's run of results -----------------------------------------------------------


class Outcome(StrEnum):
    """How one audit ended (the metrics' `result` label)."""

    MATCH = "match"
    MISMATCH = "mismatch"
    NOT_LIVE = "not_live"  # no live book during the audit: nothing to compare (not counted against it)
    RATE_LIMITED = "rate_limited"  # HTTP 429
    BAD_ANSWER = "bad_answer"  # an HTTP error, or an answer that is not a book
    FAILED = "failed"  # unreachable, or no answer in time


ERRORS = frozenset({Outcome.RATE_LIMITED, Outcome.BAD_ANSWER, Outcome.FAILED})


@dataclass
class Track:
    """One symbol's audits. `mismatches`: in a row since the book was last rebuilt (a
    REST error neither breaks nor extends the run); `failing`: audits in a row that did
    not match, for whatever reason (a health problem from FAILING_AFTER on)."""

    mismatches: int = 0
    failing: int = 0
    recent: deque[Outcome] = field(default_factory=lambda: deque(maxlen=FAILING_AFTER))
    resyncs_seen: int = 0  # the feed's resync count at the last audit

    def rebuilt(self, resyncs: int) -> None:
        """The feed's failure count now: a change since the last audit means the book was
        dropped and taken afresh meanwhile, so earlier mismatches no longer count."""
        if resyncs != self.resyncs_seen:
            self.resyncs_seen = resyncs
            self.mismatches = 0

    def record(self, outcome: Outcome) -> bool:
        """Note one audit; True when the live book must be resynchronised now."""
        if outcome is Outcome.NOT_LIVE:
            self.mismatches = 0
            return False
        self.recent.append(outcome)
        if outcome is Outcome.MATCH:
            self.mismatches = self.failing = 0
            return False
        self.failing += 1
        if outcome is Outcome.MISMATCH:
            self.mismatches += 1
            if self.mismatches >= MISMATCHES_TO_RESYNC:
                self.mismatches = 0
                return True
        return False

    @property
    def problem(self) -> str | None:
        """Why this symbol's audits keep failing, if they do."""
        if self.failing < FAILING_AFTER:
            return None
        kinds = ", ".join(f"{k} x{n}" for k, n in Counter(self.recent).most_common())
        return f"the last {self.failing} audits did not match the exchange's REST book ({kinds})"
