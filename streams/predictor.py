"""Online outcome and movement models over one odds partition, with delayed labels. Pure.

A :class:`Predictor` is fed the odds partition's events in offset order (quotes, market
status, results). It keeps each market's latest quote per (bookmaker, selection) and:

* **forecasts** P(win) of every selection of a market whose books are complete, at most
  once per ``interval_ms`` of event time per market. The features are stored with the
  forecast (:class:`Forecast`); the outcome model learns from them only when the market's
  ``MarketResulted`` arrives, after the forecast has been scored (progressive
  validation). "Now" is the newest event time the partition has seen, so a forecast
  uses only events at or before its own time and before its offset: nothing from the future.
* **movement**: with every forecast, the expected change of the selection's fair price
  (percent, log scale) over ``horizon_ms``; the movement model learns when the
  partition's event time passes the horizon, from the consensus then.
* **value signals**: after every quote, each bookmaker price whose expected value against
  the model probability (p * odds - 1) reaches ``min_expected_value`` is signalled once
  per price, with the edge over the de-vigged consensus and a confidence.
* **evaluation**: after each result, the outcome model's log loss, Brier, ROC AUC and
  calibration, next to the consensus and each bookmaker's de-vigged probability scored on
  the same forecasts; the movement model's mean absolute error next to "no change".
  ADWIN watches the outcome log loss and reports drift.

One model per odds partition: a partition's model is a function of that partition's log,
so it is checkpointed with the partition's offset and a replay rebuilds it exactly.

Outputs are ``(event_type, record)`` pairs, records without ``source``.
"""

from __future__ import annotations

import math
import uuid
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from streams.evaluation import ErrorScore, ForecastScore
from streams.ids import uuid5
from streams.market import fair_probabilities
from streams.models import MODELS, drift_detector

NAMESPACE = uuid.UUID("0d5f3a52-7b1e-4c55-9f0e-707265646963")
Output = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class PredictorConfig:
    interval_ms: int = 10_000  # a market is forecast at most this often (event time)
    horizon_ms: int = 60_000  # the movement model's horizon
    min_expected_value: float = 0.08  # a value signal: p_model * odds - 1 at least this
    min_books: int = 3  # complete books a forecast or a value signal needs
    seed: int = 0


@dataclass(frozen=True)
class Forecast:
    """What was known when a selection was forecast; kept until its label arrives."""

    prediction_id: str
    market_id: str
    selection_id: str
    event_ms: int
    features: dict[str, float]
    probability: float  # the model's, normalised over the market
    consensus: float
    books: dict[str, float]  # bookmaker -> de-vigged probability
    fair_price: float  # 1 / consensus
    movement_pct: float


@dataclass(frozen=True)
class MarketView:
    """A market's complete books at one instant."""

    selections: tuple[str, ...]
    prices: dict[str, dict[str, float]]  # bookmaker -> selection -> odds
    fair: dict[str, dict[str, float]]  # bookmaker -> selection -> de-vigged probability
    consensus: dict[str, float]
    overround: float


def logit(p: float) -> float:
    p = min(max(p, 1e-6), 1.0 - 1e-6)
    return math.log(p / (1.0 - p))


@lru_cache(maxsize=65_536)
def _fair(selections: tuple[str, ...], prices: tuple[float, ...]) -> dict[str, float]:
    """A book's de-vigged probabilities; books that did not change since the last quote hit the
    cache. The dict is shared: read it, never change it."""
    return dict(zip(selections, fair_probabilities(prices), strict=True))


def market_view(quotes: dict[tuple[str, str], tuple[float, int]]) -> MarketView | None:
    """The complete books (a price for every selection anyone quotes, at least two) or None."""
    selections = tuple(sorted({s for _, s in quotes}))
    if len(selections) < 2:
        return None
    prices: dict[str, dict[str, float]] = {}
    for (bookmaker, selection), (odds, _) in quotes.items():
        prices.setdefault(bookmaker, {})[selection] = odds
    prices = {b: book for b, book in sorted(prices.items()) if len(book) == len(selections)}
    if not prices:
        return None
    fair = {b: _fair(selections, tuple([book[s] for s in selections])) for b, book in prices.items()}
    return _summary(selections, prices, fair)


def view_after_quote(
    view: MarketView | None,
    quotes: dict[tuple[str, str], tuple[float, int]],
    bookmaker: str,
    selection: str,
) -> MarketView | None:
    """``market_view(quotes)`` after one quote, from the view before it: only the quoting
    bookmaker's book is looked at again (the same numbers, in the same order, as a full
    rebuild). A quote for a selection the view does not have rebuilds the view."""
    if view is None or selection not in view.selections:
        return market_view(quotes)
    selections = view.selections
    book = {}
    for s in selections:
        quote = quotes.get((bookmaker, s))
        if quote is None:
            return view  # its book is incomplete, as it was before this quote: nothing changed
        book[s] = quote[0]
    prices = dict(view.prices)
    fair = dict(view.fair)
    new = bookmaker not in prices
    prices[bookmaker] = book
    fair[bookmaker] = _fair(selections, tuple(book.values()))
    if new:
        prices = dict(sorted(prices.items()))
        fair = {b: fair[b] for b in prices}
    return _summary(selections, prices, fair)


def _summary(
    selections: tuple[str, ...], prices: dict[str, dict[str, float]], fair: dict[str, dict[str, float]]
) -> MarketView:
    sums = dict.fromkeys(selections, 0.0)
    margin = 0.0
    for b, f in fair.items():
        book = prices[b]
        for s in selections:
            sums[s] += f[s]
            margin += 1.0 / book[s]
    total = sum(sums.values())
    consensus = {s: v / total for s, v in sums.items()}
    return MarketView(selections, prices, fair, consensus, margin / len(prices) - 1.0)


def pstdev(values: list[float]) -> float:
    """Population standard deviation in floats (``statistics.pstdev`` is exact, with
    fractions, and was a tenth of a forecast's cost)."""
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) * (v - mean) for v in values) / len(values))


@dataclass
class Predictor:
    config: PredictorConfig = field(default_factory=PredictorConfig)
    partition: int = -1
    now_ms: int = 0
    quotes: dict[str, dict[tuple[str, str], tuple[float, int]]] = field(default_factory=dict)
    views: dict[str, MarketView | None] = field(
        default_factory=dict
    )  # market_view(quotes[m]), kept up to date
    opened_ms: dict[str, int] = field(default_factory=dict)
    open_markets: set[str] = field(default_factory=set)
    last_forecast_ms: dict[str, int] = field(default_factory=dict)
    last_logit: dict[tuple[str, str], tuple[float, int]] = field(default_factory=dict)
    pending: dict[str, list[Forecast]] = field(default_factory=dict)  # market -> unlabelled forecasts
    moves: deque[Forecast] = field(default_factory=deque)  # in forecast time order
    signalled: dict[tuple[str, str, str], float] = field(default_factory=dict)  # -> odds signalled
    correction: dict[tuple[str, str], float] = field(default_factory=dict)  # model - consensus, logits
    outcome: Any = None
    movement: Any = None
    drift: Any = None
    scores: dict[str, ForecastScore] = field(default_factory=dict)  # "model", "consensus", "book:<b>"
    movement_score: ErrorScore = field(default_factory=ErrorScore)
    learned: int = 0  # labels the outcome model learned from
    expired_forecasts: int = 0  # forecasts of markets evicted without a result
    drifts: int = 0

    def __post_init__(self) -> None:
        if self.outcome is None:
            self.outcome = MODELS["outcome"].make(self.config.seed)
            self.movement = MODELS["movement"].make(self.config.seed)
            self.drift = drift_detector()

    # -- feeding -------------------------------------------------------------------

    def on_status(self, market: str, status: str, event_ms: int) -> list[Output]:
        self._advance(event_ms)
        if status == "OPEN":
            self.open_markets.add(market)
            self.opened_ms.setdefault(market, event_ms)
        else:
            self.open_markets.discard(market)
        self._learn_due_moves()
        return []

    def on_quote(
        self, market: str, selection: str, bookmaker: str, odds: float, event_ms: int
    ) -> list[Output]:
        if event_ms > self.now_ms:  # _advance, inlined: once per quote
            self.now_ms = event_ms
        if self.moves:
            self._learn_due_moves()
        out: list[Output] = []
        book = self.quotes.setdefault(market, {})
        seen = book.get((bookmaker, selection))
        if seen is not None and seen[1] > event_ms:
            return out  # an older quote arriving late: the book already has a newer one
        book[(bookmaker, selection)] = (odds, event_ms)
        if market not in self.open_markets:
            self.views.pop(market, None)  # not kept while closed: rebuilt when it reopens
            return out
        view = self.views[market] = view_after_quote(self.views.get(market), book, bookmaker, selection)
        if view is None or bookmaker not in view.prices or len(view.prices) < self.config.min_books:
            return out  # too few complete books to say what the market thinks
        if self.now_ms - self.last_forecast_ms.get(market, -(10**15)) >= self.config.interval_ms:
            out += self._forecast(market, view)
        out += self._value_signal(market, selection, bookmaker, view)
        return out

    def on_result(self, market: str, winners: list[str], event_ms: int) -> list[Output]:
        """Score, then learn from, every forecast of the market (a void market teaches nothing)."""
        self._advance(event_ms)
        self._learn_due_moves()
        out: list[Output] = []
        forecasts = self.pending.pop(market, [])
        self._forget(market)
        if not winners or not forecasts:
            return out
        for f in forecasts:
            won = f.selection_id in winners
            loss = self._score("model", f.probability, won)
            self._score("consensus", f.consensus, won)
            for bookmaker, p in f.books.items():
                self._score(f"book:{bookmaker}", p, won)
            MODELS["outcome"].learn(self.outcome, f.features, float(won))
            self.learned += 1
            self.drift.update(loss)
            if self.drift.drift_detected:
                self.drifts += 1
                out.append(("ModelDriftDetected", self._drift_record(f.event_ms)))
        out.append(("ModelEvaluated", self._outcome_record(event_ms)))
        if self.movement_score.count:
            out.append(("ModelEvaluated", self._movement_record(event_ms)))
        return out

    def idle_markets(self, now_ms: int, idle_ms: int) -> list[str]:
        """Markets with state here and no quote, status or forecast for ``idle_ms``."""
        known = set(self.quotes) | set(self.pending) | set(self.opened_ms)
        idle = []
        for market in sorted(known):
            newest = max(
                [t for _, t in self.quotes.get(market, {}).values()]
                + [self.opened_ms.get(market, 0), self.last_forecast_ms.get(market, 0)]
            )
            if now_ms - newest >= idle_ms:
                idle.append(market)
        return idle

    def evict(self, market: str) -> int:
        """Forget a market (resulted long ago, or idle): its quotes, views and forecasts that
        never got a result (returned as a count, they teach nothing)."""
        expired = len(self.pending.pop(market, []))
        self.expired_forecasts += expired
        self._forget(market)
        return expired

    # -- internals -------------------------------------------------------------------

    def _forget(self, market: str) -> None:
        """A resulted market's state goes (its forecasts were taken out to learn from)."""
        for name in (self.quotes, self.views, self.opened_ms, self.last_forecast_ms):
            name.pop(market, None)
        self.open_markets.discard(market)
        self.signalled = {k: v for k, v in self.signalled.items() if k[0] != market}
        self.last_logit = {k: v for k, v in self.last_logit.items() if k[0] != market}
        self.correction = {k: v for k, v in self.correction.items() if k[0] != market}

    def _advance(self, event_ms: int) -> None:
        self.now_ms = max(self.now_ms, event_ms)

    def _features(self, market: str, selection: str, view: MarketView) -> dict[str, float]:
        consensus = logit(view.consensus[selection])
        x = {
            "logit_consensus": consensus,
            "overround": view.overround - 0.05,  # centred on a typical margin
            "dispersion": pstdev([f[selection] for f in view.fair.values()]),
            "age_10min": (self.now_ms - self.opened_ms.get(market, self.now_ms)) / 600_000,
        }
        previous = self.last_logit.get((market, selection))
        if previous is not None and self.now_ms > previous[1]:
            x["velocity_per_min"] = (consensus - previous[0]) * 60_000 / (self.now_ms - previous[1])
        for bookmaker, fair in view.fair.items():
            x[f"dev:{bookmaker}"] = logit(fair[selection]) - consensus
        return x

    def _probabilities(self, features: dict[str, dict[str, float]]) -> dict[str, float]:
        raw = {s: MODELS["outcome"].predict(self.outcome, x) for s, x in features.items()}
        total = sum(raw.values())
        if total <= 0.0:
            return {s: 1.0 / len(raw) for s in raw}
        return {s: p / total for s, p in raw.items()}

    def _model_now(self, market: str, view: MarketView, selection: str) -> float:
        """The model probability of ``selection`` now, without running the model on every quote:
        the market's consensus now, moved by the model's correction k (in logits) at its last
        forecast, normalised over the market: sigmoid(logit(c) + k) = c e^k / (1 - c + c e^k),
        one exponential per selection and no logarithm."""
        correction = self.correction
        total = 0.0
        mine = 0.0
        for s, c in view.consensus.items():
            k = correction.get((market, s))
            if k is None:
                p = c
            else:
                factor = math.exp(k)
                p = c * factor / (1.0 - c + c * factor)
            total += p
            if s == selection:
                mine = p
        return mine / total

    def _value_signal(self, market: str, selection: str, bookmaker: str, view: MarketView) -> list[Output]:
        """Signal the price just offered if it is worth backing against the model. Only that
        price: the bookmaker's other prices may be mid-update (a book is several events)."""
        key = (market, selection, bookmaker)
        odds = view.prices[bookmaker][selection]
        model = self._model_now(market, view, selection)
        expected_value = model * odds - 1.0
        if expected_value < self.config.min_expected_value:
            self.signalled.pop(key, None)
            return []
        if self.signalled.get(key) == odds:
            return []  # this price was signalled already
        self.signalled[key] = odds
        others = [f[selection] for b, f in view.fair.items() if b != bookmaker]
        spread = max(pstdev(others) if len(others) > 1 else 0.0, 0.005)
        confidence = 0.5 * (1.0 + math.erf(expected_value / (odds * spread) / math.sqrt(2.0)))
        name = f"value:{market}:{selection}:{bookmaker}:{odds}:{self.now_ms}"
        return [
            ("ValueSignalRaised", {
                "event_id": uuid5(NAMESPACE, name),
                "event_time": self.now_ms,
                "market_id": market,
                "selection_id": selection,
                "bookmaker": bookmaker,
                "odds": odds,
                "model_probability": model,
                "market_probability": view.consensus[selection],
                "book_probability": view.fair[bookmaker][selection],
                "edge": model - view.consensus[selection],
                "expected_value": expected_value,
                "confidence": confidence,
            })
        ]  # fmt: skip

    def _forecast(self, market: str, view: MarketView) -> list[Output]:
        self.last_forecast_ms[market] = self.now_ms
        features = {s: self._features(market, s, view) for s in view.selections}
        model = self._probabilities(features)
        out: list[Output] = []
        for selection in view.selections:
            x = features[selection]
            movement = MODELS["movement"].predict(self.movement, x)
            consensus = view.consensus[selection]
            prediction_id = uuid5(NAMESPACE, f"prediction:{market}:{selection}:{self.now_ms}")
            forecast = Forecast(
                prediction_id, market, selection, self.now_ms, x, model[selection], consensus,
                {b: f[selection] for b, f in view.fair.items()}, 1.0 / consensus, movement,
            )  # fmt: skip
            self.pending.setdefault(market, []).append(forecast)
            self.moves.append(forecast)
            self.last_logit[(market, selection)] = (x["logit_consensus"], self.now_ms)
            self.correction[(market, selection)] = logit(model[selection]) - logit(consensus)
            out.append(("PredictionMade", self._prediction_record(forecast, view)))
        return out

    def _prediction_record(self, f: Forecast, view: MarketView) -> dict[str, Any]:
        best = max(view.prices, key=lambda b: (view.prices[b][f.selection_id], b))
        return {
            "event_id": f.prediction_id,
            "event_time": f.event_ms,
            "prediction_id": f.prediction_id,
            "market_id": f.market_id,
            "selection_id": f.selection_id,
            "model": "outcome",
            "probability": f.probability,
            "market_probability": f.consensus,
            "edge": f.probability - f.consensus,
            "fair_price": f.fair_price,
            "best_odds": view.prices[best][f.selection_id],
            "best_bookmaker": best,
            "expected_move_pct": f.movement_pct,
            "horizon_ms": self.config.horizon_ms,
            "labels_learned": self.learned,
            "features": dict(sorted(f.features.items())),
        }

    def _learn_due_moves(self) -> None:
        """Teach the movement model every forecast whose horizon the partition's time has passed."""
        while self.moves and self.moves[0].event_ms + self.config.horizon_ms <= self.now_ms:
            f = self.moves.popleft()
            book = self.quotes.get(f.market_id)
            view = None
            if book and f.market_id in self.open_markets:
                view = self.views[f.market_id] if f.market_id in self.views else market_view(book)
            if view is None or f.selection_id not in view.consensus:
                continue  # the market closed or broke up before the horizon: no label
            actual = 100.0 * math.log(f.consensus / view.consensus[f.selection_id])  # fair price change
            self.movement_score.add(f.movement_pct, 0.0, actual)
            MODELS["movement"].learn(self.movement, f.features, actual)

    def _score(self, name: str, probability: float, won: bool) -> float:
        score = self.scores.get(name)
        if score is None:  # ROC AUC for the model only: it is the costly score
            score = self.scores[name] = ForecastScore(auc=name == "model")
        return score.add(probability, won)

    def _evaluation_id(self, model: str, labels: int) -> str:
        return uuid5(NAMESPACE, f"evaluation:{model}:{self.partition}:{labels}")

    def _outcome_record(self, event_ms: int) -> dict[str, Any]:
        model = self.scores["model"]
        baselines = [
            {"name": name, "log_loss": s.log_loss, "brier": s.brier, "ece": s.ece}
            for name, s in sorted(self.scores.items())
            if name != "model"
        ]
        return {
            "event_id": self._evaluation_id("outcome", model.count),
            "event_time": event_ms,
            "model": "outcome",
            "source_partition": self.partition,
            "labels": model.count,
            "log_loss": model.log_loss,
            "brier": model.brier,
            "roc_auc": model.roc_auc,
            "ece": model.ece,
            "mae": None,
            "baseline_mae": None,
            "calibration": [
                {
                    "lower": b.lower,
                    "upper": b.upper,
                    "count": b.count,
                    "mean_probability": b.mean_probability,
                    "observed_rate": b.observed_rate,
                }
                for b in model.calibration()
            ],
            "baselines": baselines,
        }

    def _movement_record(self, event_ms: int) -> dict[str, Any]:
        s = self.movement_score
        return {
            "event_id": self._evaluation_id("movement", s.count),
            "event_time": event_ms,
            "model": "movement",
            "source_partition": self.partition,
            "labels": s.count,
            "log_loss": None,
            "brier": None,
            "roc_auc": None,
            "ece": None,
            "mae": s.mae,
            "baseline_mae": s.baseline_mae,
            "calibration": [],
            "baselines": [],
        }

    def _drift_record(self, event_ms: int) -> dict[str, Any]:
        return {
            "event_id": uuid5(NAMESPACE, f"drift:outcome:{self.partition}:{self.learned}"),
            "event_time": event_ms,
            "model": "outcome",
            "source_partition": self.partition,
            "labels": self.learned,
            "error_mean": float(self.drift.estimation),
            "window": int(self.drift.width),
        }
