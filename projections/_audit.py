"""``wrenchai audit verify``: recompute the archive's hash chain and find the first broken link.

Each partition's chain starts at :data:`GENESIS_HASH`; every row must sit at the next offset,
carry the previous row's hash as ``prev_hash``, and hash to sha256(prev_hash + raw_value).
The columns derived from the raw value (id, type, tenant, payload…) must still agree with it,
so editing any of them is caught too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg

from events import Codec, EventDecodeError, codec_from_settings
from projections._archive import GENESIS_HASH, chain_hash, headers_from_json
from projections._db import connect
from wrenchai.settings import Settings

_FETCH = 2_000


@dataclass(frozen=True)
class BrokenLink:
    """Where the chain breaks and why."""

    topic: str
    partition: int
    offset: int
    problem: str

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}] offset {self.offset}: {self.problem}"


@dataclass
class VerifyReport:
    """The outcome of a verification: how much was checked and the first broken link, if any."""

    checked: int = 0
    partitions: dict[str, int] = field(default_factory=dict)
    broken: BrokenLink | None = None

    @property
    def ok(self) -> bool:
        return self.broken is None

    def __str__(self) -> str:
        if self.broken is not None:
            return f"BROKEN after {self.checked} good record(s): {self.broken}"
        heads = ", ".join(f"{k} ({v} records)" for k, v in sorted(self.partitions.items()))
        return f"OK: {self.checked} record(s) verified in {len(self.partitions)} partition(s)" + (
            f": {heads}" if heads else ""
        )


async def verify_chain(settings: Settings) -> VerifyReport:
    """Verify every partition of the archive; stops at the first broken link."""
    conn = await connect(settings)
    try:
        return await verify_archive(conn, codec_from_settings(settings))
    finally:
        await conn.close()


async def verify_archive(conn: asyncpg.Connection, codec: Codec) -> VerifyReport:
    """Verify the archive reachable through ``conn``."""
    report = VerifyReport()
    partitions = await conn.fetch(
        "SELECT DISTINCT topic, partition FROM event_log ORDER BY topic, partition"
    )
    for row in partitions:
        topic, partition = row["topic"], row["partition"]
        broken, count = await _verify_partition(conn, codec, topic, partition, report)
        report.partitions[f"{topic}[{partition}]"] = count
        if broken is not None:
            report.broken = broken
            break
    return report


async def _verify_partition(
    conn: asyncpg.Connection, codec: Codec, topic: str, partition: int, report: VerifyReport
) -> tuple[BrokenLink | None, int]:
    expected_offset, prev, count = 0, GENESIS_HASH, 0
    async with conn.transaction(readonly=True, isolation="repeatable_read"):
        cursor = conn.cursor(
            'SELECT * FROM event_log WHERE topic = $1 AND partition = $2 ORDER BY "offset"',
            topic,
            partition,
            prefetch=_FETCH,
        )
        async for row in cursor:
            problem = _check_row(row, expected_offset, prev, codec)
            if problem is not None:
                return BrokenLink(topic, partition, row["offset"], problem), count
            prev, expected_offset = row["hash"], expected_offset + 1
            count += 1
            report.checked += 1
    return None, count


def _check_row(row: asyncpg.Record, offset: int, prev: bytes, codec: Codec) -> str | None:
    if row["offset"] != offset:
        return f"gap: expected offset {offset}, found {row['offset']}"
    if row["prev_hash"] != prev:
        return "prev_hash does not match the previous record's hash"
    if row["hash"] != chain_hash(prev, row["raw_value"]):
        return "hash does not match sha256(prev_hash + raw_value): the record was altered"
    return _check_columns(row, codec)


def _check_columns(row: asyncpg.Record, codec: Codec) -> str | None:
    """The columns derived from raw_value must still say what raw_value says."""
    if row["status"] == "poison":
        return None
    try:
        stored = codec.parse(row["raw_value"], headers_from_json(row["raw_headers"]))
    except EventDecodeError as exc:
        return f"a {row['status']} record no longer parses: {exc.message}"
    expected: dict[str, Any] = {
        "type": stored.get("type"),
        "schema_version": stored.get("schema_version"),
        "tenant_id": stored.get("tenant_id"),
        "task_id": stored.get("task_id"),
    }
    if row["status"] == "applied":
        expected.update(id=stored.get("id"), payload=stored.get("payload"))
    for column, value in expected.items():
        actual = row[column]
        if column in ("id", "task_id") and actual is not None:
            actual = str(actual)
        if actual != value:
            return f"column {column} differs from the logged record"
    return None
