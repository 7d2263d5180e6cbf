"""WRENCH_TEST_BACKEND picks where the tests' broker and Postgres come from: embedded (the
default, and the only one run here), external, or testcontainers. A wrong choice stops the
session at once with its fix; none of these checks needs Docker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.backends import Backend, BackendError, select_backend
from wrenchai.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_embedded_is_the_default_and_turns_idempotent_producers_off() -> None:
    """Nothing set: the embedded broker, which refuses InitProducerId, so the session runs
    with WRENCH_KAFKA_IDEMPOTENT=false."""
    for environ in ({}, {"WRENCH_TEST_BACKEND": ""}, {"WRENCH_TEST_BACKEND": "embedded"}):
        backend = select_backend(environ)
        assert backend.name == "embedded"
        assert backend.environment == {"WRENCH_KAFKA_IDEMPOTENT": "false"}


def test_an_unknown_backend_is_refused_with_the_known_ones() -> None:
    with pytest.raises(BackendError, match=r"'kafka'.*embedded, external, testcontainers"):
        select_backend({"WRENCH_TEST_BACKEND": "kafka"})


def test_external_needs_the_broker_and_the_database_it_names() -> None:
    """external without its variables names the missing ones and their form."""
    with pytest.raises(BackendError, match="WRENCH_TEST_KAFKA_BOOTSTRAP and DATABASE_URL"):
        select_backend({"WRENCH_TEST_BACKEND": "external"})
    with pytest.raises(BackendError, match="needs DATABASE_URL: "):
        select_backend({"WRENCH_TEST_BACKEND": "external", "WRENCH_TEST_KAFKA_BOOTSTRAP": "k:9"})
    given = {
        "WRENCH_TEST_BACKEND": "external",
        "WRENCH_TEST_KAFKA_BOOTSTRAP": "kafka.test:9092",
        "DATABASE_URL": "postgresql://tests@db.test:5432/postgres",
    }
    assert select_backend(given) == Backend(
        "external",
        kafka_bootstrap="kafka.test:9092",
        database_url="postgresql://tests@db.test:5432/postgres",
    )


def test_testcontainers_without_a_docker_engine_says_so(tmp_path: Path) -> None:
    """No engine at DOCKER_HOST: a clear failure that names where it looked and the other
    backends, before any test runs."""
    nowhere = f"unix://{tmp_path / 'docker.sock'}"
    with pytest.raises(BackendError, match="needs a Docker engine, and none answers at") as err:
        select_backend({"WRENCH_TEST_BACKEND": "testcontainers", "DOCKER_HOST": nowhere})
    assert nowhere in str(err.value) and "WRENCH_TEST_BACKEND=embedded" in str(err.value)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"WRENCH_TEST_BACKEND": "bogus"}, "WRENCH_TEST_BACKEND='bogus' is not a test backend"),
        ({"WRENCH_TEST_BACKEND": "external"}, "WRENCH_TEST_BACKEND=external needs"),
        (
            {"WRENCH_TEST_BACKEND": "testcontainers", "DOCKER_HOST": "unix:///nonexistent.sock"},
            "WRENCH_TEST_BACKEND=testcontainers needs a Docker engine",
        ),
    ],
)
def test_a_session_with_a_backend_it_cannot_use_stops_before_any_test(
    environ: dict[str, str], message: str
) -> None:
    """pytest exits with a usage error (4) and the message, having run nothing."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DOCKER_HOST")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "0", "-q", "-p", "no:cacheprovider",
         "tests/deploy/test_backends.py::test_an_unknown_backend_is_refused_with_the_known_ones"],
        cwd=ROOT, env={**env, **environ}, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    assert message in result.stderr
    assert "passed" not in result.stdout


def test_the_sessions_settings_follow_what_its_broker_allows(
    backend: Backend, settings: Settings
) -> None:
    """The settings every test gets, and any it makes itself, use idempotent producers only
    where the broker takes them: never on the embedded broker."""
    expected = backend.name != "embedded" and os.environ.get("WRENCH_KAFKA_IDEMPOTENT") != "false"
    assert settings.kafka_idempotent is expected
    assert Settings().kafka_idempotent is expected
