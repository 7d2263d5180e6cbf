"""Restore: republish the event archive into an empty broker, every record at its offset.

The local broker keeps its data in memory, so after a restart ``wrench.events`` is empty while
Postgres still holds the archive. Positions that clients hold (``PARTITION:OFFSET``) and the
projector's stored offsets only stay true if every record lands where it was, so the archive
keeps every record (poison and duplicates too) and a restore republishes all of them, one
partition at a time in offset order, checking each offset the broker hands back.

A restore never guesses: a log that holds some records but fewer than the archive, or an
archive with a hole in it, is an error for a person to look at.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Literal, cast

import asyncpg
import structlog

from events import Codec, EventProducer, Record, bootstrap_topics, log_end_offsets
from projections._archive import headers_from_json
from projections._db import connect
from projections._migrate import migrate
from projections._streams import EVENTS, STREAMS, Stream
from wrenchai.errors import WrenchError
from wrenchai.settings import Settings

log = structlog.get_logger(__name__)

CHUNK_ROWS = 1_000
"""Rows fetched from the archive per cursor round trip, and records per produce batch."""

Outcome = Literal["restored", "complete", "log_ahead", "empty_archive"]

_SUMMARY: dict[Outcome, str] = {
    "restored": "restored {total} record(s) into {topic}",
    "complete": "log already complete: {topic} holds every archived record; nothing to do",
    "log_ahead": "{topic} already holds the archive and more (the projector has yet to "
    "archive the rest); nothing to do",
    "empty_archive": "the archive of {topic} is empty; nothing to restore",
}


class RestoreError(WrenchError):
    """The archive cannot be republished as it is; the message says what is wrong and where."""

    code = "RESTORE_ERROR"


class RestoreOffsetMismatch(RestoreError):
    """The broker stored a restored record at another offset than the archive says."""

    code = "RESTORE_OFFSET_MISMATCH"


@dataclass(frozen=True)
class RestoreReport:
    """What a restore did: the outcome and, per partition, the records republished."""

    topic: str
    outcome: Outcome
    archived: dict[int, int] = field(default_factory=dict)
    restored: dict[int, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.restored.values())

    def __str__(self) -> str:
        lines = [_SUMMARY[self.outcome].format(total=self.total, topic=self.topic)]
        for partition in sorted(self.archived):
            lines.append(
                f"  partition {partition}: {self.archived[partition]} archived, "
                f"{self.restored.get(partition, 0)} restored"
            )
        return "\n".join(lines)


async def restore_all(settings: Settings) -> list[RestoreReport]:
    """Restore every stream's topic (wrench.events, then wrench.admin)."""
    return [await restore_log(settings, stream) for stream in STREAMS]


async def restore_log(settings: Settings, stream: Stream = EVENTS) -> RestoreReport:
    """Republish the archive of the stream's topic when the broker holds none of it.

    A log as long as the archive (or longer) is left alone; a shorter, non-empty log is a
    RestoreError, since republishing on top of it would put records at the wrong offsets.
    """
    topic = stream.topic(settings)
    partitions = (await bootstrap_topics(settings))[topic]
    conn = await connect(settings)
    try:
        await migrate(conn)
        archived = await _archive_extent(conn, topic)
        _check_partitions(topic, archived, partitions)
        ends = await log_end_offsets(settings, topic)
        outcome = _decide(topic, archived, ends)
        if outcome != "restored":
            report = RestoreReport(topic, outcome, archived)
            log.info("restore skipped", topic=topic, outcome=outcome)
            return report
        restored = await _republish(settings, conn, topic)
        if stream is EVENTS:
            await _forget_snapshots_past(conn, archived, partitions)
    finally:
        await conn.close()
    report = RestoreReport(topic, "restored", archived, restored)
    log.info("log restored", topic=topic, records=report.total, partitions=restored)
    return report


async def _forget_snapshots_past(
    conn: asyncpg.Connection, archived: dict[int, int], partitions: int
) -> None:
    """Delete the workers' snapshots that cover offsets the restored log does not hold.

    A worker may have folded records the projector never archived before the broker lost
    them. Restored, the log ends where the archive ends, and the next records take those
    offsets again: a snapshot past them would make its worker skip them. Without its
    snapshot, the worker folds its partition from the start instead."""
    for partition in range(partitions):
        forgotten = await conn.fetch(
            """DELETE FROM worker_snapshots WHERE partition = $1 AND log_offset > $2
               RETURNING consumer_group, log_offset""",
            partition,
            archived.get(partition, 0),
        )
        for row in forgotten:
            log.warning(
                "snapshot past the restored log forgotten",
                consumer_group=row["consumer_group"],
                partition=partition,
                snapshot_offset=row["log_offset"],
                log_end=archived.get(partition, 0),
            )


async def _archive_extent(conn: asyncpg.Connection, topic: str) -> dict[int, int]:
    """Records archived per partition; a RestoreError if a partition's offsets have a hole."""
    rows = await conn.fetch(
        """SELECT partition, count(*) AS records, min("offset") AS first, max("offset") AS last
           FROM event_log WHERE topic = $1 GROUP BY partition ORDER BY partition""",
        topic,
    )
    for row in rows:
        if row["first"] != 0 or row["last"] != row["records"] - 1:
            raise RestoreError(
                f"the archive of {topic} partition {row['partition']} is not contiguous: "
                f"{row['records']} record(s) between offsets {row['first']} and {row['last']}; "
                "a restore would shift every later offset, so it stops here",
                topic=topic,
                partition=row["partition"],
            )
    return {row["partition"]: row["records"] for row in rows}


def _check_partitions(topic: str, archived: dict[int, int], partitions: int) -> None:
    beyond = sorted(p for p in archived if p >= partitions)
    if beyond:
        raise RestoreError(
            f"the archive of {topic} has partition(s) {beyond} but the topic has {partitions}; "
            "set WRENCH_PARTITIONS to the count the archive was written with",
            topic=topic,
            partitions=partitions,
        )


def _decide(topic: str, archived: dict[int, int], ends: dict[int, int]) -> Outcome:
    """Whether to republish, given the archive's and the log's record counts per partition."""
    if not archived:
        return "empty_archive"
    if not any(ends.values()):
        return "restored"
    short = {p: (ends.get(p, 0), n) for p, n in archived.items() if ends.get(p, 0) < n}
    if short:
        where = ", ".join(f"partition {p}: {e} of {n}" for p, (e, n) in sorted(short.items()))
        raise RestoreError(
            f"{topic} already holds some records but fewer than the archive ({where}); "
            "a restore only writes into an empty log. Recreate the topic (or restart the "
            "embedded broker) and run the restore again",
            topic=topic,
            short={p: {"log": e, "archive": n} for p, (e, n) in short.items()},
        )
    if all(ends.get(p, 0) == n for p, n in archived.items()):
        return "complete"
    return "log_ahead"


async def _republish(settings: Settings, conn: asyncpg.Connection, topic: str) -> dict[int, int]:
    """Send every archived record to its partition in offset order; check every offset."""
    # Raw records go out as they were archived; the codec is never used on this path.
    producer = EventProducer(settings, Codec())
    restored: dict[int, int] = {}
    try:
        async with aclosing(_chunks(conn, topic)) as chunks:
            async for partition, first, records in chunks:
                await _send_chunk(producer, topic, partition, first, records)
                restored[partition] = restored.get(partition, 0) + len(records)
    finally:
        await producer.stop()
    return restored


async def _send_chunk(
    producer: EventProducer, topic: str, partition: int, first: int, records: list[Record]
) -> None:
    """Produce one chunk to ``partition`` and check it landed at ``first`` onwards."""
    positions = await producer.send_records(topic, records, partition=partition)
    for expected, position in enumerate(positions, start=first):
        if position.partition != partition or position.offset != expected:
            raise RestoreOffsetMismatch(
                f"restoring {topic} partition {partition}: the archived record at offset "
                f"{expected} landed at partition {position.partition} offset "
                f"{position.offset}; something else wrote to the topic during the restore. "
                "Stop every producer, recreate the topic and restore again",
                topic=topic,
                partition=partition,
                expected=expected,
                actual=position.offset,
            )


async def _chunks(
    conn: asyncpg.Connection, topic: str
) -> AsyncGenerator[tuple[int, int, list[Record]], None]:
    """(partition, first offset, records) in partition and offset order, never crossing a
    partition, streamed through a server-side cursor so the archive never sits in memory."""
    query = """SELECT partition, "offset", raw_key, raw_value, raw_headers FROM event_log
               WHERE topic = $1 ORDER BY partition, "offset" """
    batch: list[Record] = []
    current, first = -1, 0
    async with conn.transaction(readonly=True):
        async for row in conn.cursor(query, topic, prefetch=CHUNK_ROWS):
            if batch and (row["partition"] != current or len(batch) >= CHUNK_ROWS):
                yield current, first, batch
                batch = []
            if not batch:
                current, first = row["partition"], row["offset"]
            # A tombstone (no value) was archived as NULL and goes back as one.
            value = cast(bytes, row["raw_value"])
            batch.append(Record(row["raw_key"], value, headers_from_json(row["raw_headers"])))
        if batch:
            yield current, first, batch
