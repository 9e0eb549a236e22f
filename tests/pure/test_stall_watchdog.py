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


class CommittingConsumer:
    """The parts of Faust's consumer the held-commit release uses."""

    def __init__(self) -> None:
        self._committed_offset: dict[Any, int | None] = {}
        self.commits: list[dict[Any, int]] = []

    async def maybe_wait_for_commit_to_finish(self) -> bool:
        return False

    async def _commit_offsets(self, offsets: dict[Any, int]) -> bool:
        self.commits.append(dict(offsets))
        self._committed_offset.update(offsets)
        return True


async def test_a_commit_held_behind_processed_records_is_released(monkeypatch: pytest.MonkeyPatch) -> None:
    from faust.types import TP

    from consumers.worker.partitions import COMMIT_HELD_S

    clock = [1000.0]
    monkeypatch.setattr("consumers.worker.partitions.time.monotonic", lambda: clock[0])
    app = FakeApp()
    consumer = app.consumer = CommittingConsumer()  # type: ignore[assignment]
    source = SourceAnalytics(app, Settings(), Codec(load_catalog()), "p.odds", table=None, stage="odds")
    held, moving, halted, fresh = (PartitionProcessor(partition=p) for p in (0, 1, 2, 3))
    held.offset, moving.offset, halted.offset = 500, 500, 500  # fresh: nothing processed (-1)
    source.processors = {0: held, 1: moving, 2: halted, 3: fresh}
    source.halted = {2: "an output was refused"}
    consumer._committed_offset = {TP("p.odds", 0): 100, TP("p.odds", 1): 100, TP("p.odds", 2): 100}
    await source.release_held_commits()  # first look
    clock[0] += COMMIT_HELD_S - 1
    consumer._committed_offset[TP("p.odds", 1)] = 300  # Faust's commit moves: not held
    await source.release_held_commits()
    assert consumer.commits == []
    clock[0] += 2
    await source.release_held_commits()
    # only the partition whose commit stayed behind for COMMIT_HELD_S, to its next offset
    assert consumer.commits == [{TP("p.odds", 0): 501}] and source.commits_released == 1
    clock[0] += COMMIT_HELD_S + 1
    await source.release_held_commits()
    assert len(consumer.commits) == 2 and consumer.commits[1] == {TP("p.odds", 1): 501}
    clock[0] += 3 * COMMIT_HELD_S
    await source.release_held_commits()  # caught up everywhere; halted and fresh never
    assert len(consumer.commits) == 2


def test_a_partition_never_fetched_since_its_assignment_is_stalled_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr("consumers.worker.partitions.time.monotonic", lambda: clock[0])
    app = FakeApp()  # no highwater for any partition: the consumer never fetched them
    source = SourceAnalytics(app, Settings(), Codec(load_catalog()), "p.bets", table=None, stage="bets")
    stuck, empty = PartitionProcessor(partition=1), PartitionProcessor(partition=2)
    stuck.offset = 5620
    source.processors = {1: stuck, 2: empty}
    source._ends = {1: 8104, 2: 0}  # what adoption saw at the assignment
    assert source.stalled(120) == []
    clock[0] += 121
    assert source.stalled(120) == ["p.bets[1] at offset 5620, 2483 record(s) waiting, no progress for 121 s"]
