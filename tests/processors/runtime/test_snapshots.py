"""Snapshots of a worker's tasks in flight, on the real broker and Postgres: closed tasks
leave memory, a snapshot holds the records of the rest with the offset they cover, and a
successor restores them and folds only what came after (reading the log in between when
its stream starts past the snapshot)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any

import asyncpg

from events import Actor, Codec, Event, EventProducer, Record, TaskCancelled, TaskSubmitted
from processors.runtime._snapshots import Snapshot, SnapshotStore, pack, unpack
from processors.runtime._worker import Worker
from wrenchai.settings import Settings

USER = Actor(kind="user", id="ada")


def _history(state: list[Event] | None, event: Event) -> list[Event]:
    return [*(state or []), event]


def _nothing(state: list[Event], now: datetime) -> list[Any]:
    return []


async def _never(job: Any, emit: Any) -> None:  # pragma: no cover
    raise AssertionError("no job is listed")


def _worker(settings: Settings) -> Worker[list[Event], Any]:
    return Worker(
        settings,
        "snapshot-probe",
        folded_types={"task.submitted", "task.cancelled"},
        evolve=_history,
        decide=_nothing,
        run=_never,
        closed=lambda events: events[-1].type == "task.cancelled",
    )


def test_records_survive_packing_with_their_keys_headers_and_offsets() -> None:
    records = [
        (7, Record(key=b"k", value=b'{"a": 1}', headers=(("type", b"task.submitted"),))),
        (9, Record(key=None, value=b"", headers=())),
        (12, Record(key=b"", value=b"x" * 5000, headers=(("a", b""), ("b", b"\x00\xff")))),
        (13, Record(key=b"k", value=b"{}", headers=(("no-value", None), ("type", b"t")))),
    ]
    assert list(unpack(pack(records))) == records


async def test_a_successor_restores_the_tasks_in_flight_and_folds_only_what_came_after(
    settings: Settings, codec: Codec, db: asyncpg.Connection, topics: dict[str, int]
) -> None:
    """Three tasks on partition 0, one cancelled: it leaves memory and the snapshot, which
    holds the other two's records at the partition's position. A successor restores them,
    skips what the snapshot covers and folds a later event of a held task."""
    producer = EventProducer(settings, codec)
    tasks = [
        Event.new(TaskSubmitted(description=f"t{n}"), tenant_id="acme", actor=USER,
                  task_id=uuid.uuid4())
        for n in range(3)
    ]  # fmt: skip
    cancel = Event.new(
        TaskCancelled(reason="no"), tenant_id="acme", actor=USER, task_id=tasks[1].task_id
    )
    await codec.prepare_events([*tasks, cancel])
    records = [codec.encode(event) for event in [*tasks, cancel]]

    first = _worker(settings)
    try:
        [part] = first.assign([0])
        await asyncio.wait_for(part.ready.wait(), 30)
        await first.handle_batch([(0, offset, r) for offset, r in enumerate(records)])
        assert set(part.tasks) == {tasks[0].task_id, tasks[2].task_id}
        assert tasks[1].task_id in first.retired
        await first.snapshot()
    finally:
        await first.close()
    row = await db.fetchrow(
        "SELECT log_offset, tasks FROM worker_snapshots WHERE consumer_group = $1",
        settings.group("snapshot-probe"),
    )
    assert row is not None and (row["log_offset"], row["tasks"]) == (4, 2)

    # The successor's log really holds those records, so its catch-up target is 4.
    await producer.send_records(settings.topic("events"), records, partition=0)
    later = Event.new(
        TaskCancelled(reason="later"), tenant_id="acme", actor=USER, task_id=tasks[0].task_id
    )
    await codec.prepare_events([later])
    successor = _worker(settings)
    try:
        [part] = successor.assign([0])
        await asyncio.wait_for(part.ready.wait(), 30)
        assert part.position == 4
        assert {k: [e.id for e in v] for k, v in part.tasks.items()} == {
            tasks[0].task_id: [tasks[0].id],
            tasks[2].task_id: [tasks[2].id],
        }
        # What the snapshot covers is passed over; the next offset is folded.
        await successor.handle_batch([(0, 0, records[0]), (0, 4, codec.encode(later))])
        assert tasks[0].task_id not in part.tasks and tasks[0].task_id in successor.retired
        assert list(part.tasks) == [tasks[2].task_id]
    finally:
        await successor.close()
        await producer.stop()


async def test_a_stream_that_starts_past_the_snapshot_has_the_gap_read_from_the_log(
    settings: Settings, codec: Codec, db: asyncpg.Connection, topics: dict[str, int]
) -> None:
    """No snapshot, and the stream's first record is at offset 2 (the group committed
    there): offsets 0 and 1 are read from the log before it, so the task submitted at 0 is
    held, and the stream's records are folded after them."""
    producer = EventProducer(settings, codec)
    task = Event.new(
        TaskSubmitted(description="old"), tenant_id="acme", actor=USER, task_id=uuid.uuid4()
    )
    other = Event.new(
        TaskSubmitted(description="new"), tenant_id="acme", actor=USER, task_id=uuid.uuid4()
    )
    await codec.prepare_events([task, other])
    records = [codec.encode(task), codec.encode(other), codec.encode(other)]
    await producer.send_records(settings.topic("events"), records, partition=0)
    worker = _worker(settings)
    try:
        [part] = worker.assign([0])
        await asyncio.wait_for(part.loaded.wait(), 30)
        await worker.handle_batch([(0, 2, records[2])])
        await asyncio.wait_for(part.ready.wait(), 30)
        assert part.position == 3
        assert set(part.tasks) == {task.task_id, other.task_id}
        assert len(part.tasks[other.task_id]) == 2  # offsets 1 and 2
    finally:
        await worker.close()
        await producer.stop()


async def test_snapshots_of_a_group_are_never_replaced_by_older_ones(
    settings: Settings, db: asyncpg.Connection
) -> None:
    store = SnapshotStore(settings, "probe")
    try:
        await store.save(3, Snapshot(10, [], 0))
        await store.save(3, Snapshot(7, [(1, Record(key=None, value=b"v"))], 1))
        loaded = await store.load(3)
        assert loaded is not None and (loaded.offset, loaded.records) == (10, [])
    finally:
        await store.close()


async def test_tasks_that_are_over_leave_memory_while_a_partition_catches_up(
    settings: Settings, codec: Codec, db: asyncpg.Connection, topics: dict[str, int]
) -> None:
    """No snapshot: the log is folded from offset 0 without deciding, and a task cancelled
    in it leaves memory as it is folded, not once the partition has caught up."""
    producer = EventProducer(settings, codec)
    done = Event.new(
        TaskSubmitted(description="done"), tenant_id="acme", actor=USER, task_id=uuid.uuid4()
    )
    cancel = Event.new(
        TaskCancelled(reason="no"), tenant_id="acme", actor=USER, task_id=done.task_id
    )
    open_ = Event.new(
        TaskSubmitted(description="open"), tenant_id="acme", actor=USER, task_id=uuid.uuid4()
    )
    await codec.prepare_events([done, cancel, open_])
    records = [codec.encode(e) for e in (done, cancel, open_)]
    await producer.send_records(settings.topic("events"), records, partition=0)
    worker = _worker(settings)
    try:
        [part] = worker.assign([0])
        await asyncio.wait_for(part.loaded.wait(), 30)
        await worker.handle_batch([(0, 0, records[0]), (0, 1, records[1])])
        assert not part.ready.is_set() or part.position == 3
        assert done.task_id not in part.tasks and done.task_id in worker.retired
        await worker.handle_batch([(0, 2, records[2])])
        await asyncio.wait_for(part.ready.wait(), 30)
        assert list(part.tasks) == [open_.task_id]
    finally:
        await worker.close()
        await producer.stop()


async def test_a_partition_catching_up_holds_the_stream_rather_than_buffer_the_log(
    settings: Settings,
    codec: Codec,
    db: asyncpg.Connection,
    topics: dict[str, int],
    monkeypatch: Any,
) -> None:
    """While a partition restores, the stream's records wait for it; past PENDING_MAX of
    them the stream itself waits, so a worker replaying a long log holds a backlog, not the
    log. Once the partition is restored everything is folded, in order, once."""
    import processors.runtime._worker as runtime

    monkeypatch.setattr(runtime, "PENDING_MAX", 50)
    events = [
        Event.new(TaskSubmitted(description=f"t{n}"), tenant_id="acme", actor=USER,
                  task_id=uuid.uuid4())
        for n in range(120)
    ]  # fmt: skip
    await codec.prepare_events(events)
    records = [(0, offset, codec.encode(e)) for offset, e in enumerate(events)]
    producer = EventProducer(settings, codec)
    try:
        await producer.send_records(
            settings.topic("events"), [r for _, _, r in records], partition=0
        )
    finally:
        await producer.stop()
    worker = _worker(settings)
    gate = asyncio.Event()
    load = worker.snapshots.load

    async def slow_load(partition: int) -> Snapshot | None:
        await gate.wait()  # the snapshot store answers late
        return await load(partition)

    worker.snapshots.load = slow_load  # type: ignore[method-assign]
    try:
        [part] = worker.assign([0])
        await worker.handle_batch(records[:40])  # under the bound: handed over at once
        held = asyncio.create_task(worker.handle_batch(records[40:]))
        await asyncio.sleep(0.3)
        assert not held.done(), "the stream went on with 120 records waiting"
        assert len(part.pending) == 120
        gate.set()
        await asyncio.wait_for(held, 30)
        await asyncio.wait_for(part.ready.wait(), 30)
        assert part.position == 120 and part.pending == []
        assert len(part.tasks) == 120
    finally:
        await worker.close()
