"""Late events: the original bytes unchanged as the value; the window missed and the origin in headers."""

from __future__ import annotations

from collections.abc import Sequence

KIND = "oddstream.late.kind"
EVENT_TIME = "oddstream.late.event_time"
WATERMARK = "oddstream.late.watermark"
WINDOW_START = "oddstream.late.window_start"
WINDOW_END = "oddstream.late.window_end"
ORIGIN_TOPIC = "oddstream.late.topic"
ORIGIN_PARTITION = "oddstream.late.partition"
ORIGIN_OFFSET = "oddstream.late.offset"


def late_headers(
    kind: str, event_ms: int, watermark: int, window: tuple[int, int], origin: tuple[str, int, int]
) -> list[tuple[str, bytes]]:
    values = (kind, event_ms, watermark, window[0], window[1], *origin)
    names = (
        KIND,
        EVENT_TIME,
        WATERMARK,
        WINDOW_START,
        WINDOW_END,
        ORIGIN_TOPIC,
        ORIGIN_PARTITION,
        ORIGIN_OFFSET,
    )
    return [(name, str(value).encode()) for name, value in zip(names, values, strict=True)]


def parse_late_headers(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    return {k: v.decode(errors="replace") for k, v in (headers or []) if k.startswith("oddstream.late.")}
