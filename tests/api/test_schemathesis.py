"""The API against its own OpenAPI schema, fuzzed by schemathesis over HTTP: a real API
process on the real broker and Postgres, authenticated as an admin of the default tenant,
a bounded number of generated requests per operation. No answer may be a 5xx, use an
undocumented status, or violate its documented schema."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from events import (
    SYSTEM,
    Event,
    EventProducer,
    TenantCreated,
    bootstrap_topics,
    codec_from_settings,
    generate_key,
)
from projections import migrate
from tests.api._support import api_process, projector_process, seed_api_key
from tests.conftest import _with_database
from tests.projections.conftest import eventually
from wrenchai.embedded import EmbeddedBroker
from wrenchai.settings import Settings

MAX_EXAMPLES = 12
CHECKS = (
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
)


@dataclass(frozen=True)
class LiveApi:
    base: str
    api_key: str


@pytest.fixture(scope="module")
async def live_api(broker: EmbeddedBroker, postgres_url: str) -> AsyncIterator[LiveApi]:
    """One API process for the whole module, on its own database and topics."""
    name = f"wrench_fuzz_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    config = Settings(
        kafka_bootstrap=broker.bootstrap,
        namespace=f"f{uuid.uuid4().hex[:10]}.",
        partitions=3,
        database_url=_with_database(postgres_url, name),
        encryption_keys=generate_key(),  # type: ignore[arg-type]
        jwt_secret="fuzz-jwt-secret-" + "x" * 32,  # type: ignore[arg-type]
        api_key_pepper="fuzz-pepper",  # type: ignore[arg-type]
        read_wait_timeout_s=0.2,
        kafka_session_timeout_ms=6_000,
        kafka_rebalance_timeout_ms=6_000,
        kafka_fetch_max_wait_ms=20,
        projector_batch_ms=20,
        # Fuzzing writes far more often than a person: the write limit is not under test.
        write_rate_limit="100000/minute",
    )
    await bootstrap_topics(config)
    conn = await asyncpg.connect(config.database_dsn())
    try:
        await migrate(conn)
        key = await seed_api_key(conn, config)
    finally:
        await conn.close()
    # Processes, not tasks: the fuzzing test is synchronous and blocks this event loop.
    async with projector_process(config):
        await _projector_joined(config)
        async with api_process(config) as base:
            yield LiveApi(base, key)
    admin = await asyncpg.connect(postgres_url)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


async def _projector_joined(config: Settings) -> None:
    """Wait until the projector applies identity events, so commands do not time out on
    its first group join ."""
    producer = EventProducer(config, codec_from_settings(config))
    try:
        await producer.publish(
            Event.new(TenantCreated(name="warm"), tenant_id="warm", actor=SYSTEM)
        )
    finally:
        await producer.stop()
    conn = await asyncpg.connect(config.database_dsn())
    try:

        async def applied() -> bool:
            return bool(await conn.fetchval("SELECT 1 FROM tenants WHERE tenant_id = 'warm'"))

        await eventually(applied)
    finally:
        await conn.close()


def test_every_operation_answers_within_its_schema(live_api: LiveApi) -> None:
    """For every operation, generated requests, valid and not, never get a 5xx nor an
    answer outside the operation's documented statuses, content types and schemas."""
    schema = schemathesis.openapi.from_url(f"{live_api.base}/openapi.json")
    schema.config.base_url = live_api.base
    failures: dict[str, str] = {}
    tried = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        tried += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def exercise(case: schemathesis.Case) -> None:
            case.call_and_validate(headers={"X-API-Key": live_api.api_key}, checks=CHECKS)

        try:
            exercise()
        except Exception as exc:  # every operation is tried; the failures are listed at the end
            failures[operation.label] = str(exc)[:2_000]
    assert tried >= 20, "the schema lost operations"
    assert not failures, "\n\n".join(f"{label}:\n{error}" for label, error in failures.items())
