"""Read models built from the log: migrations, the projector, the archive, rebuild, restore."""

from __future__ import annotations

from projections._archive import GENESIS_HASH, chain_hash, headers_from_json, headers_to_json
from projections._audit import BrokenLink, VerifyReport, verify_archive, verify_chain
from projections._db import DatabaseUnavailable, connect, create_pool
from projections._migrate import migrate
from projections._projector import BatchOutcome, Projector
from projections._read_models import READ_MODELS, Applied, ReadModel, TasksModel
from projections._rebuild import RebuildError, RebuildReport, rebuild, rebuild_all
from projections._restore import RestoreReport, restore_all, restore_log
from projections._runner import ProjectorRunner, run_projector
from projections._streams import ADMIN, EVENTS, STREAMS, Stream
from wrenchai.settings import Settings


async def migrate_database(settings: Settings) -> list[str]:
    """Connect and apply the migrations this database lacks."""
    conn = await connect(settings)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


__all__ = [
    "ADMIN",
    "EVENTS",
    "GENESIS_HASH",
    "READ_MODELS",
    "STREAMS",
    "Applied",
    "BatchOutcome",
    "BrokenLink",
    "DatabaseUnavailable",
    "Projector",
    "ProjectorRunner",
    "ReadModel",
    "RebuildError",
    "RebuildReport",
    "RestoreReport",
    "Stream",
    "TasksModel",
    "VerifyReport",
    "chain_hash",
    "connect",
    "create_pool",
    "headers_from_json",
    "headers_to_json",
    "migrate",
    "migrate_database",
    "rebuild",
    "rebuild_all",
    "restore_all",
    "restore_log",
    "run_projector",
    "verify_archive",
    "verify_chain",
]
