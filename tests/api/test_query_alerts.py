"""GET /alerts as a query, with the conventions of GET /tasks: filters of one value or several
(level or its other name severity, code, status), task_id, a half-open raised_at range, sort
by raised_at either way, keyset cursors that stay stable while alerts arrive, and 422s that
name the parameter. The rows are seeded as the projector writes them from alert.raised."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from api._keyset import Order, PageCursor
from tests.api._support import error_fields

pytestmark = pytest.mark.usefixtures("db", "topics")

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TASK = uuid.UUID("6f1c2a4e-8b0d-4c1e-9a57-3d2b1f0e4c88")


async def _alert(
    db: asyncpg.Connection,
    minutes: float,
    code: str = "STALLED",
    *,
    level: str = "warning",
    status: str = "open",
    task_id: uuid.UUID = TASK,
    tenant_id: str = "default",
    n: int | None = None,
) -> str:
    """An alerts row raised ``minutes`` after T0; returns its alert_id."""
    alert_id = f"{task_id}:{code}:{n if n is not None else uuid.uuid4().hex[:8]}"
    await db.execute(
        """INSERT INTO alerts (alert_id, task_id, tenant_id, level, code, message, details,
               status, raised_at, cleared_at, event_id, partition, "offset")
           VALUES ($1, $2, $3, $4, $5, 'seeded', '{}', $6, $7, $8, $9, 0, 0)""",
        alert_id,
        task_id,
        tenant_id,
        level,
        code,
        status,
        T0 + timedelta(minutes=minutes),
        T0 + timedelta(minutes=minutes + 1) if status == "cleared" else None,
        uuid.uuid4(),
    )
    return alert_id


async def _ids(client: httpx.AsyncClient, **params: Any) -> list[str]:
    response = await client.get("/alerts", params=params)
    assert response.status_code == 200, response.text
    return [alert["alert_id"] for alert in response.json()["alerts"]]


async def _walk(client: httpx.AsyncClient, **params: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        body = (await client.get("/alerts", params=query)).json()
        pages.append([alert["alert_id"] for alert in body["alerts"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


async def test_filters_take_several_values_a_task_and_a_half_open_raised_range(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """level and severity are one filter (either name, repeated or comma-separated); code
    and status take several values too; task_id and [raised_after, raised_before) narrow;
    everything ANDs, and another tenant's alert never shows."""
    other_task = uuid.uuid4()
    stalled = await _alert(db, 0, "STALLED", status="cleared")
    slow = await _alert(db, 1, "OVERRUN_TIME", level="info")
    low = await _alert(db, 2, "LOW_QUALITY", level="critical", task_id=other_task)
    failing = await _alert(db, 3, "REPEATED_FAILURES", level="critical")
    await _alert(db, 4, "STALLED", level="critical", tenant_id="globex")

    assert await _ids(client) == [failing, low, slow, stalled]
    assert await _ids(client, level="critical") == [failing, low]
    assert await _ids(client, severity="critical,info") == [failing, low, slow]
    assert await _ids(client, level="info", severity="critical") == [failing, low, slow]
    assert await _ids(client, code=["STALLED", "LOW_QUALITY"]) == [low, stalled]
    assert await _ids(client, status="cleared") == [stalled]
    assert await _ids(client, status="open,cleared") == [failing, low, slow, stalled]
    assert await _ids(client, task_id=str(other_task)) == [low]
    window = {"raised_after": "2026-03-01T12:01:00Z", "raised_before": "2026-03-01T12:03:00Z"}
    assert await _ids(client, **window) == [low, slow]
    assert await _ids(client, level="critical", status="open", **window) == [low]


async def test_sorts_by_raised_at_either_way_across_pages_even_while_alerts_arrive(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """sort=-raised_at (the default) and raised_at list every alert once, ties broken by
    alert_id the same way; alerts raised between pages neither repeat nor hide one, and a
    cursor passed alone continues in its own order."""
    rows = [(minute, await _alert(db, minute, n=i)) for i, minute in enumerate((0, 1, 1, 2, 3))]
    ascending = [alert_id for _, alert_id in sorted(rows)]

    up = await _walk(client, sort="raised_at", limit=2)
    assert [len(page) for page in up] == [2, 2, 1]
    assert [i for page in up for i in page] == ascending
    down = await _walk(client, sort="-raised_at", limit=2)
    assert [i for page in down for i in page] == list(reversed(ascending))
    assert await _ids(client) == list(reversed(ascending))

    first = (await client.get("/alerts", params={"sort": "raised_at", "limit": 2})).json()
    newest = await _alert(db, 60)
    rest = [i for page in await _walk(client, cursor=first["next_cursor"], limit=2) for i in page]
    listed = [a["alert_id"] for a in first["alerts"]] + rest
    assert listed == [*ascending, newest]


async def test_bad_values_are_422_naming_the_parameter(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """Each bad filter, sort or cursor is refused with a VALIDATION_ERROR naming it, and an
    existing parameter keeps its meaning (level=loud was a 422 and stays one)."""
    await _alert(db, 0)
    await _alert(db, 1)
    task_cursor = PageCursor(Order("created_at"), T0, str(TASK)).encode()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"level": "loud"}, "query.level.0"),
        ({"severity": "warning,loud"}, "query.severity.1"),
        ({"code": "ON_FIRE"}, "query.code.0"),
        ({"status": "acknowledged"}, "query.status.0"),
        ({"task_id": "not-a-uuid"}, "query.task_id"),
        ({"raised_after": "2026-03-01T12:00:00"}, "query.raised_after"),
        (
            {"raised_after": "2026-03-02T00:00:00Z", "raised_before": "2026-03-01T00:00:00Z"},
            "query.raised_before",
        ),
        ({"sort": "-created_at"}, "query.sort"),
        ({"limit": 0}, "query.limit"),
        ({"cursor": task_cursor}, "query.cursor"),  # a listing of tasks, not of alerts
    ]
    for params, field in cases:
        response = await client.get("/alerts", params=params)
        assert response.status_code == 422, params
        assert response.json()["error"]["code"] == "VALIDATION_ERROR", params
        assert error_fields(response.json()) == [field], params
    first_page = (await client.get("/alerts", params={"sort": "raised_at", "limit": 1})).json()
    clash = await client.get(
        "/alerts", params={"cursor": first_page["next_cursor"], "sort": "-raised_at"}
    )
    assert clash.status_code == 422 and error_fields(clash.json()) == ["query.sort"]
