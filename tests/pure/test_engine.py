"""The window engine: assignment, watermark, grace, lateness, finals."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.engine import WindowEngine, WindowResult
from streams.windows import HoppingWindow, SlidingWindow, TumblingWindow, WindowShape
from tests.integration.window_oracle import sliding_windows

pytestmark = pytest.mark.pure


@dataclass(frozen=True)
class Stats:
    """An order-insensitive aggregate: count, sum, min, max, and the ids folded in."""

    count: int = 0
    total: int = 0
    low: int | None = None
    high: int | None = None
    ids: frozenset[int] = frozenset()


class StatsAggregator:
    def zero(self) -> Stats:
        return Stats()

    def add(self, aggregate: Stats, value: tuple[int, int], event_ms: int) -> Stats:
        event_id, amount = value
        return Stats(
            aggregate.count + 1,
            aggregate.total + amount,
            amount if aggregate.low is None else min(aggregate.low, amount),
            amount if aggregate.high is None else max(aggregate.high, amount),
            aggregate.ids | {event_id},
        )


Event = tuple[str, int, int, int]  # key, event ms, id, amount


@given(st.integers(1, 50_000), st.integers(1, 50_000), st.integers(0, 10**12))
def test_hopping_assignment_matches_brute_force(size: int, hop: int, t: int) -> None:
    if hop > size:
        size, hop = hop, size
    expected = [(s, s + size) for s in range(t - size + 1, t + 1) if s % hop == 0]
    assert HoppingWindow(size, hop).windows_of(t) == expected


@given(st.integers(1, 50_000), st.integers(0, 10**12))
def test_tumbling_is_hopping_by_its_size(size: int, t: int) -> None:
    assert TumblingWindow(size).windows_of(t) == HoppingWindow(size, size).windows_of(t)


def brute_force(shape: WindowShape, events: list[Event]) -> dict[tuple[str, int, int], Stats]:
    """Every window's aggregate straight from the definition."""
    agg = StatsAggregator()
    windows: dict[tuple[str, int, int], Stats] = {}
    for key, t, _, _ in events:
        owned = [shape.own_window(t)] if isinstance(shape, SlidingWindow) else shape.windows_of(t)
        for start, end in owned:
            windows.setdefault((key, start, end), agg.zero())
    for (key, start, end), _stats in list(windows.items()):
        for k, t, event_id, amount in events:
            if k == key and start <= t < end:
                windows[(key, start, end)] = agg.add(windows[(key, start, end)], (event_id, amount), t)
    return windows


def run(
    shape: WindowShape, events: list[Event], delay: int, grace: int
) -> tuple[list[WindowResult[str, Stats]], int]:
    engine: WindowEngine[str, tuple[int, int], Stats] = WindowEngine(shape, StatsAggregator(), delay, grace)
    finals: list[WindowResult[str, Stats]] = []
    for n, (key, t, event_id, amount) in enumerate(events):
        out = engine.process(key, t, (event_id, amount), processing_ms=n)
        finals += out.finals
    finals += engine.flush()
    return finals, engine.late_events


shapes = st.one_of(
    st.builds(TumblingWindow, st.integers(5, 200)),
    st.builds(lambda s, h: HoppingWindow(s, min(h, s)), st.integers(5, 200), st.integers(1, 200)),
    st.builds(SlidingWindow, st.integers(1, 200)),
)
event_lists = st.lists(
    st.tuples(st.sampled_from(["m1", "m2", "m3"]), st.integers(0, 2_000), st.integers(1, 1000)),
    min_size=1,
    max_size=60,
)


@given(shapes, event_lists, st.integers(0, 100), st.integers(0, 100), st.randoms(use_true_random=False))
def test_finals_equal_brute_force_for_any_arrival_order_within_delay_plus_grace(
    shape: WindowShape, raw: list[tuple[str, int, int]], delay: int, grace: int, rnd: random.Random
) -> None:
    events = [(k, t, n, amount) for n, (k, t, amount) in enumerate(raw)]
    in_order = sorted(events, key=lambda e: (e[1], e[2]))
    # shuffle with bounded disorder: nothing arrives more than delay + grace behind the max
    jitter = {e[2]: rnd.randrange(delay + grace + 1) for e in events}
    shuffled = sorted(events, key=lambda e: (e[1] + jitter[e[2]], e[2]))
    expected = brute_force(shape, events)
    for order in (in_order, shuffled):
        finals, late = run(shape, order, delay, grace)
        assert late == 0
        got = {(f.key, f.start, f.end): f.aggregate for f in finals}
        assert got == expected
        assert len(finals) == len(got)  # exactly one final per window
        assert all(f.version == f.aggregate.count for f in finals)


@given(shapes, event_lists, st.integers(0, 50), st.integers(0, 50))
def test_late_events_are_never_merged_into_closed_windows(
    shape: WindowShape, raw: list[tuple[str, int, int]], delay: int, grace: int
) -> None:
    events = [(k, t, n, amount) for n, (k, t, amount) in enumerate(raw)]
    engine: WindowEngine[str, tuple[int, int], Stats] = WindowEngine(shape, StatsAggregator(), delay, grace)
    closed: set[tuple[str, int, int]] = set()
    finals_seen: Counter[tuple[str, int, int]] = Counter()
    late = 0
    for n, (key, t, event_id, amount) in enumerate(events):
        out = engine.process(key, t, (event_id, amount), processing_ms=n)
        for update in out.updates:
            assert (update.key, update.start, update.end) not in closed, "an update to a closed window"
        for final in out.finals:
            closed.add((final.key, final.start, final.end))
            finals_seen[(final.key, final.start, final.end)] += 1
        if out.late is not None:
            late += 1
            assert all(w[1] + grace <= out.late.watermark for w in out.late.missed)
    for final in engine.flush():
        finals_seen[(final.key, final.start, final.end)] += 1
    assert set(finals_seen.values()) <= {1}
    assert engine.late_events == late


def test_an_event_beyond_the_grace_is_reported_with_the_window_it_missed() -> None:
    engine: WindowEngine[str, tuple[int, int], Stats] = WindowEngine(
        TumblingWindow(60_000), StatsAggregator(), 5_000, 10_000
    )
    engine.process("m1", 10_000, (1, 5), 0)
    out = engine.process("m1", 80_000, (2, 5), 1)  # watermark 75_000 = 60_000 + grace 10_000 + 5_000
    assert [(f.start, f.end, f.final, f.aggregate.count) for f in out.finals] == [(0, 60_000, True, 1)]
    late = engine.process("m1", 59_000, (3, 5), 2)
    assert late.late is not None and late.late.missed == ((0, 60_000),) and late.updates == []
    within = engine.process("m1", 61_000, (4, 5), 3)
    assert within.late is None and within.updates[0].version == 2


def test_quiet_partitions_get_early_finals_that_event_time_can_still_revise() -> None:
    engine: WindowEngine[str, tuple[int, int], Stats] = WindowEngine(
        TumblingWindow(60_000), StatsAggregator(), 5_000, 10_000, idle_timeout_ms=30_000
    )
    engine.process("m1", 1_000, (1, 5), processing_ms=1_000_000)
    assert engine.on_idle(1_020_000) == []  # 20 s of silence: below the idle timeout
    finals = engine.on_idle(1_080_000)  # 80 s: idle mark 1_000 - 5_000 + 80_000 = 76_000
    assert [(f.start, f.version, f.final) for f in finals] == [(0, 1, True)]
    assert engine.on_idle(1_090_000) == []  # emitted once, not every tick
    # lateness is event time only: the watermark (-4 s) has not passed the window, so an
    # event for it still counts and the early final is revised
    result = engine.process("m1", 2_000, (2, 5), processing_ms=1_091_000)
    assert result.late is None and engine.watermark == -3_000
    revised = engine.on_idle(1_091_000 + 80_000)
    assert [(f.start, f.version, f.aggregate.count) for f in revised] == [(0, 2, 2)]
    # when the watermark passes the window it closes without a third final
    assert [f.start for f in engine.process("m1", 80_000, (3, 5), 1_200_000).finals] == []
    assert engine.open_windows == 1  # only the new window [60 s, 120 s)


def test_sliding_windows_end_at_each_event() -> None:
    engine: WindowEngine[str, tuple[int, int], Stats] = WindowEngine(SlidingWindow(10), StatsAggregator())
    for n, t in enumerate([0, 5, 12]):
        engine.process("k", t, (n, 1), n)
    finals = sorted((f.start, f.end, f.aggregate.count) for f in engine.flush())
    # events at 0 and 5 closed as they passed (delay 0, grace 0); here: the window ending at 12
    assert finals[-1] == (3, 13, 2)


@given(
    st.integers(1, 500),
    event_lists,
    st.integers(0, 100),
    st.integers(0, 100),
    st.randoms(use_true_random=False),
)
def test_the_tumbling_fast_path_gives_what_the_general_path_gives(
    size: int, raw: list[tuple[str, int, int]], delay: int, grace: int, rnd: random.Random
) -> None:
    """A tumbling window is a hopping one with hop = size; the engine takes a shortcut for
    tumbling windows, and every result, final, lateness and watermark must be the same."""
    events = [(k, t, n, amount) for n, (k, t, amount) in enumerate(raw)]
    rnd.shuffle(events)  # any disorder, late events included
    fast: WindowEngine[str, tuple[int, int], Stats] = WindowEngine(
        TumblingWindow(size), StatsAggregator(), delay, grace
    )
    general: WindowEngine[str, tuple[int, int], Stats] = WindowEngine(
        HoppingWindow(size, size), StatsAggregator(), delay, grace
    )
    for key, t, n, amount in events:
        assert fast.process(key, t, (n, amount), 0) == general.process(key, t, (n, amount), 0)
        assert (fast.watermark, fast.max_event_ms, fast.late_events) == (
            general.watermark,
            general.max_event_ms,
            general.late_events,
        )
    assert fast.flush() == general.flush()


def test_results_built_on_the_fast_path_equal_the_dataclass_ones() -> None:
    import pickle

    from streams.engine import LateEvent, Processed, WindowResult, _processed, _result

    fast = _result("k", 0, 60_000, {"n": 1}, 3, False)
    slow = WindowResult("k", 0, 60_000, {"n": 1}, 3, False)
    assert fast == slow and repr(fast) == repr(slow) and pickle.loads(pickle.dumps(fast)) == slow
    late = LateEvent("k", 5, 10, ((0, 60_000),))
    assert _processed([fast], [], late) == Processed([slow], [], late)


@given(
    st.integers(1, 300),
    event_lists,
    st.integers(0, 100),
    st.integers(0, 100),
    st.randoms(use_true_random=False),
)
def test_sliding_windows_equal_the_oracles_definition_late_events_included(
    size: int, raw: list[tuple[str, int, int]], delay: int, grace: int, rnd: random.Random
) -> None:
    """The exactness test checks the worker's sliding windows against
    tests/integration/window_oracle.sliding_windows; here that definition meets the engine
    on any disorder, with events late for their own window that still join open ones."""
    events = [(k, t, n, amount) for n, (k, t, amount) in enumerate(raw)]
    rnd.shuffle(events)
    engine: WindowEngine[str, tuple[int, int], Stats] = WindowEngine(
        SlidingWindow(size), StatsAggregator(), delay, grace
    )
    finals: dict[tuple[str, int, int], Stats] = {}
    late = set()
    for n, (key, t, event_id, amount) in enumerate(events):
        out = engine.process(key, t, (event_id, amount), processing_ms=n)
        finals.update({(f.key, f.start, f.end): f.aggregate for f in out.finals})
        if out.late is not None:
            late.add(n)
    finals.update({(f.key, f.start, f.end): f.aggregate for f in engine.flush()})
    windows, oracle_late = sliding_windows([(t, k) for k, t, _, _ in events], size, delay, grace)
    agg = StatsAggregator()
    expected = {}
    for window, members in windows.items():
        stats = agg.zero()
        for i in members:
            stats = agg.add(stats, (events[i][2], events[i][3]), events[i][1])
        expected[window] = stats
    assert late == oracle_late
    assert finals == expected


def test_a_quiet_stream_of_past_events_closes_its_windows_once_quiet_not_a_window_later() -> None:
    """Event times an hour behind the clock (a backfill): after the idle timeout the idle mark
    follows the clock itself, so even a 5-minute hopping window gets its early final at once;
    a later event within the grace still revises it."""
    hour = 3_600_000
    engine: WindowEngine[str, tuple[int, int], Stats] = WindowEngine(
        HoppingWindow(300_000, 60_000), StatsAggregator(), 5_000, 10_000, idle_timeout_ms=30_000
    )
    engine.process("m1", 1_000, (1, 5), processing_ms=hour)
    assert engine.on_idle(hour + 29_999) == []
    finals = engine.on_idle(hour + 30_000)
    assert [(f.start, f.end, f.version) for f in finals] == [
        (s, s + 300_000, 1) for s in (-240_000, -180_000, -120_000, -60_000, 0)
    ]
    revised = engine.process("m1", 2_000, (2, 5), processing_ms=hour + 31_000)
    assert revised.late is None and [u.version for u in revised.updates] == [2] * 5
    assert [f.version for f in engine.on_idle(hour + 61_000)] == [2] * 5
