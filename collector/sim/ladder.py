"""One side of an exact price ladder: integer price ticks -> integer amount units.

Prices are kept in an ascending list so best/worst/n-th level and top-N are O(1)/O(N);
inserting or deleting a level is a bisect plus a memmove, cheap for thousands of levels.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable

__all__ = ["Ladder"]


class Ladder:
    __slots__ = ("is_bid", "levels", "prices")

    def __init__(self, is_bid: bool, levels: Iterable[tuple[int, int]] = ()) -> None:
        self.is_bid = is_bid
        self.levels: dict[int, int] = {}
        for price, units in levels:
            if units > 0:
                self.levels[price] = units
        self.prices: list[int] = sorted(self.levels)

    def __len__(self) -> int:
        return len(self.prices)

    def get(self, price: int) -> int:
        return self.levels.get(price, 0)

    def set(self, price: int, units: int) -> None:
        """Set a level's total; 0 removes it."""
        if units < 0:
            raise ValueError(f"negative amount {units} at {price}")
        if units == 0:
            if self.levels.pop(price, None) is not None:
                del self.prices[bisect_left(self.prices, price)]
            return
        if price not in self.levels:
            insort(self.prices, price)
        self.levels[price] = units

    def best(self) -> int | None:
        if not self.prices:
            return None
        return self.prices[-1] if self.is_bid else self.prices[0]

    def worst(self) -> int | None:
        if not self.prices:
            return None
        return self.prices[0] if self.is_bid else self.prices[-1]

    def nth(self, i: int) -> int:
        """Price of the i-th level counted from the best (0 = best)."""
        return self.prices[-1 - i] if self.is_bid else self.prices[i]

    def top(self, n: int | None = None) -> list[tuple[int, int]]:
        """Up to n levels best first (all when n is None)."""
        prices = self.prices
        if self.is_bid:
            chosen = prices[::-1] if n is None else prices[: -n - 1 : -1] if n > 0 else []
        else:
            chosen = prices if n is None else prices[:n]
        levels = self.levels
        return [(p, levels[p]) for p in chosen]

    def copy(self) -> Ladder:
        new = Ladder(self.is_bid)
        new.levels = dict(self.levels)
        new.prices = list(self.prices)
        return new
