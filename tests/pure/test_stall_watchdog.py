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
        self.rebalancing = False


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
    """The parts of Faust's consumer the held-commit release uses, and the group's commits as
    the broker holds them (``accept``: whether the broker takes the next commit)."""

    def __init__(self) -> None:
        self.on_broker: dict[int, int | None] = {}
        self.commits: list[dict[Any, int]] = []
        self.accept = True

    async def maybe_wait_for_commit_to_finish(self) -> bool:
        return False

    async def _commit_offsets(self, offsets: dict[Any, int]) -> bool:
        self.commits.append(dict(offsets))
        if self.accept:
            self.on_broker.update({tp.partition: offset for tp, offset in offsets.items()})
        return self.accept


def committing_source(
    monkeypatch: pytest.MonkeyPatch, clock: list[float]
) -> tuple[SourceAnalytics, CommittingConsumer]:
    monkeypatch.setattr("consumers.worker.partitions.time.monotonic", lambda: clock[0])
    app = FakeApp()
    consumer = app.consumer = CommittingConsumer()  # type: ignore[assignment]
    source = SourceAnalytics(app, Settings(), Codec(load_catalog()), "p.odds", table=None, stage="odds")

    async def committed(partitions: list[int]) -> tuple[dict[int, int | None], dict[int, int]]:
        return {p: consumer.on_broker.get(p) for p in partitions}, {}

    monkeypatch.setattr(source, "_committed", committed)
    return source, consumer


async def test_a_commit_held_behind_processed_records_is_released(monkeypatch: pytest.MonkeyPatch) -> None:
    from faust.types import TP

    from consumers.worker.partitions import COMMIT_HELD_S

    clock = [1000.0]
    source, consumer = committing_source(monkeypatch, clock)
    held, moving, halted, fresh = (PartitionProcessor(partition=p) for p in (0, 1, 2, 3))
    held.offset, moving.offset, halted.offset = 500, 500, 500  # fresh: nothing processed (-1)
    source.processors = {0: held, 1: moving, 2: halted, 3: fresh}
    source.halted = {2: "an output was refused"}
    consumer.on_broker = {0: 100, 1: 100, 2: 100}
    await source.release_held_commits()  # first look
    clock[0] += COMMIT_HELD_S - 1
    consumer.on_broker[1] = 300  # the group's commit moves: not held
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


async def test_a_refused_commit_is_tried_again_until_the_broker_holds_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Faust counts a failed commit as made; the release asks the broker, so it tries again."""
    from faust.types import TP

    from consumers.worker.partitions import COMMIT_HELD_S

    clock = [1000.0]
    source, consumer = committing_source(monkeypatch, clock)
    processor = PartitionProcessor(partition=0)
    processor.offset = 5017
    source.processors = {0: processor}
    consumer.on_broker = {0: 582}
    consumer.accept = False
    for _ in range(2):  # each: a first look, then the release after COMMIT_HELD_S, refused
        await source.release_held_commits()
        clock[0] += COMMIT_HELD_S + 1
        await source.release_held_commits()
    assert consumer.commits == [{TP("p.odds", 0): 5018}] * 2 and consumer.on_broker == {0: 582}
    consumer.accept = True
    await source.release_held_commits()
    clock[0] += COMMIT_HELD_S + 1
    await source.release_held_commits()
    assert consumer.on_broker == {0: 5018} and len(consumer.commits) == 3
    clock[0] += 3 * COMMIT_HELD_S
    await source.release_held_commits()
    assert len(consumer.commits) == 3  # held on the broker: nothing more


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


def test_an_assigned_partition_never_delivered_from_its_start_is_stalled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nothing committed, so no processor until Faust delivers its first record: if none comes,
    the watchdog must still see the records waiting (it saw only partitions with a processor)."""
    clock = [1000.0]
    monkeypatch.setattr("consumers.worker.partitions.time.monotonic", lambda: clock[0])
    app = FakeApp()
    source = SourceAnalytics(app, Settings(), Codec(load_catalog()), "p.odds", table=None, stage="odds")
    source._adopted = {0, 1}
    source._ends = {0: 1200, 1: 0}  # partition 1 is empty: nothing waits
    assert source.stalled(120) == []
    clock[0] += 121
    assert source.stalled(120) == ["p.odds[0] at offset -1, 1200 record(s) waiting, no progress for 121 s"]
    source.processors = {0: PartitionProcessor(partition=0)}  # delivered at last
    source.processors[0].offset = 0
    assert source.stalled(120) == []


def test_partitions_waiting_their_turn_while_another_moves_are_not_stalled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A big backlog is delivered a few partitions at a time (the soak: one waited 122 s)."""
    clock = [1000.0]
    monkeypatch.setattr("consumers.worker.partitions.time.monotonic", lambda: clock[0])
    app = FakeApp()
    source = SourceAnalytics(app, Settings(), Codec(load_catalog()), "p.odds", table=None, stage="odds")
    busy, waiting = PartitionProcessor(partition=1), PartitionProcessor(partition=2)
    waiting.offset = 125_849
    source.processors, source._adopted = {1: busy, 2: waiting}, {0, 1, 2}
    source._ends = {0: 1200, 1: 90_000, 2: 230_860}
    for _ in range(5):  # partition 1 drains; 0 waits for its first record, 2 for its next
        busy.offset += 10_000
        clock[0] += 60
        assert source.stalled(120) == []
    clock[0] += 121  # then nothing moves at all
    assert source.stalled(120) == [
        "p.odds[0] at offset -1, 1200 record(s) waiting, no progress for 361 s",  # since the first look
        "p.odds[1] at offset 49999, 40000 record(s) waiting, no progress for 121 s",
        "p.odds[2] at offset 125849, 105010 record(s) waiting, no progress for 361 s",
    ]
