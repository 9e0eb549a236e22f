"""The online models, built in one place so every one of them passes the same contract
(``tests/pure/test_model_contracts.py``): pickle round trip, seeded determinism, and
tolerance of missing or new features. Pure: River only, no I/O.

* ``outcome`` - P(selection wins) from odds features: standardised logistic regression.
* ``movement`` - expected next relative change of a selection's price: standardised
  linear regression.
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


def _outcome(seed: int) -> Any:
    return compose.Pipeline(
        preprocessing.StandardScaler(),
        linear_model.LogisticRegression(optimizer=optim.SGD(0.05), l2=1e-4),
    )


def _movement(seed: int) -> Any:
    return compose.Pipeline(
        preprocessing.StandardScaler(),
        linear_model.LinearRegression(optimizer=optim.SGD(0.01), l2=1e-4, intercept_lr=0.01),
    )


def _anomaly(seed: int) -> Any:
    return compose.Pipeline(
        preprocessing.MinMaxScaler(),
        anomaly.HalfSpaceTrees(n_trees=25, height=8, window_size=250, seed=seed),
    )


def _learn_supervised(model: Any, x: Features, y: float | None) -> Any:
    if y is None:
        raise ValueError("a supervised model learns from a label")
    model.learn_one(dict(x), y)
    return model


def _learn_unsupervised(model: Any, x: Features, y: float | None) -> Any:
    model.learn_one(dict(x))
    return model


def _probability(model: Any, x: Features) -> float:
    return float(model.predict_proba_one(dict(x)).get(True, 0.0))


MODELS: dict[str, ModelSpec] = {
    "outcome": ModelSpec("outcome", _outcome, lambda m, x, y: _learn_supervised(m, x, bool(y)), _probability),
    "movement": ModelSpec(
        "movement", _movement, _learn_supervised, lambda m, x: float(m.predict_one(dict(x)))
    ),
    "anomaly": ModelSpec("anomaly", _anomaly, _learn_unsupervised, lambda m, x: float(m.score_one(dict(x)))),
}


def drift_detector() -> Any:
    """ADWIN over an error stream: ``update(error)``, then ``drift_detected``."""
    return drift.ADWIN(delta=0.002)  # type: ignore[no-untyped-call]
