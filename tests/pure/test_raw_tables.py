"""Raw event tables follow the schemas: a schema change needs a migration."""

from __future__ import annotations

import pytest

from consumers.store.raw_tables import RAW_EVENT_TYPES, clickhouse_type, event_type_table
from schemas.topics import SOURCE_TOPICS, TOPIC_OF_EVENT

pytestmark = pytest.mark.pure


def test_every_source_event_has_a_raw_table() -> None:
    assert set(RAW_EVENT_TYPES) == {t for t, topic in TOPIC_OF_EVENT.items() if topic in SOURCE_TOPICS}


def test_type_mapping() -> None:
    assert event_type_table("ApiCallRecorded") == "api_call_recorded"
    assert clickhouse_type(
        ["null", {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 2}]
    ) == ("Nullable(Decimal(18, 2))")
    assert clickhouse_type({"type": "array", "items": "string"}) == "Array(String)"
    assert clickhouse_type({"type": "enum", "name": "E", "symbols": ["A"]}) == "LowCardinality(String)"
