"""A capture compiled into per-symbol tapes of v1 updates (pure, no I/O).

``build_tape(capture)`` walks each symbol's received messages with an exact book and turns
them into what a v1 connection would have seen: the symbol's first book message is its
initial book; every later book message becomes one ``TapeStep`` holding v1 ``change``
events (``remaining`` = the new quantity, ``delta`` computed, no-op changes dropped), a
v2 ``trade`` becomes a step with one v1 ``trade`` event (``makerSide`` = the opposite of
the v2 taker ``side``). A change that shrinks a level a trade just hit (same price, maker
side, within 2 s) gets reason ``trade``; other changes ``place``/``cancel`` by the sign
of the delta. A later full book for a symbol (a re-subscription in the capture, or a
raw v1 capture's reconnect) becomes a ``resync`` step: the changes that turn the book
into the new one. Event ids and trade ids are left to the player (``replay.py``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from .capture import Capture, Message
from .market import Change, Event
from .symbols import BUILTIN, Scale, SymbolSpec, spec_for

__all__ = ["SymbolTape", "Tape", "TapeStep", "build_tape"]

_TRADE_MATCH_NS = 2_000_000_000  # a trade explains level decreases this long after it
_BOOK_TYPES = frozenset({"l2_updates", "update"})


@dataclass(frozen=True, slots=True)
class TapeStep:
    """One v1 update frame to publish. Trade events carry ``tid`` 0 (numbered on play)."""

    ts_ns: int  # receive time in the capture
    kind: str  # place | cancel | trade | resync | block_trade | auction
    events: list[Event]
    changes: list[Change]  # (is_bid, price ticks, remaining units), in order


@dataclass
class SymbolTape:
    symbol: str
    spec: SymbolSpec
    initial_bids: list[tuple[int, int]]  # (ticks, units)
    initial_asks: list[tuple[int, int]]
    snapshot_ns: int  # receive time of the initial book
    steps: list[TapeStep] = field(default_factory=list)
    dropped: int = 0  # messages before the initial book, duplicates, ignored types


@dataclass
class Tape:
    path: Path
    symbols: dict[str, SymbolTape]
    start_ns: int  # first received message of the capture (any symbol)
    end_ns: int  # last one
    counts: Counter[str]  # received messages by type

    @property
    def span_ns(self) -> int:
        return self.end_ns - self.start_ns


# ---- symbol specs ------------------------------------------------------------------------

def _places(text: str) -> int:
    exp = Decimal(text).normalize().as_tuple().exponent
    assert isinstance(exp, int)
    return max(0, -exp)


def _pow10(places: int) -> str:
    return format(Decimal(1).scaleb(-places), "f")


def _fits(scale: Scale, values: set[str]) -> bool:
    inc = scale.increment
    return all(Decimal(v) % inc == 0 for v in values)


def _dec_text(value: Any) -> str:
    return format(Decimal(str(value)).normalize(), "f")


def _spec(symbol: str, prices: set[str], amounts: set[str],
          details: dict[str, Any] | None) -> SymbolSpec:
    """The built-in spec, else the capture's own /v1/symbols/details, if every price and
    amount lies on their grids; else increments derived from the finest decimals seen."""
    candidates: list[SymbolSpec] = []
    if symbol in BUILTIN:
        candidates.append(BUILTIN[symbol])
    if details is not None:
        try:
            generic = spec_for(symbol)
            candidates.append(SymbolSpec(
                symbol, str(details.get("base_currency") or generic.base),
                str(details.get("quote_currency") or generic.quote),
                _dec_text(details["quote_increment"]), _dec_text(details["tick_size"]),
                _dec_text(details.get("min_order_size", details["tick_size"])),
                generic.ref_price, generic.typical_size,
                product_type=str(details.get("product_type", "spot")),
                contract_type=str(details.get("contract_type", "vanilla")),
                contract_price_currency=details.get("contract_price_currency")))
        except (KeyError, InvalidOperation, ValueError):
            pass
    for spec in candidates:
        if _fits(spec.price_scale, prices) and _fits(spec.amount_scale, amounts):
            return spec
    generic = spec_for(symbol)
    pinc = _pow10(max((_places(p) for p in prices), default=2))
    ainc = _pow10(max((_places(a) for a in amounts), default=8))
    return SymbolSpec(symbol, generic.base, generic.quote, pinc, ainc, ainc, generic.ref_price,
                      generic.typical_size, product_type=generic.product_type,
                      contract_type=generic.contract_type,
                      contract_price_currency=generic.contract_price_currency)


def _collect_decimals(msgs: Iterable[Message]) -> tuple[set[str], set[str]]:
    prices: set[str] = set()
    amounts: set[str] = set()
    for m in msgs:
        d = m.data
        t = d.get("type")
        if t == "l2_updates":
            for _, price, qty in d.get("changes", ()):
                prices.add(price)
                amounts.add(qty)
        elif t == "trade" and m.v1_symbol is None:
            prices.add(d["price"])
            amounts.add(d["quantity"])
        elif t == "update":
            for ev in d.get("events", ()):
                et = ev.get("type")
                if et == "change":
                    prices.add(ev["price"])
                    amounts.add(ev["remaining"])
                elif et in ("trade", "block_trade"):
                    prices.add(ev["price"])
                    amounts.add(ev["amount"])
    return prices, amounts


# ---- compiling -----------------------------------------------------------------------------

class _Compiler:
    """Walks one symbol's messages with an exact book and emits tape steps."""

    def __init__(self, symbol: str, spec: SymbolSpec) -> None:
        self.symbol = symbol
        self.spec = spec
        self.p = spec.price_scale
        self.a = spec.amount_scale
        self.book: dict[bool, dict[int, int]] = {True: {}, False: {}}
        self.initial: tuple[list[tuple[int, int]], list[tuple[int, int]]] | None = None
        self.snapshot_ns = 0
        self.steps: list[TapeStep] = []
        self.dropped = 0
        self.pending: list[list[Any]] = []  # [maker_is_bid, ticks, units left, ts_ns]
        self.last_v1_event_id: int | None = None

    # -- helpers

    def _change(self, is_bid: bool, ticks: int, new: int, old: int, reason: str) -> Event:
        return {"type": "change", "side": "bid" if is_bid else "ask",
                "price": self.p.render(ticks), "remaining": self.a.render(new),
                "delta": self.a.render(new - old), "reason": reason}

    def _trade_reason(self, is_bid: bool, ticks: int, old: int, new: int, ts: int) -> str | None:
        for entry in self.pending:
            if entry[0] == is_bid and entry[1] == ticks and entry[2] > 0 \
                    and ts - entry[3] <= _TRADE_MATCH_NS:
                entry[2] -= old - new
                return "trade"
        return None

    def _apply(self, items: Iterable[tuple[bool, int, int, str | None]], ts: int,
               infer_trade: bool) -> tuple[list[Event], list[Change]]:
        events: list[Event] = []
        changes: list[Change] = []
        for is_bid, ticks, new, reason in items:
            side = self.book[is_bid]
            old = side.get(ticks, 0)
            if new == old:
                continue  # no-op (a delete of an absent level, a repeated quantity)
            if reason is None or reason == "initial":
                reason = None
                if infer_trade and new < old:
                    reason = self._trade_reason(is_bid, ticks, old, new, ts)
                reason = reason or ("place" if new > old else "cancel")
            if new:
                side[ticks] = new
            else:
                del side[ticks]
            events.append(self._change(is_bid, ticks, new, old, reason))
            changes.append((is_bid, ticks, new))
        return events, changes

    def _emit(self, ts: int, events: list[Event], changes: list[Change], kind: str | None = None) -> None:
        if not events:
            return
        if kind is None:
            types = [e["type"] for e in events]
            if "trade" in types:
                kind = "trade"
            elif "block_trade" in types and not changes:
                kind = "block_trade"
            elif changes:
                kind = next(e["reason"] for e in events if e["type"] == "change")
            else:
                kind = "auction"
        self.steps.append(TapeStep(ts, kind, events, changes))

    def _full_book(self, levels: Iterable[tuple[bool, int, int]], ts: int) -> None:
        """An initial book, or a later one (resync: the changes that lead to it)."""
        target: dict[bool, dict[int, int]] = {True: {}, False: {}}
        for is_bid, ticks, units in levels:
            if units:
                target[is_bid][ticks] = units
            else:
                target[is_bid].pop(ticks, None)
        if self.initial is None:
            self.book = target
            self.initial = (sorted(target[True].items()), sorted(target[False].items()))
            self.snapshot_ns = ts
            return
        items: list[tuple[bool, int, int, str | None]] = []
        for is_bid in (True, False):
            cur, new = self.book[is_bid], target[is_bid]
            items.extend((is_bid, t, 0, None) for t in sorted(cur) if t not in new)
            items.extend((is_bid, t, u, None) for t, u in sorted(new.items()) if cur.get(t) != u)
        events, changes = self._apply(items, ts, infer_trade=False)
        self._emit(ts, events, changes, "resync")

    # -- v2

    def v2(self, m: Message) -> None:
        d, ts = m.data, m.ts_ns
        t = d.get("type")
        if t == "l2_updates":
            levels = [(side == "buy", self.p.to_units(price), self.a.to_units(qty))
                      for side, price, qty in d.get("changes", ())]
            if self.initial is None or "trades" in d or "auction_events" in d:
                self._full_book(levels, ts)  # the first message of a subscription
                return
            self.pending = [e for e in self.pending if ts - e[3] <= _TRADE_MATCH_NS and e[2] > 0]
            events, changes = self._apply(((b, x, u, None) for b, x, u in levels), ts, True)
            self._emit(ts, events, changes)
        elif t == "trade":
            if self.initial is None:
                self.dropped += 1
                return
            maker_is_bid = d.get("side") == "sell"  # v2 side is the taker's
            price, qty = self.p.to_units(d["price"]), self.a.to_units(d["quantity"])
            self.pending.append([maker_is_bid, price, qty, ts])
            ev = {"type": "trade", "tid": 0, "price": self.p.render(price),
                  "amount": self.a.render(qty), "makerSide": "bid" if maker_is_bid else "ask"}
            self._emit(ts, [ev], [])
        else:
            self.dropped += 1

    # -- v1 (raw frames)

    def v1(self, m: Message) -> None:
        d, ts = m.data, m.ts_ns
        if d.get("type") != "update":
            if d.get("type") != "heartbeat":
                self.dropped += 1
            return
        eid = d.get("eventId")
        if isinstance(eid, int):
            if self.last_v1_event_id is not None and eid <= self.last_v1_event_id:
                self.dropped += 1  # already seen (a second connection of the same symbol)
                return
            self.last_v1_event_id = eid
        evs = d.get("events", [])
        if any(e.get("reason") == "top-of-book" for e in evs):
            raise ValueError(f"{self.symbol}: top_of_book frames cannot be replayed "
                             "(a full-depth capture is needed)")
        if d.get("socket_sequence") == 0 or any(e.get("reason") == "initial" for e in evs):
            self._full_book(((e["side"] == "bid", self.p.to_units(e["price"]),
                              self.a.to_units(e["remaining"]))
                             for e in evs if e.get("type") == "change"), ts)
            return
        if self.initial is None:
            self.dropped += 1
            return
        events: list[Event] = []
        changes: list[Change] = []
        for e in evs:
            et = e.get("type")
            if et == "change":
                ev, ch = self._apply([(e["side"] == "bid", self.p.to_units(e["price"]),
                                       self.a.to_units(e["remaining"]), e.get("reason"))],
                                     ts, False)
                events += ev
                changes += ch
            elif et in ("trade", "block_trade"):
                ev2 = {**e, "price": self.p.render(self.p.to_units(e["price"])),
                       "amount": self.a.render(self.a.to_units(e["amount"]))}
                if "tid" in ev2:
                    ev2["tid"] = 0
                events.append(ev2)
            elif isinstance(et, str):
                events.append(dict(e))  # auction events: passed through
        self._emit(ts, events, changes)


def build_tape(capture: Capture, symbols: Iterable[str] | None = None) -> Tape:
    """Compile a capture into one tape per symbol that has a book. ``symbols`` restricts
    (and orders) them; asking for one the capture has no book for is a ValueError."""
    by_symbol: dict[str, list[Message]] = defaultdict(list)
    for m in capture.messages:
        sym = m.symbol
        if sym is not None and m.type != "heartbeat":
            by_symbol[sym].append(m)
    wanted = list(dict.fromkeys(s.upper() for s in symbols)) if symbols is not None else None
    tapes: dict[str, SymbolTape] = {}
    for sym in wanted if wanted is not None else list(by_symbol):
        msgs = by_symbol.get(sym, [])
        if not any(m.type in _BOOK_TYPES for m in msgs):
            if wanted is not None:
                raise ValueError(f"{sym} has no order book in {capture.path.name} "
                                 f"(symbols with a book: {', '.join(_with_book(by_symbol))})")
            continue
        prices, amounts = _collect_decimals(msgs)
        comp = _Compiler(sym, _spec(sym, prices, amounts, capture.details.get(sym)))
        for m in msgs:
            (comp.v1 if m.v1_symbol is not None else comp.v2)(m)
        if comp.initial is None:  # v1 frames but no seq-0 snapshot
            if wanted is not None:
                raise ValueError(f"{sym}: no initial book (seq-0 frame) in {capture.path.name}")
            continue
        tapes[sym] = SymbolTape(sym, comp.spec, comp.initial[0], comp.initial[1],
                                comp.snapshot_ns, comp.steps, comp.dropped)
    if not tapes:
        raise ValueError(f"no order book found in {capture.path}")
    return Tape(capture.path, tapes, capture.start_ns, capture.end_ns, capture.counts)


def _with_book(by_symbol: dict[str, list[Message]]) -> list[str]:
    return [s for s, msgs in by_symbol.items() if any(m.type in _BOOK_TYPES for m in msgs)]
