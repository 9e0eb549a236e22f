"""Anomaly detectors: explicit rules and a learned detector, feeding an AlertBook. Pure.

Every detector reads events in a partition's offset order and reports
:class:`~streams.alerts.Signal` values at event time; the :class:`Detectors` value turns
them into alert notifications through its :class:`~streams.alerts.AlertBook`.

==================  ======  ===============================================================
rule                source  condition
==================  ======  ===============================================================
steam_move          odds    >= ``steam_bookmakers`` bookmakers shorten one selection by
                            >= ``steam_move_pct`` within ``steam_window_ms`` (rate of change)
stake_spike         bets    log stake z-score >= ``stake_z`` against the partition's bets
liability_breach    bets    a market's worst-case liability >= ``liability_limit``
user_stake_change   by user log stake z-score >= ``user_z`` against the user's own bets
                            (on ``bets.by-user``: one task sees all of a user's bets)
bet_outlier         bets    HalfSpaceTrees score (features scaled to [0, 1]) >= ``hst_threshold``
latency_spike       system  log latency z-score >= ``latency_z`` against the route's calls
error_rate          system  share of 5xx in a service's last ``error_calls`` calls >= ``error_rate``
heartbeat_gap       system  no heartbeat from a service for ``heartbeat_gap_ms``
==================  ======  ===============================================================

z-scores use running (Welford) statistics learned from the same stream, and a detector
speaks only after ``min_samples`` observations. Everything is event time, so a replay
raises exactly the same alerts.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from streams.alerts import AlertBook, AlertEvent, Severity, Signal
from streams.models import MODELS
from streams.money import cents, payout_cents


@dataclass(frozen=True)
class DetectorConfig:
    steam_move_pct: float = 7.0
    steam_bookmakers: int = 3
    steam_window_ms: int = 2_000
    stake_z: float = 6.0
    user_z: float = 6.0
    user_min_bets: int = 30
    liability_limit: float = 250_000.0
    latency_z: float = 6.0
    error_rate: float = 0.3
    error_calls: int = 50
    heartbeat_gap_ms: int = 15_000
    hst_threshold: float = 0.975
    hst_warmup: int = 2_000
    min_samples: int = 50
    cooldown_ms: int = 10_000
    resolve_after_ms: int = 30_000
    seed: int = 0


@dataclass
class Running:
    """Welford's running mean and variance."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def z(self, x: float) -> float | None:
        """z-score of ``x`` against what was seen so far (None while there is no spread)."""
        if self.count < 2 or self.m2 <= 0.0:
            return None
        return (x - self.mean) / math.sqrt(self.m2 / (self.count - 1))

    def add_robust(self, x: float, limit: float = 4.0) -> None:
        """Learn ``x`` winsorised at ``limit`` sd from the mean (after 10 values), so a burst of
        outliers while the detector warms up does not teach it that outliers are normal."""
        if self.count >= 10 and self.m2 > 0.0:
            sd = math.sqrt(self.m2 / (self.count - 1))
            x = min(max(x, self.mean - limit * sd), self.mean + limit * sd)
        self.add(x)

    def add(self, x: float) -> None:
        self.count += 1
        delta = x - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (x - self.mean)


def _severity(z: float, threshold: float) -> Severity:
    return "critical" if z >= threshold * 1.5 else "warning"


@dataclass
class Detectors:
    config: DetectorConfig = field(default_factory=DetectorConfig)
    book: AlertBook = field(default_factory=AlertBook)
    now_ms: int = 0
    last_tick_ms: int = 0
    last_price: dict[tuple[str, str, str], tuple[float, int]] = field(default_factory=dict)
    shortened: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)  # -> bookmaker -> ms
    stakes: Running = field(default_factory=Running)
    user_stakes: dict[str, Running] = field(default_factory=dict)
    # a market's open bets (the processor's BetBook says which): turnover, payout per selection
    exposure: dict[str, tuple[int, dict[str, int]]] = field(default_factory=dict)  # in cents
    latency: dict[tuple[str, str], Running] = field(default_factory=dict)
    recent_calls: dict[str, deque[bool]] = field(default_factory=dict)
    heartbeats: dict[str, int] = field(default_factory=dict)
    bet_model: Any = None
    bets_seen: int = 0
    # event time each key was last seen, for eviction (see evict)
    user_seen: dict[str, int] = field(default_factory=dict)
    market_seen: dict[str, int] = field(default_factory=dict)  # bets on a market (exposure)
    service_seen: dict[str, int] = field(default_factory=dict)
    route_seen: dict[tuple[str, str], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        c = self.config
        self.book = AlertBook(c.cooldown_ms, c.resolve_after_ms, self.book.group_by)
        if self.bet_model is None:
            self.bet_model = MODELS["anomaly"].make(c.seed)

    # -- odds ------------------------------------------------------------------------

    def on_quote(
        self, market: str, selection: str, bookmaker: str, odds: float, event_ms: int
    ) -> list[AlertEvent]:
        signals = []
        key = (market, selection, bookmaker)
        previous = self.last_price.get(key)
        if previous is None or previous[1] <= event_ms:
            self.last_price[key] = (odds, event_ms)
        if previous is not None and previous[1] <= event_ms:
            move_pct = 100.0 * (odds / previous[0] - 1.0)
            movers = self.shortened.setdefault((market, selection), {})
            if move_pct <= -self.config.steam_move_pct:
                movers[bookmaker] = event_ms
            for b in [b for b, t in movers.items() if event_ms - t > self.config.steam_window_ms]:
                del movers[b]
            if len(movers) >= self.config.steam_bookmakers:
                severity: Severity = "critical" if len(movers) > self.config.steam_bookmakers else "warning"
                signals.append(
                    Signal(
                        "steam_move",
                        {"market_id": market, "selection_id": selection},
                        severity,
                        float(len(movers)),
                        event_ms,
                        summary=f"{len(movers)} bookmakers shortened {selection} together",
                    )
                )
        return self._observe(signals, event_ms)

    def on_market_closed(self, market: str) -> None:
        for key in [k for k in self.last_price if k[0] == market]:
            del self.last_price[key]
        for pair in [k for k in self.shortened if k[0] == market]:
            del self.shortened[pair]

    # -- bets --------------------------------------------------------------------------

    def on_bet(
        self,
        market: str,
        selection: str,
        user: str,
        stake: float,
        odds: float,
        event_ms: int,
        opened: bool = True,
    ) -> list[AlertEvent]:
        """A bet placed; ``opened`` False: it was closed before it arrived (see
        :class:`~streams.bets.BetBook`), so it never enters the market's exposure."""
        c = self.config
        signals = []
        x = math.log(max(stake, 0.01))
        z = self.stakes.z(x) if self.stakes.count >= c.min_samples else None
        if z is not None and z >= c.stake_z:
            signals.append(
                Signal(
                    "stake_spike",
                    {"market_id": market, "user_id": user},
                    _severity(z, c.stake_z),
                    stake,
                    event_ms,
                    summary=f"stake {stake:.2f} is {z:.1f} sd above the usual",
                )
            )
        self.stakes.add_robust(x)
        self.market_seen[market] = max(self.market_seen.get(market, event_ms), event_ms)
        if opened:
            stake_cents = cents(stake)
            signals.append(
                self._expose(market, selection, stake_cents, payout_cents(stake_cents, odds), event_ms)
            )
        features = {"log_stake": x, "log_odds": math.log(odds)}
        self.bets_seen += 1
        if self.bets_seen > c.hst_warmup:
            score = MODELS["anomaly"].predict(self.bet_model, features)
            if score >= c.hst_threshold:
                signals.append(
                    Signal(
                        "bet_outlier",
                        {"market_id": market, "user_id": user},
                        "info",
                        score,
                        event_ms,
                        summary=f"unusual bet (score {score:.3f})",
                    )
                )
        MODELS["anomaly"].learn(self.bet_model, features, None)
        return self._observe(signals, event_ms)

    def on_user_bet(self, user: str, stake: float, event_ms: int) -> list[AlertEvent]:
        """A user's bet placed, on the user stage (``bets.by-user``, where one task sees all of
        a user's bets): the user's stake against the user's own."""
        c = self.config
        x = math.log(max(stake, 0.01))
        own = self.user_stakes.setdefault(user, Running())
        z = own.z(x) if own.count >= c.user_min_bets else None
        signals = []
        if z is not None and z >= c.user_z:
            signals.append(
                Signal(
                    "user_stake_change",
                    {"user_id": user},
                    "warning",
                    stake,
                    event_ms,
                    summary=f"stake {stake:.2f} is {z:.1f} sd above this user's own",
                )
            )
        own.add_robust(x)
        self.user_seen[user] = max(self.user_seen.get(user, event_ms), event_ms)
        return self._observe(signals, event_ms)

    def on_bet_closed(
        self, market: str, selection: str, stake_cents: int, payout: int, event_ms: int, last: bool
    ) -> list[AlertEvent]:
        """An open bet settled, cancelled or cashed out: its stake and payout leave the
        market's exposure (the rest of the market's open bets stay); ``last``: it was the
        market's last open bet, so nothing is exposed any more (no float residue)."""
        self.market_seen[market] = max(self.market_seen.get(market, event_ms), event_ms)
        if last:
            self.exposure.pop(market, None)
            signal = Signal("liability_breach", {"market_id": market}, "critical", 0.0, event_ms, holds=False)
            return self._observe([signal], event_ms)
        return self._observe([self._expose(market, selection, -stake_cents, -payout, event_ms)], event_ms)

    def _expose(self, market: str, selection: str, stake_cents: int, payout: int, event_ms: int) -> Signal:
        """Move a market's exposure by one bet's stake and payout (cents); the liability signal
        after it (its value in money)."""
        turnover, payouts = self.exposure.get(market, (0, {}))
        payouts = {**payouts, selection: payouts.get(selection, 0) + payout}
        turnover += stake_cents
        self.exposure[market] = (turnover, payouts)
        worst = (max(payouts.values()) - turnover) / 100
        return Signal(
            "liability_breach",
            {"market_id": market},
            "critical",
            worst,
            event_ms,
            holds=worst >= self.config.liability_limit,
            summary=f"worst-case liability {worst:.2f} over the limit",
        )

    # -- system ------------------------------------------------------------------------

    def on_call(
        self, service: str, route: str, status: int, latency_ms: float, event_ms: int
    ) -> list[AlertEvent]:
        c = self.config
        signals = []
        x = math.log(max(latency_ms, 0.001))
        stats = self.latency.setdefault((service, route), Running())
        z = stats.z(x) if stats.count >= c.min_samples else None
        if z is not None and z >= c.latency_z:
            signals.append(
                Signal(
                    "latency_spike",
                    {"service": service, "route": route},
                    _severity(z, c.latency_z),
                    latency_ms,
                    event_ms,
                    summary=f"{latency_ms:.0f} ms is {z:.1f} sd above usual",
                )
            )
        else:
            stats.add_robust(x)  # a spike does not teach the detector that spikes are normal
        self.route_seen[(service, route)] = max(self.route_seen.get((service, route), event_ms), event_ms)
        self.service_seen[service] = max(self.service_seen.get(service, event_ms), event_ms)
        calls = self.recent_calls.setdefault(service, deque(maxlen=c.error_calls))
        calls.append(status >= 500)
        if len(calls) == c.error_calls:
            rate = sum(calls) / len(calls)
            signals.append(
                Signal(
                    "error_rate",
                    {"service": service},
                    "warning",
                    rate,
                    event_ms,
                    holds=rate >= c.error_rate,
                    summary=f"{rate:.0%} of the last calls failed",
                )
            )
        return self._observe(signals, event_ms)

    def on_heartbeat(self, service: str, event_ms: int) -> list[AlertEvent]:
        """A heartbeat: the gap it ends is an alert (fired now if the silence did not fire it
        already, so a replay records it too), and the service is back: the alert resolves."""
        previous = self.heartbeats.get(service)
        self.heartbeats[service] = max(previous or event_ms, event_ms)
        signals = []
        if previous is not None and event_ms - previous >= self.config.heartbeat_gap_ms:
            gap = float(event_ms - previous)
            summary = f"no heartbeat for {gap / 1000:.0f} s"
            labels = {"service": service}
            signals.append(Signal("heartbeat_gap", labels, "critical", gap, event_ms, summary=summary))
            signals.append(
                Signal("heartbeat_gap", labels, "critical", gap, event_ms, False, "heartbeats resumed")
            )
        return self._observe(signals, event_ms)

    def forget_market(self, market: str) -> None:
        """A market evicted by the processor: its prices, steam movers and exposure."""
        self.on_market_closed(market)
        self.exposure.pop(market, None)
        self.market_seen.pop(market, None)

    def evict(
        self, now_ms: int, idle_market_ms: int, idle_user_ms: int, idle_service_ms: int, late_ms: int
    ) -> None:
        """Forget what has been idle that long (event time): markets' exposure, users' stake
        baselines, services' and routes' statistics and heartbeats, prices not quoted again,
        and resolutions whose cooldown is over. A service forgotten this way stops counting
        as silent: its heartbeat_gap alert resolves (docs/design/state-and-recovery.md)."""
        for market in [m for m, t in self.market_seen.items() if now_ms - t >= idle_market_ms]:
            self.forget_market(market)
        for user in [u for u, t in self.user_seen.items() if now_ms - t >= idle_user_ms]:
            del self.user_seen[user]
            self.user_stakes.pop(user, None)
        for route in [r for r, t in self.route_seen.items() if now_ms - t >= idle_service_ms]:
            del self.route_seen[route]
            self.latency.pop(route, None)
        for service in [s for s, t in self.service_seen.items() if now_ms - t >= idle_service_ms]:
            del self.service_seen[service]
            self.recent_calls.pop(service, None)
        for service in [s for s, t in self.heartbeats.items() if now_ms - t >= idle_service_ms]:
            del self.heartbeats[service]
        for key in [k for k, (_, t) in self.last_price.items() if now_ms - t >= idle_market_ms]:
            del self.last_price[key]
        steam_horizon = now_ms - self.config.steam_window_ms - late_ms
        for pair in [
            p for p, movers in self.shortened.items() if all(t < steam_horizon for t in movers.values())
        ]:
            del self.shortened[pair]
        self.book.evict(now_ms, late_ms)

    def tick(self, event_ms: int) -> list[AlertEvent]:
        """Advance event time: silent services, and alerts no signal confirms any more."""
        return self._observe([], event_ms)

    # -- internals ----------------------------------------------------------------------

    def _observe(self, signals: list[Signal], event_ms: int) -> list[AlertEvent]:
        if event_ms > self.now_ms:
            self.now_ms = event_ms
        if not signals and self.now_ms - self.last_tick_ms < 1_000:
            return []  # the common case, once per event: nothing to observe, no tick due
        events = [e for s in signals for e in self.book.observe(s)]
        if self.now_ms - self.last_tick_ms >= 1_000:  # once per second of event time
            self.last_tick_ms = self.now_ms
            for service, last in sorted(self.heartbeats.items()):
                if self.now_ms - last >= self.config.heartbeat_gap_ms:
                    gap = float(self.now_ms - last)
                    events += self.book.observe(
                        Signal(
                            "heartbeat_gap",
                            {"service": service},
                            "critical",
                            gap,
                            self.now_ms,
                            summary=f"no heartbeat for {gap / 1000:.0f} s",
                        )
                    )
            events += self.book.tick(self.now_ms)
        return events
