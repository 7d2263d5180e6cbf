"""API fixtures: the app with its lifespan on the test's broker and database, and the
projector running beside it for tests that read their own writes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from projections import run_projector
from tests.api._support import TEST_KEY_ID, seed_api_key, serve
from wrenchai.settings import Settings


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared test settings with room for the projector's first group join (about 3 s on
    the embedded broker) inside a read's ``?wait_for=``."""
    return settings.model_copy(
        update={
            "read_wait_timeout_s": 20.0,
            "jwt_secret": SecretStr("test-jwt-secret-" + "x" * 32),
            "api_key_pepper": SecretStr("test-api-key-pepper"),
        }
    )


@pytest.fixture
async def client(
    settings: Settings, db: asyncpg.Connection, topics: dict[str, int]
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app, on migrated tables and created topics, sending an API key of
    the default tenant that holds every scope an admin holds."""
    api_key = await seed_api_key(db, settings, key_id=TEST_KEY_ID)
    async with serve(settings, api_key=api_key) as http:
        yield http


@pytest.fixture
async def projector(
    settings: Settings, db: asyncpg.Connection, topics: dict[str, int]
) -> AsyncIterator[None]:
    """The real projector consuming the test's wrench.events into its database."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_projector(settings, stop=stop))
    yield
    stop.set()
    await asyncio.wait_for(task, 60)
