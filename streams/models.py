"""The online models, built in one place so every one of them passes the same contract
(``tests/pure/test_model_contracts.py``): pickle round trip, seeded determinism, and
tolerance of missing or new features. Pure: River only, no I/O.

* ``outcome`` - P(selection wins) from odds features: logistic regression that starts at
  the market's price. Its weight on ``logit_consensus`` (the logit of the de-vigged
  consensus probability) starts at 1 and every other weight at 0, so an untrained model
  forecasts the consensus and learning moves it only where the labels disagree. Features
  are used as given (no scaling, which would change what weight 1 means).
* ``movement`` - expected next relative change of a selection's price: standardised
  linear regression with a Huber loss (price moves have heavy tails).
* ``anomaly`` - HalfSpaceTrees on features scaled to [0, 1] (min-max, learned online);
  the score is in [0, 1], higher is more anomalous.
* ``drift`` - ADWIN over a model's error stream.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from river import anomaly, compose, drift, linear_model, optim, preprocessing

Features = Mapping[str, float]


@dataclass(frozen=True)
class ModelSpec:
    """How to build, teach and query one kind of model."""

    name: str
    make: Callable[[int], Any]  # seed -> a fresh model
    learn: Callable[[Any, Features, float | None], Any]  # returns the model (River learns in place)
    predict: Callable[[Any, Features], float]


PRIOR_FEATURE = "logit_consensus"


def _outcome(seed: int) -> Any:
    # small steps: a market's forecasts share one label, so their gradients are correlated
    # no intercept: forecasts are normalised over the market, where a shared shift only
    # moves probability to the long shots
    model = linear_model.LogisticRegression(optimizer=optim.SGD(0.0001), l2=0.0, intercept_lr=0.0)
    # River offers no per-feature initial weight; its weights are a dict we seed once.
    # tests/pure/test_model_contracts.py checks an untrained model forecasts the prior.
    model._weights[PRIOR_FEATURE] = 1.0
    return model


def _movement(seed: int) -> Any:
    return compose.Pipeline(
        preprocessing.StandardScaler(),
        linear_model.LinearRegression(
            optimizer=optim.SGD(0.005), loss=optim.losses.Huber(epsilon=1.0), l2=1e-4, intercept_lr=0.005
        ),
    )


def _anomaly(seed: int) -> Any:
    return compose.Pipeline(
        preprocessing.MinMaxScaler(),
        anomaly.HalfSpaceTrees(n_trees=10, height=6, window_size=500, seed=seed),
    )


def _learn_supervised(model: Any, x: Features, y: float | None) -> Any:
    if y is None:
        raise ValueError("a supervised model learns from a label")
    model.learn_one(dict(x), y)
    return model


def _learn_anomaly(model: Any, x: Features, y: float | None) -> Any:
    """``model.learn_one(x)``, its two steps called directly: the same state as the pipeline
    leaves (tests/pure/test_model_contracts.py), without the pipeline's dispatch (a bet's
    score and learning: 16-17 instead of 19-21 us)."""
    scaler, trees = model.steps.values()
    features = dict(x)
    scaler.learn_one(features)
    trees.learn_one(scaler.transform_one(features))
    return model


def _score_anomaly(model: Any, x: Features) -> float:
    """``model.score_one(x)``, its two steps called directly (see :func:`_learn_anomaly`)."""
    scaler, trees = model.steps.values()
    return float(trees.score_one(scaler.transform_one(dict(x))))


def _probability(model: Any, x: Features) -> float:
    return float(model.predict_proba_one(dict(x)).get(True, 0.0))


MODELS: dict[str, ModelSpec] = {
    "outcome": ModelSpec("outcome", _outcome, lambda m, x, y: _learn_supervised(m, x, bool(y)), _probability),
    "movement": ModelSpec(
        "movement", _movement, _learn_supervised, lambda m, x: float(m.predict_one(dict(x)))
    ),
    "anomaly": ModelSpec("anomaly", _anomaly, _learn_anomaly, _score_anomaly),
}


def drift_detector() -> Any:
    """ADWIN over an error stream: ``update(error)``, then ``drift_detected``."""
    return drift.ADWIN(delta=0.002)  # type: ignore[no-untyped-call]
