"""The maintenance commands work as a user runs them: a process, settings from WRENCH_ vars."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import asyncpg

from events import EventProducer
from projections._migrate import available
from projections._read_models import owned_tables
from tests.projections.conftest import archived, eventually, submitted
from tests.projections.tampering import tampering
from wrenchai.settings import Settings


async def _wrenchai(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings.to_env()}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "wrenchai", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_topics_create_and_migrate_commands(settings: Settings) -> None:
    """`topics create` reports the three topics; `migrate` applies once, then nothing."""
    created = await _wrenchai(settings, "topics", "create")
    assert created.returncode == 0, created.stderr
    assert f"{settings.topic('events')}: 3 partitions" in created.stdout
    assert f"{settings.topic('dlq')}: 3 partitions" in created.stdout
    first = await _wrenchai(settings, "migrate")
    assert first.returncode == 0 and f"applied {len(available())} migration(s)" in first.stdout
    again = await _wrenchai(settings, "migrate")
    assert "applied 0 migration(s)" in again.stdout


async def test_partition_mismatch_is_a_clear_command_error(settings: Settings) -> None:
    """An existing topic with another partition count: exit 1, both counts in the message."""
    assert (await _wrenchai(settings, "topics", "create")).returncode == 0
    wider = settings.model_copy(update={"partitions": 5})
    result = await _wrenchai(wider, "topics", "create")
    assert result.returncode == 1
    assert "exists with 3 partitions but WRENCH_PARTITIONS is 5" in result.stderr
    assert "Traceback" not in result.stderr


async def test_audit_verify_and_rebuild_commands(
    settings: Settings,
    producer: EventProducer,
    db: asyncpg.Connection,
    projector: asyncio.Task[None],
) -> None:
    """`audit verify` exits 0 on an intact archive and 1 after tampering; `projections
    rebuild` reports what it replayed."""
    await producer.publish_many([submitted(f"t{i}") for i in range(4)])

    async def four() -> bool:
        return await archived(db) == 4

    await eventually(four)
    ok = await _wrenchai(settings, "audit", "verify")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("OK: 4 record(s) verified")
    rebuilt = await _wrenchai(settings, "projections", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert f"rebuilt {', '.join(owned_tables())} from 4 record(s): 4 applied" in rebuilt.stdout
    async with tampering(db):  # as the database's owner can: the trigger refuses UPDATE
        await db.execute(
            "UPDATE event_log SET raw_value = raw_value || ' '::bytea WHERE \"offset\" = 0"
        )
    broken = await _wrenchai(settings, "audit", "verify")
    assert broken.returncode == 1
    assert broken.stdout.startswith("BROKEN")
