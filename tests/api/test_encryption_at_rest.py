"""Encryption at rest, searched in the bytes: no sensitive field of any event type reaches the
broker or the archive in clear; and a shredded tenant's history still answers 200, with
``[shredded]`` where its content was."""

from __future__ import annotations

import asyncio
import copy
import typing
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import ValidationError

from api.models import Shredded
from events import (
    IDENTITY_TYPES,
    SHREDDED,
    Actor,
    ApiKeyIssued,
    Codec,
    Event,
    EventPayload,
    EventProducer,
    LoginFailed,
    PostgresKeyStore,
    TaskSubmitted,
    UserCreated,
    catalog,
)
from tests.events.execution_samples import executed_task
from tests.events.planning_samples import PLANNING_PAYLOADS
from tests.events.samples import PAYLOADS
from tests.events.topic_reader import read_topic
from tests.projections.conftest import eventually
from tests.projections.shredding_support import keyed, projectors
from wrenchai._cli_crypto import shred_tenant
from wrenchai.settings import Settings

USER = Actor(kind="user", id="alice")
TENANT = "acme"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return keyed(settings)


# -- samples with a canary in every sensitive field ----------------------------------------
def _identity_samples() -> list[EventPayload]:
    return [
        UserCreated(
            user_id="u1", username="alice", role="viewer", password_hash="$argon2id$v=19$hash"
        ),
        ApiKeyIssued(
            key_id="k1",
            prefix="abcdefghijkl",
            secret_hash="keyed-hash",
            name="ci",
            scopes=["tasks:read"],
        ),
        LoginFailed(username="alice typed her password here", reason="bad_credentials"),
    ]


def samples() -> dict[str, EventPayload]:
    """One payload of every sampled event type, from the shared samples."""
    found: dict[str, EventPayload] = {**PAYLOADS, **PLANNING_PAYLOADS}
    submitted = Event.new(PAYLOADS["task.submitted"], tenant_id=TENANT, actor=USER)
    for event in executed_task(submitted):
        found.setdefault(event.type, event.payload)
    for payload in _identity_samples():
        found[payload.event_type] = payload
    return found


def _string_leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, str):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _string_leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _string_leaves(item, (*path, index))


def _set(root: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    target: Any = root
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value


def _get(root: dict[str, Any], path: tuple[Any, ...]) -> Any:
    target: Any = root
    for step in path:
        target = target[step]
    return target


def with_canary(model: type[EventPayload], sample: EventPayload, name: str, canary: str) -> Any:
    """``sample`` as ``model`` with ``canary`` in field ``name``: appended to every string in
    it that the schema still accepts so (a Literal does not), or the field made the canary."""
    data = {k: v for k, v in sample.model_dump(mode="json").items() if k in model.model_fields}
    if not list(_string_leaves(data.get(name))):
        data[name] = canary if not isinstance(data.get(name), dict) else {"note": canary}
    original = copy.deepcopy(data)
    changed = {(name, *leaf) for leaf in _string_leaves(data[name])}
    for path in changed:
        _set(data, path, f"{_get(data, path)} {canary}")
    for _ in range(50):
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            refused = {tuple(e["loc"]) for e in exc.errors()}
            reverted = {p for p in changed if any(p[: len(r)] == r for r in refused)}
            if not reverted:
                raise
            for path in reverted:
                _set(data, path, _get(original, path))
            changed -= reverted
    raise AssertionError(f"no canary fits in {model.__name__}.{name}")


def canaried_events() -> dict[str, tuple[Event, str]]:
    """An event of every model in the catalog that has sensitive fields (every version), one
    per field, each with its own canary; keyed by the canary."""
    found = samples()
    events: dict[str, tuple[Event, str]] = {}
    for model in catalog:
        for name in model.sensitive_fields():
            sample = found.get(model.event_type)
            assert sample is not None, f"add a sample of {model.event_type} to tests/events"
            canary = f"canary-{uuid.uuid4().hex}"
            payload = with_canary(model, sample, name, canary)
            assert canary in payload.model_dump_json(), f"{model.__name__}.{name} has no canary"
            event = Event.new(payload, tenant_id=TENANT, actor=USER, task_id=uuid.uuid4())
            if model.event_type in IDENTITY_TYPES:
                event = event.model_copy(update={"task_id": None})
            events[canary] = (event, f"{model.event_type} v{model.schema_version} {name}")
    return events


async def test_no_sensitive_field_reaches_the_broker_or_the_archive_in_clear(
    settings: Settings, db: asyncpg.Connection, producer: EventProducer, codec: Codec
) -> None:
    """Every sensitive field of every event type (each version) carries a canary; neither
    the raw records on wrench.events and wrench.admin nor the archive's raw_value and payload
    columns hold any of them, while decoding gives each back."""
    events = canaried_events()
    assert {label.split()[0] for _, label in events.values()} >= {
        "task.submitted",
        "task.completed",
        "plan.created",
        "thought.recorded",
        "step.started",
        "tool.returned",
        "step.completed",
        "user.created",
        "apikey.issued",
        "login.failed",
    }
    async with projectors(settings):
        for event, _ in events.values():
            await producer.publish(event)
        ids = [e.id for e, _ in events.values()]
        await eventually(lambda: _archived(db, ids))

    on_admin = sum(e.type in IDENTITY_TYPES for e, _ in events.values())
    records = [
        *await read_topic(settings, settings.topic("events"), len(events) - on_admin),
        *await read_topic(settings, settings.topic("admin"), on_admin),
    ]
    assert len(records) == len(events)
    rows = await db.fetch("SELECT raw_value, payload::text AS payload FROM event_log")
    assert len(rows) == len(events)
    for canary, (_, label) in events.items():
        needle = canary.encode()
        assert not any(needle in r.value for r in records), f"{label} is in clear on the broker"
        assert not any(needle in (v or b"") for r in records for _, v in r.headers), label
        assert not any(needle in r["raw_value"] for r in rows), f"{label} in clear in raw_value"
        assert not any(canary in r["payload"] for r in rows), f"{label} in clear in payload"
    await codec.prepare_records(r.value for r in records)
    clear = b"".join(codec.decode(r.value).model_dump_json().encode() for r in records)
    assert all(canary.encode() in clear for canary in events)


async def _archived(db: asyncpg.Connection, ids: list[uuid.UUID]) -> bool:
    found = await db.fetchval("SELECT count(*) FROM event_log WHERE id = ANY($1::uuid[])", ids)
    return bool(found == len(ids))


# -- a shredded tenant's history -----------------------------------------------------------
async def test_a_shredded_tenants_history_and_tasks_answer_200_with_shredded_fields(
    settings: Settings,
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    producer: EventProducer,
    codec: Codec,
) -> None:
    """Once the tenant's keys are destroyed, GET /tasks/{id}/events decodes its events with
    ``[shredded]`` in place of their content (not a 500), and a task whose submission was
    still on its way when the keys went reads ``[shredded]`` in GET /tasks/{id}. When the
    projector applies tenant.shredded, what it had projected in clear is cleared too."""
    assert typing.get_args(Shredded) == (SHREDDED,)
    async with projectors(settings):
        posted = await client.post(
            "/tasks", json={"description": "the merger memo", "constraints": {"k": "secret"}}
        )
        assert posted.status_code == 202, posted.text
        task_id, position = posted.json()["task_id"], posted.json()["position"]
        read = await client.get(f"/tasks/{task_id}", params={"wait_for": position})
        assert read.json()["description"] == "the merger memo"

        on_its_way = Event.new(
            TaskSubmitted(description="still on its way", constraints={"k": "v"}, timeout=60),
            tenant_id="default",
            actor=USER,
            task_id=uuid.uuid4(),
        )
        await codec.prepare_events([on_its_way])
        record = codec.encode(on_its_way)

        await PostgresKeyStore(settings).destroy("default", "erasure request")
        # As `tenant shred` does: every process has forgotten the keys after their TTL.
        await asyncio.sleep(settings.key_cache_ttl_s)
        await eventually(lambda: _history_shredded(client, task_id), timeout_s=10)

        history = await client.get(f"/tasks/{task_id}/events")
        assert history.status_code == 200, history.text
        payload = history.json()["events"][0]["payload"]
        assert (payload["description"], payload["constraints"]) == (SHREDDED, SHREDDED)
        assert history.json()["events"][0]["task_id"] == task_id

        [landed] = await producer.send_records(settings.topic("events"), [record])
        late = await client.get(f"/tasks/{on_its_way.task_id}", params={"wait_for": str(landed)})
        assert late.status_code == 200, late.text
        assert (late.json()["description"], late.json()["constraints"]) == (SHREDDED, SHREDDED)
        listed = await client.get("/tasks")
        assert listed.status_code == 200, listed.text

        await shred_tenant(settings, "default", Actor(kind="system", id="cli:tests"))
    row = await db.fetchrow(
        "SELECT description, constraints FROM tasks WHERE task_id = $1", uuid.UUID(task_id)
    )
    assert row is not None and (row["description"], row["constraints"]) == (SHREDDED, SHREDDED)


async def _history_shredded(client: httpx.AsyncClient, task_id: str) -> bool:
    history = await client.get(f"/tasks/{task_id}/events")
    return bool(history.json()["events"][0]["payload"]["description"] == SHREDDED)
