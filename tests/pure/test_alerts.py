"""Alert lifecycle on crafted sequences: fire, dedup, update, resolve, cooldown, staleness, groups."""

from __future__ import annotations

import pytest

from streams.alerts import AlertBook, Severity, Signal, fingerprint

pytestmark = pytest.mark.pure
M1 = {"market_id": "m1", "selection_id": "home"}


def sig(ms: int, severity: Severity = "warning", holds: bool = True, labels: dict[str, str] = M1) -> Signal:
    return Signal("steam_move", labels, severity, value=4.0, event_ms=ms, holds=holds)


def test_fingerprint_is_stable_and_ignores_label_order() -> None:
    a = fingerprint("steam_move", {"market_id": "m1", "selection_id": "home"})
    assert a == fingerprint("steam_move", {"selection_id": "home", "market_id": "m1"})
    assert a != fingerprint("steam_move", {"market_id": "m1", "selection_id": "away"})
    assert a != fingerprint("drift", {"market_id": "m1", "selection_id": "home"})
    assert len(a) == 16


def test_fire_dedup_update_resolve() -> None:
    book = AlertBook(cooldown_ms=60_000, resolve_after_ms=120_000)
    [fired] = book.observe(sig(1_000))
    assert (fired.status, fired.severity, fired.starts_ms, fired.signals) == ("firing", "warning", 1_000, 1)
    assert book.observe(sig(2_000)) == [] and book.observe(sig(3_000)) == []  # repeats: deduplicated
    [updated] = book.observe(sig(4_000, "critical"))
    assert (updated.status, updated.severity, updated.signals, updated.starts_ms) == (
        "updated",
        "critical",
        4,
        1_000,
    )
    [resolved] = book.observe(sig(5_000, holds=False))
    assert (resolved.status, resolved.fingerprint, resolved.event_ms) == (
        "resolved",
        fired.fingerprint,
        5_000,
    )
    assert book.active == {} and book.observe(sig(6_000, holds=False)) == []  # nothing to resolve


def test_cooldown_suppresses_a_flapping_condition() -> None:
    book = AlertBook(cooldown_ms=60_000, resolve_after_ms=120_000)
    book.observe(sig(0))
    book.observe(sig(1_000, holds=False))
    assert book.observe(sig(30_000)) == [] and book.suppressed == 1  # 29 s after resolve
    [again] = book.observe(sig(61_000))  # cooldown over
    assert again.status == "firing" and again.starts_ms == 61_000


def test_alerts_without_confirmation_resolve_after_a_quiet_period() -> None:
    book = AlertBook(cooldown_ms=0, resolve_after_ms=120_000)
    book.observe(sig(0))
    book.observe(sig(100_000))
    assert book.tick(219_999) == []
    [resolved] = book.tick(220_000)
    assert resolved.status == "resolved" and resolved.signals == 2


def test_groups_count_active_alerts_per_rule_and_group_labels() -> None:
    book = AlertBook(group_by=("market_id",))
    book.observe(sig(0, labels={"market_id": "m1", "selection_id": "home"}))
    book.observe(sig(0, labels={"market_id": "m1", "selection_id": "away"}))
    [other] = book.observe(sig(0, labels={"market_id": "m2", "selection_id": "home"}))
    assert book.groups() == {"steam_move|market_id=m1": 2, "steam_move|market_id=m2": 1}
    assert other.group == "steam_move|market_id=m2"


def test_unknown_severity_is_refused() -> None:
    with pytest.raises(ValueError, match="severity"):
        Signal("x", {}, "fatal", 1.0, 0)  # type: ignore[arg-type]
