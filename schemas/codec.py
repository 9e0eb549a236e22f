"""Avro binary with a self-describing frame, so one topic can carry both framings.

* Avro single-object encoding: ``C3 01`` + 8-byte CRC-64-AVRO fingerprint (little
  endian) + body. The fingerprint is resolved against the schemas in this repo,
  including every frozen version. The default.
* Confluent framing: ``00`` + 4-byte big-endian schema id + body, written when a
  Schema Registry is configured (subject naming: ``<topic>-<record full name>``).

The decoder tells them apart by the first byte, so a consumer reads either.
Records written with an older (or newer) schema are resolved to the current
schema of the same name, per Avro's resolution rules.

Example::

    codec = Codec(load_catalog())
    data = codec.encode(Event("OddsChanged", record))
    assert codec.decode(data).record["odds"] == record["odds"]
"""

from __future__ import annotations

import io
import json
import struct
from typing import Any, Protocol

from fastavro import schemaless_reader, schemaless_writer

from oddstream.errors import UndecodableEvent, UnknownEventType
from schemas.catalog import Event, SchemaCatalog, SchemaVersion, make_version
from schemas.validation import check_avro, check_values

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"
SINGLE_OBJECT_HEADER = len(SINGLE_OBJECT_MAGIC) + 8
CONFLUENT_HEADER = 5


class SchemaIds(Protocol):
    """What the codec needs of a schema registry (the Confluent client is adapted to this)."""

    def id_for(self, subject: str, schema_json: str) -> int: ...

    def schema_for(self, schema_id: int) -> str: ...


class Codec:
    """Encodes validated events into framed Avro and decodes either framing."""

    def __init__(self, catalog: SchemaCatalog, registry: SchemaIds | None = None) -> None:
        self._catalog = catalog
        self._registry = registry
        self._ids: dict[tuple[str, str], int] = {}
        self._by_id: dict[int, SchemaVersion] = {}

    @property
    def catalog(self) -> SchemaCatalog:
        return self._catalog

    def validate(self, event: Event, now_ms: int | None = None) -> None:
        """Raise :class:`InvalidEvent` with the field and reason if the event breaks its contract."""
        check_avro(event, self._catalog.schema(event.type))
        check_values(event, now_ms)

    def check_decoded(self, event: Event, now_ms: int | None = None) -> None:
        """The domain rules for an event this codec decoded (its Avro types already hold)."""
        check_values(event, now_ms)

    def encode(
        self, event: Event, topic: str | None = None, now_ms: int | None = None, trusted: bool = False
    ) -> bytes:
        """Validate and frame. ``topic`` is needed only for the Confluent subject name.

        ``trusted`` skips the field checks (fastavro still refuses wrong types): for the
        derived events oddstream computes itself, whose contract tests cover.
        """
        schema = self._catalog.schema(event.type)
        if not trusted:
            self.validate(event, now_ms)
        out = io.BytesIO()
        if self._registry is None:
            out.write(SINGLE_OBJECT_MAGIC)
            out.write(schema.fingerprint)
        else:
            out.write(CONFLUENT_MAGIC)
            out.write(struct.pack(">I", self._confluent_id(schema, topic)))
        schemaless_writer(out, schema.parsed, event.record)
        return out.getvalue()

    def decode(self, data: bytes | None) -> Event:
        """Decode either framing into the current schema of the event's type.

        The frame must hold exactly one record: trailing bytes are refused, since a
        record that decodes with bytes to spare was not written by an Avro encoder."""
        if data is None:
            raise UndecodableEvent("null value (a tombstone), not an event")
        writer = self._writer_schema(data)
        reader = self._catalog.current.get(writer.event_type)
        if reader is None:
            raise UndecodableEvent(f"no current schema for {writer.event_type!r}")
        header = SINGLE_OBJECT_HEADER if data[:2] == SINGLE_OBJECT_MAGIC else CONFLUENT_HEADER
        same = reader.canonical == writer.canonical
        body = io.BytesIO(data)
        body.seek(header)
        try:
            record = schemaless_reader(body, writer.parsed, None if same else reader.parsed)
        except Exception as exc:  # truncated or corrupt bodies raise many different errors
            raise UndecodableEvent(
                f"{writer.event_type} body does not decode: {type(exc).__name__}: {str(exc)[:200]}"
            ) from exc
        if not isinstance(record, dict):
            raise UndecodableEvent(f"{writer.event_type} body is not a record")
        extra = len(data) - body.tell()
        if extra:
            raise UndecodableEvent(f"{extra} trailing byte(s) after the {writer.event_type} record")
        return Event(writer.event_type, record)

    def _writer_schema(self, data: bytes) -> SchemaVersion:
        if data[:2] == SINGLE_OBJECT_MAGIC:
            if len(data) < SINGLE_OBJECT_HEADER:
                raise UndecodableEvent("single-object frame shorter than its 10-byte header")
            fp = data[2:SINGLE_OBJECT_HEADER]
            found = self._catalog.by_fingerprint.get(fp)
            if found is None:
                raise UndecodableEvent(f"unknown schema fingerprint {fp.hex()}")
            return found
        if data[:1] == CONFLUENT_MAGIC:
            if len(data) < CONFLUENT_HEADER:
                raise UndecodableEvent("Confluent frame shorter than its 5-byte header")
            return self._confluent_schema(struct.unpack(">I", data[1:5])[0])
        head = data[:2].hex() or "empty"
        raise UndecodableEvent(f"not an oddstream frame (first bytes {head}); expected c301 or 00")

    def _confluent_id(self, schema: SchemaVersion, topic: str | None) -> int:
        assert self._registry is not None
        subject = f"{topic or 'oddstream'}-{schema.source['namespace']}.{schema.event_type}"
        key = (subject, schema.canonical)
        if key not in self._ids:
            self._ids[key] = self._registry.id_for(subject, json.dumps(schema.source))
            self._by_id[self._ids[key]] = schema
        return self._ids[key]

    def _confluent_schema(self, schema_id: int) -> SchemaVersion:
        if schema_id not in self._by_id:
            if self._registry is None:
                raise UndecodableEvent(
                    f"Confluent frame (schema id {schema_id}) but no Schema Registry is configured"
                )
            source: dict[str, Any] = json.loads(self._registry.schema_for(schema_id))
            version = make_version(source, 0)
            if version.event_type not in self._catalog.current:
                raise UnknownEventType(f"schema id {schema_id} is {version.event_type!r}, unknown here")
            self._by_id[schema_id] = version
        return self._by_id[schema_id]
