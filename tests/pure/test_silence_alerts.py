"""Alerts on silence (issue 14, point 5): a partition that has gone quiet moves its detectors'
event clock with the wall clock, as its windows' idle mark does, so a service whose
heartbeats stopped gets its alert with nothing else on the partition, and the alert resolves
when the heartbeats resume."""

from __future__ import annotations

from typing import Any

import pytest

from streams.detectors import Detectors
from streams.processor import Emission, PartitionProcessor, WindowConfig

pytestmark = pytest.mark.pure
T0 = 1_767_225_600_000
WALL0 = 1_800_000_000_000  # the worker's clock: unrelated to event time on purpose
CONFIG = WindowConfig(idle_timeout_ms=3_000)
GAP = Detectors().config.heartbeat_gap_ms


def alerts(emissions: list[Emission]) -> list[tuple[str, str, dict[str, str]]]:
    return [
        (e.record["rule"], e.record["status"], e.record["labels"]) for e in emissions if e.kind == "alert"
    ]


class Partition:
    def __init__(self) -> None:
        self.processor = PartitionProcessor(CONFIG, partition=2)
        self.offset = 0

    def heartbeat(self, event_ms: int, wall_ms: int) -> list[Emission]:
        record: dict[str, Any] = {
            "event_id": f"hb{self.offset}", "event_time": T0 + event_ms, "source": "t",
            "service": "wallet", "instance": "w1", "sequence": self.offset,
        }  # fmt: skip
        out = self.processor.process(self.offset, "ServiceHeartbeat", record, wall_ms)
        self.offset += 1
        return out.emissions


def test_a_service_gone_silent_fires_its_gap_alert_on_the_idle_clock_and_resolves_when_it_is_back() -> None:
    p = Partition()
    for second in range(5):  # a heartbeat a second, event time = wall time
        assert alerts(p.heartbeat(second * 1_000, WALL0 + second * 1_000)) == []
    last_wall = WALL0 + 4_000
    # silent: nothing before the gap has passed on the idle clock, whatever the idle timeout
    for wall in range(last_wall, last_wall + GAP, 1_000):
        assert alerts(p.processor.on_idle(wall)) == []
    fired = p.processor.on_idle(last_wall + GAP)
    assert alerts(fired) == [("heartbeat_gap", "firing", {"service": "wallet"})]
    [record] = [e.record for e in fired]
    assert record["event_time"] == T0 + 4_000 + GAP and record["source_partition"] == 2
    # still silent: deduplicated, not fired again, not resolved as unconfirmed
    for wall in range(last_wall + GAP, last_wall + 5 * GAP, 1_000):
        assert alerts(p.processor.on_idle(wall)) == []
    back = p.heartbeat(4_000 + 5 * GAP, last_wall + 5 * GAP)
    assert alerts(back) == [("heartbeat_gap", "resolved", {"service": "wallet"})]
    assert alerts(p.processor.on_idle(last_wall + 5 * GAP + 1_000)) == []


def test_a_partition_quiet_for_less_than_the_idle_timeout_raises_nothing() -> None:
    """A partition behind a slow producer is not silent: only the idle timeout makes it so."""
    p = PartitionProcessor(WindowConfig(idle_timeout_ms=60_000), partition=0)
    q = Partition()
    q.processor = p
    q.heartbeat(0, WALL0)
    assert alerts(p.on_idle(WALL0 + 59_999)) == []  # past the gap, short of the idle timeout
    assert alerts(p.on_idle(WALL0 + 60_000)) == [("heartbeat_gap", "firing", {"service": "wallet"})]


def test_a_heartbeat_that_ends_a_gap_records_the_alert_in_a_replay_too() -> None:
    """Read from the log with no idle clock (a replay): the gap fires and resolves at once."""
    d = Detectors()
    assert d.on_heartbeat("wallet", T0) == []
    events = d.on_heartbeat("wallet", T0 + GAP + 5_000)
    assert [(a.rule, a.status, a.event_ms) for a in events] == [
        ("heartbeat_gap", "firing", T0 + GAP + 5_000),
        ("heartbeat_gap", "resolved", T0 + GAP + 5_000),
    ]
    assert d.on_heartbeat("wallet", T0 + GAP + 6_000) == []


def test_an_alert_nothing_confirms_resolves_on_a_silent_partition() -> None:
    """A latency spike fires; then the partition goes silent: the alert resolves after its
    resolve time on the idle clock instead of firing for as long as the silence lasts."""
    p = PartitionProcessor(CONFIG, partition=1)
    resolve_after = Detectors().config.resolve_after_ms

    def call(n: int, latency: float) -> list[Emission]:
        record = {
            "event_id": f"c{n}", "event_time": T0 + n * 100, "source": "t", "service": "api",
            "route": "/v1/bets", "method": "GET", "status": 200, "latency_ms": latency,
        }  # fmt: skip
        return p.process(n, "ApiCallRecorded", record, WALL0 + n * 100).emissions

    for n in range(200):
        assert alerts(call(n, 20.0 + n % 7)) == []
    assert alerts(call(200, 5_000.0)) == [
        ("latency_spike", "firing", {"service": "api", "route": "/v1/bets"})
    ]
    last_wall = WALL0 + 200 * 100
    quiet = [e for wall in range(last_wall, last_wall + resolve_after, 1_000) for e in p.on_idle(wall)]
    assert alerts(quiet) == []
    resolved = p.on_idle(last_wall + resolve_after)
    assert alerts(resolved) == [("latency_spike", "resolved", {"service": "api", "route": "/v1/bets"})]
