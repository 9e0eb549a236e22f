"""The River contract every model in streams.models keeps: pickle round trip, seeded
determinism, missing and new features."""

from __future__ import annotations

import math
import pickle
import random

import pytest

from streams.models import MODELS, ModelSpec, drift_detector

pytestmark = pytest.mark.pure
SPECS = list(MODELS.values())


def stream(seed: int, n: int) -> list[tuple[dict[str, float], float]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        x = {"fair_probability": rng.uniform(0.05, 0.9), "overround": rng.uniform(0.02, 0.1),
             "velocity": rng.gauss(0, 1)}  # fmt: skip
        y = float(rng.random() < x["fair_probability"])
        rows.append((x, y))
    return rows


def trained(spec: ModelSpec, seed: int, rows: list[tuple[dict[str, float], float]]) -> object:
    model = spec.make(seed)
    for x, y in rows:
        model = spec.learn(model, x, y)
    return model


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_pickle_round_trip_predicts_and_learns_the_same(spec: ModelSpec) -> None:
    rows = stream(1, 600)
    model = trained(spec, 7, rows[:400])
    copy = pickle.loads(pickle.dumps(model))
    for x, y in rows[400:]:
        assert spec.predict(copy, x) == spec.predict(model, x)
        model, copy = spec.learn(model, x, y), spec.learn(copy, x, y)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_same_seed_same_data_same_predictions(spec: ModelSpec) -> None:
    rows = stream(2, 500)
    a, b = trained(spec, 11, rows), trained(spec, 11, rows)
    probes = [x for x, _ in stream(3, 50)]
    assert [spec.predict(a, x) for x in probes] == [spec.predict(b, x) for x in probes]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_missing_and_new_features_are_tolerated(spec: ModelSpec) -> None:
    model = trained(spec, 5, stream(4, 300))
    missing = spec.predict(model, {"fair_probability": 0.4})
    new = spec.predict(
        model, {"fair_probability": 0.4, "overround": 0.05, "velocity": 0.0, "time_to_start": 3.0}
    )
    assert math.isfinite(missing) and math.isfinite(new)
    spec.learn(model, {"fair_probability": 0.4, "money_share": 0.2}, 1.0)  # learning with a new feature


def test_outcome_model_learns_the_signal() -> None:
    spec = MODELS["outcome"]
    model = trained(spec, 1, stream(5, 3_000))
    assert spec.predict(model, {"fair_probability": 0.85, "overround": 0.05, "velocity": 0.0}) > spec.predict(
        model, {"fair_probability": 0.1, "overround": 0.05, "velocity": 0.0}
    )


def test_anomaly_scores_an_outlier_higher() -> None:
    spec = MODELS["anomaly"]
    model = trained(spec, 3, stream(6, 1_000))
    normal = spec.predict(model, {"fair_probability": 0.4, "overround": 0.05, "velocity": 0.1})
    outlier = spec.predict(model, {"fair_probability": 0.4, "overround": 0.05, "velocity": 40.0})
    assert 0.0 <= normal < outlier <= 1.0


def test_adwin_flags_a_shift_in_the_error_stream() -> None:
    detector = drift_detector()
    rng = random.Random(9)
    flagged = []
    for n in range(4_000):
        detector.update(rng.gauss(0.2 if n < 2_000 else 0.6, 0.05))
        if detector.drift_detected:
            flagged.append(n)
    assert flagged and all(n >= 2_000 for n in flagged)


def test_the_anomaly_model_learns_and_scores_as_its_pipeline_does() -> None:
    """The detectors call the anomaly pipeline's steps directly (cheaper): the same scores and
    the same state as the pipeline's own learn_one and score_one, bet after bet."""
    spec = MODELS["anomaly"]
    direct, reference = spec.make(3), spec.make(3)
    rng = random.Random(5)
    for i in range(3_000):
        x = {"log_stake": math.log(rng.lognormvariate(3, 1)), "log_odds": math.log(rng.uniform(1.1, 8.0))}
        if i > 600:
            assert spec.predict(direct, x) == reference.score_one(dict(x))
        direct = spec.learn(direct, x, None)
        reference.learn_one(dict(x))
    # the steps' state; the pipeline itself only caches its plan when it is called
    assert pickle.dumps(list(direct.steps.values())) == pickle.dumps(list(reference.steps.values()))
