"""WRENCH_DATABASE_PASSWORD (and its _FILE variant, which compose points at the secret the
postgres image reads too): the password goes into a database URL that carries none."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from wrenchai.settings import Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("WRENCH_"):
            monkeypatch.delenv(name)


def test_the_password_file_completes_the_url_quoted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Any character may be in the password: it is quoted into the URL, which every
    connection (database_dsn, or database_url read directly) then carries."""
    secret = tmp_path / "postgres_password"
    secret.write_text("p@ss:w/rd %\n")
    monkeypatch.setenv("WRENCH_DATABASE_URL", "postgresql://wrenchai@postgres:5432/wrenchai")
    monkeypatch.setenv("WRENCH_DATABASE_PASSWORD_FILE", str(secret))
    settings = Settings()
    expected = "postgresql://wrenchai:p%40ss%3Aw%2Frd%20%25@postgres:5432/wrenchai"
    assert settings.database_dsn() == expected
    assert settings.database_url.get_secret_value() == expected
    assert "p@ss" not in repr(settings)


def test_a_url_with_a_password_is_left_alone_and_its_own_password_is_no_conflict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Settings handed to a child process (to_env) carry both: they read back the same."""
    settings = Settings(database_url="postgresql://u@h:5432/d", database_password="a b")  # type: ignore[arg-type]
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    assert Settings() == settings
    assert Settings().database_dsn() == "postgresql://u:a%20b@h:5432/d"


def test_two_different_passwords_are_refused_without_showing_either() -> None:
    with pytest.raises(ValidationError, match="keep the password in one of them") as refused:
        Settings(
            database_url="postgresql://u:first@h/d",  # type: ignore[arg-type]
            database_password="second",  # type: ignore[arg-type]
        )
    assert "first" not in str(refused.value) and "second" not in str(refused.value)


def test_without_a_password_the_url_is_as_given() -> None:
    url = "postgresql://postgres@127.0.0.1:5432/wrenchai"
    assert Settings(database_url=url).database_dsn() == url  # type: ignore[arg-type]
