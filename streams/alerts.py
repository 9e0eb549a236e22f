"""Alert lifecycle in the spirit of Alertmanager: fingerprint, dedup, grouping, cooldown. Pure.

Detectors (rules or learned models) report :class:`Signal` values: "this condition holds
(or no longer holds) for these labels, at this event time". An :class:`AlertBook` turns
them into a small number of :class:`AlertEvent` notifications:

* ``firing``   - a condition starts to hold for a fingerprint with no active alert;
* ``updated``  - an active alert's severity changes (other repeats are deduplicated:
  counted, not notified);
* ``resolved`` - the detector clears it, or no signal came for ``resolve_after_ms`` of
  event time (checked by :meth:`AlertBook.tick`).

A fingerprint that resolved less than ``cooldown_ms`` ago does not fire again (a flapping
condition notifies once per cooldown); those signals are counted as suppressed. All times
are event times, so the same input gives the same alerts live and in a replay.

Example::

    book = AlertBook(cooldown_ms=300_000, resolve_after_ms=120_000, group_by=("market_id",))
    book.observe(Signal("steam_move", {"market_id": "m1", "selection_id": "home"}, "warning", 4.2, t))
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

Severity = Literal["info", "warning", "critical"]
Status = Literal["firing", "updated", "resolved"]
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


def fingerprint(rule: str, labels: Mapping[str, str]) -> str:
    """Stable id of an alert: the rule and its labels, whatever their order."""
    return _fingerprint(rule, tuple(labels.items()))


@lru_cache(maxsize=65_536)  # detectors repeat the same few label sets on every event
def _fingerprint(rule: str, items: tuple[tuple[str, str], ...]) -> str:
    canonical = "\x1f".join([rule, *(f"{k}={v}" for k, v in sorted(items))])
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Signal:
    """One detector observation at ``event_ms``; ``holds=False`` clears the condition."""

    rule: str
    labels: Mapping[str, str]
    severity: Severity
    value: float
    event_ms: int
    holds: bool = True
    summary: str = ""

    def __post_init__(self) -> None:
        if self.severity not in SEVERITY_RANK:
            raise ValueError(f"severity must be one of {sorted(SEVERITY_RANK)}, got {self.severity!r}")


@dataclass(frozen=True)
class AlertEvent:
    """A notification about one alert."""

    fingerprint: str
    rule: str
    labels: tuple[tuple[str, str], ...]
    group: str
    status: Status
    severity: Severity
    value: float
    starts_ms: int
    event_ms: int
    signals: int  # signals folded into this alert so far (deduplicated ones included)
    summary: str


@dataclass
class _Active:
    rule: str
    labels: tuple[tuple[str, str], ...]
    severity: Severity
    value: float
    starts_ms: int
    last_ms: int
    signals: int
    summary: str


@dataclass
class AlertBook:
    cooldown_ms: int = 300_000
    resolve_after_ms: int = 120_000
    group_by: tuple[str, ...] = ()
    active: dict[str, _Active] = field(default_factory=dict)
    resolved_at: dict[str, int] = field(default_factory=dict)
    suppressed: int = 0

    def observe(self, signal: Signal) -> list[AlertEvent]:
        fp = fingerprint(signal.rule, signal.labels)
        alert = self.active.get(fp)
        if not signal.holds:
            if alert is None:
                return []
            alert.last_ms = max(alert.last_ms, signal.event_ms)
            return [self._resolve(fp, signal.event_ms)]
        if alert is not None:
            alert.signals += 1
            alert.last_ms = max(alert.last_ms, signal.event_ms)
            alert.value = signal.value
            if signal.severity == alert.severity:
                return []  # a repeat: deduplicated
            alert.severity = signal.severity
            alert.summary = signal.summary or alert.summary
            return [self._event(fp, alert, "updated", signal.event_ms)]
        last_resolved = self.resolved_at.get(fp)
        if last_resolved is not None and signal.event_ms - last_resolved < self.cooldown_ms:
            self.suppressed += 1
            return []
        labels = tuple(sorted(signal.labels.items()))
        alert = self.active[fp] = _Active(
            signal.rule,
            labels,
            signal.severity,
            signal.value,
            signal.event_ms,
            signal.event_ms,
            1,
            signal.summary,
        )
        return [self._event(fp, alert, "firing", signal.event_ms)]

    def tick(self, event_ms: int) -> list[AlertEvent]:
        """Resolve the alerts no signal has confirmed for ``resolve_after_ms`` (event time)."""
        stale = [fp for fp, a in self.active.items() if event_ms - a.last_ms >= self.resolve_after_ms]
        return [self._resolve(fp, event_ms) for fp in sorted(stale)]

    def evict(self, now_ms: int, late_ms: int) -> None:
        """Forget resolutions whose cooldown is over, with ``late_ms`` to spare for signals
        stamped earlier than ``now_ms`` (out-of-order events): they suppress nothing more."""
        horizon = now_ms - self.cooldown_ms - late_ms
        self.resolved_at = {fp: t for fp, t in self.resolved_at.items() if t > horizon}

    def groups(self) -> dict[str, int]:
        """Active alerts per group (rule plus the ``group_by`` labels)."""
        counts: dict[str, int] = {}
        for alert in self.active.values():
            key = self._group(alert.rule, dict(alert.labels))
            counts[key] = counts.get(key, 0) + 1
        return counts

    def _resolve(self, fp: str, event_ms: int) -> AlertEvent:
        alert = self.active.pop(fp)
        self.resolved_at[fp] = event_ms
        return self._event(fp, alert, "resolved", event_ms)

    def _group(self, rule: str, labels: Mapping[str, str]) -> str:
        return "|".join([rule, *(f"{k}={labels[k]}" for k in self.group_by if k in labels)])

    def _event(self, fp: str, alert: _Active, status: Status, event_ms: int) -> AlertEvent:
        return AlertEvent(
            fp, alert.rule, alert.labels, self._group(alert.rule, dict(alert.labels)), status, alert.severity,
            alert.value, alert.starts_ms, event_ms, alert.signals, alert.summary,
        )  # fmt: skip
