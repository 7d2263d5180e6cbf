"""The projector: wrench.events into the archive, the read models and its own offsets.

Each batch is one Postgres transaction that archives every record (hash-chained per
partition), applies the events to the read models and moves the stored offsets. Kafka's
committed offsets are only informational: on assignment the projector seeks to the offsets
in Postgres, so a crash between the transaction and anything else loses and doubles nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
from aiokafka.structs import ConsumerRecord

from events import (
    Codec,
    Event,
    EventDecodeError,
    EventProducer,
    Position,
    Record,
)
from events._codec import Headers
from projections._archive import CHAIN_VERSION, GENESIS_HASH, headers_to_json, link_hash
from projections._read_model_types import Applied
from projections._read_models import apply_all
from projections._streams import EVENTS, Stream
from wrenchai.settings import Settings

log = structlog.get_logger(__name__)

ARCHIVE_COLUMNS = (
    "topic",
    "partition",
    "offset",
    "status",
    "id",
    "type",
    "schema_version",
    "task_id",
    "tenant_id",
    "occurred_at",
    "payload",
    "raw_key",
    "raw_value",
    "raw_headers",
    "error",
    "prev_hash",
    "hash",
    "chain_version",
)


@dataclass
class BatchOutcome:
    """What one batch did, for logs, metrics and tests."""

    applied: int = 0
    duplicates: int = 0
    poison: int = 0
    skipped: int = 0
    next_offsets: dict[int, int] = field(default_factory=dict)


def _headers(record: ConsumerRecord[bytes, bytes]) -> Headers:
    return tuple((k, bytes(v)) for k, v in (record.headers or ()))


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

    async def stored_offsets(self, conn: asyncpg.Connection) -> dict[int, int]:
        """The next offset to apply per partition, as committed with the read models."""
        rows = await conn.fetch(
            "SELECT partition, next_offset FROM consumer_offsets"
            " WHERE group_id = $1 AND topic = $2",
            self.group,
            self.topic,
        )
        return {r["partition"]: r["next_offset"] for r in rows}

    async def apply(
        self, conn: asyncpg.Connection, batches: dict[int, Sequence[ConsumerRecord[bytes, bytes]]]
    ) -> BatchOutcome:
        """Archive and apply one batch (records per partition, in offset order) atomically.

        A fixed handful of round trips per batch, whatever the number of partitions in it:
        the projector spends its time waiting on Postgres, not computing.
        """
        outcome = BatchOutcome()
        async with conn.transaction():
            fresh = await self._claim(conn, batches, outcome)
            if not fresh:
                return outcome
            prev_hashes = await self._prev_hashes(conn, fresh)
            await self.codec.prepare_records(r.value for rs in fresh.values() for r in rs)
            decoded = {p: [self._decode(r) for r in records] for p, records in fresh.items()}
            ids = [d[1].id for ds in decoded.values() for d in ds if isinstance(d, tuple)]
            found = await conn.fetch("SELECT id FROM event_log WHERE id = ANY($1::uuid[])", ids)
            seen = {r["id"] for r in found}
            rows: list[tuple[Any, ...]] = []
            applied: list[Applied] = []
            dead: list[tuple[ConsumerRecord[bytes, bytes], EventDecodeError]] = []
            for partition, records in sorted(fresh.items()):
                prev = prev_hashes[partition]
                for record, result in zip(records, decoded[partition], strict=True):
                    prev = self._take(record, result, prev, seen, rows, applied, dead, outcome)
                outcome.next_offsets[partition] = records[-1].offset + 1
            await self._send_to_dlq(dead)
            await conn.copy_records_to_table("event_log", records=rows, columns=ARCHIVE_COLUMNS)
            await apply_all(conn, applied, models=self.stream.models)
            await conn.executemany(
                """INSERT INTO consumer_offsets (group_id, topic, partition, next_offset)
                   VALUES ($1, $2, $3, $4)
                   ON CONFLICT (group_id, topic, partition)
                   DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()""",
                [(self.group, self.topic, p, o) for p, o in outcome.next_offsets.items()],
            )
        return outcome

    async def _claim(
        self,
        conn: asyncpg.Connection,
        batches: dict[int, Sequence[ConsumerRecord[bytes, bytes]]],
        outcome: BatchOutcome,
    ) -> dict[int, list[ConsumerRecord[bytes, bytes]]]:
        """Lock the partitions' offset rows and keep only the records past them.

        The row locks fence two projectors that briefly both hold a partition during a
        rebalance: the second waits, then finds the records already applied.
        """
        rows = await conn.fetch(
            """SELECT partition, next_offset FROM consumer_offsets
               WHERE group_id = $1 AND topic = $2 AND partition = ANY($3::int[])
               ORDER BY partition FOR UPDATE""",
            self.group,
            self.topic,
            sorted(batches),
        )
        stored = {r["partition"]: r["next_offset"] for r in rows}
        fresh: dict[int, list[ConsumerRecord[bytes, bytes]]] = {}
        for partition, records in batches.items():
            next_offset = stored.get(partition, 0)
            kept = [r for r in records if r.offset >= next_offset]
            outcome.skipped += len(records) - len(kept)
            if kept and kept[0].offset != next_offset:
                raise OffsetGap(partition, next_offset, kept[0].offset)
            if kept:
                fresh[partition] = kept
        return fresh

    async def _prev_hashes(
        self, conn: asyncpg.Connection, fresh: dict[int, list[ConsumerRecord[bytes, bytes]]]
    ) -> dict[int, bytes]:
        """The hash each partition's chain continues from."""
        wanted = {p: records[0].offset - 1 for p, records in fresh.items()}
        rows = await conn.fetch(
            """SELECT partition, hash FROM event_log
               WHERE topic = $1 AND (partition, "offset") IN
                     (SELECT * FROM unnest($2::int[], $3::bigint[]))""",
            self.topic,
            list(wanted),
            list(wanted.values()),
        )
        found = {r["partition"]: r["hash"] for r in rows}
        hashes: dict[int, bytes] = {}
        for partition, offset in wanted.items():
            if offset < 0:
                hashes[partition] = GENESIS_HASH
            elif partition in found:
                hashes[partition] = found[partition]
            else:  # the stored offset says this record was archived, but it is not there
                raise OffsetGap(partition, offset, offset + 1)
        return hashes

    def _take(
        self,
        record: ConsumerRecord[bytes, bytes],
        result: tuple[dict[str, Any], Event] | EventDecodeError,
        prev: bytes,
        seen: set[uuid.UUID],
        rows: list[tuple[Any, ...]],
        applied: list[Applied],
        dead: list[tuple[ConsumerRecord[bytes, bytes], EventDecodeError]],
        outcome: BatchOutcome,
    ) -> bytes:
        """Archive one record (poison, duplicate or applied); returns its chain hash, which
        covers its key, headers and value (chain version 2, projections._archive)."""
        digest = link_hash(CHAIN_VERSION, prev, record.key, _headers(record), record.value)
        if isinstance(result, EventDecodeError):
            dead.append((record, result))
            rows.append(self._row(record, "poison", prev, digest, error=result))
            outcome.poison += 1
        elif result[1].id in seen:
            rows.append(self._row(record, "duplicate", prev, digest, decoded=result))
            outcome.duplicates += 1
        else:
            seen.add(result[1].id)
            rows.append(self._row(record, "applied", prev, digest, decoded=result))
            applied.append(Applied(result[1], Position(record.partition, record.offset)))
            outcome.applied += 1
        return digest

    def _row(
        self,
        record: ConsumerRecord[bytes, bytes],
        status: str,
        prev: bytes,
        digest: bytes,
        decoded: tuple[dict[str, Any], Event] | None = None,
        error: EventDecodeError | None = None,
    ) -> tuple[Any, ...]:
        """One event_log row. The typed columns describe the record as logged (its stored
        version, payload still encrypted), so the audit can check them against raw_value."""
        head = (self.topic, record.partition, record.offset, status)
        raw = (record.key, record.value, headers_to_json(_headers(record)))
        if decoded is None:
            assert error is not None
            error_text = f"{error.reason}: {error.message}"
            return (*head, *[None] * 7, *raw, error_text, prev, digest, CHAIN_VERSION)
        stored, event = decoded
        applied = status == "applied"
        return (
            *head,
            event.id if applied else None,
            stored["type"],
            stored["schema_version"],
            event.task_id,
            event.tenant_id,
            event.occurred_at,
            stored["payload"] if applied else None,
            *raw,
            None if applied else f"duplicate of event {event.id}",
            prev,
            digest,
            CHAIN_VERSION,
        )

    def _decode(
        self, record: ConsumerRecord[bytes, bytes]
    ) -> tuple[dict[str, Any], Event] | EventDecodeError:
        """The stored envelope and the event read from it, or why it cannot be read."""
        try:
            stored = self.codec.parse(record.value, _headers(record))
            return stored, self.codec.load(stored)
        except EventDecodeError as exc:
            return exc

    async def _send_to_dlq(
        self, dead: Iterable[tuple[ConsumerRecord[bytes, bytes], EventDecodeError]]
    ) -> None:
        """Copy poison records to wrench.dlq with the reason in headers, before the commit:
        a failed commit may send a copy twice, but never zero times."""
        records = [
            Record(
                key=r.key,
                value=r.value or b"",
                headers=(
                    *_headers(r),
                    ("dlq.reason", exc.reason.encode()),
                    ("dlq.error", exc.message[:1000].encode()),
                    ("dlq.topic", r.topic.encode()),
                    ("dlq.partition", str(r.partition).encode()),
                    ("dlq.offset", str(r.offset).encode()),
                    ("dlq.consumer", self.group.encode()),
                ),
            )
            for r, exc in dead
        ]
        if records:
            await self.dlq.send_records(self.settings.topic("dlq"), records)
            for r, exc in dead:
                log.warning(
                    "poison record sent to the DLQ",
                    partition=r.partition,
                    offset=r.offset,
                    reason=exc.reason,
                    error=exc.message,
                )


class OffsetGap(Exception):
    """The fetched records do not start where the stored offset says; re-seek and retry."""

    def __init__(self, partition: int, expected: int, got: int) -> None:
        super().__init__(f"partition {partition}: expected offset {expected}, fetched {got}")
        self.partition = partition
        self.expected = expected
