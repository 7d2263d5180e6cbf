"""The key store in Postgres: tables ``tenant_keyrings`` and ``tenant_keys`` (migration 0006).

The events layer holds this one driver adapter for Postgres as it holds one for Kafka: the
codec needs keys, and the projections layer sits above this one. Each operation opens its
own short connection. Keys are read once per tenant per ``key_cache_ttl_s`` at most, so a
pool would sit idle, and a connection that lives only for one query survives a Postgres
restart without anyone noticing. asyncpg's errors never leave this module as themselves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager

import asyncpg
from cryptography.fernet import Fernet, MultiFernet

from events._keyring import (
    KeyringCipher,
    KeyStoreUnavailable,
    MasterKeys,
    Shredding,
    StoredKeys,
    WrappedKey,
)
from wrenchai.settings import Settings


class PostgresKeyStore:
    """:class:`~events._keyring.KeyStore` on the database of ``WRENCH_DATABASE_URL``."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            conn = await asyncpg.connect(self._settings.database_dsn())
        except (OSError, asyncpg.PostgresError) as exc:
            raise KeyStoreUnavailable(
                f"cannot reach the key store in Postgres ({type(exc).__name__}); check "
                "WRENCH_DATABASE_URL and that Postgres is up"
            ) from exc
        try:
            yield conn
        except asyncpg.UndefinedTableError as exc:
            raise KeyStoreUnavailable(
                "the key tables do not exist yet; run `wrenchai migrate` (the projector and "
                "`wrenchai dev` run it at start)"
            ) from exc
        except (OSError, asyncpg.PostgresError) as exc:
            raise KeyStoreUnavailable(
                f"the key store failed ({type(exc).__name__}: {exc}); nothing was changed"
            ) from exc
        finally:
            await conn.close()

    async def load(self, tenant_ids: Collection[str]) -> dict[str, StoredKeys]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                """SELECT r.tenant_id, r.shredded_at IS NOT NULL AS shredded,
                          k.key_id, k.wrapped_key, k.master_key
                   FROM tenant_keyrings r
                   LEFT JOIN tenant_keys k ON k.tenant_id = r.tenant_id
                   WHERE r.tenant_id = ANY($1::text[])
                   ORDER BY r.tenant_id, k.key_id DESC""",
                list(tenant_ids),
            )
        return _by_tenant(rows)

    async def create_first(self, tenant_id: str, key: WrappedKey) -> StoredKeys:
        async with self._connection() as conn, conn.transaction():
            await self._lock_ring(conn, tenant_id)
            await conn.execute(
                """INSERT INTO tenant_keys (tenant_id, key_id, wrapped_key, master_key)
                   SELECT $1, $2, $3, $4 FROM tenant_keyrings
                   WHERE tenant_id = $1 AND shredded_at IS NULL
                     AND NOT EXISTS (SELECT 1 FROM tenant_keys WHERE tenant_id = $1)""",
                tenant_id,
                key.key_id,
                key.wrapped,
                key.master_key,
            )
            rows = await conn.fetch(
                """SELECT r.tenant_id, r.shredded_at IS NOT NULL AS shredded,
                          k.key_id, k.wrapped_key, k.master_key
                   FROM tenant_keyrings r
                   LEFT JOIN tenant_keys k ON k.tenant_id = r.tenant_id
                   WHERE r.tenant_id = $1 ORDER BY k.key_id DESC""",
                tenant_id,
            )
        return _by_tenant(rows)[tenant_id]

    async def add(self, tenant_id: str, wrap: Callable[[int], WrappedKey]) -> int | None:
        async with self._connection() as conn, conn.transaction():
            shredded = await self._lock_ring(conn, tenant_id)
            if shredded:
                return None
            newest = await conn.fetchval(
                "SELECT COALESCE(max(key_id), 0) FROM tenant_keys WHERE tenant_id = $1",
                tenant_id,
            )
            key = wrap(newest + 1)
            await conn.execute(
                """INSERT INTO tenant_keys (tenant_id, key_id, wrapped_key, master_key)
                   VALUES ($1, $2, $3, $4)""",
                tenant_id,
                key.key_id,
                key.wrapped,
                key.master_key,
            )
            return key.key_id

    async def rewrap(self, rewrap: Callable[[str, WrappedKey], WrappedKey]) -> int:
        async with self._connection() as conn, conn.transaction():
            # Locks every key row: a rotation running beside this one waits, and a tenant's
            # first key made meanwhile is wrapped by the newest master key already.
            rows = await conn.fetch(
                """SELECT tenant_id, key_id, wrapped_key, master_key FROM tenant_keys
                   ORDER BY tenant_id, key_id FOR UPDATE"""
            )
            fresh = [(r["tenant_id"], rewrap(r["tenant_id"], _key(r))) for r in rows]
            await conn.executemany(
                """UPDATE tenant_keys SET wrapped_key = $3, master_key = $4, wrapped_at = now()
                   WHERE tenant_id = $1 AND key_id = $2""",
                [(t, k.key_id, k.wrapped, k.master_key) for t, k in fresh],
            )
        return len(fresh)

    async def destroy(self, tenant_id: str, reason: str | None) -> Shredding:
        async with self._connection() as conn, conn.transaction():
            await self._lock_ring(conn, tenant_id)
            done = await conn.fetchval(
                "SELECT keys_destroyed FROM tenant_keyrings WHERE tenant_id = $1 "
                "AND shredded_at IS NOT NULL",
                tenant_id,
            )
            if done is not None:
                return Shredding(tenant_id, done, first=False)
            destroyed = await conn.fetchval(
                """WITH gone AS (DELETE FROM tenant_keys WHERE tenant_id = $1 RETURNING 1)
                   SELECT count(*) FROM gone""",
                tenant_id,
            )
            await conn.execute(
                """UPDATE tenant_keyrings SET shredded_at = now(), shred_reason = $2,
                       keys_destroyed = $3
                   WHERE tenant_id = $1""",
                tenant_id,
                reason,
                destroyed,
            )
        return Shredding(tenant_id, destroyed, first=True)

    async def tenants(self) -> list[str]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                """SELECT tenant_id FROM tenant_keyrings
                   WHERE shredded_at IS NULL ORDER BY tenant_id"""
            )
        return [r["tenant_id"] for r in rows]

    @staticmethod
    async def _lock_ring(conn: asyncpg.Connection, tenant_id: str) -> bool:
        """Make the tenant's keyring row if missing and lock it for this transaction;
        returns whether the tenant was shredded."""
        await conn.execute(
            "INSERT INTO tenant_keyrings (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING",
            tenant_id,
        )
        shredded = await conn.fetchval(
            "SELECT shredded_at IS NOT NULL FROM tenant_keyrings WHERE tenant_id = $1 FOR UPDATE",
            tenant_id,
        )
        return bool(shredded)


def _key(row: asyncpg.Record) -> WrappedKey:
    return WrappedKey(row["key_id"], bytes(row["wrapped_key"]), row["master_key"])


def _by_tenant(rows: list[asyncpg.Record]) -> dict[str, StoredKeys]:
    keys: dict[str, list[WrappedKey]] = {}
    shredded: dict[str, bool] = {}
    for row in rows:
        keys.setdefault(row["tenant_id"], [])
        shredded[row["tenant_id"]] = row["shredded"]
        if row["key_id"] is not None:
            keys[row["tenant_id"]].append(_key(row))
    return {
        tenant_id: StoredKeys(tenant_id, tuple(found), shredded[tenant_id])
        for tenant_id, found in keys.items()
    }


def split_keys(value: str) -> list[str]:
    """Comma-separated keys, newest first, as settings hold them."""
    return [key.strip() for key in value.split(",") if key.strip()]


def master_keys(settings: Settings) -> MasterKeys:
    """The master keys of ``settings`` (MasterKeyError when there are none)."""
    raw = settings.master_keys.get_secret_value() if settings.master_keys is not None else ""
    return MasterKeys(split_keys(raw))


def keyring_from_settings(settings: Settings) -> KeyringCipher:
    """The per-tenant keyring: keys in this deployment's Postgres, wrapped by its master
    keys, the legacy ``WRENCH_ENCRYPTION_KEYS`` kept for decrypting older fields."""
    legacy = settings.fernet_keys()
    return KeyringCipher(
        store=PostgresKeyStore(settings),
        master=master_keys(settings),
        legacy=MultiFernet([Fernet(k.encode()) for k in legacy]) if legacy else None,
        ttl_s=settings.key_cache_ttl_s,
    )
