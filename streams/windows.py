"""Event-time window assignment. Pure.

Times are UTC milliseconds. A tumbling window of ``size_ms`` holds the events
with ``start <= t < start + size_ms`` where ``start`` is a multiple of the size.

Example::

    >>> TumblingWindow(60_000).start_of(125_000)
    120000
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TumblingWindow:
    """Fixed, non-overlapping windows aligned to the epoch."""

    size_ms: int

    def __post_init__(self) -> None:
        if self.size_ms <= 0:
            raise ValueError(f"window size must be positive, got {self.size_ms}")

    def start_of(self, event_ms: int) -> int:
        return event_ms - (event_ms % self.size_ms)

    def end_of(self, event_ms: int) -> int:
        return self.start_of(event_ms) + self.size_ms
