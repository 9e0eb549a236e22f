"""The online models in a partition: delayed labels without leakage, checkpoint and restore
equal to an uninterrupted run, value signals, evaluation arithmetic."""

from __future__ import annotations

import math
import pickle
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oddstream.simulator.model import MarketSimulator, disorder
from schemas.catalog import Event
from schemas.validation import as_millis
from streams.evaluation import ForecastScore, log_loss
from streams.models import MODELS
from streams.predictor import Predictor, PredictorConfig, logit, market_view, view_after_quote
from streams.processor import Emission, PartitionProcessor
from tests.pure.test_snapshots import through_the_changelog

pytestmark = pytest.mark.pure
T0 = 1_767_225_600_000
NOTICES = {"PredictionMade", "ValueSignalRaised", "ModelEvaluated", "ModelDriftDetected", "AlertChanged"}


def simulated(n: int, seed: int) -> list[Event]:
    sim = MarketSimulator(
        seed=seed, start_ms=T0, markets=8, rate_per_s=50.0, market_lifetime_s=(60, 120),
        anomaly_rate=0.002, mispricing_rate=0.004,
    )  # fmt: skip
    stream = disorder(sim.events(), seed, fraction=0.05, max_delay_ms=20_000)
    return [e for _, e in zip(range(n), stream, strict=False)]


def notices(events: list[Event], processor: PartitionProcessor, start: int = 0) -> list[Emission]:
    out: list[Emission] = []
    for offset, event in enumerate(events[start:], start):
        out += [e for e in processor.process(offset, event.type, event.record, 0).emissions
                if e.event_type in NOTICES]  # fmt: skip
    return out


EVENTS = simulated(12_000, seed=21)


def test_the_stream_exercises_every_notice() -> None:
    kinds = {e.event_type for e in notices(EVENTS, PartitionProcessor(partition=0))}
    assert kinds >= {"PredictionMade", "ValueSignalRaised", "ModelEvaluated", "AlertChanged"}


def test_no_label_leakage_a_prediction_depends_only_on_what_came_before_it() -> None:
    """Truncating the log after any point leaves every earlier prediction unchanged (it could
    not have used what came later), each forecast's features are those stored at its time,
    and the model learns only from results."""
    full = PartitionProcessor(partition=0)
    everything = notices(EVENTS, full)
    rng = random.Random(4)
    for cut in sorted(rng.sample(range(1_000, len(EVENTS)), 5)):
        prefix = PartitionProcessor(partition=0)
        early = notices(EVENTS[:cut], prefix)
        assert [(e.event_type, e.record) for e in early] == [
            (e.event_type, e.record) for e in everything[: len(early)]
        ]
    newest = 0
    results_seen = 0
    processor = PartitionProcessor(partition=0)
    assert processor.predictor is not None
    for offset, event in enumerate(EVENTS):
        newest = max(newest, as_millis(event.record["event_time"]))
        learned_before = processor.predictor.learned
        for e in processor.process(offset, event.type, event.record, 0).emissions:
            if e.event_type == "PredictionMade":
                assert as_millis(e.record["event_time"]) <= newest  # never stamped in the future
        if event.type != "MarketResulted":
            assert processor.predictor.learned == learned_before  # labels only from results
        else:
            results_seen += 1
    assert results_seen > 5 and processor.predictor.learned > 100


def test_checkpoint_and_restore_give_the_same_predictions_and_alerts_as_an_uninterrupted_run() -> None:
    uninterrupted = notices(EVENTS, PartitionProcessor(partition=3))
    processor = PartitionProcessor(partition=3)
    restored: list[Emission] = []
    start = 0
    for cut in (2_345, 6_001, 9_999, len(EVENTS)):
        restored += notices(EVENTS[:cut], processor, start)
        processor = through_the_changelog(processor)  # what a restart restores
        start = cut
    assert [(e.event_type, e.record) for e in restored] == [(e.event_type, e.record) for e in uninterrupted]


def test_an_untrained_outcome_model_forecasts_the_market_consensus() -> None:
    model = MODELS["outcome"].make(0)
    for p in (0.05, 0.3, 0.5, 0.8):
        x = {"logit_consensus": logit(p), "overround": 0.01, "dev:a": 0.02}
        assert MODELS["outcome"].predict(model, x) == pytest.approx(p, rel=1e-9)
    copy = pickle.loads(pickle.dumps(model))
    assert MODELS["outcome"].predict(copy, {"logit_consensus": logit(0.3)}) == pytest.approx(0.3)


def book(
    predictor: Predictor, market: str, t: int, prices: dict[str, dict[str, float]]
) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for bookmaker, quotes in prices.items():
        for selection, odds in quotes.items():
            out += predictor.on_quote(market, selection, bookmaker, odds, t)
    return out


FAIR = {"home": 2.0, "draw": 4.0, "away": 4.0}  # probabilities 0.5 / 0.25 / 0.25


def priced(margin: float) -> dict[str, float]:
    return {s: round(o / (1 + margin), 2) for s, o in FAIR.items()}


def test_a_price_too_long_raises_one_value_signal_with_its_edge_and_confidence() -> None:
    predictor = Predictor(PredictorConfig(min_expected_value=0.08), partition=0)
    predictor.on_status("m1", "OPEN", T0)
    out = book(predictor, "m1", T0, {"a": priced(0.05), "b": priced(0.04), "c": priced(0.06)})
    assert [t for t, _ in out].count("PredictionMade") == 3
    assert not [r for t, r in out if t == "ValueSignalRaised"]
    signals = [
        r for t, r in predictor.on_quote("m1", "away", "b", 5.0, T0 + 1_000) if t == "ValueSignalRaised"
    ]
    [signal] = signals
    assert signal["bookmaker"] == "b" and signal["odds"] == 5.0
    assert signal["expected_value"] == pytest.approx(signal["model_probability"] * 5.0 - 1.0)
    assert signal["expected_value"] > 0.15 and 0.5 < signal["confidence"] <= 1.0
    assert signal["edge"] == pytest.approx(signal["model_probability"] - signal["market_probability"])
    again = predictor.on_quote("m1", "home", "b", priced(0.04)["home"], T0 + 2_000)
    assert not [r for t, r in again if t == "ValueSignalRaised"]  # the same long price: signalled once


def test_a_result_scores_every_forecast_then_teaches_the_model() -> None:
    predictor = Predictor(PredictorConfig(interval_ms=10_000), partition=0)
    predictor.on_status("m1", "OPEN", T0)
    book(predictor, "m1", T0, {"a": priced(0.05), "b": priced(0.04), "c": priced(0.06)})
    book(predictor, "m1", T0 + 10_000, {"a": priced(0.05)})
    assert len(predictor.pending["m1"]) == 6 and predictor.learned == 0
    out = dict(predictor.on_result("m1", ["home"], T0 + 20_000))
    metrics = out["ModelEvaluated"]
    assert metrics["labels"] == 6 and predictor.learned == 6 and "m1" not in predictor.pending
    forecasts = [0.5, 0.25, 0.25] * 2
    expected = sum(log_loss(p, won) for p, won in zip(forecasts, [True, False, False] * 2, strict=True)) / 6
    assert metrics["log_loss"] == pytest.approx(expected, rel=1e-2)  # the book's rounding moves p a little
    assert {b["name"] for b in metrics["baselines"]} == {"consensus", "book:a", "book:b", "book:c"}


def test_forecast_scores_are_exact_running_sums() -> None:
    score = ForecastScore(bins=4)
    for p, won in [(0.1, False), (0.2, True), (0.6, True), (0.9, True), (0.7, False)]:
        score.add(p, won)
    assert score.log_loss == pytest.approx(
        -(math.log(0.9) + math.log(0.2) + math.log(0.6) + math.log(0.9) + math.log(0.3)) / 5
    )
    assert score.brier == pytest.approx((0.01 + 0.64 + 0.16 + 0.01 + 0.49) / 5)
    table = score.calibration()
    assert [b.count for b in table] == [2, 0, 2, 1]  # [0, .25) [.25, .5) [.5, .75) [.75, 1]
    assert table[2].mean_probability == pytest.approx(0.65) and table[2].observed_rate == 0.5
    assert score.ece == pytest.approx((2 * abs(0.5 - 0.15) + 2 * abs(0.5 - 0.65) + abs(1 - 0.9)) / 5)
    assert score.roc_auc == pytest.approx(4 / 6, abs=0.05)  # 4 of the 6 (won, lost) pairs ordered
    with pytest.raises(ValueError, match="probability"):
        score.add(1.5, True)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["betfair", "bet365", "unibet", "pinnacle"]),
            st.sampled_from(["home", "draw", "away", "other"]),
            st.floats(min_value=1.01, max_value=50.0),
        ),
        max_size=60,
    )
)
def test_a_market_view_kept_up_to_date_quote_by_quote_equals_one_built_from_scratch(
    quotes: list[tuple[str, str, float]],
) -> None:
    book: dict[tuple[str, str], tuple[float, int]] = {}
    view = None
    for t, (bookmaker, selection, odds) in enumerate(quotes):
        book[(bookmaker, selection)] = (odds, t)
        view = view_after_quote(view, book, bookmaker, selection)
        assert view == market_view(book)  # the same floats, not approximately
        if view is not None:
            assert list(view.prices) == sorted(view.prices) == list(view.fair)
