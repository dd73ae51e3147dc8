"""The audit's pure part (collector/core/audit.py): the REST answer read defensively, the
states a tap keeps, the verdict, and one symbol's run of results."""

from __future__ import annotations

import re

import orjson
import pytest

from collector.core import audit
from collector.core.audit import BadAnswer, Outcome, RestBook, State, Tap, Track, judge, parse_book
from collector.core.book import Book


def answer(bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> bytes:
    side = lambda levels: [{"price": p, "amount": a, "timestamp": "1764559146"} for p, a in levels]  # noqa: E731
    return orjson.dumps({"bids": side(bids), "asks": side(asks)})


# ---- the REST answer -----------------------------------------------------------------------


def test_parse_book_orders_cuts_and_spells_every_number_one_way():
    body = answer([("100.10", "1.500"), ("101", "2"), ("99.9", "0.1")],
                  [("102.000", "3"), ("101.5", "00.25")])
    book = parse_book(body, depth=2)
    assert book.bids == (("101", "2"), ("100.1", "1.5"))  # best first, cut to depth
    assert book.asks == (("101.5", "0.25"), ("102", "3"))


@pytest.mark.parametrize("body, says", [
    (b"<html>502 Bad Gateway</html>", "not JSON"),
    (b"", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"result":"error","reason":"RateLimited"}', "no bids and asks"),
    (b'{"bids": 5, "asks": []}', "bids: not a list"),
    (b'{"bids": [7], "asks": []}', "bids[0]: not an object"),
    (b'{"bids": [], "asks": [{"price": 101.5, "amount": "1"}]}', "asks[0].price: not a decimal"),
    (b'{"bids": [], "asks": [{"price": "1e5", "amount": "1"}]}', "asks[0].price: not a decimal"),
    (b'{"bids": [], "asks": [{"price": "-1", "amount": "1"}]}', "asks[0].price: not a decimal"),
    (b'{"bids": [], "asks": [{"price": "1", "amount": null}]}', "asks[0].amount: not a decimal"),
    (b'{"bids": [], "asks": [{"price": "1", "amount": "0.000"}]}', "amount is zero"),
    (b'{"bids": [{"price": "1.0", "amount": "1"}, {"price": "1", "amount": "2"}], "asks": []}',
     "price 1 listed twice"),
    (orjson.dumps({"bids": [{"price": "1" * 65, "amount": "1"}], "asks": []}), "not a decimal"),
    (b"[" * 5000 + b"]" * 5000, "not JSON"),
])
def test_parse_book_refuses_what_is_not_a_plain_book(body: bytes, says: str):
    with pytest.raises(BadAnswer, match=re.escape(says)) as err:
        parse_book(body, depth=10)
    assert len(str(err.value)) < 300  # a hostile answer is quoted, never whole


def test_parse_book_refuses_a_huge_answer_unread():
    with pytest.raises(BadAnswer, match="more than"):
        parse_book(b" " * (audit.MAX_ANSWER_BYTES + 1), depth=10)


def test_a_deep_answer_of_many_levels_is_read_and_cut():
    levels = [(f"{10000 - i}.5", "1") for i in range(5000)]
    book = parse_book(answer(levels[::-1], []), depth=3)
    assert book.bids == (("10000.5", "1"), ("9999.5", "1"), ("9998.5", "1"))


# ---- states and the verdict ------------------------------------------------------------------


class Stream:
    """What a tap reads of a stream: its book (None while not live)."""

    def __init__(self) -> None:
        self.book: Book | None = Book(native=False)

    def set(self, side: str, price: str, size: str) -> None:
        assert self.book is not None
        self.book.apply(side, price, size, 10)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_tap_keeps_each_distinct_state_once_and_forgets_what_can_no_longer_match():
    clock, stream = Clock(), Stream()
    tap = Tap(depth=2, keep_s=1.0, clock=clock)
    stream.set("bid", "100", "1")
    tap.saw(stream)
    tap.saw(stream)  # a trade, nothing changed in the top
    stream.set("bid", "90", "1")  # the second level: a new state
    clock.now = 100.2
    tap.saw(stream)
    stream.set("bid", "80", "1")  # third level: the top 2 are the same
    tap.saw(stream)
    assert [s.at for s in tap.states] == [100.0, 100.2]
    clock.now = 101.5  # the first state was superseded 1.3 s ago: out; the second is current
    stream.set("ask", "101", "2")
    tap.saw(stream)
    assert [s.at for s in tap.states] == [100.2, 101.5]
    stream.book = None  # the stream broke
    tap.saw(stream)
    tap.lost()
    assert [s.bids for s in tap.states][-1] is None and len(tap.states) == 3


def rest(bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> RestBook:
    return RestBook(tuple(bids), tuple(asks))


def state(at: float, bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> State:
    return State(at, bids, asks)


def test_match_is_by_decimal_value_whatever_the_spelling():
    stream = [state(10.0, [("60000.500", "0.10000000")], [("60001.000", "2.00000000")])]
    verdict = judge(rest([("60000.5", "0.1")], [("60001", "2")]), stream, arrived=10.3)
    assert verdict.matched and verdict.age_s == 0.0  # still the live book when it arrived


def test_the_newest_matching_state_gives_the_age():
    a, b = [("100", "1")], [("100", "2")]
    asks = [("101", "1")]
    states = [state(1.0, a, asks), state(2.0, b, asks), state(3.0, a, asks), state(4.0, b, asks)]
    verdict = judge(rest(a, asks), states, arrived=4.25)
    assert verdict.matched and verdict.age_s == pytest.approx(0.25)  # state 3, superseded at 4.0
    late = judge(rest([("100", "3")], asks), [*states, state(4.75, [("100", "3")], asks)], arrived=4.25)
    assert late.matched and late.age_s == pytest.approx(-0.5)  # the stream showed it later


def test_a_mismatch_names_the_levels_that_differ_from_the_closest_state():
    asks = [("101", "1"), ("102", "1")]
    states = [state(1.0, [("100", "1"), ("99", "5")], asks), state(2.0, [("100", "9")], [("105", "1")])]
    verdict = judge(rest([("100", "1"), ("99", "4")], asks), states, arrived=2.5)
    assert not verdict.matched and verdict.age_s is None and verdict.compared == 2
    assert verdict.differences == ("bids[1] rest 99 4, stream 99 5",)
    gone = judge(rest([("100", "1")], asks), [state(1.0, [], asks)], arrived=2.0)
    assert gone.differences == ("bids[0] rest 100 1, stream none",)


def test_only_known_states_are_compared():
    nothing = judge(rest([], []), [State(1.0, None, None)], arrived=2.0)
    assert not nothing.matched and nothing.compared == 0


# ---- one symbol's run ------------------------------------------------------------------------


def run(track: Track, *outcomes: Outcome) -> list[bool]:
    return [track.record(o) for o in outcomes]


def test_two_mismatches_in_a_row_resync_and_an_error_between_them_does_not_break_the_run():
    assert run(Track(), Outcome.MISMATCH, Outcome.MISMATCH) == [False, True]
    assert run(Track(), Outcome.MISMATCH, Outcome.FAILED, Outcome.MISMATCH) == [False, False, True]
    assert run(Track(), Outcome.MISMATCH, Outcome.MATCH, Outcome.MISMATCH) == [False, False, False]
    assert run(Track(), Outcome.MISMATCH, Outcome.NOT_LIVE, Outcome.MISMATCH) == [False, False, False]
    track = Track()
    track.record(Outcome.MISMATCH)
    track.rebuilt(resyncs=1)  # the feed resynchronised meanwhile: a fresh book
    assert track.record(Outcome.MISMATCH) is False


def test_audits_that_keep_failing_are_a_problem_until_one_matches():
    track = Track()
    run(track, Outcome.MISMATCH, Outcome.MISMATCH)
    assert track.problem is None
    track.record(Outcome.RATE_LIMITED)
    assert track.problem is not None and "last 3 audits" in track.problem
    assert "mismatch x2" in track.problem and "rate_limited x1" in track.problem
    track.record(Outcome.MATCH)
    assert track.problem is None
