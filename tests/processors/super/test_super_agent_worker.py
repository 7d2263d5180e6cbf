"""The SuperAgent worker as it runs: `wrenchai worker super-agent` against the real broker.

The worker is started after part of the log already exists, so that its replay is tested
(a task cancelled before planning, a planning interrupted after roles.assigned, a poison
record), and then fed live records (a new task, a redelivered task.submitted).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner

from events import (
    Actor,
    Codec,
    Event,
    EventDecodeError,
    EventProducer,
    Record,
    TaskCancelled,
    TaskSubmitted,
    create_consumer,
)
from processors.super.agent import PlanTask, SuperAgent
from wrenchai.settings import Settings

USER = Actor(kind="user", id="ada")
REPORT = "Research how WrenchAI recovers from errors and write a short report"
PLAN_WAIT_S = 45.0


def submitted(description: str = REPORT, **fields: Any) -> Event:
    return Event.new(
        TaskSubmitted(description=description, **fields),
        tenant_id="acme",
        actor=USER,
        task_id=uuid.uuid4(),
    )


class Log:
    """Reads the test's wrench.events (or wrench.dlq) from the start, decoded."""

    def __init__(self, settings: Settings, codec: Codec) -> None:
        self.settings, self.codec = settings, codec

    async def records(self, topic: str = "events") -> list[tuple[int, Any]]:
        consumer = create_consumer(self.settings, self.settings.topic(topic))
        await consumer.start()
        try:
            found: list[tuple[int, Any]] = []
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                if not batch:
                    return found
                for messages in batch.values():
                    found += [(m.partition, m) for m in messages]
        finally:
            await consumer.stop()

    async def events(self, task_id: uuid.UUID | None = None) -> list[Event]:
        decoded = []
        for _, message in await self.records():
            try:
                event = self.codec.decode(message.value, tuple(message.headers))
            except EventDecodeError:
                continue  # the poison record of the DLQ test
            if task_id is None or event.task_id == task_id:
                decoded.append(event)
        return decoded

    async def wait_for(
        self, task_id: uuid.UUID, kind: str, timeout_s: float = PLAN_WAIT_S
    ) -> list[Event]:
        """The task's events once one of type ``kind`` is among them."""
        deadline = time.monotonic() + timeout_s
        while True:
            events = await self.events(task_id)
            if any(e.type == kind for e in events):
                return events
            assert time.monotonic() < deadline, (
                f"no {kind} for {task_id} in {timeout_s}s: {[e.type for e in events]}"
            )
            await asyncio.sleep(0.3)


class WorkerProcess:
    """`wrenchai worker <name>` with the test's settings; output in a file."""

    def __init__(self, settings: Settings, output: Path, name: str = "super-agent") -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WRENCH_")}
        env.update(settings.to_env())
        # Tool modules of the tests (WRENCH_TOOL_MODULES) import from the repository.
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[3])
        self.output = output
        with open(output, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "wrenchai", "worker", name],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def stop(self, sig: int = signal.SIGTERM) -> float:
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)
        return time.monotonic() - started


@pytest.fixture
def log(settings: Settings, codec: Codec) -> Log:
    return Log(settings, codec)


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[Any]:
    """Starts the worker on demand; it is stopped after the test."""
    started: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        process = WorkerProcess(settings, tmp_path / f"worker-{len(started)}.out")
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop(signal.SIGKILL)


def same_partition(task_id: uuid.UUID, partitions: int) -> uuid.UUID:
    """Another task id whose records land on the same partition as ``task_id``'s."""
    partitioner = DefaultPartitioner()
    everything = list(range(partitions))
    target = partitioner(str(task_id).encode(), everything, everything)
    while True:
        other = uuid.uuid4()
        if partitioner(str(other).encode(), everything, everything) == target:
            return other


@pytest.fixture
async def interrupted(producer: EventProducer) -> AsyncIterator[list[Event]]:
    """A task whose planning stopped after roles.assigned: its submission, the thoughts and
    the roles, as the SuperAgent had published them."""
    task = submitted()
    emitted: list[Event] = []

    async def emit(event: Event) -> None:
        emitted.append(event)

    await SuperAgent.offline().run(PlanTask(task), emit)
    upto = next(i for i, e in enumerate(emitted) if e.type == "roles.assigned")
    logged = [task, *emitted[: upto + 1]]
    await producer.publish_many(logged)
    yield logged


async def test_a_submitted_task_is_planned_once_even_when_delivered_twice(
    settings: Settings, producer: EventProducer, log: Log, worker: Any
) -> None:
    """task.submitted leads to roles.assigned, tools.allocated and plan.created; the same
    record delivered again (a redelivery) yields no second plan and no repeated thoughts."""
    worker()
    task = submitted()
    await producer.publish(task)
    events = await log.wait_for(task.task_id, "plan.created")  # type: ignore[arg-type]
    kinds = [e.type for e in events]
    assert kinds[0] == "task.submitted"
    assert kinds[-3:] == ["roles.assigned", "tools.allocated", "plan.created"]
    assert all(e.causation_id == task.id for e in events[1:])
    assert all(e.actor == Actor(kind="agent", id="super-agent") for e in events[1:])

    await producer.publish(task)
    # A later task on the same partition is planned only after the redelivery was handled.
    marker = submitted().model_copy(
        update={"task_id": same_partition(task.task_id, settings.partitions)}  # type: ignore[arg-type]
    )
    await producer.publish(marker)
    await log.wait_for(marker.task_id, "plan.created")  # type: ignore[arg-type]
    again = await log.events(task.task_id)
    assert [e.type for e in again] == [*kinds, "task.submitted"]


async def test_history_is_replayed_before_anything_is_decided(
    settings: Settings,
    producer: EventProducer,
    log: Log,
    worker: Any,
    interrupted: list[Event],
) -> None:
    """Started on an existing log, the worker gives no plan to a task cancelled before
    planning, and finishes an interrupted planning from the roles the log holds, without
    assigning roles again."""
    cancelled = submitted("Write a short report on the incident")
    cancel = Event.new(
        TaskCancelled(reason="changed my mind"),
        tenant_id="acme",
        actor=USER,
        task_id=cancelled.task_id,
    )
    await producer.publish_many([cancelled, cancel])
    task_id = interrupted[0].task_id
    assert task_id is not None

    worker()
    resumed = await log.wait_for(task_id, "plan.created")
    later = [e.type for e in resumed[len(interrupted) :]]
    assert later == ["tools.allocated", "plan.created"] or (
        # The plan step's thoughts come first; the roles are never assigned again.
        later[-2:] == ["tools.allocated", "plan.created"]
        and set(later[:-2]) == {"thought.recorded"}
    )
    assert [e.type for e in resumed].count("roles.assigned") == 1

    fresh = submitted()
    await producer.publish(fresh)
    await log.wait_for(fresh.task_id, "plan.created")  # type: ignore[arg-type]
    assert [e.type for e in await log.events(cancelled.task_id)] == [
        "task.submitted",
        "task.cancelled",
    ]


async def test_a_task_that_cannot_be_planned_fails_with_the_reason_and_the_worker_goes_on(
    producer: EventProducer, log: Log, worker: Any
) -> None:
    """An inline playbook with an unknown tool ends its task with task.failed UNKNOWN_TOOL;
    an inline playbook from a submitter without playbooks:inline ends with
    FORBIDDEN_PLAYBOOK; the next task is planned as usual (a bad task is never a crash
    loop)."""
    own = {
        "playbook": {
            "name": "mine",
            "steps": [{"id": "a", "tool": "web.crawl", "input": {"url": "x"}}],
        }
    }
    bad = submitted(constraints=own, grants=["playbooks:inline"])
    forbidden = submitted(constraints=own, grants=[])
    good = submitted()
    worker()
    await producer.publish_many([bad, forbidden, good])
    failed = await log.wait_for(bad.task_id, "task.failed")  # type: ignore[arg-type]
    assert failed[-1].payload.reason == "UNKNOWN_TOOL"  # type: ignore[attr-defined]
    assert "web.crawl" in failed[-1].payload.message  # type: ignore[attr-defined]
    assert "plan.created" not in [e.type for e in failed]
    refused = await log.wait_for(forbidden.task_id, "task.failed")  # type: ignore[arg-type]
    assert [e.type for e in refused] == ["task.submitted", "task.failed"]
    assert refused[-1].payload.reason == "FORBIDDEN_PLAYBOOK"  # type: ignore[attr-defined]
    await log.wait_for(good.task_id, "plan.created")  # type: ignore[arg-type]


async def test_a_poison_record_goes_to_the_dlq_and_the_worker_goes_on(
    settings: Settings, producer: EventProducer, log: Log, worker: Any
) -> None:
    """A record typed task.submitted that does not decode is copied to wrench.dlq with the
    reason and the worker's group in its headers; later tasks are still planned."""
    poison = Record(key=b"not-a-task", value=b"{not json", headers=(("type", b"task.submitted"),))
    await producer.send_records(settings.topic("events"), [poison])
    worker()
    task = submitted()
    await producer.publish(task)
    await log.wait_for(task.task_id, "plan.created")  # type: ignore[arg-type]
    dead = [m for _, m in await log.records("dlq")]
    mine = [
        m
        for m in dead
        if dict(m.headers).get("dlq.consumer") == settings.group("super-agent").encode()
    ]
    assert len(mine) == 1
    assert mine[0].value == b"{not json"
    assert dict(mine[0].headers)["dlq.reason"]


async def test_a_killed_worker_resumes_and_a_stopped_one_exits_promptly(
    settings: Settings, producer: EventProducer, log: Log, worker: Any
) -> None:
    """SIGKILL loses nothing: the next worker replays the log, plans what was left and
    never plans a task twice. SIGTERM stops the worker within a few seconds, exit 0."""
    first = worker()
    planned = submitted()
    await producer.publish(planned)
    await log.wait_for(planned.task_id, "plan.created")  # type: ignore[arg-type]
    first.stop(signal.SIGKILL)

    waiting = submitted()
    await producer.publish(waiting)
    second = worker()
    await log.wait_for(waiting.task_id, "plan.created")  # type: ignore[arg-type]
    kinds = [e.type for e in await log.events(planned.task_id)]
    assert kinds.count("plan.created") == 1 and kinds.count("roles.assigned") == 1

    took = second.stop(signal.SIGTERM)
    assert second.proc.returncode == 0, second.output.read_text()
    assert took < 8, f"the worker took {took:.1f}s to stop"
