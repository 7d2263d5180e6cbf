"""Building an archive for the integrity and export tests, quickly and for real.

Events go to the real broker, come back through a consumer (assigned, so there is no group to
join) and are archived by the projector's own ``Projector.apply`` into the test's database:
the same rows the running projector writes, without waiting for a consumer group.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from events import Codec, Event, EventProducer, Record
from projections import EVENTS, Projector, Stream, headers_to_json, link_hash
from projections._archive import GENESIS_HASH
from tests.events.topic_reader import read_topic
from wrenchai.settings import Settings


async def archive_events(
    settings: Settings,
    db: asyncpg.Connection,
    producer: EventProducer,
    events: Sequence[Event],
    *,
    partition: int | None = None,
    stream: Stream = EVENTS,
) -> None:
    """Publish ``events`` (to ``partition`` when given) and archive everything on the
    stream's topic that is not archived yet, as the projector does."""
    topic = stream.topic(settings)
    await producer.send_records(topic, [producer.codec.encode(e) for e in events], partition)
    total = await db.fetchval("SELECT count(*) FROM event_log WHERE topic = $1", topic)
    records = await read_topic(settings, topic, total + len(events))
    by_partition: dict[int, list[Any]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        by_partition.setdefault(record.partition, []).append(record)
    batches: dict[int, Sequence[Any]] = dict(by_partition)
    projector = Projector(settings, producer.codec, producer, stream)
    await projector.apply(db, batches)


async def archive_rows(
    db: asyncpg.Connection,
    codec: Codec,
    topic: str,
    partition: int,
    records: Sequence[tuple[Record, int]],
) -> None:
    """Archive ``records`` (each with the chain version to hash it with) by hand from offset
    0, as the projector of that version did: how rows written before chain v2 look."""
    rows = []
    prev = GENESIS_HASH
    for offset, (record, version) in enumerate(records):
        stored = codec.parse(record.value, record.headers)
        event = codec.load(stored)
        digest = link_hash(version, prev, record.key, record.headers, record.value)
        rows.append(
            (
                topic,
                partition,
                offset,
                "applied",
                event.id,
                stored["type"],
                stored["schema_version"],
                event.task_id,
                event.tenant_id,
                event.occurred_at,
                stored["payload"],
                record.key,
                record.value,
                headers_to_json(record.headers),
                prev,
                digest,
                version,
            )
        )
        prev = digest
    await db.copy_records_to_table(
        "event_log",
        records=rows,
        columns=(
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
            "prev_hash",
            "hash",
            "chain_version",
        ),
    )
