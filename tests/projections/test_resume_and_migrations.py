"""The projector survives a kill -9 mid-stream; migrations survive two processes at once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import asyncpg

from events import EventProducer
from projections import migrate, verify_chain
from projections._db import connect
from projections._migrate import available
from tests.projections.conftest import archived, eventually, submitted
from wrenchai.settings import Settings

TOTAL = 5_000


def _start_projector(settings: Settings) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings.model_copy(update={"projector_batch_size": 100}).to_env()}
    return subprocess.Popen(
        [sys.executable, "-m", "wrenchai", "projector"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_projector_killed_mid_stream_loses_and_doubles_nothing(
    settings: Settings, producer: EventProducer, db: asyncpg.Connection
) -> None:
    """5,000 events, kill -9 after about 2,000: a new projector finishes with every event once."""
    events = [submitted(f"bulk task {i}") for i in range(TOTAL)]
    for start in range(0, TOTAL, 1000):
        await producer.publish_many(events[start : start + 1000])

    first = _start_projector(settings)
    try:

        async def some_archived() -> bool:
            return await archived(db) >= 2_000

        await eventually(some_archived, timeout_s=120)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        first.kill()
    at_kill = await archived(db)
    assert 2_000 <= at_kill < TOTAL, "the kill must land mid-stream"

    second = _start_projector(settings)
    try:

        async def all_archived() -> bool:
            return await archived(db) >= TOTAL

        await eventually(all_archived, timeout_s=180)
        await asyncio.sleep(1)  # anything doubled would show up now
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(15) == 0

    assert await archived(db) == TOTAL
    assert await db.fetchval("SELECT count(DISTINCT id) FROM event_log") == TOTAL
    assert await db.fetchval("SELECT count(*) FROM tasks") == TOTAL
    stored = await db.fetchval("SELECT sum(next_offset) FROM consumer_offsets")
    assert stored == TOTAL
    assert (await verify_chain(settings)).ok


async def test_concurrent_migrations_apply_each_migration_once(settings: Settings) -> None:
    """Two processes migrating at once: the advisory lock serialises them, nothing fails."""
    first, second = await connect(settings), await connect(settings)
    try:
        results = await asyncio.gather(migrate(first), migrate(second))
        names = [name for _, name, _ in available()]
        assert sorted(results, key=len) == [[], names]
        rows = await first.fetch("SELECT name FROM schema_migrations ORDER BY version")
        assert [r["name"] for r in rows] == names
        assert await migrate(first) == []
    finally:
        await first.close()
        await second.close()
