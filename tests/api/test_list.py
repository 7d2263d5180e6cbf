"""GET /tasks: the tenant's tasks, newest first, in keyset pages behind an opaque cursor."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from tests.api._support import error_fields, insert_task

pytestmark = pytest.mark.usefixtures("db", "topics")

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def _seed(db: asyncpg.Connection) -> list[str]:
    """Five tasks, two of them created at the same instant, newest first as listed."""
    created = [T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=1), T0 + timedelta(3), T0]
    statuses = ["submitted", "running", "completed", "submitted", "cancelled"]
    rows = []
    for at, status in zip(created, statuses, strict=True):
        task_id = await insert_task(db, created_at=at, status=status)
        rows.append((at, task_id))
    await insert_task(db, tenant_id="another-tenant", created_at=T0 + timedelta(days=9))
    return [str(task_id) for _, task_id in sorted(rows, reverse=True)]


async def _all_pages(client: httpx.AsyncClient, **params: str | int) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/tasks", params=query)
        assert response.status_code == 200
        body = response.json()
        pages.append([task["task_id"] for task in body["tasks"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


async def test_list_pages_through_every_task_once_newest_first(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """Pages of two follow (created_at, task_id) descending, ties broken by task_id, each
    task exactly once, and the last page has no next cursor."""
    expected = await _seed(db)

    pages = await _all_pages(client, limit=2)

    assert [len(page) for page in pages] == [2, 2, 1]
    assert [task_id for page in pages for task_id in page] == expected


async def test_list_is_scoped_to_the_tenant(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """Another tenant's newer task is not listed."""
    expected = await _seed(db)

    response = await client.get("/tasks")

    assert [task["task_id"] for task in response.json()["tasks"]] == expected
    assert response.json()["next_cursor"] is None


async def test_list_filters_by_status_across_pages(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """status= keeps only tasks in that status, and the cursor keeps the filter's order."""
    for minute in range(3):
        await insert_task(db, status="running", created_at=T0 + timedelta(minutes=minute))
    await insert_task(db, status="failed", created_at=T0 + timedelta(minutes=10))

    pages = await _all_pages(client, status="running", limit=2)

    listed = [task_id for page in pages for task_id in page]
    assert len(listed) == 3
    response = await client.get("/tasks", params={"status": "running"})
    assert {task["status"] for task in response.json()["tasks"]} == {"running"}
    assert [task["task_id"] for task in response.json()["tasks"]] == listed


async def test_list_answers_full_rows(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    """Each listed task carries the same row as GET /tasks/{task_id}; the roles, the plan,
    the steps, the progress, the summary and the output are left to the task's own page,
    which keeps a page of fifty one query."""
    task_id = await insert_task(db, description="listed", constraints={"k": 1})

    listed = (await client.get("/tasks")).json()["tasks"][0]
    single = (await client.get(f"/tasks/{task_id}")).json()

    assert single.pop("roles") == [] and single.pop("plan") is None
    assert single.pop("steps") == [] and single.pop("progress") is None
    assert single.pop("summary") is None and single.pop("output") is None
    assert listed == single


async def test_list_default_page_is_fifty(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """Without limit a page holds 50 tasks; the 51st is on the next page."""
    for second in range(51):
        await insert_task(db, created_at=T0 + timedelta(seconds=second))

    first = (await client.get("/tasks/")).json()

    assert len(first["tasks"]) == 50
    second = (await client.get("/tasks", params={"cursor": first["next_cursor"]})).json()
    assert len(second["tasks"]) == 1
    assert second["next_cursor"] is None


async def test_list_of_an_empty_tenant_is_an_empty_page(client: httpx.AsyncClient) -> None:
    """No tasks is an empty list, not a 404."""
    response = await client.get("/tasks")

    assert response.status_code == 200
    assert response.json() == {"tasks": [], "next_cursor": None}


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "done"}, "query.status.0"),
        ({"limit": 0}, "query.limit"),
        ({"limit": 201}, "query.limit"),
        ({"limit": "many"}, "query.limit"),
        ({"cursor": "%%%"}, "query.cursor"),
        ({"cursor": _b64(b"not json")}, "query.cursor"),
        ({"cursor": _b64(b'["2026-03-01T12:00:00", "x"]')}, "query.cursor"),
        ({"cursor": _b64(f'["yesterday", "{uuid.uuid4()}"]'.encode())}, "query.cursor"),
        ({"cursor": _b64(f'["2026-03-01T12:00:00", "{uuid.uuid4()}"]'.encode())}, "query.cursor"),
    ],
    ids=[
        "unknown-status",
        "limit-0",
        "limit-201",
        "limit-not-a-number",
        "cursor-not-base64",
        "cursor-not-json",
        "cursor-bad-task-id",
        "cursor-bad-time",
        "cursor-naive-time",
    ],
)
async def test_list_rejects_bad_parameters_naming_them(
    client: httpx.AsyncClient, params: dict[str, str | int], field: str
) -> None:
    """A status outside the lifecycle, a limit outside 1..200 or a cursor this API did not
    issue is a 422 VALIDATION_ERROR on that parameter."""
    response = await client.get("/tasks", params=params)

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert error_fields(response.json()) == [field]
