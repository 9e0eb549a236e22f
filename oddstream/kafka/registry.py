"""Adapter from confluent-kafka's Schema Registry client to the codec's ``SchemaIds``."""

from __future__ import annotations

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError as _RegistryError

from oddstream.errors import SchemaRegistryError


class ConfluentSchemaIds:
    """Registers schemas under a subject and looks writer schemas up by id."""

    def __init__(self, url: str) -> None:
        self._client = SchemaRegistryClient({"url": url})

    def id_for(self, subject: str, schema_json: str) -> int:
        try:
            return int(self._client.register_schema(subject, Schema(schema_json, "AVRO")))
        except _RegistryError as exc:
            raise SchemaRegistryError(f"registering {subject} failed: {exc}") from exc

    def schema_for(self, schema_id: int) -> str:
        try:
            return str(self._client.get_schema(schema_id).schema_str)
        except _RegistryError as exc:
            raise SchemaRegistryError(f"schema id {schema_id} lookup failed: {exc}") from exc
