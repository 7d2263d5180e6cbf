"""Settings come from WRENCH_ variables (and *_FILE for secrets); the docs list every one."""

from __future__ import annotations

from pathlib import Path

import pytest

from wrenchai.settings import Settings, settings_markdown


def test_settings_read_wrench_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """WRENCH_PARTITIONS and friends land on the settings object, typed."""
    monkeypatch.setenv("WRENCH_PARTITIONS", "12")
    monkeypatch.setenv("WRENCH_NAMESPACE", "staging.")
    settings = Settings()
    assert settings.partitions == 12
    assert settings.topic("events") == "staging.wrench.events"
    assert settings.group("projector") == "staging.wrench-projector"


def test_secret_file_variant_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """WRENCH_ENCRYPTION_KEYS_FILE names a file whose content becomes the key list."""
    secret = tmp_path / "keys"
    secret.write_text("new-key, old-key\n")
    monkeypatch.delenv("WRENCH_ENCRYPTION_KEYS", raising=False)
    monkeypatch.setenv("WRENCH_ENCRYPTION_KEYS_FILE", str(secret))
    assert Settings().fernet_keys() == ["new-key", "old-key"]


def test_invalid_setting_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A partition count of zero is refused with the field named."""
    monkeypatch.setenv("WRENCH_PARTITIONS", "0")
    with pytest.raises(ValueError, match="partitions"):
        Settings()


def test_to_env_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    """A child process reading to_env() gets the same settings back."""
    original = Settings(namespace="x.", partitions=4, encryption_keys="k1,k2")  # type: ignore[arg-type]
    for name, value in original.to_env().items():
        monkeypatch.setenv(name, value)
    assert Settings() == original


def test_setup_doc_lists_every_setting(repo_root: Path) -> None:
    """docs/setup.md carries the current settings table, under "Every setting"."""
    assert settings_markdown() in (repo_root / "docs" / "setup.md").read_text(), (
        "docs/setup.md's settings table is stale: replace it with the output of "
        "`.venv/bin/wrenchai settings`"
    )


def test_settings_table_is_kept_in_one_place(repo_root: Path) -> None:
    """No other page keeps a copy of the table to go stale: they link to docs/setup.md."""
    row = "| `WRENCH_KAFKA_BOOTSTRAP` |"
    pages = [repo_root / "README.md", *sorted((repo_root / "docs").glob("*.md"))]
    copies = [page.name for page in pages if page.name != "setup.md" and row in page.read_text()]
    assert copies == [], f"a copy of the settings table in {copies}; link to docs/setup.md"
