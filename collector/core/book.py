"""Exact full-depth L2 book (pure, no I/O).

Prices are ordered by `Decimal`, so "6513.2" and "6513.20" are one level and no
binary float ever orders a price. Each side keeps its sort keys in an ascending list
maintained with bisect, best level last: the price for bids, the negated price for
asks. Most changes land near the best level, so inserting and deleting there moves
few list items (at the front of a 2,000-level list they cost ten times more). Index
for index, a list holds the levels as [price text, size text]: top-N rendering is a
slice, with no lookups. A dict from the price's canonical text to its key and level
finds an existing level with no Decimal at all (hashing a Decimal costs more than
building one). The exchange's own text for price and size is kept for output.

A snapshot is loaded in one go (`load`): the exchange sends it best level first, which
`set` would insert at the front of the list one by one, O(n^2) (200,000 levels took
8.7 s, blocking the event loop); `load` sorts once, O(n log n), in any order. A frame
that sets more than BULK_LEVELS levels of one side is merged the same way
(`set_levels`), so no frame costs more than a sort of the book.

This is the reference. `collector/core/_fastbook.c` is the same side in C, plus the v1
fast path (`V1Stream._fast_native`) in C, built by `pip install` when a C compiler is
there; the tests hold the two to the same records. `fastbook` is that module, or None
when it was not built; which one runs is chosen at start-up (`side_class(native)`).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from operator import itemgetter
from types import ModuleType
from typing import Protocol

import orjson

from collector.core.format import Level, canonical, is_zero

fastbook: ModuleType | None
try:
    from collector.core import _fastbook
    fastbook = _fastbook
except ImportError:  # built without a C compiler: the same records, slower
    fastbook = None

HAVE_NATIVE = fastbook is not None


class BookSide(Protocol):
    """One side of a book: `PySide`, or the C `_fastbook.Side`."""

    def __len__(self) -> int: ...
    def set(self, price: str, size: str, depth: int) -> bool: ...
    def load(self, levels: Iterable[Level]) -> None: ...
    def best(self) -> Decimal | None: ...
    def top(self, depth: int) -> list[Level]: ...
    def top_json(self, depth: int) -> orjson.Fragment: ...


class PySide:
    __slots__ = ("_bids", "_index", "_keys", "_levels", "_top_json")

    def __init__(self, bids: bool) -> None:
        self._keys: list[Decimal] = []  # ascending, best last: price (bids), -price (asks)
        self._levels: list[list[str]] = []  # [price, size], same order as _keys
        self._index: dict[str, tuple[Decimal, list[str]]] = {}  # canonical price -> key, level
        self._bids = bids
        # The top levels as JSON, kept until a `set` changes the top `depth` (most
        # updates touch one side, and rendering is a large share of a frame's cost).
        self._top_json: orjson.Fragment | None = None

    def __len__(self) -> int:
        return len(self._keys)

    def set(self, price: str, size: str, depth: int) -> bool:
        """Set a level (`size` "0" removes it); True if the top `depth` changed."""
        # most prices are canonical already; a call costs more than this test
        canon = price if price[-1] != "0" and price[0] != "0" else canonical(price)
        found = self._index.get(canon)
        keys = self._keys
        if is_zero(size):
            if found is None:
                return False
            del self._index[canon]
            i = bisect_left(keys, found[0])
            del keys[i]
            del self._levels[i]
            changed = len(keys) - i < depth  # its distance from the best level
        elif found is not None:
            key, level = found
            if level[1] == size and level[0] == price:
                return False
            level[0], level[1] = price, size
            # in the top `depth` iff at least as good as the depth-th best key (no bisect)
            changed = len(keys) <= depth or key >= keys[-depth]
        else:
            # from text, not `-Decimal(...)`: unary minus rounds to the context's 28 digits
            key = Decimal(price) if self._bids else Decimal("-" + price)
            level = [price, size]
            self._index[canon] = (key, level)
            i = bisect_left(keys, key)
            keys.insert(i, key)
            self._levels.insert(i, level)
            changed = len(keys) - 1 - i < depth
        if changed:
            self._top_json = None
        return changed

    def load(self, levels: Iterable[Level]) -> None:
        """Replace the side with `levels`, (price, size) pairs in any order: the side that
        `set` of each in turn would leave on an empty side (of one value the last level
        wins; a zero size removes it), with one sort."""
        latest: dict[str, Level] = {}
        for price, size in levels:
            latest[price if price[-1] != "0" and price[0] != "0" else canonical(price)] = (price, size)
        sign = "" if self._bids else "-"  # the key from text, as in `set`
        index = {canon: (Decimal(sign + price), [price, size])
                 for canon, (price, size) in latest.items() if not is_zero(size)}
        entries = sorted(index.values(), key=_key)
        self._index = index
        self._keys = [key for key, _ in entries]
        self._levels = [level for _, level in entries]
        self._top_json = None

    def best(self) -> Decimal | None:
        if not self._keys:
            return None
        return self._keys[-1] if self._bids else self._keys[-1].copy_negate()  # exact

    def _top(self, depth: int) -> list[list[str]]:
        return self._levels[: -depth - 1 : -1]

    def top(self, depth: int) -> list[Level]:
        """The best `depth` levels, best first."""
        return [(p, q) for p, q in self._top(depth)]

    def top_json(self, depth: int) -> orjson.Fragment:
        """`top(depth)` as JSON, [["price","size"],...], ready to splice into a record.
        Kept until `set` (with this `depth`) changes the top."""
        if self._top_json is None:
            self._top_json = orjson.Fragment(orjson.dumps(self._top(depth)))
        return self._top_json


_key = itemgetter(0)


def side_class(native: bool) -> Callable[..., BookSide]:
    """The C side (collector/core/_fastbook.c) or the Python reference."""
    if not native:
        return PySide
    if fastbook is None:
        raise RuntimeError("the C book core (collector.core._fastbook) is not built")
    side: Callable[..., BookSide] = fastbook.Side
    return side


BULK_LEVELS = 1024


def set_levels(side: BookSide, levels: Sequence[Level], depth: int) -> bool:
    """`side.set` of each level in turn; True if the top `depth` changed. More than
    BULK_LEVELS levels are merged with one sort instead (`load`: a hostile update of
    100,000 levels best first took 3.7 s on the C side, 6.8 s on PySide); then the top
    is compared before and after (a level changed and changed back within the frame is
    no change)."""
    if len(levels) <= BULK_LEVELS:
        changed = False
        for price, size in levels:
            if side.set(price, size, depth):
                changed = True
        return changed
    before = side.top(depth)
    side.load(side.top(len(side)) + list(levels))
    return side.top(depth) != before


class Book:
    __slots__ = ("asks", "bids")

    def __init__(self, native: bool = HAVE_NATIVE) -> None:
        side = side_class(native)
        self.bids: BookSide = side(bids=True)
        self.asks: BookSide = side(bids=False)

    def apply(self, side: str, price: str, remaining: str, depth: int) -> bool:
        """Apply one v1 `change`; True if the top `depth` of either side changed."""
        return (self.bids if side == "bid" else self.asks).set(price, remaining, depth)

    def crossed(self) -> str | None:
        """Why the book is crossed (best bid >= best ask), or None when it is not."""
        bid, ask = self.bids.best(), self.asks.best()
        if bid is None or ask is None or bid < ask:
            return None
        return f"best bid {self.bids.top(1)[0][0]} >= best ask {self.asks.top(1)[0][0]}"
