"""The retry schedule, the circuit breaker, the rate limit and the book of waiting messages,
with values."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.dispatcher.schedule import (
    SVIX_SCHEDULE_S,
    Breaker,
    PendingBook,
    RateLimit,
    RetrySchedule,
    pending_key,
    retry_partition,
)
from oddstream.settings import Settings

pytestmark = pytest.mark.pure


def test_the_default_schedule_is_svixs_and_ends_in_giving_up() -> None:
    assert Settings().webhook_retry_schedule_s == SVIX_SCHEDULE_S
    schedule = RetrySchedule()
    assert schedule.max_attempts == 8
    dues = [schedule.next_attempt_ms(n, 0) for n in range(1, 9)]
    assert dues == [5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000, None]


def test_a_schedule_from_the_environment_is_checked() -> None:
    assert Settings(webhook_retry_schedule_s=(0.5, 2)).webhook_retry_schedule_s == (0.5, 2.0)
    for bad in ((0,), (-1.0,), (1.0,) * 31, (8 * 24 * 3600.0,)):
        with pytest.raises(ValueError, match="webhook_retry_schedule_s"):
            Settings(webhook_retry_schedule_s=bad)


def test_the_circuit_opens_after_failures_in_a_row_and_lets_one_probe_through() -> None:
    breaker = Breaker(failures=3, open_s=10)
    for t in (0, 1, 2):
        assert breaker.allows(t)
        breaker.failure(t)
    assert breaker.is_open and not breaker.allows(5_000) and breaker.reopens_at(5_000) == 10_002
    assert breaker.allows(10_002)  # the probe
    assert not breaker.allows(10_003)  # only one at a time
    breaker.failure(10_500)  # the probe failed: open again
    assert not breaker.allows(15_000) and breaker.allows(20_500)
    breaker.success()
    assert not breaker.is_open and all(breaker.allows(20_501 + n) for n in range(10))


def test_a_success_between_failures_keeps_the_circuit_closed() -> None:
    breaker = Breaker(failures=3, open_s=10)
    for t in range(20):
        breaker.failure(t) if t % 3 else breaker.success()
        assert breaker.allows(t)


def test_the_rate_limit_spreads_deliveries_at_its_rate_after_a_burst_of_one_second() -> None:
    limit = RateLimit(per_s=5)
    waits = [limit.wait_s(0) for _ in range(10)]
    assert waits[:5] == [0.0] * 5 and waits[5:] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert RateLimit(per_s=0).wait_s(0) == 0.0  # none


@given(st.lists(st.integers(min_value=0, max_value=400), min_size=1, max_size=200))
def test_the_rate_limit_never_lets_more_through_than_its_rate(gaps: list[int]) -> None:
    """Sending when told, no second ever sees more than rate + burst deliveries."""
    limit, now, sent = RateLimit(per_s=4), 0, []
    for gap in gaps:
        now += gap
        now += round(limit.wait_s(now) * 1000)
        sent.append(now)
    for start in sent:
        assert sum(start <= t < start + 1000 for t in sent) <= 8


def pending(message: str, due: int, written: int, endpoint: str = "ep_1", **more: Any) -> dict[str, Any]:
    return {
        "endpoint_id": endpoint,
        "message_id": message,
        "next_attempt": due,
        "event_time": written,
        **more,
    }


def test_the_book_fires_what_is_due_once_and_forgets_what_is_resolved() -> None:
    book = PendingBook()
    book.apply(pending_key("ep_1", "m1"), 0, pending("m1", 100, 1), 1)
    book.apply(pending_key("ep_1", "m2"), 0, pending("m2", 200, 1), 1)
    assert book.due(99) == []
    [first] = book.due(150)
    assert first.record["message_id"] == "m1" and book.due(150) == []  # fired: not again
    book.apply(first.key, 0, pending("m1", 500, 2), 2)  # its attempt failed: next at 500
    book.settled(first.key)
    assert [p.record["message_id"] for p in book.due(300)] == ["m2"]
    book.apply(pending_key("ep_1", "m2"), 0, None, 3)  # delivered: a tombstone
    book.settled(pending_key("ep_1", "m2"))
    assert [p.record["message_id"] for p in book.due(600)] == ["m1"] and len(book) == 1


def test_a_late_read_back_of_an_older_record_never_revives_a_resolved_message() -> None:
    book = PendingBook()
    key = pending_key("ep_1", "m1")
    book.apply(key, 0, None, 10)  # the writer's tombstone, applied at once
    book.apply(key, 0, pending("m1", 5, 5), 5)  # the older record, read back later
    assert book.due(1_000) == [] and len(book) == 0


def test_nothing_fires_until_its_partition_is_read_to_the_end() -> None:
    book = PendingBook()
    book.load(0)
    key = pending_key("ep_1", "m1")
    book.apply(key, 0, pending("m1", 5, 1), 1)  # an old record: due long ago
    assert book.due(1_000) == []
    book.apply(key, 0, None, 2)  # the newer tombstone, further on in the partition
    book.loaded(0)
    assert book.due(1_000) == []


def test_an_open_circuit_defers_without_a_write_and_revoked_partitions_are_dropped() -> None:
    book = PendingBook()
    book.apply(pending_key("ep_1", "m1"), 0, pending("m1", 10, 1), 1)
    book.apply(pending_key("ep_2", "m2"), 1, pending("m2", 10, 1, endpoint="ep_2"), 1)
    fired = book.due(10)
    book.defer(fired[0].key, 50)
    book.settled(fired[1].key)
    book.forget({1})
    assert [p.key for p in book.due(49)] == [] and [p.key for p in book.due(50)] == [fired[0].key]
    assert len(book) == 1


def test_failing_since_is_the_earliest_a_waiting_message_remembers() -> None:
    book = PendingBook()
    book.apply("ep_1 a", 0, pending("a", 10, 1, endpoint_failing_since=500), 1)
    book.apply("ep_1 b", 0, pending("b", 10, 1, endpoint_failing_since=300), 1)
    book.apply("ep_2 c", 0, pending("c", 10, 1, endpoint="ep_2", endpoint_failing_since=100), 1)
    assert book.failing_since("ep_1") == 300 and book.failing_since("ep_3") is None


@given(st.text(min_size=1, max_size=40), st.integers(min_value=1, max_value=64))
def test_an_endpoints_messages_always_go_to_one_partition(endpoint_id: str, partitions: int) -> None:
    assert 0 <= retry_partition(endpoint_id, partitions) < partitions
    assert retry_partition(endpoint_id, partitions) == retry_partition(endpoint_id, partitions)


def test_a_probe_whose_target_was_refused_lets_the_next_probe_through() -> None:
    breaker = Breaker(failures=1, open_s=1)
    breaker.failure(0)
    assert breaker.allows(1_000)  # the probe
    breaker.release()  # refused: says nothing of the endpoint's health
    assert breaker.allows(1_001) and breaker.is_open  # another probe may go, the circuit stays open
