"""An agent worker's heartbeat: ``agent.heartbeat`` on wrench.admin, from its own task.

The API never calls a worker. Each worker process says what it holds by publishing a
heartbeat every ``WRENCH_HEARTBEAT_INTERVAL_S``, once when it starts and again whenever its
partitions change; the projector folds them into ``agent_instances`` and the API reads that.

Nothing here runs on the worker's hot path. The shell only notes, where it already is, the
tenant of each task it folds (once per task) and the last error it saw; this module reads
those when a heartbeat is due, and asks the broker for the lag in its own consumer.

Lag is the standard consumer-group lag on the partitions the worker holds: the high
watermark of each partition minus the group's committed offset. The high watermark comes
from a fetch response, never from ListOffsets (``end_offsets()``), which under-reports on the
embedded broker (see ARCHITECTURE.md, "Known behaviour of the local broker").
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from events import (
    MAX_TASKS_PER_TENANT,
    SYSTEM_TENANT,
    Actor,
    AgentError,
    AgentHeartbeat,
    BrokerUnavailable,
    Event,
    PartitionLag,
    TasksInFlight,
    create_consumer,
)
from wrenchai import metrics
from wrenchai.errors import WrenchError
from wrenchai.settings import Settings

if TYPE_CHECKING:
    from events import EventProducer


class _Partition(Protocol):
    @property
    def tenants(self) -> Mapping[uuid.UUID, str]: ...


class _Jobs(Protocol):
    def jobs_running(self) -> list[tuple[uuid.UUID, str]]: ...


class Beating(Protocol):
    """What heartbeats read of a worker: the agent runtime's ``Worker``, or a processor that
    holds no task state (the CostGuard), which holds no jobs either."""

    name: str
    settings: Settings
    topic: str
    group: str
    producer: EventProducer
    clock: Callable[[], datetime]

    @property
    def partitions(self) -> Mapping[int, _Partition]: ...

    @property
    def jobs(self) -> _Jobs: ...


log = structlog.get_logger(__name__)

LAG_TIMEOUT_S = 5.0
"""Longest one heartbeat waits for the broker's offsets; past it the lag is left unknown."""


def resident_bytes() -> int | None:
    """This process's resident memory (RSS) now, from /proc; None where there is no /proc."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def instance_name() -> str:
    """This process among the worker's instances: ``hostname:pid``."""
    return f"{socket.gethostname()[:150]}:{os.getpid()}"


def tasks_in_flight(
    task_ids: Iterable[uuid.UUID], tenant_of: Callable[[uuid.UUID], str | None]
) -> dict[str, TasksInFlight]:
    """The tasks that have a job running, grouped by tenant: each tenant's count and its
    first ``MAX_TASKS_PER_TENANT`` ids, in id order. A task whose tenant is not known (it
    was never folded) is left out."""
    by_tenant: dict[str, set[uuid.UUID]] = {}
    for task_id in task_ids:
        tenant = tenant_of(task_id)
        if tenant is not None:
            by_tenant.setdefault(tenant, set()).add(task_id)
    return {
        tenant: TasksInFlight(count=len(ids), task_ids=sorted(ids)[:MAX_TASKS_PER_TENANT])
        for tenant, ids in sorted(by_tenant.items())
    }


def job_error(
    exc: BaseException,
    *,
    attempt: int,
    attempts: int,
    task_id: uuid.UUID | None,
    tenant_id: str | None,
    at: datetime,
) -> AgentError:
    """The error a failed job leaves. The message names the error's class and the attempt,
    never the error's text, which may quote a task's content."""
    kind = type(exc).__name__
    if isinstance(exc, BrokerUnavailable):
        code, message = exc.code, "a job could not reach the broker; it is retried"
    elif attempt >= attempts:
        code = "JOB_FAILING"
        message = (
            f"a job failed {attempt} times in a row ({kind}); it is retried on a schedule "
            "and its task is alerted"
        )
    else:
        code = exc.code if isinstance(exc, WrenchError) else "JOB_FAILED"
        message = f"a job failed with {kind} (attempt {attempt}); it is retried"
    return AgentError(code=code, message=message, task_id=task_id, tenant_id=tenant_id, at=at)


def decode_error(topic: str, partition: int, offset: int, reason: str, at: datetime) -> AgentError:
    """The error a record that could not be decoded leaves: no task or tenant is known."""
    return AgentError(
        code="EVENT_DECODE_ERROR",
        message=f"the record at {topic} partition {partition} offset {offset} could not be "
        f"decoded ({reason[:50]}); it was sent to the DLQ",
        at=at,
    )


class LogPositions:
    """The worker's consumer group's committed offsets and each partition's high watermark,
    read with a consumer of its own that joins no group and fetches only when asked."""

    def __init__(self, settings: Settings, topic: str, group: str) -> None:
        self.settings, self.topic, self.group = settings, topic, group
        self._consumer: AIOKafkaConsumer | None = None

    async def lag(
        self, partitions: Sequence[int], timeout_s: float = LAG_TIMEOUT_S
    ) -> list[PartitionLag]:
        """Each partition's committed offset, high watermark and lag; what the broker did not
        answer within ``timeout_s`` is None."""
        committed: dict[int, int | None] = {}
        marks: dict[int, int] = {}
        if partitions:
            try:
                await asyncio.wait_for(self._read(partitions, committed, marks), timeout_s)
            except (KafkaError, TimeoutError, OSError) as exc:
                log.warning("lag not read", error=str(exc) or type(exc).__name__)
                await self.close()
        found = []
        for partition in partitions:
            done, mark = committed.get(partition), marks.get(partition)
            behind = None if mark is None else max(mark - (done or 0), 0)
            found.append(
                PartitionLag(partition=partition, committed=done, high_watermark=mark, lag=behind)
            )
        return found

    async def _read(
        self, partitions: Sequence[int], committed: dict[int, int | None], marks: dict[int, int]
    ) -> None:
        if self._consumer is None:
            # Manual assignment with the worker's group id: it may read the group's offsets
            # but never joins the group, and commits nothing.
            consumer = create_consumer(self.settings, group=self.group)
            await consumer.start()
            self._consumer = consumer
        consumer = self._consumer
        tps = [TopicPartition(self.topic, p) for p in partitions]
        consumer.assign(tps)
        for tp in tps:
            committed[tp.partition] = await consumer.committed(tp)
        # ListOffsets only says where to fetch from: near the end, so the response is small.
        # The high watermark is what the fetch response carries.
        for tp, end in (await consumer.end_offsets(tps)).items():
            consumer.seek(tp, max(end - 1, 0))
        try:
            while len(marks) < len(tps):
                await consumer.getmany(*tps, timeout_ms=100, max_records=1)
                for tp in tps:
                    mark = consumer.highwater(tp)
                    if mark is not None:
                        marks[tp.partition] = mark
        finally:
            # Stop the consumer's background fetching until the next heartbeat.
            consumer.pause(*tps)

    async def close(self) -> None:
        """Disconnect; the next read connects again."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                await consumer.stop()
            except KafkaError as exc:
                log.warning("lag consumer stop failed", error=str(exc))


class Heartbeats:
    """Publishes a worker's heartbeats from a background task and keeps its last error."""

    def __init__(self, worker: Beating) -> None:
        self.worker = worker
        self.agent_id = worker.name
        self.instance = instance_name()
        self.started_at = worker.clock()
        self.interval_s = worker.settings.heartbeat_interval_s
        self.last_error: AgentError | None = None
        self.jobs_failed = 0
        self.decode_failures = 0
        self.positions = LogPositions(worker.settings, worker.topic, worker.group)
        self._due = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._measured: set[int] = set()

    # -- what the shell reports ----------------------------------------------------------
    def job_failed(
        self,
        exc: BaseException,
        *,
        attempt: int,
        attempts: int,
        task_id: uuid.UUID,
        tenant_id: str | None,
    ) -> None:
        """A job raised for the ``attempt``-th time in a row; from ``attempts`` on its
        task is alerted (it is retried on a schedule all the same)."""
        self.jobs_failed += 1
        self.last_error = job_error(
            exc,
            attempt=attempt,
            attempts=attempts,
            task_id=task_id,
            tenant_id=tenant_id,
            at=self.worker.clock(),
        )

    def decode_failed(self, partition: int, offset: int, reason: str) -> None:
        """A record of a folded type could not be decoded and went to the DLQ."""
        self.decode_failures += 1
        self.last_error = decode_error(
            self.worker.topic, partition, offset, reason, self.worker.clock()
        )

    def soon(self) -> None:
        """Publish a heartbeat now rather than at the next interval (partitions changed)."""
        self._due.set()

    # -- what is published ---------------------------------------------------------------
    def tenant_of(self, task_id: uuid.UUID) -> str | None:
        """The tenant of a task the worker holds, from the partition that folded it."""
        for part in list(self.worker.partitions.values()):
            tenant = part.tenants.get(task_id)
            if tenant is not None:
                return tenant
        return None

    async def heartbeat(self) -> Event:
        """The heartbeat of this moment: partitions, their lag, tasks in flight, last error,
        resident memory and the failures counted since start."""
        partitions = sorted(self.worker.partitions)
        lag = await self.positions.lag(partitions)
        self.measured(lag)
        running = self.worker.jobs.jobs_running()
        payload = AgentHeartbeat(
            agent_id=self.agent_id,
            instance=self.instance,
            started_at=self.started_at,
            interval_s=self.interval_s,
            partitions=partitions,
            lag=lag,
            jobs_running=len(running),
            tasks_in_flight=tasks_in_flight((task_id for task_id, _ in running), self.tenant_of),
            last_error=self.last_error,
            rss_bytes=resident_bytes(),
            jobs_failed=self.jobs_failed,
            decode_failures=self.decode_failures,
        )
        return Event.new(
            payload,
            tenant_id=SYSTEM_TENANT,
            actor=Actor(kind="agent", id=self.agent_id),
            occurred_at=self.worker.clock(),
        )

    def measured(self, lag: Sequence[PartitionLag]) -> None:
        """Put the lag of the partitions held now in wrench_consumer_lag, and drop the
        series of those given up since the last heartbeat."""
        group = self.worker.group
        metrics.forget_consumer_lag(group, self._measured - {p.partition for p in lag})
        metrics.set_consumer_lag(group, {p.partition: p.lag for p in lag})
        self._measured = {p.partition for p in lag if p.lag is not None}

    async def beat(self) -> None:
        """Publish one heartbeat; a broker that is down costs this one only."""
        try:
            await self.worker.producer.publish(await self.heartbeat())
        except BrokerUnavailable as exc:
            log.warning("heartbeat not published", worker=self.agent_id, error=exc.message)

    # -- the task ------------------------------------------------------------------------
    def start(self) -> None:
        """Start publishing: one heartbeat now, then one per interval or change."""
        if self._task is None:
            self._due.set()
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._due.wait(), self.interval_s)
            except TimeoutError:
                pass
            self._due.clear()
            try:
                await self.beat()
            except Exception:
                # The heartbeat must never stop the worker; the next one tries again.
                log.exception("heartbeat failed", worker=self.agent_id)

    async def stop(self) -> None:
        """Stop publishing and disconnect the lag consumer."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.positions.close()
        metrics.forget_consumer_lag(self.worker.group, self._measured)
        self._measured = set()
