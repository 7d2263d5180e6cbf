"""What a request costs the API beyond its own work: no dependency hops to the thread pool,
requests whose credential's cache entry has expired share one lookup, the in-process rate
limiter counts exact moving windows (429 with Retry-After past them, concurrent writes
included), and the API's producer has its own linger."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, APIWebSocketRoute
from limits import parse

from api import create_app
from api.security._authenticator import _TtlCache
from api.security._limits import MovingWindows, RateLimits
from tests.api._support import seed_api_key, serve
from wrenchai.settings import Settings


# -- no thread hop -----------------------------------------------------------------------------
def _dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from _dependencies(sub)


def _is_async(call: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(
        getattr(call, "__call__", None)  # noqa: B004 - a security scheme is an instance
    )


def _routes(routes: list[Any]) -> Iterator[APIRoute | APIWebSocketRoute]:
    """Every route with dependencies, included routers' routes too."""
    for route in routes:
        nested = getattr(route, "original_router", None)
        if nested is not None:
            yield from _routes(nested.routes)
        elif isinstance(route, APIRoute | APIWebSocketRoute):
            yield route


def test_no_dependency_of_any_route_runs_in_the_thread_pool(settings: Settings) -> None:
    """FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop per request:
    every dependency of every route is ``async def``."""
    routes = list(_routes(create_app(settings).routes))
    assert len(routes) > 30
    sync = {
        f"{route.path}: {getattr(dep.call, '__qualname__', dep.call)}"
        for route in routes
        for dep in _dependencies(route.dependant)
        if dep.call is not None and not _is_async(dep.call)
    }
    assert not sync, sorted(sync)


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


# -- rate limits ---------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_a_moving_window_lets_the_amount_through_then_says_when_to_retry() -> None:
    """3/minute: three hits pass, the fourth is told to wait until the first leaves the
    window; once it has, one more passes; another key is not affected."""
    clock = Clock()
    windows = MovingWindows(clock)
    item = parse("3/minute")
    for second in (0, 10, 20):
        clock.now = 1_000.0 + second
        assert windows.hit(item, "a") is None
    clock.now = 1_030.0
    assert windows.hit(item, "a") == pytest.approx(30.0)
    assert windows.blocked(item, "a") == pytest.approx(30.0)
    assert windows.hit(item, "b") is None
    clock.now = 1_060.5  # the hit at 1,000 has left the window
    assert windows.blocked(item, "a") is None
    assert windows.hit(item, "a") is None
    assert windows.hit(item, "a") == pytest.approx(9.5)  # until the hit at 1,010 leaves


def test_blocked_does_not_count_and_clear_forgets() -> None:
    clock = Clock()
    windows = MovingWindows(clock)
    item = parse("2/minute")
    for _ in range(5):
        assert windows.blocked(item, "a") is None
    assert windows.hit(item, "a") is None and windows.hit(item, "a") is None
    assert windows.hit(item, "a") is not None
    windows.clear("a")
    assert windows.hit(item, "a") is None


def test_keys_nobody_uses_any_more_are_dropped() -> None:
    """Made-up user names and addresses do not stay in memory once their window is over."""
    clock = Clock()
    windows = MovingWindows(clock, sweep_interval_s=10.0)
    item = parse("5/minute")
    for n in range(1_000):
        windows.hit(item, f"guess{n}")
    clock.now += 61
    windows.hit(item, "now")
    assert list(windows._windows) == ["now"]


async def test_rate_limits_answer_whole_seconds(settings: Settings) -> None:
    """Retry-After is whole seconds, at least one."""
    limits = RateLimits(settings.model_copy(update={"write_rate_limit": "1/second"}))
    assert await limits.hit(limits.write, "write", "key:a") is None
    assert await limits.hit(limits.write, "write", "key:a") == 1


async def test_concurrent_writes_past_the_limit_get_429_with_retry_after(
    settings: Settings, db: asyncpg.Connection, topics: dict[str, int]
) -> None:
    """Ten writes at once under a limit of four a minute: four are accepted, six are 429
    RATE_LIMITED with a Retry-After within the minute."""
    settings = settings.model_copy(update={"write_rate_limit": "4/minute"})
    key = await seed_api_key(db, settings)
    async with serve(settings, api_key=key) as client:
        answers = await asyncio.gather(
            *(client.post("/tasks", json={"description": f"task {n}"}) for n in range(10))
        )
    accepted = [a for a in answers if a.status_code == 202]
    refused = [a for a in answers if a.status_code == 429]
    assert (len(accepted), len(refused)) == (4, 6)
    for answer in refused:
        assert answer.json()["error"]["code"] == "RATE_LIMITED"
        assert 1 <= int(answer.headers["retry-after"]) <= 60


# -- the API's producer ----------------------------------------------------------------------------
async def test_the_api_producer_lingers_as_the_api_setting_says(
    settings: Settings, topics: dict[str, int]
) -> None:
    """The workers batch with WRENCH_PRODUCER_LINGER_MS; the API, whose writes wait for their
    ack, with WRENCH_API_PRODUCER_LINGER_MS (none by default)."""
    settings = settings.model_copy(update={"producer_linger_ms": 25})
    assert settings.api_producer_linger_ms == 0
    app: FastAPI = create_app(settings)
    async with serve(settings, app) as client:
        assert isinstance(client, httpx.AsyncClient)
        resources = app.state.resources
        assert resources.settings.producer_linger_ms == 25
        assert resources.producer.settings.producer_linger_ms == 0
        producer = await resources.producer._started()
        assert producer._message_accumulator._linger_time == 0
