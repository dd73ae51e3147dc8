"""A pure, seeded market for one symbol: an exact limit order book and its order flow.

No I/O and no clock: ``Market.step(now_ms)`` draws one exchange event (everything from
the market's own ``random.Random``), applies it to the book and returns it as an
``Update`` holding Gemini v1 event objects. Same seed and symbol => same sequence of
updates (event ids jump by seeded amounts but come from a counter shared by all markets,
so their absolute values are only reproducible when a single market draws from it).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .ladder import Ladder
from .symbols import SymbolSpec

__all__ = ["Change", "FlowParams", "IdSource", "Market", "Update"]

Event = dict[str, Any]
Change = tuple[bool, int, int]  # (is_bid, price ticks, remaining units) after the change


class IdSource:
    """Process-wide increasing counter: Gemini's ids are global, not per symbol."""

    def __init__(self, start: int) -> None:
        self.last = start

    def next(self, jump: int = 1) -> int:
        self.last += max(1, jump)
        return self.last


@dataclass(frozen=True)
class FlowParams:
    """Shape of the order flow. Probabilities are per update."""

    place: float = 0.5  # relative weights of the ordinary actions
    cancel: float = 0.42
    market: float = 0.08
    block_trade: float = 0.002  # off-book block trade, own frame
    auction: float = 0.0005  # start of an auction episode (open, indicatives, result)
    near_p: float = 0.07  # geometric parameter of a placement's distance (ticks) from fair
    near_share: float = 0.6  # share of placements/cancels near the touch (rest: anywhere)
    drift: float = 0.1  # chance per update that the fair price moves a few ticks
    cancel_p: float = 0.05  # geometric parameter of the level index cancelled
    gap_p: float = 0.35  # geometric parameter of the gap (ticks) between far levels
    full_cancel: float = 0.55  # chance a cancel removes the whole level
    max_sweep: int = 12  # most levels one marketable order trades through


@dataclass(slots=True)
class Update:
    """One exchange event as published in one v1 update frame."""

    event_id: int
    timestampms: int
    kind: str  # "place" | "cancel" | "trade" | "block_trade" | "auction"
    events: list[Event]  # Gemini event objects, full book mode
    changes: list[Change]  # book changes in order (for the truth)
    tob: list[Event]  # top-of-book change events, empty if the best levels did not move
    cache: dict[Any, bytes | None] = field(default_factory=dict)  # per-filter encodings


@dataclass(slots=True)
class _Auction:
    open_ms: int
    auction_ms: int
    indicatives_left: int


def _geometric(rng: random.Random, p: float) -> int:
    """0, 1, 2 ... with P(k) = p (1-p)^k."""
    return int(math.log(1.0 - rng.random()) / math.log(1.0 - p))


class Market:
    """Order book plus order flow for one symbol."""

    def __init__(
        self,
        spec: SymbolSpec,
        seed: int | str,
        depth: int = 500,
        event_ids: IdSource | None = None,
        trade_ids: IdSource | None = None,
        params: FlowParams | None = None,
    ) -> None:
        if depth < 2:
            raise ValueError("depth must be at least 2 levels per side")
        self.spec = spec
        self.depth = depth
        self.params = params or FlowParams()
        self.rng = random.Random(f"{seed}:{spec.symbol}")
        self.event_ids = event_ids or IdSource(1_764_559_146_000_000)
        self.trade_ids = trade_ids or IdSource(2_840_141_029_000_000)
        self.price = spec.price_scale.render
        self.amount = spec.amount_scale.render
        self._typical = max(1, spec.amount_scale.to_units(_on_grid(spec.typical_size, spec.amount_scale)))
        self._min_units = max(1, spec.amount_scale.to_units(_on_grid(spec.min_order_size, spec.amount_scale)))
        self.bids = Ladder(True)
        self.asks = Ladder(False)
        # Deep placements: mean distance about a third of the book's span in ticks.
        self._deep_p = min(0.5, 3.0 * self.params.gap_p / depth)
        self.fair = 0  # slow random walk (ticks) the flow is centred on; set by _build_initial
        self._build_initial()
        self.event_id = self.event_ids.next(self._id_jump())  # id of the initial state
        self.last_ms = 0
        self._auction: _Auction | None = None

    # ---- book construction -------------------------------------------------------

    def _build_initial(self) -> None:
        ref = max(4 * self.depth + 10, self.spec.price_scale.to_units(
            _on_grid(self.spec.ref_price, self.spec.price_scale)))
        self.fair = ref
        half = 1 + _geometric(self.rng, 0.5)
        bid, ask = ref - half, ref + half
        for _ in range(self.depth):
            self.bids.set(bid, self._size())
            self.asks.set(ask, self._size())
            bid -= 1 + _geometric(self.rng, self.params.gap_p)
            ask += 1 + _geometric(self.rng, self.params.gap_p)
            bid = max(bid, 1)  # very cheap symbols: stop going below one tick

    def _size(self) -> int:
        units = round(self._typical * self.rng.lognormvariate(0.0, 1.0))
        if self.rng.random() < 0.3:  # round lots ("1", "0.5") are common on real books
            mag = 10 ** max(0, len(str(units)) - 2)
            units = max(mag, units // mag * mag)
        return max(self._min_units, units)

    def _id_jump(self) -> int:
        return 1 + _geometric(self.rng, 0.02)

    # ---- public ------------------------------------------------------------------

    def best_bid(self) -> int | None:
        return self.bids.best()

    def best_ask(self) -> int | None:
        return self.asks.best()

    def step(self, now_ms: int) -> Update:
        """Draw, apply and return the next exchange event."""
        self.last_ms = max(self.last_ms, now_ms)
        before = self._touch()
        kind, events, changes = self._draw()
        self.event_id = self.event_ids.next(self._id_jump())
        for ev in events:  # auctions reference their own event id
            if "eid" in ev:
                ev["eid"] = self.event_id
        after = self._touch()
        tob: list[Event] = []
        for side, old, (price, units) in (("bid", before[0], after[0]), ("ask", before[1], after[1])):
            if price is not None and (price, units) != old:
                tob.append({"type": "change", "side": side, "price": self.price(price),
                            "remaining": self.amount(units), "reason": "top-of-book"})
        return Update(self.event_id, self.last_ms, kind, events, changes, tob)

    def _touch(self) -> tuple[tuple[int | None, int], tuple[int | None, int]]:
        b, a = self.bids.best(), self.asks.best()
        return ((b, self.bids.get(b) if b is not None else 0),
                (a, self.asks.get(a) if a is not None else 0))

    # ---- order flow ----------------------------------------------------------------

    def _draw(self) -> tuple[str, list[Event], list[Change]]:
        rng, p = self.rng, self.params
        if rng.random() < p.drift:
            self.fair = max(2, self.fair + rng.choice((-1, 1)) * (1 + _geometric(rng, 0.5)))
        if self._auction is not None and rng.random() < 0.1:
            return self._auction_step()
        r = rng.random()
        if r < p.block_trade:
            return self._block_trade()
        if r < p.block_trade + p.auction and self._auction is None:
            return self._auction_open()
        slack = max(2, self.depth // 20)
        deficit = {True: self.depth - len(self.bids), False: self.depth - len(self.asks)}
        short = max(deficit, key=lambda s: deficit[s])
        if deficit[short] > 0 and rng.random() < 0.5:
            return self._replenish(short)
        long_ = min(deficit, key=lambda s: deficit[s])
        if -deficit[long_] > slack:
            return self._trim(long_)
        u = rng.random() * (p.place + p.cancel + p.market)
        if u < p.place:
            return self._place_near(rng.random() < 0.5)
        if u < p.place + p.cancel:
            return self._cancel_near(rng.random() < 0.5)
        # Takers lean towards the fair price, which keeps the book around it.
        mid2 = (self.bids.best() or self.fair) + (self.asks.best() or self.fair)
        return self._marketable(rng.random() < (0.65 if mid2 < 2 * self.fair else 0.35))

    def _change(self, is_bid: bool, price: int, new: int, old: int, reason: str) -> Event:
        return {"type": "change", "side": "bid" if is_bid else "ask", "price": self.price(price),
                "remaining": self.amount(new), "delta": self.amount(new - old), "reason": reason}

    def _apply(self, is_bid: bool, price: int, new: int, reason: str) -> tuple[Event, Change]:
        side = self.bids if is_bid else self.asks
        old = side.get(price)
        side.set(price, new)
        return self._change(is_bid, price, new, old, reason), (is_bid, price, new)

    def _add(self, is_bid: bool, price: int) -> tuple[str, list[Event], list[Change]]:
        side = self.bids if is_bid else self.asks
        ev, ch = self._apply(is_bid, price, side.get(price) + self._size(), "place")
        return "place", [ev], [ch]

    def _place_near(self, is_bid: bool) -> tuple[str, list[Event], list[Change]]:
        """A resting order a geometric number of ticks behind the fair price (clamped so it
        never crosses): flow concentrates at the touch and refills a swept touch."""
        d = 1 + self._distance()
        if is_bid:
            price = self.fair - d
            ask = self.asks.best()
            if ask is not None:
                price = min(price, ask - 1)
        else:
            price = self.fair + d
            bid = self.bids.best()
            if bid is not None:
                price = max(price, bid + 1)
        return self._add(is_bid, max(1, price))

    def _distance(self) -> int:
        """Ticks from the fair price: mostly near, sometimes anywhere in the book, so the
        whole book churns and no hollow forms behind the touch."""
        rng, p = self.rng, self.params
        if rng.random() < p.near_share:
            return _geometric(rng, p.near_p)
        return _geometric(rng, self._deep_p)

    def _cancel_near(self, is_bid: bool) -> tuple[str, list[Event], list[Change]]:
        rng, p = self.rng, self.params
        side = self.bids if is_bid else self.asks
        if len(side) <= 1:
            return self._place_near(is_bid)
        near = rng.random() < p.near_share
        index = _geometric(rng, p.cancel_p) if near else rng.randrange(len(side))
        price = side.nth(min(index, len(side) - 1))
        units = side.get(price)
        if units == 1 or rng.random() < p.full_cancel:
            new = 0
        else:
            new = units - rng.randint(1, units - 1)
        ev, ch = self._apply(is_bid, price, new, "cancel")
        return "cancel", [ev], [ch]

    def _replenish(self, is_bid: bool) -> tuple[str, list[Event], list[Change]]:
        side = self.bids if is_bid else self.asks
        worst = side.worst()
        if worst is None:
            return self._place_near(is_bid)
        gap = 1 + _geometric(self.rng, self.params.gap_p)
        price = worst - gap if is_bid else worst + gap
        if price < 1:
            return self._place_near(is_bid)
        return self._add(is_bid, price)

    def _trim(self, is_bid: bool) -> tuple[str, list[Event], list[Change]]:
        side = self.bids if is_bid else self.asks
        worst = side.worst()
        assert worst is not None
        ev, ch = self._apply(is_bid, worst, 0, "cancel")
        return "cancel", [ev], [ch]

    def _marketable(self, taker_buys: bool) -> tuple[str, list[Event], list[Change]]:
        """A taker order trading through one or more levels: trade + change per level."""
        rng = self.rng
        maker_is_bid = not taker_buys
        side = self.bids if maker_is_bid else self.asks
        if len(side) < 2:
            return self._place_near(maker_is_bid)
        levels = min(1 + _geometric(rng, 0.55), len(side) - 1, self.params.max_sweep)
        events: list[Event] = []
        changes: list[Change] = []
        maker = "bid" if maker_is_bid else "ask"
        for i in range(levels):
            price = side.best()
            assert price is not None
            units = side.get(price)
            fill = units
            if i == levels - 1 and units > 1 and rng.random() < 0.7:
                fill = rng.randint(1, units - 1)
            tid = self.trade_ids.next(self._id_jump())
            events.append({"type": "trade", "tid": tid, "price": self.price(price),
                           "amount": self.amount(fill), "makerSide": maker})
            ev, ch = self._apply(maker_is_bid, price, units - fill, "trade")
            events.append(ev)
            changes.append(ch)
        return "trade", events, changes

    def _block_trade(self) -> tuple[str, list[Event], list[Change]]:
        mid = self._mid_ticks()
        price = max(1, round(mid) + self.rng.randint(-5, 5))
        amount = self._typical * self.rng.randint(20, 200)
        ev = {"type": "block_trade", "tid": self.trade_ids.next(self._id_jump()),
              "price": self.price(price), "amount": self.amount(amount)}
        return "block_trade", [ev], []

    # ---- auctions --------------------------------------------------------------------

    def _mid_ticks(self) -> Decimal:
        b, a = self.bids.best(), self.asks.best()
        if b is None or a is None:
            return Decimal(b if b is not None else a if a is not None else 1)
        return (Decimal(b) + Decimal(a)) / 2

    def _price_dec(self, ticks: Decimal) -> str:
        value = ticks * self.spec.price_scale.increment
        return format(value.normalize(), "f")

    def _auction_open(self) -> tuple[str, list[Event], list[Change]]:
        now = self.last_ms
        at = now + 60_000
        self._auction = _Auction(now, at, 2)
        ev = {"type": "auction_open", "auction_open_ms": now, "auction_time_ms": at,
              "first_indicative_ms": at - 15_000, "last_cancel_time_ms": at - 5_000}
        return "auction", [ev], []

    def _auction_step(self) -> tuple[str, list[Event], list[Change]]:
        auction = self._auction
        assert auction is not None
        b, a = self.bids.best(), self.asks.best()
        mid = self._mid_ticks()
        success = self.rng.random() < 0.7
        qty = self.amount(self._typical * self.rng.randint(5, 50)) if success else "0"
        price = self.price(round(mid)) if success else "0"
        common = {"eid": 0, "result": "success" if success else "failure", "time_ms": self.last_ms,
                  "highest_bid_price": self.price(b) if b is not None else "0",
                  "lowest_ask_price": self.price(a) if a is not None else "0",
                  "collar_price": self._price_dec(mid)}
        if auction.indicatives_left > 0:
            auction.indicatives_left -= 1
            ev = {"type": "auction_indicative", **common,
                  "indicative_price": price, "indicative_quantity": qty}
            return "auction", [ev], []
        self._auction = None
        events: list[Event] = [{"type": "auction_result", **common,
                                "auction_price": price, "auction_quantity": qty}]
        if success:  # auction fills come out of the auction book, not the continuous one
            events.append({"type": "trade", "tid": self.trade_ids.next(self._id_jump()),
                           "price": price, "amount": qty, "makerSide": "auction"})
        return "auction", events, []


def _on_grid(value: str, scale: Any) -> str:
    """Round a decimal string down onto a scale's grid (at least one step)."""
    inc: Decimal = scale.increment
    q = (Decimal(value) // inc) * inc
    return str(q if q > 0 else inc)
