"""Rebuilt read models equal the incremental ones; the hash chain catches tampering."""

from __future__ import annotations

import asyncio

import asyncpg

from events import EventProducer, Record, TaskCancelled, TaskCompleted, TaskFailed
from projections import rebuild, verify_chain
from tests.projections.conftest import USER, archived, eventually, submitted
from tests.projections.tampering import tampering
from wrenchai.settings import Settings


async def _publish_history(producer: EventProducer, settings: Settings, tasks: int = 30) -> int:
    """A mixed history: lifecycles, a duplicate and a poison record. Returns records sent."""
    events = []
    for i in range(tasks):
        first = submitted(f"task number {i}", tenant_id="acme" if i % 2 else "globex")
        events.append(first)
        if i % 3 == 0:
            events.append(first.derive(TaskCompleted(output={"n": i}), step="done", actor=USER))
        elif i % 3 == 1:
            events.append(first.derive(TaskFailed(reason="TIMEOUT"), step="fail", actor=USER))
            events.append(first.derive(TaskCancelled(), step="cancel", actor=USER))
    await producer.publish_many(events)
    await producer.publish(events[0])  # redelivered
    await producer.send_records(settings.topic("events"), [Record(key=b"k", value=b"{oops")])
    return len(events) + 2


async def _tasks(db: asyncpg.Connection) -> list[dict[str, object]]:
    return [dict(r) for r in await db.fetch("SELECT * FROM tasks ORDER BY task_id")]


async def test_rebuild_equals_incremental_read_models(
    settings: Settings,
    producer: EventProducer,
    db: asyncpg.Connection,
    projector: asyncio.Task[None],
) -> None:
    """Replaying from offset 0 into fresh tables gives exactly the rows the projector built."""
    sent = await _publish_history(producer, settings)

    async def all_archived() -> bool:
        return await archived(db) == sent

    await eventually(all_archived)
    before = await _tasks(db)
    assert len(before) == 30
    report = await rebuild(settings)
    assert report.replayed == sent
    assert report.skipped == 2  # the duplicate and the poison record
    assert await _tasks(db) == before
    # The swapped-in table keeps the original index names, and the projector still writes to it.
    names = {
        r["indexname"]
        for r in await db.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'tasks'")
    }
    assert {"tasks_pkey", "tasks_listing_idx", "tasks_status_idx"} <= names
    late = submitted("after the rebuild")
    await producer.publish(late)

    async def late_projected() -> bool:
        return await db.fetchval("SELECT count(*) FROM tasks WHERE task_id = $1", late.task_id) == 1

    await eventually(late_projected)


async def test_rebuild_repairs_a_damaged_read_model(
    settings: Settings,
    producer: EventProducer,
    db: asyncpg.Connection,
    projector: asyncio.Task[None],
) -> None:
    """A read-model row edited by hand is put back as the log says."""
    sent = await _publish_history(producer, settings, tasks=6)

    async def all_archived() -> bool:
        return await archived(db) == sent

    await eventually(all_archived)
    before = await _tasks(db)
    await db.execute("UPDATE tasks SET status = 'running', description = 'edited'")
    await db.execute("DELETE FROM tasks WHERE task_id = $1", before[0]["task_id"])
    await rebuild(settings)
    assert await _tasks(db) == before


async def test_audit_verify_passes_then_detects_tampering(
    settings: Settings,
    producer: EventProducer,
    db: asyncpg.Connection,
    projector: asyncio.Task[None],
) -> None:
    """An intact archive verifies; altering one row's bytes or a derived column is reported at
    exactly that row."""
    sent = await _publish_history(producer, settings, tasks=9)

    async def all_archived() -> bool:
        return await archived(db) == sent

    await eventually(all_archived)
    report = await verify_chain(settings)
    assert report.ok, str(report)
    assert report.checked == sent

    victim = await db.fetchrow(
        'SELECT topic, partition, "offset", raw_value FROM event_log '
        "WHERE status = 'applied' AND type = 'task.submitted' "
        'ORDER BY partition, "offset" OFFSET 3 LIMIT 1'
    )
    forged = victim["raw_value"].replace(b'"timeout":60', b'"timeout":61')
    assert forged != victim["raw_value"]
    # The archive refuses UPDATE; the attacker disables its trigger as the owner can.
    async with tampering(db):
        await db.execute(
            'UPDATE event_log SET raw_value = $1 WHERE partition = $2 AND "offset" = $3',
            forged,
            victim["partition"],
            victim["offset"],
        )
    report = await verify_chain(settings)
    assert not report.ok
    assert report.broken is not None
    assert (report.broken.partition, report.broken.offset) == (
        victim["partition"],
        victim["offset"],
    )
    assert "altered" in report.broken.problem

    # Put the bytes back, then edit a derived column instead.
    async with tampering(db):
        await db.execute(
            'UPDATE event_log SET raw_value = $1 WHERE partition = $2 AND "offset" = $3',
            victim["raw_value"],
            victim["partition"],
            victim["offset"],
        )
    assert (await verify_chain(settings)).ok
    async with tampering(db):
        await db.execute(
            "UPDATE event_log SET tenant_id = 'mallory' WHERE partition = $1 AND \"offset\" = $2",
            victim["partition"],
            victim["offset"],
        )
    report = await verify_chain(settings)
    assert report.broken is not None and "tenant_id" in report.broken.problem


async def test_audit_verify_reports_a_deleted_row_as_a_gap(
    settings: Settings,
    producer: EventProducer,
    db: asyncpg.Connection,
    projector: asyncio.Task[None],
) -> None:
    """Deleting a record from the middle of a partition breaks the chain at the next offset."""
    events = [submitted(f"t{i}") for i in range(5)]
    for event in events:
        await producer.send_records(
            settings.topic("events"), [producer.codec.encode(event)], partition=0
        )

    async def all_archived() -> bool:
        return await archived(db) == 5

    await eventually(all_archived)
    async with tampering(db):  # the archive refuses DELETE unless its trigger is disabled
        await db.execute('DELETE FROM event_log WHERE partition = 0 AND "offset" = 2')
    report = await verify_chain(settings)
    assert report.broken is not None
    assert report.broken.offset == 3
    assert "gap" in report.broken.problem
