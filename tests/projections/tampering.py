"""Writing to the archive as an attacker would.

event_log and chain_checkpoints refuse UPDATE, DELETE and TRUNCATE (a trigger, migration
0008). Someone who holds the database's owner or superuser credentials can disable that
trigger, and that is exactly the attacker the hash chain and the signed checkpoints are
there to catch. Tests that tamper with the archive therefore disable it first, as that
attacker would, through :func:`tampering`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

GUARDED = ("event_log", "chain_checkpoints")


@asynccontextmanager
async def tampering(db: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    """``db`` with the append-only triggers disabled (as the tables' owner or a superuser
    can), enabled again on the way out."""
    for table in GUARDED:
        await db.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
    try:
        yield db
    finally:
        for table in GUARDED:
            await db.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
