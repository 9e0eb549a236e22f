"""Avro binary with a self-describing frame, so one topic can carry both framings.

* Avro single-object encoding: ``C3 01`` + 8-byte CRC-64-AVRO fingerprint (little
  endian) + body. The fingerprint is resolved against the schemas in this repo,
  including every frozen version. The default.
* Confluent framing: ``00`` + 4-byte big-endian schema id + body, written when a
  Schema Registry is configured. Subjects follow Confluent's default topic name
  strategy, ``<topic>-value``; the subject's schema is the event's record when its
  topic carries one event type, and a union of the topic's record types (in
  :data:`~schemas.topics.TOPIC_OF_EVENT` order) when it carries several, so the body
  then starts with the union branch index, as any Avro writer of that union writes it.

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
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from fastavro import schemaless_reader, schemaless_writer

from oddstream.errors import SchemaError, UndecodableEvent
from schemas.catalog import Event, SchemaCatalog, SchemaVersion, make_version
from schemas.topics import TOPIC_OF_EVENT
from schemas.validation import check_avro, check_values

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"
SINGLE_OBJECT_HEADER = len(SINGLE_OBJECT_MAGIC) + 8
CONFLUENT_HEADER = 5


class SchemaIds(Protocol):
    """What the codec needs of a schema registry (the Confluent client is adapted to this).

    ``schema_for`` returns None when the registry has no such id, and raises
    :class:`~oddstream.errors.RegistryUnavailable` when it cannot say."""

    def id_for(self, subject: str, schema_json: str) -> int: ...

    def schema_for(self, schema_id: int) -> str | None: ...


@dataclass(frozen=True)
class WriterSchema:
    """What one registry id stands for: a record, or a union of records (``union``)."""

    schema_id: int
    branches: tuple[SchemaVersion | str, ...]  # a branch that is no oddstream event: why
    union: bool


def subject_of(topic: str) -> str:
    """Confluent's default (topic name strategy) subject for a topic's values."""
    return f"{topic}-value"


def types_on_topic_of(event_type: str) -> tuple[str, ...]:
    """Every event type that shares ``event_type``'s topic, in a fixed order (append only)."""
    suffix = TOPIC_OF_EVENT[event_type]
    return tuple(t for t, s in TOPIC_OF_EVENT.items() if s == suffix)


class Codec:
    """Encodes validated events into framed Avro and decodes either framing."""

    def __init__(self, catalog: SchemaCatalog, registry: SchemaIds | None = None) -> None:
        self._catalog = catalog
        self._registry = registry
        self._ids: dict[tuple[str, str], tuple[int, int]] = {}  # (topic, type) -> (id, branch)
        self._by_id: dict[int, WriterSchema] = {}
        self._missing: set[int] = set()  # ids the registry said it does not have
        self._registering = threading.Lock()  # one registration at a time per process

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
            if topic is None:
                raise ValueError("the topic is needed for the Schema Registry subject (<topic>-value)")
            schema_id, branch = self.confluent_id(event.type, topic)
            out.write(CONFLUENT_MAGIC)
            out.write(struct.pack(">I", schema_id))
            if branch >= 0:
                out.write(_zigzag(branch))
        schemaless_writer(out, schema.parsed, event.record)
        return out.getvalue()

    def decode(self, data: bytes | None) -> Event:
        """Decode either framing into the current schema of the event's type.

        The frame must hold exactly one record: trailing bytes are refused, since a
        record that decodes with bytes to spare was not written by an Avro encoder."""
        if data is None:
            raise UndecodableEvent("null value (a tombstone), not an event")
        writer, header = self._writer_schema(data)
        reader = self._catalog.current.get(writer.event_type)
        if reader is None:
            raise UndecodableEvent(f"no current schema for {writer.event_type!r}")
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

    def _writer_schema(self, data: bytes) -> tuple[SchemaVersion, int]:
        """The writer's record schema and where its body starts."""
        if data[:2] == SINGLE_OBJECT_MAGIC:
            if len(data) < SINGLE_OBJECT_HEADER:
                raise UndecodableEvent("single-object frame shorter than its 10-byte header")
            fp = data[2:SINGLE_OBJECT_HEADER]
            found = self._catalog.by_fingerprint.get(fp)
            if found is None:
                raise UndecodableEvent(f"unknown schema fingerprint {fp.hex()}")
            return found, SINGLE_OBJECT_HEADER
        if data[:1] == CONFLUENT_MAGIC:
            if len(data) < CONFLUENT_HEADER:
                raise UndecodableEvent("Confluent frame shorter than its 5-byte header")
            writer = self.writer_schema(struct.unpack(">I", data[1:5])[0])
            if not writer.union:
                branch, start = 0, CONFLUENT_HEADER
            else:
                branch, start = _read_zigzag(data, CONFLUENT_HEADER)
                if not 0 <= branch < len(writer.branches):
                    raise UndecodableEvent(
                        f"union branch {branch} of schema id {writer.schema_id}, "
                        f"which has {len(writer.branches)} branches"
                    )
            found_branch = writer.branches[branch]
            if isinstance(found_branch, str):
                raise UndecodableEvent(f"schema id {writer.schema_id}: {found_branch}")
            return found_branch, start
        head = data[:2].hex() or "empty"
        raise UndecodableEvent(f"not an oddstream frame (first bytes {head}); expected c301 or 00")

    def confluent_ids_to_learn(self, values: Any) -> set[int]:
        """The schema ids in Confluent frames among ``values`` that this codec has not looked
        up yet: what an async consumer resolves (:meth:`learn`, off the event loop) before
        it decodes, so that decoding never waits on the network."""
        if self._registry is None:
            return set()
        ids = set()
        for value in values:
            if value and value[:1] == CONFLUENT_MAGIC and len(value) >= CONFLUENT_HEADER:
                schema_id = struct.unpack(">I", value[1:5])[0]
                if schema_id not in self._by_id and schema_id not in self._missing:
                    ids.add(schema_id)
        return ids

    def learn(self, schema_id: int) -> None:
        """Look one id up (blocking I/O). Remembers an id the registry does not have, so
        its records are refused without asking again; raises
        :class:`~oddstream.errors.RegistryUnavailable` when the registry cannot say."""
        if schema_id in self._by_id or schema_id in self._missing or self._registry is None:
            return
        source_json = self._registry.schema_for(schema_id)
        if source_json is None:
            self._missing.add(schema_id)
            return
        self._by_id[schema_id] = self._parse_writer(schema_id, source_json)

    def _parse_writer(self, schema_id: int, source_json: str) -> WriterSchema:
        try:
            source: Any = json.loads(source_json)
        except ValueError:
            return WriterSchema(schema_id, ("its schema is not JSON",), False)
        union = isinstance(source, list)
        branches: list[SchemaVersion | str] = []
        for i, branch in enumerate(source if union else [source]):
            where = f"union branch {i}" if union else "the schema"
            if not isinstance(branch, dict) or branch.get("type") != "record":
                branches.append(f"{where} is not a record (an oddstream event is one)")
                continue
            try:
                version = make_version(branch, 0)
            except SchemaError as exc:
                branches.append(f"{where} does not parse on its own: {exc}")
                continue
            if version.event_type not in self._catalog.current:
                branches.append(f"{where} is {version.event_type!r}, not an event known here")
                continue
            branches.append(version)
        return WriterSchema(schema_id, tuple(branches), union)

    def subject_schema(self, event_type: str) -> tuple[str, int]:
        """The schema JSON of the subject ``event_type``'s topic uses, and the event's
        branch in it (-1: the subject's schema is the record itself, no union)."""
        types = types_on_topic_of(event_type)
        sources = [self._catalog.schema(t).source for t in types]
        if len(types) == 1:
            return json.dumps(sources[0]), -1
        return json.dumps(sources), types.index(event_type)

    @property
    def uses_registry(self) -> bool:
        return self._registry is not None

    def confluent_id(self, event_type: str, topic: str) -> tuple[int, int]:
        """The registry id ``event_type`` is written with on ``topic``, and its union branch
        (-1: none); registers the subject's schema on first use (blocking I/O)."""
        key = (topic, event_type)
        found = self._ids.get(key)
        if found is None:
            assert self._registry is not None
            with self._registering:  # threads of one process: the first registers, the rest read
                found = self._ids.get(key)
                if found is None:
                    schema_json, branch = self.subject_schema(event_type)
                    schema_id = self._registry.id_for(subject_of(topic), schema_json)
                    self._by_id.setdefault(schema_id, self._parse_writer(schema_id, schema_json))
                    found = self._ids[key] = (schema_id, branch)
        return found

    def writer_schema(self, schema_id: int) -> WriterSchema:
        """What a Confluent schema id stands for (looked up once, then cached)."""
        if schema_id not in self._by_id:
            if self._registry is None:
                raise UndecodableEvent(
                    f"Confluent frame (schema id {schema_id}) but no Schema Registry is configured"
                )
            self.learn(schema_id)
        if schema_id in self._missing:
            raise UndecodableEvent(f"schema id {schema_id} is not in the Schema Registry")
        return self._by_id[schema_id]


def _zigzag(n: int) -> bytes:
    """Avro's long encoding (zig-zag varint), for a union branch index."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z & ~0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _read_zigzag(data: bytes, at: int) -> tuple[int, int]:
    """An Avro long at ``data[at:]`` and the position after it."""
    shift = z = 0
    for i in range(at, min(len(data), at + 10)):
        byte = data[i]
        z |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (z >> 1) ^ -(z & 1), i + 1
        shift += 7
    raise UndecodableEvent("Confluent frame ends inside its union branch index")
