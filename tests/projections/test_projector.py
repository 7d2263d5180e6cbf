"""The projector archives every record, applies each event once and never stalls on poison."""

from __future__ import annotations

import asyncio

import asyncpg

from events import Event, EventProducer, Record, TaskCancelled, TaskCompleted, create_consumer
from projections import CHAIN_VERSION, GENESIS_HASH, headers_from_json, link_hash
from tests.projections.conftest import USER, archived, eventually, submitted
from wrenchai.settings import Settings


async def test_submitted_task_appears_in_read_model_and_archive(
    settings: Settings,
    producer: EventProducer,
    db: asyncpg.Connection,
    projector: asyncio.Task[None],
) -> None:
    """A task.submitted becomes a tasks row with its position, and an archived, chained record."""
    event = submitted("summarise the quarterly numbers")
    position = await producer.publish(event)

    async def projected() -> bool:
        return await db.fetchval("SELECT count(*) FROM tasks") == 1

    await eventually(projected)
    row = await db.fetchrow("SELECT * FROM tasks WHERE task_id = $1", event.task_id)
    assert row["description"] == "summarise the quarterly numbers"
    assert row["constraints"] == {"max_roles": 2}
    assert row["status"] == "submitted"
    assert (row["last_partition"], row["last_offset"]) == (position.partition, position.offset)
    log_row = await db.fetchrow("SELECT * FROM event_log WHERE id = $1", event.id)
    assert log_row["status"] == "applied"
    assert log_row["offset"] == position.offset
    assert log_row["prev_hash"] == GENESIS_HASH
    assert log_row["chain_version"] == CHAIN_VERSION == 2
    headers = headers_from_json(log_row["raw_headers"])
    assert log_row["hash"] == link_hash(
        2, GENESIS_HASH, log_row["raw_key"], headers, log_row["raw_value"]
    )
    # The archive keeps the payload as logged: the description is ciphertext there.
    assert "summarise" not in str(log_row["payload"])


async def test_lifecycle_moves_status_and_terminal_status_sticks(
    settings: Settings,
    producer: EventProducer,
    db: asyncpg.Connection,
    projector: asyncio.Task[None],
) -> None:
    """completed then cancelled: the task stays completed; its last position is the completion."""
    first = submitted()
    done = first.derive(TaskCompleted(output={"report": "ok"}), step="complete", actor=USER)
    late = first.derive(TaskCancelled(reason="too late"), step="cancel", actor=USER)
    positions = await producer.publish_many([first, done, late])

    async def all_archived() -> bool:
        return await archived(db) == 3

    await eventually(all_archived)
    row = await db.fetchrow("SELECT * FROM tasks WHERE task_id = $1", first.task_id)
    assert row["status"] == "completed"
    assert row["last_offset"] == positions[1].offset


async def test_same_event_published_twice_is_applied_once(
    settings: Settings,
    producer: EventProducer,
    db: asyncpg.Connection,
    projector: asyncio.Task[None],
) -> None:
    """A redelivered event id is archived as a duplicate (offsets stay whole) and applied once."""
    event = submitted()
    await producer.publish(event)
    await producer.publish(event)

    async def both_archived() -> bool:
        return await archived(db) == 2

    await eventually(both_archived)
    statuses = [
        r["status"] for r in await db.fetch('SELECT status FROM event_log ORDER BY "offset"')
    ]
    assert statuses == ["applied", "duplicate"]
    assert await db.fetchval("SELECT count(*) FROM tasks") == 1


async def test_poison_record_goes_to_dlq_and_projector_moves_on(
    settings: Settings,
    producer: EventProducer,
    db: asyncpg.Connection,
    projector: asyncio.Task[None],
) -> None:
    """Garbage bytes land on wrench.dlq with the reason; the next event is still applied."""
    good = submitted()
    partition = (await producer.publish(good)).partition
    await producer.send_records(
        settings.topic("events"), [Record(key=good.key, value=b"\x00not json")], partition=partition
    )
    after = good.derive(TaskCancelled(reason="changed my mind"), step="cancel", actor=USER)
    await producer.publish(after)

    async def cancelled() -> bool:
        return (
            await db.fetchval("SELECT status FROM tasks WHERE task_id = $1", good.task_id)
            == "cancelled"
        )

    await eventually(cancelled)
    poison = await db.fetchrow("SELECT * FROM event_log WHERE status = 'poison'")
    assert poison["raw_value"] == b"\x00not json"
    assert poison["error"].startswith("invalid_json")
    consumer = create_consumer(settings, settings.topic("dlq"))
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=5000)
    finally:
        await consumer.stop()
    dead = [r for records in batch.values() for r in records]
    assert len(dead) == 1
    headers = dict(dead[0].headers)
    assert dead[0].value == b"\x00not json"
    assert headers["dlq.reason"] == b"invalid_json"
    assert headers["dlq.offset"] == str(poison["offset"]).encode()


async def test_events_of_other_types_are_archived_but_ignored_by_tasks(
    settings: Settings,
    producer: EventProducer,
    db: asyncpg.Connection,
    projector: asyncio.Task[None],
) -> None:
    """An event for a task the read model never saw creates no row and breaks nothing."""
    orphan = submitted().derive(TaskCancelled(), step="cancel", actor=USER)
    await producer.publish(orphan)

    async def one() -> bool:
        return await archived(db) == 1

    await eventually(one)
    assert await db.fetchval("SELECT count(*) FROM tasks") == 0


__all__ = ["Event"]


async def test_header_without_a_value_is_archived_as_null_and_the_event_applied(
    settings: Settings,
    producer: EventProducer,
    db: asyncpg.Connection,
    projector: asyncio.Task[None],
) -> None:
    """Kafka allows a header with no value: the event is applied and the archive keeps the null
    apart from an empty value, so the record's hash is recomputed from the archive alone."""
    event = submitted("a header from another client")
    record = producer.codec.encode(event)
    extra = (("traceparent", None), ("empty", b""))
    await producer.send_records(
        settings.topic("events"), [Record(record.key, record.value, record.headers + extra)]
    )

    async def projected() -> bool:
        return (
            await db.fetchval("SELECT count(*) FROM tasks WHERE task_id = $1", event.task_id) == 1
        )

    await eventually(projected)
    log_row = await db.fetchrow("SELECT * FROM event_log WHERE id = $1", event.id)
    assert log_row["status"] == "applied"
    headers = headers_from_json(log_row["raw_headers"])
    assert headers[-2:] == extra
    assert log_row["hash"] == link_hash(
        2, log_row["prev_hash"], log_row["raw_key"], headers, log_row["raw_value"]
    )
    assert log_row["hash"] != link_hash(
        2,
        log_row["prev_hash"],
        log_row["raw_key"],
        (*headers[:-2], ("traceparent", b""), extra[1]),
        log_row["raw_value"],
    )
