"""JSON Schema export of the catalog, and docs/events.md rendered from the same schemas."""

from __future__ import annotations

import inspect
import json
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from events import (
    Codec,
    Event,
    EventProducer,
    FernetCipher,
    TaskFailedV1,
    catalog,
    generate_key,
)
from events.schema import event_schema, export_schemas, render_markdown, schema_filename
from tests.events import schema_check
from tests.events.samples import PAYLOADS, TENANT, USER, sample_event
from tests.events.topic_reader import read_topic
from wrenchai.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Every exported schema by file name, read back from disk."""
    directory = tmp_path_factory.mktemp("schemas")
    return {p.name: json.loads(p.read_text()) for p in export_schemas(directory)}


def encoded(event: Event, encrypted: bool) -> dict[str, Any]:
    codec = Codec(FernetCipher([generate_key()])) if encrypted else Codec()
    value: dict[str, Any] = orjson.loads(codec.encode(event).value)
    return value


def test_export_writes_one_file_per_type_and_version(tmp_path: Path) -> None:
    written = export_schemas(tmp_path / "nested" / "dir")
    expected = sorted(f"{m.event_type}.v{m.schema_version}.json" for m in catalog)
    assert [p.name for p in written] == expected
    assert "task.failed.v1.json" in expected and "task.failed.v2.json" in expected
    assert sorted(p.name for p in (tmp_path / "nested" / "dir").iterdir()) == expected


def test_a_second_export_changes_nothing(tmp_path: Path) -> None:
    first = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in export_schemas(tmp_path)}
    second = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in export_schemas(tmp_path)}
    assert first == second


def test_export_rewrites_a_stale_file(tmp_path: Path) -> None:
    (path, *_) = export_schemas(tmp_path)
    fresh = path.read_text()
    path.write_text("{}\n")
    export_schemas(tmp_path)
    assert path.read_text() == fresh


def test_files_are_sorted_json_with_a_trailing_newline(
    exported: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    for path in export_schemas(tmp_path):
        text = path.read_text()
        assert text.endswith("}\n") and not text.endswith("\n\n")
        assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


def test_each_schema_names_its_dialect_type_and_version(
    exported: dict[str, dict[str, Any]],
) -> None:
    for model in catalog:
        schema = exported[schema_filename(model)]
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"] == f"urn:wrenchai:event:{model.event_type}:v{model.schema_version}"
        assert schema["title"] == f"{model.event_type} v{model.schema_version}"
        assert schema["x-event-type"] == model.event_type
        assert schema["x-schema-version"] == model.schema_version
        assert schema["properties"]["type"]["const"] == model.event_type
        assert schema["properties"]["schema_version"]["const"] == model.schema_version
        assert schema["description"] == inspect.cleandoc(model.__doc__ or "")


def test_the_envelope_fields_are_all_there_and_nothing_else_is_allowed(
    exported: dict[str, dict[str, Any]],
) -> None:
    envelope = set(Event.model_fields)
    for name, schema in exported.items():
        assert envelope <= set(schema["properties"]), name
        assert schema["additionalProperties"] is False
        assert set(schema["required"]) == {
            "id", "type", "schema_version", "task_id", "tenant_id", "actor", "occurred_at",
            "payload",
        }  # fmt: skip


def test_exactly_the_sensitive_fields_are_marked(exported: dict[str, dict[str, Any]]) -> None:
    for model in catalog:
        schema = exported[schema_filename(model)]
        payload = schema["$defs"][model.__name__]["properties"]
        marked = {name for name, prop in payload.items() if prop.get("x-sensitive") is True}
        assert marked == set(model.sensitive_fields())
        if marked:
            assert set(schema["properties"]["encrypted_fields"]["items"]["enum"]) == marked
        else:
            assert "encrypted_fields" not in schema["properties"]


def test_the_validator_knows_every_keyword_the_schemas_use(
    exported: dict[str, dict[str, Any]],
) -> None:
    """Otherwise the validation tests below could pass by ignoring a constraint."""
    used = set().union(*(schema_check.keywords(s) for s in exported.values()))
    assert used <= schema_check.SUPPORTED, used - schema_check.SUPPORTED


@pytest.mark.parametrize("event_type", sorted(PAYLOADS))
@pytest.mark.parametrize("encrypted", [False, True], ids=["clear", "encrypted"])
def test_encoded_events_match_their_schema(
    exported: dict[str, dict[str, Any]], event_type: str, encrypted: bool
) -> None:
    event = sample_event(event_type)
    schema = exported[f"{event_type}.v{event.schema_version}.json"]
    assert schema_check.errors(encoded(event, encrypted), schema) == []


def test_an_old_version_matches_its_own_schema_not_the_current_one(
    exported: dict[str, dict[str, Any]],
) -> None:
    old = encoded(Event.new(TaskFailedV1(reason="x"), tenant_id=TENANT, actor=USER), False)
    assert schema_check.errors(old, exported["task.failed.v1.json"]) == []
    assert schema_check.errors(old, exported["task.failed.v2.json"]) != []


def test_an_event_does_not_match_another_types_schema(
    exported: dict[str, dict[str, Any]],
) -> None:
    cancelled = encoded(sample_event("task.cancelled"), False)
    assert schema_check.errors(cancelled, exported["task.submitted.v2.json"]) != []


def tampered(change: str) -> dict[str, Any]:
    envelope = encoded(sample_event("task.submitted"), encrypted=True)
    if change == "extra envelope field":
        envelope["colour"] = "red"
    elif change == "no tenant":
        del envelope["tenant_id"]
    elif change == "bad uuid":
        envelope["id"] = "not-a-uuid"
    elif change == "naive time":
        envelope["occurred_at"] = "2026-03-01T12:30:00"
    elif change == "unknown actor kind":
        envelope["actor"]["kind"] = "robot"
    elif change == "timeout out of range":
        envelope["payload"]["timeout"] = 0
    elif change == "extra payload field":
        envelope["payload"]["priority"] = 1
    elif change == "encrypted field in clear":
        envelope["payload"]["constraints"] = {"password": "hunter2"}
    elif change == "unknown encrypted field":
        envelope["encrypted_fields"].append("timeout")
    return envelope


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ("extra envelope field", "$: unexpected 'colour'"),
        ("no tenant", "$: no 'tenant_id'"),
        ("bad uuid", "$.id: 'not-a-uuid' is not a uuid"),
        ("naive time", "$.occurred_at: '2026-03-01T12:30:00' has no offset"),
        ("unknown actor kind", "$.actor.kind: 'robot' is not one of"),
        ("timeout out of range", "$.payload.timeout: below 1"),
        ("extra payload field", "$.payload: unexpected 'priority'"),
        ("encrypted field in clear", "$.payload.constraints: {'password': 'hunter2'} is not of"),
        ("unknown encrypted field", "$.encrypted_fields[2]: 'timeout' is not one of"),
    ],
)
def test_the_schema_refuses_a_tampered_record(
    exported: dict[str, dict[str, Any]], change: str, complaint: str
) -> None:
    problems = schema_check.errors(tampered(change), exported["task.submitted.v2.json"])
    assert [p for p in problems if p.startswith(complaint)], problems


async def test_a_record_read_from_the_broker_matches_its_schema(
    settings: Settings, producer: EventProducer, exported: dict[str, dict[str, Any]]
) -> None:
    await producer.publish(sample_event("task.submitted", uuid.uuid4()))
    (record,) = await read_topic(settings, settings.topic("events"), 1)
    envelope = orjson.loads(record.value)
    assert "encrypted_fields" in envelope
    assert schema_check.errors(envelope, exported["task.submitted.v2.json"]) == []


def test_event_schema_is_a_pure_function_of_the_model() -> None:
    for model in catalog:
        assert event_schema(model) == event_schema(model)


# -- the markdown page -------------------------------------------------------------------
def test_the_committed_catalog_page_is_current() -> None:
    """Regenerate with: wrenchai schema export /tmp/schemas --markdown docs/events.md"""
    assert (ROOT / "docs" / "events.md").read_text() == render_markdown()


def test_the_page_documents_every_type_version_field_and_upcaster() -> None:
    page = render_markdown()
    for model in catalog:
        assert f"### {model.event_type} v{model.schema_version}" in page
        assert f"`{schema_filename(model)}`" in page
        for name in model.model_fields:
            assert f"| `{name}` |" in page
    assert "- v1 → v2: `upcast_task_failed_v1_to_v2`" in page
    assert "| `description` | string (1..10000 chars) | yes | — | yes |  |" in page
    assert (
        "| `timeout` | integer (1..86400) | no | `3600` | no | Seconds the task may run. |" in page
    )
    assert "| `errors` | array of `TaskError` | no | `[]` | no |  |" in page
    for name in Event.model_fields:
        assert f"| `{name}` |" in page


def test_the_cli_writes_the_schemas_and_the_page(tmp_path: Path) -> None:
    from wrenchai.cli import main

    page = tmp_path / "events.md"
    result = CliRunner().invoke(
        main, ["schema", "export", str(tmp_path / "schemas"), "--markdown", str(page)]
    )
    assert result.exit_code == 0, result.output
    assert f"wrote {len(list(catalog))} schema(s)" in result.output
    assert page.read_text() == render_markdown()
    assert len(list((tmp_path / "schemas").glob("*.json"))) == len(list(catalog))
