"""API keys through the API: issued once, used, listed without secrets, revoked (and
refused by a second API process within two seconds), expired, and tracked when used."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from tests.api._support import api_process, seed_api_key, serve
from tests.projections.conftest import eventually
from wrenchai.settings import Settings

pytestmark = pytest.mark.usefixtures("topics", "projector")


async def _issue(client: httpx.AsyncClient, **body: object) -> dict[str, object]:
    response = await client.post("/api-keys", json={"name": "ci", **body})
    assert response.status_code == 201, response.text
    issued: dict[str, object] = response.json()
    return issued


async def test_a_key_is_shown_once_works_at_once_and_lists_without_its_secret(
    client: httpx.AsyncClient, settings: Settings, db: asyncpg.Connection
) -> None:
    """POST /api-keys answers the key once, and it works on the next request (the answer
    waits for the projector); the list names it without the secret or its hash; the log
    and the read model hold only a keyed hash."""
    issued = await _issue(client, scopes=["tasks:read"])
    token = str(issued["key"])
    assert token.startswith(f"wr_{issued['prefix']}_")
    for header in ({"X-API-Key": token}, {"Authorization": f"Bearer {token}"}):
        async with serve(settings) as other:
            me = await other.get("/auth/me", headers=header)
            assert me.status_code == 200, me.text
            assert me.json()["scopes"] == ["tasks:read"]
            assert (
                await other.post("/tasks", json={"description": "x"}, headers=header)
            ).status_code == 403
    listed = await client.get("/api-keys")
    assert listed.status_code == 200
    secret = token.rsplit("_", 1)[1]
    assert secret not in listed.text and "secret_hash" not in listed.text
    [row] = [k for k in listed.json()["keys"] if k["key_id"] == issued["key_id"]]
    assert row["name"] == "ci" and row["revoked_at"] is None
    raw = await db.fetch("SELECT raw_value FROM event_log WHERE type = 'apikey.issued'")
    assert raw and all(secret.encode() not in r["raw_value"] for r in raw)
    stored = await db.fetchval(
        "SELECT secret_hash FROM api_keys WHERE key_id = $1", issued["key_id"]
    )
    assert stored != secret and len(stored) == 64


async def test_a_key_cannot_hold_more_than_its_issuer(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """An operator's key with keys:admin (given for the test) cannot issue a key with
    users:admin, which it lacks: 403 naming the scope; an unknown scope is refused too."""
    key = await seed_api_key(db, settings, scopes=["keys:admin", "tasks:read"])
    async with serve(settings, api_key=key) as client:
        beyond = await client.post(
            "/api-keys", json={"name": "x", "scopes": ["tasks:read", "users:admin"]}
        )
        unknown = await client.post("/api-keys", json={"name": "x", "scopes": ["root"]})
        default = await _issue(client)
    assert beyond.status_code == 403
    assert beyond.json()["error"]["details"]["beyond"] == ["users:admin"]
    assert unknown.status_code == 422
    assert default["scopes"] == ["keys:admin", "tasks:read"]


@pytest.fixture
async def second_api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Another API process on the same broker and database, as a load balancer would have."""
    async with (
        api_process(settings) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as client,
    ):
        yield client


async def test_a_revoked_key_is_refused_by_another_api_process_within_two_seconds(
    client: httpx.AsyncClient, second_api: httpx.AsyncClient
) -> None:
    """The second process has just used the key (so it holds it in its cache) when the
    first revokes it; the second refuses it within two seconds."""
    issued = await _issue(client, scopes=["tasks:read"])
    header = {"X-API-Key": str(issued["key"])}
    assert (await second_api.get("/tasks", headers=header)).status_code == 200
    revoked = await client.delete(f"/api-keys/{issued['key_id']}")
    assert revoked.status_code == 204
    started = time.monotonic()
    while (await second_api.get("/tasks", headers=header)).status_code == 200:
        assert time.monotonic() - started < 2.0, "still accepted after two seconds"
        await asyncio.sleep(0.05)
    refused = await second_api.get("/tasks", headers=header)
    assert refused.status_code == 401
    listed = (await client.get("/api-keys")).json()["keys"]
    assert [k["revoked_at"] is not None for k in listed if k["key_id"] == issued["key_id"]] == [
        True
    ]
    again = await client.delete(f"/api-keys/{issued['key_id']}")
    assert again.status_code in (204, 404)


async def test_an_expired_key_is_refused(client: httpx.AsyncClient, settings: Settings) -> None:
    """A key past its expires_at is a 401 like any bad credential."""
    await _issue(client)  # the projector's first group join, out of the timing below
    soon = datetime.now(UTC) + timedelta(seconds=2)
    issued = await _issue(client, scopes=["tasks:read"], expires_at=soon.isoformat())
    header = {"X-API-Key": str(issued["key"])}
    async with serve(settings) as other:
        assert (await other.get("/tasks", headers=header)).status_code == 200
        await asyncio.sleep(max((soon - datetime.now(UTC)).total_seconds(), 0) + 0.2)
        assert (await other.get("/tasks", headers=header)).status_code == 401


async def test_last_used_is_recorded_in_batches_not_per_request(
    client: httpx.AsyncClient, settings: Settings, db: asyncpg.Connection
) -> None:
    """Many requests with a key publish no event each; when the process hands in its
    batch (here: on shutdown) one apikey.used sets last_used_at."""
    issued = await _issue(client, scopes=["tasks:read"])
    header = {"X-API-Key": str(issued["key"])}
    before = await db.fetchval("SELECT count(*) FROM event_log WHERE type = 'apikey.used'")
    async with serve(settings) as other:
        for _ in range(20):
            assert (await other.get("/tasks", headers=header)).status_code == 200
        during = await db.fetchval("SELECT count(*) FROM event_log WHERE type = 'apikey.used'")
        assert during == before

    async def recorded() -> bool:
        used = await db.fetchval(
            "SELECT last_used_at FROM api_keys WHERE key_id = $1", issued["key_id"]
        )
        return used is not None

    await eventually(recorded)
    uses = await db.fetchval("SELECT count(*) FROM event_log WHERE type = 'apikey.used'")
    assert uses - before <= 2  # one batch per process that used it, not twenty
