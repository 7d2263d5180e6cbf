"""``wrenchai projections rebuild``: replay each log (wrench.events, wrench.admin) from offset
0 into fresh tables and swap them in atomically.

The replay runs beside the live projector. It first catches up to where the projector stood
when the rebuild began; then, holding the projector's offsets table locked (which pauses the
projector between batches), it replays the few records that arrived meanwhile and swaps the
tables in the same transaction. Readers see the old tables until the commit, the new after.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from events import Codec, EventDecodeError, Position, codec_from_settings, create_consumer
from projections._db import connect
from projections._read_model_types import Applied, ReadModel
from projections._read_models import apply_all, owned_tables
from projections._streams import EVENTS, STREAMS, Stream
from wrenchai.errors import WrenchError
from wrenchai.settings import Settings

log = structlog.get_logger(__name__)

SUFFIX = "__rebuild"


class RebuildError(WrenchError):
    """The replay could not reach the offsets the projector had stored."""

    code = "REBUILD_ERROR"


@dataclass
class RebuildReport:
    """What a rebuild replayed and swapped."""

    replayed: int = 0
    applied: int = 0
    skipped: int = 0
    tables: tuple[str, ...] = ()
    offsets: dict[int, int] = field(default_factory=dict)

    def __str__(self) -> str:
        return (
            f"rebuilt {', '.join(self.tables)} from {self.replayed} record(s): "
            f"{self.applied} applied, {self.skipped} skipped (poison or duplicate); "
            f"offsets {dict(sorted(self.offsets.items()))}"
        )


class _Replay:
    """Reads the log from offset 0 and applies each first occurrence of an event id."""

    def __init__(
        self, consumer: AIOKafkaConsumer, codec: Codec, topic: str, models: tuple[ReadModel, ...]
    ) -> None:
        self.consumer = consumer
        self.codec = codec
        self.topic = topic
        self.models = models
        self.seen: set[object] = set()
        self.report = RebuildReport(tables=owned_tables(models))
        self.names = {t: t + SUFFIX for t in owned_tables(models)}

    async def until(self, conn: asyncpg.Connection, targets: dict[int, int]) -> None:
        """Apply records until every partition's position reaches its target offset."""
        while True:
            behind = [
                TopicPartition(self.topic, p)
                for p, end in targets.items()
                if await self.consumer.position(TopicPartition(self.topic, p)) < end
            ]
            if not behind:
                return
            fetched = await self.consumer.getmany(*behind, timeout_ms=1000, max_records=2000)
            if not any(fetched.values()):
                raise RebuildError(
                    f"the log ends before the stored offsets {targets}; restore it first "
                    "(wrenchai restore)",
                    targets=targets,
                )
            batch: list[Applied] = []
            await self.codec.prepare_records(r.value for rs in fetched.values() for r in rs)
            for tp, records in fetched.items():
                for record in records:
                    if record.offset >= targets[tp.partition]:
                        self.consumer.seek(tp, targets[tp.partition])
                        break
                    self._take(record.value, record.headers, tp.partition, record.offset, batch)
            await apply_all(conn, batch, self.names, self.models)

    def _take(
        self,
        value: bytes | None,
        headers: object,
        partition: int,
        offset: int,
        batch: list[Applied],
    ) -> None:
        self.report.replayed += 1
        try:
            event = self.codec.decode(value, tuple(headers))  # type: ignore[arg-type]
        except EventDecodeError:
            self.report.skipped += 1
            return
        if event.id in self.seen:
            self.report.skipped += 1
            return
        self.seen.add(event.id)
        batch.append(Applied(event, Position(partition, offset)))
        self.report.applied += 1


async def rebuild_all(settings: Settings) -> list[RebuildReport]:
    """Rebuild the read models of every stream (wrench.events, then wrench.admin)."""
    return [await rebuild(settings, stream) for stream in STREAMS]


async def rebuild(settings: Settings, stream: Stream = EVENTS) -> RebuildReport:
    """Rebuild the read models of one stream from its log and swap the fresh tables in."""
    topic = stream.topic(settings)
    group = stream.group(settings)
    tables = owned_tables(stream.models)
    conn = await connect(settings)
    consumer = create_consumer(settings)
    try:
        await consumer.start()
        partitions = sorted(
            consumer.partitions_for_topic(topic) or await _partitions(consumer, topic)
        )
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        codec = codec_from_settings(settings)
        replay = _Replay(consumer, codec, topic, stream.models)
        await _create_fresh_tables(conn, tables)
        await replay.until(conn, await _stored_offsets(conn, group, topic, partitions))
        async with conn.transaction():
            # Pauses the projector between batches while the last records are replayed.
            await conn.execute("LOCK TABLE consumer_offsets IN EXCLUSIVE MODE")
            final = await _stored_offsets(conn, group, topic, partitions)
            await replay.until(conn, final)
            await _swap(conn, tables)
        replay.report.offsets = final
        log.info(
            "read models rebuilt", replayed=replay.report.replayed, applied=replay.report.applied
        )
        return replay.report
    finally:
        await consumer.stop()
        await conn.close()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer.topics()
    found = consumer.partitions_for_topic(topic)
    if not found:
        raise RebuildError(f"topic {topic} does not exist", topic=topic)
    return set(found)


async def _stored_offsets(
    conn: asyncpg.Connection, group: str, topic: str, partitions: list[int]
) -> dict[int, int]:
    rows = await conn.fetch(
        "SELECT partition, next_offset FROM consumer_offsets WHERE group_id = $1 AND topic = $2",
        group,
        topic,
    )
    stored = {r["partition"]: r["next_offset"] for r in rows}
    return {p: stored.get(p, 0) for p in partitions}


async def _create_fresh_tables(conn: asyncpg.Connection, tables: tuple[str, ...]) -> None:
    for table in tables:
        await conn.execute(f"DROP TABLE IF EXISTS {table}{SUFFIX}")
        await conn.execute(f"CREATE TABLE {table}{SUFFIX} (LIKE {table} INCLUDING ALL)")


async def _swap(conn: asyncpg.Connection, tables: tuple[str, ...]) -> None:
    """Rename the fresh tables into place, drop the old ones, and restore index names so
    later migrations find the indexes they created."""
    for table in tables:
        isolated, readable = await _security_of(conn, table)
        old_indexes = await _index_definitions(conn, table)
        new_indexes = await _index_definitions(conn, table + SUFFIX)
        await conn.execute(f"ALTER TABLE {table} RENAME TO {table}__old")
        await conn.execute(f"ALTER TABLE {table}{SUFFIX} RENAME TO {table}")
        await conn.execute(f"DROP TABLE {table}__old")
        by_shape = {shape: name for name, shape in new_indexes.items()}
        for name, shape in old_indexes.items():
            fresh = by_shape.get(shape)
            if fresh is not None and fresh != name:
                await conn.execute(f'ALTER INDEX "{fresh}" RENAME TO "{name}"')
        # LIKE copies neither row-level security nor grants: the fresh table gets the old
        # one's back before the commit, so no reader ever sees it unguarded.
        if isolated:
            await conn.execute("SELECT wrench_isolate($1::regclass)", table)
        elif readable:
            await conn.execute(f"GRANT SELECT ON {table} TO wrench_api")


async def _security_of(conn: asyncpg.Connection, table: str) -> tuple[bool, bool]:
    """Whether ``table`` has row-level security on, and whether the API's role reads it."""
    row = await conn.fetchrow(
        """SELECT c.relrowsecurity AS isolated,
                  EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'wrench_api')
                  AND has_table_privilege('wrench_api', c.oid, 'SELECT') AS readable
           FROM pg_class c WHERE c.oid = $1::regclass""",
        table,
    )
    assert row is not None
    return bool(row["isolated"]), bool(row["readable"])


async def _index_definitions(conn: asyncpg.Connection, table: str) -> dict[str, str]:
    """Index name → its definition with the index and table names taken out."""
    rows = await conn.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
        "AND tablename = $1",
        table,
    )
    return {
        r["indexname"]: r["indexdef"]
        .replace(r["indexname"], "")
        .replace(f" ON public.{table} ", " ON ")
        for r in rows
    }
