"""Signing in with a password: tokens, refresh rotation with reuse detection, logout,
disabled users and role changes, failed sign-ins rate limited and recorded, and writes
limited per principal."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest

from tests.api._support import seed_api_key, serve
from tests.projections.conftest import eventually
from wrenchai.settings import Settings

pytestmark = pytest.mark.usefixtures("topics", "projector")

PASSWORD = "a long and boring passphrase"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Limits low enough to reach in a test."""
    return settings.model_copy(
        update={
            "login_rate_limit": "3/minute",
            "login_address_rate_limit": "8/minute",
            "write_rate_limit": "4/minute",
        }
    )


async def _user(client: httpx.AsyncClient, username: str, role: str = "operator") -> str:
    response = await client.post(
        "/users", json={"username": username, "password": PASSWORD, "role": role}
    )
    assert response.status_code == 201, response.text
    user_id: str = response.json()["user_id"]
    return user_id


async def _sign_in(
    client: httpx.AsyncClient, username: str, password: str = PASSWORD
) -> httpx.Response:
    return await client.post(
        "/auth/token",
        data={"username": username, "password": password},
        headers={"X-API-Key": ""},
    )


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "X-API-Key": ""}


async def _submit(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    return await client.post("/tasks", json={"description": "x"}, headers=headers)


async def _refused(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    """The credential is refused within the principal cache's second and the projector's
    batch time."""
    for _ in range(50):
        response = await client.get("/auth/me", headers=headers)
        if response.status_code == 401:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("still accepted after five seconds")


async def test_a_user_signs_in_refreshes_and_signs_out(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """The password grant gives an access and a refresh token; the access token acts as
    the user; the refresh grant gives a new pair; logout ends the session so both the
    access token and the refresh token are refused."""
    user_id = await _user(client, "ana@example.com")
    response = await _sign_in(client, "ana@example.com")
    assert response.status_code == 200, response.text
    pair = response.json()
    assert pair["token_type"] == "bearer" and pair["expires_in"] == 900
    me = (await client.get("/auth/me", headers=_bearer(pair["access_token"]))).json()
    assert (me["user_id"], me["role"], me["credential"]) == (user_id, "operator", "jwt")
    assert "tasks:write" in me["scopes"] and "users:admin" not in me["scopes"]

    refreshed = await client.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": pair["refresh_token"]},
        headers={"X-API-Key": ""},
    )
    assert refreshed.status_code == 200, refreshed.text
    second = refreshed.json()
    assert second["refresh_token"] != pair["refresh_token"]
    assert (
        await client.get("/auth/me", headers=_bearer(second["access_token"]))
    ).status_code == 200

    out = await client.post("/auth/logout", headers=_bearer(second["access_token"]))
    assert out.status_code == 204
    await _refused(client, _bearer(second["access_token"]))
    again = await client.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": second["refresh_token"]},
        headers={"X-API-Key": ""},
    )
    assert again.status_code == 401
    rows = await db.fetch("SELECT type FROM event_log WHERE topic LIKE '%wrench.admin'")
    types = {r["type"] for r in rows}
    assert {
        "user.created",
        "session.started",
        "login.succeeded",
        "session.refreshed",
        "session.revoked",
    } <= types


async def test_reusing_a_spent_refresh_token_ends_the_whole_session(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """A refresh token spent once and presented again (a stolen copy) is refused, and the
    session it belongs to ends: the newest tokens of the family stop working too."""
    await _user(client, "bo@example.com")
    first = (await _sign_in(client, "bo@example.com")).json()
    grant = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    second = (await client.post("/auth/token", data=grant, headers={"X-API-Key": ""})).json()
    reused = await client.post("/auth/token", data=grant, headers={"X-API-Key": ""})
    assert reused.status_code == 401
    await _refused(client, _bearer(second["access_token"]))
    latest = {"grant_type": "refresh_token", "refresh_token": second["refresh_token"]}
    assert (
        await client.post("/auth/token", data=latest, headers={"X-API-Key": ""})
    ).status_code == 401
    reason = await db.fetchval("SELECT revoked_reason FROM auth_sessions")
    assert reason == "refresh_token_reused"


async def test_disabling_a_user_and_changing_a_role_take_effect_at_once(
    client: httpx.AsyncClient,
) -> None:
    """A role change changes the scopes of the user's live token; disabling the user ends
    their sessions and refuses sign-in with the right password."""
    user_id = await _user(client, "cy@example.com", role="viewer")
    pair = (await _sign_in(client, "cy@example.com")).json()
    headers = _bearer(pair["access_token"])
    assert (
        await client.post("/tasks", json={"description": "x"}, headers=headers)
    ).status_code == 403
    changed = await client.put(f"/users/{user_id}/role", json={"role": "operator"})
    assert changed.status_code == 200 and changed.json()["role"] == "operator"
    for _ in range(30):
        if (
            await client.post("/tasks", json={"description": "x"}, headers=headers)
        ).status_code == 202:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the new role did not apply")
    disabled = await client.post(f"/users/{user_id}/disable", json={"reason": "left"})
    assert disabled.status_code == 200 and disabled.json()["disabled_at"] is not None
    await _refused(client, headers)
    assert (await _sign_in(client, "cy@example.com")).status_code == 401


async def test_failed_sign_ins_are_alike_limited_and_recorded(
    client: httpx.AsyncClient, settings: Settings, db: asyncpg.Connection
) -> None:
    """A wrong password and an unknown user get the same answer; after three failures for
    a name, even the right password is 429 with Retry-After; every failure is a
    login.failed event whose typed name is encrypted."""
    await _user(client, "di@example.com")
    wrong = await _sign_in(client, "di@example.com", "not the passphrase!")
    nobody = await _sign_in(client, "nobody@example.com", "not the passphrase!")
    assert wrong.status_code == nobody.status_code == 401
    assert wrong.json() == nobody.json()
    for _ in range(2):
        assert (await _sign_in(client, "di@example.com", "still wrong!!")).status_code == 401
    limited = await _sign_in(client, "di@example.com")
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) > 0
    assert limited.json()["error"]["code"] == "RATE_LIMITED"

    async def recorded() -> bool:
        count = await db.fetchval("SELECT count(*) FROM event_log WHERE type = 'login.failed'")
        return bool(count >= 5)

    await eventually(recorded)
    raw = await db.fetch("SELECT raw_value FROM event_log WHERE type = 'login.failed'")
    assert all(b"nobody@example.com" not in r["raw_value"] for r in raw)


async def test_failed_sign_ins_are_limited_per_client_address(
    client: httpx.AsyncClient,
) -> None:
    """Many names tried from one address: past the address limit every attempt is 429."""
    statuses = [
        (await _sign_in(client, f"guess{n}@example.com", "wrong password!")).status_code
        for n in range(10)
    ]
    assert statuses[:8] == [401] * 8
    assert statuses[8:] == [429, 429]


async def test_writes_are_limited_per_principal(
    client: httpx.AsyncClient, settings: Settings, db: asyncpg.Connection
) -> None:
    """Past four writes a minute the principal gets 429 with Retry-After and nothing is
    published; reads go on; another principal is not affected."""
    answers = [
        (await client.post("/tasks", json={"description": f"task {n}"})).status_code
        for n in range(6)
    ]
    assert answers == [202] * 4 + [429] * 2
    assert (await client.get("/tasks")).status_code == 200
    other = await seed_api_key(db, settings)
    async with serve(settings, api_key=other) as second:
        assert (await second.post("/tasks", json={"description": "mine"})).status_code == 202
