"""A projector running in the test's event loop, against the test's topics and database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from events import Actor, Event, EventProducer, TaskSubmitted
from projections import run_projector
from wrenchai.settings import Settings

USER = Actor(kind="user", id="alice")


def submitted(description: str = "write a report", tenant_id: str = "acme") -> Event:
    return Event.new(
        TaskSubmitted(description=description, constraints={"max_roles": 2}, timeout=60),
        tenant_id=tenant_id,
        actor=USER,
        task_id=uuid.uuid4(),
    )


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    """Wait until ``check`` holds; fail with a clear message after ``timeout_s``."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(0.05)


@pytest.fixture
async def projector(
    settings: Settings, topics: dict[str, int], db: asyncpg.Connection
) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_projector(settings, stop=stop))
    yield task
    stop.set()
    await asyncio.wait_for(task, 30)


async def archived(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT count(*) FROM event_log"))


__all__ = ["USER", "EventProducer", "archived", "eventually", "submitted"]
