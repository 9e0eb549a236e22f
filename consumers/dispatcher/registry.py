"""The endpoint registry, rebuilt from the compacted WebhookEndpoint topic. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Endpoint:
    endpoint_id: str
    url: str
    event_types: frozenset[str]
    active: bool

    def wants(self, event_type: str) -> bool:
        return self.active and (not self.event_types or event_type in self.event_types)


class EndpointRegistry:
    def __init__(self) -> None:
        self._endpoints: dict[str, Endpoint] = {}

    def apply(self, endpoint_id: str, record: dict[str, Any] | None) -> None:
        """A record registers or replaces the endpoint; ``None`` (a tombstone) removes it."""
        if record is None:
            self._endpoints.pop(endpoint_id, None)
            return
        self._endpoints[endpoint_id] = Endpoint(
            endpoint_id=record["endpoint_id"],
            url=record["url"],
            event_types=frozenset(record["event_types"]),
            active=record["active"],
        )

    def for_event(self, event_type: str) -> list[Endpoint]:
        return [e for e in self._endpoints.values() if e.wants(event_type)]

    def __len__(self) -> int:
        return len(self._endpoints)
