"""What the peer apps share (they run in .venv-peers, without oddstream installed).

A peer decodes oddstream's Avro single-object frames with fastavro and computes, per
market, 60 s tumbling event-time windows of open/high/low/last per (selection,
bookmaker) over OddsChanged events; it writes what it processed and the windows it closed
as JSON for the orchestrator (benchmarks/peers/run.py) to check.
"""

from __future__ import annotations

import io
import json
import sys
from datetime import datetime
from typing import Any

from fastavro import parse_schema, schemaless_reader

HEADER = 10  # 2-byte marker + 8-byte fingerprint
WINDOW_MS = 60_000
GRACE_MS = 15_000  # oddstream's window delay (5 s) + grace (10 s)


class Decoder:
    def __init__(self, schemas_path: str) -> None:
        with open(schemas_path) as f:
            entries = json.load(f)
        self.schemas = {
            bytes.fromhex(fp): (event_type, parse_schema(source, named_schemas={}))
            for fp, (event_type, source) in entries.items()
        }

    def __call__(self, value: bytes) -> dict[str, Any]:
        event_type, schema = self.schemas[value[2:HEADER]]
        record: dict[str, Any] = schemaless_reader(io.BytesIO(value[HEADER:]), schema, None)  # type: ignore[assignment]
        record["_type"] = event_type
        return record


def event_ms(record: dict[str, Any]) -> int:
    t = record["event_time"]
    return int(t.timestamp() * 1000) if isinstance(t, datetime) else int(t)


def fold(book: dict[str, list[float]], record: dict[str, Any]) -> dict[str, list[float]]:
    """open, high, low, last per 'selection|bookmaker'."""
    slot = f"{record['selection_id']}|{record['bookmaker']}"
    odds = float(record["odds"])
    ohlc = book.get(slot)
    if ohlc is None:
        book[slot] = [odds, odds, odds, odds]
    else:
        ohlc[1] = max(ohlc[1], odds)
        ohlc[2] = min(ohlc[2], odds)
        ohlc[3] = odds
    return book


def report(path: str, processed: int, seconds: float, windows: list[tuple[str, int, dict[str, Any]]]) -> None:
    with open(path, "w") as f:
        json.dump({"processed": processed, "seconds": seconds, "windows": windows}, f)


def args() -> tuple[str, str, int, str, str]:
    bootstrap, topic, expected, schemas, out = sys.argv[1:6]
    return bootstrap, topic, int(expected), schemas, out
