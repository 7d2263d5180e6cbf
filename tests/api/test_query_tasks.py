"""GET /tasks as a query: filters (status, created range, full-text q, playbook), sort by
created_at or updated_at either way, keyset cursors that stay stable while tasks arrive, 422s
that name the parameter; and the ETag of GET /tasks/{task_id} with its 304."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from api._keyset import Order, PageCursor
from events import Event, EventProducer, PlanCreated, PlanStage, StepStarted, TaskSubmitted
from tests.api._support import error_fields, insert_task
from tests.projections.conftest import USER

pytestmark = pytest.mark.usefixtures("db", "topics")

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


async def _task(
    db: asyncpg.Connection, minutes: float, *, updated: float | None = None, **fields: Any
) -> str:
    """A task created ``minutes`` after T0 and last updated ``updated`` minutes after it."""
    task_id = await insert_task(db, created_at=_at(minutes), **fields)
    if updated is not None:
        await db.execute(
            "UPDATE tasks SET updated_at = $2 WHERE task_id = $1", task_id, _at(updated)
        )
    return str(task_id)


async def _ids(client: httpx.AsyncClient, **params: Any) -> list[str]:
    response = await client.get("/tasks", params=params)
    assert response.status_code == 200, response.text
    return [task["task_id"] for task in response.json()["tasks"]]


async def _walk(client: httpx.AsyncClient, **params: Any) -> list[list[str]]:
    """Every page of the listing, following next_cursor."""
    pages: list[list[str]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        body = (await client.get("/tasks", params=query)).json()
        pages.append([task["task_id"] for task in body["tasks"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


async def test_filters_combine_statuses_and_a_half_open_created_range(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """status takes several values (repeated or comma-separated, any of them), and
    created_after/created_before keep created_at in [after, before); filters AND together."""
    a = await _task(db, 0, status="submitted")
    b = await _task(db, 1, status="running")
    c = await _task(db, 2, status="failed")
    d = await _task(db, 3, status="running")

    assert await _ids(client, status=["running", "failed"]) == [d, c, b]
    assert await _ids(client, status="running,failed") == [d, c, b]
    window = {"created_after": _at(1).isoformat(), "created_before": _at(3).isoformat()}
    assert await _ids(client, **window) == [c, b]
    assert await _ids(client, status="running", **window) == [b]
    assert await _ids(client, created_before=_at(1).isoformat()) == [a]
    # An offset other than UTC means the same instant; Z spells UTC.
    plus_two = _at(2).astimezone(datetime.now(UTC).astimezone().tzinfo).isoformat()
    assert await _ids(client, created_after=plus_two) == [d, c]
    assert await _ids(client, created_after="2026-03-01T12:03:00Z") == [d]


async def test_sorts_by_created_or_updated_either_way_across_pages(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """sort=-created_at (the default), created_at, -updated_at and updated_at each list every
    task once in that order, ties broken by task_id the same way, a page of two at a time."""
    rows = [
        (await _task(db, 0, updated=9), 0, 9),
        (await _task(db, 1, updated=5), 1, 5),
        (await _task(db, 1, updated=5), 1, 5),  # ties on both keys
        (await _task(db, 2, updated=7), 2, 7),
        (await _task(db, 3, updated=3), 3, 3),
    ]

    def expected(key: int, descending: bool) -> list[str]:
        return [r[0] for r in sorted(rows, key=lambda r: (r[key], r[0]), reverse=descending)]

    for sort, key, descending in [
        ("-created_at", 1, True),
        ("created_at", 1, False),
        ("-updated_at", 2, True),
        ("updated_at", 2, False),
    ]:
        pages = await _walk(client, sort=sort, limit=2)
        assert [len(page) for page in pages] == [2, 2, 1], sort
        assert [i for page in pages for i in page] == expected(key, descending), sort
    assert await _ids(client) == expected(1, True)


@pytest.mark.parametrize("sort", ["-created_at", "created_at"])
async def test_pages_neither_repeat_nor_skip_when_tasks_arrive_between_them(
    client: httpx.AsyncClient, db: asyncpg.Connection, sort: str
) -> None:
    """Tasks created between two pages (newer than all, or at the very instant of the
    page's last task) never repeat a task already listed nor hide one not yet listed: the
    cursor is a place in the order, not a number of rows to skip."""
    first = [await _task(db, minute) for minute in range(6)]

    page = (await client.get("/tasks", params={"sort": sort, "limit": 3})).json()
    seen = [task["task_id"] for task in page["tasks"]]
    boundary = page["tasks"][-1]["created_at"]
    newer = await _task(db, 60)
    same_instant = str(
        await insert_task(db, created_at=datetime.fromisoformat(boundary), task_id=uuid.UUID(int=0))
    )
    rest = [i for p in await _walk(client, cursor=page["next_cursor"], limit=2) for i in p]

    listed = seen + rest
    assert len(listed) == len(set(listed)), "a task was listed twice"
    assert set(first) <= set(listed), "a task that was there all along was skipped"
    # Rows behind the cursor in the listing's order come on later pages; rows before it
    # (already passed) do not.
    if sort == "created_at":
        assert newer in rest and same_instant not in rest  # uuid 0 sorts before the boundary
    else:
        assert newer not in rest and same_instant in rest


async def test_a_cursor_continues_in_its_own_order_and_refuses_another(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """next_cursor carries its sort: passed alone it goes on in that order; passed with a
    different sort it is a 422 naming query.sort."""
    ids = [await _task(db, minute) for minute in range(3)]
    first = (await client.get("/tasks", params={"sort": "created_at", "limit": 1})).json()

    assert await _ids(client, cursor=first["next_cursor"]) == ids[1:]
    assert await _ids(client, cursor=first["next_cursor"], sort="created_at") == ids[1:]
    response = await client.get(
        "/tasks", params={"cursor": first["next_cursor"], "sort": "-updated_at"}
    )
    assert response.status_code == 422
    assert error_fields(response.json()) == ["query.sort"]


async def test_q_searches_descriptions_with_stemming_and_web_syntax(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """q is Postgres full-text search on the description in English: "reported errors"
    finds "reports ... error", a quoted phrase keeps word order, -word excludes, and OR
    widens; stop words alone find nothing rather than everything."""
    report = await _task(db, 0, description="Write reports about the error handling")
    phrase = await _task(db, 1, description="Summarise the error reports of last week")
    other = await _task(db, 2, description="Translate the onboarding guide into German")

    assert await _ids(client, q="reported errors") == [phrase, report]
    assert await _ids(client, q='"error reports"') == [phrase]
    assert await _ids(client, q="error -week") == [report]
    assert await _ids(client, q="guides OR summarised") == [other, phrase]
    assert await _ids(client, q="the") == []
    assert await _ids(client, q="report", status="failed") == []


async def test_bad_values_are_422_naming_the_parameter(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """Each bad filter, sort or cursor is refused with a VALIDATION_ERROR naming it."""
    await _task(db, 0)
    alert_cursor = PageCursor(Order("raised_at"), T0, "6f1c:STALLED:1").encode()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"status": "done"}, "query.status.0"),
        ({"status": "running,done"}, "query.status.1"),
        ({"status": ",".join(["running"] * 21)}, "query.status"),  # more than any filter has
        ({"created_after": "yesterday"}, "query.created_after"),
        ({"created_after": "2026-03-01T12:00:00"}, "query.created_after"),  # no offset
        (
            {"created_before": "2026-03-01T12:00:00Z", "created_after": "2026-03-02T00:00:00Z"},
            "query.created_before",
        ),
        ({"q": ""}, "query.q"),
        ({"q": "   "}, "query.q"),
        ({"q": "x" * 201}, "query.q"),
        ({"q": "a\x00b"}, "query.q"),  # Postgres text holds no NUL
        ({"playbook": ""}, "query.playbook"),
        ({"playbook": "x\x00"}, "query.playbook"),
        ({"sort": "description"}, "query.sort"),
        ({"sort": "+created_at"}, "query.sort"),
        ({"cursor": alert_cursor}, "query.cursor"),  # a listing of alerts, not of tasks
    ]
    for params, field in cases:
        response = await client.get("/tasks", params=params)
        assert response.status_code == 422, params
        assert response.json()["error"]["code"] == "VALIDATION_ERROR", params
        assert error_fields(response.json()) == [field], params


async def test_get_task_answers_304_while_its_etag_is_current(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """GET /tasks/{task_id} carries a strong ETag; If-None-Match with it (alone, weak, in a
    list, or *) is a 304 with no body and the same ETag; once the task moves on, the old tag
    gets the full body and a new tag; an unknown task is a 404 even with *."""
    task_id = await _task(db, 0)

    first = await client.get(f"/tasks/{task_id}")
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        cached = await client.get(f"/tasks/{task_id}", headers={"If-None-Match": header})
        assert cached.status_code == 304, header
        assert cached.content == b"" and cached.headers["etag"] == etag
    other = await client.get(f"/tasks/{task_id}", headers={"If-None-Match": '"other"'})
    assert other.status_code == 200 and other.json() == first.json()

    await db.execute(
        "UPDATE tasks SET status = 'running', last_offset = last_offset + 1 WHERE task_id = $1",
        uuid.UUID(task_id),
    )
    moved = await client.get(f"/tasks/{task_id}", headers={"If-None-Match": etag})
    assert moved.status_code == 200 and moved.json()["status"] == "running"
    assert moved.headers["etag"] != etag
    missing = await client.get(f"/tasks/{uuid.uuid4()}", headers={"If-None-Match": "*"})
    assert missing.status_code == 404


@pytest.mark.usefixtures("projector")
async def test_projected_tasks_filter_by_playbook_and_their_etag_follows_every_event(
    client: httpx.AsyncClient, producer: EventProducer
) -> None:
    """Through the projector: playbook= finds a task by the shipped playbook it was
    submitted with, by its inline playbook's name, or by the playbook its plan was built
    from; q finds a projected description. The ETag changes with an event that changes
    only the task's steps (not its row), and ?wait_for= still works with If-None-Match."""
    named = _submitted("Write a research report", {"playbook": "research_report"})
    inline = _submitted("Run my own steps", {"playbook": {"name": "my_steps", "steps": []}})
    planned = _submitted("Summarise the quarterly numbers", None)
    plan = planned.derive(
        PlanCreated(
            playbook="summarize",
            stages=[
                PlanStage(
                    id="s1",
                    role="writer",
                    tools=["text.summarize"],
                    tool_version="1.0.0",
                    timeout=60,
                )
            ],
        ),
        step="plan.created",
        actor=USER,
    )
    # Tasks land on different partitions: wait for the last event of each.
    for event in (named, inline, planned, plan):
        position = await producer.publish(event)
        await _ids(client, wait_for=str(position), limit=1)

    async def listed(**params: Any) -> list[str]:
        return await _ids(client, **params)

    assert await listed(playbook="research_report") == [str(named.task_id)]
    assert await listed(playbook="my_steps") == [str(inline.task_id)]
    assert await listed(playbook="summarize") == [str(planned.task_id)]
    assert await listed(q="quarterly numbers") == [str(planned.task_id)]
    detail = await client.get(f"/tasks/{planned.task_id}")
    assert detail.json()["playbook"] == "summarize"
    etag = detail.headers["etag"]

    started = await producer.publish(
        plan.derive(
            StepStarted(
                stage_id="s1",
                attempt=1,
                tool="text.summarize",
                tool_version="1.0.0",
                input={},
                idempotency_key="s1:1",
            ),
            step="s1:1",
            actor=USER,
        )
    )
    after = await client.get(
        f"/tasks/{planned.task_id}",
        params={"wait_for": str(started)},
        headers={"If-None-Match": etag},
    )
    assert after.status_code == 200 and after.headers["etag"] != etag
    assert after.json()["steps"][0]["status"] == "running"
    same = await client.get(
        f"/tasks/{planned.task_id}",
        params={"wait_for": str(started)},
        headers={"If-None-Match": after.headers["etag"]},
    )
    assert same.status_code == 304


def _submitted(description: str, constraints: dict[str, Any] | None) -> Event:
    return Event.new(
        TaskSubmitted(description=description, constraints=constraints, timeout=60),
        tenant_id="default",
        actor=USER,
        task_id=uuid.uuid4(),
    )
