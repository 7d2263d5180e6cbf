"""Commands on tenants, users and API keys, shared by the API's routes and the CLI.

Each command checks what it can against the read models, publishes its event on
wrench.admin, waits until the projector has applied it and reads back what the log decided:
two people who create the same user name at once both publish, the first on the log wins,
and the second is told so (409) instead of being handed a user that does not exist.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime

import structlog

from api._database import Database
from api._readmodels import wait_for_projector
from api.errors import ApiError, Forbidden
from api.security import MAX_PASSWORD, MIN_PASSWORD, NewKey, hash_password, hash_secret
from api.security import new_api_key as make_key
from events import (
    SCOPES,
    TENANT_ID_PATTERN,
    Actor,
    ApiKeyIssued,
    ApiKeyRevoked,
    Event,
    EventPayload,
    EventProducer,
    Position,
    Role,
    RoleChanged,
    TenantCreated,
    UserCreated,
    UserDisabled,
    role_scopes,
)
from projections import ADMIN
from wrenchai.settings import Settings

log = structlog.get_logger(__name__)

COMMAND_WAIT_S = 10.0
"""Longest an identity command waits for the projector to apply its event: commands are
rare and their caller needs the outcome, unlike a read's ``?wait_for=``."""


class TenantExists(ApiError):
    """A tenant with this id exists already."""

    code = "TENANT_EXISTS"
    status = 409


class TenantNotFound(ApiError):
    """No active tenant with this id."""

    code = "TENANT_NOT_FOUND"
    status = 404


class UsernameTaken(ApiError):
    """Someone (in any tenant) signs in with this name already."""

    code = "USERNAME_TAKEN"
    status = 409


class UserNotFound(ApiError):
    """No user with this id in the caller's tenant."""

    code = "USER_NOT_FOUND"
    status = 404


class KeyNotFound(ApiError):
    """No API key with this id in the caller's tenant."""

    code = "API_KEY_NOT_FOUND"
    status = 404


class WeakPassword(ApiError):
    """The password is too short or too long."""

    code = "WEAK_PASSWORD"
    status = 422


class IdentityPending(ApiError):
    """The event is on the log but the projector has not applied it yet."""

    code = "IDENTITY_PENDING"
    status = 503


@dataclass(frozen=True)
class IssuedKey:
    """A key as it is handed out, once: the token and what is kept of it."""

    key_id: str
    token: str
    prefix: str
    name: str
    scopes: list[str]
    user_id: str | None
    expires_at: datetime | None
    tenant_id: str


@dataclass(frozen=True)
class CreatedUser:
    """A user the log accepted."""

    user_id: str
    tenant_id: str
    username: str
    role: Role


def tenant_id_from(name: str) -> str:
    """A tenant id made from a name: lower case, runs of other characters as one dash."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:63]
    return slug or uuid.uuid4().hex[:12]


class Identity:
    """Publishes identity events and reads back what the projector made of them."""

    def __init__(
        self, settings: Settings, producer: EventProducer, database: Database, pepper: bytes
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.database = database
        self.pepper = pepper

    # -- tenants -------------------------------------------------------------------------
    async def create_tenant(
        self, name: str, actor: Actor, tenant_id: str | None = None
    ) -> tuple[str, IssuedKey]:
        """A new tenant and its first admin API key (handed out once)."""
        tenant_id = tenant_id or tenant_id_from(name)
        if not re.match(TENANT_ID_PATTERN, tenant_id):
            raise ApiError(
                f"a tenant id is lower-case letters, digits, '-' and '_' (up to 63), not "
                f"{tenant_id!r}",
                tenant_id=tenant_id,
            )
        if await self._tenant_status(tenant_id) is not None:
            raise TenantExists(f"tenant {tenant_id} exists already", tenant_id=tenant_id)
        event = Event.new(TenantCreated(name=name), tenant_id=tenant_id, actor=actor)
        await self._publish(event)
        async with self.database.connection() as conn:
            winner = await conn.fetchval(
                "SELECT event_id FROM tenants WHERE tenant_id = $1", tenant_id
            )
        if winner != event.id:
            raise TenantExists(f"tenant {tenant_id} exists already", tenant_id=tenant_id)
        key = await self.issue_key(
            tenant_id, "first admin key", sorted(role_scopes("admin")), actor
        )
        log.info("tenant created", tenant_id=tenant_id)
        return tenant_id, key

    async def _tenant_status(self, tenant_id: str) -> str | None:
        async with self.database.connection() as conn:
            status: str | None = await conn.fetchval(
                "SELECT status FROM tenants WHERE tenant_id = $1", tenant_id
            )
            return status

    async def require_tenant(self, tenant_id: str) -> None:
        """TenantNotFound unless the tenant exists and is not shredded."""
        if await self._tenant_status(tenant_id) != "active":
            raise TenantNotFound(f"no active tenant {tenant_id}", tenant_id=tenant_id)

    # -- users ---------------------------------------------------------------------------
    async def create_user(
        self,
        tenant_id: str,
        username: str,
        password: str,
        role: Role,
        actor: Actor,
        extra_scopes: list[str] | None = None,
    ) -> CreatedUser:
        """A user who signs in with ``username`` and ``password``."""
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise WeakPassword(
                f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters",
                min_length=MIN_PASSWORD,
            )
        await self.require_tenant(tenant_id)
        async with self.database.connection() as conn:
            if await conn.fetchval("SELECT 1 FROM users WHERE username = $1", username):
                raise UsernameTaken(f"the user name {username!r} is taken", username=username)
        user_id = uuid.uuid4().hex
        event = Event.new(
            UserCreated(
                user_id=user_id,
                username=username,
                role=role,
                password_hash=hash_password(password),
                extra_scopes=extra_scopes or [],
            ),
            tenant_id=tenant_id,
            actor=actor,
        )
        await self._publish(event)
        async with self.database.connection() as conn:
            winner = await conn.fetchval("SELECT user_id FROM users WHERE username = $1", username)
        if winner != user_id:
            raise UsernameTaken(f"the user name {username!r} is taken", username=username)
        return CreatedUser(user_id, tenant_id, username, role)

    async def disable_user(
        self, tenant_id: str, user_id: str, actor: Actor, reason: str | None = None
    ) -> None:
        """The user can no longer sign in and their sessions end."""
        await self._require_user(tenant_id, user_id)
        event = Event.new(
            UserDisabled(user_id=user_id, reason=reason), tenant_id=tenant_id, actor=actor
        )
        await self._publish(event)

    async def change_role(self, tenant_id: str, user_id: str, role: Role, actor: Actor) -> None:
        """The user's role, and so their scopes, from now on."""
        await self._require_user(tenant_id, user_id)
        await self._publish(
            Event.new(RoleChanged(user_id=user_id, role=role), tenant_id=tenant_id, actor=actor)
        )

    async def _require_user(self, tenant_id: str, user_id: str) -> None:
        async with self.database.connection() as conn:
            found = await conn.fetchval(
                "SELECT 1 FROM users WHERE user_id = $1 AND tenant_id = $2", user_id, tenant_id
            )
        if not found:
            raise UserNotFound(f"no user {user_id}", user_id=user_id)

    async def user_id_of(self, tenant_id: str | None, username_or_id: str) -> tuple[str, str]:
        """(tenant, user id) of a user named by id or user name."""
        async with self.database.connection() as conn:
            row = await conn.fetchrow(
                """SELECT tenant_id, user_id FROM users
                   WHERE (user_id = $1 OR username = $1)
                     AND ($2::text IS NULL OR tenant_id = $2)""",
                username_or_id,
                tenant_id,
            )
        if row is None:
            raise UserNotFound(f"no user {username_or_id}", user=username_or_id)
        return row["tenant_id"], row["user_id"]

    # -- API keys ------------------------------------------------------------------------
    async def issue_key(
        self,
        tenant_id: str,
        name: str,
        scopes: list[str],
        actor: Actor,
        *,
        user_id: str | None = None,
        expires_at: datetime | None = None,
        allowed: frozenset[str] | None = None,
    ) -> IssuedKey:
        """A new key holding ``scopes`` (never more than ``allowed``, the issuer's own)."""
        unknown = sorted(set(scopes) - SCOPES)
        if unknown:
            raise ApiError(f"unknown scope(s) {unknown}", unknown=unknown)
        if allowed is not None and not set(scopes) <= allowed:
            raise Forbidden(
                "a key cannot hold scopes its issuer does not hold",
                beyond=sorted(set(scopes) - allowed),
            )
        await self.require_tenant(tenant_id)
        new: NewKey = make_key()
        key_id = uuid.uuid4().hex
        event = Event.new(
            ApiKeyIssued(
                key_id=key_id,
                prefix=new.prefix,
                secret_hash=hash_secret(self.pepper, new.secret),
                name=name,
                scopes=scopes,
                user_id=user_id,
                expires_at=expires_at,
            ),
            tenant_id=tenant_id,
            actor=actor,
        )
        await self._publish(event)
        log.info("api key issued", tenant_id=tenant_id, key_id=key_id)
        return IssuedKey(
            key_id, new.token, new.prefix, name, sorted(set(scopes)), user_id, expires_at, tenant_id
        )

    async def revoke_key(
        self, tenant_id: str, key_id: str, actor: Actor, reason: str | None = None
    ) -> None:
        """The key is refused from now on (by every API process within two seconds)."""
        async with self.database.connection() as conn:
            found = await conn.fetchval(
                "SELECT 1 FROM api_keys WHERE key_id = $1 AND tenant_id = $2", key_id, tenant_id
            )
        if not found:
            raise KeyNotFound(f"no API key {key_id}", key_id=key_id)
        await self._publish(
            Event.new(ApiKeyRevoked(key_id=key_id, reason=reason), tenant_id=tenant_id, actor=actor)
        )
        log.info("api key revoked", tenant_id=tenant_id, key_id=key_id)

    # -- the log -------------------------------------------------------------------------
    async def publish(self, payload: EventPayload, tenant_id: str, actor: Actor) -> Position:
        """Publish one identity event and wait until it is applied."""
        event = Event.new(payload, tenant_id=tenant_id, actor=actor)
        return await self._publish(event)

    async def _publish(self, event: Event) -> Position:
        position = await self.producer.publish(event)
        applied = await wait_for_projector(
            self.database, self.settings, position, ADMIN, COMMAND_WAIT_S
        )
        if not applied:
            raise IdentityPending(
                f"{event.type} is on the log at {ADMIN.name}:{position} but not applied yet; "
                "is the projector running?",
                event_id=str(event.id),
                position=str(position),
            )
        return position
