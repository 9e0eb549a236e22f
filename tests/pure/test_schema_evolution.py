"""Every schema change must be backward and forward compatible (Avro resolution)."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from oddstream.errors import IncompatibleSchema
from schemas.catalog import load_catalog
from schemas.compat import check_full, resolution_problems

pytestmark = pytest.mark.pure
CATALOG = load_catalog()
AVRO = Path(__file__).resolve().parents[2] / "schemas" / "avro"


@pytest.mark.parametrize("event_type", CATALOG.types())
def test_current_schema_resolves_every_released_version_both_ways(event_type: str) -> None:
    current = CATALOG.schema(event_type)
    for old in CATALOG.history[event_type]:
        check_full(current.source, old.source, f"{event_type} (current vs v{old.version})")


@pytest.mark.parametrize("event_type", CATALOG.types())
def test_current_schema_is_frozen_as_its_latest_version(event_type: str) -> None:
    """Changing an .avsc means adding history/<Type>/vN+1.avsc, so old data keeps decoding."""
    latest = CATALOG.history[event_type][-1]
    assert CATALOG.schema(event_type).canonical == latest.canonical, (
        f"{event_type}.avsc differs from history/{event_type}/v{latest.version}.avsc: "
        f"freeze the change as v{latest.version + 1}.avsc"
    )


def test_every_field_is_documented() -> None:
    def walk(schema: Any, where: str) -> list[str]:
        missing = []
        if isinstance(schema, dict):
            if schema.get("type") == "record":
                for f in schema["fields"]:
                    if not f.get("doc"):
                        missing.append(f"{where}.{f['name']}")
                    missing += walk(f["type"], f"{where}.{f['name']}")
            elif schema.get("type") == "array":
                missing += walk(schema["items"], where)
        elif isinstance(schema, list):
            for branch in schema:
                missing += walk(branch, where)
        return missing

    undocumented = [m for p in sorted(AVRO.glob("*.avsc")) for m in walk(json.loads(p.read_text()), p.stem)]
    assert undocumented == []


def base() -> dict[str, Any]:
    return copy.deepcopy(CATALOG.schema("OddsChanged").source)


def test_adding_a_field_with_a_default_is_compatible_and_resolves_for_real() -> None:
    new = base()
    new["fields"].append({"name": "in_play", "type": "boolean", "default": False, "doc": "x"})
    check_full(new, base(), "OddsChanged + in_play")
    record = {
        "event_id": "7d4b5f0e-2c9a-4c3e-9a0f-6f1d2e3c4b5a", "event_time": 1_700_000_000_000,
        "source": "s", "bookmaker": "b", "market_id": "m", "selection_id": "s", "odds": 2.0,
    }  # fmt: skip
    old_parsed, new_parsed = (
        parse_schema(base(), named_schemas={}),
        parse_schema(new, named_schemas={}),
    )
    buf = io.BytesIO()
    schemaless_writer(buf, old_parsed, record)
    buf.seek(0)
    upgraded: Any = schemaless_reader(buf, old_parsed, new_parsed)
    assert upgraded["in_play"] is False  # backward
    buf = io.BytesIO()
    schemaless_writer(buf, new_parsed, {**record, "in_play": True})
    buf.seek(0)
    downgraded: Any = schemaless_reader(buf, new_parsed, old_parsed)
    assert "in_play" not in downgraded  # forward


@pytest.mark.parametrize(
    "change, words",
    [
        (
            lambda s: s["fields"].append({"name": "x", "type": "string"}),
            "new field without a default",
        ),
        (
            lambda s: s["fields"].__setitem__(6, {**s["fields"][6], "type": "string"}),
            "cannot be read as",
        ),
        (
            lambda s: s["fields"].pop(4),
            "new field without a default",
        ),  # forward: old reader needs market_id
        (lambda s: s.__setitem__("name", "OddsMoved"), "renamed"),
    ],
)
def test_breaking_changes_are_caught(change: Any, words: str) -> None:
    new = base()
    change(new)
    with pytest.raises(IncompatibleSchema, match=words):
        check_full(new, base(), "OddsChanged (changed)")


def test_enum_symbol_removal_needs_a_reader_default() -> None:
    old = copy.deepcopy(CATALOG.schema("MarketStatusChanged").source)
    new = copy.deepcopy(old)
    new["fields"][4]["type"]["symbols"].append("ABANDONED")
    # an old reader meets ABANDONED and MarketStatus has no default: forward incompatible
    assert resolution_problems(reader=old, writer=new)
    assert not resolution_problems(reader=new, writer=old)
    channel_old = copy.deepcopy(CATALOG.schema("BetPlaced").source)
    channel_new = copy.deepcopy(channel_old)
    channel_new["fields"][-1]["type"]["symbols"].insert(0, "KIOSK")
    check_full(channel_new, channel_old, "BetChannel + KIOSK (reader default UNKNOWN)")


def test_int_to_long_promotion_is_backward_only() -> None:
    old = {"type": "record", "name": "R", "fields": [{"name": "n", "type": "int"}]}
    new = {"type": "record", "name": "R", "fields": [{"name": "n", "type": "long"}]}
    assert not resolution_problems(reader=new, writer=old)
    assert resolution_problems(reader=old, writer=new)
