"""The worker's consumer shares the fetcher between topics: a full inbox does not hold up the rest."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from faust.transport.drivers.aiokafka import Consumer
from faust.types import TP

from consumers.worker.inbox import FULL_INBOX_POLL_S, BatchingConsumer, Inbox

pytestmark = pytest.mark.pure

ODDS, BETS, CHANGELOG = "p.odds", "p.bets", "w-odds-analytics-state-changelog"
PARTITIONS = {TP(topic, p) for topic in (ODDS, BETS, CHANGELOG) for p in (0, 1)}


def consumer_with(inboxes: dict[str, Inbox], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[Any]]:
    """A BatchingConsumer whose underlying fetch records what it was asked for."""
    asked: list[tuple[set[TP] | None, float]] = []

    async def fetched(self: Any, active_partitions: set[TP] | None, timeout: float) -> dict[TP, list[int]]:  # noqa: ASYNC109
        asked.append((active_partitions, timeout))
        return {tp: [1] for tp in active_partitions or ()}

    monkeypatch.setattr(Consumer, "_getmany", fetched)
    consumer = object.__new__(BatchingConsumer)  # only the fetch path: no transport, no app
    consumer.inboxes = inboxes
    return consumer, asked


def full_inbox() -> Inbox:
    inbox = Inbox(2)
    inbox.put([object(), object()])  # type: ignore[list-item]
    return inbox


def test_with_room_everywhere_every_partition_is_asked_with_the_callers_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    consumer, asked = consumer_with({ODDS: Inbox(2), BETS: Inbox(2)}, monkeypatch)
    records = asyncio.run(consumer._getmany(set(PARTITIONS), 1.0))
    assert asked == [(PARTITIONS, 1.0)]
    assert set(records) == PARTITIONS


def test_a_full_inbox_leaves_its_records_buffered_while_other_topics_flow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An odds backlog filling its inbox used to block the consumer on odds alone: bets waited
    minutes behind it (the soak's stall). Now the bets and the changelogs are still asked for,
    and soon again, since the odds inbox has room as soon as its stage takes a batch."""
    consumer, asked = consumer_with({ODDS: full_inbox(), BETS: Inbox(2)}, monkeypatch)
    records = asyncio.run(consumer._getmany(set(PARTITIONS), 1.0))
    [(partitions, timeout)] = asked
    assert partitions == {tp for tp in PARTITIONS if tp.topic != ODDS}
    assert timeout == FULL_INBOX_POLL_S
    assert not any(tp.topic == ODDS for tp in records)


def test_every_inbox_full_and_nothing_else_assigned_asks_for_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer, asked = consumer_with({ODDS: full_inbox(), BETS: full_inbox()}, monkeypatch)
    only_sources = {tp for tp in PARTITIONS if tp.topic != CHANGELOG}
    assert asyncio.run(consumer._getmany(only_sources, 1.0)) == {}
    assert asked == []


def test_an_inbox_taken_from_has_room_again() -> None:
    async def run() -> None:
        inbox = full_inbox()
        assert inbox.full
        waiting = asyncio.ensure_future(inbox.wait_for_room())
        await asyncio.sleep(0)
        assert not waiting.done()
        assert len(await inbox.take()) == 2
        await asyncio.wait_for(waiting, 1)
        assert not inbox.full

    asyncio.run(run())
