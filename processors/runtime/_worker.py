"""The faust shell around a processor's pure core: consume, fold, start work, publish.

A processor is three functions: ``evolve(state, event)`` folds one task's events into its
state, ``decide(state)`` lists the jobs the state calls for, and ``run(job, emit)`` does one
job (an LLM or tool call) and emits the events that record it. This module supplies
everything else, the same way for every agent:

- **State is folded from the log.** When the worker is given a partition it first reads that
  partition from offset 0 up to its high watermark with a plain consumer, folding only
  (deciding nothing while history replays), then decides for every task once. Only then does
  the faust stream's batch of that partition go on, skipping what the replay already folded.
  So a worker that crashed, or that takes over another's partition, continues from the
  log, and a job whose result is in the log is never started again.
- **Work never blocks a partition.** Jobs run as background tasks, at most
  ``WRENCH_AGENT_CONCURRENCY`` at once; the state changes only when their events come back
  through the log. A job stays marked while ``decide`` still lists it, so it is not started
  twice while its events are on their way.
- **Nothing is lost.** A record of a folded type that cannot be decoded goes to wrench.dlq
  with the reason in headers; a job that fails for want of the broker is retried with
  backoff; an unexpected error is logged with the ids and retried a few times.
- **It says how it is doing.** A background task publishes ``agent.heartbeat`` (partitions,
  lag, tasks in flight, the last of those errors): see processors/_heartbeat.py.

Faust's own consumer offsets only save the replay of records already folded; the log is the
state's only source.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, cast

import faust
import faust.transport.drivers.aiokafka as faust_aiokafka
import structlog
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from events import (
    BrokerUnavailable,
    Codec,
    Event,
    EventDecodeError,
    EventProducer,
    KeyStoreUnavailable,
    Record,
    codec_from_settings,
    create_consumer,
    shredded_fields,
)
from processors.runtime._heartbeat import Heartbeats
from wrenchai.settings import Settings

log = structlog.get_logger(__name__)

RETRY_BASE_S = 0.5
RETRY_MAX_S = 15.0
MAX_JOB_ERRORS = 3
STOP_GRACE_S = 2.0
TICK_S = 0.5


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Job(Protocol):
    """One piece of work a state calls for; ``key`` names it within its task."""

    @property
    def key(self) -> str: ...


S = TypeVar("S")
J = TypeVar("J", bound=Job)
Emit = Callable[[Event], Awaitable[None]]


@dataclass
class _Partition(Generic[S]):
    """One assigned partition: its tasks' states (and tenants) and how far the replay
    folded."""

    number: int
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    replayed_to: int = 0
    tasks: dict[uuid.UUID, S] = field(default_factory=dict)
    tenants: dict[uuid.UUID, str] = field(default_factory=dict)


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
        background: Callable[[Worker[S, J]], Coroutine[Any, Any, None]] | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.settings = settings
        self.name = name
        self.group = settings.group(name)
        self.topic = settings.topic("events")
        self.folded_types = frozenset(folded_types)
        self.evolve, self.decide, self.run, self.suppress = evolve, decide, run, suppress
        self.observe, self.deadline, self.clock = observe, deadline, clock
        self.background = background
        self._background: asyncio.Task[None] | None = None
        self.codec: Codec = codec_from_settings(settings)
        self.producer = EventProducer(settings, self.codec)
        self.partitions: dict[int, _Partition[S]] = {}
        self.running: dict[tuple[uuid.UUID, str], asyncio.Task[None]] = {}
        self.finished: set[tuple[uuid.UUID, str]] = set()
        self._slots: asyncio.Semaphore | None = None
        self._replays: dict[int, asyncio.Task[None]] = {}
        # (when, partition, task) of tasks whose state wants a decision at a time, not only
        # on an event (a task's timeout); stale entries are skipped when they come up.
        self._timers: list[tuple[datetime, int, uuid.UUID]] = []
        self._timer_of: dict[uuid.UUID, datetime] = {}
        self._observed_to: dict[int, int] = {}
        self._ticker: asyncio.Task[None] | None = None
        self.heartbeats = Heartbeats(self)

    # -- records -----------------------------------------------------------------------
    def decode(self, record: Record, partition: int, offset: int) -> Event | None:
        """The event in ``record`` when its type is folded; None otherwise (unread)."""
        kind = record.header("type")
        if kind is None or kind.decode(errors="replace") not in self.folded_types:
            return None
        return self.codec.decode(record.value, record.headers)

    async def handle(self, record: Record, partition: int, offset: int) -> None:
        """One record from the stream: fold it and start the work it calls for."""
        part = self.partitions.get(partition)
        if part is None:
            part = self.assign([partition])[0]
        await part.ready.wait()
        if offset < part.replayed_to:
            return
        event = await self._decode_or_dlq(record, partition, offset)
        if event is not None:
            self.fold(part, event, offset, live=True)

    def fold(self, part: _Partition[S], event: Event, offset: int, *, live: bool) -> None:
        """Fold ``event`` into its task's state; when ``live``, start what it calls for."""
        if self.observe is not None and offset >= self._observed_to.get(part.number, 0):
            # Cross-task folds (tool statistics) outlive a partition's revocation, so a
            # partition replayed again after a rebalance is not counted twice.
            self._observed_to[part.number] = offset + 1
            self.observe(event)
        if event.task_id is None:
            return
        state = part.tasks.get(event.task_id)
        if state is None:
            # Once per task: the heartbeat groups tasks in flight by tenant.
            part.tenants[event.task_id] = event.tenant_id
        part.tasks[event.task_id] = self.evolve(state, event)
        if live:
            self.schedule(part, event.task_id)

    def schedule(self, part: _Partition[S], task_id: uuid.UUID) -> None:
        """Start the jobs the task's state lists that are neither running nor done, and
        cancel running jobs it no longer lists (the task was cancelled or timed out)."""
        state = part.tasks[task_id]
        now = self.clock()
        jobs = self.decide(state, now)
        due = {job.key for job in jobs}
        self.finished = {mark for mark in self.finished if mark[0] != task_id or mark[1] in due}
        for mark, task in list(self.running.items()):
            if mark[0] == task_id and mark[1] not in due:
                task.cancel()
        for job in jobs:
            mark = (task_id, job.key)
            if mark in self.running or mark in self.finished:
                continue
            self.running[mark] = asyncio.create_task(self._perform(part, task_id, job))
        when = self.deadline(state) if self.deadline is not None else None
        # A deadline already passed was part of this decision; only future ones need a timer.
        if when is not None and when > now and self._timer_of.get(task_id) != when:
            self._timer_of[task_id] = when
            heapq.heappush(self._timers, (when, part.number, task_id))

    async def _tick(self) -> None:
        """Decide again for tasks whose deadline has come."""
        while True:
            await asyncio.sleep(TICK_S)
            now = self.clock()
            due: list[tuple[int, uuid.UUID]] = []
            while self._timers and self._timers[0][0] <= now:
                when, number, task_id = heapq.heappop(self._timers)
                if self._timer_of.get(task_id) != when:
                    continue  # superseded by a later deadline
                del self._timer_of[task_id]
                due.append((number, task_id))
            for number, task_id in due:
                part = self.partitions.get(number)
                if part is not None and part.ready.is_set() and task_id in part.tasks:
                    self.schedule(part, task_id)

    async def _decode_or_dlq(self, record: Record, partition: int, offset: int) -> Event | None:
        try:
            await self.codec.prepare_records([record.value])
            event = self.decode(record, partition, offset)
            if event is not None and shredded_fields(event.payload):
                # The tenant was shredded: its work stops, and nothing acts on "[shredded]".
                log.info("event of a shredded tenant not folded", type=event.type)
                return None
            return event
        except EventDecodeError as exc:
            headers = [
                *record.headers,
                ("dlq.reason", exc.reason.encode()),
                ("dlq.error", exc.message[:1000].encode()),
                ("dlq.topic", self.topic.encode()),
                ("dlq.partition", str(partition).encode()),
                ("dlq.offset", str(offset).encode()),
                ("dlq.consumer", self.group.encode()),
            ]
            dead = Record(key=record.key, value=record.value, headers=tuple(headers))
            await self.producer.send_records(self.settings.topic("dlq"), [dead])
            self.heartbeats.decode_failed(partition, offset, exc.reason)
            log.warning(
                "poison record sent to the DLQ",
                partition=partition,
                offset=offset,
                reason=exc.reason,
            )
            return None

    # -- jobs --------------------------------------------------------------------------
    async def _perform(self, part: _Partition[S], task_id: uuid.UUID, job: J) -> None:
        mark = (task_id, job.key)
        bound = log.bind(task_id=str(task_id), job=job.key, worker=self.name)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.settings.agent_concurrency)
        errors = 0
        delay = RETRY_BASE_S
        try:
            async with self._slots:
                while True:
                    try:
                        await self.run(job, lambda event: self._emit(part, task_id, event))
                        break
                    except BrokerUnavailable as exc:
                        bound.warning("broker unavailable; retrying the job", error=exc.message)
                        self._failed(part, task_id, exc, errors)
                    except Exception as exc:
                        errors += 1
                        bound.exception("job failed", attempt=errors)
                        self._failed(part, task_id, exc, errors)
                        if errors >= MAX_JOB_ERRORS:
                            bound.error("job abandoned until the worker restarts")
                            break
                    await asyncio.sleep(random.uniform(0, delay))
                    delay = min(delay * 2, RETRY_MAX_S)
            self.finished.add(mark)
        finally:
            self.running.pop(mark, None)

    def _failed(
        self, part: _Partition[S], task_id: uuid.UUID, exc: BaseException, attempt: int
    ) -> None:
        self.heartbeats.job_failed(
            exc,
            attempt=attempt,
            attempts=MAX_JOB_ERRORS,
            task_id=task_id,
            tenant_id=part.tenants.get(task_id),
        )

    async def _emit(self, part: _Partition[S], task_id: uuid.UUID, event: Event) -> None:
        state = part.tasks.get(task_id)
        if self.suppress is not None and state is not None and self.suppress(state, event):
            log.info(
                "event not published: the task moved on", type=event.type, task_id=str(task_id)
            )
            return
        await self.producer.publish(event)

    # -- partitions --------------------------------------------------------------------
    def assign(self, partitions: Iterable[int]) -> list[_Partition[S]]:
        """Take over ``partitions``: replay each from offset 0 in the background."""
        taken = []
        for number in partitions:
            if number in self.partitions:
                taken.append(self.partitions[number])
                continue
            part: _Partition[S] = _Partition(number)
            self.partitions[number] = part
            self._replays[number] = asyncio.create_task(self._replay(part))
            taken.append(part)
        return taken

    def revoke(self, partitions: Iterable[int]) -> None:
        """Give up ``partitions``: forget their tasks and cancel their jobs."""
        for number in partitions:
            part = self.partitions.pop(number, None)
            replay = self._replays.pop(number, None)
            if replay is not None:
                replay.cancel()
            if part is None:
                continue
            for mark, task in list(self.running.items()):
                if mark[0] in part.tasks:
                    task.cancel()
            self.finished = {mark for mark in self.finished if mark[0] not in part.tasks}

    async def _replay(self, part: _Partition[S]) -> None:
        """Fold the partition from offset 0 to its high watermark, then decide for its tasks."""
        tp = TopicPartition(self.topic, part.number)
        delay = RETRY_BASE_S
        while True:
            try:
                end = await self._fold_history(part, tp)
                break
            except (KafkaError, BrokerUnavailable, KeyStoreUnavailable) as exc:
                log.warning("replay failed; retrying", partition=part.number, error=str(exc))
                part.tasks.clear()
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
        part.replayed_to = end
        part.ready.set()
        if self.deadline is not None and self._ticker is None:
            self._ticker = asyncio.create_task(self._tick())
        if self.background is not None and self._background is None:
            # Work of the worker as a whole (a model fit), started once history is known.
            self._background = asyncio.create_task(self.background(self))
        for task_id in list(part.tasks):
            self.schedule(part, task_id)
        log.info("partition replayed", partition=part.number, offset=end, tasks=len(part.tasks))

    async def _fold_history(self, part: _Partition[S], tp: TopicPartition) -> int:
        consumer = create_consumer(self.settings)
        await consumer.start()
        try:
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end: int | None = None
            position = 0
            while end is None or position < end:
                batches = await consumer.getmany(tp, timeout_ms=200, max_records=1000)
                for message in batches.get(tp, []):
                    record = Record(
                        key=message.key,
                        value=message.value,
                        headers=tuple(message.headers or ()),
                    )
                    event = await self._decode_or_dlq(record, tp.partition, message.offset)
                    if event is not None:
                        self.fold(part, event, message.offset, live=False)
                    position = message.offset + 1
                if end is None:
                    # The first high watermark seen is the end of history; later records
                    # arrive through the stream.
                    end = consumer.highwater(tp)
            return position if end is None else max(position, end)
        finally:
            await consumer.stop()

    # -- faust -------------------------------------------------------------------------
    def app(self) -> faust.App:
        """The faust app: one agent over wrench.events in this worker's consumer group."""
        s = self.settings
        _faust_fetch_wait(s.kafka_fetch_max_wait_ms)
        # faust makes a data directory even for memory tables (its parent must exist); never
        # in the caller's working directory.
        datadir = Path(tempfile.gettempdir()) / "wrenchai-faust"
        datadir.mkdir(exist_ok=True)
        app = faust.App(
            self.group,
            broker=[f"kafka://{host.strip()}" for host in s.kafka_bootstrap.split(",")],
            value_serializer="raw",
            key_serializer="raw",
            store="memory://",
            datadir=str(datadir / self.group),
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
        topic = app.topic(
            self.topic,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )

        async def consume(stream: Any) -> None:
            async for item in stream.events():
                message = item.message
                record = Record(
                    key=message.key,
                    value=message.value,
                    headers=_headers(message.headers),
                )
                await self.handle(record, message.partition, message.offset)

        app.agent(topic, name=f"{self.group}.consume")(consume)

        async def heartbeats() -> None:
            self.heartbeats.start()

        app.task(heartbeats)

        # mode's signals call receivers as receiver(sender, *args, signal=..., **kwargs).
        async def assigned(sender: Any, *args: Any, **_: Any) -> None:
            mine = {tp.partition for tp in args[0] if tp.topic == self.topic}
            self.revoke(set(self.partitions) - mine)
            self.assign(sorted(mine))
            self.heartbeats.soon()
            log.info("partitions assigned", worker=self.name, partitions=sorted(mine))

        async def revoked(sender: Any, *args: Any, **_: Any) -> None:
            self.revoke({tp.partition for tp in args[0] if tp.topic == self.topic})
            self.heartbeats.soon()

        async def shutdown(sender: Any, *_: Any, **__: Any) -> None:
            await self.close()

        app.on_partitions_assigned.connect(cast(Any, assigned), weak=False)
        app.on_partitions_revoked.connect(cast(Any, revoked), weak=False)
        app.on_before_shutdown.connect(cast(Any, shutdown), weak=False)
        return app

    async def close(self) -> None:
        """Let running jobs finish for a moment, cancel the rest, flush the producer."""
        jobs = list(self.running.values())
        if jobs:
            _, pending = await asyncio.wait(jobs, timeout=STOP_GRACE_S)
            for task in pending:
                task.cancel()
        for replay in self._replays.values():
            replay.cancel()
        if self._ticker is not None:
            self._ticker.cancel()
        if self._background is not None:
            self._background.cancel()
        await self.heartbeats.stop()
        await self.producer.stop()
        log.info("worker stopped", worker=self.name, cancelled_jobs=len(jobs))

    def main(self) -> None:
        """Run until SIGTERM or SIGINT (``wrenchai worker <name>``)."""
        if self.settings.log_level != "debug":
            # faust and mode narrate every service start and stop at info.
            for name in ("faust", "mode", "aiokafka"):
                logging.getLogger(name).setLevel(logging.WARNING)
        worker = faust.Worker(
            self.app(),
            loglevel=self.settings.log_level.upper(),
            override_logging=False,
            quiet=True,
        )
        worker.execute_from_commandline()


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


def _headers(raw: Any) -> tuple[tuple[str, bytes], ...]:
    """Faust hands headers over as a list of pairs or a mapping; the codec wants pairs."""
    if raw is None:
        return ()
    items = raw.items() if isinstance(raw, dict) else raw
    return tuple((str(key), bytes(value or b"")) for key, value in items)
