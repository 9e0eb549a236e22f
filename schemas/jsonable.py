"""Decoded Avro records as JSON-safe values, for WebSocket and webhook payloads. Pure.

Timestamps become UTC milliseconds, decimals strings (no float rounding of
money), UUIDs strings.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from schemas.validation import as_millis


def jsonable(value: Any) -> Any:
    """Return ``value`` with datetimes, decimals and UUIDs made JSON-safe, recursively."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return as_millis(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value
