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
    window_updates: bool = False  # every current window update, not only finals
    secret: str = ""  # opened (consumers/dispatcher/signing.py); never written anywhere
    previous_secret: str = ""
    previous_until_ms: int | None = None
    rate_limit: int = 0  # deliveries per second at most (0: none)
    disabled_reason: str = ""

    def signing_secrets(self, now_ms: int) -> list[str]:
        """The secrets a delivery is signed with now: the current one, and the previous one
        while a rotation's overlap lasts."""
        if self.previous_secret and self.previous_until_ms is not None and now_ms < self.previous_until_ms:
            return [self.secret, self.previous_secret]
        return [self.secret]

    def wants(self, event_type: str, final: bool = True) -> bool:
        """Active, subscribed to the type, and for a window update that is not final,
        asked for every update."""
        if not self.active or (self.event_types and event_type not in self.event_types):
            return False
        return final or self.window_updates


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
            window_updates=bool(record.get("window_updates", False)),
            secret=record.get("secret", ""),
            previous_secret=record.get("previous_secret", ""),
            previous_until_ms=record.get("previous_until_ms"),
            rate_limit=int(record.get("rate_limit") or 0),
            disabled_reason=str(record.get("disabled_reason") or ""),
        )

    def get(self, endpoint_id: str) -> Endpoint | None:
        return self._endpoints.get(endpoint_id)

    def for_event(self, event_type: str, final: bool = True) -> list[Endpoint]:
        return [e for e in self._endpoints.values() if e.wants(event_type, final)]

    def __len__(self) -> int:
        return len(self._endpoints)
