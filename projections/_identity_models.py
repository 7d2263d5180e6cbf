"""Read models of identity, folded from wrench.admin: tenants, users, API keys and sessions.

Every statement is safe to apply twice. Rows are keyed by the ids in the events; a user or
key whose name or prefix is taken already is not inserted (the first on the log wins, and
the API that published the loser reads back that it lost). Security facts that change no
state (login.failed, access.denied, login.succeeded) stay in the archive only.
"""

from __future__ import annotations

from collections.abc import Mapping

from events import (
    ApiKeyIssued,
    ApiKeyRevoked,
    ApiKeyUsed,
    RoleChanged,
    SessionRefreshed,
    SessionRevoked,
    SessionStarted,
    TenantCreated,
    TenantShredded,
    UserCreated,
    UserDisabled,
)
from projections._read_model_types import Applied, Statement


class TenantsModel:
    """One row per tenant; shredding marks it."""

    tables: tuple[str, ...] = ("tenants",)
    event_types: tuple[str, ...] = (TenantCreated.event_type, TenantShredded.event_type)

    def statements(self, applied: Applied, names: Mapping[str, str]) -> list[Statement]:
        event = applied.event
        table = names["tenants"]
        if isinstance(event.payload, TenantCreated):
            return [
                (
                    f"""INSERT INTO {table} (tenant_id, name, created_at, event_id)
                    VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING""",
                    (event.tenant_id, event.payload.name, event.occurred_at, event.id),
                )
            ]
        if isinstance(event.payload, TenantShredded):
            # A tenant shredded before its tenant.created was projected still ends shredded.
            return [
                (
                    f"""INSERT INTO {table} (tenant_id, name, status, created_at, shredded_at,
                        event_id)
                    VALUES ($1, $1, 'shredded', $2, $2, $3)
                    ON CONFLICT (tenant_id) DO UPDATE SET status = 'shredded',
                        shredded_at = COALESCE({table}.shredded_at, EXCLUDED.shredded_at)""",
                    (event.tenant_id, event.occurred_at, event.id),
                )
            ]
        return []


class UsersModel:
    """One row per user: role, extra scopes, password hash, and whether they are disabled.
    Disabling a user ends their sessions."""

    tables: tuple[str, ...] = ("users",)
    event_types: tuple[str, ...] = (
        UserCreated.event_type,
        UserDisabled.event_type,
        RoleChanged.event_type,
    )

    def statements(self, applied: Applied, names: Mapping[str, str]) -> list[Statement]:
        event, p = applied.event, applied.event.payload
        users = names["users"]
        if isinstance(p, UserCreated):
            return [
                (
                    f"""INSERT INTO {users} (user_id, tenant_id, username, role, extra_scopes,
                        password_hash, created_at, updated_at, event_id)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8) ON CONFLICT DO NOTHING""",
                    (
                        p.user_id,
                        event.tenant_id,
                        p.username,
                        p.role,
                        p.extra_scopes,
                        p.password_hash,
                        event.occurred_at,
                        event.id,
                    ),
                )
            ]
        if isinstance(p, UserDisabled):
            return [
                (
                    f"""UPDATE {users} SET disabled_at = COALESCE(disabled_at, $3), updated_at = $3
                    WHERE user_id = $1 AND tenant_id = $2""",
                    (p.user_id, event.tenant_id, event.occurred_at),
                ),
                (
                    f"""UPDATE {names["auth_sessions"]} SET revoked_at = $3,
                        revoked_reason = 'user_disabled'
                    WHERE user_id = $1 AND tenant_id = $2 AND revoked_at IS NULL""",
                    (p.user_id, event.tenant_id, event.occurred_at),
                ),
            ]
        if isinstance(p, RoleChanged):
            return [
                (
                    f"""UPDATE {users} SET role = $3, updated_at = $4
                    WHERE user_id = $1 AND tenant_id = $2""",
                    (p.user_id, event.tenant_id, p.role, event.occurred_at),
                )
            ]
        return []


class ApiKeysModel:
    """One row per API key: its prefix, the hash of its secret, scopes, expiry, revocation
    and when it was last used."""

    tables: tuple[str, ...] = ("api_keys",)
    event_types: tuple[str, ...] = (
        ApiKeyIssued.event_type,
        ApiKeyRevoked.event_type,
        ApiKeyUsed.event_type,
    )

    def statements(self, applied: Applied, names: Mapping[str, str]) -> list[Statement]:
        event, p = applied.event, applied.event.payload
        keys = names["api_keys"]
        if isinstance(p, ApiKeyIssued):
            return [
                (
                    f"""INSERT INTO {keys} (key_id, tenant_id, prefix, secret_hash, name, scopes,
                        user_id, created_by, created_at, expires_at, event_id)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                    ON CONFLICT DO NOTHING""",
                    (
                        p.key_id,
                        event.tenant_id,
                        p.prefix,
                        p.secret_hash,
                        p.name,
                        p.scopes,
                        p.user_id,
                        f"{event.actor.kind}:{event.actor.id}",
                        event.occurred_at,
                        p.expires_at,
                        event.id,
                    ),
                )
            ]
        if isinstance(p, ApiKeyRevoked):
            return [
                (
                    f"""UPDATE {keys} SET revoked_at = COALESCE(revoked_at, $3)
                    WHERE key_id = $1 AND tenant_id = $2""",
                    (p.key_id, event.tenant_id, event.occurred_at),
                )
            ]
        if isinstance(p, ApiKeyUsed):
            sql = f"""UPDATE {keys} SET last_used_at = GREATEST(COALESCE(last_used_at, $3), $3)
                WHERE key_id = $1 AND tenant_id = $2"""
            return [(sql, (use.key_id, event.tenant_id, use.last_used_at)) for use in p.uses]
        return []


class SessionsModel:
    """One row per refresh-token family. A refresh applies only when it spends the family's
    current token; spending any other one is reuse, and ends the family."""

    tables: tuple[str, ...] = ("auth_sessions",)
    event_types: tuple[str, ...] = (
        SessionStarted.event_type,
        SessionRefreshed.event_type,
        SessionRevoked.event_type,
    )

    def statements(self, applied: Applied, names: Mapping[str, str]) -> list[Statement]:
        event, p = applied.event, applied.event.payload
        sessions = names["auth_sessions"]
        if isinstance(p, SessionStarted):
            return [
                (
                    f"""INSERT INTO {sessions} (session_id, tenant_id, user_id, refresh_id,
                        expires_at, started_at)
                    VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING""",
                    (
                        p.session_id,
                        event.tenant_id,
                        p.user_id,
                        p.refresh_id,
                        p.expires_at,
                        event.occurred_at,
                    ),
                )
            ]
        if isinstance(p, SessionRefreshed):
            # Two statements in order: the rotation when ``previous`` is current; otherwise
            # the row still holds another token than the new one, which revokes the family.
            return [
                (
                    f"""UPDATE {sessions} SET refresh_id = $3, expires_at = $4, refreshed_at = $5
                    WHERE session_id = $1 AND refresh_id = $2 AND revoked_at IS NULL""",
                    (
                        p.session_id,
                        p.previous_refresh_id,
                        p.refresh_id,
                        p.expires_at,
                        event.occurred_at,
                    ),
                ),
                (
                    f"""UPDATE {sessions} SET revoked_at = $3,
                        revoked_reason = 'refresh_token_reused'
                    WHERE session_id = $1 AND refresh_id <> $2 AND revoked_at IS NULL""",
                    (p.session_id, p.refresh_id, event.occurred_at),
                ),
            ]
        if isinstance(p, SessionRevoked):
            return [
                (
                    f"""UPDATE {sessions} SET revoked_at = $2, revoked_reason = $3
                    WHERE session_id = $1 AND revoked_at IS NULL""",
                    (p.session_id, event.occurred_at, p.reason),
                )
            ]
        return []


ADMIN_READ_MODELS = (TenantsModel(), UsersModel(), ApiKeysModel(), SessionsModel())
"""The read models folded from wrench.admin, in the order they apply."""
