"""Adapter from confluent-kafka's Schema Registry client to the codec's ``SchemaIds``.

Speaks the Confluent API (Confluent's registry, or Apicurio's ``/apis/ccompat/v7``).
Before its first registration under a subject it sets the subject's compatibility
to :data:`COMPATIBILITY`, so the registry itself refuses a schema change that would
break readers of older records; the refusal names the subject and the registry's
reason (Apicurio and Confluent both name the field).

Errors: :class:`RegistryUnavailable` when the registry cannot be reached or answers
5xx (nothing decided; try again), :class:`SchemaRegistryError` when it refused.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable, Iterable

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError as _RegistryError

from oddstream.errors import RegistryUnavailable, SchemaRegistryError
from oddstream.metrics import REGISTRY_WAITS
from schemas.codec import Codec
from schemas.compat import resolution_problems
from schemas.topics import Topics

log = logging.getLogger(__name__)

COMPATIBILITY = "BACKWARD_TRANSITIVE"
NOT_FOUND_CODES = {40401, 40402, 40403}  # subject, version, schema not found
REGISTER_ATTEMPTS = 3


class ConfluentSchemaIds:
    """Registers schemas under a subject and looks writer schemas up by id."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url
        self._client = SchemaRegistryClient(
            {"url": url, "timeout": timeout_s, "max.retries": 1, "retries.wait.ms": 200}
        )
        self._configured: set[str] = set()

    def id_for(self, subject: str, schema_json: str) -> int:
        for attempt in range(1, REGISTER_ATTEMPTS + 1):
            try:
                return self._register(subject, schema_json)
            except SchemaRegistryError as exc:
                # 409 is also what Apicurio answers when another client created the subject
                # a moment before (two first registrations racing): ask again; a schema that is
                # really incompatible stays refused
                if not isinstance(exc.__cause__, _RegistryError) or exc.__cause__.http_status_code != 409:
                    raise
                if attempt == REGISTER_ATTEMPTS:
                    raise
                time.sleep(0.2 * attempt)
        raise AssertionError("unreachable")

    def _register(self, subject: str, schema_json: str) -> int:
        try:
            if subject not in self._configured:
                self._client.set_compatibility(subject, COMPATIBILITY)
                self._configured.add(subject)
            return int(self._client.register_schema(subject, Schema(schema_json, "AVRO")))
        except _RegistryError as exc:
            if exc.http_status_code == 409:
                raise SchemaRegistryError(
                    f"the Schema Registry refused the schema for subject {subject!r} as incompatible "
                    f"with its earlier versions ({COMPATIBILITY}): {self._why(subject, schema_json)}"
                    f"; the registry said: {exc.error_message}"
                ) from exc
            raise self._failure(f"registering under subject {subject!r}", exc) from exc
        except Exception as exc:  # the HTTP client's connection errors
            raise self._unreachable(f"registering under subject {subject!r}", exc) from exc

    def schema_for(self, schema_id: int) -> str | None:
        try:
            return str(self._client.get_schema(schema_id).schema_str)
        except _RegistryError as exc:
            if exc.http_status_code == 404 or exc.error_code in NOT_FOUND_CODES:
                return None
            raise self._failure(f"looking up schema id {schema_id}", exc) from exc
        except Exception as exc:
            raise self._unreachable(f"looking up schema id {schema_id}", exc) from exc

    def _why(self, subject: str, schema_json: str) -> str:
        """The fields that break resolution, by oddstream's own check against every version
        registered under ``subject`` (the registry's text may only name a union branch)."""
        try:
            new = json.loads(schema_json)
            problems: list[str] = []
            for version in self._client.get_versions(subject):
                old = json.loads(self._client.get_version(subject, version).schema.schema_str or "null")
                problems += [f"v{version}: {p}" for p in resolution_problems(reader=new, writer=old)]
            return "; ".join(problems) or "no field-level reason found"
        except Exception as exc:  # the explanation is a courtesy: never hide the refusal
            return f"(could not compare with the registered versions: {exc})"

    def _failure(self, doing: str, exc: _RegistryError) -> SchemaRegistryError:
        text = f"{doing} at {self.url}: HTTP {exc.http_status_code}: {exc.error_message}"
        if exc.http_status_code < 0 or exc.http_status_code >= 500:
            return RegistryUnavailable(f"the Schema Registry failed {text}")
        return SchemaRegistryError(f"the Schema Registry refused {text}")

    def _unreachable(self, doing: str, exc: Exception) -> RegistryUnavailable:
        return RegistryUnavailable(
            f"the Schema Registry at {self.url} is unavailable ({doing}): {type(exc).__name__}: {exc}"
        )


async def register_subjects(codec: Codec, topics: Topics, event_types: Iterable[str], where: str) -> None:
    """Register (off the event loop) the subjects a role will write ``event_types`` under,
    before it writes any: waits while the registry is unavailable, raises if it refuses.
    No-op without a registry."""
    if not codec.uses_registry:
        return
    for event_type in event_types:
        call = functools.partial(codec.confluent_id, event_type, topics.for_event(event_type))
        await _when_available(call, where, f"to register {event_type}")


async def learn_schema_ids(codec: Codec, values: Iterable[bytes | None], where: str) -> None:
    """Look up, off the event loop, the registry ids among ``values`` the codec has not seen.

    While the registry is unavailable this waits (backing off to 10 s, logging each
    wait) instead of deciding anything about the records: a record is never
    dead-lettered or mis-decoded because the registry was down. An id the registry
    answers it does not have is remembered, and its records are then refused with
    "schema id N is not in the Schema Registry" (a dead letter, with the bytes)."""
    for schema_id in sorted(codec.confluent_ids_to_learn(values)):
        await _when_available(functools.partial(codec.learn, schema_id), where, f"for schema id {schema_id}")


async def _when_available(call: Callable[[], object], where: str, what: str) -> None:
    """Run the blocking registry ``call`` off the event loop until the registry answers,
    backing off from 0.5 s to 10 s and logging each wait."""
    delay = 0.5
    while True:
        try:
            await asyncio.to_thread(call)
            return
        except RegistryUnavailable as exc:
            REGISTRY_WAITS.inc()
            log.warning("%s: waiting %.1f s %s: %s", where, delay, what, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
