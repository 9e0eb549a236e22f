"""Window assignment."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.market import implied_probability, overround
from streams.windows import TumblingWindow

pytestmark = pytest.mark.pure
MINUTE = TumblingWindow(60_000)


@given(st.integers(1, 200_000), st.integers(0, 4 * 10**12))
def test_tumbling_assignment_matches_brute_force(size: int, t: int) -> None:
    window = TumblingWindow(size)
    start = window.start_of(t)
    assert start % size == 0 and start <= t < window.end_of(t)
    # brute force: the one multiple of size in (t - size, t]
    assert [s for s in range(t - size + 1, t + 1) if s % size == 0] == [start]


def test_window_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        TumblingWindow(0)


def test_market_math_hand_worked() -> None:
    assert implied_probability(4.0) == 0.25
    assert overround([1.9, 1.9]) == pytest.approx(0.052631578947)  # a classic 10/11 two-way market
    with pytest.raises(ValueError):
        implied_probability(1.0)
