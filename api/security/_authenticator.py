"""From a credential to a principal, against the identity read models.

What an API process reads of a key, a user, a session or a tenant it trusts for
``principal_cache_ttl_s`` (one second by default), so a request costs no query in the common
case and a revoked key, a disabled user or a logged-out session is refused by every API
process within that time plus the projector's batch time.

Lookups run on the owner's pool, not the tenant-scoped one: the tenant is what they find out.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import asyncpg

from api._database import Database
from api.security._apikeys import parse_api_key, secret_matches
from api.security._principal import Principal
from api.security._tokens import InvalidToken, TokenService
from events import Role, role_scopes
from wrenchai.errors import WrenchError
from wrenchai.settings import Settings

T = TypeVar("T")


class CredentialRefused(WrenchError):
    """A credential that cannot be used now; ``reason`` is an access.denied reason."""

    code = "CREDENTIAL_REFUSED"

    def __init__(self, reason: str, *, user_id: str | None = None, key_id: str | None = None):
        super().__init__(f"credential refused: {reason}", reason=reason)
        self.reason = reason
        self.user_id = user_id
        self.key_id = key_id


@dataclass(frozen=True)
class KeyRow:
    key_id: str
    tenant_id: str
    secret_hash: str
    scopes: frozenset[str]
    user_id: str | None
    expires_at: datetime | None
    revoked: bool


@dataclass(frozen=True)
class UserRow:
    user_id: str
    tenant_id: str
    username: str
    role: Role
    scopes: frozenset[str]
    password_hash: str
    disabled: bool


@dataclass(frozen=True)
class SessionRow:
    session_id: str
    tenant_id: str
    user_id: str
    refresh_id: str
    expires_at: datetime
    revoked: bool


class _TtlCache(Generic[T]):
    """Answers of one lookup by key, each kept ``ttl_s`` from when its read began; absences
    are cached too.

    Single-flight: while a key is being read, every other caller of that key waits for that
    same read. Without it, when a busy key's entry expires every request in flight sends its
    own query at once and they queue for the pool's few connections. The read runs as a task
    of its own, so a caller that goes away (a client hanging up) does not cancel it for the
    others; a read that fails fails every caller waiting on it and caches nothing.
    """

    def __init__(self, ttl_s: float, load: Callable[[str], Awaitable[T | None]]) -> None:
        self.ttl_s = ttl_s
        self._load = load
        self._entries: dict[str, tuple[float, T | None]] = {}
        self._loading: dict[str, asyncio.Task[T | None]] = {}

    async def get(self, key: str) -> T | None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        hit = self._entries.get(key)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        task = self._loading.get(key)
        if task is None:
            task = loop.create_task(self._read(key, now))
            task.add_done_callback(_retrieve)
            self._loading[key] = task
        return await asyncio.shield(task)

    async def _read(self, key: str, started: float) -> T | None:
        task = asyncio.current_task()
        try:
            value = await self._load(key)
        finally:
            if self._loading.get(key) is task:
                del self._loading[key]
                current = True
            else:
                current = False  # forgotten meanwhile: a newer read answers from now on
        if current:
            if len(self._entries) > 50_000:  # bounded: a flood of made-up keys cannot grow it
                self._entries.clear()
            self._entries[key] = (started, value)
        return value

    def forget(self, key: str) -> None:
        """Drop the entry and any read in flight: the next get reads afresh."""
        self._entries.pop(key, None)
        self._loading.pop(key, None)


def _retrieve(task: asyncio.Task[Any]) -> None:
    # A read whose every caller went away has nobody awaiting it; read its outcome so
    # asyncio does not warn that an exception was never retrieved.
    if not task.cancelled():
        task.exception()


class KeyUsage:
    """When each key was last used, kept in memory and handed out in batches: one
    apikey.used event now and then, never a write per request."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], datetime] = {}

    def touch(self, tenant_id: str, key_id: str) -> None:
        self._seen[(tenant_id, key_id)] = datetime.now(UTC)

    def take(self) -> dict[str, dict[str, datetime]]:
        """Uses since the last take, by tenant then key."""
        seen, self._seen = self._seen, {}
        by_tenant: dict[str, dict[str, datetime]] = {}
        for (tenant_id, key_id), at in seen.items():
            by_tenant.setdefault(tenant_id, {})[key_id] = at
        return by_tenant


class Authenticator:
    """Checks API keys and access tokens and builds the principal they stand for."""

    def __init__(self, settings: Settings, database: Database, tokens: TokenService) -> None:
        self.settings = settings
        self.database = database
        self.tokens = tokens
        self.pepper = api_key_pepper(settings, tokens)
        ttl = settings.principal_cache_ttl_s
        self.keys = _TtlCache[KeyRow](ttl, self._load_key)
        self.users = _TtlCache[UserRow](ttl, self._load_user)
        self.sessions = _TtlCache[SessionRow](ttl, self._load_session)
        self.tenants = _TtlCache[str](ttl, self._load_tenant_status)
        self.usage = KeyUsage()

    async def api_key(self, token: str) -> Principal:
        """The principal of a presented API key; CredentialRefused otherwise."""
        parsed = parse_api_key(token)
        if parsed is None:
            raise CredentialRefused("invalid_credential")
        prefix, secret = parsed
        row = await self.keys.get(prefix)
        if row is None or not secret_matches(self.pepper, secret, row.secret_hash):
            raise CredentialRefused("invalid_credential")
        if row.revoked:
            raise CredentialRefused("revoked_credential", key_id=row.key_id)
        if row.expires_at is not None and row.expires_at <= datetime.now(UTC):
            raise CredentialRefused("expired_credential", key_id=row.key_id)
        await self._tenant_active(row.tenant_id, key_id=row.key_id)
        scopes = row.scopes
        role: Role | None = None
        if row.user_id is not None:
            # A key never holds more than its owner holds today.
            owner = await self.users.get(row.user_id)
            if owner is None or owner.disabled or owner.tenant_id != row.tenant_id:
                raise CredentialRefused("revoked_credential", key_id=row.key_id)
            scopes = scopes & owner.scopes
            role = owner.role
        self.usage.touch(row.tenant_id, row.key_id)
        return Principal(
            tenant_id=row.tenant_id,
            credential="api_key",
            scopes=scopes,
            role=role,
            user_id=row.user_id,
            key_id=row.key_id,
            expires_at=row.expires_at,
        )

    async def access_token(self, token: str) -> Principal:
        """The principal of a presented access token; CredentialRefused otherwise."""
        try:
            claims = self.tokens.verify(token, "access")
        except InvalidToken as exc:
            reason = "expired_credential" if exc.reason == "ExpiredSignatureError" else None
            raise CredentialRefused(reason or "invalid_credential") from exc
        user = await self.users.get(claims.subject)
        if user is None or user.tenant_id != claims.tenant_id:
            raise CredentialRefused("invalid_credential")
        if user.disabled:
            raise CredentialRefused("revoked_credential", user_id=user.user_id)
        session = await self.sessions.get(claims.session_id)
        if session is None or session.revoked or session.user_id != user.user_id:
            raise CredentialRefused("revoked_credential", user_id=user.user_id)
        await self._tenant_active(user.tenant_id, user_id=user.user_id)
        return Principal(
            tenant_id=user.tenant_id,
            credential="jwt",
            scopes=user.scopes,
            role=user.role,
            user_id=user.user_id,
            session_id=claims.session_id,
            expires_at=claims.expires_at,
        )

    async def _tenant_active(self, tenant_id: str, **who: str | None) -> None:
        # A tenant with no row yet (its tenant.created still on its way) is not refused:
        # its credentials could not exist without the events that made it.
        if await self.tenants.get(tenant_id) == "shredded":
            raise CredentialRefused("revoked_credential", **who)

    # -- loaders -------------------------------------------------------------------------
    async def _fetch(self, sql: str, *args: Any) -> asyncpg.Record | None:
        async with self.database.connection() as conn:
            row: asyncpg.Record | None = await conn.fetchrow(sql, *args)
            return row

    async def _load_key(self, prefix: str) -> KeyRow | None:
        row = await self._fetch(
            """SELECT key_id, tenant_id, secret_hash, scopes, user_id, expires_at,
                   revoked_at IS NOT NULL AS revoked
               FROM api_keys WHERE prefix = $1""",
            prefix,
        )
        if row is None:
            return None
        return KeyRow(**{**dict(row), "scopes": frozenset(row["scopes"])})

    async def _load_user(self, user_id: str) -> UserRow | None:
        row = await self._fetch(
            """SELECT user_id, tenant_id, username, role, extra_scopes, password_hash,
                   disabled_at IS NOT NULL AS disabled
               FROM users WHERE user_id = $1""",
            user_id,
        )
        return None if row is None else user_row(row)

    async def user_by_name(self, username: str) -> UserRow | None:
        """The user who signs in as ``username`` (read fresh: sign-ins are rare)."""
        row = await self._fetch(
            """SELECT user_id, tenant_id, username, role, extra_scopes, password_hash,
                   disabled_at IS NOT NULL AS disabled
               FROM users WHERE username = $1""",
            username,
        )
        return None if row is None else user_row(row)

    async def _load_session(self, session_id: str) -> SessionRow | None:
        row = await self._fetch(
            """SELECT session_id, tenant_id, user_id, refresh_id, expires_at,
                   revoked_at IS NOT NULL AS revoked
               FROM auth_sessions WHERE session_id = $1""",
            session_id,
        )
        return None if row is None else SessionRow(**dict(row))

    async def session_now(self, session_id: str) -> SessionRow | None:
        """The session as the read model holds it now, bypassing the cache (a refresh must
        see the token the family expects next)."""
        self.sessions.forget(session_id)
        return await self.sessions.get(session_id)

    async def _load_tenant_status(self, tenant_id: str) -> str | None:
        row = await self._fetch("SELECT status FROM tenants WHERE tenant_id = $1", tenant_id)
        return None if row is None else str(row["status"])


def user_row(row: asyncpg.Record) -> UserRow:
    """A users row as the authenticator uses it, with the scopes its role grants."""
    return UserRow(
        user_id=row["user_id"],
        tenant_id=row["tenant_id"],
        username=row["username"],
        role=row["role"],
        scopes=role_scopes(row["role"], row["extra_scopes"]),
        password_hash=row["password_hash"],
        disabled=row["disabled"],
    )


def api_key_pepper(settings: Settings, tokens: TokenService) -> bytes:
    """The HMAC key of API key hashes: WRENCH_API_KEY_PEPPER, or one derived from the token
    signing key (so a deployment with one secret still hashes with a secret)."""
    if settings.api_key_pepper is not None:
        return settings.api_key_pepper.get_secret_value().encode()
    base = tokens.signing_material()
    return hmac.new(base, b"wrenchai api key pepper", hashlib.sha256).digest()
