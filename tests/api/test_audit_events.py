"""GET /audit/events: the tenant's events on both logs, from the archive, decoded by the
codec, oldest first, a keyset page at a time, with filters."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from events import (
    Actor,
    ApiKeyUsed,
    Codec,
    Event,
    EventProducer,
    KeyUse,
    Position,
    TaskFailedV1,
    TaskSubmitted,
    UsageRecorded,
    role_scopes,
)
from tests.api._support import TEST_KEY_ID, archive, error_fields, seed_api_key
from tests.projections.conftest import eventually
from wrenchai.settings import Settings

pytestmark = pytest.mark.usefixtures("db", "topics")

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ALICE = Actor(kind="user", id="alice")
BOB = Actor(kind="user", id="bob")


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _cursor(key: list[Any]) -> str:
    """A cursor in this API's form around ``key``, as a client could forge one."""
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


@pytest.fixture
async def seeded(db: asyncpg.Connection, settings: Settings, codec: Codec) -> dict[str, Event]:
    """Events of two tenants on both logs, archived as the projector archives them: two
    tasks of the caller's tenant, a v1 task.failed, a security fact on wrench.admin, a
    duplicate (kept for offsets' sake, never listed) and another tenant's task."""
    task_a, task_b = uuid.uuid4(), uuid.uuid4()
    events = {
        "a": Event.new(
            TaskSubmitted(description="secret plan"),
            tenant_id="default",
            actor=ALICE,
            task_id=task_a,
            occurred_at=_at(0),
        ),
        "b": Event.new(
            UsageRecorded(
                operation="plan", model="m", input_tokens=1, output_tokens=2, total_tokens=3
            ),
            tenant_id="default",
            actor=Actor(kind="agent", id="super-agent"),
            task_id=task_a,
            occurred_at=_at(1),
        ),
        "c": Event.new(
            TaskFailedV1(reason="worker crashed"),
            tenant_id="default",
            actor=Actor(kind="agent", id="journey-agent"),
            task_id=task_a,
            occurred_at=_at(2),
        ),
        "d": Event.new(
            TaskSubmitted(description="another"),
            tenant_id="default",
            actor=BOB,
            task_id=task_b,
            occurred_at=_at(2),
        ),
        "e": Event.new(
            ApiKeyUsed(uses=[KeyUse(key_id="k1", last_used_at=_at(1))]),
            tenant_id="default",
            actor=Actor(kind="system", id="api"),
            occurred_at=_at(2),
        ),
        "other": Event.new(
            TaskSubmitted(description="not yours"),
            tenant_id="elsewhere",
            actor=ALICE,
            task_id=uuid.uuid4(),
            occurred_at=_at(1),
        ),
    }
    await archive(db, settings, codec, events["a"], Position(0, 0))
    await archive(db, settings, codec, events["b"], Position(0, 1))
    await archive(db, settings, codec, events["c"], Position(0, 2))
    await archive(db, settings, codec, events["a"], Position(0, 3), status="duplicate")
    await archive(db, settings, codec, events["d"], Position(1, 0))
    await archive(db, settings, codec, events["other"], Position(2, 0))
    await archive(db, settings, codec, events["e"], Position(0, 0), topic="admin")
    return events


async def listing(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    """Every event the listing gives for ``params``, following the cursors."""
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/audit/events", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        found += body["events"]
        cursor = body["next_cursor"]
        if cursor is None:
            return found


def ids(events: list[dict[str, Any]]) -> list[str]:
    return [e["id"] for e in events]


async def test_the_trail_is_both_logs_oldest_first_decoded_and_of_the_callers_tenant(
    client: httpx.AsyncClient, settings: Settings, seeded: dict[str, Event]
) -> None:
    """The caller's tenant's applied events on wrench.events and wrench.admin, oldest first
    with (topic, partition, offset) breaking ties, decrypted and upcast from the logged
    bytes, each with its topic and position; duplicates and other tenants' are left out."""
    events = await listing(client)

    s = seeded
    assert ids(events) == [str(s[k].id) for k in ("a", "b", "e", "c", "d")]
    first = events[0]
    assert first["payload"]["description"] == "secret plan"
    assert first["topic"] == settings.topic("events") and first["position"] == "0:0"
    assert first["actor"] == {"kind": "user", "id": "alice"}
    assert events[2]["topic"] == settings.topic("admin")
    failed = events[3]
    assert failed["schema_version"] == 2
    assert failed["payload"] == {"reason": "UNSPECIFIED", "message": "worker crashed", "errors": []}
    assert all(e["tenant_id"] == "default" for e in events)
    response = await client.get("/audit/events")
    assert "served_from_the_payload_column" not in response.text


async def test_pages_follow_one_another_without_repeats_while_events_arrive(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    codec: Codec,
    seeded: dict[str, Event],
) -> None:
    """limit=2 pages through the same order with an opaque cursor; an event archived between
    two pages that sorts after the cursor comes on a later page, and none repeats."""
    first = (await client.get("/audit/events", params={"limit": 2})).json()
    assert len(first["events"]) == 2 and first["next_cursor"]
    late = Event.new(
        TaskSubmitted(description="late"),
        tenant_id="default",
        actor=BOB,
        task_id=uuid.uuid4(),
        occurred_at=_at(9),
    )
    await archive(db, settings, codec, late, Position(1, 1))

    rest = await listing(client, limit=2, cursor=first["next_cursor"])

    everything = ids(first["events"]) + ids(rest)
    s = seeded
    assert everything == [str(s[k].id) for k in ("a", "b", "e", "c", "d")] + [str(late.id)]


async def test_filters_by_time_type_actor_and_task(
    client: httpx.AsyncClient, seeded: dict[str, Event]
) -> None:
    """from is inclusive and to exclusive; type may repeat or list types with commas; actor
    is KIND or KIND:ID; task_id keeps one task's events; filters combine."""
    s = seeded

    async def found(**params: Any) -> list[str]:
        return ids(await listing(client, **params))

    def of(*keys: str) -> list[str]:
        return [str(s[k].id) for k in keys]

    assert await found(**{"from": _at(1).isoformat(), "to": _at(2).isoformat()}) == of("b")
    assert await found(**{"from": "2026-01-01T00:00:02"}) == of("e", "c", "d")  # naive is UTC
    assert await found(type="task.submitted,task.failed") == of("a", "c", "d")
    assert await found(type=["task.submitted", "task.failed"]) == of("a", "c", "d")
    assert await found(actor="agent") == of("b", "c")
    assert await found(actor="agent:journey-agent") == of("c")
    assert await found(actor="user:alice") == of("a")
    assert await found(actor="system:api") == of("e")
    assert await found(task_id=str(s["a"].task_id)) == of("a", "b", "c")
    assert await found(task_id=str(s["a"].task_id), type="task.submitted") == of("a")
    assert await found(task_id=str(s["other"].task_id)) == []


async def test_bad_cursors_ranges_types_and_actors_are_422(client: httpx.AsyncClient) -> None:
    """Each bad parameter is a 422 in the error shape naming it."""
    cases: list[tuple[dict[str, Any], str]] = [
        ({"cursor": "bm90LW91cnM"}, "query.cursor"),
        ({"from": _at(5).isoformat(), "to": _at(5).isoformat()}, "query.to"),
        ({"from": _at(5).isoformat(), "to": _at(1).isoformat()}, "query.to"),
        ({"type": "task.submitted,no.such"}, "query.type"),
        ({"actor": "robot:r2"}, "query.actor"),
        ({"actor": "user:"}, "query.actor"),
        ({"actor": "user:a\x00b"}, "query.actor"),
        ({"cursor": _cursor([_at(1).isoformat(), "wrench.events", 2**40, 0])}, "query.cursor"),
        ({"limit": 0}, "query.limit"),
        ({"task_id": "nope"}, "query.task_id"),
    ]
    for params, field in cases:
        response = await client.get("/audit/events", params=params)
        assert response.status_code == 422, (params, response.text)
        body = response.json()
        assert body["error"]["code"] == "VALIDATION_ERROR"
        assert field in error_fields(body), (params, body)


@pytest.mark.usefixtures("projector")
async def test_what_the_api_and_the_agents_log_is_audited_and_refusals_too(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    producer: EventProducer,
) -> None:
    """Through the real projector: a submitted task (wrench.events), an API key issued
    (wrench.admin) and a viewer's refused call to the trail itself (access.denied) are all
    in the admin's trail, attributed to who caused them; another tenant's event is not."""
    submitted = (await client.post("/tasks", json={"description": "audit me"})).json()
    issued = await client.post("/api-keys", json={"name": "ci", "scopes": ["tasks:read"]})
    assert issued.status_code == 201, issued.text
    viewer = await seed_api_key(db, settings, scopes=sorted(role_scopes("viewer")))
    refused = await client.get("/audit/events", headers={"X-API-Key": viewer})
    assert refused.status_code == 403
    await producer.publish(
        Event.new(
            TaskSubmitted(description="x"),
            tenant_id="elsewhere",
            actor=ALICE,
            task_id=uuid.uuid4(),
        )
    )

    async def trail() -> list[dict[str, Any]]:
        return await listing(client)

    async def complete() -> bool:
        return {"task.submitted", "apikey.issued", "access.denied"} <= {
            e["type"] for e in await trail()
        }

    await eventually(complete)
    events = {e["type"]: e for e in await trail()}
    me = {"kind": "user", "id": f"apikey:{TEST_KEY_ID}"}
    task = events["task.submitted"]
    assert task["task_id"] == submitted["task_id"] and task["position"] == submitted["position"]
    assert task["actor"] == me and task["topic"] == settings.topic("events")
    assert events["apikey.issued"]["actor"] == me
    assert events["apikey.issued"]["topic"] == settings.topic("admin")
    denied = events["access.denied"]["payload"]
    assert denied["reason"] == "missing_scope" and denied["scope"] == "audit:read"
    assert all(e["tenant_id"] == "default" for e in await trail())
    mine = await listing(client, actor=f"user:apikey:{TEST_KEY_ID}", type="apikey.issued")
    assert [e["type"] for e in mine] == ["apikey.issued"]
