"""Build the codec a process uses: with the Schema Registry when one is configured."""

from __future__ import annotations

from oddstream.settings import Settings
from schemas.catalog import load_catalog
from schemas.codec import Codec


def build_codec(settings: Settings) -> Codec:
    if settings.schema_registry_url:
        from oddstream.kafka.registry import ConfluentSchemaIds

        return Codec(load_catalog(), ConfluentSchemaIds(settings.schema_registry_url))
    return Codec(load_catalog())
