"""Tenants, API keys and users: each a command that publishes on wrench.admin and answers
once the projector has applied it, so a key or user handed out works at once."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from api.deps import Principal, ResourcesDep, get_identity, require
from api.errors import InvalidRequest
from api.identity import (
    IdentityPending,
    IssuedKey,
    KeyNotFound,
    TenantExists,
    UsernameTaken,
    UserNotFound,
    WeakPassword,
)
from api.models import (
    ApiKeyInfo,
    ApiKeyIssuedBody,
    ApiKeyList,
    ChangeRole,
    CreateTenant,
    CreateUser,
    DisableUser,
    IssueKey,
    TenantCreatedBody,
    UserInfo,
    UserList,
)
from api.openapi import responses_for
from events import PLATFORM_SCOPES, BrokerUnavailable

router = APIRouter(tags=["identity"])

_ERRORS = responses_for(
    401,
    403,
    404,
    409,
    422,
    429,
    503,
    examples={
        404: [
            UserNotFound("no user 7c1d9e2f4a6b", user_id="7c1d9e2f4a6b"),
            KeyNotFound("no API key k-3f9a2c", key_id="k-3f9a2c"),
        ],
        409: [
            TenantExists("tenant acme exists already", tenant_id="acme"),
            UsernameTaken("the user name 'bob' is taken", username="bob"),
        ],
        422: [
            InvalidRequest("body.scopes", "Value error, unknown scope(s) ['tasks:delete']"),
            WeakPassword("a password has 12 to 1024 characters", min_length=12),
        ],
        503: [
            IdentityPending(
                "user.created is on the log at admin:1:17 but not applied yet; is the "
                "projector running?",
                event_id="0b8e4f6a-2c1d-5e3f-9a7b-8c6d5e4f3a2b",
            ),
            BrokerUnavailable("kafka did not answer"),
        ],
    },
)
Id = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_-]+$")]


def _issued(key: IssuedKey) -> ApiKeyIssuedBody:
    return ApiKeyIssuedBody(
        key_id=key.key_id,
        key=key.token,
        prefix=key.prefix,
        name=key.name,
        scopes=key.scopes,
        tenant_id=key.tenant_id,
        user_id=key.user_id,
        expires_at=key.expires_at,
    )


# -- tenants ---------------------------------------------------------------------------------
@router.post(
    "/tenants",
    status_code=201,
    response_model=TenantCreatedBody,
    responses=_ERRORS,
    summary="Create a tenant",
)
async def create_tenant(
    body: CreateTenant,
    resources: ResourcesDep,
    principal: Annotated[Principal, require("tenants:admin", write=True)],
) -> TenantCreatedBody:
    """A new tenant and its first admin API key, shown once. Only the platform's bootstrap
    admin holds tenants:admin."""
    tenant_id, key = await get_identity(resources).create_tenant(
        body.name, principal.actor, body.tenant_id
    )
    return TenantCreatedBody(tenant_id=tenant_id, name=body.name, api_key=_issued(key))


# -- API keys --------------------------------------------------------------------------------
KeysAdmin = Annotated[Principal, require("keys:admin", write=True)]


@router.post(
    "/api-keys",
    status_code=201,
    response_model=ApiKeyIssuedBody,
    responses=_ERRORS,
    summary="Issue an API key",
)
async def issue_key(
    body: IssueKey, resources: ResourcesDep, principal: KeysAdmin
) -> ApiKeyIssuedBody:
    """A key of the caller's tenant holding ``scopes`` (by default the caller's own, less
    the platform's), shown once. A key never holds a scope its issuer lacks."""
    scopes = body.scopes if body.scopes is not None else sorted(principal.scopes - PLATFORM_SCOPES)
    key = await get_identity(resources).issue_key(
        principal.tenant_id,
        body.name,
        scopes,
        principal.actor,
        user_id=principal.user_id,
        expires_at=body.expires_at,
        allowed=principal.scopes,
    )
    return _issued(key)


@router.get("/api-keys", response_model=ApiKeyList, responses=_ERRORS, summary="List API keys")
async def list_keys(
    resources: ResourcesDep, principal: Annotated[Principal, require("keys:admin")]
) -> ApiKeyList:
    """The tenant's keys, newest first, without their secrets."""
    async with resources.tenant_database.tenant(principal.tenant_id) as conn:
        rows = await conn.fetch(
            """SELECT key_id, prefix, name, scopes, user_id, created_by, created_at, expires_at,
                   revoked_at, last_used_at
               FROM api_keys WHERE tenant_id = $1 ORDER BY created_at DESC, key_id DESC""",
            principal.tenant_id,
        )
    return ApiKeyList(keys=[ApiKeyInfo.model_validate(dict(row)) for row in rows])


@router.delete(
    "/api-keys/{key_id}", status_code=204, responses=_ERRORS, summary="Revoke an API key"
)
async def revoke_key(key_id: Id, resources: ResourcesDep, principal: KeysAdmin) -> Response:
    """Every API process refuses the key within two seconds."""
    await get_identity(resources).revoke_key(principal.tenant_id, key_id, principal.actor)
    return Response(status_code=204)


# -- users -----------------------------------------------------------------------------------
UsersAdmin = Annotated[Principal, require("users:admin", write=True)]


@router.post(
    "/users", status_code=201, response_model=UserInfo, responses=_ERRORS, summary="Create a user"
)
async def create_user(body: CreateUser, resources: ResourcesDep, principal: UsersAdmin) -> UserInfo:
    """A user of the caller's tenant who signs in at /auth/token. User names are unique
    across the platform."""
    created = await get_identity(resources).create_user(
        principal.tenant_id, body.username, body.password, body.role, principal.actor
    )
    return await _user(resources, principal, created.user_id)


@router.get("/users", response_model=UserList, responses=_ERRORS, summary="List users")
async def list_users(
    resources: ResourcesDep, principal: Annotated[Principal, require("users:admin")]
) -> UserList:
    """The tenant's users, newest first, without their password hashes."""
    async with resources.tenant_database.tenant(principal.tenant_id) as conn:
        rows = await conn.fetch(
            """SELECT user_id, username, role, created_at, disabled_at FROM users
               WHERE tenant_id = $1 ORDER BY created_at DESC, user_id DESC""",
            principal.tenant_id,
        )
    return UserList(users=[UserInfo.model_validate(dict(row)) for row in rows])


@router.post(
    "/users/{user_id}/disable",
    response_model=UserInfo,
    responses=_ERRORS,
    summary="Disable a user",
)
async def disable_user(
    user_id: Id, resources: ResourcesDep, principal: UsersAdmin, body: DisableUser | None = None
) -> UserInfo:
    """The user can no longer sign in, their sessions end, and the keys they own stop."""
    await get_identity(resources).disable_user(
        principal.tenant_id, user_id, principal.actor, body.reason if body else None
    )
    return await _user(resources, principal, user_id)


@router.put(
    "/users/{user_id}/role", response_model=UserInfo, responses=_ERRORS, summary="Change a role"
)
async def change_role(
    user_id: Id, body: ChangeRole, resources: ResourcesDep, principal: UsersAdmin
) -> UserInfo:
    """The user's scopes follow the new role from the next request on."""
    await get_identity(resources).change_role(
        principal.tenant_id, user_id, body.role, principal.actor
    )
    return await _user(resources, principal, user_id)


async def _user(resources: ResourcesDep, principal: Principal, user_id: str) -> UserInfo:
    async with resources.tenant_database.tenant(principal.tenant_id) as conn:
        row = await conn.fetchrow(
            """SELECT user_id, username, role, created_at, disabled_at FROM users
               WHERE user_id = $1 AND tenant_id = $2""",
            user_id,
            principal.tenant_id,
        )
    if row is None:
        raise UserNotFound(f"no user {user_id}", user_id=user_id)
    return UserInfo.model_validate(dict(row))
