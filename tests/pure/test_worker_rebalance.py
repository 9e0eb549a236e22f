"""The worker's partitions around a rebalance: a processor is only ever taken up for a
partition this worker holds once the rebalance is over, and one it holds no longer is
forgotten at the next assignment (seen in CI: a processor restored between a revocation
and the new assignment outlived it, and when its partition came back its stale state was
taken for the partition's: the last windows never closed)."""

from __future__ import annotations

from typing import Any

import pytest
from faust.types import TP

from consumers.worker.partitions import SourceAnalytics
from oddstream.settings import Settings
from schemas.catalog import load_catalog
from schemas.codec import Codec
from streams.processor import PartitionProcessor

pytestmark = pytest.mark.pure
TOPIC = "p.odds"


class Consumer:
    def __init__(self) -> None:
        self.assigned: set[int] = set()
        self.highwaters: dict[int, int] = {}

    def assignment(self) -> set[TP]:
        return {TP(TOPIC, p) for p in self.assigned}

    def highwater(self, tp: TP) -> int | None:
        return self.highwaters.get(tp.partition)


class Table:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def send_changelog(self, *args: Any) -> None:
        return None


class App:
    def __init__(self) -> None:
        self.consumer = Consumer()
        self.rebalancing = False


def source_with_fills(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[SourceAnalytics, App, list[tuple[int, int, int]]]:
    app = App()
    source = SourceAnalytics(app, Settings(), Codec(load_catalog()), TOPIC, table=Table(), stage="odds")
    fills: list[tuple[int, int, int]] = []

    async def fill_gap(processor: PartitionProcessor, partition: int, start: int, end: int) -> None:
        fills.append((partition, start, end))
        processor.offset = end - 1

    monkeypatch.setattr(source, "_fill_gap", fill_gap)
    monkeypatch.setattr(source, "checkpoint", lambda partition: None)
    return source, app, fills


async def test_a_rebalance_that_starts_while_offsets_are_read_takes_up_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source, app, fills = source_with_fills(monkeypatch)
    app.consumer.assigned = {0, 1}

    reads: list[list[int]] = []

    async def committed(partitions: list[int]) -> tuple[dict[int, int | None], dict[int, int]]:
        reads.append(partitions)
        if (
            len(reads) == 1
        ):  # the group rebalances meanwhile: Faust revokes both; the consumer still lists them
            app.rebalancing = True
            source.forget({0, 1})
        return {p: 10 for p in partitions}, {p: 10 for p in partitions}

    monkeypatch.setattr(source, "_committed", committed)
    await source._adopt_assigned()
    assert source.processors == {} and fills == []
    await source.on_idle()  # nothing at all while the rebalance runs
    assert source.processors == {} and fills == []

    # the rebalance ends with only partition 1 here: it is taken up, from its snapshot's
    # offset (none: the log's start) to the committed one
    app.consumer.assigned = {1}
    source.retain({1})
    app.rebalancing = False
    await source._adopt_assigned()
    assert set(source.processors) == {1} and fills == [(1, 0, 10)]


def test_an_assignment_forgets_every_partition_it_does_not_hold() -> None:
    app = App()
    source = SourceAnalytics(app, Settings(), Codec(load_catalog()), TOPIC, table=Table(), stage="odds")
    source.processors = {p: PartitionProcessor(partition=p) for p in (0, 1, 2)}
    source._adopted = {0, 1, 2}
    source._ends = {0: 5, 1: 5, 2: 5}
    source.halted = {}
    source.retain({1, 3})
    assert set(source.processors) == {1} and source._adopted == {1} and source._ends == {1: 5}


async def test_a_partition_not_fetched_since_its_assignment_is_caught_up_at_the_brokers_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its last windows close: without a highwater, the broker's end offset says it is caught up."""
    source, app, _ = source_with_fills(monkeypatch)
    done, behind = PartitionProcessor(partition=0), PartitionProcessor(partition=1)
    done.offset, behind.offset = 99, 40
    source.processors = {0: done, 1: behind}
    source._adopted = {0, 1}
    app.consumer.assigned = {0, 1}

    async def end_offsets(partitions: list[int]) -> dict[int, int]:
        return {p: 100 for p in partitions}

    monkeypatch.setattr(source, "_end_offsets", end_offsets)
    assert not source._caught_up(0, done)
    await source._learn_ends()
    assert source._caught_up(0, done) and not source._caught_up(1, behind)
    app.consumer.highwaters = {1: 41}  # fetched: the highwater decides
    assert source._caught_up(1, behind)
