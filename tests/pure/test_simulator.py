"""The simulator is seeded, valid and realistic enough to test against."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from oddstream.simulator.model import BOOKMAKERS, MarketSimulator
from schemas.catalog import Event, load_catalog
from schemas.codec import Codec
from schemas.validation import as_millis
from streams.market import overround

pytestmark = pytest.mark.pure
START = 1_800_000_000_000


def take(seed: int, n: int) -> list[Event]:
    return list(
        itertools.islice(MarketSimulator(seed=seed, start_ms=START, market_lifetime_s=(20, 40)).events(), n)
    )


def test_same_seed_same_events_other_seed_other_events() -> None:
    assert take(3, 2000) == take(3, 2000)
    assert take(3, 200) != take(4, 200)


def test_every_event_is_valid_and_time_never_goes_back() -> None:
    codec = Codec(load_catalog())
    events = take(5, 30_000)
    times = [e.record["event_time"] for e in events]
    assert times == sorted(times)
    for event in events:
        codec.validate(event)
    kinds = Counter(e.type for e in events)
    assert {"OddsChanged", "BetPlaced", "BetSettled", "MarketResulted", "MarketStatusChanged",
            "ApiCallRecorded", "UserActivity", "ServiceHeartbeat", "CashOut"} <= set(kinds)  # fmt: skip


def test_quotes_carry_each_bookmakers_margin_and_ground_truth_is_recorded() -> None:
    sim = MarketSimulator(seed=9, start_ms=START, market_lifetime_s=(20, 40))
    events = list(itertools.islice(sim.events(), 20_000))
    first_quotes = [e.record for e in events[:60] if e.type == "OddsChanged"]
    for bookmaker, margin in BOOKMAKERS.items():
        market = first_quotes[0]["market_id"]
        prices = [r["odds"] for r in first_quotes if r["bookmaker"] == bookmaker and r["market_id"] == market]
        assert len(prices) == 3
        assert overround(prices) == pytest.approx(margin, abs=0.04)
    assert sim.ground_truth, "markets closed within the run"
    truth = sim.ground_truth[0]
    assert sum(truth["true_probabilities"].values()) == pytest.approx(1.0)
    results = [
        e for e in events if e.type == "MarketResulted" and e.record["market_id"] == truth["market_id"]
    ]
    assert results[0].record["winning_selection_ids"] == [truth["winner"]]
    assert as_millis(results[0].record["event_time"]) == truth["closed_at_ms"]


def test_injected_anomalies_and_mispricings_are_labelled_and_valid() -> None:
    codec = Codec(load_catalog())
    sim = MarketSimulator(
        seed=5, start_ms=START, market_lifetime_s=(20, 40), anomaly_rate=0.01, mispricing_rate=0.01
    )
    events = list(itertools.islice(sim.events(), 20_000))
    for event in events:
        codec.validate(event)
    labels = [t for t in sim.ground_truth if t["kind"] != "result"]
    kinds = Counter((t["kind"], t.get("type")) for t in labels)
    assert set(kinds) == {("anomaly", "steam"), ("anomaly", "stake_spike"), ("anomaly", "latency_spike"),
                          ("mispricing", None)}  # fmt: skip
    by_time: dict[int, list[Event]] = {}
    for e in events:
        by_time.setdefault(as_millis(e.record["event_time"]), []).append(e)
    for t in labels:
        at = by_time[t["event_time"]]
        if t.get("type") == "steam":
            moves = [
                e for e in at if e.type == "OddsChanged" and e.record["selection_id"] == t["selection_id"]
                and e.record["market_id"] == t["market_id"]
            ]  # fmt: skip
            assert {e.record["bookmaker"] for e in moves} >= set(t["bookmakers"])
        elif t.get("type") == "stake_spike":
            assert any(e.type == "BetPlaced" and e.record["bet_id"] == t["bet_id"] for e in at)
        elif t["kind"] == "mispricing":
            quote = next(e for e in at if e.type == "OddsChanged" and e.record["bookmaker"] == t["bookmaker"]
                         and e.record["odds"] == t["odds"])  # fmt: skip
            assert 1.0 / quote.record["odds"] < t["true_probability"]  # a value price
    # without injections (the default) the stream is the one it always was
    plain = MarketSimulator(seed=5, start_ms=START, market_lifetime_s=(20, 40), anomaly_rate=0.0)
    assert list(itertools.islice(plain.events(), 2_000)) == take(5, 2_000)
