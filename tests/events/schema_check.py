"""A JSON Schema validator for the subset of draft 2020-12 that events.schema emits.

The project does not depend on the ``jsonschema`` package, so the export tests validate with
this. It refuses to silently pass a keyword it does not implement: :func:`keywords` lists
every keyword a schema uses, and the tests assert they are all in :data:`SUPPORTED`.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

# Keywords that only annotate: they never make an instance invalid.
ANNOTATIONS = {"$schema", "$id", "$defs", "title", "description", "default"}
CHECKED = {
    "$ref", "type", "const", "enum", "anyOf", "allOf", "if", "then", "properties", "required",
    "additionalProperties", "items", "contains", "minItems", "uniqueItems", "minLength",
    "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "maxItems", "format", "pattern",
}  # fmt: skip
SUPPORTED = ANNOTATIONS | CHECKED

_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "null": type(None),
    "boolean": bool,
}


def keywords(schema: Any) -> set[str]:
    """Every keyword used anywhere in ``schema``, ignoring x- extensions and property names."""
    found: set[str] = set()
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key.startswith("x-"):
                continue
            found.add(key)
            if key in ("properties", "$defs"):
                for sub in value.values():
                    found |= keywords(sub)
            elif key in ("anyOf", "allOf"):
                for sub in value:
                    found |= keywords(sub)
            elif key in ("items", "contains", "if", "then", "additionalProperties"):
                found |= keywords(value)
    return found


def errors(instance: Any, schema: dict[str, Any], root: dict[str, Any] | None = None,
           path: str = "$") -> list[str]:  # fmt: skip
    """Why ``instance`` does not match ``schema``; empty when it does."""
    root = root if root is not None else schema
    problems: list[str] = []
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        problems += errors(instance, root["$defs"][name], root, path)
    if "type" in schema and not _is_type(instance, schema["type"]):
        return [*problems, f"{path}: {instance!r} is not of type {schema['type']}"]
    if "const" in schema and not _same(instance, schema["const"]):
        problems.append(f"{path}: {instance!r} is not {schema['const']!r}")
    if "enum" in schema and not any(_same(instance, v) for v in schema["enum"]):
        problems.append(f"{path}: {instance!r} is not one of {schema['enum']!r}")
    if "anyOf" in schema and all(errors(instance, s, root, path) for s in schema["anyOf"]):
        problems.append(f"{path}: matches no branch of anyOf")
    for sub in schema.get("allOf", []):
        problems += errors(instance, sub, root, path)
    if "if" in schema and not errors(instance, schema["if"], root, path) and "then" in schema:
        problems += errors(instance, schema["then"], root, path)
    if isinstance(instance, dict):
        problems += _object_errors(instance, schema, root, path)
    if isinstance(instance, list):
        problems += _array_errors(instance, schema, root, path)
    if isinstance(instance, str):
        if len(instance) < schema.get("minLength", 0):
            problems.append(f"{path}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(instance) > schema["maxLength"]:
            problems.append(f"{path}: longer than {schema['maxLength']}")
        # JSON Schema patterns are unanchored ECMA-262 regexes; Python's cover what the
        # catalog uses.
        if "pattern" in schema and re.search(schema["pattern"], instance) is None:
            problems.append(f"{path}: does not match {schema['pattern']!r}")
        problems += _format_errors(instance, schema.get("format"), path)
    if isinstance(instance, int | float) and not isinstance(instance, bool):
        if "minimum" in schema and instance < schema["minimum"]:
            problems.append(f"{path}: below {schema['minimum']}")
        if "maximum" in schema and instance > schema["maximum"]:
            problems.append(f"{path}: above {schema['maximum']}")
        if "exclusiveMinimum" in schema and instance <= schema["exclusiveMinimum"]:
            problems.append(f"{path}: not above {schema['exclusiveMinimum']}")
        if "exclusiveMaximum" in schema and instance >= schema["exclusiveMaximum"]:
            problems.append(f"{path}: not below {schema['exclusiveMaximum']}")
    return problems


def _object_errors(instance: dict[str, Any], schema: dict[str, Any], root: dict[str, Any],
                   path: str) -> list[str]:  # fmt: skip
    problems = [f"{path}: no {name!r}" for name in schema.get("required", [])
                if name not in instance]  # fmt: skip
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for name, value in instance.items():
        if name in properties:
            problems += errors(value, properties[name], root, f"{path}.{name}")
        elif extra is False:
            problems.append(f"{path}: unexpected {name!r}")
        elif isinstance(extra, dict):
            problems += errors(value, extra, root, f"{path}.{name}")
    return problems


def _array_errors(instance: list[Any], schema: dict[str, Any], root: dict[str, Any],
                  path: str) -> list[str]:  # fmt: skip
    problems = []
    if "items" in schema:
        for i, item in enumerate(instance):
            problems += errors(item, schema["items"], root, f"{path}[{i}]")
    if "contains" in schema and all(errors(i, schema["contains"], root) for i in instance):
        problems.append(f"{path}: contains nothing matching {schema['contains']!r}")
    if len(instance) < schema.get("minItems", 0):
        problems.append(f"{path}: fewer than {schema['minItems']} items")
    if "maxItems" in schema and len(instance) > schema["maxItems"]:
        problems.append(f"{path}: more than {schema['maxItems']} items")
    if schema.get("uniqueItems") and len({repr(i) for i in instance}) != len(instance):
        problems.append(f"{path}: items repeat")
    return problems


def _format_errors(value: str, fmt: str | None, path: str) -> list[str]:
    try:
        if fmt == "uuid":
            uuid.UUID(value)
        elif fmt == "date-time":
            if datetime.fromisoformat(value).tzinfo is None:
                return [f"{path}: {value!r} has no offset"]
    except ValueError:
        return [f"{path}: {value!r} is not a {fmt}"]
    return []


def _is_type(instance: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(instance, int) and not isinstance(instance, bool)
    if kind == "number":
        return isinstance(instance, int | float) and not isinstance(instance, bool)
    return isinstance(instance, _TYPES[kind])


def _same(a: Any, b: Any) -> bool:
    """JSON equality: 1 and true are different values."""
    return type(a) is type(b) and a == b
