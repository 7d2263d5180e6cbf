"""Deny by default: every route declares the scope it needs, and every role gets exactly what
its scopes allow. The table below is the one place that says which scope each route needs;
a route missing from it, or one without an auth dependency, fails the first test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from api import create_app
from api.deps import authenticate, authenticate_write
from events import ROLES, role_scopes
from tests.api._support import seed_api_key, serve
from tests.projections.conftest import eventually
from wrenchai.settings import Settings

OPEN = {
    ("POST", "/auth/token"),
    ("GET", "/health"),
    # The dashboard's page: a sign-in form and a script; everything it shows comes from
    # the API with the credential signed in.
    ("GET", "/ui"),
    ("GET", "/ui/"),
    ("GET", "/ui/{view:path}"),
}
"""Routes anyone may call (the docs are Starlette routes, not API routes)."""

ANY = "any valid credential"

TASK = str(uuid.uuid4())
SCOPE_OF: dict[tuple[str, str], str] = {
    ("POST", "/auth/logout"): ANY,
    ("GET", "/auth/me"): ANY,
    ("POST", "/tenants"): "tenants:admin",
    ("POST", "/api-keys"): "keys:admin",
    ("GET", "/api-keys"): "keys:admin",
    ("DELETE", "/api-keys/{key_id}"): "keys:admin",
    ("POST", "/users"): "users:admin",
    ("GET", "/users"): "users:admin",
    ("POST", "/users/{user_id}/disable"): "users:admin",
    ("PUT", "/users/{user_id}/role"): "users:admin",
    ("POST", "/tasks"): "tasks:write",
    ("POST", "/tasks/"): "tasks:write",
    ("GET", "/tasks"): "tasks:read",
    ("GET", "/tasks/"): "tasks:read",
    ("GET", "/tasks/{task_id}"): "tasks:read",
    ("GET", "/tasks/{task_id}/thoughts"): "tasks:read",
    ("GET", "/tasks/{task_id}/steps"): "tasks:read",
    ("GET", "/tasks/{task_id}/evaluations"): "tasks:read",
    ("GET", "/tasks/{task_id}/events"): "tasks:read",
    ("POST", "/tasks/{task_id}/cancel"): "tasks:write",
    ("GET", "/tools"): "tools:read",
    ("GET", "/tools/"): "tools:read",
    ("GET", "/alerts"): "alerts:read",
    ("GET", "/alerts/"): "alerts:read",
    ("POST", "/alerts/{alert_id}/ack"): "alerts:write",
    ("GET", "/insights/quality"): "insights:read",
    ("GET", "/audit/events"): "audit:read",
    ("GET", "/audit/tasks/{task_id}/state"): "audit:read",
    ("GET", "/tasks/{task_id}/stream"): "tasks:read",
    ("POST", "/ws-ticket"): ANY,
    ("GET", "/metrics"): "metrics:read",
    ("PUT", "/budgets/{scope}/{scope_id}"): "budgets:write",
    ("DELETE", "/budgets/{scope}/{scope_id}"): "budgets:write",
    ("GET", "/budgets"): "budgets:read",
    ("GET", "/usage"): "usage:read",
    ("GET", "/tasks/{task_id}/cost"): "usage:read",
}

# A request for each route that passes validation, so only authorisation decides.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/tenants"): {"name": f"t-{uuid.uuid4().hex[:8]}"},
    ("POST", "/api-keys"): {"name": "matrix", "scopes": ["tasks:read"]},
    ("POST", "/users"): {
        "username": f"u{uuid.uuid4().hex[:8]}",
        "password": "x" * 16,
        "role": "viewer",
    },
    ("PUT", "/users/{user_id}/role"): {"role": "viewer"},
    ("POST", "/tasks"): {"description": "matrix"},
    ("POST", "/tasks/"): {"description": "matrix"},
    ("PUT", "/budgets/{scope}/{scope_id}"): {"limit_usd": 5, "window": "day"},
}
PATH_VALUES = {
    "task_id": TASK,
    "key_id": "nokey",
    "user_id": "nouser",
    "alert_id": "noalert",
    "scope": "model",
    "scope_id": "gpt-4o",
}


def api_routes(app: FastAPI) -> Iterator[APIRoute]:
    """Every API route of the app, included routers' routes too."""
    for route in app.routes:
        nested = getattr(route, "original_router", None)
        for found in nested.routes if nested is not None else [route]:
            if isinstance(found, APIRoute):
                yield found


def _auth_scopes(route: APIRoute) -> list[list[str]] | None:
    """The scopes each auth dependency of the route requires (None: no auth dependency)."""
    found: list[list[str]] = []

    def walk(dependant: Any, inherited: list[str]) -> None:
        for dep in dependant.dependencies:
            scopes = [*inherited, *(getattr(dep, "own_oauth_scopes", None) or [])]
            if dep.call in (authenticate, authenticate_write):
                found.append(scopes)
            walk(dep, scopes)

    walk(route.dependant, [])
    return found or None


def _routes() -> list[tuple[str, str]]:
    app = create_app(Settings())
    return sorted((m, r.path) for r in api_routes(app) for m in r.methods)


def test_every_route_but_the_open_ones_requires_authentication_and_its_scope() -> None:
    """Walks every route of the app: each one outside OPEN has an auth dependency that
    requires the scope SCOPE_OF names for it, and SCOPE_OF names every route, so a new
    route cannot land without deciding who may call it."""
    app = create_app(Settings())
    seen = set()
    for route in api_routes(app):
        for method in route.methods:
            key = (method, route.path)
            seen.add(key)
            scopes = _auth_scopes(route)
            if key in OPEN:
                assert scopes is None, f"{key} is meant to be open"
                continue
            assert scopes is not None, f"{method} {route.path} has no auth dependency"
            assert key in SCOPE_OF, f"{method} {route.path} is missing from SCOPE_OF"
            expected = [] if SCOPE_OF[key] == ANY else [SCOPE_OF[key]]
            assert any(s == expected for s in scopes), f"{key} requires {scopes}"
    assert seen == set(SCOPE_OF) | OPEN


def _request(method: str, path: str) -> tuple[str, str, dict[str, Any] | None]:
    url = path
    for name, value in PATH_VALUES.items():
        url = url.replace("{" + name + "}", value)
    return method, url, BODIES.get((method, path))


@pytest.fixture
async def keys_by_role(db: asyncpg.Connection, settings: Settings) -> dict[str, str]:
    """An API key per role of the default tenant, holding that role's scopes."""
    return {
        role: await seed_api_key(db, settings, scopes=sorted(role_scopes(role))) for role in ROLES
    }


@pytest.mark.usefixtures("topics", "projector")
async def test_every_route_times_every_role_is_allowed_exactly_by_its_scopes(
    settings: Settings, keys_by_role: dict[str, str], db: asyncpg.Connection
) -> None:
    """Each role calls every route: 403 FORBIDDEN when its role lacks the route's scope,
    anything but 401 and 403 when it holds it; without a credential every route is 401."""
    refused: list[str] = []
    async with serve(settings) as client:
        for method, path in SCOPE_OF:
            verb, url, body = _request(method, path)
            anonymous = await client.request(verb, url, json=body)
            assert anonymous.status_code == 401, (method, path)
            assert anonymous.headers["www-authenticate"] == "Bearer"
            for role, key in keys_by_role.items():
                scope = SCOPE_OF[(method, path)]
                allowed = scope == ANY or scope in role_scopes(role)
                response = await _call(client, verb, url, body, key)
                if allowed:
                    assert response.status_code not in (401, 403), (
                        role,
                        method,
                        path,
                        response.text,
                    )
                else:
                    assert response.status_code == 403, (role, method, path, response.text)
                    error = response.json()["error"]
                    assert error["code"] == "FORBIDDEN" and error["details"]["required"] == [scope]
                    refused.append(f"{role} {method} {path}")
    assert "viewer POST /tasks" in refused and "operator POST /users" in refused
    assert "admin POST /tenants" in refused, "only the platform's bootstrap admin creates tenants"
    assert {
        f"{role} GET {path}"
        for role in ("viewer", "operator")
        for path in ("/audit/events", "/audit/tasks/{task_id}/state")
    } <= set(refused), "the audit trail is for admins (audit:read)"

    async def denials_recorded() -> bool:
        reasons = await db.fetch("SELECT raw_value FROM event_log WHERE type = 'access.denied'")
        return any(b'"missing_scope"' in r["raw_value"] for r in reasons)

    await eventually(denials_recorded)


async def _call(
    client: httpx.AsyncClient, verb: str, url: str, body: dict[str, Any] | None, key: str
) -> httpx.Response:
    return await client.request(verb, url, json=body, headers={"X-API-Key": key})
