"""GET /tasks/{task_id}/events: the task's history from the archive, decoded by the codec."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
import pytest

from events import (
    Actor,
    Codec,
    Event,
    FernetCipher,
    Position,
    TaskCancelled,
    TaskCompleted,
    TaskFailedV1,
    TaskSubmitted,
    generate_key,
)
from tests.api._support import TEST_KEY_ID, archive, error_fields, insert_task
from wrenchai.settings import Settings

pytestmark = pytest.mark.usefixtures("db", "topics")

USER = Actor(kind="user", id="u1")


@pytest.mark.usefixtures("projector")
async def test_history_lists_submitted_then_cancelled_in_log_order(
    client: httpx.AsyncClient,
) -> None:
    """After a submit and a cancel, the history holds both events in log order with their
    positions, every envelope field, and the description decrypted."""
    submitted = (await client.post("/tasks", json={"description": "Plan a trip"})).json()
    task_id = submitted["task_id"]
    await client.get(f"/tasks/{task_id}", params={"wait_for": submitted["position"]})
    cancelled = (await client.post(f"/tasks/{task_id}/cancel", json={"reason": "no time"})).json()

    response = await client.get(
        f"/tasks/{task_id}/events", params={"wait_for": cancelled["position"]}
    )

    assert response.status_code == 200
    body = response.json()
    assert body["task_id"] == task_id
    events = body["events"]
    assert [e["type"] for e in events] == ["task.submitted", "task.cancelled"]
    assert [e["position"] for e in events] == [submitted["position"], cancelled["position"]]
    first = events[0]
    assert set(first) == {
        "id", "type", "schema_version", "task_id", "tenant_id", "actor", "occurred_at",
        "correlation_id", "causation_id", "payload", "position",
    }  # fmt: skip
    assert first["payload"] == {
        "description": "Plan a trip",
        "constraints": None,
        "timeout": 3600,
        "grants": ["playbooks:inline", "tools:code"],
        "key_id": TEST_KEY_ID,
    }
    assert first["actor"] == {"kind": "user", "id": f"apikey:{TEST_KEY_ID}"}
    assert first["tenant_id"] == "default"
    assert first["schema_version"] == 2
    assert events[1]["payload"] == {"reason": "no time"}


async def test_history_decodes_raw_records_and_upcasts_old_versions(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, codec: Codec
) -> None:
    """Events come from the archived bytes: encrypted fields decrypted, a task.failed v1
    upcast to v2; the archive's payload column is not what is served."""
    task_id = uuid.uuid4()
    submitted = Event.new(
        TaskSubmitted(description="secret plan", constraints={"k": "v"}),
        tenant_id="default",
        actor=USER,
        task_id=task_id,
    )
    failed = submitted.derive(TaskFailedV1(reason="worker crashed"), step="fail", actor=USER)
    await archive(db, settings, codec, submitted, Position(2, 10))
    await archive(db, settings, codec, failed, Position(2, 14))

    response = await client.get(f"/tasks/{task_id}/events")

    assert response.status_code == 200
    events = response.json()["events"]
    assert [e["position"] for e in events] == ["2:10", "2:14"]
    assert events[0]["id"] == str(submitted.id)
    assert events[0]["payload"]["description"] == "secret plan"
    assert events[0]["payload"]["constraints"] == {"k": "v"}
    assert events[1]["type"] == "task.failed"
    assert events[1]["schema_version"] == 2
    assert events[1]["payload"] == {
        "reason": "UNSPECIFIED",
        "message": "worker crashed",
        "errors": [],
    }
    assert events[1]["causation_id"] == str(submitted.id)
    assert events[1]["correlation_id"] == str(submitted.id)
    assert "served_from_the_payload_column" not in response.text


async def test_history_leaves_out_unapplied_records_and_other_tasks(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, codec: Codec
) -> None:
    """Duplicates kept in the archive for offsets' sake, and other tasks' events, are not
    part of a task's history."""
    task_id = uuid.uuid4()
    submitted = Event.new(
        TaskSubmitted(description="d"), tenant_id="default", actor=USER, task_id=task_id
    )
    completed = submitted.derive(TaskCompleted(output="ok"), step="done", actor=USER)
    other = Event.new(
        TaskSubmitted(description="o"), tenant_id="default", actor=USER, task_id=uuid.uuid4()
    )
    await archive(db, settings, codec, submitted, Position(0, 0))
    await archive(db, settings, codec, other, Position(0, 1))
    await archive(db, settings, codec, submitted, Position(0, 2), status="duplicate")
    await archive(db, settings, codec, completed, Position(0, 3))

    events = (await client.get(f"/tasks/{task_id}/events")).json()["events"]

    assert [(e["type"], e["position"]) for e in events] == [
        ("task.submitted", "0:0"),
        ("task.completed", "0:3"),
    ]
    assert events[1]["payload"]["output"] == "ok"


async def test_history_is_scoped_to_the_tenant(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, codec: Codec
) -> None:
    """Another tenant's task has no history for this caller: 404."""
    task_id = uuid.uuid4()
    event = Event.new(
        TaskSubmitted(description="d"), tenant_id="elsewhere", actor=USER, task_id=task_id
    )
    await archive(db, settings, codec, event, Position(0, 0))

    response = await client.get(f"/tasks/{task_id}/events")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "TASK_NOT_FOUND"


async def test_history_of_a_task_whose_events_are_not_archived_yet_is_empty(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """A task row with no archived events yet answers an empty history, not a 404."""
    task_id = await insert_task(db)

    response = await client.get(f"/tasks/{task_id}/events")

    assert response.status_code == 200
    assert response.json() == {"task_id": str(task_id), "events": []}


async def test_history_of_an_unknown_task_is_404(client: httpx.AsyncClient) -> None:
    """No events and no row: TASK_NOT_FOUND."""
    response = await client.get(f"/tasks/{uuid.uuid4()}/events")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "TASK_NOT_FOUND"


async def test_history_validates_its_parameters(client: httpx.AsyncClient) -> None:
    """A bad task id or position is a 422 naming it."""
    bad_id = await client.get("/tasks/123/events")
    bad_position = await client.get(f"/tasks/{uuid.uuid4()}/events", params={"wait_for": "x"})

    assert error_fields(bad_id.json()) == ["path.task_id"]
    assert error_fields(bad_position.json()) == ["query.wait_for"]


async def test_cancelled_event_reason_is_optional_in_history(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, codec: Codec
) -> None:
    """A cancel without a reason shows as a null reason."""
    task_id = uuid.uuid4()
    event = Event.new(TaskCancelled(), tenant_id="default", actor=USER, task_id=task_id)
    await archive(db, settings, codec, event, Position(1, 0))

    events = (await client.get(f"/tasks/{task_id}/events")).json()["events"]

    assert events[0]["payload"] == {"reason": None}


async def test_history_with_a_record_the_codec_cannot_read_is_a_generic_500(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    """An archived event encrypted under a key this API does not hold cannot be served in
    clear: the answer is INTERNAL_ERROR, with neither ciphertext nor key details."""
    foreign = Codec(FernetCipher([generate_key()]))
    task_id = uuid.uuid4()
    event = Event.new(
        TaskSubmitted(description="shredded"), tenant_id="default", actor=USER, task_id=task_id
    )
    await archive(db, settings, foreign, event, Position(0, 0))

    response = await client.get(f"/tasks/{task_id}/events")

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "INTERNAL_ERROR"
    assert response.json()["error"]["details"] == {}
