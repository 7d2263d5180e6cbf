"""Postgres at the edge: pools and connections with WrenchAI's codecs, errors mapped."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from wrenchai.errors import WrenchError
from wrenchai.settings import Settings


class DatabaseUnavailable(WrenchError):
    """Postgres could not be reached or refused the connection."""

    code = "DATABASE_UNAVAILABLE"


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "json",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )
    # Binary jsonb (a version byte, then the text) so COPY can write it too.
    await conn.set_type_codec(
        "jsonb",
        encoder=_jsonb_encode,
        decoder=_jsonb_decode,
        schema="pg_catalog",
        format="binary",
    )


def _jsonb_encode(value: Any) -> bytes:
    return b"\x01" + orjson.dumps(value)


def _jsonb_decode(data: bytes) -> Any:
    return orjson.loads(data[1:])


async def connect(settings: Settings, **kwargs: Any) -> asyncpg.Connection:
    """One connection, JSON columns as Python values."""
    try:
        conn = await asyncpg.connect(settings.database_dsn(), **kwargs)
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseUnavailable(
            f"cannot connect to Postgres ({exc}); check WRENCH_DATABASE_URL",
        ) from exc
    await _init_connection(conn)
    return conn


async def create_pool(settings: Settings, **kwargs: Any) -> asyncpg.Pool:
    """A pool of ``database_pool_size`` connections, JSON columns as Python values."""
    try:
        pool = await asyncpg.create_pool(
            settings.database_dsn(),
            min_size=1,
            max_size=settings.database_pool_size,
            init=_init_connection,
            **kwargs,
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseUnavailable(
            f"cannot connect to Postgres ({exc}); check WRENCH_DATABASE_URL",
        ) from exc
    assert pool is not None
    return pool
