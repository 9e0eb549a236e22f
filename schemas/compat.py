"""Avro schema resolution rules, as a check: can a reader schema read a writer's data?

Backward compatible: the new schema reads data written with the old one.
Forward compatible: the old schema reads data written with the new one.
Every change to an event schema must be both (``check_full``).

Example::

    problems = resolution_problems(reader=new, writer=old)
    assert problems == []
"""

from __future__ import annotations

from typing import Any

from oddstream.errors import IncompatibleSchema

PROMOTIONS: dict[str, set[str]] = {
    "int": {"int", "long", "float", "double"},
    "long": {"long", "float", "double"},
    "float": {"float", "double"},
    "string": {"string", "bytes"},
    "bytes": {"bytes", "string"},
}
PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
Schema = Any
Names = dict[str, Any]


def resolution_problems(reader: Schema, writer: Schema) -> list[str]:
    """Every reason the reader cannot resolve the writer's data; empty when it can."""
    problems: list[str] = []
    _check(reader, writer, {}, {}, "", problems)
    return problems


def check_full(new: Schema, old: Schema, label: str) -> None:
    """Raise :class:`IncompatibleSchema` unless new and old resolve each other both ways."""
    backward = resolution_problems(reader=new, writer=old)
    forward = resolution_problems(reader=old, writer=new)
    if backward or forward:
        lines = [f"backward: {p}" for p in backward] + [f"forward: {p}" for p in forward]
        raise IncompatibleSchema(f"{label} is not fully compatible:\n  " + "\n  ".join(lines))


def _deref(schema: Schema, names: Names, namespace: str = "") -> Schema:
    if isinstance(schema, str) and schema not in PRIMITIVES:
        full = schema if "." in schema or not namespace else f"{namespace}.{schema}"
        return names.get(full, names.get(schema, schema))
    return schema


def _register(schema: Schema, names: Names) -> None:
    if isinstance(schema, dict) and schema.get("type") in ("record", "enum", "fixed"):
        name = schema["name"]
        ns = schema.get("namespace", "")
        full = name if "." in name or not ns else f"{ns}.{name}"
        names[full] = schema
        names[name.rsplit(".", 1)[-1]] = schema


def _kind(schema: Schema) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        kind = schema["type"]
        return kind if isinstance(kind, str) and kind not in PRIMITIVES else _kind(kind)
    return str(schema)


def _matches(reader: Schema, writer: Schema, rn: Names, wn: Names) -> bool:
    trial: list[str] = []
    _check(reader, writer, dict(rn), dict(wn), "", trial)
    return not trial


def _check(reader: Schema, writer: Schema, rn: Names, wn: Names, path: str, out: list[str]) -> None:
    reader, writer = _deref(reader, rn), _deref(writer, wn)
    _register(reader, rn)
    _register(writer, wn)
    rk, wk = _kind(reader), _kind(writer)
    here = path or "<root>"
    if wk == "union":
        for branch in writer:
            if rk == "union":
                if not any(_matches(r, branch, rn, wn) for r in reader):
                    _explain_branch(reader, branch, rn, wn, path, out)
            else:
                _check(reader, branch, rn, wn, path, out)
        return
    if rk == "union":
        if not any(_matches(r, writer, rn, wn) for r in reader):
            out.append(f"{here}: no reader branch accepts writer type {wk}")
        return
    if wk in PRIMITIVES or rk in PRIMITIVES:
        if rk not in PROMOTIONS.get(wk, {wk}):
            out.append(f"{here}: writer {wk} cannot be read as {rk}")
        return
    if rk != wk:
        out.append(f"{here}: writer {wk} cannot be read as {rk}")
        return
    if rk == "record":
        _check_record(reader, writer, rn, wn, path, out)
    elif rk == "enum":
        if reader["name"].rsplit(".", 1)[-1] != writer["name"].rsplit(".", 1)[-1]:
            out.append(f"{here}: enum renamed {writer['name']} -> {reader['name']}")
        unknown = [s for s in writer["symbols"] if s not in reader["symbols"]]
        if unknown and "default" not in reader:
            out.append(f"{here}: symbols {unknown} unknown to the reader, which has no default")
    elif rk == "array":
        _check(reader["items"], writer["items"], rn, wn, f"{path}[]", out)
    elif rk == "map":
        _check(reader["values"], writer["values"], rn, wn, f"{path}{{}}", out)
    elif rk == "fixed" and reader["size"] != writer["size"]:
        out.append(f"{here}: fixed size {writer['size']} read as {reader['size']}")


def _explain_branch(
    reader: list[Schema], branch: Schema, rn: Names, wn: Names, path: str, out: list[str]
) -> None:
    """Why no reader branch reads a writer branch: the problems of the reader branch of the
    same name (a changed record, say which field), or that there is none."""
    written = _deref(branch, wn)
    name = _short_name(written)
    if name is not None:
        for candidate in reader:
            if _short_name(_deref(candidate, rn)) == name:
                _check(candidate, branch, rn, wn, f"{path}.{name}" if path else name, out)
                return
    out.append(f"{path or '<root>'}: writer branch {name or _kind(written)} has no reader branch")


def _short_name(schema: Schema) -> str | None:
    if isinstance(schema, dict) and schema.get("type") in ("record", "enum", "fixed"):
        return str(schema["name"]).rsplit(".", 1)[-1]
    return None


def _check_record(reader: Schema, writer: Schema, rn: Names, wn: Names, path: str, out: list[str]) -> None:
    if reader["name"].rsplit(".", 1)[-1] != writer["name"].rsplit(".", 1)[-1]:
        out.append(f"{path or '<root>'}: record renamed {writer['name']} -> {reader['name']}")
        return
    written = {f["name"]: f for f in writer["fields"]}
    for alias_owner in writer["fields"]:
        for alias in alias_owner.get("aliases", []):
            written.setdefault(alias, alias_owner)
    for field in reader["fields"]:
        name = field["name"]
        source = written.get(name) or next(
            (written[a] for a in field.get("aliases", []) if a in written), None
        )
        where = f"{path}.{name}" if path else name
        if source is None:
            if "default" not in field:
                out.append(f"{where}: new field without a default (old data has no value)")
            continue
        _check(field["type"], source["type"], rn, wn, where, out)
