"""POST /tasks: a task.submitted event on the log, or a 422 that names the field."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from api.models import MAX_DESCRIPTION, MAX_TIMEOUT_S
from events import Codec, Position, TaskSubmitted
from tests.api._support import TEST_KEY_ID, error_fields, read_record
from wrenchai.settings import Settings

pytestmark = pytest.mark.usefixtures("db", "topics")


async def test_submit_publishes_an_encrypted_task_submitted_event(
    client: httpx.AsyncClient, settings: Settings, codec: Codec
) -> None:
    """202 with the task id, status and log position; the event at that position is the
    task, keyed by its id, stamped with the default tenant, its description encrypted."""
    description = "Summarise the quarterly report for the board"
    response = await client.post(
        "/tasks",
        json={"description": description, "constraints": {"budget_usd": 2}, "timeout": 120},
    )

    assert response.status_code == 202
    body = response.json()
    task_id = uuid.UUID(body["task_id"])
    assert body["status"] == "submitted"
    assert response.headers["location"] == f"/tasks/{task_id}"
    position = Position.parse(body["position"])
    assert str(position) == body["position"]

    record = await read_record(settings, position)
    assert record.key == str(task_id).encode()
    assert description.encode() not in record.value
    assert b"budget_usd" not in record.value
    event = codec.decode(record.value, tuple(record.headers))
    assert event.type == "task.submitted"
    assert event.task_id == task_id
    assert event.tenant_id == settings.default_tenant
    assert (event.actor.kind, event.actor.id) == ("user", f"apikey:{TEST_KEY_ID}")
    assert isinstance(event.payload, TaskSubmitted)
    assert event.payload.description == description
    assert event.payload.constraints == {"budget_usd": 2}
    assert event.payload.timeout == 120


async def test_submit_defaults_the_timeout_to_an_hour_and_constraints_to_null(
    client: httpx.AsyncClient, settings: Settings, codec: Codec
) -> None:
    """A body with only a description makes an event with timeout 3600 and no constraints."""
    response = await client.post("/tasks", json={"description": "x"})

    assert response.status_code == 202
    record = await read_record(settings, Position.parse(response.json()["position"]))
    payload = codec.decode(record.value, tuple(record.headers)).payload
    assert isinstance(payload, TaskSubmitted)
    assert (payload.timeout, payload.constraints) == (3600, None)


async def test_submit_with_a_trailing_slash_is_the_same_route_not_a_redirect(
    client: httpx.AsyncClient,
) -> None:
    """POST /tasks/ answers 202 itself instead of redirecting (which would drop the body)."""
    response = await client.post("/tasks/", json={"description": "slash"})

    assert response.status_code == 202
    assert response.json()["status"] == "submitted"


@pytest.mark.parametrize(
    "body",
    [
        {"description": "d" * MAX_DESCRIPTION, "timeout": 1},
        {"description": "d", "timeout": MAX_TIMEOUT_S, "constraints": {}},
    ],
    ids=["longest-description-shortest-timeout", "longest-timeout"],
)
async def test_submit_accepts_the_limits_themselves(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    """10,000 characters and timeouts of 1 and 86,400 seconds are inside the limits."""
    response = await client.post("/tasks", json=body)

    assert response.status_code == 202


def test_request_limits_are_the_events_limits() -> None:
    """The API's bounds equal task.submitted's, so no accepted request makes an invalid
    event and no valid event is refused at the door."""
    TaskSubmitted(description="d" * MAX_DESCRIPTION, timeout=MAX_TIMEOUT_S)
    with pytest.raises(ValidationError):
        TaskSubmitted(description="d" * (MAX_DESCRIPTION + 1))
    with pytest.raises(ValidationError):
        TaskSubmitted(description="d", timeout=MAX_TIMEOUT_S + 1)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"description": ""}, "body.description"),
        ({"description": "d" * (MAX_DESCRIPTION + 1)}, "body.description"),
        ({}, "body.description"),
        ({"description": 42}, "body.description"),
        ({"description": "d", "timeout": 0}, "body.timeout"),
        ({"description": "d", "timeout": MAX_TIMEOUT_S + 1}, "body.timeout"),
        ({"description": "d", "timeout": "60"}, "body.timeout"),
        ({"description": "d", "constraints": ["not", "an", "object"]}, "body.constraints"),
        ({"description": "d", "constraints": "fast"}, "body.constraints"),
        ({"description": "d", "priority": "high"}, "body.priority"),
        (["description", "d"], "body"),
    ],
    ids=[
        "empty-description",
        "description-10001",
        "missing-description",
        "description-not-text",
        "timeout-0",
        "timeout-86401",
        "timeout-as-text",
        "constraints-array",
        "constraints-string",
        "unknown-field",
        "body-not-an-object",
    ],
)
async def test_submit_rejects_an_invalid_body_naming_the_field(
    client: httpx.AsyncClient, body: Any, field: str
) -> None:
    """422 VALIDATION_ERROR with the offending field's path, in the common error body."""
    response = await client.post("/tasks", json=body)

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["message"]
    assert field in error_fields(response.json())


async def test_submit_rejects_malformed_json(client: httpx.AsyncClient) -> None:
    """A body that is not JSON at all is a 422 on the body, not a 500 or a 400."""
    response = await client.post(
        "/tasks", content=b'{"description": "d",', headers={"content-type": "application/json"}
    )

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert error_fields(response.json())[0].startswith("body")


async def test_validation_errors_never_echo_the_description(client: httpx.AsyncClient) -> None:
    """A rejected description may be sensitive: the error names the field, not the value."""
    secret = "confidential-merger-plan " * 500
    response = await client.post("/tasks", json={"description": secret})

    assert response.status_code == 422
    assert "confidential-merger-plan" not in response.text
