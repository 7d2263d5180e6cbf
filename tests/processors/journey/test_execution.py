"""The JourneyAgent's pure core and its recovery: plans run stage by stage in memory.

The SuperAgent and the JourneyAgent run together on the in-memory driver (no Kafka): a
submitted task is planned, its stages run with the built-in tools and a few test tools (one
flaky, one broken, its backup, one that never returns), failures are recovered from the
plan's fallbacks, and the task completes, fails or times out. The clock stands still unless
a test moves it, and backoffs pass at once. The LLM flow talks to a local OpenAI-compatible
server with scripted answers.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import timedelta
from typing import Any, ClassVar, TypeVar

import pytest

from events import (
    Actor,
    Event,
    EventPayload,
    PlanCreated,
    PlanStage,
    ProgressUpdated,
    RecoveryExecuted,
    RecoveryPlanned,
    StageFallback,
    StepCompleted,
    StepError,
    StepFailed,
    StepStarted,
    TaskCompleted,
    TaskFailed,
    TaskSubmitted,
    ToolCalled,
    ToolReturned,
    UsageRecorded,
    derive_id,
)
from processors.journey.agent import JourneyAgent
from processors.journey.execution import (
    Journey,
    Refuse,
    RunStage,
    StageRun,
    TimeOut,
    decide,
    evolve,
)
from processors.journey.recovery import classify, handle_error
from processors.reasoning import (
    ErrorAnalysis,
    LLMClient,
    LLMReasoner,
    PlanProposal,
    RoleProposal,
    RoleScore,
    RuleReasoner,
    Thought,
)
from processors.shared.playbook import (
    Playbook,
    PlaybookError,
    PlaybookStep,
    fit_to_schema,
    resolve_outputs,
)
from processors.shared.tool_usage import CircuitBreaker, ToolStats, optimize_tool_usage
from processors.super.agent import SuperAgent
from processors.tools import ToolCost, ToolSpec, builtin_registry
from processors.tools.builtin import (
    BuiltinTool,
    Tool,
    ToolFailed,
    ToolHealth,
    ToolTimeout,
    build_tools,
)
from processors.tools.descriptors import CODE_PYTHON
from tests.processors.driver import START, Clock, Driver, executor, planner
from tests.processors.openai_server import OpenAIServer
from wrenchai.settings import Settings

P = TypeVar("P", bound=EventPayload)

RESEARCH = "Research how WrenchAI recovers from errors and write a short report"
SETTINGS = Settings(llm_base_url=None)
SEED = 7
AGENT = Actor(kind="agent", id="journey-agent")


# -- test tools ----------------------------------------------------------------------------
def _spec(name: str, capability: str, usd_per_call: float = 0.0) -> ToolSpec:
    text = {"type": "string", "minLength": 1}
    return ToolSpec(
        name=name,
        version="1.0.0",
        capabilities=[capability],
        input_schema={
            "type": "object",
            "properties": {"text": text},
            "required": ["text"],
            "additionalProperties": False,
        },
        output_schema={
            "type": "object",
            "properties": {"echo": text, "tool": text},
            "required": ["echo", "tool"],
        },
        cost=ToolCost(usd_per_call=usd_per_call, seconds=0.1),
    )


class _Recorded(BuiltinTool):
    """A test tool that keeps the idempotency key of every call."""

    spec: ClassVar[ToolSpec]

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[str | None] = []

    async def call(
        self, tool_input: dict[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        self.keys.append(idempotency_key)
        return await super().call(tool_input, idempotency_key=idempotency_key)

    async def _run(self, tool_input: dict[str, Any]) -> dict[str, Any]:
        return {"echo": tool_input["text"], "tool": self.spec.name}

    async def _probe(self) -> tuple[bool, str]:
        return True, "a test tool"


class NeverRun(_Recorded):
    """Stands in for code.python to show whether it was ever called."""

    spec = CODE_PYTHON


class Flaky(_Recorded):
    """Times out on the first two calls of each stage, then answers."""

    spec = _spec("test.flaky", "flaky_work")

    async def _run(self, tool_input: dict[str, Any]) -> dict[str, Any]:
        stage = str(self.keys[-1]).rsplit(":", 1)[0]
        if sum(str(key).startswith(stage + ":") for key in self.keys) <= 2:
            raise ToolTimeout("the backend timed out", tool=self.spec.name)
        return await super()._run(tool_input)


class Broken(_Recorded):
    """Always fails, and not transiently."""

    spec = _spec("test.broken", "fragile_work")

    async def _run(self, tool_input: dict[str, Any]) -> dict[str, Any]:
        raise ToolFailed("the backend refused the request", tool=self.spec.name)


class Backup(_Recorded):
    """Does test.broken's work: same capability, same input schema."""

    spec = _spec("test.backup", "fragile_work")


class Paid(_Recorded):
    """Answers, for a cent a call."""

    spec = _spec("test.paid", "paid_work", usd_per_call=0.01)


class Slow(_Recorded):
    """Never returns; says when it was entered and whether it was cancelled."""

    spec = _spec("test.slow", "slow_work")

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.cancelled = False

    async def _run(self, tool_input: dict[str, Any]) -> dict[str, Any]:
        self.entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        raise AssertionError("unreachable")


class Recording:
    """Any tool, with the idempotency key of every call kept."""

    def __init__(self, tool: Tool) -> None:
        self.tool = tool
        self.keys: list[str | None] = []

    @property
    def spec(self) -> ToolSpec:
        return self.tool.spec

    async def call(
        self, tool_input: dict[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        self.keys.append(idempotency_key)
        return await self.tool.call(tool_input, idempotency_key=idempotency_key)

    async def health(self) -> ToolHealth:
        return await self.tool.health()


# -- helpers -------------------------------------------------------------------------------
def system(*extra: Tool, clock: Clock | None = None) -> tuple[Driver, JourneyAgent]:
    """The offline SuperAgent and a JourneyAgent with the built-in tools and ``extra``
    (registered for planning too), on one driver."""
    clock = clock or Clock()
    registry = builtin_registry()
    for tool in extra:
        registry.register(tool.spec)
    tools = {**build_tools(SETTINGS), **{tool.spec.name: tool for tool in extra}}
    agent = JourneyAgent(RuleReasoner(), registry, tools, clock=clock, rng=random.Random(SEED))
    driver = Driver(
        planner(SuperAgent.offline(registry, clock=clock)), executor(agent), clock=clock
    )
    return driver, agent


def playbook(*steps: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": "own", "steps": list(steps), **fields}


def step(sid: str, tool: str, role: str, text: str = "x", **fields: Any) -> dict[str, Any]:
    return {"id": sid, "tool": tool, "role": role, "input": {"text": text}, **fields}


INLINE = ["playbooks:inline"]
"""An operator's grants: inline playbooks, no code."""
EVERYTHING = ["playbooks:inline", "tools:code"]
"""An admin's grants: inline playbooks and code.python."""


async def run_task(
    driver: Driver, constraints: dict[str, Any] | None = None, grants: Sequence[str] = INLINE
) -> list[Event]:
    """Submit a task with ``grants``, run until nothing is due, and return its whole log."""
    submitted = driver.submit(RESEARCH, constraints, grants=grants)
    await driver.settle()
    return [event for event in driver.log if event.task_id == submitted.task_id]


def fold(events: Iterable[Event], journey: Journey | None = None) -> Journey:
    for event in events:
        journey = evolve(journey, event)
    assert journey is not None
    return journey


def types(events: Iterable[Event]) -> list[str]:
    return [event.type for event in events]


def only(events: Iterable[Event], kind: type[P]) -> list[P]:
    return [event.payload for event in events if isinstance(event.payload, kind)]


def one(events: Sequence[Event], kind: type[P]) -> P:
    found = only(events, kind)
    assert len(found) == 1, f"expected one {kind.event_type}, got {types(events)}"
    return found[0]


def of_stage(events: Iterable[Event], sid: str) -> list[Event]:
    return [event for event in events if getattr(event.payload, "stage_id", None) == sid]


def index(events: Sequence[Event], kind: str, sid: str | None = None, attempt: int = 1) -> int:
    """Where the first ``kind`` event (of stage ``sid`` and ``attempt``) stands in ``events``."""
    for position, event in enumerate(events):
        at = (getattr(event.payload, "stage_id", None), getattr(event.payload, "attempt", None))
        if event.type == kind and (sid is None or at == (sid, attempt)):
            return position
    raise AssertionError(f"no {kind} for {sid}/{attempt} in {types(events)}")


ATTEMPT = ["step.started", "tool.called", "tool.returned", "step.completed"]


# -- 1. the offline research task ------------------------------------------------------------
async def test_the_offline_research_task_runs_its_stages_in_order_and_completes() -> None:
    """search, summarize and report each run one attempt (started, tool called and returned,
    completed) after the stages they depend on; progress.updated follows each settled stage;
    task.completed carries the report's markdown as final, every stage's output and totals."""
    driver, _ = system()
    events = await run_task(driver)
    plan = one(events, PlanCreated)

    assert [stage.id for stage in plan.stages] == ["search", "summarize", "report"]
    for stage in plan.stages:
        steps = [event for event in of_stage(events, stage.id) if event.type in ATTEMPT]
        assert types(steps) == ATTEMPT, stage.id
        for dependency in stage.depends_on:
            assert index(events, "step.completed", dependency) < index(
                events, "step.started", stage.id
            )
    progress = [(p, e) for e in events if isinstance(p := e.payload, ProgressUpdated)]
    assert [p.stages_done for p, _ in progress] == [1, 2, 3]
    for (p, event), stage in zip(progress, plan.stages, strict=True):
        assert index(events, "step.completed", stage.id) < events.index(event)
        assert (p.stages_total, p.stages_failed, p.stages_skipped) == (3, 0, 0)
    assert events[-1].type == "task.completed"
    output = one(events, TaskCompleted).output
    assert output["final_stage"] == "report"
    assert output["final"]["markdown"].startswith(f"# {RESEARCH}")
    assert "## Summary" in output["final"]["markdown"]
    assert set(output["stages"]) == {"search", "summarize", "report"}
    assert output["stages"]["search"]["results"]
    assert output["skipped"] == []
    totals = output["totals"]
    counts = {name: totals[name] for name in ("stages", "completed", "skipped", "attempts")}
    assert counts == {"stages": 3, "completed": 3, "skipped": 0, "attempts": 3}
    assert totals["tokens"] == 0 and totals["cost_usd"] == 0


async def test_execution_event_ids_derive_from_the_plan_and_the_step_name() -> None:
    """Every event of the JourneyAgent is caused by plan.created, acts as the journey-agent
    and has the id derive_id(plan.created id, "<stage>/<attempt>/<step>"), "progress/<n>" or
    "task.completed", so running the same job again emits the same ids."""
    driver, _ = system()
    events = await run_task(driver)
    created = next(event for event in events if event.type == "plan.created")
    names = {
        "step.started": "started",
        "tool.called": "tool.called",
        "tool.returned": "tool.returned",
        "step.completed": "completed",
    }
    executed = events[events.index(created) + 1 :]
    assert executed

    for event in executed:
        payload = event.payload
        if isinstance(payload, ProgressUpdated):
            name = f"progress/{payload.stages_done}"
        elif event.type == "task.completed":
            name = "task.completed"
        else:
            name = f"{payload.stage_id}/{payload.attempt}/{names[event.type]}"  # type: ignore[attr-defined]
        assert event.id == derive_id(created.id, name), name
        assert event.causation_id == created.id and event.actor == AGENT
        assert event.occurred_at == START


# -- 2. a playbook of search and code --------------------------------------------------------
async def test_a_playbook_of_search_and_python_completes_with_what_the_code_printed() -> None:
    """An inline playbook: web.search and code.python (its code a playbook input) run side by
    side, then report.compile quotes both; code.python's stdout is in the task's output."""
    book = playbook(
        {"id": "search", "tool": "web.search", "role": "researcher", "input": {"query": "retry"}},
        {
            "id": "compute",
            "tool": "code.python",
            "role": "coder",
            "input": {"code": "{{inputs.code}}"},
        },
        {
            "id": "report",
            "tool": "report.compile",
            "role": "writer",
            "depends_on": ["search", "compute"],
            "input": {
                "title": "Sums",
                "sections": [
                    {"heading": "Computed", "body": "{{steps.compute.output.stdout}}"},
                    {
                        "body": "{{steps.search.output.results}}",
                        "sources": "{{steps.search.output.results}}",
                    },
                ],
            },
        },
        inputs={"code": "print(sum(range(10)))"},
    )
    driver, _ = system()
    events = await run_task(driver, {"playbook": book}, grants=EVERYTHING)

    assert events[-1].type == "task.completed"
    output = one(events, TaskCompleted).output
    assert output["stages"]["compute"]["stdout"] == "45\n"
    assert output["stages"]["compute"]["exit_code"] == 0
    assert "45" in output["final"]["markdown"]
    assert output["final"]["sources"] == [r["url"] for r in output["stages"]["search"]["results"]]
    started = {p.stage_id: p for p in only(events, StepStarted)}
    assert started["compute"].input == {"code": "print(sum(range(10)))"}
    assert index(events, "step.completed", "compute") < index(events, "step.started", "report")


# -- 2b. what the submitter allowed ----------------------------------------------------------
SEARCH_AND_CODE = playbook(
    {"id": "search", "tool": "web.search", "role": "researcher", "input": {"query": "retry"}},
    {"id": "compute", "tool": "code.python", "role": "coder", "input": {"code": "print(1)"}},
)


async def test_a_task_without_tools_code_naming_code_task_fails_before_any_step_starts() -> None:
    """An operator's task (inline playbooks, no code) that names the shipped code_task:
    task.failed FORBIDDEN_TOOL from the SuperAgent, naming the scope and the step, and no
    plan, no step.started, no tool call."""
    driver, _ = system()
    events = await run_task(driver, {"playbook": "code_task"}, grants=INLINE)

    failed = one(events, TaskFailed)
    assert events[-1].type == "task.failed" and failed.reason == "FORBIDDEN_TOOL"
    assert failed.errors[0].details == {
        "playbook": "code_task",
        "step": "run",
        "tool": "code.python",
        "scope": "tools:code",
    }
    assert "tools:code" in failed.message
    assert not {"plan.created", "step.started", "tool.called"} & set(types(events))


async def test_a_task_the_reasoner_gives_code_task_fails_without_tools_code() -> None:
    """Nobody named a playbook: the reasoner chose code_task for a task about Python code,
    which the API could not foresee; without tools:code it fails all the same."""
    driver, _ = system()
    driver.submit("Write python code to compute statistics of the data", grants=INLINE)
    events = await driver.settle()

    assert one(events, TaskFailed).reason == "FORBIDDEN_TOOL"
    assert "step.started" not in types(events)


async def test_an_inline_playbook_without_playbooks_inline_fails_before_any_reasoning() -> None:
    """A viewer's grants (none): the inline playbook is refused with FORBIDDEN_PLAYBOOK,
    the only event after the submission."""
    driver, _ = system()
    events = await run_task(driver, {"playbook": SEARCH_AND_CODE}, grants=[])

    assert types(events) == ["task.submitted", "task.failed"]
    failed = one(events, TaskFailed)
    assert failed.reason == "FORBIDDEN_PLAYBOOK"
    assert failed.errors[0].details["scope"] == "playbooks:inline"


async def test_an_inline_code_step_without_tools_code_fails_and_with_it_runs() -> None:
    """The same inline playbook: FORBIDDEN_TOOL naming step compute for an operator; an
    admin's task runs both stages and completes."""
    driver, _ = system()
    refused = await run_task(driver, {"playbook": SEARCH_AND_CODE}, grants=INLINE)
    assert types(refused) == ["task.submitted", "task.failed"]
    assert one(refused, TaskFailed).errors[0].details["step"] == "compute"

    allowed = await run_task(driver, {"playbook": SEARCH_AND_CODE}, grants=EVERYTHING)
    assert allowed[-1].type == "task.completed"
    assert one(allowed, TaskCompleted).output["stages"]["compute"]["stdout"] == "1\n"


async def _code_task_plan(grants: Sequence[str]) -> tuple[Event, Event]:
    """A code_task plan made for an admin, and the same task's submission with ``grants``:
    what a log holds if a plan naming code.python ever met a task that may not run it."""
    driver = Driver(planner(SuperAgent.offline(clock=Clock())))
    granted = driver.submit(RESEARCH, {"playbook": "code_task"}, grants=EVERYTHING)
    plan = next(e for e in await driver.settle() if e.type == "plan.created")
    payload = TaskSubmitted(
        description=RESEARCH, constraints={"playbook": "code_task"}, grants=list(grants)
    )
    submitted = granted.model_copy(update={"payload": payload})
    return submitted, plan


async def test_the_journey_agent_refuses_a_plan_naming_code_python_without_the_grant() -> None:
    """Defence in depth: decide gives only Refuse for such a plan, and the JourneyAgent
    fails the task with FORBIDDEN_TOOL naming the tool, the scope and the stage; no stage
    starts and code.python is never called."""
    submitted, plan = await _code_task_plan(grants=[])
    journey = fold([submitted, plan])
    assert decide(journey, START) == [Refuse(journey, {"code.python": ["run"]})]

    watched = NeverRun()
    agent = JourneyAgent(RuleReasoner(), builtin_registry(), {"code.python": watched})
    driver = Driver(executor(agent), history=[submitted, plan])
    events = await driver.settle()

    assert types(events) == ["task.failed"]
    failed = one(events, TaskFailed)
    assert failed.reason == "FORBIDDEN_TOOL"
    assert failed.errors[0].details == {
        "tool": "code.python",
        "scope": "tools:code",
        "stages": ["run"],
    }
    assert "none of its stages ran" in failed.message
    assert watched.keys == []


async def test_with_the_grant_the_same_plan_runs_its_code_stage() -> None:
    """The same plan for a task granted tools:code: the first job is the code stage."""
    submitted, plan = await _code_task_plan(grants=["tools:code"])
    journey = fold([submitted, plan])
    assert [type(job) for job in decide(journey, START)] == [RunStage]


async def test_a_call_that_reaches_code_python_without_the_grant_fails_fatally_uncalled() -> None:
    """The last fence: even a RunStage made by hand fails its step with FORBIDDEN_TOOL,
    fatal and free, without calling the tool; recovery then escalates (the task fails)."""
    submitted, plan = await _code_task_plan(grants=["playbooks:inline"])
    journey = fold([submitted, plan])
    watched = NeverRun()
    agent = JourneyAgent(RuleReasoner(), builtin_registry(), {"code.python": watched})
    emitted: list[Event] = []

    async def emit(event: Event) -> None:
        emitted.append(event)

    await agent.run(RunStage(journey, "run", 1, "code.python", None), emit)

    assert types(emitted) == ["step.started", "tool.called", "tool.returned", "step.failed"]
    error = one(emitted, StepFailed).error
    assert (error.code, error.category, error.transient) == ("FORBIDDEN_TOOL", "fatal", False)
    assert "tools:code" in error.message
    assert one(emitted, ToolReturned).cost_usd == 0.0
    assert watched.keys == []
    failed = fold(emitted, journey).stages["run"]
    assert handle_error(failed, error).action == "escalate"


# -- 3. a flaky tool -------------------------------------------------------------------------
async def test_a_flaky_tool_is_retried_with_growing_backoff_until_it_answers() -> None:
    """Two timeouts: each is step.failed, recovery.planned retry (transient) with a longer
    delay than the last, and recovery.executed starting the next attempt once the delay has
    passed; attempt 3 completes with the same tool, and so does the task."""
    flaky = Flaky()
    driver, _ = system(flaky)
    events = await run_task(driver, {"playbook": playbook(step("flaky", "test.flaky", "coder"))})
    stage = of_stage(events, "flaky")

    failed = only(stage, StepFailed)
    assert [(f.attempt, f.error.code, f.error.category) for f in failed] == [
        (1, "TOOL_TIMEOUT", "transient"),
        (2, "TOOL_TIMEOUT", "transient"),
    ]
    planned = only(stage, RecoveryPlanned)
    assert [(p.attempt, p.action, p.tool) for p in planned] == [
        (1, "retry", "test.flaky"),
        (2, "retry", "test.flaky"),
    ]
    first, second = (p.delay_s for p in planned)
    assert 0.5 <= first <= 1.0 <= second <= 2.0 and first < second
    executed = only(stage, RecoveryExecuted)
    assert [(e.attempt, e.action, e.next_attempt) for e in executed] == [
        (1, "retry", 2),
        (2, "retry", 3),
    ]
    at = {(e.type, getattr(e.payload, "attempt", 0)): e.occurred_at for e in stage}
    for attempt, delay in ((1, first), (2, second)):
        waited = at[("recovery.executed", attempt)] - at[("recovery.planned", attempt)]
        assert waited.total_seconds() == pytest.approx(delay)
        assert index(stage, "recovery.executed", "flaky", attempt) < index(
            stage, "step.started", "flaky", attempt + 1
        )
    completed = one(stage, StepCompleted)
    assert completed.attempt == 3 and completed.output == {"echo": "x", "tool": "test.flaky"}
    task_id = events[0].task_id
    assert flaky.keys == [f"{task_id}:flaky:{n}" for n in (1, 2, 3)]
    assert events[-1].type == "task.completed"
    assert one(events, TaskCompleted).output["totals"]["attempts"] == 3


# -- 4. a tool that always fails -------------------------------------------------------------
async def test_a_failing_tool_is_retried_then_replaced_by_its_alternate() -> None:
    """test.broken fails with a tool_error the analysis calls retryable: two retries, then
    the plan's alternate_tool fallback (test.backup, same capability and input schema) runs
    attempt 4 and completes."""
    driver, _ = system(Broken(), Backup())
    events = await run_task(driver, {"playbook": playbook(step("fragile", "test.broken", "coder"))})
    plan = one(events, PlanCreated)
    stage = of_stage(events, "fragile")

    assert plan.stages[0].tools == ["test.broken", "test.backup"]
    assert [f.kind for f in plan.stages[0].fallbacks] == ["retry", "alternate_tool", "escalate"]
    failed = only(stage, StepFailed)
    assert [(f.attempt, f.error.code, f.error.category) for f in failed] == [
        (n, "TOOL_FAILED", "tool_error") for n in (1, 2, 3)
    ]
    planned = only(stage, RecoveryPlanned)
    assert [(p.action, p.tool) for p in planned] == [
        ("retry", "test.broken"),
        ("retry", "test.broken"),
        ("alternate_tool", "test.backup"),
    ]
    assert [(s.attempt, s.tool) for s in only(stage, StepStarted)] == [
        (1, "test.broken"),
        (2, "test.broken"),
        (3, "test.broken"),
        (4, "test.backup"),
    ]
    assert one(stage, StepCompleted).output == {"echo": "x", "tool": "test.backup"}
    assert events[-1].type == "task.completed"


async def test_a_failing_tool_without_a_fallback_fails_the_task_with_its_chain_of_errors() -> None:
    """No alternate: after the retries recovery escalates; recovery.executed escalate, then
    task.failed STAGE_FAILED with one error per attempt, and nothing after it."""
    driver, _ = system(Broken())
    events = await run_task(driver, {"playbook": playbook(step("fragile", "test.broken", "coder"))})

    planned = only(events, RecoveryPlanned)
    assert [p.action for p in planned] == ["retry", "retry", "escalate"]
    assert types(events)[-2:] == ["recovery.executed", "task.failed"]
    last = only(events, RecoveryExecuted)[-1]
    assert (last.attempt, last.action, last.next_attempt) == (3, "escalate", None)
    failed = one(events, TaskFailed)
    assert failed.reason == "STAGE_FAILED" and "fragile" in failed.message
    assert [(e.code, e.details) for e in failed.errors] == [
        ("TOOL_FAILED", {"stage_id": "fragile", "attempt": n, "category": "tool_error"})
        for n in (1, 2, 3)
    ]
    assert "task.completed" not in types(events)


async def test_an_optional_failing_stage_is_skipped_and_the_task_completes_without_it() -> None:
    """An optional stage that runs out of retries is skipped (recovery.planned and executed
    skip); the other stage's output is final and output.skipped names the skipped one."""
    book = playbook(
        {"id": "search", "tool": "web.search", "role": "researcher", "input": {"query": "retry"}},
        step("extra", "test.broken", "coder", optional=True),
    )
    driver, _ = system(Broken())
    events = await run_task(driver, {"playbook": book})

    extra = of_stage(events, "extra")
    assert [p.action for p in only(extra, RecoveryPlanned)] == ["retry", "retry", "skip"]
    assert (
        only(extra, RecoveryExecuted)[-1].action,
        only(extra, RecoveryExecuted)[-1].attempt,
    ) == (
        "skip",
        3,
    )
    assert events[-1].type == "task.completed"
    output = one(events, TaskCompleted).output
    assert output["skipped"] == ["extra"] and output["final_stage"] == "search"
    assert set(output["stages"]) == {"search"}
    assert output["totals"]["skipped"] == 1
    assert only(events, ProgressUpdated)[-1].stages_skipped == 1


async def test_a_reference_to_a_missing_field_fails_the_stage_without_a_retry() -> None:
    """{{steps.search.output.answers}} names nothing in web.search's output: the stage fails
    BAD_REFERENCE (fatal) before any tool call, and recovery escalates at once although the
    stage has retries."""
    book = playbook(
        {"id": "search", "tool": "web.search", "role": "researcher", "input": {"query": "retry"}},
        {
            "id": "digest",
            "tool": "text.summarize",
            "role": "analyst",
            "depends_on": ["search"],
            "input": {"text": "{{steps.search.output.answers}}"},
        },
    )
    driver, _ = system()
    events = await run_task(driver, {"playbook": book})
    digest = of_stage(events, "digest")

    assert one(events, PlanCreated).stages[1].fallbacks[0].kind == "retry"
    assert types(digest)[:2] == ["step.started", "step.failed"]
    failed = one(digest, StepFailed)
    assert (failed.error.code, failed.error.category) == ("BAD_REFERENCE", "fatal")
    assert "answers" in failed.error.message
    assert [p.action for p in only(digest, RecoveryPlanned)] == ["escalate"]
    assert one(events, TaskFailed).errors[0].code == "BAD_REFERENCE"


async def test_an_escalation_stops_the_other_running_stages() -> None:
    """Two stages side by side: test.broken escalates while test.slow is still running;
    decide then lists Escalate alone, so the slow step is cancelled and the task fails."""
    slow = Slow()
    book = playbook(step("fragile", "test.broken", "coder"), step("wait", "test.slow", "coder"))
    driver, _ = system(Broken(), slow)
    events = await asyncio.wait_for(run_task(driver, {"playbook": book}), 10)

    assert slow.cancelled
    assert one(events, TaskFailed).reason == "STAGE_FAILED"
    assert types(of_stage(events, "wait")) == ["step.started", "tool.called"]
    assert events[-1].type == "task.failed"


def test_at_most_max_parallel_stages_run_at_once() -> None:
    """Six independent stages: decide starts four; while they run it lists the same four
    (resumed) and no fifth; once one completes, the fifth starts."""
    stages = [
        PlanStage(id=f"s{n}", role="coder", tools=["test.paid"], tool_version="1.0.0", timeout=30)
        for n in range(6)
    ]
    submitted = Event.new(TaskSubmitted(description="six"), tenant_id="acme", actor=AGENT)
    plan = submitted.derive(PlanCreated(stages=stages), step="plan.created", actor=AGENT)
    journey = fold([submitted, plan])

    def running(journey: Journey) -> list[tuple[str, bool]]:
        return [(j.stage_id, j.resumed) for j in decide(journey, START) if isinstance(j, RunStage)]

    assert running(journey) == [(f"s{n}", False) for n in range(4)]
    for n in range(4):
        start = StepStarted(
            stage_id=f"s{n}",
            attempt=1,
            tool="test.paid",
            tool_version="1.0.0",
            input={},
            idempotency_key=f"k{n}",
        )
        journey = evolve(journey, submitted.derive(start, step=f"s{n}", actor=AGENT))
    assert running(journey) == [(f"s{n}", True) for n in range(4)]
    done = StepCompleted(stage_id="s0", attempt=1, output={}, duration_s=0)
    journey = evolve(journey, submitted.derive(done, step="done", actor=AGENT))
    assert running(journey) == [("s1", True), ("s2", True), ("s3", True), ("s4", False)]


# -- 5. timeout and cancellation -------------------------------------------------------------
async def test_past_the_timeout_only_timeout_is_decided_and_the_task_fails() -> None:
    """While a stage runs the clock passes submitted + timeout: decide lists TimeOut alone,
    the running step is cancelled, and task.failed TIMEOUT names it; then nothing is due."""
    slow = Slow()
    driver, _ = system(slow)
    book = playbook(
        step("wait", "test.slow", "coder"), step("after", "test.slow", "coder", depends_on=["wait"])
    )
    submitted = driver.submit(RESEARCH, {"playbook": book}, grants=INLINE, timeout=60)
    settling = asyncio.create_task(driver.settle())
    await asyncio.wait_for(slow.entered.wait(), 5)
    journey = driver.state(1, submitted.task_id)
    assert isinstance(journey, Journey)
    assert [type(job) for job in decide(journey, START + timedelta(seconds=59))] == [RunStage]
    assert decide(journey, START + timedelta(seconds=60)) == [TimeOut(journey)]

    driver.clock.advance(61)
    await asyncio.wait_for(settling, 5)

    events = [event for event in driver.log if event.task_id == submitted.task_id]
    assert slow.cancelled
    assert events[-1].type == "task.failed"
    failed = one(events, TaskFailed)
    assert failed.reason == "TIMEOUT" and "60 s" in failed.message
    assert failed.errors[0].details == {"running": ["wait"]}
    assert "step.completed" not in types(events) and "step.failed" not in types(events)
    closed = driver.state(1, submitted.task_id)
    assert decide(closed, driver.clock()) == [] and closed.deadline is None


async def test_a_cancelled_task_decides_nothing_and_its_running_step_is_stopped() -> None:
    """task.cancelled while a stage runs: decide returns [], the worker cancels the step, and
    no event follows the cancellation."""
    slow = Slow()
    driver, _ = system(slow)
    book = {"playbook": playbook(step("wait", "test.slow", "coder"))}
    submitted = driver.submit(RESEARCH, book, grants=INLINE)
    settling = asyncio.create_task(driver.settle())
    await asyncio.wait_for(slow.entered.wait(), 5)

    cancelled = driver.cancel(submitted.task_id)
    await asyncio.wait_for(settling, 5)

    assert slow.cancelled
    assert driver.log[-1] == cancelled
    journey = driver.state(1, submitted.task_id)
    assert journey.closed == "task.cancelled"
    assert decide(journey, driver.clock()) == []
    await driver.advance(7200)
    assert driver.log[-1] == cancelled


# -- 6. resuming after a crash ---------------------------------------------------------------
async def test_a_started_stage_runs_again_with_the_same_attempt_and_key_after_a_crash() -> None:
    """The log ends with summarize's step.started (the worker crashed during the call). A new
    worker replays it: decide lists RunStage(summarize, attempt 1, resumed); running it calls
    the tool with the same idempotency key and re-emits the same ids; search, complete in the
    log, never runs again. The task ends exactly as the uninterrupted run did."""
    first, _ = system()
    full = await run_task(first, None)
    cut = index(full, "step.started", "summarize") + 1
    task_id = full[0].task_id

    summarize = Recording(build_tools(SETTINGS)["text.summarize"])
    search = Recording(build_tools(SETTINGS)["web.search"])
    registry = builtin_registry()
    tools = {**build_tools(SETTINGS), "text.summarize": summarize, "web.search": search}
    clock = Clock()
    agent = JourneyAgent(RuleReasoner(), registry, tools, clock=clock, rng=random.Random(SEED))
    second = Driver(
        planner(SuperAgent.offline(registry, clock=clock)),
        executor(agent),
        clock=clock,
        history=full[:cut],
    )
    journey = second.state(1, task_id)
    runs = [job for job in decide(journey, clock()) if isinstance(job, RunStage)]
    assert [(job.stage_id, job.attempt, job.resumed) for job in runs] == [("summarize", 1, True)]

    resumed = await second.settle()
    key = only(full, ToolCalled)[1].idempotency_key
    assert summarize.keys == [key] == [f"{task_id}:summarize:1"]
    assert search.keys == []
    assert "search" not in {getattr(e.payload, "stage_id", None) for e in resumed}
    assert resumed[0] == full[cut - 1]  # the same step.started, id and all
    assert {event.id for event in resumed} == {event.id for event in full[cut - 1 :]}
    assert resumed[-1] == full[-1]


async def test_a_completed_stage_is_never_run_again_even_on_redelivery() -> None:
    """search has completed: its step.started or step.completed delivered again changes
    nothing, and decide lists the next stage, never search again."""
    driver, _ = system()
    full = await run_task(driver)
    journey = fold(full[: index(full, "step.completed", "search") + 1])
    repeats = [full[index(full, kind, "search")] for kind in ("step.started", "step.completed")]

    assert journey.stages["search"].status == "completed"
    assert fold(repeats, journey) == journey
    runs = [job for job in decide(journey, START) if isinstance(job, RunStage)]
    assert [(job.stage_id, job.attempt, job.resumed) for job in runs] == [("summarize", 1, False)]


def test_a_redelivered_tool_returned_or_usage_recorded_is_counted_once() -> None:
    """Delivery is at-least-once: the same tool.returned or usage.recorded (same id) folded
    twice adds its cost and tokens once, so progress and totals do not grow on a repeat."""
    stage = PlanStage(
        id="a", role="writer", tools=["llm.complete"], tool_version="1.0.0", timeout=30
    )
    journey = Journey(stages={"a": StageRun(stage=stage, tool="llm.complete", model="m1")})
    cause = returned("llm.complete", True)
    paid = cause.derive(
        ToolReturned(**{**cause.payload.model_dump(), "cost_usd": 0.25}), step="r", actor=AGENT
    )
    spent = cause.derive(
        UsageRecorded(
            operation="execute",
            model="m1",
            input_tokens=40,
            output_tokens=12,
            total_tokens=52,
            stage_id="a",
        ),
        step="u",
        actor=AGENT,
    )
    once = evolve(evolve(journey, paid), spent)
    twice = evolve(evolve(once, paid), spent)

    assert (once.cost_usd, once.tokens) == (0.25, 52)
    assert (twice.cost_usd, twice.tokens) == (0.25, 52)


# -- 7. the cache of idempotent calls --------------------------------------------------------
async def test_an_identical_call_of_an_idempotent_tool_reuses_the_first_result() -> None:
    """Two stages search with the same input: the second tool.returned is cached (same
    result, no cost) and web.search was called once."""
    search = Recording(build_tools(SETTINGS)["web.search"])
    query = {"query": "circuit breaker", "limit": 2}
    book = playbook(
        {"id": "first", "tool": "web.search", "role": "researcher", "input": query},
        {
            "id": "again",
            "tool": "web.search",
            "role": "researcher",
            "input": query,
            "depends_on": ["first"],
        },
    )
    driver, _ = system(search)
    events = await run_task(driver, {"playbook": book})

    returned = only(events, ToolReturned)
    assert [(r.stage_id, r.cached) for r in returned] == [("first", False), ("again", True)]
    assert returned[0].input_hash == returned[1].input_hash
    assert returned[1].result == returned[0].result and returned[1].cost_usd == 0
    assert len(search.keys) == 1
    assert events[-1].type == "task.completed"


# -- 8. handle_error -------------------------------------------------------------------------
RETRY = StageFallback(
    kind="retry", attempts=3, backoff_s=1.0, backoff_factor=2.0, max_backoff_s=3.0
)
TRANSIENT = StepError(code="TOOL_TIMEOUT", category="transient", transient=True)
TOOL_ERROR = StepError(code="TOOL_FAILED", category="tool_error")


def stage_run(
    *fallbacks: StageFallback,
    tool: str = "llm.complete",
    model: str | None = "m1",
    optional: bool = False,
    retries: int = 0,
    tried: Iterable[tuple[str, str | None]] = (),
) -> StageRun:
    stage = PlanStage(
        id="draft",
        role="writer",
        tools=[tool],
        tool_version="1.0.0",
        model=model,
        timeout=30,
        optional=optional,
        fallbacks=[*fallbacks, StageFallback(kind="escalate")],
    )
    errors = tuple((n, TRANSIENT) for n in range(1, retries + 2))
    return StageRun(
        stage=stage,
        tool=tool,
        model=model,
        status="failed",
        attempt=retries + 1,
        errors=errors,
        tried=frozenset({(tool, model), *tried}),
        retries=retries,
    )


@pytest.mark.parametrize(("retries", "cap"), [(0, 1.0), (1, 2.0), (2, 3.0)])
def test_a_transient_failure_is_retried_with_capped_equal_jitter_backoff(
    retries: int, cap: float
) -> None:
    """Retry n waits between half the capped delay and the capped delay: 1 s, 2 s, then the
    3 s cap instead of 4 s; the same seed gives the same delay."""
    run = stage_run(RETRY, retries=retries)
    delays = [handle_error(run, TRANSIENT, rng=random.Random(seed)).delay_s for seed in range(50)]
    planned = handle_error(run, TRANSIENT, rng=random.Random(1))

    assert (planned.action, planned.tool, planned.model, planned.attempt) == (
        "retry",
        "llm.complete",
        "m1",
        retries + 1,
    )
    assert all(cap / 2 <= delay <= cap for delay in delays)
    assert max(delays) - min(delays) > cap / 4  # the random half is really drawn
    assert handle_error(run, TRANSIENT, rng=random.Random(1)) == planned


def test_once_retries_are_spent_recovery_walks_the_fallbacks_in_order() -> None:
    """Retries exhausted: an untried alternate model, then an alternate tool whose circuit is
    closed, then skip for an optional stage, and escalate last."""
    fallbacks = (
        RETRY,
        StageFallback(kind="alternate_model", model="m2"),
        StageFallback(kind="alternate_tool", tool="tool.a"),
        StageFallback(kind="alternate_tool", tool="tool.b"),
        StageFallback(kind="skip"),
    )
    run = stage_run(*fallbacks, retries=3, optional=True)
    planned = handle_error(run, TRANSIENT)
    assert (planned.action, planned.tool, planned.model) == (
        "alternate_model",
        "llm.complete",
        "m2",
    )

    run = stage_run(*fallbacks, retries=3, optional=True, tried=[("llm.complete", "m2")])
    planned = handle_error(run, TRANSIENT)
    assert (planned.action, planned.tool) == ("alternate_tool", "tool.a")
    assert handle_error(run, TRANSIENT, open_tools={"tool.a"}).tool == "tool.b"
    assert handle_error(run, TRANSIENT, open_tools={"tool.a", "tool.b"}).action == "skip"

    required = stage_run(*fallbacks, retries=3, tried=[("llm.complete", "m2"), ("tool.a", "m1")])
    assert handle_error(required, TRANSIENT, open_tools={"tool.b"}).action == "escalate"
    assert "after 4 attempts" in handle_error(required, TRANSIENT, open_tools={"tool.b"}).reason


def test_a_tool_error_is_retried_only_when_the_analysis_allows_it() -> None:
    """A non-transient tool_error is retried when there is no analysis or it says retryable;
    an analysis saying otherwise goes straight to the next fallback."""
    fallbacks = (RETRY, StageFallback(kind="alternate_tool", tool="tool.a"))
    run = stage_run(*fallbacks, tool="web.search", model=None)
    yes = ErrorAnalysis(category="tool_error", retryable=True, suggestion="again")
    no = ErrorAnalysis(category="tool_error", retryable=False, suggestion="use another tool")

    assert handle_error(run, TOOL_ERROR).action == "retry"
    assert handle_error(run, TOOL_ERROR, yes).action == "retry"
    planned = handle_error(run, TOOL_ERROR, no)
    assert (planned.action, planned.tool, planned.suggestion) == (
        "alternate_tool",
        "tool.a",
        "use another tool",
    )


@pytest.mark.parametrize("category", ["fatal", "budget"])
def test_fatal_and_budget_failures_are_never_retried_nor_moved_elsewhere(category: str) -> None:
    """Even with retries left and every alternate untried, the stage escalates. A fatal
    failure of an optional stage skips it; a spent budget halts the task even then, since
    it stays spent for every stage after."""
    error = StepError(code="INVALID_INPUT", category=category)
    fallbacks = (
        RETRY,
        StageFallback(kind="alternate_model", model="m2"),
        StageFallback(kind="alternate_tool", tool="tool.a"),
        StageFallback(kind="skip"),
    )
    analysis = ErrorAnalysis(category="tool_error", retryable=True, suggestion="retry")
    assert handle_error(stage_run(*fallbacks), error, analysis).action == "escalate"
    optional = handle_error(stage_run(*fallbacks, optional=True), error).action
    assert optional == ("skip" if category == "fatal" else "escalate")


def test_classify_maps_a_tools_error_to_a_category() -> None:
    assert classify("TOOL_TIMEOUT", True) == "transient"
    assert classify("INVALID_INPUT", False) == "fatal"
    assert classify("BAD_REFERENCE", False) == "fatal"
    assert classify("BUDGET_EXCEEDED", False) == "budget"
    assert classify("INVALID_OUTPUT", False) == "invalid_output"
    assert classify("TOOL_FAILED", False, output_schema=True) == "invalid_output"
    assert classify("TOOL_FAILED", False) == "tool_error"


# -- 9. circuit breaker and tool ordering ----------------------------------------------------
def returned(tool: str, ok: bool, at: float = 0.0, code: str = "TOOL_FAILED") -> Event:
    payload = ToolReturned(
        stage_id="s",
        attempt=1,
        tool=tool,
        version="1.0.0",
        outcome="ok" if ok else "error",
        duration_s=0.1 if ok else 0.5,
        error=None if ok else StepError(code=code, category="tool_error"),
        input_hash="h",
        task_type="own",
    )
    return Event.new(
        payload, tenant_id="acme", actor=AGENT, occurred_at=START + timedelta(seconds=at)
    )


def test_the_circuit_opens_after_five_failures_cools_down_and_closes_on_success() -> None:
    """Four failures leave it closed; the fifth opens it for 30 s; after that it is half-open
    (calls pass) and one more failure opens it again at once; a success closes it. The
    breaker's own refusals are not failures."""
    breaker = CircuitBreaker()
    at = START + timedelta(seconds=10)
    for n in range(4):
        breaker.observe(returned("t", False, n))
    assert not breaker.is_open("t", at)
    breaker.observe(returned("t", False, 4, code="CIRCUIT_OPEN"))
    assert not breaker.is_open("t", at)
    breaker.observe(returned("t", False, 5))
    assert breaker.is_open("t", at) and breaker.open_tools(at) == {"t"}
    assert breaker.is_open("t", START + timedelta(seconds=34.9))
    half_open = START + timedelta(seconds=35)
    assert not breaker.is_open("t", half_open)
    breaker.observe(returned("t", False, 35))
    assert breaker.is_open("t", half_open)
    breaker.observe(returned("t", True, 36))
    assert not breaker.is_open("t", half_open) and breaker.open_tools(half_open) == set()
    for n in range(4):
        breaker.observe(returned("t", False, 40 + n))
    assert not breaker.is_open("t", START + timedelta(seconds=45))


def test_old_failures_replayed_after_a_restart_do_not_keep_a_circuit_open() -> None:
    """Five failures an hour ago, replayed now: the circuit cooled down long since."""
    breaker = CircuitBreaker()
    for n in range(5):
        breaker.observe(returned("t", False, n))
    assert breaker.is_open("t", START + timedelta(seconds=6))
    assert not breaker.is_open("t", START + timedelta(hours=1))
    assert breaker.open_tools(START + timedelta(hours=1)) == set()


def test_tools_are_ordered_by_observed_success_once_known_with_open_circuits_last() -> None:
    """Fewer than 3 calls say nothing (the plan's order stands); with 3 or more the higher
    success rate comes first; an open circuit goes last whatever its record."""
    stats, breaker, now = ToolStats(), CircuitBreaker(), START + timedelta(seconds=10)
    for ok in (False, False):
        stats.observe(returned("a", ok))
    assert optimize_tool_usage(["a", "b"], "own", stats, breaker, now) == ["a", "b"]
    stats.observe(returned("a", False))
    assert stats.of("a", "own").calls == 3 and stats.of("a", "own").success_rate == 0.2
    assert optimize_tool_usage(["a", "b"], "own", stats, breaker, now) == ["b", "a"]
    for _ in range(3):
        stats.observe(returned("c", True))
    assert optimize_tool_usage(["a", "b", "c"], "own", stats, breaker, now) == ["c", "b", "a"]
    assert optimize_tool_usage(["a", "b", "c"], "other", stats, breaker, now) == ["a", "b", "c"]
    for n in range(5):
        breaker.observe(returned("c", False, n))
    assert optimize_tool_usage(["a", "b", "c"], "own", stats, breaker, now) == ["b", "a", "c"]


def test_the_breakers_refusals_are_not_calls_in_the_tool_statistics() -> None:
    """A CIRCUIT_OPEN tool.returned is the breaker refusing, not the tool failing: like a
    cached result it is not counted, so a cooled-down tool is not ranked down for it."""
    stats = ToolStats()
    for n in range(3):
        stats.observe(returned("a", True, n))
    for n in range(5):
        stats.observe(returned("a", False, 10 + n, code="CIRCUIT_OPEN"))

    seen = stats.of("a", "own")
    assert (seen.calls, seen.successes) == (3, 3)
    assert seen.mean_seconds == pytest.approx(0.1)


async def test_a_call_the_breaker_refuses_costs_nothing() -> None:
    """test.paid costs a cent a call, and its circuit is open: each attempt's tool.returned
    is CIRCUIT_OPEN with no cost (the tool never ran), and the task's cost stays zero."""
    paid = Paid()
    driver, agent = system(paid)
    for n in range(5):
        agent.observe(returned("test.paid", False, -n))
    assert agent.breaker.is_open("test.paid", START)

    events = await run_task(driver, {"playbook": playbook(step("pay", "test.paid", "coder"))})

    refused = only(events, ToolReturned)
    assert [r.error.code for r in refused if r.error] == ["CIRCUIT_OPEN"] * 3
    assert [r.cost_usd for r in refused] == [0.0] * 3
    assert paid.keys == []
    assert one(events, TaskFailed).reason == "STAGE_FAILED"
    assert all(p.cost_usd == 0 for p in only(events, ProgressUpdated))


# -- 10. references and schemas --------------------------------------------------------------
RESULTS = [
    {
        "title": "Retries",
        "url": "file:///docs/a.md#retries",
        "snippet": "Transient errors retry.",
        "score": 1.5,
    },
    {"title": "Breaker", "url": "https://example.org/b", "snippet": "Circuits open.", "score": 0.5},
]


def test_search_results_become_text_where_a_string_is_wanted_and_links_where_urls_are() -> None:
    """A reference to the results list, resolved, then fitted: readable text (titles and
    snippets, no links, no scores) for a string field, the urls for a list of strings."""
    outputs = {"search": {"results": RESULTS}}
    section = {
        "body": "{{steps.search.output.results}}",
        "sources": "{{steps.search.output.results}}",
    }
    resolved = resolve_outputs(section, outputs)
    assert resolved == {"body": RESULTS, "sources": RESULTS}

    section_schema = {
        "type": "object",
        "properties": {
            "body": {"type": "string"},
            "sources": {"type": "array", "items": {"type": "string"}},
        },
    }
    fitted = fit_to_schema(resolved, section_schema)
    assert fitted["body"] == "Retries\nTransient errors retry.\n\nBreaker\nCircuits open."
    assert fitted["sources"] == ["file:///docs/a.md#retries", "https://example.org/b"]
    assert (
        fit_to_schema(
            resolve_outputs("{{steps.search.output.results.1.title}}", outputs), {"type": "string"}
        )
        == "Breaker"
    )
    assert (
        resolve_outputs("found: {{steps.search.output.results.0.title}}", outputs)
        == "found: Retries"
    )
    assert fit_to_schema("3", {"type": "integer"}) == 3


def test_boolean_schemas_leave_the_value_as_it_is() -> None:
    """JSON Schema allows ``true`` and ``false`` as schemas, for ``items`` and for a
    property alike (an MCP server's input schema may have them): the values under them are
    kept as they are, while the fields beside them are still fitted."""
    schema = {
        "type": "object",
        "properties": {
            "anything": {"type": "array", "items": True},
            "nothing": {"type": "array", "items": False},
            "free": True,
            "count": {"type": "integer"},
        },
    }
    value = {"anything": [{"url": "u"}, 1], "nothing": [2], "free": {"a": 1}, "count": "3"}
    assert fit_to_schema(value, schema) == {
        "anything": [{"url": "u"}, 1],
        "nothing": [2],
        "free": {"a": 1},
        "count": 3,
    }
    assert fit_to_schema([1, "x"], True) == [1, "x"]


@pytest.mark.parametrize(
    "reference",
    [
        "{{steps.search.output.answers}}",
        "{{steps.search.output.results.7.title}}",
        "{{steps.nowhere.output}}",
    ],
)
def test_a_reference_to_nothing_is_bad_reference(reference: str) -> None:
    with pytest.raises(PlaybookError) as caught:
        resolve_outputs({"text": reference}, {"search": {"results": RESULTS}})
    assert caught.value.code == "BAD_REFERENCE"


# -- 11. the LLM flow ------------------------------------------------------------------------
@pytest.fixture(scope="module")
async def server() -> AsyncIterator[OpenAIServer]:
    async with OpenAIServer() as instance:
        yield instance


DRAFT = Playbook(
    name="draft_only",
    steps=[
        PlaybookStep(
            id="draft",
            tool="llm.complete",
            role="writer",
            input={"prompt": "Two sentences on: {{task.description}}", "max_tokens": 100},
        )
    ],
)


def script_planning(server: OpenAIServer) -> None:
    """One thought and an answer for assign_roles, then for plan: the DRAFT playbook."""
    thought = Thought(number=1, text="A writer can do it.", next_thought_needed=False)
    server.answer(thought, prompt_tokens=11, completion_tokens=1)
    roles = RoleProposal(roles=[RoleScore(role="writer", score=0.9, reason="a report")])
    server.answer(roles, prompt_tokens=12)
    thought = Thought(number=1, text="One drafting stage.", next_thought_needed=False)
    server.answer(thought, prompt_tokens=21, completion_tokens=1)
    server.answer(PlanProposal(inline=DRAFT, reason="draft it"), prompt_tokens=22)


async def run_with_llm(server: OpenAIServer, fallback_models: str = "") -> list[Event]:
    """The research task, planned and run by agents that reason with ``server``."""
    settings = Settings(
        llm_base_url=server.base_url,
        llm_model="model-a",
        llm_fallback_models=fallback_models,
        llm_timeout_s=5.0,
        llm_max_retries=0,
        llm_max_thoughts=1,
    )
    clock = Clock()
    tools = build_tools(settings)
    async with LLMClient(settings) as client:
        reasoner = LLMReasoner(client)
        agent = JourneyAgent(
            reasoner, builtin_registry(), tools, clock=clock, rng=random.Random(SEED)
        )
        super_agent = SuperAgent.from_settings(settings, client=client)
        super_agent.clock = clock
        try:
            return await run_task(Driver(planner(super_agent), executor(agent), clock=clock))
        finally:
            await tools["llm.complete"].aclose()  # type: ignore[attr-defined]


async def test_with_an_llm_the_model_plans_an_llm_stage_and_every_call_records_usage(
    server: OpenAIServer,
) -> None:
    """Both agents reason with the local server: the model assigns roles and proposes an
    inline playbook with an llm.complete stage, the stage asks the same server, and each
    request is a usage.recorded (assign_roles and plan while planning, execute with the
    stage's id while running); the task completes with the model's text and its tokens."""
    server.reset()
    script_planning(server)
    server.answer("WrenchAI retries transient failures.", prompt_tokens=40, completion_tokens=12)

    events = await run_with_llm(server)

    plan = one(events, PlanCreated)
    assert plan.playbook == "draft_only"
    assert [(s.id, s.tools[0], s.model) for s in plan.stages] == [
        ("draft", "llm.complete", "model-a")
    ]
    usage = only(events, UsageRecorded)
    assert [(u.operation, u.stage_id, u.total_tokens) for u in usage] == [
        ("assign_roles", None, 12),
        ("assign_roles", None, 17),
        ("plan", None, 22),
        ("plan", None, 27),
        ("execute", "draft", 52),
    ]
    assert usage[-1].model == "model-a"
    started = one(events, StepStarted)
    assert started.model == "model-a" and started.input["model"] == "model-a"
    assert started.input["prompt"] == f"Two sentences on: {RESEARCH}"
    spent = next(e for e in events if isinstance(e.payload, UsageRecorded) and e.payload.stage_id)
    assert index(events, "tool.returned", "draft") < events.index(spent)
    assert spent.id == derive_id(events[types(events).index("plan.created")].id, "draft/1/usage")
    assert events[-1].type == "task.completed"
    output = one(events, TaskCompleted).output
    assert output["final"]["text"] == "WrenchAI retries transient failures."
    assert output["totals"]["tokens"] == 52
    assert len(server.requests) == 5
    assert server.requests[-1].messages[-1]["content"] == f"Two sentences on: {RESEARCH}"


async def test_with_an_llm_a_failing_model_is_replaced_by_the_fallback_model(
    server: OpenAIServer,
) -> None:
    """model-a answers the stage with a 500: the model analyses the error (its thought and
    usage recorded under the stage), recovery picks the plan's alternate_model, and attempt 2
    asks model-b, which answers; the task completes with model-b's text."""
    server.reset()
    script_planning(server)
    server.error(500, "overloaded")
    thought = Thought(number=1, text="The server is overloaded.", next_thought_needed=False)
    server.answer(thought, prompt_tokens=31, completion_tokens=1)
    analysis = ErrorAnalysis(category="transient", retryable=True, suggestion="ask model-b")
    server.answer(analysis, prompt_tokens=32, completion_tokens=3)
    server.answer("Model b wrote this.", prompt_tokens=40, completion_tokens=12)

    events = await run_with_llm(server, fallback_models="model-b")

    fallbacks = one(events, PlanCreated).stages[0].fallbacks
    assert [(f.kind, f.model) for f in fallbacks] == [
        ("alternate_model", "model-b"),
        ("escalate", None),
    ]
    failed = one(events, StepFailed)
    assert (failed.error.code, failed.error.category) == ("LLM_UNAVAILABLE", "transient")
    planned = one(events, RecoveryPlanned)
    assert (planned.action, planned.model, planned.suggestion) == (
        "alternate_model",
        "model-b",
        "ask model-b",
    )
    assert [(s.attempt, s.model) for s in only(events, StepStarted)] == [
        (1, "model-a"),
        (2, "model-b"),
    ]
    usage = [(u.operation, u.stage_id, u.model) for u in only(events, UsageRecorded)][4:]
    assert usage == [
        ("analyse_error", "draft", "model-a"),
        ("analyse_error", "draft", "model-a"),
        ("execute", "draft", "model-b"),
    ]
    assert [r.model for r in server.requests[4:]] == ["model-a", "model-a", "model-a", "model-b"]
    output = one(events, TaskCompleted).output
    assert output["final"]["text"] == "Model b wrote this."
    assert output["totals"]["tokens"] == 32 + 35 + 52


async def test_a_stage_reading_a_skipped_stage_gets_nothing_and_the_task_completes() -> None:
    """An optional stage is skipped; the report that reads its output gets empty text for
    it (not BAD_REFERENCE), runs, and is the task's final output."""
    book = playbook(
        {"id": "search", "tool": "web.search", "role": "researcher", "input": {"query": "retry"}},
        step("extra", "test.broken", "coder", optional=True),
        {
            "id": "report",
            "tool": "report.compile",
            "role": "writer",
            "depends_on": ["search", "extra"],
            "input": {
                "title": "Retries",
                "sections": [
                    {"heading": "Found", "body": "{{steps.search.output.results}}"},
                    {"heading": "Extra", "body": "{{steps.extra.output.text}}"},
                ],
            },
        },
    )
    driver, _ = system(Broken())
    events = await run_task(driver, {"playbook": book})
    assert events[-1].type == "task.completed"
    output = one(events, TaskCompleted).output
    assert output["skipped"] == ["extra"] and output["final_stage"] == "report"
    assert "## Extra" in output["final"]["markdown"]


async def test_when_the_last_stage_is_skipped_the_stage_before_it_is_the_result() -> None:
    """The only stage nothing depends on is optional and skipped: the final output is the
    completed stage it depended on, not null."""
    book = playbook(
        {"id": "search", "tool": "web.search", "role": "researcher", "input": {"query": "retry"}},
        step("extra", "test.broken", "coder", optional=True, depends_on=["search"]),
    )
    driver, _ = system(Broken())
    events = await run_task(driver, {"playbook": book})
    output = one(events, TaskCompleted).output
    assert output["final_stage"] == "search" and output["final"]["results"]
