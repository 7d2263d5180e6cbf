"""/auth: sign in for tokens, refresh them, sign out, and who am I.

``POST /auth/token`` is the OAuth2 token endpoint (so /docs' Authorize button works): the
password grant signs a user in and starts a session, a family of refresh tokens; the
refresh_token grant spends the family's current refresh token for a new pair. Spending any
other token of the family is reuse, which ends the family. Failed sign-ins are limited per
user name and per client address, and the answer never tells whether the user exists.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import structlog
from fastapi import APIRouter, Form, Request, Response

from api import _examples as ex
from api.deps import Authenticated, ResourcesDep, client_address, get_identity, record_denial
from api.errors import ApiError, RateLimited, Unauthenticated
from api.models import Me, TokenPair
from api.openapi import responses_for
from api.security import InvalidToken, Principal, check_password
from events import (
    SYSTEM_TENANT,
    Actor,
    LoginFailed,
    LoginSucceeded,
    SessionRefreshed,
    SessionRevoked,
    SessionStarted,
)
from events import Event as LogEvent

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/auth", tags=["auth"])


class BadGrant(ApiError):
    """The token request is missing what its grant type needs."""

    code = "INVALID_GRANT_REQUEST"
    status = 400


_ERRORS = responses_for(
    400,
    401,
    422,
    429,
    503,
    examples={
        400: BadGrant("grant_type=password needs username and password"),
        429: RateLimited("too many failed sign-ins; wait before trying again", 30),
    },
)
_TOKEN_FORM: dict[str, Any] = {
    "requestBody": {"content": {"application/x-www-form-urlencoded": {"example": ex.TOKEN_FORM}}}
}


@router.post(
    "/token",
    response_model=TokenPair,
    responses=_ERRORS,
    openapi_extra=_TOKEN_FORM,
    summary="Get tokens",
)
async def token(
    request: Request,
    resources: ResourcesDep,
    grant_type: Annotated[Literal["password", "refresh_token"], Form()] = "password",
    username: Annotated[str | None, Form(max_length=200)] = None,
    password: Annotated[str | None, Form(max_length=1_024)] = None,
    refresh_token: Annotated[str | None, Form(max_length=4_096)] = None,
    scope: Annotated[str, Form(max_length=2_000)] = "",
) -> TokenPair:
    """An access token (short-lived) and a refresh token, for a user name and password
    (``grant_type=password``) or for the current refresh token of a session
    (``grant_type=refresh_token``). ``scope`` is accepted and ignored: a token holds its
    user's scopes."""
    del scope
    if grant_type == "refresh_token":
        if not refresh_token:
            raise BadGrant("grant_type=refresh_token needs refresh_token")
        return await _refresh(request, resources, refresh_token)
    if not username or password is None:
        raise BadGrant("grant_type=password needs username and password")
    return await _sign_in(request, resources, username, password)


async def _sign_in(
    request: Request, resources: ResourcesDep, username: str, password: str
) -> TokenPair:
    limits, address = resources.limits, client_address(request) or "-"
    retry = await limits.blocked(limits.login_user, "login-user", username) or (
        await limits.blocked(limits.login_address, "login-address", address)
    )
    user = await resources.authenticator.user_by_name(username)
    tenant_id = user.tenant_id if user is not None else SYSTEM_TENANT
    if retry is not None:
        await _login_failed(resources, tenant_id, username, "rate_limited", address)
        raise RateLimited("too many failed sign-ins; wait before trying again", retry)
    ok = await check_password(user.password_hash if user else None, password)
    if not ok or user is None or user.disabled:
        await limits.hit(limits.login_user, "login-user", username)
        await limits.hit(limits.login_address, "login-address", address)
        reason = "disabled" if ok and user is not None else "bad_credentials"
        await _login_failed(resources, tenant_id, username, reason, address)
        raise Unauthenticated("bad_credentials")
    if await resources.authenticator.tenants.get(user.tenant_id) == "shredded":
        await _login_failed(resources, tenant_id, username, "disabled", address)
        raise Unauthenticated("revoked_credential")
    await limits.clear(limits.login_user, "login-user", username)
    session_id = uuid.uuid4().hex
    access = resources.tokens.issue(
        "access", subject=user.user_id, tenant_id=user.tenant_id, session_id=session_id
    )
    refresh = resources.tokens.issue(
        "refresh", subject=user.user_id, tenant_id=user.tenant_id, session_id=session_id
    )
    actor = Actor(kind="user", id=user.user_id)
    identity = get_identity(resources)
    await identity.publish(
        SessionStarted(
            session_id=session_id,
            user_id=user.user_id,
            refresh_id=refresh.token_id,
            expires_at=refresh.expires_at,
        ),
        user.tenant_id,
        actor,
    )
    await resources.producer.publish(
        LogEvent.new(
            LoginSucceeded(user_id=user.user_id, session_id=session_id, address=address),
            tenant_id=user.tenant_id,
            actor=actor,
        )
    )
    log.info("signed in", user_id=user.user_id, tenant_id=user.tenant_id)
    return _pair(resources, access.token, refresh.token)


async def _refresh(request: Request, resources: ResourcesDep, token: str) -> TokenPair:
    try:
        claims = resources.tokens.verify(token, "refresh")
    except InvalidToken as exc:
        await record_denial(request, resources, "invalid_credential", "refresh_token")
        raise Unauthenticated("invalid_credential") from exc
    session = await resources.authenticator.session_now(claims.session_id)
    user = await resources.authenticator.users.get(claims.subject)
    if session is None or session.revoked or user is None or user.disabled:
        await record_denial(request, resources, "revoked_credential", "refresh_token")
        raise Unauthenticated("revoked_credential")
    actor = Actor(kind="user", id=user.user_id)
    identity = get_identity(resources)
    if session.refresh_id != claims.token_id:
        # An older token of the family: whoever holds it may have stolen it. End the family.
        await identity.publish(
            SessionRevoked(session_id=session.session_id, reason="refresh_token_reused"),
            session.tenant_id,
            actor,
        )
        await record_denial(
            request,
            resources,
            "refresh_token_reused",
            "refresh_token",
            user_id=user.user_id,
            tenant_id=session.tenant_id,
        )
        raise Unauthenticated("refresh_token_reused")
    access = resources.tokens.issue(
        "access", subject=user.user_id, tenant_id=user.tenant_id, session_id=session.session_id
    )
    refresh = resources.tokens.issue(
        "refresh", subject=user.user_id, tenant_id=user.tenant_id, session_id=session.session_id
    )
    await identity.publish(
        SessionRefreshed(
            session_id=session.session_id,
            previous_refresh_id=claims.token_id,
            refresh_id=refresh.token_id,
            expires_at=refresh.expires_at,
        ),
        session.tenant_id,
        actor,
    )
    # Two refreshes of one token at once both publish; the projector keeps the first and
    # revokes the family on the second, so the loser's pair is refused.
    now = await resources.authenticator.session_now(session.session_id)
    if now is None or now.revoked or now.refresh_id != refresh.token_id:
        raise Unauthenticated("refresh_token_reused")
    return _pair(resources, access.token, refresh.token)


@router.post("/logout", status_code=204, responses=_ERRORS, summary="Sign out")
async def logout(principal: Authenticated, resources: ResourcesDep) -> Response:
    """End the session of the access token: its refresh tokens and every access token it
    issued are refused from now on. An API key has no session: revoke it instead."""
    if principal.session_id is None:
        raise BadGrant("an API key has no session; revoke it with DELETE /api-keys/{key_id}")
    await get_identity(resources).publish(
        SessionRevoked(session_id=principal.session_id, reason="logout"),
        principal.tenant_id,
        principal.actor,
    )
    resources.authenticator.sessions.forget(principal.session_id)
    return Response(status_code=204)


@router.get("/me", response_model=Me, responses=_ERRORS, summary="Who am I")
async def me(principal: Authenticated) -> Me:
    """The caller's tenant, user, key, role and scopes."""
    return _me(principal)


def _me(principal: Principal) -> Me:
    return Me(
        tenant_id=principal.tenant_id,
        credential=principal.credential,
        user_id=principal.user_id,
        key_id=principal.key_id,
        role=principal.role,
        scopes=sorted(principal.scopes),
        expires_at=principal.expires_at,
    )


def _pair(resources: ResourcesDep, access: str, refresh: str) -> TokenPair:
    settings = resources.settings
    return TokenPair(
        access_token=access,
        token_type="bearer",
        expires_in=settings.access_token_ttl_s,
        refresh_token=refresh,
        refresh_expires_in=settings.refresh_token_ttl_s,
    )


async def _login_failed(
    resources: ResourcesDep, tenant_id: str, username: str, reason: str, address: str
) -> None:
    log.info("sign-in refused", reason=reason, address=address)
    event = LogEvent.new(
        LoginFailed(username=username[:1_000], reason=reason, address=address),
        tenant_id=tenant_id,
        actor=Actor(kind="system", id="api"),
    )
    await resources.producer.publish(event)
