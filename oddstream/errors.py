"""The oddstream exception tree.

Every error oddstream raises derives from :class:`OddstreamError`; errors
from third-party libraries are wrapped, with the original kept as
``__cause__``::

    OddstreamError
    ├── ConfigError            settings are missing or contradictory
    ├── SchemaError            an .avsc file or a schema change is broken
    │   └── IncompatibleSchema     a change breaks Avro resolution
    ├── EventError             one event is bad; carries the reason
    │   ├── InvalidEvent           the record breaks its contract (field, reason)
    │   ├── UnknownEventType       no schema of that name
    │   ├── UndecodableEvent       bytes that are not a known frame or schema
    │   ├── MalformedRecord        the Kafka record around it: key, headers, topic
    │   ├── OversizeRecord         the record or a field is over the documented limits
    │   └── ProcessingFailed       an unexpected error while processing this one record
    ├── InfrastructureError    a dependency failed
    │   ├── BrokerError            Kafka (start, admin, produce, consume)
    │   │   └── DeliveryFailed         a produced record was not acknowledged
    │   ├── SchemaRegistryError    the Schema Registry refused a request
    │   │   └── RegistryUnavailable    it could not be reached (or answered 5xx)
    │   └── StoreError             ClickHouse
    └── WebhookError           a webhook endpoint or delivery
        └── UnsafeWebhookTarget    the URL points at a forbidden address

This module imports nothing, so the pure core may use it.
"""

from __future__ import annotations


class OddstreamError(Exception):
    """Root of every error raised by oddstream."""


class ConfigError(OddstreamError):
    """Settings are missing, malformed or contradictory."""


class SchemaError(OddstreamError):
    """A schema file cannot be loaded, or a schema change is not allowed."""


class IncompatibleSchema(SchemaError):
    """A schema version cannot resolve records written by another version."""


class EventError(OddstreamError):
    """One event is bad. ``reason`` is the text that goes to the producer or the dead letter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidEvent(EventError):
    """The record breaks its contract: a missing field, a wrong type, an impossible value."""

    def __init__(self, event_type: str, field: str, problem: str) -> None:
        super().__init__(f"{event_type}.{field}: {problem}")
        self.event_type = event_type
        self.field = field
        self.problem = problem


class UnknownEventType(EventError):
    """No schema in the catalog has that name."""


class UndecodableEvent(EventError):
    """The bytes are not a known frame, or do not decode with the schema they name."""


class MalformedRecord(EventError):
    """The Kafka record around the event is wrong: its key, its headers, or its topic."""


class OversizeRecord(EventError):
    """The record, or a field of it, is larger than the documented limits."""


class ProcessingFailed(EventError):
    """Processing this one record raised an unexpected error; the reason has a short traceback."""


class InfrastructureError(OddstreamError):
    """A dependency (Kafka, Schema Registry, ClickHouse) failed."""


class BrokerError(InfrastructureError):
    """Kafka failed: starting the local broker, admin calls, producing, consuming."""


class DeliveryFailed(BrokerError):
    """Kafka did not acknowledge produced records. ``failures`` lists (key, reason)."""

    def __init__(self, failures: list[tuple[bytes | None, str]]) -> None:
        shown = "; ".join(f"{k!r}: {r}" for k, r in failures[:5])
        more = f" (+{len(failures) - 5} more)" if len(failures) > 5 else ""
        super().__init__(f"{len(failures)} record(s) not delivered: {shown}{more}")
        self.failures = failures


class SchemaRegistryError(InfrastructureError):
    """The Schema Registry refused or failed a request (the message names the subject)."""


class RegistryUnavailable(SchemaRegistryError):
    """The Schema Registry could not be reached, or answered with a server error.

    Nothing was decided about the record: consumers wait and try again (never
    dead-letter for this), producers raise it to the caller."""


class StoreError(InfrastructureError):
    """ClickHouse refused or failed a statement."""


class WebhookError(OddstreamError):
    """A webhook endpoint is invalid or a delivery failed."""


class UnsafeWebhookTarget(WebhookError):
    """The endpoint URL resolves to an address webhooks may not reach (SSRF guard)."""
