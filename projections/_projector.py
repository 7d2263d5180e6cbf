"""The projector: wrench.events into the archive, the read models and its own offsets.

Each batch is one Postgres transaction that archives every record (hash-chained per
partition), applies the events to the read models and moves the stored offsets. Kafka's
committed offsets are only informational: on assignment the projector seeks to the offsets
in Postgres, so a crash between the transaction and anything else loses and doubles nothing.

A batch is read first (:meth:`Projector.read`: decoding, digests, statements; see
projections._batch) and written after (:meth:`Projector.write`: the transaction), so a
runner can read one batch while the previous one is being written.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog

from events import Codec, EventProducer, Record
from projections._archive import GENESIS_HASH
from projections._batch import ARCHIVE_COLUMNS, Fetched, ReadRecord, archive_row, read_batch
from projections._read_models import ModelsByType, owned_tables
from projections._statements import StatementPlan, ordering_key
from projections._streams import EVENTS, Stream
from wrenchai.settings import Settings

log = structlog.get_logger(__name__)

ReadBatch = Mapping[int, list[ReadRecord]]
"""A batch as :meth:`Projector.read` returns it: read records per partition."""

# Locks the partitions' offset rows (in partition order, so two projectors never deadlock)
# and reads, in the same round trip, the hash each partition's chain continues from.
_CLAIM = """
WITH claimed AS (
    SELECT partition, next_offset FROM consumer_offsets
    WHERE group_id = $1 AND topic = $2 AND partition = ANY($3::int[])
    ORDER BY partition FOR UPDATE
)
SELECT c.partition, c.next_offset, e.hash FROM claimed c
LEFT JOIN event_log e
    ON e.topic = $2 AND e.partition = c.partition AND e."offset" = c.next_offset - 1
"""


@dataclass
class BatchOutcome:
    """What one batch did, for logs, metrics and tests."""

    applied: int = 0
    duplicates: int = 0
    poison: int = 0
    skipped: int = 0
    next_offsets: dict[int, int] = field(default_factory=dict)
    types: dict[str, int] = field(default_factory=dict)
    """Records archived (applied, duplicate or poison) per event type: the type header,
    'unknown' without one."""


@dataclass
class _Archive:
    """What archiving a batch produced, for the statements that write it."""

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    plan: StatementPlan = field(default_factory=StatementPlan)
    dead: list[ReadRecord] = field(default_factory=list)


class Projector:
    """Applies batches of records from one topic; knows nothing of how they were fetched."""

    def __init__(
        self, settings: Settings, codec: Codec, dlq: EventProducer, stream: Stream = EVENTS
    ) -> None:
        self.settings = settings
        self.codec = codec
        self.dlq = dlq
        self.stream = stream
        self.topic = stream.topic(settings)
        self.group = stream.group(settings)
        self.names = {t: t for t in owned_tables(stream.models)}
        self.models = ModelsByType(stream.models)

    async def stored_offsets(self, conn: asyncpg.Connection) -> dict[int, int]:
        """The next offset to apply per partition, as committed with the read models."""
        rows = await conn.fetch(
            "SELECT partition, next_offset FROM consumer_offsets"
            " WHERE group_id = $1 AND topic = $2",
            self.group,
            self.topic,
        )
        return {r["partition"]: r["next_offset"] for r in rows}

    async def apply(self, conn: asyncpg.Connection, batches: Fetched) -> BatchOutcome:
        """Archive and apply one batch (records per partition, in offset order) atomically."""
        return await self.write(conn, await self.read(batches))

    async def read(self, batches: Fetched) -> dict[int, list[ReadRecord]]:
        """Everything of the batch that needs no database; see projections._batch."""
        return await read_batch(self.codec, batches, self.models, self.names)

    async def write(self, conn: asyncpg.Connection, batch: ReadBatch) -> BatchOutcome:
        """Archive and apply a batch read by :meth:`read`, in one transaction.

        A fixed handful of round trips per batch, whatever the number of partitions and
        records in it: claim, archived ids, the archive's COPY, the read models' statements
        (one per group, projections._statements) and the offsets.
        """
        outcome = BatchOutcome()
        async with conn.transaction():
            fresh, prev_hashes = await self._claim(conn, batch, outcome)
            if not fresh:
                return outcome
            seen = await self._archived_ids(conn, fresh)
            archive = self._archive(fresh, prev_hashes, seen, outcome)
            await self._send_to_dlq(archive.dead)
            await conn.copy_records_to_table(
                "event_log", records=archive.rows, columns=ARCHIVE_COLUMNS
            )
            await archive.plan.run(conn)
            await conn.executemany(
                """INSERT INTO consumer_offsets (group_id, topic, partition, next_offset)
                   VALUES ($1, $2, $3, $4)
                   ON CONFLICT (group_id, topic, partition)
                   DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()""",
                [(self.group, self.topic, p, o) for p, o in outcome.next_offsets.items()],
            )
        return outcome

    async def _claim(
        self, conn: asyncpg.Connection, batch: ReadBatch, outcome: BatchOutcome
    ) -> tuple[dict[int, list[ReadRecord]], dict[int, bytes]]:
        """Lock the partitions' offset rows and keep only the records past them; with the
        hash each partition's chain continues from.

        The row locks fence two projectors that briefly both hold a partition during a
        rebalance: the second waits, then finds the records already applied.
        """
        rows = await conn.fetch(_CLAIM, self.group, self.topic, sorted(batch))
        stored = {r["partition"]: (r["next_offset"], r["hash"]) for r in rows}
        fresh: dict[int, list[ReadRecord]] = {}
        prev_hashes: dict[int, bytes] = {}
        for partition, records in batch.items():
            next_offset, prev_hash = stored.get(partition, (0, None))
            kept = [r for r in records if r.record.offset >= next_offset]
            outcome.skipped += len(records) - len(kept)
            if not kept:
                continue
            if kept[0].record.offset != next_offset:
                raise OffsetGap(partition, next_offset, kept[0].record.offset)
            fresh[partition] = kept
            if next_offset == 0:
                prev_hashes[partition] = GENESIS_HASH
            elif prev_hash is not None:
                prev_hashes[partition] = prev_hash
        missing = [p for p in fresh if p not in prev_hashes]
        if missing:
            # Only when this claim waited for another projector's commit: the join above
            # read event_log as it was before that commit.
            prev_hashes.update(await self._prev_hashes(conn, {p: fresh[p] for p in missing}))
        return fresh, prev_hashes

    async def _prev_hashes(
        self, conn: asyncpg.Connection, fresh: dict[int, list[ReadRecord]]
    ) -> dict[int, bytes]:
        """The hash each partition's chain continues from."""
        wanted = {p: records[0].record.offset - 1 for p, records in fresh.items()}
        rows = await conn.fetch(
            """SELECT partition, hash FROM event_log
               WHERE topic = $1 AND (partition, "offset") IN
                     (SELECT * FROM unnest($2::int[], $3::bigint[]))""",
            self.topic,
            list(wanted),
            list(wanted.values()),
        )
        found = {r["partition"]: r["hash"] for r in rows}
        for partition, offset in wanted.items():
            if partition not in found:  # the stored offset says it was archived; it is not
                raise OffsetGap(partition, offset, offset + 1)
        return found

    async def _archived_ids(
        self, conn: asyncpg.Connection, fresh: dict[int, list[ReadRecord]]
    ) -> set[uuid.UUID]:
        """The batch's event ids that the archive holds already."""
        ids = [r.event.id for rs in fresh.values() for r in rs if r.event is not None]
        found = await conn.fetch("SELECT id FROM event_log WHERE id = ANY($1::uuid[])", ids)
        return {r["id"] for r in found}

    def _archive(
        self,
        fresh: dict[int, list[ReadRecord]],
        prev_hashes: dict[int, bytes],
        seen: set[uuid.UUID],
        outcome: BatchOutcome,
    ) -> _Archive:
        """Chain every record (poison, duplicate or applied) into its archive row, and plan
        the statements of each first occurrence of an event id."""
        archive = _Archive()
        for partition, records in sorted(fresh.items()):
            prev = prev_hashes[partition]
            for read in records:
                digest = read.link(prev)
                kind = _type_of(read)
                outcome.types[kind] = outcome.types.get(kind, 0) + 1
                if read.event is None:
                    archive.dead.append(read)
                    status = "poison"
                    outcome.poison += 1
                elif read.event.id in seen:
                    status = "duplicate"
                    outcome.duplicates += 1
                else:
                    seen.add(read.event.id)
                    status = "applied"
                    archive.plan.add(ordering_key(read.event), read.statements)
                    outcome.applied += 1
                archive.rows.append(archive_row(self.topic, read, status, prev, digest))
                prev = digest
            outcome.next_offsets[partition] = records[-1].record.offset + 1
        return archive

    async def _send_to_dlq(self, dead: Iterable[ReadRecord]) -> None:
        """Copy poison records to wrench.dlq with the reason in headers, before the commit:
        a failed commit may send a copy twice, but never zero times."""
        dead = list(dead)
        if not dead:
            return
        records = []
        for read in dead:
            r, exc = read.record, read.error
            assert exc is not None
            records.append(
                Record(
                    key=r.key,
                    value=r.value or b"",
                    headers=(
                        *read.headers,
                        ("dlq.reason", exc.reason.encode()),
                        ("dlq.error", exc.message[:1000].encode()),
                        ("dlq.topic", r.topic.encode()),
                        ("dlq.partition", str(r.partition).encode()),
                        ("dlq.offset", str(r.offset).encode()),
                        ("dlq.consumer", self.group.encode()),
                    ),
                )
            )
        await self.dlq.send_records(self.settings.topic("dlq"), records)
        for read in dead:
            assert read.error is not None
            log.warning(
                "poison record sent to the DLQ",
                partition=read.record.partition,
                offset=read.record.offset,
                reason=read.error.reason,
                error=read.error.message,
            )


def _type_of(read: ReadRecord) -> str:
    if read.event is not None:
        return read.event.type
    for name, value in read.headers:
        if name == "type" and value is not None:
            return value.decode(errors="replace")
    return "unknown"


class OffsetGap(Exception):
    """The fetched records do not start where the stored offset says; re-seek and retry."""

    def __init__(self, partition: int, expected: int, got: int) -> None:
        super().__init__(f"partition {partition}: expected offset {expected}, fetched {got}")
        self.partition = partition
        self.expected = expected


__all__ = ["ARCHIVE_COLUMNS", "BatchOutcome", "OffsetGap", "Projector", "ReadBatch"]
