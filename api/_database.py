"""The API's Postgres pools: opened at start-up, or on the first request if Postgres was down.

Two pools: the owner's, for what belongs to no tenant (credentials, the projector's offsets,
health), and the tenant-scoped one, whose connections run as the role that cannot bypass
row-level security and set the tenant per transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import structlog

from projections import DatabaseUnavailable, create_pool
from wrenchai.settings import Settings

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT_S = 5.0
ACQUIRE_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 10.0

# Errors of a query that mean "Postgres went away", as opposed to a bad query. They become
# DatabaseUnavailable here, at the edge, so handlers and routes never see asyncpg's types.
# Any error while acquiring a connection is one too: the pool (re)connects there.
LOST_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable; TimeoutError is one too
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    # What asyncpg raises when the server dropped a pooled connection while it sat idle and
    # the protocol state went out of step ("cannot switch to state ...").
    asyncpg.InternalClientError,
)


class Database:
    """An asyncpg pool: opened at start-up, or on the first request if Postgres was down.

    With ``role``, every connection runs as that role from its start (a startup parameter,
    so even ``RESET ALL`` between pooled uses goes back to it), and reads go through
    :meth:`tenant`.
    """

    def __init__(self, settings: Settings, role: str | None = None) -> None:
        self.settings = settings
        self.role = role
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        """Try to open the pool now; a failure is logged and retried on demand."""
        try:
            await self.pool()
        except DatabaseUnavailable as exc:
            log.warning("database unavailable at start-up", reason=exc.message)

    async def pool(self) -> asyncpg.Pool:
        """The pool, opening it if needed; DatabaseUnavailable when Postgres does not answer."""
        async with self._lock:
            if self._pool is None:
                options = {"server_settings": {"role": self.role}} if self.role else {}
                self._pool = await create_pool(self.settings, timeout=CONNECT_TIMEOUT_S, **options)
            return self._pool

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; losing Postgres on the way is DatabaseUnavailable."""
        pool = await self.pool()
        try:
            conn = await pool.acquire(timeout=ACQUIRE_TIMEOUT_S)
        except (asyncpg.PostgresError, *LOST_CONNECTION_ERRORS) as exc:
            raise DatabaseUnavailable(f"cannot connect to Postgres: {exc}") from exc
        try:
            yield conn
        except LOST_CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(f"lost the connection to Postgres: {exc}") from exc
        finally:
            await _release(pool, conn)

    @asynccontextmanager
    async def tenant(
        self, tenant_id: str, *, isolation: str | None = None, readonly: bool = True
    ) -> AsyncIterator[asyncpg.Connection]:
        """A connection inside a transaction that sees only ``tenant_id``'s rows: row-level
        security reads the tenant from ``wrench.tenant_id``, set for this transaction only."""
        async with self.connection() as conn:
            options = {"isolation": isolation} if isolation else {}
            try:
                async with conn.transaction(readonly=readonly, **options):
                    await conn.execute("SELECT set_config('wrench.tenant_id', $1, true)", tenant_id)
                    yield conn
            except LOST_CONNECTION_ERRORS as exc:
                raise DatabaseUnavailable(f"lost the connection to Postgres: {exc}") from exc

    async def close(self) -> None:
        """Close the pool, waiting a little for requests still using it."""
        async with self._lock:
            pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT_S)
        except TimeoutError:
            pool.terminate()


async def _release(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    # The pool resets a connection on release and terminates it when that fails, so a
    # failure here only means the connection was discarded; it must not replace the
    # request's own outcome (an answer already computed, or DatabaseUnavailable).
    try:
        await pool.release(conn)
    except Exception as exc:
        log.warning("pooled connection discarded", error_type=type(exc).__name__)
