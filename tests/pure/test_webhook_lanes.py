"""Delivery lanes: endpoints never wait on each other; offsets commit up to the first
record still in flight."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.dispatcher.lanes import CommitTracker, Lanes

pytestmark = pytest.mark.pure


def test_commits_stop_at_the_first_record_still_in_flight() -> None:
    tracker = CommitTracker()
    tracker.add("p0", 10, 2)
    tracker.add("p0", 11, 0)  # nothing to deliver: resolved at once
    tracker.add("p0", 12, 1)
    tracker.add("p1", 3, 0)
    assert tracker.committable() == {"p0": 10, "p1": 4}
    tracker.done("p0", 12)  # a later record ends first: still held by 10
    assert tracker.committable() == {}
    tracker.done("p0", 10)
    assert tracker.committable() == {}
    tracker.done("p0", 10)  # its second delivery
    assert tracker.committable() == {"p0": 13}
    tracker.forget({"p0"})
    tracker.done("p0", 12)  # late news of a revoked partition is ignored
    assert tracker.committable() == {} and tracker.in_flight() == 0


@given(st.lists(st.integers(0, 3), min_size=1, max_size=40), st.randoms(use_true_random=False))
def test_the_committed_offset_never_passes_an_unresolved_record(deliveries: list[int], rnd: object) -> None:
    tracker = CommitTracker()
    for offset, n in enumerate(deliveries):
        tracker.add("tp", offset, n)
    endings = [offset for offset, n in enumerate(deliveries) for _ in range(n)]
    rnd.shuffle(endings)  # type: ignore[attr-defined]
    remaining = dict(enumerate(deliveries))
    committed = tracker.committable().get("tp", 0)
    for offset in endings:
        tracker.done("tp", offset)
        remaining[offset] -= 1
        committed = tracker.committable().get("tp", committed)
        first_open = next((o for o, n in sorted(remaining.items()) if n > 0), len(deliveries))
        assert committed == first_open
    assert committed == len(deliveries)


async def test_a_stuck_endpoint_does_not_hold_up_another() -> None:
    lanes = Lanes(concurrency=2)
    release = asyncio.Event()
    done: list[str] = []

    async def stuck() -> None:
        await release.wait()

    async def quick() -> None:
        return None

    for _ in range(5):
        lanes.submit("slow", stuck, lambda: done.append("slow"))
    for _ in range(20):
        lanes.submit("fast", quick, lambda: done.append("fast"))
    await asyncio.sleep(0.05)
    assert done.count("fast") == 20 and done.count("slow") == 0
    assert lanes.queued("slow") == 3  # two in its workers, three waiting: its own queue only
    release.set()
    await asyncio.sleep(0.05)
    assert done.count("slow") == 5
    await lanes.close()


async def test_a_job_that_raises_still_ends_and_its_lane_goes_on() -> None:
    lanes = Lanes(concurrency=1)
    ended: list[int] = []

    async def broken() -> None:
        raise ValueError("a bug meeting an input")

    async def fine() -> None:
        return None

    lanes.submit("e", broken, lambda: ended.append(1))
    lanes.submit("e", fine, lambda: ended.append(2))
    await asyncio.sleep(0.05)
    assert ended == [1, 2]
    await lanes.close()


async def test_a_failed_write_of_the_retry_schedule_stops_the_dispatcher_before_any_commit(
    tmp_path: object,
) -> None:
    """A first attempt failed and its retry could not be written to Kafka: the record must
    not be committed past (its redelivery after the restart is the retry)."""
    from pathlib import Path

    from consumers.dispatcher.service import Dispatcher
    from oddstream.settings import Settings

    committed: list[object] = []

    class Consumer:  # only what _commit asks of aiokafka's consumer
        def assignment(self) -> set[str]:
            return {"p0"}

        async def commit(self, offsets: object) -> None:
            committed.append(offsets)

    dispatcher = Dispatcher(Settings(data_dir=Path(str(tmp_path))))
    tracker = CommitTracker()
    tracker.add("p0", 5, 1)
    tracker.done("p0", 5)  # the lane ends the job whatever happened to it
    dispatcher._fatal = OSError("the broker did not acknowledge the retry")
    with pytest.raises(RuntimeError, match="retry schedule could not be written"):
        await dispatcher._commit(Consumer(), tracker)
    assert committed == []
