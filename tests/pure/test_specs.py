"""Window specs: parsing with reasons, and what each default spec computes in the processor."""

from __future__ import annotations

import json
from typing import Any

import pytest

from schemas.catalog import Event, load_catalog
from schemas.codec import Codec
from streams.processor import PartitionProcessor, WindowConfig, window_id
from streams.specs import DEFAULT_SPECS, parse_specs, specs_json
from tests.pure.test_processor import T0, Feed, bet, opened

pytestmark = pytest.mark.pure
DEFAULTS = WindowConfig(size_ms=60_000, delay_ms=5_000, grace_ms=10_000, idle_timeout_ms=30_000)


class SpecFeed(Feed):
    def __init__(self) -> None:
        super().__init__()
        self.processor = PartitionProcessor(DEFAULTS)


def test_the_defaults_round_trip_through_their_json() -> None:
    assert parse_specs(specs_json(DEFAULT_SPECS)) == DEFAULT_SPECS
    assert parse_specs("[]") == ()


BETS = '"kinds": ["bets"], "size_ms": 60000'


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"name": "x"}', "a JSON list"),
        ("[3]", "an object"),
        ('[{"name": "Bad Name", "kinds": ["bets"], "shape": "tumbling", "size_ms": 60000}]', "a-z, 0-9"),
        ('[{"name": "1m", "kinds": ["bets"], "shape": "tumbling", "size_ms": 60000}]', "primary spec"),
        ('[{"name": "x", "kinds": ["market"], "shape": "sliding", "size_ms": 60000}]', "price only"),
        ('[{"name": "x", "kinds": ["user"], "shape": "tumbling", "size_ms": 60000}]', "unknown kind 'user'"),
        ('[{"name": "x", "shape": "hopping", "advance_ms": 120000, ' + BETS + "}]", "gaps"),
        ('[{"name": "x", "kinds": ["bets"], "shape": "hopping", "size_ms": 600000, "advance_ms": 1000}]',
         "above"),
        ('[{"name": "x", "shape": "tumbling", "advance_ms": 1000, ' + BETS + "}]", "hopping"),
        ('[{"name": "x", "kinds": ["bets"], "shape": "round", "size_ms": 60000}]', "shape must be"),
        ('[{"name": "x", "kinds": ["bets"], "shape": "tumbling", "size_ms": "60s"}]', "at least 1000"),
        ('[{"name": "x", "kinds": [], "shape": "tumbling", "size_ms": 60000}]', "at least one kind"),
        ('[{"name": "x", "shape": "tumbling", "every": 1, ' + BETS + "}]", "unknown fields"),
        ('[{"name": "x", "kinds": ["bets"], "shape": "tumbling", "size_ms": 60000},'
         ' {"name": "x", "kinds": ["price"], "shape": "tumbling", "size_ms": 60000}]', "must differ"),
        ("not json", "Expecting value"),
    ],
)  # fmt: skip
def test_a_bad_spec_is_refused_with_its_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_specs(text)


def finals(feed: Feed, engine: str) -> list[dict[str, Any]]:
    return [e.record for e in feed.emissions if e.kind == engine and e.final]


def test_a_bet_is_in_five_hopping_windows_of_five_minutes_each_marked_with_its_spec() -> None:
    feed = opened(SpecFeed())
    bet(feed, 150_000, "b1", "home", "10.00", 2.0)  # 2.5 minutes in
    bet(feed, 290_000, "b2", "home", "5.00", 3.0)
    # current updates: of the window that closes first, the 5 minutes up to the next minute
    currents = [e.record for e in feed.emissions if e.kind == "bets@5m_every_1m" and not e.final]
    assert [((r["window_start"] - T0) // 60_000, r["bets"]) for r in currents] == [(-2, 1), (0, 2)]
    feed.emissions += feed.processor.flush()
    hopping = sorted(finals(feed, "bets@5m_every_1m"), key=lambda r: r["window_start"])
    # windows [s, s + 5 min) with s a whole minute and s <= t < s + 5 min
    assert [(r["window_start"] - T0) // 60_000 for r in hopping] == [-2, -1, 0, 1, 2, 3, 4]
    assert [r["bets"] for r in hopping] == [1, 1, 2, 2, 2, 1, 1]
    assert all(r["spec"] == "5m_every_1m" and r["window_end"] - r["window_start"] == 300_000 for r in hopping)
    assert {r["turnover"] for r in hopping if r["bets"] == 2} == {15.0}
    primary = finals(feed, "bets")
    assert [r["spec"] for r in primary] == ["1m", "1m"] and len({r["window_id"] for r in primary}) == 2
    assert not {r["window_id"] for r in hopping} & {r["window_id"] for r in primary}
    assert primary[0]["window_id"] == window_id("bets", "m1", T0 + 120_000, T0 + 180_000)  # 1m ids unchanged
    market = finals(feed, "market@5m_every_1m")
    assert market == []  # no quotes: no market window in any spec


def test_a_sliding_price_window_covers_the_minute_up_to_each_quote() -> None:
    feed = opened(SpecFeed())
    for ms, odds in ((0, 2.0), (20_000, 2.2), (50_000, 2.4), (70_000, 2.6)):
        feed.odds(ms, "home", odds)
    feed.emissions += feed.processor.flush()
    sliding = {r["window_end"] - T0 - 1: r for r in finals(feed, "price@60s_sliding")}
    assert sorted(sliding) == [0, 20_000, 50_000, 70_000]
    last = sliding[70_000]  # (10 s, 70 s]: the quotes at 20, 50 and 70 s
    assert (last["changes"], last["open"], last["last"], last["high"], last["low"]) == (3, 2.2, 2.6, 2.6, 2.2)
    assert last["window_start"] == T0 + 10_001 and last["spec"] == "60s_sliding"
    assert last["velocity_pct_per_min"] == pytest.approx((2.6 / 2.2 - 1) * 100 * 60 / 50)
    assert sliding[50_000]["changes"] == 3 and sliding[0]["changes"] == 1


def test_a_late_quote_names_the_spec_whose_window_it_missed_and_still_counts_where_it_can() -> None:
    feed = opened(SpecFeed())
    feed.odds(65_000, "home", 2.0)
    feed.odds(110_000, "home", 2.1)  # watermark 105 s
    feed.odds(80_000, "home", 9.0)  # its own sliding window ends at 80.001 s, + grace 10 s <= 105 s: late
    # ... while its 1m window [60 s, 120 s) and its hopping windows (ends from 120 s) stay open
    assert [late.kind for late in feed.late] == ["price@60s_sliding"]
    feed.emissions += feed.processor.flush()
    sliding = {r["window_end"] - T0 - 1: r for r in finals(feed, "price@60s_sliding")}
    # the late quote has no window of its own, yet joins the open window of the quote at 110 s
    assert sorted(sliding) == [65_000, 110_000] and sliding[110_000]["high"] == 9.0
    assert sliding[110_000]["changes"] == 3 and sliding[65_000]["changes"] == 1
    assert feed.processor.late_events == {
        "market": 0, "price": 0, "bets": 0, "service": 0, "route": 0, "user": 0,
        "market@5m_every_1m": 0, "bets@5m_every_1m": 0, "price@60s_sliding": 1,
    }  # fmt: skip


def test_every_spec_emission_honours_its_contract() -> None:
    feed = opened(SpecFeed())
    for n in range(40):
        feed.odds(n * 7_000, ("home", "away")[n % 2], 2.0 + n / 100, bookmaker=("b1", "b2")[n % 3 == 0])
        bet(feed, n * 7_000 + 1, f"b{n}", "home", "2.50", 2.0)
    feed.emissions += feed.processor.flush()
    codec = Codec(load_catalog())
    specs = set()
    for emission in feed.emissions:
        event = Event(emission.event_type, {**emission.record, "source": "w"})
        decoded = codec.decode(codec.encode(event))
        specs.add((emission.kind, decoded.record.get("spec")))
    assert {s for s in specs if "@" in s[0]} == {
        ("market@5m_every_1m", "5m_every_1m"), ("bets@5m_every_1m", "5m_every_1m"),
        ("price@60s_sliding", "60s_sliding"),
    }  # fmt: skip


def test_specs_json_is_what_the_settings_carry() -> None:
    assert json.loads(specs_json(DEFAULT_SPECS))[0] == {
        "name": "5m_every_1m", "kinds": ["market", "bets"], "shape": "hopping", "size_ms": 300_000,
        "advance_ms": 60_000,
    }  # fmt: skip


def test_a_busy_keys_sliding_and_hopping_updates_coalesce_to_one_per_key() -> None:
    """A backlog (the wall clock standing still): five quotes of one price give one current
    update per spec, of the newest sliding window and of the hopping window closing first;
    the sliding windows' finals come one by one, and never drop the newer pending update."""
    processor = PartitionProcessor(DEFAULTS)
    record = {
        "event_id": "s",
        "event_time": T0,
        "source": "t",
        "market_id": "m1",
        "status": "OPEN",
        "reason": None,
    }
    processor.process(0, "MarketStatusChanged", record, wall_ms=0)
    for n in range(5):
        quote = {"event_id": f"q{n}", "event_time": T0 + n * 1_000, "source": "t", "market_id": "m1",
                 "selection_id": "home", "bookmaker": "b1", "odds": 2.0 + n / 10}  # fmt: skip
        processor.process(n + 1, "OddsChanged", quote, wall_ms=0)
    currents = processor.take_currents(wall_ms=0, interval_ms=250)
    by_kind = {e.kind: e.record for e in currents}
    assert sorted(by_kind) == ["market", "market@5m_every_1m", "price", "price@60s_sliding"]
    assert len(currents) == 4
    sliding = by_kind["price@60s_sliding"]
    assert (sliding["window_end"], sliding["changes"], sliding["last"]) == (T0 + 4_001, 5, 2.4)
    assert by_kind["market@5m_every_1m"]["window_start"] == T0 - 240_000  # closes first, at T0 + 1 min
    # a later quote: the key's slot holds its newest window; the finals of the windows it
    # closes (watermark 21 s - 5 s passes 0..4 s + grace 10 s) leave it pending
    quote = {"event_id": "q9", "event_time": T0 + 21_000, "source": "t", "market_id": "m1",
             "selection_id": "home", "bookmaker": "b1", "odds": 3.0}  # fmt: skip
    out = processor.process(9, "OddsChanged", quote, wall_ms=100)
    finals = [e.record["window_end"] - T0 for e in out.emissions if e.kind == "price@60s_sliding"]
    assert finals == [1, 1_001, 2_001, 3_001, 4_001]
    later = {e.kind: e.record for e in processor.take_currents(wall_ms=300, interval_ms=250)}
    assert later["price@60s_sliding"]["window_end"] == T0 + 21_001
    assert later["price@60s_sliding"]["changes"] == 6
