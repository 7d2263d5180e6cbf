"""The faust shell around a processor's pure core: consume, fold, snapshot, run jobs, publish.

A processor is three functions: ``evolve(state, event)`` folds one task's events into its
state, ``decide(state, now)`` lists the jobs the state calls for, and ``run(job, emit)``
does one job (an LLM or tool call) and emits the events that record it. This module
supplies everything else, the same way for every agent:

- **faust does the consuming.** One faust agent reads wrench.events in the worker's
  consumer group and hands over batches (``stream.noack_take``); the worker folds a whole
  batch, then decides once for each task the batch touched, and acks the batch's events
  once a snapshot covers them, so the group's committed offsets never pass the snapshot.
  faust's assignment callbacks restore the partitions given to the worker.
- **State comes from a snapshot and the log after it.** A worker holds only the tasks in
  flight: once a task is closed and its state lists no job, it leaves memory. Every
  ``WRENCH_SNAPSHOT_INTERVAL_S`` the records of each partition's tasks in flight are saved
  with the offset they cover (:mod:`processors.runtime._snapshots`). On assignment the worker folds
  the snapshot, then the log from its offset (faust's stream starts at the group's committed
  offset, at or before the snapshot's; were it past, the records in between are read from
  the log), deciding nothing until it has caught up with the high watermark it saw on
  arrival, then decides for every task once. A partition catching up never holds up
  another: its records wait for nothing but their own snapshot.
- **Work never blocks a partition.** Jobs run in the background under
  :class:`processors.runtime._scheduler.Jobs`, at most ``WRENCH_AGENT_CONCURRENCY`` at once; the
  state changes only when their events come back through the log. A job's events are
  handed to the producer as they are emitted and their acks awaited when the job ends.
- **Nothing is lost.** A record of a folded type that cannot be decoded goes to wrench.dlq
  with the reason in headers; a failing job is retried on a schedule and, after a few
  failures in a row, alerted (alert.raised JOB_FAILING on its task).
- **It says how it is doing.** A background task publishes ``agent.heartbeat`` (partitions,
  lag, tasks in flight, the last error): see processors/runtime/_heartbeat.py.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

import faust
import faust.transport.drivers.aiokafka as faust_aiokafka
import structlog
from aiokafka import TopicPartition

from events import (
    Actor,
    AlertCleared,
    AlertRaised,
    Codec,
    Event,
    EventDecodeError,
    EventProducer,
    Record,
    codec_from_settings,
    create_consumer,
    kafka_headers,
    shredded_fields,
)
from processors.runtime._heartbeat import Heartbeats
from processors.runtime._scheduler import ALERT_AFTER, Emit, Job, Jobs
from processors.runtime._snapshots import Snapshot, SnapshotStore
from wrenchai import health, metrics
from wrenchai.settings import Settings

__all__ = ["Emit", "Job", "Worker"]

log = structlog.get_logger(__name__)

STOP_GRACE_S = 2.0
TICK_S = 0.2
BATCH_MAX = 500
BATCH_WITHIN_S = 0.002
LOAD_ATTEMPTS = 5
RETIRED_KEPT = 20_000
"""How many retired task ids a worker remembers, so a late duplicate of a task's
task.submitted does not start the task again."""
ROOM_CHECK_S = 1.0
PENDING_MAX = 5_000
"""Records of one partition that may wait to be folded while it catches up: past it the
stream waits, so a worker's memory does not grow with the length of the log it replays."""

S = TypeVar("S")
J = TypeVar("J", bound=Job)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Partition(Generic[S]):
    """One assigned partition: its tasks in flight with their states, tenants and records,
    and how far the worker has folded it."""

    number: int
    position: int = 0
    """The next offset to fold."""
    target: int | None = None
    """The high watermark to catch up with before deciding (None until read)."""
    loaded: asyncio.Event = field(default_factory=asyncio.Event)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    pending: list[tuple[int, Record]] = field(default_factory=list)
    room: asyncio.Event = field(default_factory=asyncio.Event)
    """Set while ``pending`` holds at most PENDING_MAX records (or the partition is given
    up): the stream waits on it rather than buffer the whole log in memory."""
    tasks: dict[uuid.UUID, S] = field(default_factory=dict)
    tenants: dict[uuid.UUID, str] = field(default_factory=dict)
    records: dict[uuid.UUID, list[tuple[int, Record]]] = field(default_factory=dict)
    snapshot_at: int = -1
    busy: bool = False
    """Whether a coroutine is folding the partition: records that arrive meanwhile wait in
    ``pending`` for it, so one partition is never folded twice at once."""
    unacked: list[Any] = field(default_factory=list)
    """The stream's events of this partition not yet covered by a snapshot."""


class Worker(Generic[S, J]):
    """Runs one processor (``name``, also its consumer group) over wrench.events."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        *,
        folded_types: Iterable[str],
        evolve: Callable[[S | None, Event], S],
        decide: Callable[[S, datetime], list[J]],
        run: Callable[[J, Emit], Awaitable[None]],
        suppress: Callable[[S, Event], bool] | None = None,
        observe: Callable[[Event], None] | None = None,
        deadline: Callable[[S], datetime | None] | None = None,
        closed: Callable[[S], bool] | None = None,
        background: Callable[[Worker[S, J]], Coroutine[Any, Any, None]] | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.settings = settings
        self.name = name
        self.group = settings.group(name)
        self.topic = settings.topic("events")
        self.folded_types = frozenset(folded_types)
        self.evolve, self.suppress, self.observe = evolve, suppress, observe
        self.closed, self.clock = closed, clock
        self.background = background
        self._background: asyncio.Task[None] | None = None
        self.codec: Codec = codec_from_settings(settings)
        self.producer = EventProducer(settings, self.codec, processor=name)
        self.consumed = metrics.consumed(name)
        self.snapshots = SnapshotStore(settings, self.group)
        self.partitions: dict[int, _Partition[S]] = {}
        self.jobs: Jobs[S, J] = Jobs(
            decide,
            run,
            concurrency=settings.agent_concurrency,
            clock=clock,
            deadline=deadline,
            failures=_Failures(self),
        )
        self.retired: OrderedDict[uuid.UUID, None] = OrderedDict()
        self._part_of: dict[uuid.UUID, _Partition[S]] = {}
        self._loads: dict[int, asyncio.Task[None]] = {}
        self._observed_to: dict[int, int] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._spawned: set[asyncio.Task[None]] = set()
        self.heartbeats = Heartbeats(self)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background, held until it ends."""
        task = asyncio.create_task(work)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)

    # -- records -----------------------------------------------------------------------
    def folds(self, record: Record) -> bool:
        """Whether ``record`` holds an event of a type this worker folds."""
        kind = record.header("type")
        return kind is not None and kind.decode(errors="replace") in self.folded_types

    async def handle(self, record: Record, partition: int, offset: int) -> None:
        """One record from the stream (see :meth:`handle_batch`)."""
        await self.handle_batch([(partition, offset, record)])

    async def handle_batch(self, items: Sequence[tuple[int, int, Record]]) -> None:
        """Records from the stream, in log order per partition: fold them all, then decide
        once for each task they touched."""
        by_partition: dict[int, list[tuple[int, Record]]] = {}
        for partition, offset, record in items:
            by_partition.setdefault(partition, []).append((offset, record))
        for number, records in by_partition.items():
            part = self.partitions.get(number)
            if part is None:
                part = self.assign([number])[0]
            part.pending.extend(records)
            if part.loaded.is_set() and not part.busy:
                await self._drain(part)
            elif len(part.pending) > PENDING_MAX:
                await self._wait_for_room(part)

    async def _wait_for_room(self, part: _Partition[S]) -> None:
        """Hold the stream while ``part`` catches up (restoring, or folding a gap) with more
        than PENDING_MAX records waiting, so memory holds a backlog, never the log. Other
        partitions wait meanwhile, but only while this one is that far behind."""
        part.room.clear()
        while len(part.pending) > PENDING_MAX and self.partitions.get(part.number) is part:
            try:
                await asyncio.wait_for(part.room.wait(), ROOM_CHECK_S)
            except TimeoutError:
                if part.loaded.is_set() and not part.busy:
                    await self._drain(part)  # its folder stopped: fold here

    async def _drain(self, part: _Partition[S]) -> None:
        """Fold the partition's pending records, and those that arrive meanwhile."""
        part.busy = True
        try:
            while part.pending:
                records, part.pending = part.pending, []
                part.room.set()
                fresh = [(offset, record) for offset, record in records if offset >= part.position]
                if not fresh:
                    continue
                if fresh[0][0] > part.position and not part.ready.is_set():
                    # The group committed past the snapshot (there was none, or it was
                    # lost): the records in between come from the log first.
                    part.pending[:0] = fresh
                    await self._fill_gap(part, fresh[0][0])
                    if part.position < fresh[0][0]:
                        log.warning(
                            "the log holds no records between the snapshot and the stream",
                            partition=part.number,
                            offset=part.position,
                            stream=fresh[0][0],
                        )
                        part.position = fresh[0][0]
                    continue
                await self._fold_records(part, fresh)
        finally:
            part.busy = False

    async def _fold_records(
        self, part: _Partition[S], records: Sequence[tuple[int, Record]]
    ) -> None:
        """Fold ``records`` (from ``part.position`` on), then decide for the tasks they
        touched, or mark the partition caught up."""
        await self.codec.prepare_records(r.value for _, r in records if self.folds(r))
        touched: dict[uuid.UUID, None] = {}
        types: dict[str, int] = {}
        try:
            for offset, record in records:
                if offset < part.position:
                    continue  # folded meanwhile
                part.position = offset + 1
                kind = record.header("type")
                label = "unknown" if kind is None else kind.decode(errors="replace")
                types[label] = types.get(label, 0) + 1
                event = await self._decode_or_dlq(record, part.number, offset)
                if event is not None:
                    task_id = self.fold(part, event, offset, record=record)
                    if task_id is not None:
                        touched[task_id] = None
        finally:
            # Once per batch and type: every record the position passed is consumed.
            self.consumed.add_all(types)
        if part.ready.is_set():
            for task_id in touched:
                self.decide(part, task_id)
            return
        # Catching up: nothing is started yet, but a task that is over and calls for
        # nothing leaves memory now, so catching up costs the tasks in flight, not history.
        now = self.clock()
        for task_id in touched:
            state = part.tasks.get(task_id)
            if state is not None and self.closed is not None and self.closed(state):
                if not self.jobs.decide(state, now):
                    self._retire(part, task_id)
        if part.target is not None and part.position >= part.target:
            self._caught_up(part)

    async def _fill_gap(self, part: _Partition[S], end: int) -> None:
        """Fold the log of ``part`` from its position up to ``end``."""
        log.info(
            "stream ahead of the snapshot; reading the log in between",
            partition=part.number,
            offset=part.position,
            stream=end,
        )
        tp = TopicPartition(self.topic, part.number)
        consumer = create_consumer(self.settings)
        await consumer.start()
        try:
            consumer.assign([tp])
            consumer.seek(tp, part.position)
            passed = False
            while part.position < end and not passed:
                batch = (await consumer.getmany(tp, timeout_ms=200, max_records=1000)).get(tp, [])
                passed = any(m.offset >= end for m in batch)
                records = [
                    (m.offset, record_of(m)) for m in batch if part.position <= m.offset < end
                ]
                await self._fold_records(part, records)
        finally:
            await consumer.stop()

    def fold(
        self, part: _Partition[S], event: Event, offset: int, *, record: Record | None = None
    ) -> uuid.UUID | None:
        """Fold ``event`` into its task's state; the task, when the event belongs to one the
        worker holds (or starts one)."""
        if self.observe is not None and offset >= self._observed_to.get(part.number, 0):
            # Cross-task folds (tool statistics) outlive a partition's revocation, so a
            # partition folded again after a rebalance is not counted twice.
            self._observed_to[part.number] = offset + 1
            self.observe(event)
        task_id = event.task_id
        if task_id is None:
            return None
        state = part.tasks.get(task_id)
        if state is None:
            # A task starts with task.submitted; anything else of a task not held is of one
            # that closed and left memory (or a duplicate of its submission).
            if event.type != "task.submitted" or task_id in self.retired:
                return None
            part.tenants[task_id] = event.tenant_id
            part.records[task_id] = []
            self._part_of[task_id] = part
        part.tasks[task_id] = self.evolve(state, event)
        if record is not None:
            part.records[task_id].append((offset, record))
        return task_id

    def decide(self, part: _Partition[S], task_id: uuid.UUID) -> None:
        """Start what the task's state calls for; retire the task when it is closed and
        calls for nothing."""
        state = part.tasks.get(task_id)
        if state is None:
            return
        listed = self.jobs.schedule(task_id, state, lambda event: self._emit(task_id, event))
        if not listed and self.closed is not None and self.closed(state):
            self._retire(part, task_id)

    def _retire(self, part: _Partition[S], task_id: uuid.UUID) -> None:
        self.jobs.forget(task_id)
        part.tasks.pop(task_id, None)
        part.tenants.pop(task_id, None)
        part.records.pop(task_id, None)
        self._part_of.pop(task_id, None)
        self.retired[task_id] = None
        while len(self.retired) > RETIRED_KEPT:
            self.retired.popitem(last=False)

    async def _decode_or_dlq(self, record: Record, partition: int, offset: int) -> Event | None:
        if not self.folds(record):
            return None
        try:
            event = self.codec.decode(record.value, record.headers)
        except EventDecodeError as exc:
            await self._dead_letter(record, partition, offset, exc)
            return None
        if shredded_fields(event.payload):
            # The tenant was shredded: its work stops, and nothing acts on "[shredded]".
            log.info("event of a shredded tenant not folded", type=event.type)
            return None
        return event

    async def _dead_letter(
        self, record: Record, partition: int, offset: int, exc: EventDecodeError
    ) -> None:
        dead = dead_letter(record, exc, self.topic, partition, offset, self.group)
        await self.producer.send_records(self.settings.topic("dlq"), [dead])
        self.heartbeats.decode_failed(partition, offset, exc.reason)
        log.warning(
            "poison record sent to the DLQ", partition=partition, offset=offset, reason=exc.reason
        )

    async def _emit(self, task_id: uuid.UUID, event: Event) -> Awaitable[object] | None:
        part = self._part_of.get(task_id)
        if part is None and task_id in self.retired:
            return None  # the task is over: a job cancelled with it publishes nothing
        state = part.tasks.get(task_id) if part is not None else None
        if self.suppress is not None and state is not None and self.suppress(state, event):
            log.info(
                "event not published: the task moved on", type=event.type, task_id=str(task_id)
            )
            return None
        return await self.producer.enqueue(event)

    # -- partitions --------------------------------------------------------------------
    def assign(self, partitions: Iterable[int]) -> list[_Partition[S]]:
        """Take over ``partitions``: restore each from its snapshot in the background."""
        taken = []
        for number in partitions:
            part = self.partitions.get(number)
            if part is None:
                part = _Partition(number)
                self.partitions[number] = part
                self._loads[number] = asyncio.create_task(self._load(part))
            taken.append(part)
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._tick())
        return taken

    def revoke(self, partitions: Iterable[int]) -> None:
        """Give up ``partitions``: forget their tasks and cancel their jobs."""
        for number in partitions:
            part = self.partitions.pop(number, None)
            load = self._loads.pop(number, None)
            if load is not None:
                load.cancel()
            if part is None:
                continue
            part.room.set()  # a stream waiting for its backlog goes on
            for task_id in part.tasks:
                self.jobs.forget(task_id)
                self._part_of.pop(task_id, None)

    async def _load(self, part: _Partition[S]) -> None:
        """Fold the partition's snapshot, then what arrived meanwhile."""
        snapshot: Snapshot | None = None
        for attempt in range(LOAD_ATTEMPTS):
            try:
                snapshot = await self.snapshots.load(part.number)
                break
            except Exception as exc:
                # Without a snapshot the log from offset 0 gives the same state, slower.
                last = attempt == LOAD_ATTEMPTS - 1
                log.warning(
                    "snapshot not read; replaying the log" if last else "snapshot not read",
                    partition=part.number,
                    error=str(exc)[:200],
                )
                if not last:
                    await asyncio.sleep(0.5 * 2**attempt)
        if snapshot is not None:
            await self._restore(part, snapshot)
        # What the stream brought meanwhile, including what it brings while this folds:
        # only then does the stream's next batch go straight to _apply, so the two never
        # fold the partition at once.
        # What the stream brought meanwhile, then what it brings while that is folded.
        part.loaded.set()
        await self._drain(part)
        log.info(
            "partition restored",
            partition=part.number,
            offset=part.position,
            tasks=len(part.tasks),
        )

    async def _restore(self, part: _Partition[S], snapshot: Snapshot) -> None:
        records = snapshot.records
        await self.codec.prepare_records(r.value for _, r in records)
        for offset, record in records:
            event = await self._decode_or_dlq(record, part.number, offset)
            if event is not None:
                self.fold(part, event, offset, record=record)
        part.position = part.snapshot_at = snapshot.offset
        self._observed_to[part.number] = max(self._observed_to.get(part.number, 0), snapshot.offset)

    async def _check_caught_up(self) -> None:
        waiting = [
            p for p in self.partitions.values() if p.loaded.is_set() and not p.ready.is_set()
        ]
        unknown = [p.number for p in waiting if p.target is None]
        if unknown:
            for lag in await self.heartbeats.positions.lag(unknown):
                part = self.partitions.get(lag.partition)
                if part is not None and lag.high_watermark is not None:
                    part.target = lag.high_watermark
        for part in waiting:
            if part.target is not None and part.position >= part.target:
                self._caught_up(part)

    def _caught_up(self, part: _Partition[S]) -> None:
        part.ready.set()
        if self.background is not None and self._background is None:
            # Work of the worker as a whole (a model fit), started once history is known.
            self._background = asyncio.create_task(self.background(self))
        for task_id in list(part.tasks):
            self.decide(part, task_id)
        log.info("partition caught up", partition=part.number, offset=part.position)

    # -- timers ------------------------------------------------------------------------
    async def _tick(self) -> None:
        """Decide again for tasks whose deadline or retry has come; mark partitions that
        caught up; take snapshots when due."""
        last_snapshot = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(TICK_S)
            try:
                for task_id in self.jobs.due(self.clock()):
                    part = self._part_of.get(task_id)
                    if part is not None and part.ready.is_set():
                        self.decide(part, task_id)
                await self._check_caught_up()
                now = asyncio.get_running_loop().time()
                if now - last_snapshot >= self.settings.snapshot_interval_s:
                    last_snapshot = now
                    await self.snapshot()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("worker timer failed", worker=self.name)

    async def snapshot(self, partitions: Iterable[int] | None = None) -> None:
        """Save the snapshot of each (given) restored partition that moved since its last.

        A partition still catching up is saved too: its state is the fold of the log up to
        its position whether or not it decides yet, and the stream's events are acked only
        once a snapshot covers them, so a worker replaying a long log would otherwise hold
        every one of them until it caught up."""
        numbers = list(self.partitions) if partitions is None else list(partitions)
        for number in numbers:
            part = self.partitions.get(number)
            if part is None or not part.loaded.is_set() or part.position == part.snapshot_at:
                continue
            records = sorted(
                (item for task_records in part.records.values() for item in task_records),
                key=lambda item: item[0],
            )
            position = part.position
            try:
                await self.snapshots.save(number, Snapshot(position, records, len(part.tasks)))
            except Exception as exc:
                log.warning("snapshot not saved", partition=number, error=str(exc)[:200])
                continue
            part.snapshot_at = position
            covered = [item for item in part.unacked if item.message.offset < position]
            part.unacked = [item for item in part.unacked if item.message.offset >= position]
            for item in covered:
                item.ack()

    # -- faust -------------------------------------------------------------------------
    def app(self) -> faust.App:
        """The faust app: one agent over wrench.events in this worker's consumer group."""
        app = faust_app(self.settings, self.group)
        topic = app.topic(
            self.topic,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )

        async def consume(stream: Any) -> None:
            # Not acked when handled: an event is acked once a snapshot covers it, so the
            # offsets faust commits never pass the snapshot a successor restores.
            async for batch in stream.noack_take(BATCH_MAX, within=BATCH_WITHIN_S):
                items = []
                for item in batch:
                    message = item.message
                    items.append((message.partition, message.offset, record_of(message)))
                await self.handle_batch(items)
                for item in batch:
                    part = self.partitions.get(item.message.partition)
                    if part is not None:
                        part.unacked.append(item)

        app.agent(topic, name=f"{self.group}.consume")(consume)

        async def heartbeats() -> None:
            self.heartbeats.start()

        app.task(heartbeats)

        # mode's signals call receivers as receiver(sender, *args, signal=..., **kwargs).
        async def assigned(sender: Any, *args: Any, **_: Any) -> None:
            mine = {tp.partition for tp in args[0] if tp.topic == self.topic}
            await self._give_up(set(self.partitions) - mine)
            self.assign(sorted(mine))
            self.heartbeats.soon()
            log.info("partitions assigned", worker=self.name, partitions=sorted(mine))

        async def revoked(sender: Any, *args: Any, **_: Any) -> None:
            await self._give_up({tp.partition for tp in args[0] if tp.topic == self.topic})
            self.heartbeats.soon()

        async def shutdown(sender: Any, *_: Any, **__: Any) -> None:
            await self.close()

        app.on_partitions_assigned.connect(cast(Any, assigned), weak=False)
        app.on_partitions_revoked.connect(cast(Any, revoked), weak=False)
        app.on_before_shutdown.connect(cast(Any, shutdown), weak=False)
        return app

    async def _give_up(self, partitions: set[int]) -> None:
        """Snapshot, then revoke: the next owner replays only what came after."""
        if partitions:
            await self.snapshot(partitions)
            self.revoke(partitions)

    async def close(self) -> None:
        """Let running jobs finish for a moment, snapshot, cancel the rest, flush."""
        jobs = self.jobs.tasks()
        if jobs:
            _, pending = await asyncio.wait(jobs, timeout=STOP_GRACE_S)
            for task in pending:
                task.cancel()
        for load in self._loads.values():
            load.cancel()
        if self._ticker is not None:
            self._ticker.cancel()
        if self._background is not None:
            self._background.cancel()
        await self.snapshot()
        await self.heartbeats.stop()
        await self.producer.stop()
        await self.snapshots.close()
        log.info("worker stopped", worker=self.name, cancelled_jobs=len(jobs))

    def main(self) -> None:
        """Run until SIGTERM or SIGINT (``wrenchai worker <name>``), serving the process's
        metrics on WRENCH_METRICS_PORT when set (ConfigurationError when it is taken)."""
        if self.settings.log_level != "debug":
            # faust and mode narrate every service start and stop at info.
            for name in ("faust", "mode", "aiokafka"):
                logging.getLogger(name).setLevel(logging.WARNING)
        # From a thread of its own, up as long as the process: a scrape never waits for the
        # event loop.
        metrics.serve_metrics(self.settings, self.name)
        worker = faust.Worker(
            self.app(),
            loglevel=self.settings.log_level.upper(),
            override_logging=False,
            quiet=True,
        )
        worker.execute_from_commandline()


class _Failures:
    """What a worker does about a job that keeps failing: the heartbeat names the error,
    and after ``ALERT_AFTER`` failures in a row the task gets alert.raised JOB_FAILING (its
    id derived from the task, the agent and the job, so a retry of the alert is the same
    event), cleared when the job succeeds."""

    def __init__(self, worker: Worker[Any, Any]) -> None:
        self.worker = worker

    def _tenant(self, task_id: uuid.UUID) -> str | None:
        part = self.worker._part_of.get(task_id)
        return part.tenants.get(task_id) if part is not None else None

    def failed(self, task_id: uuid.UUID, key: str, error: BaseException, failures: int) -> None:
        self.worker.heartbeats.job_failed(
            error,
            attempt=failures,
            attempts=ALERT_AFTER,
            task_id=task_id,
            tenant_id=self._tenant(task_id),
        )

    def failing(self, task_id: uuid.UUID, key: str, error: BaseException, failures: int) -> None:
        message = (
            f"{self.worker.name}'s job {key} failed {failures} times in a row "
            f"({type(error).__name__}); it is retried on a schedule"
        )
        payload = AlertRaised(
            alert_id=self._alert_id(task_id, key),
            level="critical",
            code="JOB_FAILING",
            message=message,
            details={"agent": self.worker.name, "job": key, "failures": failures},
        )
        self._publish(task_id, payload, f"failing/{key}/{failures}")

    def recovered(self, task_id: uuid.UUID, key: str, failures: int) -> None:
        payload = AlertCleared(
            alert_id=self._alert_id(task_id, key),
            code="JOB_FAILING",
            reason=f"the job succeeded after {failures} failures",
        )
        self._publish(task_id, payload, f"recovered/{key}/{failures}")

    def _alert_id(self, task_id: uuid.UUID, key: str) -> str:
        return f"{task_id}:JOB_FAILING:{self.worker.name}:{key}"[:200]

    def _publish(self, task_id: uuid.UUID, payload: Any, step: str) -> None:
        tenant = self._tenant(task_id)
        if tenant is None:
            return
        name = f"wrench:{self.worker.name}:{task_id}:{step}"
        event = Event.new(
            payload,
            tenant_id=tenant,
            actor=Actor(kind="agent", id=self.worker.name),
            task_id=task_id,
            event_id=uuid.uuid5(uuid.NAMESPACE_URL, name),
            occurred_at=self.worker.clock(),
        )

        async def send() -> None:
            try:
                await self.worker.producer.publish(event)
            except Exception:
                log.exception("alert not published", task_id=str(task_id), code=payload.code)

        self.worker.spawn(send())


def dead_letter(
    record: Record, exc: EventDecodeError, topic: str, partition: int, offset: int, group: str
) -> Record:
    """The copy of a record that cannot be decoded for wrench.dlq: as it was, with where it
    was and why it was refused in headers."""
    headers = [
        *record.headers,
        ("dlq.reason", exc.reason.encode()),
        ("dlq.error", exc.message[:1000].encode()),
        ("dlq.topic", topic.encode()),
        ("dlq.partition", str(partition).encode()),
        ("dlq.offset", str(offset).encode()),
        ("dlq.consumer", group.encode()),
    ]
    return Record(key=record.key, value=record.value, headers=tuple(headers))


def faust_app(s: Settings, group: str) -> faust.App:
    """A faust app in consumer group ``group``, configured from the settings as every
    WrenchAI worker runs one: raw bytes, no web server, no topic declared, no table; its loop
    stamps its liveness for `wrenchai health worker`.

    faust's own producer carries none of WrenchAI's records (no table, no changelog, no
    faust topic): every event goes through EventProducer, idempotent per
    WRENCH_KAFKA_IDEMPOTENT. faust
    makes its producer idempotent only with processing_guarantee="exactly_once", which needs
    transactions; WrenchAI stays at-least-once with idempotent consumers."""
    _faust_fetch_wait(s.kafka_fetch_max_wait_ms)
    datadir = s.data_dir or Path(tempfile.gettempdir()) / "wrenchai"
    (datadir / "faust").mkdir(parents=True, exist_ok=True)
    app = faust.App(
        group,
        broker=[f"kafka://{host.strip()}" for host in s.kafka_bootstrap.split(",")],
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        # faust makes a data directory even for memory tables: never in the caller's
        # working directory.
        datadir=str(datadir / "faust" / group),
        web_enabled=False,
        autodiscover=False,
        # Topics are created and checked by `wrenchai topics create`, never by a worker,
        # and no table or leader topic is needed.
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=s.kafka_session_timeout_ms / 1000,
        broker_rebalance_timeout=s.kafka_rebalance_timeout_ms / 1000,
        broker_heartbeat_interval=max(s.kafka_session_timeout_ms / 5000, 0.5),
        broker_request_timeout=max(s.kafka_request_timeout_ms / 1000, 40.0),
        stream_wait_empty=False,
        producer_acks=-1,
    )

    async def alive() -> None:
        health.tick()

    app.timer(health.TICK_S, name=f"{group}.alive", traced=False)(alive)
    return app


def _faust_fetch_wait(milliseconds: int) -> None:
    """Make faust's consumer wait ``milliseconds`` per fetch instead of its fixed 1500 ms
    (WRENCH_KAFKA_FETCH_MAX_WAIT_MS): on the embedded broker every hop of a task through the
    log would otherwise wait for it."""
    thread = faust_aiokafka.AIOKafkaConsumerThread
    original = getattr(thread, "_wrench_original_create", thread._create_worker_consumer)

    def create(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = milliseconds  # read by AIOKafkaConsumer.start()
        return consumer

    thread._wrench_original_create = original  # type: ignore[attr-defined]
    thread._create_worker_consumer = create  # type: ignore[method-assign]


def record_of(message: Any) -> Record:
    """A consumed message (faust's or aiokafka's) as the codec's record."""
    return Record(key=message.key, value=message.value, headers=kafka_headers(message.headers))
