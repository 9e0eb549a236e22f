"""Raw event tables: one per event type, columns straight from the Avro schema.

``event_type_table("OddsChanged") == "odds_changed"``. Each table is a
ReplacingMergeTree ordered by (partition key, event_time, event_id): a replayed or
redelivered event has the same sorting key and collapses into one row.
The DDL is committed as a migration; ``tests/integration/test_store.py`` checks that the
migrated tables match the schemas, so a schema change comes with a migration.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from typing import Any

from schemas.catalog import KEY_FIELD, Event, SchemaCatalog

RAW_EVENT_TYPES = (
    "BetPlaced", "BetSettled", "BetCancelled", "CashOut", "OddsChanged", "MarketStatusChanged",
    "MarketResulted", "ServiceHeartbeat", "ApiCallRecorded", "UserActivity",
)  # fmt: skip
POSITION_COLUMNS = ("kafka_partition", "kafka_offset")


@cache
def event_type_table(event_type: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", event_type).lower()


def clickhouse_type(avro: Any) -> str:
    """The ClickHouse column type for an Avro field type."""
    if isinstance(avro, list):
        branches = [b for b in avro if b != "null"]
        inner = clickhouse_type(branches[0])
        return f"Nullable({inner})" if "null" in avro else inner
    if isinstance(avro, dict):
        logical = avro.get("logicalType")
        if logical == "uuid":
            return "UUID"
        if logical == "timestamp-millis":
            return "DateTime64(3, 'UTC')"
        if logical == "decimal":
            return f"Decimal({avro['precision']}, {avro['scale']})"
        if avro["type"] == "enum":
            return "LowCardinality(String)"  # new symbols must not need a migration
        if avro["type"] == "array":
            return f"Array({clickhouse_type(avro['items'])})"
        return clickhouse_type(avro["type"])
    return {
        "string": "String",
        "long": "Int64",
        "int": "Int32",
        "double": "Float64",
        "float": "Float32",
        "boolean": "Bool",
        "bytes": "String",
    }[avro]


def columns(catalog: SchemaCatalog, event_type: str) -> list[tuple[str, str]]:
    fields = catalog.schema(event_type).source["fields"]
    return [(f["name"], clickhouse_type(f["type"])) for f in fields] + [
        ("kafka_partition", "UInt32"),
        ("kafka_offset", "UInt64"),
    ]


def create_table_sql(catalog: SchemaCatalog, event_type: str) -> str:
    body = ",\n".join(f"    {name} {kind}" for name, kind in columns(catalog, event_type))
    key = KEY_FIELD[event_type]
    return (
        f"CREATE TABLE IF NOT EXISTS {event_type_table(event_type)}\n(\n{body}\n)\n"
        f"ENGINE = ReplacingMergeTree\nPARTITION BY toYYYYMM(event_time)\n"
        f"ORDER BY ({key}, event_time, event_id)"
    )


def field_names(catalog: SchemaCatalog, event_type: str) -> tuple[str, ...]:
    """The schema's fields in order: a raw row's columns before its Kafka position."""
    return tuple(f["name"] for f in catalog.schema(event_type).source["fields"])


def raw_row(names: Sequence[str], event: Event, partition: int, offset: int) -> tuple[Any, ...]:
    """A raw table's row: the record's ``names`` (:func:`field_names`), partition, offset."""
    record = event.record
    return (*[record[n] for n in names], partition, offset)
