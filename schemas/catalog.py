"""The schemas in this repository: current versions, frozen history, fingerprints.

``avro/<Type>.avsc`` is the current contract of an event; ``avro/history/<Type>/vN.avsc``
are the versions ever released, so old records still decode after a change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

from oddstream.errors import SchemaError, UnknownEventType

NAMESPACE = "oddstream.events"

# The field whose value decides the partition (and so the order) of each event.
KEY_FIELD: dict[str, str] = {
    "BetPlaced": "market_id",
    "BetSettled": "market_id",
    "BetCancelled": "market_id",
    "CashOut": "market_id",
    "OddsChanged": "market_id",
    "MarketStatusChanged": "market_id",
    "MarketResulted": "market_id",
    "ServiceHeartbeat": "service",
    "ApiCallRecorded": "service",
    "UserActivity": "user_id",
    "OddsWindowUpdated": "market_id",
    "PriceWindowUpdated": "market_id",
    "BetWindowUpdated": "market_id",
    "ServiceWindowUpdated": "service",
    "RouteWindowUpdated": "service",
    "UserWindowUpdated": "user_id",
    "UserBetRecorded": "user_id",
    "WebhookEndpoint": "endpoint_id",
    "WebhookAttempted": "endpoint_id",
    "WebhookMessagePending": "endpoint_id",
    "WebhookMessageFailed": "endpoint_id",
    "PredictionMade": "market_id",
    "ValueSignalRaised": "market_id",
    "ModelEvaluated": "model",
    "ModelDriftDetected": "model",
    "AlertChanged": "fingerprint",
}


@dataclass(frozen=True)
class Event:
    """One event: its type (the Avro record name without namespace) and its fields."""

    type: str
    record: dict[str, Any]

    @property
    def key(self) -> bytes:
        """The partition key, per :data:`KEY_FIELD`."""
        return str(self.record[KEY_FIELD[self.type]]).encode()


@dataclass(frozen=True)
class SchemaVersion:
    """One version of one event type."""

    event_type: str
    version: int
    source: dict[str, Any]
    parsed: Any
    canonical: str
    fingerprint: bytes  # 8 bytes, CRC-64-AVRO, little-endian as single-object encoding writes it


@dataclass
class SchemaCatalog:
    """Schemas by type (current) and by fingerprint (every version)."""

    current: dict[str, SchemaVersion] = field(default_factory=dict)
    history: dict[str, list[SchemaVersion]] = field(default_factory=dict)
    by_fingerprint: dict[bytes, SchemaVersion] = field(default_factory=dict)

    def schema(self, event_type: str) -> SchemaVersion:
        try:
            return self.current[event_type]
        except KeyError:
            raise UnknownEventType(f"unknown event type {event_type!r}") from None

    def types(self) -> list[str]:
        return sorted(self.current)

    def add(self, version: SchemaVersion, *, is_current: bool) -> None:
        if is_current:
            self.current[version.event_type] = version
        else:
            self.history.setdefault(version.event_type, []).append(version)
        self.by_fingerprint.setdefault(version.fingerprint, version)


def make_version(source: dict[str, Any], version: int) -> SchemaVersion:
    """Parse one schema document; each version gets its own named-type space."""
    try:
        parsed = parse_schema(source, named_schemas={})
        canonical = to_parsing_canonical_form(parsed)
    except Exception as exc:  # fastavro raises several unrelated types
        raise SchemaError(f"schema {source.get('name')!r} v{version} does not parse: {exc}") from exc
    name = str(source["name"]).rsplit(".", 1)[-1]
    return SchemaVersion(
        event_type=name,
        version=version,
        source=source,
        parsed=parsed,
        canonical=canonical,
        fingerprint=bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")),
    )


@cache
def load_catalog() -> SchemaCatalog:
    """Load every bundled schema (current and history). Cached: the files do not change."""
    catalog = SchemaCatalog()
    root = Path(__file__).resolve().parent / "avro"
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".avsc"):
            source = json.loads(entry.read_text())
            history_dir = root / "history" / entry.name.removesuffix(".avsc")
            versions = sorted(
                (int(v.name[1:-5]), json.loads(v.read_text()))
                for v in history_dir.iterdir()
                if v.name.startswith("v") and v.name.endswith(".avsc")
            )
            if not versions:
                raise SchemaError(f"{entry.name} has no frozen version under history/")
            for number, old in versions:
                catalog.add(make_version(old, number), is_current=False)
            catalog.add(make_version(source, versions[-1][0]), is_current=True)
    return catalog
