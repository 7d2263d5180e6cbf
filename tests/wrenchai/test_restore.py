"""Restore republishes the archive into an empty broker with every record at its old offset."""

from __future__ import annotations

import uuid
from typing import Any, cast

import asyncpg
import pytest
from aiokafka import TopicPartition

from events import (
    Actor,
    Codec,
    Event,
    EventProducer,
    Record,
    TaskSubmitted,
    create_consumer,
    log_end_offsets,
)
from projections._archive import GENESIS_HASH, chain_hash, headers_to_json
from projections._restore import RestoreError, RestoreOffsetMismatch, _send_chunk, restore_log
from tests.projections.tampering import tampering
from wrenchai.settings import Settings

USER = Actor(kind="user", id="u-1")
# Not JSON, and a header that is not UTF-8: the archive must give back these exact bytes.
POISON = Record(b"not-a-task", b"\xff\x00 garbage", (("type", b"\xfe\xff"), ("x", b"1")))
# A tombstone (no value at all) is poison too, and must come back as a tombstone.
TOMBSTONE = Record(b"gone", cast(bytes, None))


def _archive_row(
    topic: str, partition: int, offset: int, record: Record, prev: bytes, status: str
) -> tuple[Any, ...]:
    """One event_log row as the projector writes it, reduced to what a restore reads."""
    return (
        topic,
        partition,
        offset,
        status,
        uuid.uuid4() if status == "applied" else None,
        record.key,
        record.value,
        headers_to_json(record.headers),
        prev,
        chain_hash(prev, record.value),
    )


async def _archive(
    db: asyncpg.Connection, topic: str, logs: dict[int, list[tuple[Record, str]]]
) -> None:
    rows = []
    for partition, records in logs.items():
        prev = GENESIS_HASH
        for offset, (record, status) in enumerate(records):
            rows.append(_archive_row(topic, partition, offset, record, prev, status))
            prev = rows[-1][-1]
    await db.copy_records_to_table(
        "event_log",
        records=rows,
        columns=(
            "topic",
            "partition",
            "offset",
            "status",
            "id",
            "raw_key",
            "raw_value",
            "raw_headers",
            "prev_hash",
            "hash",
        ),
    )


def _sample_logs(codec: Codec) -> dict[int, list[tuple[Record, str]]]:
    """Partition 0: three events, two poison records and a duplicate; partition 2: one
    event; partition 1 stays empty. Enough that offsets would shift if anything were skipped."""
    task = uuid.uuid4()
    events = [
        codec.encode(
            Event.new(
                TaskSubmitted(description=f"job {i}"), tenant_id="acme", actor=USER, task_id=task
            )
        )
        for i in range(4)
    ]
    return {
        0: [
            (events[0], "applied"),
            (events[1], "applied"),
            (POISON, "poison"),
            (events[1], "duplicate"),
            (TOMBSTONE, "poison"),
            (events[2], "applied"),
        ],
        2: [(events[3], "applied")],
    }


async def _read_all(settings: Settings, topic: str, ends: dict[int, int]) -> dict[int, list[Any]]:
    """Every record of ``topic`` up to ``ends``, per partition."""
    consumer = create_consumer(settings)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in ends]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        found: dict[int, list[Any]] = {p: [] for p in ends}
        while any(len(found[p]) < ends[p] for p in ends):
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                found[tp.partition].extend(records)
        return found
    finally:
        await consumer.stop()


async def test_restore_republishes_every_record_at_its_archived_offset(
    settings: Settings, codec: Codec, db: asyncpg.Connection, topics: dict[str, int]
) -> None:
    """An empty log gets every archived record (poison and duplicates too) back at the same
    partition and offset, with the same key, value and headers."""
    topic = settings.topic("events")
    logs = _sample_logs(codec)
    await _archive(db, topic, logs)

    report = await restore_log(settings)

    assert report.outcome == "restored"
    assert report.restored == {0: 6, 2: 1}
    assert "restored 7 record(s)" in str(report)
    ends = await log_end_offsets(settings, topic)
    assert ends == {0: 6, 1: 0, 2: 1}
    found = await _read_all(settings, topic, ends)
    for partition, archived in logs.items():
        got = [
            (r.offset, r.key, r.value, tuple((k, bytes(v)) for k, v in r.headers))
            for r in found[partition]
        ]
        want = [(o, rec.key, rec.value, rec.headers) for o, (rec, _) in enumerate(archived)]
        assert got == want


async def test_restore_twice_is_a_no_op(
    settings: Settings, codec: Codec, db: asyncpg.Connection, topics: dict[str, int]
) -> None:
    """A second restore finds the log complete and writes nothing."""
    topic = settings.topic("events")
    await _archive(db, topic, _sample_logs(codec))
    await restore_log(settings)

    again = await restore_log(settings)

    assert again.outcome == "complete"
    assert again.restored == {}
    assert "log already complete" in str(again)
    assert await log_end_offsets(settings, topic) == {0: 6, 1: 0, 2: 1}


async def test_restore_refuses_a_partial_log(
    settings: Settings, codec: Codec, db: asyncpg.Connection, producer: EventProducer
) -> None:
    """A log that holds fewer records than the archive is an error naming the partition,
    and nothing is written."""
    topic = settings.topic("events")
    logs = _sample_logs(codec)
    await _archive(db, topic, logs)
    await producer.send_records(topic, [logs[0][0][0]], partition=0)

    with pytest.raises(RestoreError, match=r"partition 0: 1 of 6"):
        await restore_log(settings)

    assert await log_end_offsets(settings, topic) == {0: 1, 1: 0, 2: 0}


async def test_restore_leaves_a_log_longer_than_the_archive_alone(
    settings: Settings, codec: Codec, db: asyncpg.Connection, producer: EventProducer
) -> None:
    """A log ahead of the archive (the projector has not caught up) is not touched."""
    topic = settings.topic("events")
    record = _sample_logs(codec)[2][0][0]
    await _archive(db, topic, {2: [(record, "applied")]})
    await producer.send_records(topic, [record, record], partition=2)

    report = await restore_log(settings)

    assert report.outcome == "log_ahead"
    assert await log_end_offsets(settings, topic) == {0: 0, 1: 0, 2: 2}


async def test_restore_refuses_an_archive_with_a_gap(
    settings: Settings, codec: Codec, db: asyncpg.Connection, topics: dict[str, int]
) -> None:
    """An archive missing an offset would shift every later one, so restore stops before
    writing anything and names the partition."""
    topic = settings.topic("events")
    await _archive(db, topic, _sample_logs(codec))
    async with tampering(db):  # the archive refuses DELETE unless its trigger is disabled
        await db.execute('DELETE FROM event_log WHERE partition = 0 AND "offset" = 2')

    with pytest.raises(RestoreError, match="partition 0 is not contiguous"):
        await restore_log(settings)

    assert await log_end_offsets(settings, topic) == {0: 0, 1: 0, 2: 0}


async def test_restore_with_an_empty_archive_does_nothing(
    settings: Settings, db: asyncpg.Connection, topics: dict[str, int]
) -> None:
    """With nothing archived there is nothing to restore, and the report says so."""
    report = await restore_log(settings)

    assert report.outcome == "empty_archive"
    assert "archive" in str(report) and "empty" in str(report)


async def test_a_record_landing_at_another_offset_is_an_error_naming_both(
    settings: Settings, codec: Codec, producer: EventProducer
) -> None:
    """If something else wrote to a partition first, the restored record lands past its
    archived offset, and the error names the partition and both offsets."""
    topic = settings.topic("events")
    record = _sample_logs(codec)[2][0][0]
    await producer.send_records(topic, [record], partition=1)

    with pytest.raises(RestoreOffsetMismatch, match=r"partition 1.*offset 0.*offset 1"):
        await _send_chunk(producer, topic, 1, 0, [record])


async def test_restore_forgets_the_snapshots_past_the_restored_log(
    settings: Settings, codec: Codec, db: asyncpg.Connection, topics: dict[str, int]
) -> None:
    """A worker's snapshot covering records the archive never got would make the worker skip
    the records that take those offsets after the restore: it is deleted, and a snapshot
    within the restored log is kept."""
    topic = settings.topic("events")
    await _archive(db, topic, _sample_logs(codec))
    group = settings.group("journey-agent")
    for partition, offset in ((0, 9), (2, 1)):
        await db.execute(
            """INSERT INTO worker_snapshots
               (consumer_group, partition, log_offset, tasks, records, taken_at)
               VALUES ($1, $2, $3, 0, ''::bytea, now())""",
            group,
            partition,
            offset,
        )

    await restore_log(settings)

    kept = await db.fetch(
        "SELECT partition, log_offset FROM worker_snapshots WHERE consumer_group = $1", group
    )
    assert [(r["partition"], r["log_offset"]) for r in kept] == [(2, 1)]
