"""Agent heartbeats: what a worker says about itself on wrench.admin, and how it gets to the
read model the API reads.

The shell's part runs in this process on the real broker (a Worker without faust: its
partitions replayed, events folded, jobs run); the whole path runs with a real
`wrenchai worker journey-agent` and the projector.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from api._agents import AgentStatus, agent_status
from api._database import Database
from events import (
    SYSTEM_TENANT,
    Actor,
    AgentHeartbeat,
    AlertRaised,
    Codec,
    Event,
    EventProducer,
    Record,
    TaskCancelled,
    TasksInFlight,
    TaskSubmitted,
    create_consumer,
    log_end_offsets,
)
from processors.runtime import Worker
from processors.runtime._heartbeat import LogPositions, tasks_in_flight
from processors.super.agent import PlanTask, SuperAgent
from projections import run_projector
from tests.events.topic_reader import read_topic
from tests.processors.super.test_super_agent_worker import Log, WorkerProcess
from wrenchai.settings import Settings

USER = Actor(kind="user", id="ada")
WAIT_S = 45.0


def submitted(
    tenant_id: str, steps: list[dict[str, Any]] | None = None, description: str = "wait a while"
) -> Event:
    constraints = {"playbook": {"name": "test", "steps": steps}} if steps else None
    return Event.new(
        TaskSubmitted(
            description=description, constraints=constraints, grants=["playbooks:inline"]
        ),
        tenant_id=tenant_id,
        actor=USER,
        task_id=uuid.uuid4(),
    )


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = WAIT_S
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"{what}: not within {timeout_s}s"
        await asyncio.sleep(0.2)


# -- the shell, in this process ------------------------------------------------------------
@dataclass(frozen=True)
class Work:
    """The one job of a task of the test agent: it fails when the description says so."""

    fail: bool
    key: str = "work"


def test_tasks_in_flight_are_bounded_per_tenant_with_their_count() -> None:
    """150 tasks of one tenant: the count says 150, the ids stop at 100; tenants apart."""
    many = [uuid.uuid4() for _ in range(150)]
    other = uuid.uuid4()
    tenant = {**dict.fromkeys(many, "acme"), other: "globex"}
    found = tasks_in_flight([*many, other, uuid.uuid4()], tenant.get)
    assert found["acme"].count == 150 and len(found["acme"].task_ids) == 100
    assert found["acme"].task_ids == sorted(many)[:100]
    assert found["globex"] == TasksInFlight(count=1, task_ids=[other])
    assert set(found) == {"acme", "globex"}  # a task of no known tenant is left out


@pytest.fixture
async def shell(
    settings: Settings, topics: dict[str, int]
) -> AsyncIterator[tuple[Worker[Event, Work], asyncio.Event]]:
    """A Worker whose job per task waits for the event it yields with it, or raises when
    the task asks to fail; its partitions replayed from the (empty) log."""
    release = asyncio.Event()

    async def run(job: Work, emit: Any) -> None:
        if job.fail:
            raise RuntimeError("the user's secret words")
        await release.wait()

    def decide(state: Event, now: datetime) -> list[Work]:
        assert isinstance(state.payload, TaskSubmitted)
        return [Work(fail=state.payload.description == "fail")]

    worker: Worker[Event, Work] = Worker(
        settings,
        "test-agent",
        folded_types={"task.submitted"},
        evolve=lambda state, event: state or event,
        decide=decide,
        run=run,
    )
    parts = worker.assign([0, 1, 2])
    await asyncio.wait_for(asyncio.gather(*(p.ready.wait() for p in parts)), 30)
    yield worker, release
    release.set()
    await worker.close()


async def test_the_heartbeat_groups_running_tasks_by_tenant_and_names_the_last_error(
    shell: tuple[Worker[Event, Work], asyncio.Event], settings: Settings
) -> None:
    """Jobs running for two acme tasks and one globex task are its tasks in flight, per
    tenant; a job that fails three times in a row leaves JOB_FAILING with its task and tenant, and
    nothing of the error's text. The heartbeat is a _system event of the agent, for
    wrench.admin, listing the partitions and their lag."""
    worker, _ = shell
    tasks = {"acme": [submitted("acme"), submitted("acme")], "globex": [submitted("globex")]}
    failing = submitted("acme", description="fail")
    part = worker.partitions[0]
    for offset, event in enumerate([*tasks["acme"], *tasks["globex"], failing]):
        task_id = worker.fold(part, event, offset)
        assert task_id is not None
        worker.decide(part, task_id)
    assert failing.task_id is not None

    def failures() -> int:
        waiting = worker.jobs.waiting.get(failing.task_id, {}).get("work")
        return waiting.failures if waiting is not None else 0

    await eventually(lambda: _true(failures() >= 3), "the failing job failed three times")

    event = await worker.heartbeats.heartbeat()
    beat = event.payload
    assert isinstance(beat, AgentHeartbeat)
    assert beat.agent_id == "test-agent" and beat.partitions == [0, 1, 2]
    assert [lag.partition for lag in beat.lag] == [0, 1, 2]
    # The only record on the log: the failing job's alert on its task's partition.
    assert sum(lag.high_watermark or 0 for lag in beat.lag) == 1
    [record] = await read_topic(settings, settings.topic("events"), 1)
    alert = worker.codec.decode(record.value, tuple(record.headers))
    assert isinstance(alert.payload, AlertRaised) and alert.payload.code == "JOB_FAILING"
    assert alert.task_id == failing.task_id and alert.tenant_id == "acme"
    assert alert.payload.details == {"agent": "test-agent", "job": "work", "failures": 3}
    assert beat.jobs_running == 3
    assert beat.tasks_in_flight == {
        tenant: TasksInFlight(count=len(events), task_ids=sorted(e.task_id for e in events))
        for tenant, events in tasks.items()
    }
    error = beat.last_error
    assert error is not None and error.code == "JOB_FAILING"
    assert (error.task_id, error.tenant_id) == (failing.task_id, "acme")
    assert "RuntimeError" in error.message and "secret" not in event.model_dump_json()
    assert event.tenant_id == SYSTEM_TENANT and event.task_id is None
    assert event.actor == Actor(kind="agent", id="test-agent")
    assert worker.producer.topic_of([event]) == settings.topic("admin")


async def _true(value: bool) -> bool:
    return value


async def test_lag_is_the_fetch_high_watermark_minus_the_groups_committed_offset(
    settings: Settings, producer: EventProducer
) -> None:
    """Five records of one task in one batch: the high watermark is 5 on their partition
    (ListOffsets may say less on the embedded broker), and the lag 5 while the group has
    committed nothing, 3 once it committed offset 2; the other partitions are at 0."""
    task = submitted("acme")
    positions = await producer.publish_many(
        [task, *(Event.new(TaskCancelled(reason=f"n{i}"), tenant_id="acme", actor=USER,
                           task_id=task.task_id) for i in range(4))]
    )  # fmt: skip
    partition = positions[0].partition
    assert [p.offset for p in positions] == [0, 1, 2, 3, 4]
    group = settings.group("test-agent")
    reader = LogPositions(settings, settings.topic("events"), group)
    try:
        lag = {entry.partition: entry for entry in await reader.lag([0, 1, 2])}
        assert (lag[partition].committed, lag[partition].high_watermark) == (None, 5)
        assert lag[partition].lag == 5
        assert all(lag[p].high_watermark == 0 and lag[p].lag == 0 for p in lag if p != partition)

        committer = create_consumer(settings, group=group)
        await committer.start()
        try:
            from aiokafka import TopicPartition

            tp = TopicPartition(settings.topic("events"), partition)
            committer.assign([tp])
            await committer.commit({tp: 2})
        finally:
            await committer.stop()
        (entry,) = await reader.lag([partition])
        assert (entry.committed, entry.high_watermark, entry.lag) == (2, 5, 3)
    finally:
        await reader.close()


# -- a real worker, through the projector to the API's read --------------------------------
@pytest.fixture
def heartbeat_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "heartbeat_interval_s": 1.0,
            "tool_modules": "tests.processors.journey_tools",
            "require_acceptance": False,
        }
    )


@pytest.fixture
async def api_database(heartbeat_settings: Settings) -> AsyncIterator[Database]:
    """The API's tenant-scoped pool: what a status request reads through."""
    database = Database(heartbeat_settings, role=heartbeat_settings.api_database_role)
    yield database
    await database.close()


async def _status(database: Database, tenant_id: str, now: datetime | None = None) -> AgentStatus:
    async with database.tenant(tenant_id) as conn:
        return await agent_status(conn, "journey-agent", tenant_id, now)


async def test_a_running_worker_shows_its_partitions_tasks_lag_and_errors_then_turns_stale(
    heartbeat_settings: Settings,
    db: asyncpg.Connection,
    topics: dict[str, int],
    codec: Codec,
    api_database: Database,
    tmp_path: Path,
) -> None:
    """A journey-agent worker with a 30 s step running for acme and one for globex: each
    tenant's status lists its own task only, with the worker's three partitions; the lag
    is the fetch high watermark minus the committed offset, and reaches 0 once the worker
    has handled the log. A poison record leaves EVENT_DECODE_ERROR, shown to a tenant as
    its code only. Cancelled, the tasks leave; stopped, the worker turns stale."""
    settings = heartbeat_settings
    producer = EventProducer(settings, codec)
    planner = SuperAgent.from_settings(settings)
    stop = asyncio.Event()
    projector = asyncio.create_task(run_projector(settings, stop=stop))
    worker = WorkerProcess(settings, tmp_path / "journey.out", name="journey-agent")
    try:
        sleeping = {
            tenant: submitted(tenant, [{"id": "wait", "tool": "test.sleep", "role": "coder",
                                        "input": {"seconds": 30}}])
            for tenant in ("acme", "globex")
        }  # fmt: skip
        for task in sleeping.values():
            planned: list[Event] = [task]

            async def emit(event: Event, into: list[Event] = planned) -> None:
                into.append(event)

            await planner.run(PlanTask(task), emit)
            assert planned[-1].type == "plan.created", [e.type for e in planned]
            await producer.publish_many(planned)

        async def both_running() -> bool:
            statuses = [await _status(api_database, tenant) for tenant in sleeping]
            return all(
                s.state == "up" and s.tasks_in_flight == [sleeping[t].task_id]
                for s, t in zip(statuses, sleeping, strict=True)
            )

        await eventually(both_running, "each tenant's task in flight")
        acme = await _status(api_database, "acme")
        assert acme.partitions == [0, 1, 2] and acme.instances_up == 1
        assert acme.tasks_in_flight_count == 1 and acme.instances[0].instance.endswith(
            f":{worker.proc.pid}"
        )

        # The log is quiet while the steps sleep: the lag settles at 0 on marks that are the
        # log's own ends.
        async def caught_up() -> bool:
            ends = await log_end_offsets(settings, settings.topic("events"))
            lag = (await _status(api_database, "acme")).lag
            return [(e.partition, e.high_watermark, e.lag) for e in lag] == [
                (p, ends[p], 0) for p in sorted(ends)
            ]

        await eventually(caught_up, "lag 0 at the log's high watermarks")

        poison = Record(key=b"x", value=b"{not json", headers=(("type", b"task.submitted"),))
        await producer.send_records(settings.topic("events"), [poison])

        async def decode_error_shown() -> bool:
            error = (await _status(api_database, "acme")).last_error
            return error is not None and error.code == "EVENT_DECODE_ERROR"

        await eventually(decode_error_shown, "the decode error")
        error = (await _status(api_database, "acme")).last_error
        assert error is not None and (error.message, error.task_id) == (None, None)

        await producer.publish_many(
            [Event.new(TaskCancelled(reason="enough"), tenant_id=t.tenant_id, actor=USER,
                       task_id=t.task_id) for t in sleeping.values()]
        )  # fmt: skip

        async def none_in_flight() -> bool:
            counts = [(await _status(api_database, t)).tasks_in_flight_count for t in sleeping]
            return counts == [0, 0]

        await eventually(none_in_flight, "no task in flight once cancelled")

        # Heartbeats on wrench.admin: the first that holds partitions came before the worker
        # had committed anything, so its lag there is the whole of each partition.
        beats = [
            e.payload
            for e in await _admin_events(settings, codec)
            if isinstance(e.payload, AgentHeartbeat)
        ]
        first = next(b for b in beats if b.partitions)
        assert all(lag.committed is None and lag.lag == lag.high_watermark for lag in first.lag)
        assert sum(lag.lag or 0 for lag in first.lag) > 0

        worker.stop(signal.SIGTERM)

        async def stale() -> bool:
            status = await _status(api_database, "acme", datetime.now(UTC))
            return status.state == "stale" and status.instances[0].state == "stale"

        await eventually(stale, "the stopped worker stale", timeout_s=15)
        assert (await _status(api_database, "acme")).partitions == []
    finally:
        worker.stop(signal.SIGKILL)
        stop.set()
        await asyncio.wait_for(projector, 30)
        await producer.stop()


async def _admin_events(settings: Settings, codec: Codec) -> list[Event]:
    return [
        codec.decode(m.value, tuple(m.headers))
        for _, m in await Log(settings, codec).records("admin")
    ]
