"""Shredding a tenant on the real broker and Postgres: its keys are destroyed, tenant.shredded
is recorded, the read models show ``[shredded]``, its later events are still applied (never
poison), a rebuild keeps them shredded, the hash chain still verifies, and other tenants are
untouched. Rotation from the command line keeps every event readable."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from events import (
    SHREDDED,
    Actor,
    ApiKeyIssued,
    Codec,
    Event,
    EventProducer,
    TaskSubmitted,
    UserCreated,
)
from projections import rebuild_all, verify_chain
from tests.events.execution_samples import execution_story
from tests.events.planning_samples import planning_events
from tests.projections.conftest import eventually
from tests.projections.shredding_support import key_command, keyed, projectors
from wrenchai._cli_crypto import ShredRefused, shred_event_id, shred_tenant
from wrenchai.errors import ConfigurationError
from wrenchai.settings import Settings

USER = Actor(kind="user", id="alice")
OPERATOR = Actor(kind="system", id="cli:tests")
DOOMED, KEPT = "doomed", "kept"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return keyed(settings)


def submitted(tenant_id: str, description: str) -> Event:
    return Event.new(
        TaskSubmitted(description=description, constraints={"secret": "hunter2"}, timeout=60),
        tenant_id=tenant_id,
        actor=USER,
        task_id=uuid.uuid4(),
    )


def identity(tenant_id: str) -> list[Event]:
    """A user and an API key of the tenant, whose hashes travel encrypted."""
    return [
        Event.new(
            UserCreated(
                user_id=f"{tenant_id}-alice",
                username=f"alice@{tenant_id}",
                role="admin",
                password_hash="$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
            ),
            tenant_id=tenant_id,
            actor=OPERATOR,
        ),
        Event.new(
            ApiKeyIssued(
                key_id=f"{tenant_id}-key",
                prefix="abcdefghijk" + ("a" if tenant_id == DOOMED else "b"),
                secret_hash="keyed-hash-of-the-secret",
                name="ci",
                scopes=["tasks:read"],
            ),
            tenant_id=tenant_id,
            actor=OPERATOR,
        ),
    ]


async def applied(db: asyncpg.Connection, ids: list[uuid.UUID]) -> bool:
    found = await db.fetchval(
        "SELECT count(*) FROM event_log WHERE id = ANY($1::uuid[]) AND status = 'applied'", ids
    )
    return bool(found == len(ids))


async def publish_all(producer: EventProducer, events: list[Event]) -> None:
    for event in events:
        await producer.publish(event)


async def task_row(db: asyncpg.Connection, task_id: uuid.UUID | None) -> asyncpg.Record:
    row = await db.fetchrow(
        "SELECT description, constraints, status FROM tasks WHERE task_id = $1", task_id
    )
    assert row is not None
    return row


async def test_shredding_clears_the_read_models_and_later_events_still_apply(
    settings: Settings, db: asyncpg.Connection, producer: EventProducer, codec: Codec
) -> None:
    """Before: readable. After: every read model holding the tenant's content says
    ``[shredded]``; events written before the shredding and arriving after it are applied
    with ``[shredded]`` fields, none is poison; another tenant keeps everything."""
    first, kept = submitted(DOOMED, "the merger memo"), submitted(KEPT, "the kept memo")
    before = [first, *planning_events(first), kept, *planning_events(kept)]
    # In flight: encrypted with the doomed tenant's key before it is destroyed.
    late_task = submitted(DOOMED, "a memo still on its way")
    late = [*execution_story(first).events, late_task, *planning_events(late_task)]
    await codec.prepare_events(late)
    in_flight = [codec.encode(e) for e in late]

    async with projectors(settings):
        await publish_all(producer, [*before, *identity(DOOMED), *identity(KEPT)])
        await eventually(lambda: applied(db, [e.id for e in before]))
        assert (await task_row(db, first.task_id))["description"] == "the merger memo"

        outcome = await shred_tenant(settings, DOOMED, OPERATOR, "erasure request")
        assert outcome.shredding.keys_destroyed == 1 and outcome.projected
        assert (
            await db.fetchval("SELECT count(*) FROM tenant_keys WHERE tenant_id = $1", DOOMED) == 0
        )

        await producer.send_records(settings.topic("events"), in_flight)
        await eventually(lambda: applied(db, [e.id for e in late]))

    assert await db.fetchval("SELECT count(*) FROM event_log WHERE status = 'poison'") == 0
    row = await task_row(db, first.task_id)
    assert (row["description"], row["constraints"], row["status"]) == (
        SHREDDED,
        SHREDDED,
        "completed",
    )
    assert (await task_row(db, late_task.task_id))["description"] == SHREDDED
    thoughts = await db.fetch(
        "SELECT DISTINCT text FROM task_thoughts WHERE tenant_id = $1", DOOMED
    )
    assert [r["text"] for r in thoughts] == [SHREDDED]
    stages = await db.fetch(
        "SELECT task_id, tool_input, inputs, success_criteria FROM task_stages"
        " WHERE tenant_id = $1",
        DOOMED,
    )
    assert stages and {r["task_id"] for r in stages} == {first.task_id}
    for stage in stages:
        assert stage["tool_input"] == SHREDDED
        assert set(stage["inputs"]) <= {SHREDDED} and set(stage["success_criteria"]) <= {SHREDDED}
    assert (
        await db.fetchval("SELECT password_hash FROM users WHERE tenant_id = $1", DOOMED)
        == SHREDDED
    )
    assert (
        await db.fetchval("SELECT secret_hash FROM api_keys WHERE tenant_id = $1", DOOMED)
        == SHREDDED
    )
    assert (
        await db.fetchval("SELECT status FROM tenants WHERE tenant_id = $1", DOOMED) == "shredded"
    )

    kept_row = await task_row(db, kept.task_id)
    assert (kept_row["description"], kept_row["constraints"]) == (
        "the kept memo",
        {"secret": "hunter2"},
    )
    kept_texts = await db.fetch("SELECT text FROM task_thoughts WHERE tenant_id = $1", KEPT)
    assert SHREDDED not in {r["text"] for r in kept_texts}
    assert (
        await db.fetchval("SELECT password_hash FROM users WHERE tenant_id = $1", KEPT) != SHREDDED
    )

    report = await verify_chain(settings)
    assert report.ok, str(report)


async def test_tenant_shredded_is_recorded_once_on_the_admin_log(
    settings: Settings, db: asyncpg.Connection, producer: EventProducer
) -> None:
    """Shredding again destroys nothing more and publishes the same event id, which the
    projector keeps as a duplicate."""
    await producer.publish(submitted(DOOMED, "memo"))
    async with projectors(settings):
        first = await shred_tenant(settings, DOOMED, OPERATOR, "erasure request")
        again = await shred_tenant(settings, DOOMED, OPERATOR, "erasure request")
        await eventually(lambda: _archived_copies(db, shred_event_id(DOOMED)), timeout_s=30)
    assert first.shredding.first and not again.shredding.first
    assert again.shredding.keys_destroyed == first.shredding.keys_destroyed == 1
    assert first.event_id == again.event_id == shred_event_id(DOOMED)
    row = await db.fetchrow(
        "SELECT topic, payload FROM event_log WHERE id = $1", shred_event_id(DOOMED)
    )
    assert row is not None and row["topic"] == settings.topic("admin")
    assert row["payload"] == {"reason": "erasure request", "keys_destroyed": 1}


async def _archived_copies(db: asyncpg.Connection, event_id: uuid.UUID) -> bool:
    """Both copies of the event archived: one applied, one duplicate."""
    rows = await db.fetch(
        """SELECT status FROM event_log WHERE type = 'tenant.shredded'
           AND (id = $1 OR error = $2)""",
        event_id,
        f"duplicate of event {event_id}",
    )
    return sorted(r["status"] for r in rows) == ["applied", "duplicate"]


async def test_a_rebuild_after_shredding_keeps_the_content_shredded_and_the_keys(
    settings: Settings, db: asyncpg.Connection, producer: EventProducer
) -> None:
    """Replayed without the tenant's keys, its events fill the fresh tables with
    ``[shredded]``; the key store is no read model, so the rebuild leaves it alone."""
    doomed, kept = submitted(DOOMED, "the merger memo"), submitted(KEPT, "the kept memo")
    events = [doomed, *planning_events(doomed), kept, *planning_events(kept)]
    async with projectors(settings):
        await publish_all(producer, events)
        await eventually(lambda: applied(db, [e.id for e in events]))
        await shred_tenant(settings, DOOMED, OPERATOR, None)
        await rebuild_all(settings)
    assert (await task_row(db, doomed.task_id))["description"] == SHREDDED
    assert (await task_row(db, kept.task_id))["description"] == "the kept memo"
    assert await db.fetchval("SELECT count(*) FROM task_stages WHERE tenant_id = $1", DOOMED) == 0
    assert await db.fetchval("SELECT count(*) FROM tenant_keys WHERE tenant_id = $1", KEPT) == 1
    assert (
        await db.fetchval("SELECT keys_destroyed FROM tenant_keyrings WHERE tenant_id = $1", DOOMED)
        == 1
    )


async def test_shredding_needs_master_keys_and_a_tenant_id(
    settings: Settings, db: asyncpg.Connection
) -> None:
    legacy_only = settings.model_copy(update={"master_keys": None})
    with pytest.raises(ConfigurationError, match="WRENCH_MASTER_KEYS"):
        await shred_tenant(legacy_only, DOOMED, OPERATOR)
    with pytest.raises(ShredRefused, match="_system"):
        await shred_tenant(settings, "_system", OPERATOR)
    assert await db.fetchval("SELECT count(*) FROM tenant_keyrings") == 0


async def test_rotate_and_shred_commands_as_an_operator_runs_them(
    settings: Settings, db: asyncpg.Connection, producer: EventProducer, codec: Codec
) -> None:
    """`keys rotate` gives every tenant a new key and keeps old events readable; `tenant
    shred` asks for confirmation, and with --yes destroys the keys and says so."""
    old = submitted(KEPT, "written before the rotation")
    await producer.publish(old)
    await producer.publish(submitted(DOOMED, "memo"))
    old_value = codec.encode(old).value

    rotated = await key_command(settings, "rotate")
    assert rotated.returncode == 0, rotated.stderr
    assert f"new data key for 2 tenant(s): {DOOMED}, {KEPT}" in rotated.stdout
    assert "4 data key(s) now wrapped by master key" in rotated.stdout
    await codec.prepare_records([old_value])
    assert codec.decode(old_value) == old

    refused = await key_command(settings, "shred", DOOMED)
    assert refused.returncode != 0 and "Aborted" in refused.stderr
    assert await db.fetchval("SELECT count(*) FROM tenant_keys WHERE tenant_id = $1", DOOMED) == 2

    async with projectors(settings):
        shredded = await key_command(settings, "shred", DOOMED, "--yes", "--reason", "erasure")
    assert shredded.returncode == 0, shredded.stderr
    assert f"tenant {DOOMED} shredded: 2 data key(s) destroyed" in shredded.stdout
    assert "not applied" not in shredded.stdout
    assert await db.fetchval("SELECT count(*) FROM tenant_keys WHERE tenant_id = $1", DOOMED) == 0

    by_tenant = await key_command(settings, "rotate", "--tenant", KEPT)
    assert by_tenant.returncode == 0, by_tenant.stderr
    assert await db.fetchval("SELECT count(*) FROM tenant_keys WHERE tenant_id = $1", KEPT) == 3
