"""FastAPI dependencies: the app's resources, its settings, the calling principal with the
scopes its route requires, and the read-your-writes wait of every read.

Every route but /health, the docs and /auth/token declares the scope it needs with
:func:`require`; a route without one is refused by a test that enumerates the app.
"""

from __future__ import annotations

from typing import Annotated, Any

import structlog
from fastapi import Depends, Query, Request, Security
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer, SecurityScopes
from starlette.requests import HTTPConnection

from api._readmodels import wait_for_projector
from api._resources import Resources
from api.errors import Forbidden, RateLimited, Unauthenticated
from api.identity import Identity
from api.models import POSITION_PATTERN
from api.security import CredentialRefused, Principal, looks_like_api_key
from events import (
    SYSTEM,
    SYSTEM_TENANT,
    AccessDenied,
    BrokerUnavailable,
    Credential,
    Event,
    Position,
)
from projections import EVENTS, Stream
from wrenchai.settings import Settings

log = structlog.get_logger(__name__)

__all__ = ["Principal"]  # re-exported: routes import the principal from here


# Dependencies are ``async def`` even when they await nothing: FastAPI runs a plain ``def``
# dependency in its thread pool, a thread hop on every request.


async def get_resources(request: Request) -> Resources:
    """The resources the lifespan opened."""
    resources: Resources = request.app.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


async def get_settings(resources: ResourcesDep) -> Settings:
    """The app's settings."""
    return resources.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


SCOPE_DESCRIPTIONS = {
    "tasks:read": "Read tasks, their plans, steps, evaluations and history.",
    "tasks:write": "Submit and cancel tasks.",
    "alerts:read": "Read alerts.",
    "alerts:write": "Acknowledge alerts.",
    "insights:read": "Read quality insights.",
    "tools:read": "List tools and their health.",
    "usage:read": "Read usage and cost.",
    "budgets:read": "Read budgets.",
    "budgets:write": "Set and delete budgets.",
    "audit:read": "Read the audit trail.",
    "users:admin": "Create and disable users, change roles.",
    "keys:admin": "Issue, list and revoke API keys.",
    "tools:code": "Run code.python in tasks.",
    "playbooks:inline": "Submit tasks with an inline playbook.",
    "tenants:admin": "Create tenants (the platform's bootstrap admin only).",
    "metrics:read": "Scrape the API process's Prometheus metrics (GET /metrics).",
}

_bearer = OAuth2PasswordBearer(
    tokenUrl="/auth/token", scopes=SCOPE_DESCRIPTIONS, auto_error=False, scheme_name="token"
)
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="api_key")


def client_address(request: HTTPConnection) -> str | None:
    """The caller's address as the server saw it (behind a proxy, the one uvicorn's
    --forwarded-allow-ips lets the proxy name)."""
    return request.client.host if request.client else None


# authenticate and authenticate_write take what they need straight from the request rather
# than through ResourcesDep, and authenticate_write does not depend on authenticate: every
# dependency FastAPI resolves costs each request, and these two are on nearly every route.
# The credential headers stay dependencies: they are what the OpenAPI document's security
# schemes (and /docs' Authorize button) come from.
Bearer = Annotated[str | None, Depends(_bearer)]
ApiKeyHeader = Annotated[str | None, Depends(_api_key)]


async def authenticate(
    security_scopes: SecurityScopes, request: Request, bearer: Bearer, api_key: ApiKeyHeader
) -> Principal:
    """The principal of the request's credential, holding every scope the route requires.

    An API key comes as ``X-API-Key`` or as a bearer token starting ``wr_``; any other
    bearer token is an access JWT. No credential or a bad one is 401 and a missing scope 403,
    each recorded as access.denied.
    """
    return await _principal(security_scopes, request, bearer, api_key)


async def authenticate_write(
    security_scopes: SecurityScopes, request: Request, bearer: Bearer, api_key: ApiKeyHeader
) -> Principal:
    """The principal (as :func:`authenticate`), counted against its write rate limit (429
    past it)."""
    principal = await _principal(security_scopes, request, bearer, api_key)
    resources: Resources = request.app.state.resources
    retry = await resources.limits.hit(resources.limits.write, "write", principal.subject)
    if retry is not None:
        raise RateLimited(
            f"too many writes; limit {resources.settings.write_rate_limit} per principal",
            retry,
        )
    return principal


async def _principal(
    security_scopes: SecurityScopes, request: Request, bearer: str | None, api_key: str | None
) -> Principal:
    resources: Resources = request.app.state.resources
    api_key = api_key or None  # an empty header is no header
    token = api_key or bearer
    kind: Credential = "none"
    try:
        if token is None:
            raise CredentialRefused("invalid_credential")
        if api_key is not None or looks_like_api_key(token):
            kind = "api_key"
            principal = await resources.authenticator.api_key(token)
        else:
            kind = "jwt"
            principal = await resources.authenticator.access_token(token)
    except CredentialRefused as exc:
        if token is not None:
            await record_denial(
                request, resources, exc.reason, kind, user_id=exc.user_id, key_id=exc.key_id
            )
        raise Unauthenticated(exc.reason) from exc
    structlog.contextvars.bind_contextvars(
        tenant_id=principal.tenant_id, principal=principal.subject
    )
    missing = [scope for scope in security_scopes.scopes if not principal.holds(scope)]
    if missing:
        await record_denial(
            request,
            resources,
            "missing_scope",
            kind,
            scope=missing[0],
            user_id=principal.user_id,
            key_id=principal.key_id,
            tenant_id=principal.tenant_id,
        )
        raise Forbidden(
            f"this credential lacks the scope {missing[0]!r} that the route needs",
            required=missing,
        )
    request.state.principal = principal
    return principal


def require(scope: str, *, write: bool = False) -> Any:
    """The dependency of a route that needs ``scope``: the authenticated principal, checked
    for it (and counted against the write limit when ``write``)."""
    return Security(authenticate_write if write else authenticate, scopes=[scope])


Authenticated = Annotated[Principal, Security(authenticate)]


def get_identity(resources: ResourcesDep) -> Identity:
    """The identity commands, on the app's producer and owner pool."""
    return Identity(
        resources.settings, resources.producer, resources.database, resources.authenticator.pepper
    )


async def _identity(resources: ResourcesDep) -> Identity:
    return get_identity(resources)


IdentityDep = Annotated[Identity, Depends(_identity)]
"""Any valid credential, whatever its scopes (signing out, who am I)."""


async def record_denial(
    request: HTTPConnection,
    resources: Resources,
    reason: str,
    kind: Credential,
    *,
    scope: str | None = None,
    user_id: str | None = None,
    key_id: str | None = None,
    tenant_id: str = SYSTEM_TENANT,
) -> None:
    """Publish access.denied, unless this address has had its share of them this minute;
    a refusal is never turned into a 503 because the log is down."""
    address = client_address(request)
    log.info("access denied", reason=reason, credential=kind, scope=scope, address=address)
    limits = resources.limits
    if await limits.hit(limits.denied_events, "denied", address or "-") is not None:
        return
    event = Event.new(
        AccessDenied(
            reason=reason,
            credential=kind,
            # A WebSocket handshake is a GET; its path says it is a stream.
            method=request.scope.get("method", "GET"),
            path=request.url.path[:2_000],
            scope=scope,
            user_id=user_id,
            key_id=key_id,
            address=address,
        ),
        tenant_id=tenant_id,
        actor=SYSTEM,
    )
    try:
        await resources.producer.publish(event)
    except BrokerUnavailable as exc:
        log.warning("access.denied not recorded", reason=exc.message)


WaitFor = Annotated[
    str | None,
    Query(
        pattern=POSITION_PATTERN,
        description="A position (PARTITION:OFFSET) returned by a write: wait until the read "
        "models include it.",
        examples=["2:41"],
    ),
]


async def wait_for_position(
    resources: Resources, wait_for: str | None, stream: Stream = EVENTS
) -> None:
    """Hold a read until the projector has passed ``wait_for`` on ``stream`` (wrench.events
    unless the write went to wrench.admin), if given."""
    # The pattern already checked the form; a wait that times out is not an error, the read
    # answers from what the read models hold by then.
    if wait_for is not None:
        await wait_for_projector(
            resources.database, resources.settings, Position.parse(wait_for), stream
        )
