"""Read models built from the log: migrations, the projector, the archive, rebuild, restore."""

from __future__ import annotations

from projections._archive import (
    CHAIN_VERSION,
    GENESIS_HASH,
    chain_hash,
    chain_hash_v2,
    headers_from_json,
    headers_to_json,
    link_hash,
    record_digest,
)
from projections._audit import BrokenLink, VerifyReport, verify_archive, verify_chain
from projections._checkpoints import Checkpointer
from projections._db import DatabaseUnavailable, connect, create_pool
from projections._export import ExportRefused, ExportReport, export_range
from projections._export_verify import ExportProblem, ExportVerifyReport, verify_export
from projections._migrate import migrate
from projections._projector import BatchOutcome, Projector
from projections._read_model_types import Applied, ReadModel
from projections._read_models import READ_MODELS, TasksModel
from projections._rebuild import RebuildError, RebuildReport, rebuild, rebuild_all
from projections._restore import RestoreReport, restore_all, restore_log
from projections._runner import ProjectorRunner, run_projector
from projections._signing import (
    Keyring,
    Signer,
    keyring_from_settings,
    load_public_key,
    signer_from_settings,
)
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
    "CHAIN_VERSION",
    "EVENTS",
    "GENESIS_HASH",
    "READ_MODELS",
    "STREAMS",
    "Applied",
    "BatchOutcome",
    "BrokenLink",
    "Checkpointer",
    "DatabaseUnavailable",
    "ExportProblem",
    "ExportRefused",
    "ExportReport",
    "ExportVerifyReport",
    "Keyring",
    "Projector",
    "ProjectorRunner",
    "ReadModel",
    "RebuildError",
    "RebuildReport",
    "RestoreReport",
    "Signer",
    "Stream",
    "TasksModel",
    "VerifyReport",
    "chain_hash",
    "chain_hash_v2",
    "connect",
    "create_pool",
    "export_range",
    "headers_from_json",
    "headers_to_json",
    "keyring_from_settings",
    "link_hash",
    "load_public_key",
    "migrate",
    "migrate_database",
    "rebuild",
    "rebuild_all",
    "record_digest",
    "restore_all",
    "restore_log",
    "run_projector",
    "signer_from_settings",
    "verify_archive",
    "verify_chain",
    "verify_export",
]
