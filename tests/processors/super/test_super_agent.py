"""The SuperAgent's pure core: evolve and decide fold a task's log into what planning it
still needs, and SuperAgent.run turns a submitted task into thoughts, roles, tools and a
plan, or into task.failed with a stable reason.

No Kafka and no Postgres: events are collected from ``emit`` into a list, and the clock is
fixed so two runs can be compared event for event. The LLM reasoner talks to a local
OpenAI-compatible HTTP server with scripted answers.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from events import (
    EXECUTION_SCOPES,
    TERMINAL_TYPES,
    Actor,
    Codec,
    Event,
    EventPayload,
    FernetCipher,
    PlanCreated,
    RolesAssigned,
    StepError,
    TaskCancelled,
    TaskCompleted,
    TaskFailed,
    TaskSubmitted,
    ThoughtRecorded,
    ToolReturned,
    ToolsAllocated,
    UsageRecorded,
    derive_id,
    generate_key,
)
from processors.reasoning import (
    LLMClient,
    LLMReasoner,
    PlanProposal,
    RoleProposal,
    RoleScore,
    RuleReasoner,
    Thought,
)
from processors.shared.playbook import Playbook, PlaybookStep, load_playbook, load_playbooks
from processors.shared.roles import RoleCatalogError, RoleCycleError, load_role_catalog
from processors.super.agent import (
    ACTOR,
    NAME,
    PlanTask,
    SuperAgent,
    TaskState,
    decide,
    evolve,
)
from processors.tools import builtin_registry
from tests.processors.openai_server import OpenAIServer
from wrenchai.settings import Settings

P = TypeVar("P", bound=EventPayload)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TENANT = "acme"
USER = Actor(kind="user", id="alice")
RESEARCH = "Research how WrenchAI recovers from errors and write a short report"
PLAN_EVENTS = ["roles.assigned", "tools.allocated", "plan.created"]


def clock() -> datetime:
    return NOW


ADMIN_GRANTS = sorted(EXECUTION_SCOPES)
"""What an admin's task may run: everything. The tests of refusals pass fewer grants."""


def submitted(
    description: str = RESEARCH,
    constraints: dict[str, Any] | None = None,
    task_id: uuid.UUID | None = None,
    grants: Sequence[str] = ADMIN_GRANTS,
) -> Event:
    return Event.new(
        TaskSubmitted(description=description, constraints=constraints, grants=list(grants)),
        tenant_id=TENANT,
        actor=USER,
        task_id=task_id or uuid.uuid4(),
    )


def follow(cause: Event, payload: EventPayload, actor: Actor = USER) -> Event:
    """Another event of the same task, caused by ``cause`` (a cancel, a completion...)."""
    return Event.new(
        payload,
        tenant_id=cause.tenant_id,
        actor=actor,
        task_id=cause.task_id,
        causation_id=cause.id,
    )


async def run(agent: SuperAgent, job: PlanTask) -> list[Event]:
    """Everything ``agent`` emits for ``job``, in order."""
    emitted: list[Event] = []

    async def emit(event: Event) -> None:
        emitted.append(event)

    await agent.run(job, emit)
    return emitted


def types(events: Iterable[Event]) -> list[str]:
    return [event.type for event in events]


def only(events: Sequence[Event], kind: type[P]) -> list[P]:
    """The payloads of type ``kind``, in order."""
    return [event.payload for event in events if isinstance(event.payload, kind)]


def one(events: Sequence[Event], kind: type[P]) -> P:
    found = only(events, kind)
    assert len(found) == 1, f"expected one {kind.event_type}, got {types(events)}"
    return found[0]


def plan_thoughts(events: Iterable[Event]) -> list[Event]:
    """The thought.recorded events of the plan operation."""
    return [
        event
        for event in events
        if isinstance(event.payload, ThoughtRecorded) and event.payload.operation == "plan"
    ]


def fold(events: Iterable[Event], state: TaskState | None = None) -> TaskState:
    for event in events:
        state = evolve(state, event)
    assert state is not None
    return state


@pytest.fixture
def agent() -> SuperAgent:
    return SuperAgent.offline(clock=clock)


# -- the offline planning of a research task ----------------------------------------------
async def test_a_submitted_task_yields_thoughts_then_roles_tools_and_plan_in_that_order(
    agent: SuperAgent,
) -> None:
    """Offline: the assign_roles thoughts, then the plan thoughts, then roles.assigned,
    tools.allocated and plan.created, and no usage.recorded (the rule reasoner spends no
    tokens)."""
    events = await run(agent, PlanTask(submitted()))

    thoughts = only(events, ThoughtRecorded)
    assert types(events) == ["thought.recorded"] * len(thoughts) + PLAN_EVENTS
    operations = [thought.operation for thought in thoughts]
    assigning = operations.count("assign_roles")
    assert assigning >= 1 and operations.count("plan") >= 1
    assert operations == ["assign_roles"] * assigning + ["plan"] * (len(thoughts) - assigning)
    assert [t.number for t in thoughts[:assigning]] == list(range(1, assigning + 1))
    assert [t.number for t in thoughts[assigning:]] == list(range(1, len(thoughts) - assigning + 1))
    assert all(thought.text for thought in thoughts)
    assert "research_report" in thoughts[-1].text


async def test_every_derived_event_is_caused_by_the_submission_and_stamped_for_its_task(
    agent: SuperAgent,
) -> None:
    """causation_id and correlation_id are the task.submitted id; task_id and tenant_id are
    the task's; the actor is the agent super-agent; occurred_at comes from the clock."""
    cause = submitted()
    events = await run(agent, PlanTask(cause))

    assert ACTOR == Actor(kind="agent", id=NAME) and NAME == "super-agent"
    for event in events:
        assert event.causation_id == cause.id
        assert event.correlation_id == cause.id
        assert event.task_id == cause.task_id
        assert event.tenant_id == TENANT
        assert event.actor == Actor(kind="agent", id="super-agent")
        assert event.occurred_at == NOW
        assert event.id != cause.id


async def test_roles_are_in_dependency_order_and_include_the_chosen_playbooks_roles(
    agent: SuperAgent,
) -> None:
    """The research task gets research_report, whose steps name researcher, analyst and
    writer; analyst is added for the playbook (and says so), planner because researcher
    depends on it, and every role comes after the roles it depends on."""
    events = await run(agent, PlanTask(submitted()))
    assigned = one(events, RolesAssigned)
    catalog = load_role_catalog()

    names = [role.name for role in assigned.roles]
    assert assigned.reasoner == "rule"
    assert {"researcher", "analyst", "writer", "planner"} <= set(names)
    assert len(names) == len(set(names))
    for position, role in enumerate(assigned.roles):
        assert role.depends_on == catalog.get(role.name).depends_on
        assert set(role.depends_on) <= set(names[:position]), f"{role.name} before its deps"
        assert role.reason
    by_name = {role.name: role for role in assigned.roles}
    assert "research_report" in by_name["analyst"].reason
    assert "researcher" in by_name["planner"].reason  # needed by researcher
    assert by_name["writer"].score > 0 and by_name["researcher"].score > 0
    assert (by_name["writer"].source, by_name["researcher"].source) == ("proposed", "proposed")
    assert (by_name["analyst"].source, by_name["planner"].source) == ("playbook", "dependency")


async def test_offline_allocation_holds_no_llm_complete_and_covers_every_step(
    agent: SuperAgent,
) -> None:
    """tools.allocated is offline_only, gives each assigned role its tools in the same order,
    never allocates llm.complete, and each stage's role holds the stage's tool."""
    events = await run(agent, PlanTask(submitted()))
    assigned = one(events, RolesAssigned)
    allocated = one(events, ToolsAllocated)
    plan = one(events, PlanCreated)

    assert allocated.offline_only is True
    assert [entry.role for entry in allocated.roles] == [role.name for role in assigned.roles]
    held = {entry.role: [tool.tool for tool in entry.tools] for entry in allocated.roles}
    assert all("llm.complete" not in tools for tools in held.values())
    assert all(
        tool.version and 0 <= tool.reliability <= 1 for e in allocated.roles for tool in e.tools
    )
    for stage in plan.stages:
        assert stage.tools[0] in held[stage.role]


async def test_the_plan_is_the_playbooks_dag_with_estimates_and_fallbacks(
    agent: SuperAgent,
) -> None:
    """plan.created follows research_report step for step: ids, roles, tools, dependencies,
    the outputs each stage reads, the task filled into the inputs, per-stage estimates whose
    sum is the total, and fallbacks that end with escalate."""
    cause = submitted()
    events = await run(agent, PlanTask(cause))
    plan = one(events, PlanCreated)
    playbook = load_playbook("research_report")

    assert plan.playbook == "research_report"
    assert [stage.id for stage in plan.stages] == [step.id for step in playbook.steps]
    for stage, step in zip(plan.stages, playbook.steps, strict=True):
        assert stage.role == step.role
        assert stage.tools[0] == step.tool
        assert stage.depends_on == sorted(step.depends_on)
        assert stage.timeout == step.timeout
        assert stage.estimate.seconds > 0
        assert stage.model is None  # no LLM stage in this plan
        assert stage.fallbacks[-1].kind == "escalate"
        assert stage.success_criteria
    search, summarize, report = plan.stages
    assert search.inputs == [] and summarize.inputs == ["search"]
    assert report.inputs == ["search", "summarize"]
    assert search.tool_input == {"query": RESEARCH, "limit": 5}
    assert summarize.tool_input["text"] == "{{steps.search.output.results}}"
    assert search.fallbacks[0].kind == "retry" and search.fallbacks[0].attempts == 1
    assert plan.total.seconds == pytest.approx(sum(s.estimate.seconds for s in plan.stages))
    assert plan.total.tokens == 0 and plan.total.cost_usd == 0
    assert plan.critical_path_seconds == pytest.approx(plan.total.seconds)  # a chain


# -- determinism -----------------------------------------------------------------------------
async def test_planning_the_same_submission_twice_emits_identical_events(
    agent: SuperAgent,
) -> None:
    """Same task.submitted, same clock: the same events, ids and payloads alike, so a
    redelivery or a crash-and-retry duplicates nothing that consumers cannot drop by id."""
    cause = submitted()
    first = await run(agent, PlanTask(cause))
    second = await run(SuperAgent.offline(clock=clock), PlanTask(cause))

    assert first == second
    assert len({event.id for event in first}) == len(first)


async def test_event_ids_derive_from_the_submission_id_and_the_step_name(
    agent: SuperAgent,
) -> None:
    """roles.assigned, tools.allocated and plan.created are derive_id(submitted.id, their
    type); thought N of an operation is derive_id(submitted.id, "<operation>/thought/N")."""
    cause = submitted()
    events = await run(agent, PlanTask(cause))

    for event in events:
        if isinstance(event.payload, ThoughtRecorded):
            step = f"{event.payload.operation}/thought/{event.payload.number}"
        else:
            step = event.type
        assert event.id == derive_id(cause.id, step), step
    other = await run(agent, PlanTask(submitted(task_id=cause.task_id)))
    assert not {event.id for event in other} & {event.id for event in events}


async def test_a_failure_id_derives_from_the_submission_id_and_task_failed(
    agent: SuperAgent,
) -> None:
    """task.failed is derive_id(submitted.id, "task.failed"), so a retried failure is one
    event too."""
    cause = submitted(constraints={"playbook": "no_such_playbook"})
    events = await run(agent, PlanTask(cause))
    again = await run(agent, PlanTask(cause))

    assert events == again
    assert events[-1].type == "task.failed"
    assert events[-1].id == derive_id(cause.id, "task.failed")


# -- evolve and decide -----------------------------------------------------------------------
def test_a_fresh_submission_calls_for_one_plan_task() -> None:
    """A submitted, unplanned task needs one PlanTask carrying the submission and nothing
    from an earlier planning."""
    cause = submitted()
    state = evolve(None, cause)

    assert state == TaskState(submitted=cause)
    assert not state.settled
    assert decide(state) == [PlanTask(cause)]
    job = decide(state)[0]
    assert job.roles is None and job.allocation is None and job.key == "plan"


def test_an_empty_state_or_unrelated_events_call_for_nothing() -> None:
    """No submission, no planning; thoughts and usage do not change the state."""
    cause = submitted()
    thought = cause.derive(
        ThoughtRecorded(operation="plan", number=1, text="thinking"), step="x", actor=ACTOR
    )
    assert decide(TaskState()) == []
    assert decide(evolve(None, thought)) == []
    state = evolve(None, cause)
    assert evolve(state, thought) is state


async def test_once_planned_nothing_more_is_decided_even_on_redelivery(
    agent: SuperAgent,
) -> None:
    """After plan.created decide returns []; a redelivered task.submitted changes nothing,
    so a planned task is never planned again."""
    cause = submitted()
    events = await run(agent, PlanTask(cause))
    state = fold([cause, *events])

    assert state.planned and state.settled
    assert decide(state) == []
    assert evolve(state, cause) == state
    assert decide(evolve(state, cause)) == []
    assert decide(evolve(state, submitted(task_id=cause.task_id))) == []


async def test_a_plan_drops_the_kept_events_so_the_state_stays_small(
    agent: SuperAgent,
) -> None:
    """While planning is unfinished the submission, roles and allocation are kept; once
    plan.created is folded only the flag remains."""
    cause = submitted()
    events = await run(agent, PlanTask(cause))
    by_type = {event.type: event for event in events}
    partial = fold([cause, by_type["roles.assigned"], by_type["tools.allocated"]])

    assert partial.submitted == cause
    assert partial.roles == by_type["roles.assigned"]
    assert partial.allocation == by_type["tools.allocated"]
    assert evolve(partial, by_type["plan.created"]) == TaskState(planned=True)


def test_a_task_cancelled_before_planning_gets_no_plan() -> None:
    """task.cancelled before any plan: decide returns [], and a late redelivery of the
    submission does not revive it."""
    cause = submitted()
    state = fold([cause, follow(cause, TaskCancelled(reason="changed my mind"))])

    assert state == TaskState(closed="task.cancelled")
    assert decide(state) == []
    assert decide(evolve(state, cause)) == []
    assert decide(TaskState(submitted=cause, closed="task.cancelled")) == []


@pytest.mark.parametrize("terminal", sorted(TERMINAL_TYPES))
def test_any_terminal_event_ends_the_planning(terminal: str) -> None:
    """task.completed, task.failed or task.cancelled, before or after the submission is
    seen: nothing is decided."""
    payloads: dict[str, EventPayload] = {
        "task.completed": TaskCompleted(output="done"),
        "task.failed": TaskFailed(reason="TIMEOUT", message="too slow"),
        "task.cancelled": TaskCancelled(),
    }
    cause = submitted()
    end = follow(cause, payloads[terminal])

    after = fold([cause, end])
    before = fold([end, cause])
    assert after.closed == terminal and decide(after) == []
    assert before.closed == terminal and decide(before) == []
    assert after.submitted is None and before.submitted is None


def test_a_second_submission_for_the_same_task_does_not_replace_the_first() -> None:
    """The first task.submitted of a task wins; another one (a different id, other words)
    is ignored, and the PlanTask carries the first."""
    first = submitted("Summarize the sources")
    second = submitted("Something else entirely", task_id=first.task_id)
    state = fold([first, second])

    assert state.submitted == first
    assert decide(state) == [PlanTask(first)]


# "comparison data" gets research_and_analyse, which adds researcher, analyst and writer to
# the proposed roles; given all of them, the rule reasoner would prefer code_task.
RESUMED = [RESEARCH, "comparison data", "Write python code to compute statistics of the data"]


@pytest.mark.parametrize("description", RESUMED)
async def test_after_roles_and_tools_are_logged_only_the_plan_is_made_as_before(
    agent: SuperAgent, description: str
) -> None:
    """An interrupted planning left roles.assigned and tools.allocated on the log: decide
    hands them over, and running the PlanTask emits the plan thoughts and plan.created
    only, identical (ids and payloads) to those of the uninterrupted run, so the plan is
    the same whether or not the worker crashed, and fits the logged roles."""
    cause = submitted(description)
    full = await run(agent, PlanTask(cause))
    by_type = {event.type: event for event in full}
    state = fold([cause, by_type["roles.assigned"], by_type["tools.allocated"]])

    jobs = decide(state)
    assert jobs == [PlanTask(cause, by_type["roles.assigned"], by_type["tools.allocated"])]
    resumed = await run(agent, jobs[0])

    assert resumed == [*plan_thoughts(full), by_type["plan.created"]]
    logged = {role.name for role in one(full, RolesAssigned).roles}
    assert {stage.role for stage in one(resumed, PlanCreated).stages} <= logged


@pytest.mark.parametrize("description", RESUMED)
async def test_after_roles_only_the_allocation_and_the_plan_are_made_as_before(
    agent: SuperAgent, description: str
) -> None:
    """With roles.assigned logged but no tools.allocated, the roles are reused as they are:
    no roles.assigned again, and the thoughts, allocation and plan equal the uninterrupted
    run's."""
    cause = submitted(description)
    full = await run(agent, PlanTask(cause))
    by_type = {event.type: event for event in full}
    job = decide(fold([cause, by_type["roles.assigned"]]))[0]

    assert job.roles == by_type["roles.assigned"] and job.allocation is None
    resumed = await run(agent, job)
    assert resumed == [*plan_thoughts(full), by_type["tools.allocated"], by_type["plan.created"]]


async def test_a_failed_planning_folds_into_a_closed_task(agent: SuperAgent) -> None:
    """The task.failed the SuperAgent emits closes the task for it: nothing more to do."""
    cause = submitted(constraints={"max_roles": 1})
    state = fold([cause, *(await run(agent, PlanTask(cause)))])

    assert state == TaskState(closed="task.failed")
    assert decide(state) == []


# -- failures --------------------------------------------------------------------------------
def inline(*steps: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """An inline playbook for constraints.playbook."""
    return {"name": "own", "steps": list(steps), **fields}


def search_step(step_id: str = "search", **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "tool": "web.search", "input": {"query": "q"}, **fields}


FAILURES: list[tuple[str, dict[str, Any], str]] = [
    ("allow-unknown-role", {"roles": {"allow": ["wizard"]}}, "UNKNOWN_ROLE"),
    ("deny-unknown-role", {"roles": {"deny": ["wizard"]}}, "UNKNOWN_ROLE"),
    ("step-unknown-role", {"playbook": inline(search_step(role="wizard"))}, "UNKNOWN_ROLE"),
    ("max-roles-too-small", {"max_roles": 1}, "ROLE_CONSTRAINT"),
    ("max-roles-not-int", {"max_roles": "two"}, "ROLE_CONSTRAINT"),
    ("roles-not-object", {"roles": ["writer"]}, "ROLE_CONSTRAINT"),
    ("dependency-excluded", {"roles": {"allow": ["researcher", "writer"]}}, "ROLE_CONSTRAINT"),
    ("unknown-tool", {"playbook": inline({"id": "a", "tool": "no.such"})}, "UNKNOWN_TOOL"),
    (
        "cycle",
        {
            "playbook": inline(
                search_step("a", depends_on=["b"]), search_step("b", depends_on=["a"])
            )
        },
        "PLAYBOOK_CYCLE",
    ),
    (
        "unknown-dependency",
        {"playbook": inline(search_step(depends_on=["nowhere"]))},
        "UNKNOWN_DEPENDENCY",
    ),
    (
        "input-breaks-schema",
        {"playbook": inline({"id": "a", "tool": "web.search", "input": {"query": ""}})},
        "INVALID_INPUT",
    ),
    (
        "input-missing-required",
        {"playbook": inline({"id": "a", "tool": "web.search", "input": {"limit": 3}})},
        "INVALID_INPUT",
    ),
    (
        "input-breaks-schema-once-task-filled-in",
        {
            "playbook": inline(
                {
                    "id": "a",
                    "tool": "web.search",
                    "input": {"query": "q", "limit": "{{task.description}}"},
                }
            )
        },
        "INVALID_INPUT",
    ),
    ("duplicate-step", {"playbook": inline(search_step("a"), search_step("a"))}, "DUPLICATE_STEP"),
    (
        "reference-not-upstream",
        {
            "playbook": inline(
                {"id": "a", "tool": "web.search", "input": {"query": "{{steps.b.output}}"}},
                search_step("b"),
            )
        },
        "BAD_REFERENCE",
    ),
    ("playbook-not-found", {"playbook": "no_such_playbook"}, "PLAYBOOK_NOT_FOUND"),
    ("playbook-not-a-playbook", {"playbook": inline()}, "INVALID_PLAYBOOK"),
    ("playbook-of-wrong-type", {"playbook": 5}, "INVALID_PLAYBOOK"),
    (
        "undeclared-playbook-input",
        {"playbook": "research_report", "playbook_inputs": {"colour": "red"}},
        "INVALID_PLAYBOOK",
    ),
    (
        "step-role-denied",
        {"roles": {"deny": ["reviewer"]}, "playbook": inline(search_step(role="reviewer"))},
        "ROLE_NOT_ASSIGNED",
    ),
    (
        "llm-step-offline",
        {
            "playbook": inline(
                {"id": "a", "tool": "llm.complete", "role": "writer", "input": {"prompt": "hi"}}
            )
        },
        "TOOL_UNAVAILABLE",
    ),
]


@pytest.mark.parametrize(
    ("constraints", "code"), [(c, code) for _, c, code in FAILURES], ids=[f[0] for f in FAILURES]
)
async def test_a_task_that_cannot_be_planned_fails_with_a_stable_reason(
    agent: SuperAgent, constraints: dict[str, Any], code: str
) -> None:
    """The run does not raise; its last event is task.failed whose reason and first error
    code are the refusal's code, with a message, and no roles, tools or plan are emitted."""
    cause = submitted(constraints=constraints)
    events = await run(agent, PlanTask(cause))

    assert events[-1].type == "task.failed"
    assert set(types(events[:-1])) <= {"thought.recorded"}
    failed = one(events, TaskFailed)
    assert failed.reason == code
    assert failed.message
    assert failed.errors[0].code == code
    assert failed.errors[0].message == failed.message
    assert "usage" not in failed.errors[0].details


async def test_a_role_less_llm_step_offline_fails_and_names_the_tool(agent: SuperAgent) -> None:
    """An inline llm.complete step with no role cannot be planned offline: no role holds
    llm.complete, so the step is not allocated (TOOL_NOT_ALLOCATED) and no plan is made."""
    step = {"id": "draft", "tool": "llm.complete", "input": {"prompt": "write"}}
    events = await run(agent, PlanTask(submitted(constraints={"playbook": inline(step)})))

    failed = one(events, TaskFailed)
    assert failed.reason == "TOOL_NOT_ALLOCATED"
    assert "llm.complete" in failed.message and "draft" in failed.message
    assert "plan.created" not in types(events)


async def test_failure_details_name_what_is_wrong(agent: SuperAgent) -> None:
    """The error's details travel in task.failed: the unknown role and the known ones, or
    the steps of a cycle."""
    role = await run(agent, PlanTask(submitted(constraints={"roles": {"allow": ["wizard"]}})))
    details = one(role, TaskFailed).errors[0].details
    assert details["role"] == "wizard" and "writer" in details["known"]

    cycle = {
        "playbook": inline(search_step("a", depends_on=["b"]), search_step("b", depends_on=["a"]))
    }
    steps = await run(agent, PlanTask(submitted(constraints=cycle)))
    assert one(steps, TaskFailed).errors[0].details["steps"] == ["a", "b"]


# -- what the submitter allowed ---------------------------------------------------------------
CODE_STEP = {"id": "run", "tool": "code.python", "role": "coder", "input": {"code": "print(1)"}}
OPERATOR = ["playbooks:inline"]
FORBIDDEN: list[tuple[str, dict[str, Any], list[str], str]] = [
    ("inline-for-a-viewer", {"playbook": inline(search_step())}, [], "FORBIDDEN_PLAYBOOK"),
    ("inline-code-only", {"playbook": inline(search_step())}, ["tools:code"], "FORBIDDEN_PLAYBOOK"),
    ("inline-code-step", {"playbook": inline(CODE_STEP)}, OPERATOR, "FORBIDDEN_TOOL"),
    ("code-task-named", {"playbook": "code_task"}, OPERATOR, "FORBIDDEN_TOOL"),
    ("analyse-named", {"playbook": "research_and_analyse"}, [], "FORBIDDEN_TOOL"),
]


@pytest.mark.parametrize(
    ("constraints", "grants", "code"),
    [case[1:] for case in FORBIDDEN],
    ids=[case[0] for case in FORBIDDEN],
)
async def test_a_task_that_needs_more_than_its_grants_fails_before_any_plan(
    agent: SuperAgent, constraints: dict[str, Any], grants: list[str], code: str
) -> None:
    """An inline playbook without playbooks:inline, or a code.python step (inline or in a
    named playbook) without tools:code: task.failed with the stable reason, naming the
    scope, and no roles, tools or plan."""
    events = await run(agent, PlanTask(submitted(constraints=constraints, grants=grants)))

    assert events[-1].type == "task.failed"
    assert set(types(events[:-1])) <= {"thought.recorded"}
    failed = one(events, TaskFailed)
    assert failed.reason == code and failed.errors[0].code == code
    scope = "playbooks:inline" if code == "FORBIDDEN_PLAYBOOK" else "tools:code"
    assert failed.errors[0].details["scope"] == scope and scope in failed.message


async def test_an_inline_playbook_is_refused_before_the_reasoner_spends_a_token(
    llm_agent: SuperAgent, server: OpenAIServer
) -> None:
    """Without playbooks:inline the LLM reasoner is never asked: task.failed is the only
    event and the model server saw no request."""
    constraints = {"playbook": inline(search_step())}
    events = await run(llm_agent, PlanTask(submitted(constraints=constraints, grants=[])))

    assert types(events) == ["task.failed"]
    assert one(events, TaskFailed).reason == "FORBIDDEN_PLAYBOOK"
    assert server.requests == []


async def test_when_the_reasoner_chooses_code_task_a_task_without_tools_code_fails(
    agent: SuperAgent,
) -> None:
    """Nothing in the constraints asks for code, but the reasoner picks code_task for a
    task about Python: without tools:code it fails with FORBIDDEN_TOOL naming step run,
    after the reasoning and before any roles.assigned; with it, code_task is planned."""
    description = "Write python code to compute statistics of the data"
    refused = await run(agent, PlanTask(submitted(description, grants=["playbooks:inline"])))

    failed = one(refused, TaskFailed)
    assert failed.reason == "FORBIDDEN_TOOL"
    assert failed.errors[0].details == {
        "playbook": "code_task",
        "step": "run",
        "tool": "code.python",
        "scope": "tools:code",
    }
    assert "code.python" in failed.message and "tools:code" in failed.message
    assert not set(PLAN_EVENTS) & set(types(refused))

    allowed = await run(agent, PlanTask(submitted(description, grants=["tools:code"])))
    assert one(allowed, PlanCreated).playbook == "code_task"


async def test_without_tools_code_no_role_is_allocated_code_python_and_the_plan_stands(
    agent: SuperAgent,
) -> None:
    """A research task for a submitter without tools:code: the analyst's optional
    code.python is left out, the plan is the same research_report plan, and no stage
    offers code.python even as a fallback. An admin's analyst holds code.python."""
    cause = submitted(grants=[])
    events = await run(agent, PlanTask(cause))
    admin = await run(agent, PlanTask(submitted(task_id=cause.task_id)))

    held = {e.role: [t.tool for t in e.tools] for e in one(events, ToolsAllocated).roles}
    assert all("code.python" not in tools for tools in held.values())
    assert "code.python" in {
        t.tool for e in one(admin, ToolsAllocated).roles if e.role == "analyst" for t in e.tools
    }
    plan = one(events, PlanCreated)
    assert plan.stages == one(admin, PlanCreated).stages
    assert all("code.python" not in [*s.tools, *(f.tool for f in s.fallbacks)] for s in plan.stages)


async def test_a_coder_for_a_task_without_tools_code_goes_without_code_python(
    agent: SuperAgent,
) -> None:
    """The reasoner proposes the coder (whose required tool is code.python) for a task
    that names research_report: the coder is assigned without code.python, and the task
    is planned, since none of its stages runs code."""
    cause = submitted(
        "Write python code to compute statistics of the data",
        constraints={"playbook": "research_report"},
        grants=["playbooks:inline"],
    )
    events = await run(agent, PlanTask(cause))

    assert "coder" in [role.name for role in one(events, RolesAssigned).roles]
    held = {e.role: [t.tool for t in e.tools] for e in one(events, ToolsAllocated).roles}
    assert "code.python" not in held["coder"]
    assert one(events, PlanCreated).playbook == "research_report"


# -- the role catalog at start-up ------------------------------------------------------------
def write_roles(path: Path, *roles: str) -> Path:
    path.write_text("roles:\n" + "".join(roles), encoding="utf-8")
    return path


def role_yaml(name: str, depends_on: Sequence[str] = ()) -> str:
    deps = ", ".join(depends_on)
    return f"  - name: {name}\n    description: the {name}\n    depends_on: [{deps}]\n"


def test_a_user_catalog_with_a_role_cycle_is_refused_at_start_up(tmp_path: Path) -> None:
    """Roles that depend on each other in a circle: load_role_catalog raises RoleCycleError
    naming the circle, and so does SuperAgent.from_settings."""
    path = write_roles(
        tmp_path / "roles.yaml", role_yaml("alpha", ["beta"]), role_yaml("beta", ["alpha"])
    )
    with pytest.raises(RoleCycleError) as info:
        load_role_catalog(path)
    assert info.value.code == "ROLE_CYCLE"
    assert info.value.details["cycle"] == ["alpha", "beta", "alpha"]
    assert "alpha -> beta -> alpha" in info.value.message
    with pytest.raises(RoleCycleError):
        SuperAgent.from_settings(Settings(roles_file=path))


def test_a_user_catalog_role_depending_on_an_unknown_role_is_refused(tmp_path: Path) -> None:
    """A role that depends on a role nobody defines: RoleCatalogError naming both."""
    path = write_roles(tmp_path / "roles.yaml", role_yaml("translator", ["interpreter"]))
    with pytest.raises(RoleCatalogError) as info:
        load_role_catalog(path)
    assert info.value.code == "ROLE_CATALOG_INVALID"
    assert "translator" in info.value.message and "interpreter" in info.value.message
    assert info.value.details["missing"] == ["interpreter"]


async def test_a_user_catalog_adds_roles_the_tasks_can_use(tmp_path: Path) -> None:
    """A valid user file adds its roles to the shipped ones: a task's inline playbook may
    give a step to the new role, which is then assigned with its dependencies."""
    path = write_roles(tmp_path / "roles.yaml", role_yaml("translator", ["researcher"]))
    agent = SuperAgent.from_settings(Settings(roles_file=path))
    assert agent.reasoner_kind == "rule" and agent.offline_only
    agent.clock = clock
    playbook = inline(search_step(role="translator"))

    events = await run(agent, PlanTask(submitted(constraints={"playbook": playbook})))
    names = [role.name for role in one(events, RolesAssigned).roles]
    assert names.index("planner") < names.index("researcher") < names.index("translator")
    assert one(events, PlanCreated).stages[0].role == "translator"


# -- a task's own playbook -------------------------------------------------------------------
async def test_a_tasks_inline_playbook_is_planned_as_it_is(agent: SuperAgent) -> None:
    """constraints.playbook with two steps (web.search, then text.summarize reading
    {{steps.search.output.results}}) becomes exactly those two stages, not a template."""
    playbook = inline(
        {
            "id": "search",
            "tool": "web.search",
            "input": {"query": "{{task.description}}", "limit": "{{inputs.limit}}"},
        },
        {
            "id": "digest",
            "tool": "text.summarize",
            "depends_on": ["search"],
            "input": {"text": "{{steps.search.output.results}}", "max_sentences": 3},
            "optional": True,
        },
        inputs={"limit": 4},
    )
    constraints = {"playbook": playbook, "playbook_inputs": {"limit": 2}}
    events = await run(agent, PlanTask(submitted(constraints=constraints)))

    plan = one(events, PlanCreated)
    assert plan.playbook == "own"
    assert [(s.id, s.depends_on, s.inputs) for s in plan.stages] == [
        ("search", [], []),
        ("digest", ["search"], ["search"]),
    ]
    search, digest = plan.stages
    assert search.tools[0] == "web.search" and digest.tools[0] == "text.summarize"
    assert search.tool_input == {"query": RESEARCH, "limit": 2}
    assert digest.tool_input == {"text": "{{steps.search.output.results}}", "max_sentences": 3}
    assert digest.optional and [f.kind for f in digest.fallbacks][-2:] == ["skip", "escalate"]
    held = {e.role: [t.tool for t in e.tools] for e in one(events, ToolsAllocated).roles}
    assert all(stage.tools[0] in held[stage.role] for stage in plan.stages)
    plan_thoughts = [t for t in only(events, ThoughtRecorded) if t.operation == "plan"]
    assert len(plan_thoughts) == 1 and "own playbook own" in plan_thoughts[0].text


async def test_a_named_playbook_in_the_constraints_wins_over_the_closest_template(
    agent: SuperAgent,
) -> None:
    """constraints.playbook naming code_task gives code_task's stages, although the task
    reads like a research report."""
    events = await run(agent, PlanTask(submitted(constraints={"playbook": "code_task"})))
    plan = one(events, PlanCreated)

    assert plan.playbook == "code_task"
    assert [stage.id for stage in plan.stages] == [s.id for s in load_playbook("code_task").steps]
    assert "coder" in [role.name for role in one(events, RolesAssigned).roles]


# -- the LLM reasoner ------------------------------------------------------------------------
@pytest.fixture(scope="module")
async def server() -> AsyncIterator[OpenAIServer]:
    async with OpenAIServer() as instance:
        yield instance


@pytest.fixture
async def llm_agent(server: OpenAIServer) -> AsyncIterator[SuperAgent]:
    """A SuperAgent whose reasoner asks the local server: model-a, no fallback, one retry."""
    server.reset()
    settings = Settings(
        llm_base_url=server.base_url,
        llm_model="model-a",
        llm_fallback_models="",
        llm_timeout_s=2.0,
        llm_max_retries=1,
        llm_max_thoughts=4,
    )
    async with LLMClient(settings) as client:
        yield SuperAgent(
            LLMReasoner(client),
            load_role_catalog(),
            builtin_registry(),
            {"research_report": load_playbook("research_report")},
            reasoner_kind="llm",
            offline_only=False,
            model="model-a",
            fallback_models=["model-b"],
            clock=clock,
        )


def think(server: OpenAIServer, *texts: str, tokens: int = 10) -> None:
    """Scripted thoughts, the last one ready for the answer; each costs ``tokens`` + 1."""
    for number, text in enumerate(texts, start=1):
        thought = Thought(number=number, text=text, next_thought_needed=number < len(texts))
        server.answer(thought, prompt_tokens=tokens, completion_tokens=1)


ROLES_ANSWER = RoleProposal(
    roles=[
        RoleScore(role="writer", score=0.9, reason="the task asks for a report"),
        RoleScore(role="researcher", score=0.7, reason="it needs sources first"),
    ]
)
DRAFTING = Playbook(
    name="research_and_draft",
    steps=[
        PlaybookStep(
            id="search",
            tool="web.search",
            role="researcher",
            input={"query": "{{task.description}}"},
        ),
        PlaybookStep(
            id="draft",
            tool="llm.complete",
            role="writer",
            depends_on=["search"],
            input={
                "prompt": "Write a report from {{steps.search.output.results}}",
                "max_tokens": 300,
            },
        ),
    ],
)


async def test_with_the_llm_reasoner_roles_plan_thoughts_and_usage_come_from_the_model(
    llm_agent: SuperAgent, server: OpenAIServer
) -> None:
    """The model's roles (with their reasons and scores) and its inline playbook make
    roles.assigned and plan.created; each of its thoughts is a thought.recorded and each
    request's usage block a usage.recorded under its operation."""
    think(server, "The task wants a report.", "Writers need researchers.", tokens=11)
    server.answer(ROLES_ANSWER, prompt_tokens=12, completion_tokens=6)
    think(server, "Search, then draft with the model.", tokens=21)
    server.answer(PlanProposal(inline=DRAFTING, reason="search then draft"), prompt_tokens=22)

    cause = submitted()
    events = await run(llm_agent, PlanTask(cause))

    assert types(events) == [
        *["thought.recorded"] * 2,
        *["usage.recorded"] * 3,
        "thought.recorded",
        *["usage.recorded"] * 2,
        *PLAN_EVENTS,
    ]
    thoughts = only(events, ThoughtRecorded)
    assert [(t.operation, t.number, t.text) for t in thoughts] == [
        ("assign_roles", 1, "The task wants a report."),
        ("assign_roles", 2, "Writers need researchers."),
        ("plan", 1, "Search, then draft with the model."),
    ]
    usage = only(events, UsageRecorded)
    assert [
        (u.operation, u.model, u.input_tokens, u.output_tokens, u.total_tokens) for u in usage
    ] == [
        ("assign_roles", "model-a", 11, 1, 12),
        ("assign_roles", "model-a", 11, 1, 12),
        ("assign_roles", "model-a", 12, 6, 18),
        ("plan", "model-a", 21, 1, 22),
        ("plan", "model-a", 22, 5, 27),
    ]
    usage_ids = [event.id for event in events if event.type == "usage.recorded"]
    assert usage_ids == [
        *(derive_id(cause.id, f"assign_roles/usage/{n}") for n in (1, 2, 3)),
        *(derive_id(cause.id, f"plan/usage/{n}") for n in (1, 2)),
    ]

    assigned = one(events, RolesAssigned)
    assert assigned.reasoner == "llm"
    assert [role.name for role in assigned.roles] == ["planner", "researcher", "writer"]
    by_name = {role.name: role for role in assigned.roles}
    assert (by_name["writer"].reason, by_name["writer"].score) == (
        "the task asks for a report",
        0.9,
    )
    assert (by_name["researcher"].reason, by_name["researcher"].score) == (
        "it needs sources first",
        0.7,
    )

    allocated = one(events, ToolsAllocated)
    assert allocated.offline_only is False
    writer = next(entry for entry in allocated.roles if entry.role == "writer")
    assert "llm.complete" in [tool.tool for tool in writer.tools]

    plan = one(events, PlanCreated)
    assert plan.playbook == "research_and_draft"
    assert [(s.id, s.role, s.tools[0], s.depends_on) for s in plan.stages] == [
        ("search", "researcher", "web.search", []),
        ("draft", "writer", "llm.complete", ["search"]),
    ]
    draft = plan.stages[1]
    assert draft.model == "model-a"
    assert draft.estimate.completion_tokens == 300 and draft.estimate.prompt_tokens > 0
    assert [f.model for f in draft.fallbacks if f.kind == "alternate_model"] == ["model-b"]
    assert plan.total.tokens == draft.estimate.tokens
    assert len(server.requests) == 5 and {r.model for r in server.requests} == {"model-a"}


async def test_with_the_llm_reasoner_a_template_choice_takes_the_models_inputs(
    llm_agent: SuperAgent, server: OpenAIServer
) -> None:
    """The model may pick a template by name with inputs over its defaults; the playbook's
    roles are added to the model's."""
    think(server, "A report from the corpus.")
    server.answer(RoleProposal(roles=[RoleScore(role="writer", score=1.0, reason="report")]))
    think(server, "The research_report template fits.")
    server.answer(PlanProposal(playbook="research_report", inputs={"limit": 3}, reason="fits"))

    events = await run(llm_agent, PlanTask(submitted()))

    plan = one(events, PlanCreated)
    assert plan.playbook == "research_report"
    assert plan.stages[0].tool_input == {"query": RESEARCH, "limit": 3}
    names = [role.name for role in one(events, RolesAssigned).roles]
    assert {"writer", "researcher", "analyst", "planner"} <= set(names)


async def test_with_the_llm_reasoner_a_tasks_own_playbook_is_not_asked_of_the_model(
    llm_agent: SuperAgent, server: OpenAIServer
) -> None:
    """constraints.playbook is used as it is: the model is asked for roles only."""
    think(server, "Researcher it is.")
    server.answer(RoleProposal(roles=[RoleScore(role="researcher", score=1.0, reason="search")]))

    constraints = {"playbook": inline(search_step())}
    events = await run(llm_agent, PlanTask(submitted(constraints=constraints)))

    assert events[-1].type == "plan.created"
    assert len(server.requests) == 2
    assert {u.operation for u in only(events, UsageRecorded)} == {"assign_roles"}


async def test_an_unreachable_llm_fails_the_task_and_still_records_the_spent_usage(
    llm_agent: SuperAgent, server: OpenAIServer
) -> None:
    """One thought is answered, then the server answers 500 on every retry: task.failed
    LLM_UNAVAILABLE, after the thought and a usage.recorded for the request that was paid."""
    # Thought 1 asks for a second one, which never comes: the script runs dry (500).
    first = Thought(number=1, text="First thought.", next_thought_needed=True)
    server.answer(first, prompt_tokens=13, completion_tokens=1)

    cause = submitted()
    events = await run(llm_agent, PlanTask(cause))

    assert types(events) == ["thought.recorded", "usage.recorded", "task.failed"]
    usage = one(events, UsageRecorded)
    assert (usage.operation, usage.model, usage.input_tokens, usage.total_tokens) == (
        "assign_roles",
        "model-a",
        13,
        14,
    )
    failed = one(events, TaskFailed)
    assert failed.reason == "LLM_UNAVAILABLE" and failed.errors[0].code == "LLM_UNAVAILABLE"
    assert "model-a" in failed.message
    assert "usage" not in failed.errors[0].details
    assert events[-1].id == derive_id(cause.id, "task.failed")
    assert len(server.requests) == 3  # the answered one, then two attempts (one retry)


async def test_a_server_that_always_fails_gives_llm_unavailable_and_no_usage(
    llm_agent: SuperAgent, server: OpenAIServer
) -> None:
    """Every request answers 500: nothing was spent, so task.failed is the only event."""
    for _ in range(2):
        server.error(500, "overloaded")

    events = await run(llm_agent, PlanTask(submitted()))

    assert types(events) == ["task.failed"]
    assert one(events, TaskFailed).reason == "LLM_UNAVAILABLE"


async def test_an_answer_invalid_twice_fails_with_llm_invalid_output_and_its_usage(
    llm_agent: SuperAgent, server: OpenAIServer
) -> None:
    """Roles are fine; the plan answer is not JSON twice (the repair fails too): task.failed
    LLM_INVALID_OUTPUT, after usage.recorded for every plan request, the two bad answers
    included, and no roles.assigned."""
    think(server, "Roles.")
    server.answer(ROLES_ANSWER)
    think(server, "Plan.", tokens=30)
    server.answer("not json", prompt_tokens=31, completion_tokens=2)
    server.answer("still not json", prompt_tokens=32, completion_tokens=2)

    events = await run(llm_agent, PlanTask(submitted()))

    assert events[-1].type == "task.failed"
    assert not set(PLAN_EVENTS) & set(types(events))
    failed = one(events, TaskFailed)
    assert failed.reason == "LLM_INVALID_OUTPUT" and failed.message
    plan_usage = [u for u in only(events, UsageRecorded) if u.operation == "plan"]
    assert [u.input_tokens for u in plan_usage] == [30, 31, 32]
    assert [t.operation for t in only(events, ThoughtRecorded)] == ["assign_roles", "plan"]


async def test_a_model_proposing_an_unknown_role_fails_with_llm_invalid_output(
    llm_agent: SuperAgent, server: OpenAIServer
) -> None:
    """A role outside the catalog is the model's mistake: LLM_INVALID_OUTPUT naming it,
    with the usage of the requests that produced it."""
    think(server, "Hmm.")
    server.answer(RoleProposal(roles=[RoleScore(role="wizard", score=1.0, reason="magic")]))

    events = await run(llm_agent, PlanTask(submitted()))

    assert types(events) == ["thought.recorded", "usage.recorded", "usage.recorded", "task.failed"]
    failed = one(events, TaskFailed)
    assert failed.reason == "LLM_INVALID_OUTPUT" and "wizard" in failed.message


async def test_from_settings_picks_the_reasoner_by_whether_an_llm_is_configured() -> None:
    """No WRENCH_LLM_BASE_URL: the rule reasoner, offline tools only, no model. With one:
    the LLM reasoner, online tools, the configured model first and the fallbacks after."""
    offline = SuperAgent.from_settings(Settings(llm_base_url=None))
    assert isinstance(offline.reasoner, RuleReasoner)
    assert (offline.reasoner_kind, offline.offline_only, offline.model) == ("rule", True, None)

    settings = Settings(
        llm_base_url="http://127.0.0.1:9/v1", llm_model="m1", llm_fallback_models="m2,m3"
    )
    async with LLMClient(settings) as client:
        online = SuperAgent.from_settings(settings, client=client)
    assert isinstance(online.reasoner, LLMReasoner)
    assert (online.reasoner_kind, online.offline_only, online.model) == ("llm", False, "m1")
    assert online.fallback_models == ["m2", "m3"]


# -- the events are valid for the log --------------------------------------------------------
async def test_every_emitted_event_round_trips_through_the_encrypting_codec(
    agent: SuperAgent, llm_agent: SuperAgent, server: OpenAIServer
) -> None:
    """Thoughts, usage, roles, tools, a plan and a failure each encode and decode to an
    equal event with a Fernet key, and the task's words are not readable in the record."""
    codec = Codec(FernetCipher([generate_key()]))
    think(server, "Report.")
    server.answer(ROLES_ANSWER)
    think(server, "Draft it.")
    server.answer(PlanProposal(inline=DRAFTING, reason="draft"))
    events = [
        *(await run(agent, PlanTask(submitted()))),
        *(await run(agent, PlanTask(submitted(constraints={"max_roles": 1})))),
        *(await run(llm_agent, PlanTask(submitted()))),
    ]
    assert {"thought.recorded", "usage.recorded", "task.failed", *PLAN_EVENTS} <= set(types(events))

    for event in events:
        record = codec.encode(event)
        assert codec.decode(record.value, record.headers) == event
        if event.type == "plan.created":
            assert RESEARCH.encode() not in record.value


def _summarize_failed(task_id: uuid.UUID) -> Event:
    failure = ToolReturned(
        stage_id="s",
        attempt=1,
        tool="text.summarize",
        version="1.0.0",
        outcome="error",
        duration_s=0.1,
        error=StepError(code="TOOL_FAILED", message="down"),
        input_hash="0" * 64,
    )
    return Event.new(failure, tenant_id="acme", actor=USER, task_id=task_id, occurred_at=NOW)


@pytest.mark.parametrize("open_circuit", [False, True])
async def test_allocation_avoids_a_tool_whose_circuit_is_open(open_circuit: bool) -> None:
    """With an LLM available, the analyst's summarization goes to text.summarize (cheaper);
    after five straight failures of text.summarize its circuit is open and allocation picks
    llm.complete instead, until the circuit cools down."""
    planner = SuperAgent(
        RuleReasoner(),
        load_role_catalog(),
        builtin_registry(),
        load_playbooks(),
        reasoner_kind="rule",
        offline_only=False,
        clock=clock,
    )
    if open_circuit:
        for _ in range(5):
            planner.breaker.observe(_summarize_failed(uuid.uuid4()))
    cause = submitted(
        "Analyse the incident statistics, compare them and summarize the analysis",
        constraints={
            "playbook": {
                "name": "lookup",
                "steps": [
                    {"id": "s", "tool": "web.search", "role": "researcher",
                     "input": {"query": "incidents"}},
                ],
            }
        },
    )  # fmt: skip
    events = await run(planner, PlanTask(cause))
    allocated = one(events, ToolsAllocated)
    analyst = next(item for item in allocated.roles if item.role == "analyst")
    chosen = next(t.tool for t in analyst.tools if t.need == "capability:summarization")
    assert chosen == ("llm.complete" if open_circuit else "text.summarize")
