"""The partition's open bets: which close counts, closes that overtake their bet, eviction."""

from __future__ import annotations

import pytest

from streams.analytics import Stake
from streams.bets import BetBook, Close

pytestmark = pytest.mark.pure
BET = Stake("home", "u1", 1_000, 2.0)


def test_a_close_takes_its_open_bet_and_only_the_first_close_counts() -> None:
    book = BetBook()
    assert book.place("m1", "b1", BET, 1_000) is None and book.open_in("m1") == 1
    assert book.close("m1", "b1", Close("cancelled", 2_000)) == BET
    assert book.open == {} and book.open_in("m1") == 0
    assert book.close("m1", "b1", Close("settled", 3_000)) is None  # closed already: nothing to take


def test_a_close_before_its_bet_is_remembered_and_shuts_the_bet_when_it_arrives() -> None:
    book = BetBook()
    assert book.close("m1", "b1", Close("cashed_out", 2_000, paid_cents=1_250)) is None
    assert book.close("m1", "b1", Close("cancelled", 2_500)) is None  # the first close stands
    assert book.place("m1", "b1", BET, 1_000) == Close("cashed_out", 2_000, paid_cents=1_250)
    assert book.open == {} and book.closed_first == {}


def test_idle_markets_and_closes_whose_bet_never_came_are_evicted_by_event_time() -> None:
    book = BetBook()
    book.place("old", "b1", BET, 0)
    book.place("live", "b2", BET, 0)
    book.close("live", "b3", Close("cancelled", 500))  # b3 never arrives
    book.place("live", "b4", BET, 9_000)
    book.evict(10_000, idle_market_ms=10_000, late_ms=9_000)
    assert set(book.open) == {"live"} and set(book.seen) == {"live"}
    assert book.closed_first == {}
    book.evict(10_000, idle_market_ms=10_000, late_ms=9_000)  # idempotent
    assert set(book.open["live"]) == {"b2", "b4"}
