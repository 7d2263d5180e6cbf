"""POST /tasks/{task_id}/cancel: task.cancelled on the log unless the task has ended."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
import pytest

from events import Codec, Position, TaskCancelled
from tests.api._support import TEST_KEY_ID, error_fields, insert_task, read_record
from wrenchai.settings import Settings

pytestmark = pytest.mark.usefixtures("db", "topics")


@pytest.mark.usefixtures("projector")
async def test_cancel_is_accepted_then_projected_and_a_second_cancel_conflicts(
    client: httpx.AsyncClient,
) -> None:
    """A submitted task cancels with 202 "cancelling"; once projected its status is
    cancelled, and cancelling it again is 409 TASK_TERMINAL."""
    submitted = (await client.post("/tasks", json={"description": "Index the wiki"})).json()
    task_id = submitted["task_id"]

    response = await client.post(
        f"/tasks/{task_id}/cancel",
        params={"wait_for": submitted["position"]},
        json={"reason": "changed my mind"},
    )

    assert response.status_code == 202
    accepted = response.json()
    assert accepted["task_id"] == task_id
    assert accepted["status"] == "cancelling"
    assert (
        Position.parse(accepted["position"]).partition
        == Position.parse(submitted["position"]).partition
    )
    task = (await client.get(f"/tasks/{task_id}", params={"wait_for": accepted["position"]})).json()
    assert task["status"] == "cancelled"
    assert task["position"] == accepted["position"]

    again = await client.post(f"/tasks/{task_id}/cancel")
    assert again.status_code == 409
    error = again.json()["error"]
    assert error["code"] == "TASK_TERMINAL"
    assert error["details"] == {"task_id": task_id, "status": "cancelled"}


async def test_cancel_publishes_task_cancelled_with_the_tasks_tenant(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, codec: Codec
) -> None:
    """The event on the log is task.cancelled for that task, keyed by it, with the reason,
    the task's tenant and the caller as actor."""
    task_id = await insert_task(db, status="running")

    response = await client.post(f"/tasks/{task_id}/cancel", json={"reason": "too slow"})

    assert response.status_code == 202
    record = await read_record(settings, Position.parse(response.json()["position"]))
    assert record.key == str(task_id).encode()
    event = codec.decode(record.value, tuple(record.headers))
    assert event.type == "task.cancelled"
    assert event.task_id == task_id
    assert event.tenant_id == "default"
    assert event.actor.id == f"apikey:{TEST_KEY_ID}"
    assert event.payload == TaskCancelled(reason="too slow")


async def test_cancel_without_a_body_has_no_reason(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, codec: Codec
) -> None:
    """The body is optional: a bare POST cancels with a null reason."""
    task_id = await insert_task(db)

    response = await client.post(f"/tasks/{task_id}/cancel")

    assert response.status_code == 202
    record = await read_record(settings, Position.parse(response.json()["position"]))
    assert codec.decode(record.value, tuple(record.headers)).payload == TaskCancelled()


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
async def test_cancel_of_an_ended_task_is_409_task_terminal(
    client: httpx.AsyncClient, db: asyncpg.Connection, status: str
) -> None:
    """A task that completed, failed or was cancelled takes no cancel: 409, nothing sent."""
    task_id = await insert_task(db, status=status)

    response = await client.post(f"/tasks/{task_id}/cancel", json={"reason": "late"})

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "TASK_TERMINAL"
    assert response.json()["error"]["details"]["status"] == status


async def test_cancel_of_an_unknown_task_is_404(client: httpx.AsyncClient) -> None:
    """No such task in the tenant: TASK_NOT_FOUND."""
    response = await client.post(f"/tasks/{uuid.uuid4()}/cancel")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "TASK_NOT_FOUND"


async def test_cancel_of_another_tenants_task_is_404(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """A task of another tenant cannot be cancelled from this one."""
    task_id = await insert_task(db, tenant_id="elsewhere")

    response = await client.post(f"/tasks/{task_id}/cancel")

    assert response.status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [({"reason": "r" * 2001}, "body.reason"), ({"why": "x"}, "body.why")],
    ids=["reason-too-long", "unknown-field"],
)
async def test_cancel_rejects_an_invalid_body(
    client: httpx.AsyncClient, db: asyncpg.Connection, body: dict[str, str], field: str
) -> None:
    """A reason over 2,000 characters or an unknown field is a 422 naming it."""
    task_id = await insert_task(db)

    response = await client.post(f"/tasks/{task_id}/cancel", json=body)

    assert response.status_code == 422
    assert error_fields(response.json()) == [field]
