"""JSON bodies into Avro records, by the event's schema. Pure.

JSON has no decimals, UUIDs or timestamps, so a field is converted by what its Avro type
says: a ``decimal`` from a string (``"12.50"``, exact) or a number, at most the schema's
scale of decimal places; ``timestamp-millis`` from an integer (milliseconds since the
epoch); ``uuid`` from its string. Anything else must already be the JSON type Avro's JSON
encoding uses. A value that cannot be converted raises :class:`InvalidEvent` naming the
field and the reason; fields the schema does not have are left for the schema check.

Example::

    record = record_from_json("BetPlaced", schema.source, {"stake": "10.50", ...})
    assert record["stake"] == Decimal("10.50")
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from oddstream.errors import InvalidEvent

PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


class _Bad(Exception):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(reason)
        self.path, self.reason = path, reason


def record_from_json(event_type: str, schema: dict[str, Any], body: Any) -> dict[str, Any]:
    """The record for ``body`` (a JSON object) under the record ``schema``."""
    if not isinstance(body, dict):
        raise InvalidEvent(event_type, "record", f"must be a JSON object, got {_kind(body)}")
    try:
        return _record(schema, body, "", {})
    except _Bad as bad:
        raise InvalidEvent(event_type, bad.path, bad.reason) from None


def _record(
    schema: dict[str, Any], value: dict[str, Any], path: str, names: dict[str, Any]
) -> dict[str, Any]:
    names[schema["name"]] = schema
    out = dict(value)
    for field in schema["fields"]:
        name = field["name"]
        if name in value:
            out[name] = _value(field["type"], value[name], f"{path}{name}", names)
    return out


def _value(avro: Any, value: Any, path: str, names: dict[str, Any]) -> Any:
    if isinstance(avro, list):  # a union: null, or the first branch that takes the value
        if value is None and "null" in avro:
            return None
        reasons = []
        for branch in (b for b in avro if b != "null"):
            try:
                return _value(branch, value, path, names)
            except _Bad as bad:
                reasons.append(bad.reason)
        raise _Bad(path, " or ".join(reasons) or "must be null")
    if isinstance(avro, str) and avro not in PRIMITIVES:
        if avro not in names:
            raise _Bad(path, f"unknown type {avro!r} in the schema")
        avro = names[avro]
    if isinstance(avro, dict):
        return _complex(avro, value, path, names)
    return _primitive(avro, value, path)


def _complex(avro: dict[str, Any], value: Any, path: str, names: dict[str, Any]) -> Any:
    logical, kind = avro.get("logicalType"), avro["type"]
    if logical == "decimal":
        return _decimal(value, int(avro.get("scale", 0)), int(avro["precision"]), path)
    if logical == "timestamp-millis":
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Bad(path, f"must be milliseconds since the epoch (an integer), got {_kind(value)}")
        return value
    if kind == "record":
        if not isinstance(value, dict):
            raise _Bad(path, f"must be an object, got {_kind(value)}")
        return _record(avro, value, f"{path}.", names)
    if kind == "enum":
        names[avro["name"]] = avro
        if value not in avro["symbols"]:
            raise _Bad(path, f"must be one of {', '.join(avro['symbols'])}, got {value!r}"[:300])
        return value
    if kind == "array":
        if not isinstance(value, list):
            raise _Bad(path, f"must be an array, got {_kind(value)}")
        return [_value(avro["items"], v, f"{path}[{i}]", names) for i, v in enumerate(value)]
    if kind == "map":
        if not isinstance(value, dict):
            raise _Bad(path, f"must be an object, got {_kind(value)}")
        return {k: _value(avro["values"], v, f"{path}.{k}", names) for k, v in value.items()}
    return _value(kind, value, path, names)  # e.g. {"type": "string", "logicalType": "uuid"}


def _primitive(avro: str, value: Any, path: str) -> Any:
    ok = {
        "null": value is None,
        "boolean": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool) and -(2**31) <= value < 2**31,
        "long": isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63,
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "double": isinstance(value, int | float) and not isinstance(value, bool),
        "string": isinstance(value, str),
        "bytes": False,
    }[avro]
    if not ok:
        raise _Bad(path, f"must be {'a ' + avro if avro != 'null' else 'null'}, got {_kind(value)}")
    return float(value) if avro in ("float", "double") else value


def _decimal(value: Any, scale: int, precision: int, path: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _Bad(
            path, f'must be a decimal amount (a string such as "12.50", or a number), got {_kind(value)}'
        )
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise _Bad(path, f"must be a decimal amount, got {str(value)[:40]!r}") from None
    if not amount.is_finite():
        raise _Bad(path, f"must be a finite amount, got {value!r}")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > scale:
        raise _Bad(path, f"has more than {scale} decimal places: {value!r}")
    if amount and amount.adjusted() + 1 + scale > precision:
        raise _Bad(path, f"has more than {precision} digits with {scale} decimal places: {str(value)[:40]!r}")
    return amount.quantize(Decimal(1).scaleb(-scale))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "an object"}.get(type(value), type(value).__name__)  # fmt: skip
