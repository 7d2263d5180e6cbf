"""The JourneyAgent as it runs: `wrenchai worker super-agent` and `wrenchai worker
journey-agent` against the real broker, with the offline reasoner and, for failure
injection, the tools of tests/processors/journey_tools.py."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from events import (
    Actor,
    Codec,
    Event,
    EventProducer,
    FernetCipher,
    TaskCancelled,
    TaskSubmitted,
    bootstrap_topics,
    generate_key,
)
from processors.reasoning import PlanProposal, RoleProposal, RoleScore, Thought
from projections import run_projector
from tests.processors.openai_server import OpenAIServer
from tests.processors.super.test_super_agent_worker import Log, WorkerProcess
from wrenchai.embedded import EmbeddedBroker
from wrenchai.settings import Settings

USER = Actor(kind="user", id="ada")
DONE_WAIT_S = 60.0


OPERATOR = ["playbooks:inline"]
"""Inline playbooks, no code: what the tasks of the test tools need."""
ADMIN = ["playbooks:inline", "tools:code"]
"""Inline playbooks and code.python."""


def submitted(
    description: str,
    steps: list[dict[str, Any]] | None = None,
    grants: list[str] = OPERATOR,
    **fields: Any,
) -> Event:
    constraints = {"playbook": {"name": "test", "steps": steps}} if steps else None
    return Event.new(
        TaskSubmitted(description=description, constraints=constraints, grants=grants, **fields),
        tenant_id="acme",
        actor=USER,
        task_id=uuid.uuid4(),
    )


def step(sid: str, tool: str, tool_input: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"id": sid, "tool": tool, "role": "coder", "input": tool_input, **fields}


def stack_settings(broker: EmbeddedBroker, **overrides: Any) -> Settings:
    return Settings(
        kafka_bootstrap=broker.bootstrap,
        namespace=f"j{uuid.uuid4().hex[:10]}.",
        partitions=3,
        kafka_session_timeout_ms=6_000,
        kafka_rebalance_timeout_ms=6_000,
        kafka_fetch_max_wait_ms=20,
        encryption_keys=generate_key(),  # type: ignore[arg-type]
        log_format="console",
        tool_modules="tests.processors.journey_tools",
        **{"require_acceptance": False, **overrides},
    )


class Agents:
    """Both agent workers on one namespace, their output in files."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.settings, self.logs = settings, logs
        self.started: list[WorkerProcess] = []

    def start(self, name: str) -> WorkerProcess:
        process = WorkerProcess(
            self.settings, self.logs / f"{name}-{len(self.started)}.out", name=name
        )
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            process.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def shared(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agents]:
    """Both workers, started once for the tests that need no fresh log."""
    settings = stack_settings(broker)
    asyncio.run(bootstrap_topics(settings))
    agents = Agents(settings, tmp_path_factory.mktemp("journey"))
    agents.start("super-agent")
    agents.start("journey-agent")
    yield agents
    agents.stop_all()


@pytest.fixture
async def tools(shared: Agents) -> AsyncIterator[tuple[EventProducer, Log]]:
    codec = Codec(FernetCipher(shared.settings.fernet_keys()))
    producer = EventProducer(shared.settings, codec)
    await producer.start()
    yield producer, Log(shared.settings, codec)
    await producer.stop()


async def finished(log: Log, task_id: uuid.UUID | None) -> list[Event]:
    """The task's events once it completed or failed."""
    assert task_id is not None
    deadline = time.monotonic() + DONE_WAIT_S
    while True:
        events = await log.events(task_id)
        if any(e.type in ("task.completed", "task.failed") for e in events):
            return events
        assert time.monotonic() < deadline, f"unfinished: {[e.type for e in events]}"
        await asyncio.sleep(0.3)


def of(events: list[Event], kind: str) -> list[Any]:
    return [e.payload for e in events if e.type == kind]


async def test_a_multi_stage_task_completes_offline(tools: tuple[EventProducer, Log]) -> None:
    """web.search over the docs, then code.python supplied by the playbook, then a report:
    every stage runs once in dependency order and the task completes with the report."""
    producer, log = tools
    task = submitted(
        "Find how WrenchAI retries failed stages and count the words of the answer",
        [
            step("search", "web.search", {"query": "recovery retry backoff", "limit": 3}),
            step(
                "count",
                "code.python",
                {
                    "code": "import sys; print(len(sys.stdin.read().split()))",
                    "stdin": "{{steps.search.output.results}}",
                },
                depends_on=["search"],
            ),
            {
                "id": "report",
                "tool": "report.compile",
                "role": "writer",
                "depends_on": ["search", "count"],
                "input": {
                    "title": "Retries",
                    "sections": [
                        {
                            "heading": "Found",
                            "body": "{{steps.search.output.results}}",
                            "sources": "{{steps.search.output.results}}",
                        },
                        {"heading": "Words", "body": "{{steps.count.output.stdout}}"},
                    ],
                },
            },
        ],
        grants=ADMIN,
    )
    await producer.publish(task)
    events = await finished(log, task.task_id)
    assert of(events, "task.failed") == []
    assert [p.stage_id for p in of(events, "step.completed")] == ["search", "count", "report"]
    count = of(events, "step.completed")[1].output
    assert count["exit_code"] == 0 and int(count["stdout"]) > 10
    output = of(events, "task.completed")[0].output
    assert output["final_stage"] == "report"
    assert output["final"]["markdown"].startswith("# Retries")
    assert any(s.startswith("file://") for s in output["final"]["sources"])
    assert [p.stages_done for p in of(events, "progress.updated")] == [1, 2, 3]


async def test_code_task_without_tools_code_fails_with_the_reason_before_any_step(
    tools: tuple[EventProducer, Log],
) -> None:
    """An operator's task naming the shipped code_task: task.failed FORBIDDEN_TOOL with
    the scope, and neither a plan nor a step.started; with tools:code it completes."""
    producer, log = tools
    refused, allowed = (
        Event.new(
            TaskSubmitted(
                description="print the platform",
                constraints={"playbook": "code_task"},
                grants=grants,
            ),
            tenant_id="acme",
            actor=USER,
            task_id=uuid.uuid4(),
        )
        for grants in (OPERATOR, ADMIN)
    )
    await producer.publish_many([refused, allowed])

    events = await finished(log, refused.task_id)
    failed = of(events, "task.failed")[0]
    assert failed.reason == "FORBIDDEN_TOOL" and failed.errors[0].details["scope"] == "tools:code"
    assert not {"plan.created", "step.started"} & {e.type for e in events}
    events = await finished(log, allowed.task_id)
    assert of(events, "task.completed")
    assert "Python" in of(events, "step.completed")[0].output["stdout"]


async def test_a_flaky_tool_is_retried_and_the_task_completes(
    tools: tuple[EventProducer, Log],
) -> None:
    """test.flaky fails twice: each failure is a step.failed, a recovery.planned (retry,
    with a backoff) and a recovery.executed; the third attempt completes the task."""
    producer, log = tools
    task = submitted("flaky", [step("echo", "test.flaky", {"text": "hello"})])
    await producer.publish(task)
    events = await finished(log, task.task_id)
    assert of(events, "task.failed") == []
    assert [p.attempt for p in of(events, "step.failed")] == [1, 2]
    planned = of(events, "recovery.planned")
    assert [(p.attempt, p.action, p.category) for p in planned] == [
        (1, "retry", "transient"),
        (2, "retry", "transient"),
    ]
    assert all(p.delay_s > 0 for p in planned)
    assert [p.next_attempt for p in of(events, "recovery.executed")] == [2, 3]
    assert of(events, "step.completed")[0].output == {"text": "HELLO", "calls": 3}
    assert of(events, "task.completed")


async def test_a_failing_tool_falls_back_to_its_alternate(
    tools: tuple[EventProducer, Log],
) -> None:
    """test.broken always fails; recovery switches to test.backup (the planned alternate)."""
    producer, log = tools
    task = submitted("fallback", [step("echo", "test.broken", {"text": "hi"})])
    await producer.publish(task)
    events = await finished(log, task.task_id)
    actions = [p.action for p in of(events, "recovery.planned")]
    assert actions[-1] == "alternate_tool" and set(actions[:-1]) <= {"retry"}
    last = of(events, "step.started")[-1]
    assert last.tool == "test.backup"
    assert of(events, "step.completed")[0].output == {"text": "backup: hi"}
    assert of(events, "task.completed")


async def test_a_failing_tool_without_fallback_fails_the_task_with_the_chain(
    tools: tuple[EventProducer, Log],
) -> None:
    """test.lonely always fails and has no alternate: recovery escalates and the task fails
    with STAGE_FAILED and one error per attempt; an optional failing stage is skipped."""
    producer, log = tools
    optional = submitted(
        "optional",
        [
            step("maybe", "test.lonely", {"text": "x"}, optional=True),
            step("then", "test.backup", {"text": "y"}),
        ],
    )
    required = submitted("required", [step("must", "test.lonely", {"text": "x"})])
    await producer.publish_many([optional, required])

    events = await finished(log, required.task_id)
    assert of(events, "recovery.planned")[-1].action == "escalate"
    assert of(events, "recovery.executed")[-1].action == "escalate"
    failed = of(events, "task.failed")[0]
    assert failed.reason == "STAGE_FAILED" and "must" in failed.message
    assert len(failed.errors) == len(of(events, "step.failed")) >= 1
    # test.lonely fails for every task of this module, so its circuit may open meanwhile.
    assert failed.errors[0].code == "TOOL_FAILED"
    assert {e.code for e in failed.errors} <= {"TOOL_FAILED", "CIRCUIT_OPEN"}

    events = await finished(log, optional.task_id)
    assert [p.action for p in of(events, "recovery.executed")][-1] == "skip"
    assert of(events, "task.completed")[0].output["skipped"] == ["maybe"]


async def test_cancelling_stops_running_steps_and_starts_none(
    tools: tuple[EventProducer, Log],
) -> None:
    """task.cancelled while a 30 s step runs: the step never completes, the next stage never
    starts, and nothing but the cancellation ends the task."""
    producer, log = tools
    task = submitted(
        "long",
        [
            step("wait", "test.sleep", {"seconds": 30}),
            step("after", "test.backup", {"text": "z"}, depends_on=["wait"]),
        ],
    )
    await producer.publish(task)
    assert task.task_id is not None
    await log.wait_for(task.task_id, "step.started", timeout_s=DONE_WAIT_S)
    cancel = Event.new(
        TaskCancelled(reason="enough"), tenant_id="acme", actor=USER, task_id=task.task_id
    )
    await producer.publish(cancel)
    await asyncio.sleep(4)
    kinds = [e.type for e in await log.events(task.task_id)]
    assert kinds[-1] == "task.cancelled"
    assert "step.completed" not in kinds and kinds.count("step.started") == 1


async def test_a_task_that_outlives_its_timeout_fails_with_timeout(
    tools: tuple[EventProducer, Log],
) -> None:
    """A 3 s timeout and a 30 s step: task.failed TIMEOUT arrives within a few seconds of
    the deadline, found by the worker's timer (no event comes meanwhile)."""
    producer, log = tools
    task = submitted("slow", [step("wait", "test.sleep", {"seconds": 30})], timeout=3)
    await producer.publish(task)
    events = await finished(log, task.task_id)
    failed = of(events, "task.failed")[0]
    assert failed.reason == "TIMEOUT"
    # The step is running unless the workers were still joining when the deadline passed.
    assert failed.errors[0].details["running"] in (["wait"], [])
    assert "step.completed" not in [e.type for e in events]
    late = (events[-1].occurred_at - task.occurred_at).total_seconds()
    assert 3 <= late < 15


@pytest.fixture
def agents(settings: Settings, tmp_path: Path) -> Iterator[Agents]:
    own = settings.model_copy(
        update={"tool_modules": "tests.processors.journey_tools", "require_acceptance": False}
    )
    started = Agents(own, tmp_path)
    yield started
    started.stop_all()


async def test_a_killed_worker_resumes_the_task_without_repeating_completed_steps(
    agents: Agents, codec: Codec, db: asyncpg.Connection, topics: dict[str, int]
) -> None:
    """kill -9 the JourneyAgent while the second of three steps (6 s) runs: a new worker
    replays the log, runs the interrupted step again with the same idempotency key, never
    runs the completed one again, and completes the task; the read models hold each event
    id once."""
    settings = agents.settings
    stop = asyncio.Event()
    projector = asyncio.create_task(run_projector(settings, stop=stop))
    producer = EventProducer(settings, codec)
    log = Log(settings, codec)
    try:
        agents.start("super-agent")
        first = agents.start("journey-agent")
        task = submitted(
            "three naps",
            [
                step("one", "test.sleep", {"seconds": 1}),
                step("two", "test.sleep", {"seconds": 6}, depends_on=["one"]),
                step("three", "test.sleep", {"seconds": 1}, depends_on=["two"]),
            ],
        )
        await producer.publish(task)
        assert task.task_id is not None
        deadline = time.monotonic() + DONE_WAIT_S
        while not any(
            e.type == "step.started" and e.payload.stage_id == "two"  # type: ignore[attr-defined]
            for e in await log.events(task.task_id)
        ):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        first.stop(signal.SIGKILL)
        agents.start("journey-agent")
        events = await finished(log, task.task_id)
        started = [(p.stage_id, p.idempotency_key) for p in of(events, "step.started")]
        assert [sid for sid, _ in started] == ["one", "two", "two", "three"]
        assert started[1][1] == started[2][1]
        assert [p.stage_id for p in of(events, "step.completed")] == ["one", "two", "three"]
        assert of(events, "task.completed")

        archived = time.monotonic() + 30
        while not await db.fetchval("SELECT count(*) FROM event_log WHERE type = 'task.completed'"):
            assert time.monotonic() < archived
            await asyncio.sleep(0.2)
        # The re-run's step.started repeated an id: archived as a duplicate, applied once.
        applied = await db.fetch(
            "SELECT payload->>'stage_id' AS stage FROM event_log WHERE status = 'applied' "
            "AND type = 'step.started' AND task_id = $1 ORDER BY \"offset\"",
            task.task_id,
        )
        assert [row["stage"] for row in applied] == ["one", "two", "three"]
        assert await db.fetchval("SELECT count(*) FROM event_log WHERE status = 'duplicate'") >= 1
    finally:
        await producer.stop()
        stop.set()
        await asyncio.wait_for(projector, 60)


async def test_with_an_llm_server_the_model_plans_and_a_stage_calls_it(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """Both workers reason with a local OpenAI-compatible server: the model assigns the
    roles and writes an inline playbook whose stage calls llm.complete on the same server;
    every request is a usage.recorded and the task completes with the model's text."""
    async with OpenAIServer() as server:
        thought = Thought(number=1, text="A writer can do it.", next_thought_needed=False)
        server.answer(thought, prompt_tokens=11, completion_tokens=1)
        roles = RoleProposal(roles=[RoleScore(role="writer", score=0.9, reason="a report")])
        server.answer(roles, prompt_tokens=12)
        server.answer(thought, prompt_tokens=21, completion_tokens=1)
        draft = {
            "name": "draft_only",
            "steps": [
                {"id": "draft", "tool": "llm.complete", "role": "writer",
                 "input": {"prompt": "Two sentences on: {{task.description}}",
                           "max_tokens": 100}},
            ],
        }  # fmt: skip
        server.answer(PlanProposal.model_validate({"inline": draft, "reason": "draft"}))
        server.answer(
            "WrenchAI retries transient failures.", prompt_tokens=40, completion_tokens=12
        )

        settings = stack_settings(
            broker,
            llm_base_url=server.base_url,
            llm_model="model-a",
            llm_max_retries=0,
            llm_max_thoughts=1,
            llm_timeout_s=10.0,
        )
        await bootstrap_topics(settings)
        agents = Agents(settings, tmp_path)
        codec = Codec(FernetCipher(settings.fernet_keys()))
        producer = EventProducer(settings, codec)
        try:
            agents.start("super-agent")
            agents.start("journey-agent")
            task = submitted("Explain how WrenchAI recovers from errors")
            await producer.publish(task)
            events = await finished(Log(settings, codec), task.task_id)
        finally:
            await producer.stop()
            agents.stop_all()

    assert of(events, "task.failed") == []
    plan = of(events, "plan.created")[0]
    assert [(s.id, s.tools[0], s.model) for s in plan.stages] == [
        ("draft", "llm.complete", "model-a")
    ]
    usage = [(u.operation, u.stage_id) for u in of(events, "usage.recorded")]
    assert usage == [
        ("assign_roles", None),
        ("assign_roles", None),
        ("plan", None),
        ("plan", None),
        ("execute", "draft"),
    ]
    output = of(events, "task.completed")[0].output
    assert output["final"]["text"] == "WrenchAI retries transient failures."
    assert len(server.requests) == 5
