"""The common error body, request ids, and what a request gets when a dependency is down."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
import structlog
from pydantic import SecretStr

import api.errors
from api import create_app
from api.security import new_api_key
from events import TaskSubmitted
from tests.api._support import insert_task, seed_api_key, serve
from wrenchai.embedded import free_port
from wrenchai.settings import Settings

pytestmark = pytest.mark.usefixtures("db", "topics")


def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    error: dict[str, Any] = body["error"]
    return error


async def test_unknown_route_is_404_in_the_error_body(client: httpx.AsyncClient) -> None:
    """A path no route serves answers NOT_FOUND in the common shape."""
    response = await client.get("/nowhere")

    assert response.status_code == 404
    assert _error(response)["code"] == "NOT_FOUND"


async def test_wrong_method_is_405_in_the_error_body(client: httpx.AsyncClient) -> None:
    """DELETE /tasks answers METHOD_NOT_ALLOWED with the Allow header."""
    response = await client.delete("/tasks")

    assert response.status_code == 405
    assert _error(response)["code"] == "METHOD_NOT_ALLOWED"
    assert "POST" in response.headers["allow"]


async def test_validation_error_lists_every_field(client: httpx.AsyncClient) -> None:
    """Several bad fields are all reported, each with its path and a message."""
    response = await client.post("/tasks", json={"description": "", "timeout": 0})

    error = _error(response)
    assert error["code"] == "VALIDATION_ERROR"
    fields = {e["field"]: e["message"] for e in error["details"]["errors"]}
    assert set(fields) == {"body.description", "body.timeout"}
    assert all(fields.values())


async def test_unhandled_error_is_a_generic_500_logged_with_the_request_id(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception no handler expects is logged with the request id, and the client gets
    INTERNAL_ERROR, its X-Request-ID echoed, and nothing of the exception."""
    captured = structlog.testing.LogCapture()
    logger = structlog.wrap_logger(
        None, processors=[structlog.contextvars.merge_contextvars, captured]
    )
    monkeypatch.setattr(api.errors, "log", logger)
    app = create_app(settings)

    async def explode() -> None:
        raise RuntimeError("password=hunter2 at db-7.internal")

    app.add_api_route("/explode", explode)
    async with serve(settings, app) as client:
        response = await client.get("/explode", headers={"X-Request-ID": "req-42"})

    assert response.status_code == 500
    assert _error(response) == {
        "code": "INTERNAL_ERROR",
        "message": api.errors.INTERNAL_MESSAGE,
        "details": {},
    }
    assert "hunter2" not in response.text
    assert response.headers["x-request-id"] == "req-42"
    [entry] = [e for e in captured.entries if e["event"] == "unhandled error"]
    assert entry["request_id"] == "req-42"
    assert entry["error_type"] == "RuntimeError"
    assert entry["path"] == "/explode"


async def test_unhandled_validation_error_is_logged_without_its_input(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pydantic error deep inside a handler would quote its input; the log names only the
    field and the error type, since the input may be a user's description."""
    captured = structlog.testing.LogCapture()
    monkeypatch.setattr(api.errors, "log", structlog.wrap_logger(None, processors=[captured]))
    app = create_app(settings)

    description = "top secret " * 2000

    async def invalid() -> None:
        TaskSubmitted(description=description)

    app.add_api_route("/invalid", invalid)
    async with serve(settings, app) as client:
        response = await client.get("/invalid")

    assert response.status_code == 500
    [entry] = captured.entries
    assert "top secret" not in str(entry)
    assert "description" in entry["error"]


async def test_request_id_is_generated_when_absent_and_replaced_when_unsafe(
    client: httpx.AsyncClient,
) -> None:
    """Every answer carries an X-Request-ID: the caller's when it is a plain token, a fresh
    one when it is missing or could forge log lines."""
    own = await client.get("/tasks", headers={"X-Request-ID": "abc-123"})
    fresh = await client.get("/tasks")
    unsafe = await client.get("/tasks", headers={"X-Request-ID": "x\tforged=1"})

    assert own.headers["x-request-id"] == "abc-123"
    assert len(fresh.headers["x-request-id"]) == 32
    assert unsafe.headers["x-request-id"] not in ("", "x\tforged=1")
    errored = await client.get("/tasks/nope")
    assert errored.headers["x-request-id"]


async def test_publishing_with_the_broker_down_is_503_broker_unavailable_quickly(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """With nothing at the bootstrap address the app starts anyway; submit and cancel fail
    fast with BROKER_UNAVAILABLE, saying nothing was written, and no broker address."""
    port = free_port()
    down = settings.model_copy(
        update={"kafka_bootstrap": f"127.0.0.1:{port}", "kafka_request_timeout_ms": 1000}
    )
    task_id = await insert_task(db)
    async with serve(down, api_key=await seed_api_key(db, settings)) as client:
        async with asyncio.timeout(10):
            submit = await client.post("/tasks", json={"description": "d"})
            cancel = await client.post(f"/tasks/{task_id}/cancel")
        read = await client.get(f"/tasks/{task_id}")

    for response in (submit, cancel):
        assert response.status_code == 503
        error = _error(response)
        assert error["code"] == "BROKER_UNAVAILABLE"
        assert "nothing was written" in error["message"]
        assert str(port) not in response.text
    assert read.status_code == 200
    assert await db.fetchval("SELECT count(*) FROM tasks") == 1


async def test_reads_with_the_database_down_are_503_database_unavailable(
    settings: Settings,
) -> None:
    """With nothing at the database address the app starts anyway; every request answers
    DATABASE_UNAVAILABLE, a submit too: credentials are checked against Postgres, and a
    request that cannot be authenticated is not accepted."""
    down = settings.model_copy(
        update={"database_url": SecretStr(f"postgresql://postgres@127.0.0.1:{free_port()}/none")}
    )
    task_id = uuid.uuid4()
    async with serve(down, api_key=new_api_key().token) as client:
        reads = [
            await client.get(f"/tasks/{task_id}"),
            await client.get("/tasks"),
            await client.get(f"/tasks/{task_id}/events"),
            await client.get(f"/tasks/{task_id}", params={"wait_for": "0:0"}),
            await client.post(f"/tasks/{task_id}/cancel"),
        ]
        submit = await client.post("/tasks", json={"description": "still accepted"})

    for response in [*reads, submit]:
        assert response.status_code == 503
        assert _error(response)["code"] == "DATABASE_UNAVAILABLE"


async def test_losing_the_database_after_start_is_503_database_unavailable(
    settings: Settings, postgres_url: str, client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """When Postgres drops the pool's connections and refuses new ones, reads answer
    DATABASE_UNAVAILABLE instead of an internal error."""
    task_id = await insert_task(db)
    assert (await client.get(f"/tasks/{task_id}")).status_code == 200
    name = settings.database_dsn().rpartition("/")[2]
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        response = await client.get(f"/tasks/{task_id}")
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        await admin.close()

    assert response.status_code == 503
    assert _error(response)["code"] == "DATABASE_UNAVAILABLE"


async def test_docs_and_openapi_are_served(client: httpx.AsyncClient) -> None:
    """/docs and /redoc render, and the OpenAPI document names the API and its routes."""
    assert (await client.get("/docs")).status_code == 200
    assert (await client.get("/redoc")).status_code == 200
    spec = (await client.get("/openapi.json")).json()

    assert spec["info"]["title"] == "WrenchAI API"
    assert {"/tasks", "/tasks/{task_id}", "/tasks/{task_id}/events", "/health"} <= set(
        spec["paths"]
    )
    assert "/tasks/{task_id}/cancel" in spec["paths"]
