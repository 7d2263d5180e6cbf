"""Helpers for the API tests: run an app on given settings, seed read models, read the log."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from fastapi import FastAPI

from api import create_app
from api.security import TokenService, api_key_pepper, hash_secret, new_api_key
from events import Codec, Event, Position, create_consumer, role_scopes
from projections import headers_to_json
from wrenchai.embedded import free_port
from wrenchai.settings import Settings

START = Position(0, 0)


ADMIN_SCOPES = sorted(role_scopes("admin"))
TEST_KEY_ID = "test-admin-key"
"""The key id of the test client's API key; events it causes have the actor
``apikey:test-admin-key``."""


@asynccontextmanager
async def serve(
    settings: Settings, app: FastAPI | None = None, *, api_key: str | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """A client talking to the app in process, with the app's lifespan running around it,
    sending ``api_key`` with every request when given."""
    app = app or create_app(settings)
    headers = {"X-API-Key": api_key} if api_key else {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api.test", headers=headers
        ) as client:
            yield client


async def seed_tenant(db: asyncpg.Connection, tenant_id: str = "default") -> None:
    """A tenants row, as the projector writes it from tenant.created."""
    await db.execute(
        """INSERT INTO tenants (tenant_id, name, created_at, event_id) VALUES ($1, $1, now(), $2)
           ON CONFLICT DO NOTHING""",
        tenant_id,
        uuid.uuid4(),
    )


async def seed_api_key(
    db: asyncpg.Connection,
    settings: Settings,
    *,
    tenant_id: str = "default",
    scopes: list[str] | None = None,
    user_id: str | None = None,
    key_id: str | None = None,
) -> str:
    """An API key of ``tenant_id`` written straight into the read model, as the projector
    writes it from apikey.issued; returns the token to send."""
    await seed_tenant(db, tenant_id)
    new = new_api_key()
    pepper = api_key_pepper(settings, TokenService(settings))
    await db.execute(
        """INSERT INTO api_keys (key_id, tenant_id, prefix, secret_hash, name, scopes, user_id,
               created_by, created_at, event_id)
           VALUES ($1, $2, $3, $4, 'test key', $5, $6, 'system:tests', now(), $7)""",
        key_id or uuid.uuid4().hex,
        tenant_id,
        new.prefix,
        hash_secret(pepper, new.secret),
        ADMIN_SCOPES if scopes is None else scopes,
        user_id,
        uuid.uuid4(),
    )
    return new.token


async def insert_task(
    db: asyncpg.Connection,
    *,
    task_id: uuid.UUID | None = None,
    tenant_id: str = "default",
    status: str = "submitted",
    created_at: datetime | None = None,
    description: str = "seeded task",
    constraints: dict[str, Any] | None = None,
    position: Position = START,
) -> uuid.UUID:
    """A tasks row written directly, as the projector would have written it."""
    task_id = task_id or uuid.uuid4()
    created_at = created_at or datetime.now(UTC)
    await db.execute(
        """INSERT INTO tasks (task_id, tenant_id, description, constraints, timeout, status,
               created_at, updated_at, last_event_id, last_partition, last_offset)
           VALUES ($1, $2, $3, $4, 3600, $5, $6, $6, $7, $8, $9)""",
        task_id,
        tenant_id,
        description,
        constraints,
        status,
        created_at,
        uuid.uuid4(),
        position.partition,
        position.offset,
    )
    return task_id


async def set_projector_offset(
    db: asyncpg.Connection, settings: Settings, partition: int, next_offset: int
) -> None:
    """Record that the projector has committed everything before ``next_offset``."""
    await db.execute(
        """INSERT INTO consumer_offsets (group_id, topic, partition, next_offset)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (group_id, topic, partition) DO UPDATE SET next_offset = $4""",
        settings.group("projector"),
        settings.topic("events"),
        partition,
        next_offset,
    )


async def read_record(settings: Settings, position: Position) -> ConsumerRecord[bytes, bytes]:
    """The record at ``position`` on wrench.events, straight from the broker."""
    tp = TopicPartition(settings.topic("events"), position.partition)
    consumer = create_consumer(settings)
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, position.offset)
        async with asyncio.timeout(15):
            while True:
                batch = await consumer.getmany(tp, timeout_ms=200)
                for record in batch.get(tp, []):
                    if record.offset == position.offset:
                        return record
    finally:
        await consumer.stop()


def error_fields(body: dict[str, Any]) -> list[str]:
    """The field paths a validation error body names."""
    return [e["field"] for e in body["error"]["details"]["errors"]]


async def archive(
    db: asyncpg.Connection,
    settings: Settings,
    codec: Codec,
    event: Event,
    position: Position,
    *,
    topic: str = "events",
    status: str = "applied",
) -> None:
    """An event_log row holding ``event`` as the projector archives it from ``topic``: the
    record's raw bytes and headers, and a ``payload`` column that must never be served (it
    is garbage)."""
    record = codec.encode(event)
    applied = status == "applied"
    await db.execute(
        """INSERT INTO event_log (topic, partition, "offset", status, id, type, schema_version,
               task_id, tenant_id, occurred_at, payload, raw_key, raw_value, raw_headers,
               prev_hash, hash)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15)""",
        settings.topic(topic),
        position.partition,
        position.offset,
        status,
        event.id if applied else None,
        event.type,
        event.schema_version,
        event.task_id,
        event.tenant_id,
        event.occurred_at,
        {"served_from_the_payload_column": True},
        record.key,
        record.value,
        headers_to_json(record.headers),
        b"\x00" * 32,
    )


async def _wrenchai(settings: Settings, *args: str) -> asyncio.subprocess.Process:
    """``wrenchai ARGS`` as a child process on ``settings``."""
    env = {**os.environ, **settings.to_env(), "WRENCH_LOG_LEVEL": "warning"}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wrenchai",
        *args,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


@asynccontextmanager
async def projector_process(settings: Settings) -> AsyncIterator[None]:
    """The projector as its own process, for tests whose own code blocks the event loop."""
    proc = await _wrenchai(settings, "projector")
    try:
        yield
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 30)


@asynccontextmanager
async def api_process(settings: Settings) -> AsyncIterator[str]:
    """A real API process (``wrenchai api``) on ``settings``, as a deployment runs several;
    yields its base URL once it answers /health."""
    port = free_port()
    proc = await _wrenchai(settings, "api", "--port", str(port))
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:
            deadline = asyncio.get_running_loop().time() + 60
            while True:
                try:
                    if (await client.get("/health")).status_code in (200, 503):
                        break
                except httpx.HTTPError:
                    pass
                assert proc.returncode is None, "the API process exited"
                assert asyncio.get_running_loop().time() < deadline, "no API after 60 s"
                await asyncio.sleep(0.2)
        yield base
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 15)
