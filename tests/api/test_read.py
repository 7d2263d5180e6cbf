"""GET /tasks/{task_id}: the read model row, optionally after waiting for the projector."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime

import asyncpg
import httpx
import pytest

from events import Position
from tests.api._support import error_fields, insert_task, seed_api_key, serve, set_projector_offset
from wrenchai.settings import Settings

pytestmark = pytest.mark.usefixtures("db", "topics")


@pytest.mark.usefixtures("projector")
async def test_get_with_wait_for_reads_its_own_write(client: httpx.AsyncClient) -> None:
    """A task read with the position its submission returned is there at once, with what
    was submitted and that very position as its last event's."""
    submitted = await client.post(
        "/tasks", json={"description": "Draft a reply", "constraints": {"tone": "formal"}}
    )
    task_id, position = submitted.json()["task_id"], submitted.json()["position"]

    response = await client.get(f"/tasks/{task_id}", params={"wait_for": position})

    assert response.status_code == 200
    task = response.json()
    assert task["task_id"] == task_id
    assert task["tenant_id"] == "default"
    assert task["description"] == "Draft a reply"
    assert task["constraints"] == {"tone": "formal"}
    assert task["timeout"] == 3600
    assert task["status"] == "submitted"
    assert task["position"] == position
    assert uuid.UUID(task["last_event_id"])
    assert datetime.fromisoformat(task["created_at"]) == datetime.fromisoformat(task["updated_at"])


async def test_wait_for_holds_the_read_until_the_projector_passes_the_position(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    """Without wait_for the unprojected task is a 404; with it, the read returns the row as
    soon as the projector's stored offset moves past the position."""
    task_id = uuid.uuid4()
    position = Position(1, 7)
    assert (await client.get(f"/tasks/{task_id}")).status_code == 404

    async def project_later() -> None:
        await asyncio.sleep(0.3)
        async with db.transaction():
            await insert_task(db, task_id=task_id, position=position)
            await set_projector_offset(db, settings, position.partition, position.offset + 1)

    projecting = asyncio.create_task(project_later())
    response = await client.get(f"/tasks/{task_id}", params={"wait_for": str(position)})
    await projecting

    assert response.status_code == 200
    assert response.json()["position"] == "1:7"


async def test_wait_for_is_not_satisfied_by_an_offset_at_the_position(
    db: asyncpg.Connection, settings: Settings
) -> None:
    """next_offset equal to the offset means the record itself is not projected yet: the
    read waits the whole timeout, then answers from what exists."""
    short = settings.model_copy(update={"read_wait_timeout_s": 0.3})
    task_id = await insert_task(db, position=Position(0, 4))
    await set_projector_offset(db, settings, 0, 4)

    async with serve(short, api_key=await seed_api_key(db, settings)) as client:
        started = time.monotonic()
        response = await client.get(f"/tasks/{task_id}", params={"wait_for": "0:4"})
        waited = time.monotonic() - started

    assert response.status_code == 200
    assert waited >= 0.3


async def test_wait_for_that_times_out_answers_404_when_still_absent(
    db: asyncpg.Connection, settings: Settings
) -> None:
    """A position the projector never reaches ends the wait at read_wait_timeout_s with the
    usual 404, not an error of its own."""
    short = settings.model_copy(update={"read_wait_timeout_s": 0.2})
    async with serve(short, api_key=await seed_api_key(db, settings)) as client:
        response = await client.get(f"/tasks/{uuid.uuid4()}", params={"wait_for": "2:99"})

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "TASK_NOT_FOUND"


async def test_get_unknown_task_is_404_task_not_found(client: httpx.AsyncClient) -> None:
    """An id nobody submitted gives TASK_NOT_FOUND with the id in the details."""
    task_id = uuid.uuid4()

    response = await client.get(f"/tasks/{task_id}")

    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "TASK_NOT_FOUND"
    assert error["details"] == {"task_id": str(task_id)}
    assert "wait_for" in error["message"]


async def test_get_task_of_another_tenant_is_404(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """Reads are scoped to the caller's tenant: another tenant's task does not exist."""
    task_id = await insert_task(db, tenant_id="someone-else")

    response = await client.get(f"/tasks/{task_id}")

    assert response.status_code == 404


async def test_get_with_an_invalid_uuid_is_422_on_the_path(client: httpx.AsyncClient) -> None:
    """A task id that is not a UUID is a validation error naming path.task_id."""
    response = await client.get("/tasks/not-a-uuid")

    assert response.status_code == 422
    assert error_fields(response.json()) == ["path.task_id"]


@pytest.mark.parametrize(
    "position", ["abc", "1:", ":5", "-1:2", "1:2:3", "1 :2", "", "9999999999:1", "1:" + "9" * 19]
)
async def test_get_with_a_malformed_position_is_422_on_wait_for(
    client: httpx.AsyncClient, position: str
) -> None:
    """wait_for must be PARTITION:OFFSET with two whole numbers."""
    response = await client.get(f"/tasks/{uuid.uuid4()}", params={"wait_for": position})

    assert response.status_code == 422
    assert error_fields(response.json()) == ["query.wait_for"]
