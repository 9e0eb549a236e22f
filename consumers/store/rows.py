"""Map events to table rows. Pure."""

from __future__ import annotations

from typing import Any

from schemas.catalog import Event

WINDOW_COLUMNS = (
    "market_id", "selection_id", "window_start", "window_end", "version", "open", "high", "low",
    "last", "changes", "implied_probability", "overround", "event_id", "event_time",
    "kafka_partition", "kafka_offset", "final",
)  # fmt: skip

DEAD_LETTER_COLUMNS = (
    "origin_topic", "origin_partition", "origin_offset", "stage", "reason", "original", "rejected_at",
)  # fmt: skip


def window_rows(event: Event, partition: int, offset: int) -> list[tuple[Any, ...]]:
    """One row per selection of an OddsWindowUpdated."""
    r = event.record
    return [
        (
            r["market_id"],
            s["selection_id"],
            r["window_start"],
            r["window_end"],
            r["version"],
            s["open"],
            s["high"],
            s["low"],
            s["last"],
            s["changes"],
            s["implied_probability"],
            r["overround"],
            r["event_id"],
            r["event_time"],
            partition,
            offset,
            int(r["final"]),
        )
        for s in r["selections"]
    ]
