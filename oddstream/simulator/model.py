"""A seeded market model with known ground truth. Pure: yields events, does no I/O.

Each market has a hidden true probability per selection that drifts as a
random walk on log-odds. Bookmakers quote it with their own margin and noise;
bettors back selections roughly in line with the truth at the best price;
markets are suspended in play, close, result (the winner drawn from the true
probabilities) and settle their bets. ``ground_truth`` records what a model
should have known, for accuracy checks.

Example::

    sim = MarketSimulator(seed=7, start_ms=1_700_000_000_000)
    first = list(itertools.islice(sim.events(), 100))
"""

from __future__ import annotations

import heapq
import math
import random
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from schemas.catalog import Event

SELECTIONS = ("home", "draw", "away")
BOOKMAKERS: dict[str, float] = {
    "pinnacle": 0.025,
    "bet365": 0.055,
    "unibet": 0.065,
    "betfair": 0.04,
}
ROUTES = ("/v1/bets", "/v1/markets/{id}", "/v1/users/{id}/balance", "/v1/odds")
SERVICES = ("bet-api", "odds-feed", "wallet")


@dataclass
class SimBet:
    bet_id: str
    user_id: str
    selection_id: str
    stake: Decimal
    odds: float


@dataclass
class SimMarket:
    market_id: str
    logits: list[float]
    closes_at_ms: int
    status: str = "OPEN"
    prices: dict[str, dict[str, float]] = field(default_factory=dict)  # bookmaker -> selection -> odds
    bets: dict[str, SimBet] = field(default_factory=dict)
    resume_at_ms: int = 0

    def true_probabilities(self) -> list[float]:
        peak = max(self.logits)
        weights = [math.exp(v - peak) for v in self.logits]
        total = sum(weights)
        return [w / total for w in weights]


class MarketSimulator:
    """Generates an endless, reproducible stream of events for a seed."""

    def __init__(
        self,
        seed: int,
        start_ms: int,
        markets: int = 12,
        users: int = 400,
        rate_per_s: float = 200.0,
        market_lifetime_s: tuple[float, float] = (180.0, 600.0),
        source: str = "simulator",
        anomaly_rate: float = 0.0,
        mispricing_rate: float = 0.0,
        volatility: float = 0.006,
    ) -> None:
        self._rng = random.Random(seed)
        # injections draw from their own generator, so enabling them does not reshuffle the base draws
        self._inject = random.Random(seed ^ 0xA11CE)
        self._anomaly_rate = anomaly_rate
        self._mispricing_rate = mispricing_rate
        # sd of each true log-odds step; a market takes ~0.55 * rate_per_s / markets steps a second
        self._volatility = volatility
        self.clock_ms = start_ms
        self._rate = rate_per_s
        self._lifetime = market_lifetime_s
        self._source = source
        self._users = [f"u{n:05d}" for n in range(users)]
        self._next_market = 0
        self._markets: list[SimMarket] = [self._new_market() for _ in range(markets)]
        self._heartbeat_seq: dict[str, int] = dict.fromkeys(SERVICES, 0)
        self._next_heartbeat_ms = start_ms
        self.ground_truth: list[dict[str, Any]] = []

    # -- the stream -------------------------------------------------------

    def events(self) -> Iterator[Event]:
        """Events in event-time order, forever; the caller decides when to stop."""
        for market in self._markets:
            yield self._event("MarketStatusChanged", market_id=market.market_id, status="OPEN", reason=None)
            yield from self._requote(market, list(BOOKMAKERS))
        while True:
            self.clock_ms += max(1, int(self._rng.expovariate(self._rate) * 1000))
            yield from self._lifecycle()
            if self.clock_ms >= self._next_heartbeat_ms:
                yield from self._heartbeats()
            roll = self._rng.random()
            market = self._rng.choice(self._markets)
            if roll < 0.55:
                if market.status == "OPEN":
                    self._drift(market)
                    yield from self._requote(market, [self._rng.choice(list(BOOKMAKERS))])
            elif roll < 0.85:
                if market.status == "OPEN":
                    yield self._place_bet(market)
            elif roll < 0.88:
                yield from self._cancel_or_cash_out(market)
            elif roll < 0.95:
                yield self._api_call()
            else:
                yield self._user_activity()
            if self._anomaly_rate and self._inject.random() < self._anomaly_rate:
                yield from self._inject_anomaly()
            if self._mispricing_rate and self._inject.random() < self._mispricing_rate:
                yield from self._inject_mispricing()

    # -- markets ----------------------------------------------------------

    def _new_market(self) -> SimMarket:
        self._next_market += 1
        strength = self._rng.gauss(0.0, 0.8)
        logits = [strength, -0.3 + self._rng.gauss(0, 0.15), -strength + self._rng.gauss(0, 0.3)]
        lifetime_ms = int(self._rng.uniform(*self._lifetime) * 1000)
        return SimMarket(f"m{self._next_market:06d}", logits, self.clock_ms + lifetime_ms)

    def _drift(self, market: SimMarket) -> None:
        market.logits = [v + self._rng.gauss(0.0, self._volatility) for v in market.logits]

    def _requote(self, market: SimMarket, bookmakers: list[str]) -> Iterator[Event]:
        truth = market.true_probabilities()
        for bookmaker in bookmakers:
            margin = BOOKMAKERS[bookmaker]
            quoted = market.prices.setdefault(bookmaker, {})
            for selection, p in zip(SELECTIONS, truth, strict=True):
                noisy = p * (1.0 + margin) * math.exp(self._rng.gauss(0.0, 0.01))
                price = max(1.01, round(1.0 / min(noisy, 0.99), 2))
                if quoted.get(selection) != price:
                    quoted[selection] = price
                    yield self._event(
                        "OddsChanged",
                        bookmaker=bookmaker,
                        market_id=market.market_id,
                        selection_id=selection,
                        odds=price,
                    )

    def _lifecycle(self) -> Iterator[Event]:
        for index, market in enumerate(self._markets):
            if market.status == "SUSPENDED" and self.clock_ms >= market.resume_at_ms:
                market.status = "OPEN"
                yield self._event(
                    "MarketStatusChanged",
                    market_id=market.market_id,
                    status="OPEN",
                    reason="resumed",
                )
            elif market.status == "OPEN" and self._rng.random() < 0.0005:
                market.status = "SUSPENDED"
                market.resume_at_ms = self.clock_ms + int(self._rng.uniform(5, 30) * 1000)
                yield self._event(
                    "MarketStatusChanged",
                    market_id=market.market_id,
                    status="SUSPENDED",
                    reason="in-play incident",
                )
            if self.clock_ms >= market.closes_at_ms:
                yield from self._close(market)
                self._markets[index] = replacement = self._new_market()
                yield self._event(
                    "MarketStatusChanged",
                    market_id=replacement.market_id,
                    status="OPEN",
                    reason=None,
                )
                yield from self._requote(replacement, list(BOOKMAKERS))

    def _close(self, market: SimMarket) -> Iterator[Event]:
        truth = market.true_probabilities()
        winner = self._rng.choices(SELECTIONS, weights=truth)[0]
        yield self._event(
            "MarketStatusChanged",
            market_id=market.market_id,
            status="CLOSED",
            reason="event finished",
        )
        yield self._event("MarketResulted", market_id=market.market_id, winning_selection_ids=[winner])
        self.ground_truth.append(
            {
                "kind": "result",
                "market_id": market.market_id,
                "closed_at_ms": self.clock_ms,
                "true_probabilities": dict(zip(SELECTIONS, truth, strict=True)),
                "winner": winner,
            }
        )
        for bet in market.bets.values():
            won = bet.selection_id == winner
            payout = (
                (bet.stake * Decimal(str(bet.odds))).quantize(Decimal("0.01")) if won else Decimal("0.00")
            )
            yield self._event(
                "BetSettled",
                bet_id=bet.bet_id,
                user_id=bet.user_id,
                market_id=market.market_id,
                selection_id=bet.selection_id,
                result="WON" if won else "LOST",
                payout=payout,
                currency="EUR",
            )

    # -- injected anomalies and mispricings (labelled in ground_truth) ------

    def _inject_anomaly(self) -> Iterator[Event]:
        rng = self._inject
        kind = rng.choice(["steam", "stake_spike", "latency_spike"])
        label: dict[str, Any] = {"kind": "anomaly", "type": kind, "event_time": self.clock_ms}
        open_markets = [m for m in self._markets if m.status == "OPEN" and m.prices]
        if kind in ("steam", "stake_spike") and not open_markets:
            return
        if kind == "steam":  # three bookmakers shorten one selection by 10 % at once
            market = rng.choice(open_markets)
            selection = rng.choice(SELECTIONS)
            movers = rng.sample(sorted(market.prices), k=min(3, len(market.prices)))
            for bookmaker in movers:
                yield self._reprice(market, bookmaker, selection, market.prices[bookmaker][selection] * 0.9)
            label.update(market_id=market.market_id, selection_id=selection, bookmakers=movers)
        elif kind == "stake_spike":  # one bet a hundred times the usual size
            market = rng.choice(open_markets)
            selection = rng.choice(SELECTIONS)
            best = max(prices[selection] for prices in market.prices.values())
            bet = SimBet(self._uuid(rng), rng.choice(self._users), selection, Decimal("25000.00"), best)
            market.bets[bet.bet_id] = bet
            label.update(market_id=market.market_id, bet_id=bet.bet_id, user_id=bet.user_id)
            yield self._event_from(
                rng,
                "BetPlaced",
                bet_id=bet.bet_id,
                user_id=bet.user_id,
                market_id=market.market_id,
                selection_id=selection,
                stake=bet.stake,
                currency="EUR",
                odds=best,
                channel="API",
            )
        else:  # a burst of slow calls on one route
            service, route = rng.choice(SERVICES), rng.choice(ROUTES)
            for _ in range(5):
                yield self._event_from(
                    rng,
                    "ApiCallRecorded",
                    service=service,
                    route=route,
                    method="GET",
                    status=200,
                    latency_ms=round(rng.uniform(2_000, 5_000), 3),
                )
            label.update(service=service, route=route)
        self.ground_truth.append(label)

    def _inject_mispricing(self) -> Iterator[Event]:
        """One bookmaker prices a selection 15 % too long: a value bet against the truth."""
        rng = self._inject
        open_markets = [m for m in self._markets if m.status == "OPEN" and m.prices]
        if not open_markets:
            return
        market = rng.choice(open_markets)
        bookmaker = rng.choice(sorted(market.prices))
        index = rng.randrange(len(SELECTIONS))
        selection, truth = SELECTIONS[index], market.true_probabilities()[index]
        price = max(1.01, round(1.0 / (truth * 0.85), 2))
        label = {
            "kind": "mispricing",
            "event_time": self.clock_ms,
            "market_id": market.market_id,
            "selection_id": selection,
            "bookmaker": bookmaker,
            "true_probability": truth,
            "odds": price,
        }
        self.ground_truth.append(label)
        yield self._reprice(market, bookmaker, selection, price)

    def _reprice(self, market: SimMarket, bookmaker: str, selection: str, odds: float) -> Event:
        """An injected quote: the bookmaker's price changes to ``odds`` (rounded, at least 1.01)."""
        price = max(1.01, round(odds, 2))
        market.prices[bookmaker][selection] = price
        return self._event_from(
            self._inject,
            "OddsChanged",
            bookmaker=bookmaker,
            market_id=market.market_id,
            selection_id=selection,
            odds=price,
        )

    # -- bettors and services ---------------------------------------------

    def _place_bet(self, market: SimMarket) -> Event:
        truth = market.true_probabilities()
        selection = self._rng.choices(SELECTIONS, weights=[p + 0.05 for p in truth])[0]
        best = max(prices[selection] for prices in market.prices.values())
        stake = Decimal(str(round(min(5000.0, math.exp(self._rng.gauss(2.8, 1.1))), 2))).max(Decimal("0.50"))
        bet = SimBet(self._uuid(), self._rng.choice(self._users), selection, stake, best)
        market.bets[bet.bet_id] = bet
        return self._event(
            "BetPlaced",
            bet_id=bet.bet_id,
            user_id=bet.user_id,
            market_id=market.market_id,
            selection_id=selection,
            stake=stake,
            currency="EUR",
            odds=best,
            channel=self._rng.choice(["WEB", "MOBILE", "MOBILE", "RETAIL", "API"]),
        )

    def _cancel_or_cash_out(self, market: SimMarket) -> Iterator[Event]:
        if not market.bets or market.status != "OPEN":
            return
        bet = market.bets.pop(self._rng.choice(sorted(market.bets)))
        common = {
            "bet_id": bet.bet_id,
            "user_id": bet.user_id,
            "market_id": market.market_id,
            "selection_id": bet.selection_id,
        }
        if self._rng.random() < 0.2:
            yield self._event("BetCancelled", reason="user request", **common)
            return
        price = max(prices[bet.selection_id] for prices in market.prices.values())
        amount = (bet.stake * Decimal(str(bet.odds / price)) * Decimal("0.95")).quantize(Decimal("0.01"))
        yield self._event("CashOut", amount=amount.max(Decimal("0.01")), currency="EUR", odds=price, **common)

    def _api_call(self) -> Event:
        status = self._rng.choices([200, 201, 400, 404, 500, 503], weights=[80, 8, 5, 4, 2, 1])[0]
        return self._event(
            "ApiCallRecorded",
            service=self._rng.choice(SERVICES),
            route=self._rng.choice(ROUTES),
            method=self._rng.choice(["GET", "GET", "POST"]),
            status=status,
            latency_ms=round(math.exp(self._rng.gauss(3.0, 0.6)), 3),
        )

    def _user_activity(self) -> Event:
        kind = self._rng.choices(
            ["LOGIN", "LOGOUT", "DEPOSIT", "WITHDRAWAL", "PAGE_VIEW"], weights=[20, 10, 8, 4, 58]
        )[0]
        money = kind in ("DEPOSIT", "WITHDRAWAL")
        return self._event(
            "UserActivity",
            user_id=self._rng.choice(self._users),
            activity=kind,
            amount=Decimal(str(round(self._rng.uniform(10, 500), 2))) if money else None,
            currency="EUR" if money else None,
            page=self._rng.choice(["/", "/football", "/live", "/account"]) if kind == "PAGE_VIEW" else None,
        )

    def _heartbeats(self) -> Iterator[Event]:
        self._next_heartbeat_ms = self.clock_ms + 5_000
        for service in SERVICES:
            yield self._event(
                "ServiceHeartbeat",
                service=service,
                instance=f"{service}-0",
                sequence=self._heartbeat_seq[service],
            )
            self._heartbeat_seq[service] += 1

    # -- envelope -----------------------------------------------------------

    def _uuid(self, rng: random.Random | None = None) -> str:
        return str(uuid.UUID(int=(rng or self._rng).getrandbits(128), version=4))

    def _event(self, event_type: str, **fields: Any) -> Event:
        return self._event_from(self._rng, event_type, **fields)

    def _event_from(self, rng: random.Random, event_type: str, **fields: Any) -> Event:
        record = {
            "event_id": self._uuid(rng),
            "event_time": self.clock_ms,
            "source": self._source,
            **fields,
        }
        return Event(event_type, record)


DELAYABLE = frozenset({"OddsChanged", "BetPlaced", "ApiCallRecorded", "ServiceHeartbeat"})


def disorder(events: Iterable[Event], seed: int, fraction: float, max_delay_ms: int) -> Iterator[Event]:
    """Deliver a ``fraction`` of the events late: each is held back until the stream's event
    time has moved ``uniform(0, max_delay_ms)`` past its own. Only quotes, bets, API calls and
    heartbeats are delayed (a market's status always precedes its quotes). Reproducible."""
    rng = random.Random(seed ^ 0x5EED)
    held: list[tuple[int, int, Event]] = []
    sequence = 0
    for event in events:
        now = int(event.record["event_time"])
        while held and held[0][0] <= now:
            yield heapq.heappop(held)[2]
        if event.type in DELAYABLE and rng.random() < fraction:
            sequence += 1
            heapq.heappush(held, (now + int(rng.uniform(0, max_delay_ms)), sequence, event))
        else:
            yield event
    while held:
        yield heapq.heappop(held)[2]
