"""Payloads of identity and security, on ``wrench.admin`` (key = tenant_id).

Tenants, users, roles, API keys and sessions exist only as these events and the read models
the projector folds from them. Security facts (logins, refusals) are events too, so they are
audited like everything else. Secrets never travel: a password travels as its argon2 hash and
an API key as a keyed hash of its secret, both in sensitive (encrypted) fields.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from events._catalog import event
from events._envelope import EventPayload, sensitive

Role = Literal["admin", "operator", "viewer"]
ROLES: tuple[Role, ...] = ("admin", "operator", "viewer")

_VIEWER = frozenset(
    {"tasks:read", "alerts:read", "insights:read", "tools:read", "usage:read", "budgets:read"}
)
_OPERATOR = _VIEWER | {"tasks:write", "alerts:write", "playbooks:inline", "metrics:read"}
_ADMIN = _OPERATOR | {"audit:read", "budgets:write", "users:admin", "keys:admin", "tools:code"}

ROLE_SCOPES: dict[Role, frozenset[str]] = {
    "viewer": _VIEWER,
    "operator": _OPERATOR,
    "admin": _ADMIN,
}
"""What each role may do. ``tenants:admin`` is in no role: only the platform's bootstrap admin
holds it, as an extra scope."""

PLATFORM_SCOPES = frozenset({"tenants:admin"})
SCOPES: frozenset[str] = _ADMIN | PLATFORM_SCOPES
"""Every scope a route may require or a credential may hold."""

EXECUTION_SCOPES = frozenset({"tools:code", "playbooks:inline"})
"""The scopes a task carries to the agents: what its submitter allowed it to run."""

SYSTEM_TENANT = "_system"
"""The tenant of security facts that belong to no tenant (a login for an unknown name)."""

TENANT_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
USERNAME_PATTERN = r"^[A-Za-z0-9._@+-]{1,200}$"
_KEY_PREFIX = re.compile(r"^[a-z2-7]{12}$")


def _known_scopes(scopes: list[str]) -> list[str]:
    unknown = sorted(set(scopes) - SCOPES)
    if unknown:
        raise ValueError(f"unknown scope(s) {unknown}; known: {sorted(SCOPES)}")
    return sorted(set(scopes))


@event("tenant.created", version=1)
class TenantCreated(EventPayload):
    """A tenant came into being; the envelope's tenant_id is its id."""

    name: str = Field(min_length=1, max_length=200)


@event("tenant.shredded", version=1)
class TenantShredded(EventPayload):
    """The tenant's data keys were destroyed: its content is unreadable from now on, its
    credentials are refused, and read models show ``[shredded]`` in place of its content."""

    reason: str | None = Field(None, max_length=2_000)
    keys_destroyed: int = Field(0, ge=0)


@event("user.created", version=1)
class UserCreated(EventPayload):
    """A person who can sign in. ``username`` is unique across the platform: a second
    user.created for a taken name is kept on the log and changes nothing."""

    user_id: str = Field(min_length=1, max_length=200)
    username: str = Field(pattern=USERNAME_PATTERN)
    role: Role
    password_hash: str = sensitive(min_length=1, max_length=1_000)
    extra_scopes: list[str] = Field(default_factory=list)

    _scopes = field_validator("extra_scopes")(_known_scopes)


@event("user.disabled", version=1)
class UserDisabled(EventPayload):
    """The user can no longer sign in; their sessions end."""

    user_id: str = Field(min_length=1, max_length=200)
    reason: str | None = Field(None, max_length=2_000)


@event("role.changed", version=1)
class RoleChanged(EventPayload):
    """The user's role, and so their scopes, changed."""

    user_id: str = Field(min_length=1, max_length=200)
    role: Role


@event("apikey.issued", version=1)
class ApiKeyIssued(EventPayload):
    """A key ``wr_<prefix>_<secret>`` was handed out once; only the keyed hash of its secret
    is kept. Its scopes are never more than its issuer held."""

    key_id: str = Field(min_length=1, max_length=200)
    prefix: str
    secret_hash: str = sensitive(min_length=1, max_length=200)
    name: str = Field(min_length=1, max_length=200)
    scopes: list[str]
    user_id: str | None = Field(None, max_length=200)
    expires_at: AwareDatetime | None = None

    _scopes = field_validator("scopes")(_known_scopes)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not _KEY_PREFIX.match(value):
            raise ValueError("a key prefix is 12 characters of base32 (a-z, 2-7)")
        return value


@event("apikey.revoked", version=1)
class ApiKeyRevoked(EventPayload):
    """The key is refused from now on."""

    key_id: str = Field(min_length=1, max_length=200)
    reason: str | None = Field(None, max_length=2_000)


class KeyUse(BaseModel):
    """When one key was last used."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key_id: str = Field(min_length=1, max_length=200)
    last_used_at: AwareDatetime


@event("apikey.used", version=1)
class ApiKeyUsed(EventPayload):
    """When keys were last used, as one API process saw them: published now and then for
    many uses, never once per request."""

    uses: list[KeyUse] = Field(min_length=1, max_length=10_000)


Credential = Literal["password", "refresh_token", "jwt", "api_key", "none"]


@event("login.succeeded", version=1)
class LoginSucceeded(EventPayload):
    """A user signed in and a session (a family of refresh tokens) began."""

    user_id: str = Field(min_length=1, max_length=200)
    session_id: str = Field(min_length=1, max_length=200)
    address: str | None = Field(None, max_length=200)


@event("login.failed", version=1)
class LoginFailed(EventPayload):
    """A sign-in was refused. ``username`` is what was typed (sometimes a password typed in
    the wrong box), so it travels encrypted."""

    username: str = sensitive(max_length=1_000)
    reason: Literal["bad_credentials", "disabled", "rate_limited"]
    address: str | None = Field(None, max_length=200)


@event("access.denied", version=1)
class AccessDenied(EventPayload):
    """A request was refused: a credential that is not valid, or a scope it does not hold."""

    reason: Literal[
        "invalid_credential",
        "expired_credential",
        "revoked_credential",
        "missing_scope",
        "refresh_token_reused",
    ]
    credential: Credential
    method: str = Field(max_length=20)
    path: str = Field(max_length=2_000)
    scope: str | None = Field(None, max_length=100)
    user_id: str | None = Field(None, max_length=200)
    key_id: str | None = Field(None, max_length=200)
    address: str | None = Field(None, max_length=200)


@event("session.started", version=1)
class SessionStarted(EventPayload):
    """A refresh-token family began with its first refresh token."""

    session_id: str = Field(min_length=1, max_length=200)
    user_id: str = Field(min_length=1, max_length=200)
    refresh_id: str = Field(min_length=1, max_length=200)
    expires_at: AwareDatetime


@event("session.refreshed", version=1)
class SessionRefreshed(EventPayload):
    """A refresh token was spent for the next one. Applied only when ``previous`` is the
    family's current token: spending an older one is reuse, and revokes the family."""

    session_id: str = Field(min_length=1, max_length=200)
    previous_refresh_id: str = Field(min_length=1, max_length=200)
    refresh_id: str = Field(min_length=1, max_length=200)
    expires_at: AwareDatetime


@event("session.revoked", version=1)
class SessionRevoked(EventPayload):
    """The family ends: its refresh tokens and the access tokens it issued are refused."""

    session_id: str = Field(min_length=1, max_length=200)
    reason: Literal["logout", "refresh_token_reused", "user_disabled"]


IDENTITY_TYPES = frozenset(
    {
        "tenant.created",
        "tenant.shredded",
        "user.created",
        "user.disabled",
        "role.changed",
        "apikey.issued",
        "apikey.revoked",
        "apikey.used",
        "login.succeeded",
        "login.failed",
        "access.denied",
        "session.started",
        "session.refreshed",
        "session.revoked",
        # The archive's signed chain heads (events/_chain.py): platform facts, not a task's.
        "chain.checkpoint",
    }
)
"""The event types that belong on wrench.admin."""


def role_scopes(role: Role, extra: Iterable[str] = ()) -> frozenset[str]:
    """The scopes a role grants, with any extra ones."""
    return ROLE_SCOPES[role] | frozenset(extra)
