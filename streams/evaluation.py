"""Progressive evaluation of probability forecasts: every forecast is scored once, when its
label arrives, before the model learns from it. Pure.

:class:`ForecastScore` keeps log loss, Brier score, a calibration table (and its expected
calibration error) and ROC AUC. AUC is River's ``ROCAUC`` (an online approximation on a
fixed grid of thresholds); the others are exact running sums.

Example::

    score = ForecastScore()
    score.add(0.7, True)
    score.add(0.2, False)
    score.log_loss  # mean of -log(0.7) and -log(0.8)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from river import metrics

EPSILON = 1e-15  # probabilities are clipped to [EPSILON, 1 - EPSILON] before the log


def log_loss(probability: float, won: bool) -> float:
    p = min(max(probability, EPSILON), 1.0 - EPSILON)
    return -math.log(p if won else 1.0 - p)


@dataclass(frozen=True)
class CalibrationBin:
    lower: float
    upper: float
    count: int
    mean_probability: float  # 0 when empty
    observed_rate: float  # 0 when empty


@dataclass
class ForecastScore:
    """Running scores of binary probability forecasts."""

    bins: int = 10
    auc: bool = True  # keep ROC AUC (the costly part: an update per threshold)
    count: int = 0
    sum_log_loss: float = 0.0
    sum_brier: float = 0.0
    _bin_count: list[int] = field(default_factory=list)
    _bin_sum_p: list[float] = field(default_factory=list)
    _bin_sum_y: list[float] = field(default_factory=list)
    _auc: Any = None

    def __post_init__(self) -> None:
        if self.bins < 1:
            raise ValueError("bins must be at least 1")
        if not self._bin_count:
            self._bin_count = [0] * self.bins
            self._bin_sum_p = [0.0] * self.bins
            self._bin_sum_y = [0.0] * self.bins
        if self._auc is None and self.auc:
            self._auc = metrics.ROCAUC(n_thresholds=50)  # type: ignore[no-untyped-call]

    def add(self, probability: float, won: bool) -> float:
        """Score one forecast; returns its log loss (the error stream drift detection reads)."""
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {probability!r}")
        loss = log_loss(probability, won)
        self.count += 1
        self.sum_log_loss += loss
        self.sum_brier += (probability - (1.0 if won else 0.0)) ** 2
        index = min(int(probability * self.bins), self.bins - 1)
        self._bin_count[index] += 1
        self._bin_sum_p[index] += probability
        self._bin_sum_y[index] += 1.0 if won else 0.0
        if self._auc is not None:
            self._auc.update(won, {True: probability, False: 1.0 - probability})
        return loss

    @property
    def log_loss(self) -> float | None:
        return self.sum_log_loss / self.count if self.count else None

    @property
    def brier(self) -> float | None:
        return self.sum_brier / self.count if self.count else None

    @property
    def roc_auc(self) -> float | None:
        return float(self._auc.get()) if self.count and self._auc is not None else None

    def calibration(self) -> list[CalibrationBin]:
        table = []
        for i in range(self.bins):
            n = self._bin_count[i]
            table.append(
                CalibrationBin(
                    i / self.bins,
                    (i + 1) / self.bins,
                    n,
                    self._bin_sum_p[i] / n if n else 0.0,
                    self._bin_sum_y[i] / n if n else 0.0,
                )
            )
        return table

    @property
    def ece(self) -> float | None:
        """Expected calibration error: the count-weighted mean |observed - predicted| per bin."""
        if not self.count:
            return None
        return (
            sum(b.count * abs(b.observed_rate - b.mean_probability) for b in self.calibration()) / self.count
        )


@dataclass
class ErrorScore:
    """Running absolute error of a numeric forecast, and of a baseline forecast of the same targets."""

    count: int = 0
    sum_abs: float = 0.0
    sum_abs_baseline: float = 0.0

    def add(self, forecast: float, baseline: float, actual: float) -> float:
        error = abs(forecast - actual)
        self.count += 1
        self.sum_abs += error
        self.sum_abs_baseline += abs(baseline - actual)
        return error

    @property
    def mae(self) -> float | None:
        return self.sum_abs / self.count if self.count else None

    @property
    def baseline_mae(self) -> float | None:
        return self.sum_abs_baseline / self.count if self.count else None
