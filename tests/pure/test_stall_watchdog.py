"""The worker's stall watchdog: a partition with records waiting and no progress is reported."""

from __future__ import annotations

from typing import Any

import pytest

from consumers.worker.partitions import SourceAnalytics
from oddstream.settings import Settings
from schemas.catalog import load_catalog
from schemas.codec import Codec
from streams.processor import PartitionProcessor

pytestmark = pytest.mark.pure


class FakeConsumer:
    def __init__(self) -> None:
        self.highwaters: dict[int, int] = {}

    def highwater(self, tp: Any) -> int | None:
        return self.highwaters.get(tp.partition)


class FakeApp:
    def __init__(self) -> None:
        self.consumer = FakeConsumer()


def test_a_partition_with_records_waiting_and_no_progress_is_stalled(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("consumers.worker.partitions.time.monotonic", lambda: clock[0])
    app = FakeApp()
    source = SourceAnalytics(
        app, Settings(), Codec(load_catalog()), "p.odds", table=None, stage="odds-analytics"
    )
    busy, done, halted = (PartitionProcessor(partition=p) for p in (0, 1, 2))
    busy.offset, done.offset, halted.offset = 10, 50, 5
    source.processors = {0: busy, 1: done, 2: halted}
    source.halted = {2: "an output was refused"}
    app.consumer.highwaters = {0: 100, 1: 51, 2: 9}
    assert source.stalled(60) == []  # first look: progress noted
    clock[0] += 30
    busy.offset = 20  # moving
    assert source.stalled(60) == []
    clock[0] += 61
    [stall] = source.stalled(60)  # partition 0 has not moved for 61 s with 79 records waiting
    assert stall == "p.odds[0] at offset 20, 79 record(s) waiting, no progress for 61 s"
    busy.offset = 99  # caught up: nothing waits
    assert source.stalled(60) == []
