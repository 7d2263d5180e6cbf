"""What a request costs the API beyond its own work: requests whose credential's cache
entry has expired share one lookup."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from api import create_app
from api.security._authenticator import _TtlCache
from tests.api._support import seed_api_key, serve
from wrenchai.settings import Settings


# -- one lookup per credential at a time ---------------------------------------------------------
async def test_requests_with_an_expired_credential_share_one_lookup(
    settings: Settings, db: asyncpg.Connection, topics: dict[str, int]
) -> None:
    """Twenty requests at once, after their key's cache entry has expired, read the key and
    its tenant from Postgres once, not twenty times each."""
    settings = settings.model_copy(update={"principal_cache_ttl_s": 0.2})
    key = await seed_api_key(db, settings)
    app = create_app(settings)
    async with serve(settings, app, api_key=key) as client:
        authenticator = app.state.resources.authenticator
        queries: list[str] = []
        fetch = authenticator._fetch

        async def counted(sql: str, *args: Any) -> Any:
            queries.append(sql.split("FROM ")[1].split()[0])
            await asyncio.sleep(0.05)  # a slow read, so that every request arrives during it
            return await fetch(sql, *args)

        authenticator._fetch = counted
        assert (await client.get("/auth/me")).status_code == 200
        await asyncio.sleep(0.3)  # past the TTL
        queries.clear()
        answers = await asyncio.gather(*(client.get("/auth/me") for _ in range(20)))
    assert [a.status_code for a in answers] == [200] * 20
    assert sorted(queries) == ["api_keys", "tenants"]


async def test_a_failed_lookup_fails_every_waiter_and_is_read_again() -> None:
    """A read that fails is not cached: each caller waiting on it gets the error, and the
    next get reads again."""
    reads = 0

    async def load(key: str) -> str:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.01)
        if reads == 1:
            raise ConnectionError("postgres went away")
        return f"value of {key}"

    cache = _TtlCache[str](1.0, load)
    first = await asyncio.gather(*(cache.get("k") for _ in range(5)), return_exceptions=True)
    assert all(isinstance(outcome, ConnectionError) for outcome in first)
    assert await cache.get("k") == "value of k"
    assert reads == 2


async def test_a_caller_that_goes_away_does_not_cancel_the_read_for_the_others() -> None:
    """The read runs on its own: cancelling the request that started it leaves it to the
    requests still waiting, and its answer is cached."""
    reads = 0

    async def load(key: str) -> str:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.05)
        return "row"

    cache = _TtlCache[str](1.0, load)
    starter = asyncio.create_task(cache.get("k"))
    await asyncio.sleep(0.01)
    waiter = asyncio.create_task(cache.get("k"))
    await asyncio.sleep(0.01)
    starter.cancel()
    assert await waiter == "row"
    assert await cache.get("k") == "row"
    assert reads == 1


async def test_forget_during_a_read_makes_the_next_get_read_afresh() -> None:
    """A refresh must see the session as it is now: after forget, a read already in flight
    answers its own callers only, and the next get reads again."""
    values = iter(["before", "after"])

    async def load(key: str) -> str:
        value = next(values)
        await asyncio.sleep(0.02)
        return value

    cache = _TtlCache[str](10.0, load)
    early = asyncio.create_task(cache.get("s"))
    await asyncio.sleep(0.005)
    cache.forget("s")
    assert await cache.get("s") == "after"
    assert await early == "before"
    assert await cache.get("s") == "after"  # the older read did not overwrite the newer
