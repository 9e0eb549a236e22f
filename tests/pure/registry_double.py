"""An in-memory stand-in for a Schema Registry's id service, for the pure tier (no I/O).

The real registry is exercised by tests/integration/test_schema_registry.py."""

from __future__ import annotations


class InMemoryIds:
    """A stand-in for the Schema Registry's id service (this tier has no I/O)."""

    def __init__(self) -> None:
        self.schemas: dict[int, str] = {}
        self.subjects: list[str] = []

    def id_for(self, subject: str, schema_json: str) -> int:
        self.subjects.append(subject)
        for schema_id, known in self.schemas.items():
            if known == schema_json:
                return schema_id
        self.schemas[len(self.schemas) + 100] = schema_json
        return len(self.schemas) + 99

    def schema_for(self, schema_id: int) -> str | None:
        return self.schemas.get(schema_id)
