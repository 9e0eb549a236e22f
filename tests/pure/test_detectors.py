"""Anomaly detectors on crafted sequences: each rule fires, deduplicates and resolves."""

from __future__ import annotations

import math
import random

import pytest

from streams.alerts import AlertEvent
from streams.detectors import DetectorConfig, Detectors, Running

pytestmark = pytest.mark.pure
T0 = 1_767_225_600_000


def test_running_statistics_match_the_textbook() -> None:
    xs = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]
    r = Running()
    for x in xs:
        r.add(x)
    mean = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
    assert r.mean == pytest.approx(mean) and r.z(9.0) == pytest.approx((9.0 - mean) / sd)


def test_steam_move_fires_once_when_three_bookmakers_shorten_together_then_resolves() -> None:
    d = Detectors(DetectorConfig(resolve_after_ms=60_000))
    for b in ("a", "b", "c", "d"):
        assert d.on_quote("m1", "home", b, 3.0, T0) == []
    assert d.on_quote("m1", "home", "a", 2.7, T0 + 1_000) == []
    assert d.on_quote("m1", "home", "b", 2.7, T0 + 1_500) == []
    [fired] = d.on_quote("m1", "home", "c", 2.7, T0 + 2_000)
    assert (fired.rule, fired.status, fired.severity, dict(fired.labels)) == (
        "steam_move", "firing", "warning", {"market_id": "m1", "selection_id": "home"},
    )  # fmt: skip
    [updated] = d.on_quote("m1", "home", "d", 2.7, T0 + 2_500)  # a fourth bookmaker: more severe
    assert (updated.status, updated.severity) == ("updated", "critical")
    assert d.on_quote("m1", "away", "a", 3.1, T0 + 30_000) == []
    [resolved] = d.on_quote("m1", "away", "a", 3.0, T0 + 64_000)
    assert (resolved.fingerprint, resolved.status) == (fired.fingerprint, "resolved")


def test_slow_moves_of_one_bookmaker_are_no_steam() -> None:
    d = Detectors()
    odds = 3.0
    for n in range(40):
        odds *= 0.9  # 10 % each, but ten seconds apart and one bookmaker
        assert d.on_quote("m1", "home", "a", odds, T0 + n * 10_000) == []


def normal_bets(d: Detectors, n: int, seed: int = 1, users: Detectors | None = None) -> list[AlertEvent]:
    """``n`` ordinary bets; the user stage's detectors (``users``) see them too, if given."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        stake = math.exp(rng.gauss(2.8, 1.1))
        out += d.on_bet(f"m{i % 5}", "home", f"u{i % 7}", stake, 2.0, T0 + i * 100)
        if users is not None:
            out += users.on_user_bet(f"u{i % 7}", stake, T0 + i * 100)
    return out


def test_a_stake_spike_fires_for_the_market_and_the_user_and_normal_bets_do_not() -> None:
    d, users = Detectors(DetectorConfig(hst_warmup=10**9)), Detectors()
    assert normal_bets(d, 2_000, users=users) == []
    raised = d.on_bet("m1", "away", "u3", 25_000.0, 3.0, T0 + 300_000)
    assert [a.rule for a in raised] == ["stake_spike"]  # the user's rule runs on the user stage
    assert raised[0].severity == "warning" and raised[0].value == 25_000.0
    [own] = users.on_user_bet("u3", 25_000.0, T0 + 300_000)
    assert own.rule == "user_stake_change" and dict(own.labels) == {"user_id": "u3"}
    assert users.on_user_bet("u2", 20.0, T0 + 300_001) == []  # an ordinary stake of another user
    again = d.on_bet("m1", "away", "u3", 25_000.0, 3.0, T0 + 301_000)
    assert [a.rule for a in again] == []  # the same alerts again: deduplicated
    assert users.on_user_bet("u3", 25_000.0, T0 + 301_000) == []


def test_liability_breach_fires_over_the_limit_and_resolves_when_the_market_settles() -> None:
    d = Detectors(DetectorConfig(liability_limit=10_000.0, hst_warmup=10**9))
    assert d.on_bet("m1", "home", "u1", 1_000.0, 5.0, T0) == []
    [breach] = d.on_bet("m1", "home", "u2", 2_000.0, 5.0, T0 + 1)  # pays 15,000 on 3,000 taken
    assert (breach.rule, breach.status, breach.value) == ("liability_breach", "firing", 12_000.0)
    [cleared] = d.on_bet("m1", "away", "u3", 20_000.0, 1.01, T0 + 2)  # now 15,000 - 23,000 < 0
    assert (cleared.rule, cleared.status) == ("liability_breach", "resolved")


def test_exposure_follows_each_bet_settled_cancelled_or_cashed_out_not_the_whole_market() -> None:
    d = Detectors(DetectorConfig(liability_limit=10_000.0, hst_warmup=10**9))
    assert d.on_bet("m1", "home", "u1", 100.0, 2.0, T0) == []
    [breach] = d.on_bet("m1", "away", "u2", 3_000.0, 5.0, T0 + 1)  # 15,000 on 3,100 taken
    assert (breach.status, breach.value) == ("firing", 11_900.0)
    # the small bet settles: before, the market's whole exposure went with it
    assert d.on_bet_closed("m1", "home", 10_000, 20_000, T0 + 2, last=False) == []  # 15,000 on 3,000
    assert d.exposure["m1"] == (300_000, {"home": 0, "away": 1_500_000})  # in cents
    [cleared] = d.on_bet_closed("m1", "away", 300_000, 1_500_000, T0 + 3, last=True)  # cancelled
    assert (cleared.rule, cleared.status) == ("liability_breach", "resolved")
    assert "m1" not in d.exposure


def test_a_bet_closed_before_it_arrived_stays_out_of_the_exposure() -> None:
    d = Detectors(DetectorConfig(liability_limit=10_000.0, hst_warmup=10**9))
    assert d.on_bet("m1", "away", "u2", 3_000.0, 5.0, T0 - 5, opened=False) == []  # never counts
    assert "m1" not in d.exposure
    [breach] = d.on_bet("m1", "away", "u3", 3_000.0, 5.0, T0 + 1)
    assert breach.value == 12_000.0


def test_latency_spike_error_rate_and_heartbeat_gap() -> None:
    d = Detectors()
    rng = random.Random(2)
    for i in range(500):
        assert d.on_call("api", "/v1/bets", 200, math.exp(rng.gauss(3.0, 0.6)), T0 + i * 10) == []
    [spike] = d.on_call("api", "/v1/bets", 200, 4_000.0, T0 + 5_000)
    assert (spike.rule, spike.severity, dict(spike.labels)) == (
        "latency_spike", "warning", {"service": "api", "route": "/v1/bets"},
    )  # fmt: skip
    errors = [a for i in range(20) for a in d.on_call("api", "/v1/odds", 503, 20.0, T0 + 6_000 + i)]
    assert [(a.rule, a.status) for a in errors] == [("error_rate", "firing")]
    healed = [a for i in range(50) for a in d.on_call("api", "/v1/odds", 200, 20.0, T0 + 7_000 + i)]
    assert [(a.rule, a.status) for a in healed] == [("error_rate", "resolved")]
    assert d.on_heartbeat("wallet", T0) == []
    assert d.on_heartbeat("wallet", T0 + 5_000) == []
    silent = d.tick(T0 + 25_000)  # no heartbeat for 20 s: noticed without waiting for the next one
    assert [(a.rule, dict(a.labels)) for a in silent if a.rule == "heartbeat_gap"] == [
        ("heartbeat_gap", {"service": "wallet"})
    ]


def test_the_heartbeat_that_ends_a_gap_records_the_alert_and_resolves_it() -> None:
    """The heartbeat that ends a gap fires the alert (if nothing fired it before) and resolves it:
    the service is back. It stayed firing for another resolve_after_ms of event time before."""
    d = Detectors()
    back = T0 + d.config.heartbeat_gap_ms + 5_000
    assert d.on_heartbeat("wallet", T0) == []
    events = d.on_heartbeat("wallet", back)
    assert [(a.rule, a.status, a.event_ms) for a in events] == [
        ("heartbeat_gap", "firing", back),
        ("heartbeat_gap", "resolved", back),
    ]
    assert d.on_heartbeat("wallet", back + 1_000) == []
