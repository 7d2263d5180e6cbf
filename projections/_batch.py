"""A fetched batch, read before its transaction opens.

Everything the projector needs of a record that does not depend on the database is worked
out here, once per record: its headers, the digest the hash chain links, the decoded event
(or why it cannot be decoded) and the read models' statements for it. The transaction
(projections._projector) then only asks Postgres what it alone knows (the stored offsets,
the previous hash, which event ids are archived already) and writes.

Reading is CPU work, writing is mostly waiting for Postgres: keeping them apart lets the
runner read the next batch while the previous one's transaction is in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.structs import ConsumerRecord

from events import Codec, Event, EventDecodeError, Position
from events._codec import Headers, kafka_headers
from projections._archive import CHAIN_VERSION, chain_hash_v2, headers_to_json, record_digest
from projections._read_model_types import Applied, Statement
from projections._read_models import ModelsByType

Fetched = Mapping[int, Sequence[ConsumerRecord[bytes, bytes]]]
"""Records per partition, each partition's in offset order."""

YIELD_EVERY = 16
"""Records read between two yields to the event loop, so that a transaction in flight gets
its answers from Postgres promptly while the next batch is read. The write of a batch takes
about eight round trips: with 500-record batches on an idle two-core machine, 16 reached
9,700-11,000 events/s of bench/projector.py where 64 reached 7,200 (32: 8,800; 8 and 4 no
better than 16)."""

if CHAIN_VERSION != 2:  # ReadRecord.link below chains by rule 2
    raise RuntimeError(f"projections._batch links chain version 2, not {CHAIN_VERSION}")


@dataclass(slots=True)
class ReadRecord:
    """One record as read before its transaction; never changed once read (not frozen only
    because a frozen dataclass costs a microsecond more per record to make)."""

    record: ConsumerRecord[bytes, bytes]
    headers: Headers
    digest: bytes
    """sha256 of the record's key, headers and value: what the chain links (rule 2)."""
    stored: dict[str, Any] | None = None
    """The envelope as logged (payload still encrypted); None when it cannot be read."""
    event: Event | None = None
    error: EventDecodeError | None = None
    statements: Sequence[Statement] = ()
    """The read models' statements for the event, run only if it is not a duplicate."""

    def link(self, prev_hash: bytes) -> bytes:
        """The record's chain hash after ``prev_hash`` (projections._archive, rule 2)."""
        return chain_hash_v2(prev_hash, self.digest)


async def read_batch(
    codec: Codec,
    fetched: Fetched,
    models: ModelsByType,
    names: Mapping[str, str],
) -> dict[int, list[ReadRecord]]:
    """Read every record of ``fetched``, yielding to the event loop now and then."""
    await codec.prepare_records(r.value for rs in fetched.values() for r in rs)
    read: dict[int, list[ReadRecord]] = {}
    count = 0
    for partition, records in fetched.items():
        out = read[partition] = []
        for record in records:
            out.append(read_record(codec, record, models, names))
            count += 1
            if count % YIELD_EVERY == 0:
                await asyncio.sleep(0)
    return read


def read_record(
    codec: Codec,
    record: ConsumerRecord[bytes, bytes],
    models: ModelsByType,
    names: Mapping[str, str],
) -> ReadRecord:
    """Decode one record and work out its statements; a record that cannot be decoded is
    returned with the reason, to be archived as poison."""
    headers = kafka_headers(record.headers)
    digest = record_digest(record.key, headers, record.value)
    try:
        stored = codec.parse(record.value, headers)
        event = codec.load(stored)
    except EventDecodeError as exc:
        return ReadRecord(record, headers, digest, error=exc)
    applied = Applied(event, Position(record.partition, record.offset))
    statements = models.statements(applied, names)
    return ReadRecord(record, headers, digest, stored, event, statements=statements)


def archive_row(
    topic: str, read: ReadRecord, status: str, prev_hash: bytes, digest: bytes
) -> tuple[Any, ...]:
    """One event_log row (columns as ARCHIVE_COLUMNS). The typed columns describe the record
    as logged (its stored version, payload still encrypted), so the audit can check them
    against raw_value."""
    record = read.record
    head = (topic, record.partition, record.offset, status)
    raw = (record.key, record.value, headers_to_json(read.headers))
    chain = (prev_hash, digest, CHAIN_VERSION)
    if read.event is None or read.stored is None:
        assert read.error is not None
        error_text = f"{read.error.reason}: {read.error.message}"
        return (*head, *[None] * 7, *raw, error_text, *chain)
    stored, event = read.stored, read.event
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
        *chain,
    )


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
