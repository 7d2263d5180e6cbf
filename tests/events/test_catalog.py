"""The catalog: one model per (type, version), upcasters chained version by version on read,
and check() catching a chain with a gap before any record meets it."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import Field, ValidationError

from events import (
    EXECUTION_SCOPES,
    Catalog,
    CatalogError,
    Codec,
    Event,
    EventDecodeError,
    EventPayload,
    TaskFailed,
    TaskFailedV1,
    TaskSubmitted,
    TaskSubmittedV1,
    catalog,
    event,
    upcast_task_failed_v1_to_v2,
    upcast_task_submitted_v1_to_v2,
)
from events.schema import render_markdown
from tests.events.samples import TENANT, USER


# A three-version history of one test-local type, registered only in its own catalog.
class NoteV1(EventPayload):
    """The first shape: one line of text."""

    event_type = "demo.note"
    schema_version = 1
    text: str


class NoteV2(EventPayload):
    """Text split into a title and a body."""

    event_type = "demo.note"
    schema_version = 2
    title: str
    body: str = ""


class NoteV3(EventPayload):
    """Adds tags, and the title may not be empty any more."""

    event_type = "demo.note"
    schema_version = 3
    title: str = Field(min_length=1)
    body: str
    tags: list[str]


def note_catalog(*, with_upcasters: bool = True) -> tuple[Catalog, list[dict[str, Any]]]:
    """The catalog of demo.note, and a list recording what each upcaster was handed."""
    local = Catalog()
    for model in (NoteV1, NoteV2, NoteV3):
        local.register(model)
    seen: list[dict[str, Any]] = []
    if with_upcasters:

        @local.upcaster("demo.note", 1)
        def upcast_note_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
            """The first line becomes the title, the rest the body."""
            seen.append(payload)
            title, _, body = payload["text"].partition("\n")
            return {"title": title, "body": body}

        @local.upcaster("demo.note", 2)
        def upcast_note_v2_to_v3(payload: dict[str, Any]) -> dict[str, Any]:
            """Notes had no tags."""
            seen.append(payload)
            return {**payload, "tags": []}

    return local, seen


def test_the_shipped_catalog_has_no_gaps() -> None:
    catalog.check()


def test_registering_another_model_under_a_taken_type_and_version_fails() -> None:
    local = Catalog()
    local.register(NoteV1)

    class Impostor(EventPayload):
        event_type = "demo.note"
        schema_version = 1

    with pytest.raises(CatalogError, match="already registered as NoteV1") as caught:
        local.register(Impostor)
    assert caught.value.details == {"event_type": "demo.note", "schema_version": 1}
    assert local.model("demo.note", 1) is NoteV1


def test_registering_the_same_model_twice_is_harmless() -> None:
    """Re-importing a module must not break the catalog."""
    local = Catalog()
    assert local.register(NoteV1) is NoteV1
    assert local.register(NoteV1) is NoteV1
    assert list(local) == [NoteV1]


def test_the_event_decorator_refuses_a_taken_name_in_the_shared_catalog() -> None:
    with pytest.raises(CatalogError, match="next schema_version"):

        @event("task.submitted", version=1)
        class AnotherSubmitted(EventPayload):
            description: str

    assert catalog.model("task.submitted", 1) is TaskSubmittedV1


def test_a_second_upcaster_for_the_same_step_fails() -> None:
    local, _ = note_catalog()
    with pytest.raises(CatalogError, match="already has an upcaster from v1"):
        local.upcaster("demo.note", 1)(lambda payload: payload)


def test_task_failed_v1_reads_as_v2() -> None:
    payload = catalog.load("task.failed", 1, {"reason": "the disk was full"})
    assert payload == TaskFailed(reason="UNSPECIFIED", message="the disk was full", errors=[])
    assert upcast_task_failed_v1_to_v2({"reason": "x"})["message"] == "x"


def test_task_submitted_v1_reads_as_v2_granted_every_execution_scope() -> None:
    """A task submitted before identity came from the anonymous admin of the default tenant,
    who held every execution scope: it reads with grants for code and inline playbooks, so
    it runs as it did."""
    stored = {"description": "d", "constraints": {"playbook": "code_task"}, "timeout": 60}
    payload = catalog.load("task.submitted", 1, stored)
    assert payload == TaskSubmitted(
        description="d",
        constraints={"playbook": "code_task"},
        timeout=60,
        grants=["playbooks:inline", "tools:code"],
    )
    assert upcast_task_submitted_v1_to_v2(stored)["grants"] == sorted(EXECUTION_SCOPES)
    assert TaskSubmittedV1.schema_version == 1 and TaskSubmitted.schema_version == 2


def test_task_submitted_grants_are_execution_scopes_only_sorted_and_unique() -> None:
    """A new task carries no grants unless given; a scope that is not an execution scope
    (one that would let a task do more than run) is refused."""
    assert TaskSubmitted(description="d").grants == []
    granted = TaskSubmitted(description="d", grants=["tools:code", "playbooks:inline"] * 2)
    assert granted.grants == ["playbooks:inline", "tools:code"]
    with pytest.raises(ValidationError, match="not execution scopes"):
        TaskSubmitted(description="d", grants=["users:admin"])


def test_upcasters_chain_from_v1_through_v2_to_v3() -> None:
    local, seen = note_catalog()
    loaded = local.load("demo.note", 1, {"text": "Groceries\nmilk, eggs"})
    assert loaded == NoteV3(title="Groceries", body="milk, eggs", tags=[])
    # Each upcaster saw its own version's shape, validated, with defaults filled in.
    assert seen == [{"text": "Groceries\nmilk, eggs"}, {"title": "Groceries", "body": "milk, eggs"}]


def test_a_middle_version_starts_the_chain_where_it_is() -> None:
    local, seen = note_catalog()
    assert local.load("demo.note", 2, {"title": "t"}) == NoteV3(title="t", body="", tags=[])
    assert seen == [{"title": "t", "body": ""}]


def test_the_newest_version_loads_without_upcasting() -> None:
    local, seen = note_catalog()
    loaded = local.load("demo.note", 3, {"title": "t", "body": "b", "tags": ["x"]})
    assert loaded == NoteV3(title="t", body="b", tags=["x"])
    assert seen == []


def test_a_stored_payload_invalid_for_its_own_version_names_that_version() -> None:
    local, seen = note_catalog()
    with pytest.raises(EventDecodeError) as caught:
        local.load("demo.note", 1, {"txt": "typo"})
    assert (caught.value.reason, caught.value.details["schema_version"]) == ("invalid_payload", 1)
    assert seen == [], "an upcaster must never see a shape that is not its own"


def test_an_upcast_result_the_next_version_refuses_is_invalid_payload() -> None:
    """v3 refuses an empty title that v2 allowed: the record is bad at v3, not a crash."""
    local, _ = note_catalog()
    with pytest.raises(EventDecodeError) as caught:
        local.load("demo.note", 1, {"text": "\nbody only"})
    assert caught.value.reason == "invalid_payload"
    assert caught.value.details["schema_version"] == 3


def test_check_finds_a_missing_upcaster() -> None:
    local, _ = note_catalog(with_upcasters=False)
    with pytest.raises(
        CatalogError, match=r"no upcaster from v1 to v2.*upcaster\('demo.note', 1\)"
    ):
        local.check()


def test_check_finds_a_missing_version() -> None:
    local = Catalog()
    local.register(NoteV1)
    local.register(NoteV3)
    local.upcaster("demo.note", 1)(lambda payload: payload)
    with pytest.raises(CatalogError, match=r"demo\.note has no model for v2"):
        local.check()


def test_loading_through_a_gap_is_a_catalog_error_not_a_crash() -> None:
    """A gap is the catalog's fault, not the record's, so it is not a decode error."""
    local, _ = note_catalog(with_upcasters=False)
    with pytest.raises(CatalogError, match="no upcaster from v1 to v2"):
        local.load("demo.note", 1, {"text": "x"})


def test_unknown_type_and_unknown_version_are_decode_errors() -> None:
    local, _ = note_catalog()
    with pytest.raises(EventDecodeError) as unknown_type:
        local.load("demo.sticky", 1, {})
    with pytest.raises(EventDecodeError) as unknown_version:
        local.load("demo.note", 4, {})
    with pytest.raises(EventDecodeError) as no_latest:
        local.latest("demo.sticky")
    assert unknown_type.value.reason == no_latest.value.reason == "unknown_type"
    assert unknown_version.value.reason == "unknown_version"


def test_iteration_and_types_are_sorted() -> None:
    local = Catalog()
    for model in (NoteV3, TaskFailed, NoteV1, TaskFailedV1, NoteV2):
        local.register(model)
    assert list(local) == [NoteV1, NoteV2, NoteV3, TaskFailedV1, TaskFailed]
    assert local.types() == ["demo.note", "task.failed"]
    assert local.latest("demo.note") == 3


def test_a_codec_over_a_local_catalog_reads_old_records_as_the_newest() -> None:
    local, _ = note_catalog()
    codec = Codec(event_catalog=local)
    old = Event.new(NoteV1(text="Title\nBody"), tenant_id=TENANT, actor=USER)
    record = codec.encode(old)
    assert record.header("schema_version") == b"1"
    read = codec.decode(record.value, record.headers)
    assert (read.type, read.schema_version, read.id) == ("demo.note", 3, old.id)
    assert read.payload == NoteV3(title="Title", body="Body", tags=[])


def test_the_catalog_page_lists_each_upcaster_in_order() -> None:
    local, _ = note_catalog()
    page = render_markdown(local)
    first = page.index("- v1 → v2: `upcast_note_v1_to_v2`")
    second = page.index("- v2 → v3: `upcast_note_v2_to_v3`. Notes had no tags.")
    assert first < second
    assert "Versions: v1, v2, v3. Current: v3." in page
