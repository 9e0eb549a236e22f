"""Raw events land in their tables once, even when delivered twice."""

from __future__ import annotations

import itertools
from collections import Counter

import httpx
import pytest

from consumers.store.raw_tables import RAW_EVENT_TYPES, event_type_table
from oddstream.kafka.admin import ensure_topics
from oddstream.producer import EventProducer
from oddstream.settings import Settings
from oddstream.simulator.model import MarketSimulator
from schemas.catalog import Event
from schemas.topics import SOURCE_TOPICS
from tests.integration.kafka_read import group_lag
from tests.integration.roles import Role, wait_for

pytestmark = pytest.mark.integration


def counts(settings: Settings) -> dict[str, int]:
    query = " UNION ALL ".join(
        f"SELECT '{event_type_table(t)}', count() FROM {event_type_table(t)} FINAL" for t in RAW_EVENT_TYPES
    )
    response = httpx.post(f"{settings.sql_endpoint}/sql", content=query, timeout=30)
    assert response.status_code == 200, response.text
    return {name: int(n) for name, n in response.json()["rows"]}


def test_every_source_event_is_stored_once_across_redelivery(settings: Settings) -> None:
    ensure_topics(settings)
    start = 1_790_000_000_000  # in the past: within the far-future rule
    sim = MarketSimulator(seed=11, start_ms=start, rate_per_s=20, market_lifetime_s=(20, 40))
    events: list[Event] = list(itertools.islice(sim.events(), 3_000))
    expected = Counter(event_type_table(e.type) for e in events)
    assert {"bet_settled", "market_resulted", "odds_changed", "api_call_recorded"} <= set(expected)
    store = Role(settings, "store")
    try:
        with EventProducer(settings) as producer:
            for event in events:
                producer.publish_event(event)
        source_topics = [settings.topic_prefix + suffix for suffix in SOURCE_TOPICS]
        group = f"{settings.topic_prefix}store"

        def caught_up() -> bool:
            return group_lag(settings.bootstrap, group, source_topics) == 0

        wait_for("the store to catch up", caught_up, 90, [store])
        assert counts(settings) == {t: expected.get(t, 0) for t in counts(settings)}
        with EventProducer(settings) as producer:  # the same events again: a replay or redelivery
            for event in events[:1_000]:
                producer.publish_event(event)
        wait_for("the store to catch up again", caught_up, 90, [store])
        assert counts(settings) == {t: expected.get(t, 0) for t in counts(settings)}
    finally:
        store.stop()
