"""Predictions, value signals, model metrics, drift and alerts -> rows. Pure.

Like :mod:`consumers.store.window_rows`, each builder takes a record as decoded (or as the
worker's processor produced it, for ``oddstream replay``). Every table is keyed by the
event's deterministic ``event_id`` (a ReplacingMergeTree), so a redelivery, a re-emission
after a crash or a replay collapses to one row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Row = tuple[Any, ...]


def _prediction(r: dict[str, Any]) -> dict[str, list[Row]]:
    row = (
        r["event_id"], r["event_time"], r["market_id"], r["selection_id"], r["model"], r["probability"],
        r["market_probability"], r["edge"], r["fair_price"], r["best_odds"], r["best_bookmaker"],
        r["expected_move_pct"], r["horizon_ms"], r["labels_learned"], dict(r["features"]),
    )  # fmt: skip
    return {"predictions": [row]}


def _value(r: dict[str, Any]) -> dict[str, list[Row]]:
    row = (
        r["event_id"], r["event_time"], r["market_id"], r["selection_id"], r["bookmaker"], r["odds"],
        r["model_probability"], r["market_probability"], r["book_probability"], r["edge"],
        r["expected_value"], r["confidence"],
    )  # fmt: skip
    return {"value_signals": [row]}


def _evaluation(r: dict[str, Any]) -> dict[str, list[Row]]:
    bins = r["calibration"]
    row = (
        r["event_id"], r["event_time"], r["model"], r["source_partition"], r["labels"], r["log_loss"],
        r["brier"], r["roc_auc"], r["ece"], r["mae"], r["baseline_mae"], [b["count"] for b in bins],
        [b["mean_probability"] for b in bins], [b["observed_rate"] for b in bins],
        {b["name"]: b["log_loss"] for b in r["baselines"] if b["log_loss"] is not None},
        {b["name"]: b["brier"] for b in r["baselines"] if b["brier"] is not None},
    )  # fmt: skip
    return {"model_metrics": [row]}


def _drift(r: dict[str, Any]) -> dict[str, list[Row]]:
    row = (
        r["event_id"], r["event_time"], r["model"], r["source_partition"], r["labels"], r["error_mean"],
        r["window"],
    )  # fmt: skip
    return {"model_drift": [row]}


def _alert(r: dict[str, Any]) -> dict[str, list[Row]]:
    row = (
        r["event_id"], r["event_time"], r["fingerprint"], r["rule"], r["status"], r["severity"], r["value"],
        dict(r["labels"]), r["group_key"], r["starts_at"], r["signals"], r["summary"], r["source_partition"],
    )  # fmt: skip
    return {"alerts": [row]}


INSIGHT_ROWS: dict[str, Callable[[dict[str, Any]], dict[str, list[Row]]]] = {
    "PredictionMade": _prediction,
    "ValueSignalRaised": _value,
    "ModelEvaluated": _evaluation,
    "ModelDriftDetected": _drift,
    "AlertChanged": _alert,
}

INSIGHT_COLUMNS: dict[str, tuple[str, ...]] = {
    "predictions": (
        "event_id", "prediction_time", "market_id", "selection_id", "model", "probability",
        "market_probability", "edge", "fair_price", "best_odds", "best_bookmaker", "expected_move_pct",
        "horizon_ms", "labels_learned", "features",
    ),
    "value_signals": (
        "event_id", "event_time", "market_id", "selection_id", "bookmaker", "odds", "model_probability",
        "market_probability", "book_probability", "edge", "expected_value", "confidence",
    ),
    "model_metrics": (
        "event_id", "event_time", "model", "source_partition", "labels", "log_loss", "brier", "roc_auc",
        "ece", "mae", "baseline_mae", "calibration_count", "calibration_mean_probability",
        "calibration_observed_rate", "baseline_log_loss", "baseline_brier",
    ),
    "model_drift": (
        "event_id", "event_time", "model", "source_partition", "labels", "error_mean", "adwin_width",
    ),
    "alerts": (
        "event_id", "event_time", "fingerprint", "rule", "status", "severity", "value", "labels",
        "group_key", "starts_at", "signals", "summary", "source_partition",
    ),
}  # fmt: skip
