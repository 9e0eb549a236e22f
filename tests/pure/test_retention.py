"""State that lives for months is bounded: what the processor keeps is evicted by event time
(streams/processor.py Retention), tested with values; with the default retention the
results of a simulated run equal those of a processor that keeps everything."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from oddstream.simulator.model import MarketSimulator
from streams.processor import KEEP_FOREVER, Emission, PartitionProcessor, Retention, WindowConfig

pytestmark = pytest.mark.pure
T0 = 1_767_225_600_000
HOUR = 3_600_000
RETENTION = Retention(
    resulted_market_ms=HOUR, idle_market_ms=6 * HOUR, idle_user_ms=12 * HOUR, idle_service_ms=2 * HOUR,
    late_ms=60_000, sweep_every_ms=60_000,
)  # fmt: skip


class Partition:
    def __init__(self, retention: Retention = RETENTION) -> None:
        self.processor = PartitionProcessor(WindowConfig(retention=retention), partition=0)
        self.users = PartitionProcessor(WindowConfig(retention=retention), partition=0)
        self.offset = self.users_offset = 0
        self.rejected: list[str] = []

    def send(self, event_type: str, ms: int, **fields: Any) -> list[Emission]:
        record = {"event_id": f"e{self.offset:06d}", "event_time": T0 + ms, "source": "t", **fields}
        out = self.processor.process(self.offset, event_type, record, wall_ms=0)
        self.offset += 1
        if out.rejected:
            self.rejected.append(out.rejected)
        for user_bet in [e.record for e in out.emissions if e.event_type == "UserBetRecorded"]:
            self.users.process(self.users_offset, "UserBetRecorded", user_bet, wall_ms=0)  # the user stage
            self.users_offset += 1
        return out.emissions

    def quotes(self, ms: int, market: str = "m1") -> None:
        for n, (bookmaker, selection) in enumerate(itertools.product(("b1", "b2", "b3"), ("home", "away"))):
            odds = 1.9 + n / 100 if selection == "home" else 2.1 - n / 100
            self.send("OddsChanged", ms + n, bookmaker=bookmaker, market_id=market, selection_id=selection,
                      odds=odds)  # fmt: skip

    def bet(self, ms: int, user: str, market: str = "m1") -> None:
        self.send("BetPlaced", ms, bet_id=f"b{self.offset}", user_id=user, market_id=market,
                  selection_id="home", stake=10.0, odds=2.0, currency="EUR")  # fmt: skip


def test_a_resulted_market_is_kept_for_late_quotes_then_forgotten_with_its_models_state() -> None:
    p = Partition()
    p.send("MarketStatusChanged", 0, market_id="m1", status="OPEN", reason=None)
    for minute in range(0, 30):
        p.quotes(minute * 60_000)
    models, alerts = p.processor.predictor, p.processor.detectors
    assert models is not None and alerts is not None
    assert "m1" in models.quotes and models.pending["m1"] and alerts.last_price
    p.send("MarketResulted", 30 * 60_000, market_id="m1", winning_selection_ids=["home"])
    p.quotes(31 * 60_000)  # a late quote after the result is still taken
    assert p.rejected == [] and "m1" in p.processor.markets

    p.send("ServiceHeartbeat", 30 * 60_000 + HOUR + 60_000, service="s", sequence=1)  # an hour on
    assert "m1" not in p.processor.markets and "m1" not in models.quotes and "m1" not in models.views
    assert not alerts.last_price and p.processor.evicted_markets == 1
    p.quotes(30 * 60_000 + HOUR + 61_000)
    assert len(p.rejected) == 6 and "evicted: resulted or idle past its retention" in p.rejected[0]


def test_a_market_never_resulted_goes_after_its_idle_time_with_its_open_forecasts() -> None:
    p = Partition()
    p.send("MarketStatusChanged", 0, market_id="m1", status="OPEN", reason=None)
    for minute in range(0, 5):
        p.quotes(minute * 60_000)
    models = p.processor.predictor
    assert models is not None
    forecasts = len(models.pending["m1"])
    assert forecasts > 0
    p.send("ServiceHeartbeat", 4 * 60_000 + 6 * HOUR - 1, service="s", sequence=1)
    assert "m1" in p.processor.markets  # not idle long enough yet (the sweep ran)
    p.send("ServiceHeartbeat", 4 * 60_000 + 6 * HOUR + 60_000, service="s", sequence=2)
    assert "m1" not in p.processor.markets and "m1" not in models.pending
    assert models.expired_forecasts == forecasts


def test_idle_users_and_services_are_forgotten_active_ones_kept() -> None:
    p = Partition()
    p.send("MarketStatusChanged", 0, market_id="m1", status="OPEN", reason=None)
    p.bet(1_000, "idle")
    p.send("ApiCallRecorded", 2_000, service="old", route="/r", status=200, latency_ms=5.0)
    p.send("ServiceHeartbeat", 2_000, service="old", sequence=1)
    for hour in range(1, 14):
        p.bet(hour * HOUR, "active")
        p.send("ServiceHeartbeat", hour * HOUR, service="live", sequence=hour)
    alerts, users = p.processor.detectors, p.users.detectors
    assert alerts is not None and users is not None
    assert set(users.user_stakes) == {"active"} and set(users.user_seen) == {"active"}
    assert set(alerts.heartbeats) == {"live"} and not alerts.latency and not alerts.recent_calls
    assert set(alerts.market_seen) == {"m1"}  # bets keep the market's exposure alive


def test_resolved_alert_fingerprints_go_after_their_cooldown() -> None:
    p = Partition()
    alerts = p.processor.detectors
    assert alerts is not None
    p.send("ServiceHeartbeat", 0, service="s", sequence=1)
    p.send("ServiceHeartbeat", 20_000, service="s", sequence=2)  # a 20 s gap: heartbeat_gap fires
    p.send("ServiceHeartbeat", 200_000, service="s", sequence=3)
    for second in range(201, 260):
        p.send("ServiceHeartbeat", second * 1_000, service="s", sequence=second)
    assert alerts.book.resolved_at  # resolved, remembered for the cooldown
    # time passes (another service's first heartbeat): the resolution's cooldown is over
    p.send("ServiceHeartbeat", 260_000 + alerts.book.cooldown_ms + 120_000, service="t", sequence=1)
    assert not alerts.book.resolved_at


def simulated(events: int) -> list[tuple[str, dict[str, Any]]]:
    sim = MarketSimulator(
        seed=9, start_ms=T0, markets=20, market_lifetime_s=(60.0, 120.0), rate_per_s=1.0, anomaly_rate=0.001
    )
    return [(e.type, e.record) for e in itertools.islice(sim.events(), events)]


def run(
    events: list[tuple[str, dict[str, Any]]], retention: Retention
) -> tuple[list[Emission], PartitionProcessor]:
    processor = PartitionProcessor(WindowConfig(retention=retention), partition=0)
    out: list[Emission] = []
    for offset, (event_type, record) in enumerate(events):
        result = processor.process(offset, event_type, record, 0)
        out += result.emissions
        assert result.rejected is None, result.rejected
    return out + processor.flush(), processor


def test_the_default_retention_changes_no_result_and_a_short_one_bounds_the_markets() -> None:
    events = simulated(40_000)  # ~1.8 h of event time, markets living 1-2 minutes
    kept, everything = run(events, KEEP_FOREVER)
    evicted, bounded = run(events, Retention())
    assert evicted == kept
    assert bounded.evicted_markets > 600 and len(bounded.markets) < len(everything.markets)
    assert all(bounded.clock_ms - t < HOUR + 60_000 for t in bounded.resulted.values())  # an hour + a sweep
    # resulted markets leave after the hour: what remains is about an hour's worth
    short, tight = run(events, Retention(resulted_market_ms=600_000, late_ms=60_000))
    assert short == kept  # the simulator sends nothing for a market ten minutes after its result
    assert len(tight.markets) < len(bounded.markets) / 3
