"""What one batch holds does not change what the projector writes: repeated event ids, a
poison record between good ones and several tenants in one COPY, and a batch thrown away
while the next one was being read."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg
from aiokafka import ConsumerRecord

from events import Event, EventProducer, Record, TaskCancelled, create_consumer
from projections import Projector, ProjectorRunner, verify_archive
from projections._projector import OffsetGap, ReadBatch
from tests.events.topic_reader import read_topic
from tests.projections.conftest import USER, archived, eventually, submitted
from wrenchai.settings import Settings


async def _publish(
    settings: Settings, producer: EventProducer, records: Sequence[Record], partition: int
) -> None:
    await producer.send_records(settings.topic("events"), list(records), partition)


async def _read_back(settings: Settings, count: int) -> dict[int, list[ConsumerRecord]]:
    """Every record of wrench.events as one batch: per partition, in offset order."""
    batch: dict[int, list[ConsumerRecord]] = {}
    for record in await read_topic(settings, settings.topic("events"), count):
        batch.setdefault(record.partition, []).append(record)
    return {p: sorted(rs, key=lambda r: r.offset) for p, rs in batch.items()}


async def _statuses(db: asyncpg.Connection, partition: int = 0) -> list[str]:
    rows = await db.fetch(
        'SELECT status FROM event_log WHERE partition = $1 ORDER BY "offset"', partition
    )
    return [r["status"] for r in rows]


async def test_a_batch_holding_an_event_twice_and_one_archived_before_applies_each_once(
    settings: Settings, producer: EventProducer, db: asyncpg.Connection
) -> None:
    """Ids seen in an earlier batch and ids repeated within the batch are archived as
    duplicates, in place in the chain; each event is applied once."""
    first, second = submitted("first"), submitted("second")
    projector = Projector(settings, producer.codec, producer)
    await _publish(settings, producer, [producer.codec.encode(first)], 0)
    await projector.apply(db, await _read_back(settings, 1))
    repeated = [producer.codec.encode(e) for e in (second, first, second)]
    await _publish(settings, producer, repeated, 0)

    outcome = await projector.apply(db, await _read_back(settings, 4))

    assert (outcome.skipped, outcome.applied, outcome.duplicates) == (1, 1, 2)
    assert await _statuses(db) == ["applied", "applied", "duplicate", "duplicate"]
    assert await db.fetchval("SELECT count(*) FROM tasks") == 2
    assert (await verify_archive(db, producer.codec)).ok


async def test_a_poison_record_between_good_ones_is_archived_in_place_and_sent_to_the_dlq(
    settings: Settings, producer: EventProducer, db: asyncpg.Connection
) -> None:
    """The poison record keeps its offset in the archive's COPY and its link in the chain;
    the events around it are applied and the DLQ gets a copy."""
    task = submitted()
    cancel = task.derive(TaskCancelled(reason="changed my mind"), step="cancel", actor=USER)
    records = [
        producer.codec.encode(task),
        Record(key=task.key, value=b"\x00not json"),
        producer.codec.encode(cancel),
    ]
    await _publish(settings, producer, records, 0)

    outcome = await Projector(settings, producer.codec, producer).apply(
        db, await _read_back(settings, 3)
    )

    assert (outcome.applied, outcome.poison) == (2, 1)
    assert await _statuses(db) == ["applied", "poison", "applied"]
    poison = await db.fetchrow("SELECT * FROM event_log WHERE status = 'poison'")
    assert poison["raw_value"] == b"\x00not json" and poison["error"].startswith("invalid_json")
    assert await db.fetchval("SELECT status FROM tasks") == "cancelled"
    assert (await verify_archive(db, producer.codec)).ok
    consumer = create_consumer(settings, settings.topic("dlq"))
    await consumer.start()
    try:
        dead = [r for rs in (await consumer.getmany(timeout_ms=5000)).values() for r in rs]
    finally:
        await consumer.stop()
    assert [dict(r.headers)["dlq.offset"] for r in dead] == [str(poison["offset"]).encode()]


async def test_a_batch_mixing_tenants_keeps_each_tenants_rows_to_itself(
    settings: Settings, producer: EventProducer, db: asyncpg.Connection
) -> None:
    """Two tenants' events interleaved on two partitions, written in one COPY and one
    insert: each row carries its tenant, and row-level security shows each tenant its own."""
    events: list[Event] = []
    for i in range(6):
        tenant = "acme" if i % 2 else "globex"
        task = submitted(f"{tenant} task {i}", tenant_id=tenant)
        events += [task, task.derive(TaskCancelled(), step="cancel", actor=USER)]
    for partition in (0, 1):
        mine = [producer.codec.encode(e) for i, e in enumerate(events) if i // 2 % 2 == partition]
        await _publish(settings, producer, mine, partition)

    await Projector(settings, producer.codec, producer).apply(
        db, await _read_back(settings, len(events))
    )

    rows = await db.fetch("SELECT tenant_id, description, status FROM tasks")
    assert sorted((r["tenant_id"], r["description"]) for r in rows) == sorted(
        (e.tenant_id, f"{e.tenant_id} task {i}") for i, e in enumerate(events[::2])
    )
    assert {r["status"] for r in rows} == {"cancelled"}
    for tenant in ("acme", "globex"):
        async with db.transaction():
            await db.execute("SET LOCAL ROLE wrench_api")
            await db.execute("SELECT set_config('wrench.tenant_id', $1, true)", tenant)
            seen = {r["tenant_id"] for r in await db.fetch("SELECT tenant_id FROM tasks")}
            logged = {r["tenant_id"] for r in await db.fetch("SELECT tenant_id FROM event_log")}
        assert seen == logged == {tenant}


async def test_a_batch_discarded_while_the_next_was_read_is_fetched_again(
    settings: Settings, producer: EventProducer, db: asyncpg.Connection, topics: dict[str, int]
) -> None:
    """When a batch's transaction is thrown away (here: its write fails once, as when another
    projector got there first), the batch read meanwhile is dropped too and both are fetched
    again from the stored offsets: nothing is lost, nothing is applied twice."""
    settings = settings.model_copy(update={"projector_batch_size": 5})
    runner = ProjectorRunner(settings)
    write = runner.projector.write
    failed: list[ReadBatch] = []

    async def fail_the_first(conn: asyncpg.Connection, batch: ReadBatch) -> object:
        if not failed:
            failed.append(batch)
            raise OffsetGap(0, 0, 1)
        return await write(conn, batch)

    runner.projector.write = fail_the_first  # type: ignore[assignment,method-assign]
    events = [submitted(f"task {i}") for i in range(40)]
    await producer.publish_many(events)
    stop = asyncio.Event()
    running = asyncio.create_task(runner.run(stop))
    try:

        async def all_archived() -> bool:
            if running.done():
                running.result()
            return await archived(db) >= len(events)

        await eventually(all_archived)
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)

    assert failed
    assert await archived(db) == len(events)
    assert await db.fetchval("SELECT count(*) FROM event_log WHERE status <> 'applied'") == 0
    assert await db.fetchval("SELECT count(*) FROM tasks") == len(events)
