"""Exact full-depth L2 book (pure, no I/O).

Prices are keyed by `Decimal`, so "6513.2" and "6513.20" are one level and no
binary float ever orders a price. Each side keeps its keys in an ascending list
maintained with bisect (the best bid is the last key, the best ask the first),
which makes top-N rendering a slice and tells cheaply whether an update
touched the top N. The exchange's own text for price and size is kept for
output.
"""

from __future__ import annotations

from bisect import bisect_left
from decimal import Decimal

Level = tuple[str, str]  # (price text, size text) as the exchange wrote them


class Side:
    __slots__ = ("_keys", "_levels", "_bids")

    def __init__(self, bids: bool) -> None:
        self._keys: list[Decimal] = []  # ascending
        self._levels: dict[Decimal, Level] = {}
        self._bids = bids

    def __len__(self) -> int:
        return len(self._keys)

    def set(self, price: str, size: str, depth: int) -> bool:
        """Set a level (`size` "0" removes it); True if the top `depth` changed."""
        key = Decimal(price)
        keys = self._keys
        old = self._levels.get(key)
        if not size.strip("0."):  # zero in any spelling: "0", "0.0", "0.00000000"
            if old is None:
                return False
            i = bisect_left(keys, key)
            del keys[i]
            del self._levels[key]
            return self._rank(i, len(keys) + 1) < depth
        self._levels[key] = (price, size)
        if old is not None:
            if old == (price, size):
                return False
            # in the top `depth` iff at least as good as the depth-th best key (no bisect)
            if len(keys) <= depth:
                return True
            return key >= keys[-depth] if self._bids else key <= keys[depth - 1]
        i = bisect_left(keys, key)
        keys.insert(i, key)
        return self._rank(i, len(keys)) < depth

    def _rank(self, index: int, length: int) -> int:
        """Distance from the best level of the key at `index` (0 = best)."""
        return length - 1 - index if self._bids else index

    def best(self) -> Decimal | None:
        if not self._keys:
            return None
        return self._keys[-1] if self._bids else self._keys[0]

    def top(self, depth: int) -> list[Level]:
        """The best `depth` levels, best first."""
        levels = self._levels
        if self._bids:
            keys = self._keys[: -depth - 1 : -1]
        else:
            keys = self._keys[:depth]
        return [levels[k] for k in keys]


class Book:
    __slots__ = ("bids", "asks")

    def __init__(self) -> None:
        self.bids = Side(bids=True)
        self.asks = Side(bids=False)

    def apply(self, side: str, price: str, remaining: str, depth: int) -> bool:
        """Apply one v1 `change`; True if the top `depth` of either side changed."""
        return (self.bids if side == "bid" else self.asks).set(price, remaining, depth)

    def crossed(self) -> bool:
        bid, ask = self.bids.best(), self.asks.best()
        return bid is not None and ask is not None and bid >= ask
