"""collector.core.book: exact Decimal-keyed levels, top-N, change detection, crossed check.

Every test of a side or a book runs on both cores: the pure-Python reference (`PySide`) and
the C one (`collector.core._fastbook.Side`). The C runs skip when it is not built, unless
COLLECTOR_REQUIRE_NATIVE=1 (then they fail). tests/core/test_fastbook.py holds the two to each
other op by op."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
import pytest

from collector.core import book as book_module
from collector.core.book import HAVE_NATIVE, PySide, fastbook
from collector.core.format import canonical
from collector.runtime.app import use_native_book
from tests.helpers.cores import CORES, REQUIRE_NATIVE

# --- both cores (CORES, needs_native: tests/helpers/cores.py) -----------------------------------

SideClass = Callable[..., Any]  # PySide or fastbook.Side
BookClass = Callable[[], book_module.Book]


@pytest.fixture(params=CORES)
def native(request: pytest.FixtureRequest) -> bool:
    if request.param and fastbook is None:  # only when COLLECTOR_REQUIRE_NATIVE=1
        pytest.fail("COLLECTOR_REQUIRE_NATIVE=1 but collector.core._fastbook is not built")
    return bool(request.param)


@pytest.fixture(name="Side")
def _side_class(native: bool) -> SideClass:
    return book_module.side_class(native)


@pytest.fixture(name="Book")
def _book_class(native: bool) -> BookClass:
    return functools.partial(book_module.Book, native=native)


def test_native_core_is_built_when_required() -> None:
    if not REQUIRE_NATIVE:
        pytest.skip("COLLECTOR_REQUIRE_NATIVE is not 1")
    if fastbook is None:
        try:
            import collector.core._fastbook  # noqa: F401  # imported for its ImportError
        except ImportError as exc:
            pytest.fail(f"COLLECTOR_REQUIRE_NATIVE=1 but collector.core._fastbook does not import: {exc}")
    assert fastbook is not None


def test_the_core_is_chosen_at_start_up_by_the_pure_python_switch() -> None:
    assert (fastbook is not None) == HAVE_NATIVE
    assert use_native_book({}) == HAVE_NATIVE
    assert use_native_book({"COLLECTOR_PURE_PYTHON": "1"}) is False
    want = fastbook.Side if fastbook is not None else PySide  # the same as HAVE_NATIVE (above)
    assert type(book_module.Book().bids) is want
    assert type(book_module.Book(native=False).asks) is PySide


# --- behaviour --------------------------------------------------------------------------------


def test_one_level_per_value_whatever_the_spelling(Side: SideClass) -> None:
    side = Side(bids=False)
    assert side.set("6513.2", "1", 10) is True
    assert side.set("6513.20", "2", 10) is True
    assert len(side) == 1
    assert side.top(10) == [("6513.20", "2")]  # the latest text is kept for output
    assert side.set("6513.200", "0", 10) is True  # removed under a third spelling
    assert len(side) == 0 and side.top(10) == []


def test_remaining_replaces_the_level(Side: SideClass) -> None:
    side = Side(bids=True)
    side.set("100", "1.5", 5)
    assert side.set("100", "0.25", 5) is True
    assert side.top(5) == [("100", "0.25")]
    assert len(side) == 1


def test_setting_the_same_text_again_changes_nothing(Side: SideClass) -> None:
    side = Side(bids=True)
    side.set("100", "1.5", 5)
    assert side.set("100", "1.5", 5) is False
    assert side.top(5) == [("100", "1.5")]


def test_same_value_other_size_spelling_is_a_visible_change(Side: SideClass) -> None:
    side = Side(bids=True)
    side.set("100", "1.5", 5)
    assert side.set("100", "1.50", 5) is True  # the rendered text changes
    assert side.top(5) == [("100", "1.50")]


@pytest.mark.parametrize("zero", ["0", "0.00", "0.0", "00", "0.00000000"])
def test_zero_in_any_spelling_removes(zero: str, Side: SideClass) -> None:
    side = Side(bids=False)
    side.set("1.5", "3", 10)
    side.set("2", "4", 10)
    assert side.set("1.50", zero, 10) is True
    assert side.top(10) == [("2", "4")]
    assert len(side) == 1


@pytest.mark.parametrize("zero", ["0", "0.00"])
def test_removing_an_absent_level_is_a_no_op(zero: str, Side: SideClass) -> None:
    side = Side(bids=True)
    assert side.set("5", zero, 10) is False  # empty side
    side.set("4", "1", 10)
    side.set("6", "1", 10)
    assert side.set("5", zero, 10) is False  # between two levels
    assert side.set("7", zero, 10) is False  # beyond the best
    assert side.set("3", zero, 10) is False  # beyond the worst
    assert side.top(10) == [("6", "1"), ("4", "1")]
    assert len(side) == 2


def test_small_nonzero_sizes_are_not_zero(Side: SideClass) -> None:
    side = Side(bids=True)
    for size in ("0.00000001", "10", "100.0", "0.10"):
        side.set("1", size, 1)
        assert side.top(1) == [("1", size)]


def test_top_orders_bids_descending_and_asks_ascending(Book: BookClass) -> None:
    book = Book()
    for p in ("99.5", "101", "100", "9", "100.25", "1000"):
        book.apply("bid", p, "1", 3)
        book.apply("ask", p, "2", 3)
    assert [p for p, _ in book.bids.top(3)] == ["1000", "101", "100.25"]
    assert [p for p, _ in book.asks.top(3)] == ["9", "99.5", "100"]
    assert [p for p, _ in book.bids.top(100)] == ["1000", "101", "100.25", "100", "99.5", "9"]
    assert [p for p, _ in book.asks.top(100)] == ["9", "99.5", "100", "100.25", "101", "1000"]
    assert book.bids.top(0) == [] and book.asks.top(0) == []
    assert book.bids.best() == Decimal("1000") and book.asks.best() == Decimal("9")


def test_empty_side(Side: SideClass) -> None:
    side = Side(bids=True)
    assert side.top(10) == [] and side.best() is None and len(side) == 0


def test_changes_below_depth_are_not_top_changes(Side: SideClass) -> None:
    asks = Side(bids=False)
    assert asks.set("1", "1", 2) is True
    assert asks.set("2", "1", 2) is True
    assert asks.set("3", "1", 2) is False  # inserted at rank 2: outside the top 2
    assert asks.set("3", "5", 2) is False  # rank 2: outside the top 2
    assert asks.set("3", "0", 2) is False
    assert asks.set("2.5", "1", 2) is False
    assert asks.set("2", "0", 2) is True  # rank 1: "2.5" moves up into the top 2
    assert asks.top(2) == [("1", "1"), ("2.5", "1")]
    bids = Side(bids=True)
    for p in ("1", "2", "3"):
        bids.set(p, "1", 2)
    assert bids.set("1", "9", 2) is False  # the worst bid is rank 2
    assert bids.set("0.5", "9", 2) is False
    assert bids.set("2", "9", 2) is True
    assert bids.set("3.5", "9", 2) is True


def test_apply_routes_by_side(Book: BookClass) -> None:
    book = Book()
    assert book.apply("bid", "10", "1", 10) is True
    assert book.apply("ask", "11", "2", 10) is True
    assert book.bids.top(10) == [("10", "1")] and book.asks.top(10) == [("11", "2")]
    assert book.apply("ask", "10.0", "0", 10) is False  # no ask at 10: bids untouched
    assert book.bids.top(10) == [("10", "1")]


def test_crossed(Book: BookClass) -> None:
    book = Book()
    assert not book.crossed()
    book.apply("bid", "100", "1", 10)
    assert not book.crossed()  # one side empty
    book.apply("ask", "100.01", "1", 10)
    assert not book.crossed()
    book.apply("ask", "100.00", "1", 10)
    assert book.crossed()  # locked: bid == ask (exact value, other spelling)
    book.apply("ask", "100", "0", 10)
    assert not book.crossed()
    book.apply("bid", "100.02", "1", 10)
    assert book.crossed()
    book.apply("ask", "100.01", "0", 10)
    assert not book.crossed()  # no asks left


def test_decimal_ordering_is_exact_not_float(Side: SideClass) -> None:
    side = Side(bids=False)
    a, b = "0.30000000000000000001", "0.3"  # equal as floats
    side.set(a, "1", 10)
    side.set(b, "1", 10)
    assert len(side) == 2 and [p for p, _ in side.top(2)] == [b, a]


# --- randomized property test ---------------------------------------------------------------

_GRID = [Decimal(n) / 4 for n in range(1, 41)]  # 40 prices 0.25 .. 10.00: collisions happen
_SIZES = ["1", "1.0", "2", "0.5", "0.50", "3.25", "0.00000001"]
_ZEROS = ["0", "0.0", "0.00", "000"]


def _spell(rng: random.Random, value: Decimal) -> str:
    text = format(value.normalize(), "f")  # shortest: "2.5", "3"
    extra = rng.choice(["", "0", "00", "000"])
    if extra:
        text += extra if "." in text else "." + extra
    return text


def _ref_top(ref: dict[Decimal, tuple[str, str]], bids: bool, depth: int) -> list[tuple[str, str]]:
    return [ref[k] for k in sorted(ref, reverse=bids)[:depth]]


@pytest.mark.parametrize("bids", [True, False])
@pytest.mark.parametrize("depth", [1, 3, 10, 50])
def test_set_reports_top_changes_exactly(bids: bool, depth: int, Side: SideClass) -> None:
    rng = random.Random(20240917 + depth * 2 + bids)
    side = Side(bids=bids)
    ref: dict[Decimal, tuple[str, str]] = {}
    outcomes = {True: 0, False: 0}
    for step in range(3000):
        price = rng.choice(_GRID)
        r = rng.random()
        if r < 0.35:
            size = rng.choice(_ZEROS)
        elif r < 0.45 and price in ref:
            size = ref[price][1]  # same size again, maybe another price spelling
        else:
            size = rng.choice(_SIZES)
        text = ref[price][0] if r < 0.40 and price in ref else _spell(rng, price)

        before = _ref_top(ref, bids, depth)
        if Decimal(size) == 0:
            ref.pop(price, None)
        else:
            ref[price] = (text, size)
        after = _ref_top(ref, bids, depth)

        changed = side.set(text, size, depth)
        assert changed == (before != after), (step, text, size, before, after)
        outcomes[changed] += 1
        assert side.top(depth) == after, step
        assert len(side) == len(ref), step
        best = (max if bids else min)(ref) if ref else None
        assert side.best() == best, step
        if step % 100 == 0:
            assert side.top(len(_GRID) + 1) == _ref_top(ref, bids, len(_GRID) + 1), step
    # both answers were exercised many times
    assert outcomes[True] > 50 and outcomes[False] > 50, outcomes


def test_random_book_crossed_matches_brute_force(Book: BookClass) -> None:
    rng = random.Random(7)
    book = Book()
    ref: dict[str, dict[Decimal, str]] = {"bid": {}, "ask": {}}
    crossed_seen = 0
    for _ in range(3000):
        side = rng.choice(["bid", "ask"])
        price = rng.choice(_GRID[:22] if side == "bid" else _GRID[18:])  # overlap: 18..21
        size = rng.choice(_ZEROS + _SIZES)
        book.apply(side, _spell(rng, price), size, 5)
        if Decimal(size) == 0:
            ref[side].pop(price, None)
        else:
            ref[side][price] = size
        want = bool(ref["bid"] and ref["ask"] and max(ref["bid"]) >= min(ref["ask"]))
        assert (book.crossed() is not None) == want
        crossed_seen += want
    assert 100 < crossed_seen < 2900, crossed_seen


@pytest.mark.parametrize("text, canon", [
    ("6513.20", "6513.2"), ("6513.2", "6513.2"), ("06513.200", "6513.2"), ("6000", "6000"),
    ("6000.000", "6000"), ("0.5", "0.5"), ("00.50", "0.5"), ("0", "0"), ("0.000", "0"),
    ("000", "0"), ("0.00000001", "0.00000001"),
])
def test_canonical_text(text: str, canon: str) -> None:
    assert canonical(text) == canon


def test_every_spelling_of_a_price_is_one_level(Side: SideClass) -> None:
    side = Side(bids=True)
    for spelling in ("6513.2", "6513.20", "06513.200", "6513.2000"):
        side.set(spelling, "1", 10)
    assert len(side) == 1 and side.top(10) == [("6513.2000", "1")]
    assert orjson.dumps(side.top_json(10)) == b'[["6513.2000","1"]]'
    side.set("06513.20", "0", 10)
    assert len(side) == 0 and orjson.dumps(side.top_json(10)) == b"[]"


def test_prices_beyond_28_digits_stay_exact_on_both_sides(Side: SideClass) -> None:
    # Decimal arithmetic rounds to 28 significant digits; keys must never go through it
    a, b = "1.00000000000000000000000000000001", "1.00000000000000000000000000000002"
    for bids in (True, False):
        side = Side(bids=bids)
        side.set(a, "1", 10)
        side.set(b, "2", 10)
        assert len(side) == 2
        assert [p for p, _ in side.top(2)] == ([b, a] if bids else [a, b])
        assert side.best() == Decimal(b if bids else a)


def test_top_json_is_kept_until_the_top_changes(Side: SideClass) -> None:
    side = Side(bids=False)
    for price in ("1", "2", "3"):
        side.set(price, "1", 2)
    first = side.top_json(2)
    assert side.set("3", "5", 2) is False and side.top_json(2) is first  # beyond the top
    for price, size in (("1", "2"), ("1.5", "1"), ("1", "0")):  # modify, insert, delete
        assert side.set(price, size, 2) is True
        assert orjson.dumps(side.top_json(2)) == orjson.dumps(side.top(2))


# --- load: a whole snapshot at once -------------------------------------------------------------

def _levels(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """Levels on the grid, some values several times (respelled), some sizes zero."""
    out = []
    for _ in range(n):
        size = rng.choice(_ZEROS) if rng.random() < 0.2 else rng.choice(_SIZES)
        out.append((_spell(rng, rng.choice(_GRID)), size))
    return out


@pytest.mark.parametrize("bids", [True, False])
@pytest.mark.parametrize("order", ["random", "best first", "worst first"])
def test_load_is_set_of_each_level_in_turn(bids: bool, order: str, Side: SideClass) -> None:
    for seed in range(40):
        rng = random.Random(f"{seed}:{bids}:{order}")
        levels = _levels(rng, rng.choice([0, 1, 5, 60, 300]))
        if order != "random":  # by value; of one value, the order stays random
            levels.sort(key=lambda level: Decimal(level[0]), reverse=bids == (order == "best first"))
        loaded, stepped = Side(bids=bids), Side(bids=bids)
        stepped.set("99", "1", 10)  # load replaces whatever was there
        loaded.set("99", "1", 10)
        loaded.top_json(10)
        loaded.load(levels)
        stepped = Side(bids=bids)
        for price, size in levels:
            stepped.set(price, size, 10)
        everything = len(_GRID) + 1
        assert loaded.top(everything) == stepped.top(everything), (seed, levels)
        assert len(loaded) == len(stepped) and loaded.best() == stepped.best()
        assert orjson.dumps(loaded.top_json(3)) == orjson.dumps(stepped.top_json(3))
        loaded.set("0.25", "7", 10)  # and it goes on as a side built by set
        stepped.set("0.25", "7", 10)
        assert loaded.top(everything) == stepped.top(everything)


def test_load_takes_any_pairs_and_an_iterator(Side: SideClass) -> None:
    side = Side(bids=False)
    side.load(iter([["2", "1"], ("1", "3")]))
    assert side.top(5) == [("1", "3"), ("2", "1")]
    side.load([])
    assert len(side) == 0 and side.best() is None and side.top(5) == []


@pytest.mark.parametrize("bids", [True, False])
def test_set_levels_merges_many_levels_as_set_would(bids: bool, Side: SideClass) -> None:
    """More than BULK_LEVELS levels in one frame are merged with one sort: the same side as
    set() of each in turn; "changed" is the top before against after."""
    rng = random.Random(f"bulk:{bids}")
    grid = [Decimal(n) / 100 for n in range(1, 3000)]
    for _ in range(5):
        merged, stepped = Side(bids=bids), Side(bids=bids)
        start = [(_spell(rng, rng.choice(grid)), rng.choice(_SIZES)) for _ in range(500)]
        merged.load(start)
        stepped.load(start)
        levels = [(_spell(rng, rng.choice(grid)),
                   rng.choice(_ZEROS) if rng.random() < 0.3 else rng.choice(_SIZES))
                  for _ in range(book_module.BULK_LEVELS + 1 + rng.randrange(500))]
        before = stepped.top(3)
        for price, size in levels:
            stepped.set(price, size, 3)
        changed = book_module.set_levels(merged, levels, 3)
        assert merged.top(len(grid)) == stepped.top(len(grid))
        assert changed == (stepped.top(3) != before)
    few = Side(bids=bids)  # up to BULK_LEVELS: set() itself, its answer
    assert book_module.set_levels(few, [("1", "1"), ("1", "0")], 3) is True
    assert len(few) == 0
