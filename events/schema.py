"""The event catalog as JSON Schema, one file per (type, schema_version), and as markdown.

A schema describes a record value exactly as the codec writes it to the log: the envelope,
the payload of that version, and the encryption seam. A sensitive field therefore holds
either its declared value (no key configured) or the ciphertext of its canonical JSON, and
when it is named in ``encrypted_fields`` it must be ciphertext. Old versions keep their own
schema because stored records are never rewritten, only upcast on read.

docs/events.md is rendered from these same dicts, so the page cannot say something the
schemas do not; a test compares the committed page with :func:`render_markdown`.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from pydantic.json_schema import GenerateJsonSchema, NoDefault
from pydantic_core import core_schema

from events._catalog import Catalog, Upcaster, catalog
from events._codec import ENCRYPTED_KEY, canonical_json
from events._envelope import SENSITIVE_KEY, Event, EventPayload
from events._errors import CatalogError

DIALECT = "https://json-schema.org/draft/2020-12/schema"
ENCRYPTED_DEF = "EncryptedField"

ENVELOPE_FIELDS: dict[str, str] = {
    "id": "Unique id of the event; consumers deduplicate on it. Derived events get "
    "uuid5(causing event id, step name), so re-processing emits the same ids.",
    "type": "The event type; selects the payload model.",
    "schema_version": "Version of the payload's shape; older versions are upcast on read.",
    "task_id": "The task the event belongs to, and the Kafka key: one task's events share a "
    "partition and are totally ordered. Null for events outside any task (keyed by tenant).",
    "tenant_id": "The tenant that owns the event; every read is scoped by it.",
    "actor": "Who caused the event: a user, an agent or the system.",
    "occurred_at": "When it happened, in UTC.",
    "correlation_id": "Id of the event that started the chain (usually the task.submitted).",
    "causation_id": "Id of the event this one was derived from.",
    "payload": "The typed payload of this type and version.",
    ENCRYPTED_KEY: "Payload fields whose value is ciphertext; absent when none is encrypted.",
}
"""What each envelope field means. Every field of Event must be here: export fails otherwise."""


# -- schemas -----------------------------------------------------------------------------
class _FactoryDefaults(GenerateJsonSchema):
    """pydantic leaves ``default_factory`` defaults out of a schema; readers need them."""

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            return factory()  # type: ignore[call-arg]
        return schema.get("default", NoDefault)


def schema_filename(model: type[EventPayload]) -> str:
    """``task.submitted.v1.json`` for task.submitted version 1."""
    return f"{model.event_type}.v{model.schema_version}.json"


def envelope_properties() -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    """The envelope's property schemas (with descriptions), its required names, and its defs.

    ``encrypted_fields`` is not an Event field (the codec adds it), so it is not included.
    """
    schema = Event.model_json_schema(schema_generator=_FactoryDefaults)
    defs = dict(schema.get("$defs", {}))
    # Each event type's own payload model replaces the base class.
    defs.pop(EventPayload.__name__, None)
    schema["properties"]["payload"] = {"type": "object"}
    properties: dict[str, Any] = {}
    for name, prop in schema["properties"].items():
        if name not in ENVELOPE_FIELDS:
            raise CatalogError(
                f"the envelope field {name!r} has no description; add one to "
                "events.schema.ENVELOPE_FIELDS",
                field=name,
            )
        properties[name] = {**prop, "description": ENVELOPE_FIELDS[name]}
    return properties, list(schema["required"]), defs


def encrypted_field_schema() -> dict[str, Any]:
    """A sensitive field's value once the codec has encrypted it."""
    return {
        "type": "string",
        "minLength": 1,
        "description": "Ciphertext of the field's canonical JSON (a Fernet token with the "
        "default cipher). Readable only with one of the configured encryption keys.",
    }


def payload_schema(model: type[EventPayload]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The payload model's schema as stored (sensitive fields may be ciphertext), and its defs."""
    schema = model.model_json_schema(schema_generator=_FactoryDefaults)
    defs = schema.pop("$defs", {})
    for name, prop in schema.get("properties", {}).items():
        if prop.get(SENSITIVE_KEY):
            schema["properties"][name] = _stored_sensitive(prop)
    return schema, defs


def _stored_sensitive(prop: dict[str, Any]) -> dict[str, Any]:
    """Keep the annotations on the outside; the value is the declared shape or ciphertext."""
    annotations = ("title", "description", "default", SENSITIVE_KEY)
    declared = {k: v for k, v in prop.items() if k not in annotations}
    outer = {k: prop[k] for k in annotations if k in prop}
    outer["anyOf"] = [declared, {"$ref": f"#/$defs/{ENCRYPTED_DEF}"}]
    return outer


def event_schema(model: type[EventPayload]) -> dict[str, Any]:
    """The complete JSON Schema (draft 2020-12) of one event type at one version."""
    event_type, version = model.event_type, model.schema_version
    properties, required, defs = envelope_properties()
    payload, payload_defs = payload_schema(model)
    sensitive = list(model.sensitive_fields())
    own_defs = {model.__name__: payload, **payload_defs}
    if sensitive:
        own_defs[ENCRYPTED_DEF] = encrypted_field_schema()
    for name, definition in own_defs.items():
        if name in defs and defs[name] != definition:
            raise CatalogError(
                f"{event_type} v{version} defines {name!r}, which the envelope already uses; "
                "rename the model",
                event_type=event_type,
            )
        defs[name] = definition

    properties["type"] = {"const": event_type, "description": ENVELOPE_FIELDS["type"]}
    properties["schema_version"] = {
        "const": version,
        "description": ENVELOPE_FIELDS["schema_version"],
    }
    properties["payload"] = {
        "$ref": f"#/$defs/{model.__name__}",
        "description": ENVELOPE_FIELDS["payload"],
    }
    schema: dict[str, Any] = {
        "$schema": DIALECT,
        "$id": f"urn:wrenchai:event:{event_type}:v{version}",
        "title": f"{event_type} v{version}",
        "x-event-type": event_type,
        "x-schema-version": version,
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
        "$defs": defs,
    }
    if "description" in payload:
        schema["description"] = payload["description"]
    if sensitive:
        properties[ENCRYPTED_KEY] = {
            "type": "array",
            "items": {"enum": sensitive},
            "minItems": 1,
            "uniqueItems": True,
            "description": ENVELOPE_FIELDS[ENCRYPTED_KEY],
        }
        schema["allOf"] = [_ciphertext_when_listed(name) for name in sensitive]
    return schema


def _ciphertext_when_listed(name: str) -> dict[str, Any]:
    """A field listed in ``encrypted_fields`` must be ciphertext, not its clear shape."""
    return {
        "if": {
            "required": [ENCRYPTED_KEY],
            "properties": {ENCRYPTED_KEY: {"contains": {"const": name}}},
        },
        "then": {
            "properties": {"payload": {"properties": {name: {"$ref": f"#/$defs/{ENCRYPTED_DEF}"}}}}
        },
    }


def dumps(schema: dict[str, Any]) -> str:
    """The one text form of a schema: sorted keys, two-space indent, trailing newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def export_schemas(directory: Path, event_catalog: Catalog = catalog) -> list[Path]:
    """Write ``TYPE.vN.json`` for every model in the catalog; returns the paths, sorted.

    A file whose content would not change is left alone, so a re-run touches nothing.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for model in event_catalog:
        path = directory / schema_filename(model)
        text = dumps(event_schema(model))
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        written.append(path)
    return sorted(written)


# -- markdown ----------------------------------------------------------------------------
INTRO = """\
# Event catalog

<!-- Generated by `wrenchai schema export DIR --markdown docs/events.md` from the payload
models in events/. Edit the models and regenerate; a test fails when this page is stale. -->

Every fact in WrenchAI is one immutable event on the `wrench.events` topic. An event is an
**envelope** (which task and tenant, who, when, what caused it) around a typed **payload**
selected by `type` and `schema_version`. The codec writes the envelope as canonical JSON
(UTF-8, sorted keys, no whitespace) with the headers `type`, `schema_version`,
`content-type: application/json` and `event_id`.

- **Keys.** The Kafka key is the `task_id` (the `tenant_id` for events outside any task), so
  all events of one task land on one partition, in order.
- **Deterministic ids.** An event derived from another gets the id `uuid5(cause.id, step)`,
  with `causation_id` set to the cause and `correlation_id` carried over. Re-processing
  after a crash emits the same ids, and every consumer deduplicates on `id`.
- **Versions and upcasting.** A stored event is never rewritten. A payload that changes shape
  gets the next `schema_version` and an upcaster from each version to the next; readers run
  the chain on read and only ever see the newest version.
- **Sensitive fields** hold user content (prompts, completions, tool inputs and outputs) and
  secrets' hashes. With master keys configured (`WRENCH_MASTER_KEYS`), the codec replaces
  each one with a Fernet token of its canonical JSON, made with the event's tenant's own data
  key, and lists its name in `encrypted_fields`; after `wrenchai tenant shred` they read as
  `"[shredded]"`. With only `WRENCH_ENCRYPTION_KEYS`, one key ring serves every tenant.
  Without keys they are stored in clear. See [security.md](security.md).
- **JSON Schema.** `wrenchai schema export DIR` writes one JSON Schema (draft 2020-12) per
  type and version, named `TYPE.vN.json`, describing the record value as stored. Sensitive
  fields carry `"x-sensitive": true`; each schema carries `x-event-type` and
  `x-schema-version`.
"""


def render_markdown(event_catalog: Catalog = catalog) -> str:
    """docs/events.md: the envelope, then each event type with its versions and upcasters."""
    properties, required, defs = envelope_properties()
    properties[ENCRYPTED_KEY] = {
        "type": "array",
        "items": {"type": "string"},
        "description": ENVELOPE_FIELDS[ENCRYPTED_KEY],
    }
    lines = [
        INTRO,
        "## Envelope",
        "",
        "| field | type | required | description |",
        "|---|---|---|---|",
    ]
    for name, prop in properties.items():
        lines.append(
            f"| `{name}` | {_type_of(prop)} | {_yes(name in required)} | "
            f"{_cell(prop.get('description', ''))} |"
        )
    lines += [
        "",
        *_table_of_defs(defs),
        "## Event types",
        "",
        "| type | current version | sensitive fields |",
        "|---|---|---|",
    ]
    for event_type in event_catalog.types():
        model = event_catalog.model(event_type, event_catalog.latest(event_type))
        fields = ", ".join(f"`{f}`" for f in model.sensitive_fields()) or "none"
        lines.append(
            f"| [`{event_type}`](#{_anchor(event_type)}) | v{model.schema_version} | {fields} |"
        )
    lines.append("")
    for event_type in event_catalog.types():
        lines += _render_type(event_catalog, event_type)
    return "\n".join(lines).rstrip("\n") + "\n"


def _render_type(event_catalog: Catalog, event_type: str) -> list[str]:
    latest = event_catalog.latest(event_type)
    current = event_schema(event_catalog.model(event_type, latest))
    versions = ", ".join(f"v{v}" for v in range(1, latest + 1))
    lines = [f"## `{event_type}`", ""]
    if "description" in current:
        lines += [_prose(current["description"]), ""]
    lines += [f"Versions: {versions}. Current: v{latest}.", ""]
    for version in range(latest, 0, -1):
        schema = event_schema(event_catalog.model(event_type, version))
        payload_name = schema["properties"]["payload"]["$ref"].rsplit("/", 1)[-1]
        payload = schema["$defs"][payload_name]
        label = " (current)" if version == latest else ""
        lines += [
            f"### {event_type} v{version}{label}",
            "",
            f"Payload model `{payload_name}`, schema `{event_type}.v{version}.json`.",
            "",
        ]
        if version != latest and "description" in payload:
            lines += [_prose(payload["description"]), ""]
        lines += _fields_table(payload)
        # The envelope's own types are documented once, under the envelope.
        shown = {payload_name, ENCRYPTED_DEF, *envelope_properties()[2]}
        lines += _table_of_defs({k: v for k, v in schema["$defs"].items() if k not in shown})
    upcasters = _upcasters(event_catalog, event_type)
    if upcasters:
        lines += ["Upcasters, applied in order on read:", ""]
        for version, fn in upcasters:
            doc = inspect.getdoc(fn) or ""
            lines.append(
                f"- v{version} → v{version + 1}: `{fn.__name__}`"
                + (f". {_prose(doc)}" if doc else "")
            )
        lines.append("")
    else:
        lines += ["No upcasters: every stored version is the current one.", ""]
    return lines


def _fields_table(schema: dict[str, Any]) -> list[str]:
    props: dict[str, Any] = schema.get("properties", {})
    if not props:
        return ["No fields.", ""]
    required = set(schema.get("required", []))
    lines = [
        "| field | type | required | default | sensitive | description |",
        "|---|---|---|---|---|---|",
    ]
    for name, prop in props.items():
        is_sensitive = bool(prop.get(SENSITIVE_KEY))
        # The declared shape, not the "or ciphertext" branch, is what a reader gets back.
        shape = prop["anyOf"][0] if is_sensitive else prop
        default = f"`{canonical_json(prop['default']).decode()}`" if "default" in prop else "—"
        lines.append(
            f"| `{name}` | {_type_of(shape)} | {_yes(name in required)} | {_cell(default)} | "
            f"{_yes(is_sensitive)} | {_cell(prop.get('description', ''))} |"
        )
    return [*lines, ""]


def _table_of_defs(defs: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for name in sorted(defs):
        definition = defs[name]
        lines += [
            f"`{name}`"
            + (f": {_prose(definition['description'])}" if "description" in definition else ""),
            "",
        ]
        lines += _fields_table(definition)
    return lines


def _type_of(schema: dict[str, Any]) -> str:
    """A short human name for a property's schema: ``string (uuid)``, ``array of TaskError``."""
    if "$ref" in schema:
        return f"`{schema['$ref'].rsplit('/', 1)[-1]}`"
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "enum" in schema:
        return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
    if "anyOf" in schema:
        return " or ".join(_type_of(branch) for branch in schema["anyOf"])
    kind = schema.get("type")
    if kind is None:
        return "any JSON"
    if kind == "array":
        return f"array of {_type_of(schema.get('items', {}))}"
    limits = []
    if "format" in schema:
        limits.append(schema["format"])
    low, high = (
        schema.get("minLength", schema.get("minimum")),
        schema.get("maxLength", schema.get("maximum")),
    )
    unit = " chars" if "minLength" in schema or "maxLength" in schema else ""
    if low is not None or high is not None:
        limits.append(f"{'' if low is None else low}..{'' if high is None else high}{unit}")
    return str(kind) + (f" ({', '.join(limits)})" if limits else "")


def _upcasters(event_catalog: Catalog, event_type: str) -> list[tuple[int, Upcaster]]:
    # The catalog keeps its upcasters private to stop callers from running them out of
    # order; reading them for documentation is the one use that needs them by version.
    found = event_catalog._upcasters
    return sorted(
        ((v, fn) for (t, v), fn in found.items() if t == event_type), key=lambda item: item[0]
    )


def _prose(docstring: str) -> str:
    """A docstring as one markdown paragraph: reST ``code`` becomes `code`."""
    return " ".join(docstring.replace("``", "`").split())


def _cell(text: str) -> str:
    return _prose(text).replace("|", "\\|")


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation other than - and _ dropped."""
    return "".join(c for c in heading.lower() if c.isalnum() or c in "-_ ").replace(" ", "-")


__all__ = [
    "DIALECT",
    "ENVELOPE_FIELDS",
    "dumps",
    "encrypted_field_schema",
    "envelope_properties",
    "event_schema",
    "export_schemas",
    "payload_schema",
    "render_markdown",
    "schema_filename",
]
