"""Secrets are SecretStr, read from WRENCH_<NAME> or the file WRENCH_<NAME>_FILE names, and the
dev stack hands them to its children as files in the state directory, never as variables."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from wrenchai._state import secret_files
from wrenchai.errors import ConfigurationError
from wrenchai.settings import _SECRET_FIELDS, Settings, settings_markdown
from wrenchai.stack import child_environment

DSN = "postgresql://wrenchai:pg-canary-password@db.internal:5432/wrenchai"

SECRETS = {
    "database_url": DSN,
    # The same password as the URL's: WrenchAI refuses two different ones.
    "database_password": "pg-canary-password",
    "encryption_keys": "ek-canary-7f3a",
    "master_keys": "mk-canary-91bc",
    "jwt_secret": "jwt-canary-secret-that-is-long-enough-0123456789",
    "api_key_pepper": "pepper-canary-55d1",
    "llm_api_key": "sk-llm-canary-2b8e",
    "alert_webhook_secret": "webhook-canary-c4d0",
    "api_key": "cli-api-key-canary-a17e",
    "jwt_private_key": "-----BEGIN PRIVATE KEY-----\ncanary-pem\n-----END PRIVATE KEY-----",
    "checkpoint_signing_key": "-----BEGIN PRIVATE KEY-----\nckpt-canary\n-----END PRIVATE KEY-----",
    "checkpoint_hmac_key": "checkpoint-hmac-canary-9e1f",
    "otlp_headers": "authorization=Bearer otlp-canary-3d6c",
}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No WRENCH_ variable of the machine running the tests leaks into these settings."""
    for name in list(os.environ):
        if name.startswith("WRENCH_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_every_secret_setting_is_listed_as_a_secret() -> None:
    """Each SecretStr field (the database URL too) is one the _FILE reader and the dev stack
    treat as a secret, and nothing else is."""
    secret_typed = {
        name
        for name, info in Settings.model_fields.items()
        if SecretStr in (info.annotation, *getattr(info.annotation, "__args__", ()))
    }
    assert secret_typed == set(_SECRET_FIELDS)
    assert set(SECRETS) == set(_SECRET_FIELDS)


def test_the_database_url_is_a_secret_with_its_value_only_at_the_edge(
    clean_env: pytest.MonkeyPatch,
) -> None:
    """WRENCH_DATABASE_URL is masked in the settings' repr and given in clear only by
    database_dsn(), the call the Postgres driver makes."""
    clean_env.setenv("WRENCH_DATABASE_URL", DSN)
    settings = Settings()
    assert "pg-canary-password" not in repr(settings)
    assert "pg-canary-password" not in str(settings.model_dump())
    assert settings.database_dsn() == DSN


def test_the_database_url_and_the_public_key_are_read_from_their_files(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """WRENCH_DATABASE_URL_FILE and WRENCH_JWT_PUBLIC_KEY_FILE (a PEM file) name files whose
    content, trailing newline stripped, becomes the setting."""
    pem = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkq\n-----END PUBLIC KEY-----"
    (tmp_path / "dsn").write_text(DSN + "\n")
    (tmp_path / "public.pem").write_text(pem + "\n")
    clean_env.setenv("WRENCH_DATABASE_URL_FILE", str(tmp_path / "dsn"))
    clean_env.setenv("WRENCH_JWT_PUBLIC_KEY_FILE", str(tmp_path / "public.pem"))

    settings = Settings()

    assert settings.database_dsn() == DSN
    assert settings.jwt_public_key == pem


def test_an_unreadable_secret_file_is_an_error_that_names_the_variable_and_the_fix(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A _FILE that points at nothing fails the settings with the variable, the path and what
    to do, instead of a bare FileNotFoundError."""
    missing = tmp_path / "nowhere"
    clean_env.setenv("WRENCH_JWT_SECRET_FILE", str(missing))
    with pytest.raises(ValidationError) as raised:
        Settings()
    message = str(raised.value)
    assert "WRENCH_JWT_SECRET_FILE" in message
    assert str(missing) in message
    assert "set WRENCH_JWT_SECRET instead" in message


def test_the_settings_table_names_the_file_variants() -> None:
    """`wrenchai settings` (and so docs/setup.md) tells the reader every secret and the
    public key can come from a _FILE, and shows the database URL's default in clear."""
    table = settings_markdown()
    for name in (*_SECRET_FIELDS, "jwt_public_key"):
        assert f"`WRENCH_{name.upper()}_FILE`" in table
    assert "`postgresql://postgres@127.0.0.1:5432/wrenchai`" in table


def test_children_get_secrets_only_as_private_files_and_read_them_back(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Secrets configured in the supervisor's environment (as variables and as a _FILE
    elsewhere) reach a child as WRENCH_<NAME>_FILE paths to 0600 files in the state
    directory; no value is in the child's environment, and Settings built from that
    environment holds every secret."""
    outside = tmp_path / "mounted-llm-key"
    outside.write_text(SECRETS["llm_api_key"])
    inherited = {"PATH": "/usr/bin:/bin", "WRENCH_LLM_API_KEY_FILE": str(outside)}
    inherited |= {
        f"WRENCH_{name.upper()}": value for name, value in SECRETS.items() if name != "llm_api_key"
    }
    for name, value in inherited.items():
        clean_env.setenv(name, value)
    settings = Settings()
    state_dir = tmp_path / "state"

    env = child_environment(settings, inherited, secret_files(settings, state_dir))

    for name, value in SECRETS.items():
        variable = f"WRENCH_{name.upper()}"
        assert variable not in env
        path = Path(env[f"{variable}_FILE"])
        assert path.parent == state_dir / "secrets"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert not any(value in text for text in env.values()), name
    for name in list(os.environ):
        if name.startswith("WRENCH_"):
            clean_env.delenv(name)
    for name, value in env.items():
        clean_env.setenv(name, value)
    child = Settings()
    for name, value in SECRETS.items():
        secret = getattr(child, name)
        assert isinstance(secret, SecretStr) and secret.get_secret_value() == value


def test_a_secret_without_a_file_stops_the_stack_instead_of_reaching_a_child_as_a_variable(
    clean_env: pytest.MonkeyPatch,
) -> None:
    """A set secret that secret_files did not write is a configuration error: the child would
    otherwise run against the default database or without its key."""
    settings = Settings(llm_api_key=SecretStr("sk-llm-canary"))
    with pytest.raises(ConfigurationError, match="llm_api_key"):
        child_environment(settings, {}, {"database_url": Path("/state/secrets/database_url")})
