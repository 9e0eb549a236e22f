"""A channel's current state for a new subscriber's snapshot, with values."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.latest import Held, Latest

pytestmark = pytest.mark.pure


def window(market: str, start: int, version: int, final: bool = False) -> Held:
    record = {"market_id": market, "window_start": start, "version": version, "final": final}
    return Held("OddsWindowUpdated", record, "w", 0, start + version)


def alert(fingerprint: str, status: str) -> Held:
    record: dict[str, Any] = {"fingerprint": fingerprint, "status": status, "rule": "steam"}
    return Held("AlertChanged", record, "a", 0, 0)


def test_the_latest_window_per_market_and_its_latest_final_book() -> None:
    latest = Latest()
    latest.add(["markets", "market:m1"], window("m1", 60_000, 3))
    latest.add(["markets", "market:m2"], window("m2", 60_000, 1))
    latest.add(["markets", "market:m1"], window("m1", 120_000, 1))  # the next window begins
    latest.add(["markets", "market:m1"], window("m1", 60_000, 4, final=True))  # the old one's final, late
    latest.add(["markets", "market:m1"], window("m1", 60_000, 2))  # a stray update of the old window
    latest.add(["markets", "market:m1"], window("m1", 120_000, 2))
    shown = [(h.record["market_id"], h.record["window_start"], h.record["version"], h.record["final"])
             for h in latest.snapshot("markets")]  # fmt: skip
    assert shown == [("m2", 60_000, 1, False), ("m1", 60_000, 4, True), ("m1", 120_000, 2, False)]
    assert [h.record["version"] for h in latest.snapshot("market:m1")] == [4, 2]
    latest.add(["markets", "market:m1"], window("m1", 0, 9, final=True))  # an older final: not shown
    assert [h.record["window_start"] for h in latest.snapshot("market:m1") if h.record["final"]] == [60_000]
    assert latest.snapshot("market:m9") == []


def test_firing_alerts_are_kept_and_a_resolved_one_leaves() -> None:
    latest = Latest()
    latest.add(["alerts", "alerts:steam"], alert("f1", "firing"))
    latest.add(["alerts", "alerts:steam"], alert("f2", "firing"))
    latest.add(["alerts", "alerts:steam"], alert("f1", "updated"))
    latest.add(["alerts", "alerts:steam"], alert("f2", "resolved"))
    latest.add(["alerts", "alerts:steam"], alert("f3", "resolved"))  # never seen firing: nothing kept
    assert [(h.record["fingerprint"], h.record["status"]) for h in latest.snapshot("alerts")] == [
        ("f1", "updated")
    ]
    latest.add(["alerts", "alerts:steam"], alert("f1", "resolved"))
    assert latest.snapshot("alerts") == [] and len(latest) == 0  # empty channels are not kept


def test_kinds_the_screen_does_not_show_are_not_kept() -> None:
    latest = Latest()
    latest.add(["x"], Held("BetPlaced", {"bet_id": "b1"}, "bets", 0, 1))
    assert latest.snapshot("x") == [] and len(latest) == 0


def test_state_is_bounded_per_channel_and_in_channels() -> None:
    latest = Latest(per_channel=3, channels=2)
    for n in range(5):
        latest.add(["markets", f"market:m{n}"], window(f"m{n}", 60_000, 1))  # current updates
    assert [h.record["market_id"] for h in latest.snapshot("markets")] == ["m2", "m3", "m4"]
    assert len(latest) == 2  # the least recently changed channels went first
    assert latest.snapshot("market:m4") and not latest.snapshot("market:m1")


def test_health_from_two_readings_of_the_offsets() -> None:
    from gateway.health import Reading, health

    first = Reading(10.0, {("odds", 0): 100, ("odds", 1): 50}, {("odds", 0): 90, ("odds", 1): None},
                    {("w", 0): 10}, {("dl", 0): 2})  # fmt: skip
    second = Reading(12.0, {("odds", 0): 300, ("odds", 1): 50}, {("odds", 0): 280, ("odds", 1): 40},
                     {("w", 0): 30}, {("dl", 0): 3})  # fmt: skip
    assert health(None, first, {("w", 0): 10})["events_in_per_s"] is None  # one reading: no rate yet
    assert health(first, second, {("w", 0): 25}) == {
        "events_in_per_s": 100.0, "derived_per_s": 10.0, "worker_lag": 20 + 10, "gateway_lag": 5,
        "dead_letters": 3, "dead_letters_per_s": 0.5,
    }  # fmt: skip
