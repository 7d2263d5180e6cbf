"""The SuperAgent: a submitted task becomes roles, the tools of each role, and a plan.

The core is pure and runs without Kafka:

- :func:`evolve` folds the log into what the SuperAgent knows of one task
  (:class:`TaskState`);
- :func:`decide` says what planning the task still needs (a :class:`PlanTask`, or nothing
  once it is planned, cancelled or otherwise over);
- :meth:`SuperAgent.run` does that planning: the reasoner proposes roles and a playbook,
  the catalog and the task's constraints decide the roles, the registry and the optimiser
  allocate tools, and the planner builds the stages. It emits thought.recorded and
  usage.recorded as it reasons, then roles.assigned, tools.allocated and plan.created, or
  task.failed with a stable reason when the task cannot be planned.

A task runs no more than its submitter allowed (task.submitted ``grants``): an inline
playbook without ``playbooks:inline`` fails with FORBIDDEN_PLAYBOOK before any reasoning,
and a playbook with a step calling a tool whose scope is not granted (code.python without
``tools:code``), whether the task named it or the reasoner chose it, fails with
FORBIDDEN_TOOL before any plan exists. Allocation never gives such a tool to a role, and
no stage offers it as an alternate.

Every event it emits takes its id from the task.submitted id and a step name, so planning
the same task again (after a crash, or when task.submitted is delivered twice) yields the
same ids. A planned task is never planned again: the state is folded from the log, where
the first plan.created already stands. When the log holds the roles (or the allocation) of
an interrupted planning, they are reused rather than asked for again.

The faust worker around this core is :func:`worker`.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import structlog

from events import (
    TERMINAL_TYPES,
    Actor,
    AssignedRole,
    Event,
    EventPayload,
    Operation,
    PlanCreated,
    QualityFitted,
    RolesAssigned,
    TaskError,
    TaskFailed,
    TaskSubmitted,
    ThompsonDraw,
    ThoughtRecorded,
    ToolsAllocated,
)
from processors.inspector.quality import Priors, thompson_draws
from processors.reasoning import (
    LLMClient,
    LLMReasoner,
    Reasoner,
    ReasoningError,
    RoleProposal,
    RuleReasoner,
    TaskBrief,
    Thought,
    Usage,
    proposed_playbook,
)
from processors.shared.metering import Payer, usage_recorded
from processors.shared.planning import Plan, create_execution_plan
from processors.shared.playbook import (
    Playbook,
    authorize_constraints,
    authorize_playbook,
    load_playbooks,
    playbook_roles,
    playbook_tools,
    validate_playbook,
)
from processors.shared.pricing import DEFAULT_PRICES, PriceTable, price_table
from processors.shared.roles import (
    RoleAssignmentError,
    RoleCatalog,
    RoleSpec,
    load_role_catalog,
    validate_role_assignment,
)
from processors.shared.statistics import NewestFit, Statistics, StatisticsReader, keep_fresh
from processors.shared.tool_usage import CircuitBreaker
from processors.tools import Allocation, PlanningError, ToolRegistry, allocate_tools
from processors.tools import builtin_registry as _builtin_registry
from processors.tools.allocation import forbidden_tools

if TYPE_CHECKING:
    from processors.runtime import Worker
    from processors.tools.mcp import McpToolset
    from wrenchai.settings import Settings

log = structlog.get_logger(__name__)

NAME = "super-agent"
ACTOR = Actor(kind="agent", id=NAME)
FOLDED_TYPES = frozenset(
    {
        "task.submitted",
        "roles.assigned",
        "tools.allocated",
        "plan.created",
        "tool.returned",
        "quality.fitted",
        *TERMINAL_TYPES,
    }
)
"""The event types the SuperAgent folds (tool.returned for its circuit breaker, quality.fitted
for Thompson sampling); it skips the others unread."""
OPEN_CIRCUIT_PRIOR = (1.0, 19.0)
"""The reliability allocation assumes for a tool whose circuit is open (a mean of 0.05), so
an alternative with the same capability wins while it cools down."""
PLAN_TYPES = frozenset({"roles.assigned", "tools.allocated", "plan.created"})
"""The events that make a plan; they are not published for a task that closed meanwhile."""
NEEDED_BY = "needed by {}"
NAMED_BY_PLAYBOOK = "named by the steps of playbook {}"
"""The reasons of roles.assigned for the roles that the reasoner did not propose."""

Emit = Callable[[Event], Awaitable[None]]
Clock = Callable[[], datetime]


# -- state ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskState:
    """What the SuperAgent knows of one task.

    The events of an unfinished planning are kept so it can go on from them; once the task
    is planned or over only a flag remains, which keeps a long-running worker's state small.
    """

    submitted: Event | None = None
    roles: Event | None = None
    allocation: Event | None = None
    planned: bool = False
    closed: str | None = None

    @property
    def settled(self) -> bool:
        """Whether nothing remains for the SuperAgent to do for this task."""
        return self.planned or self.closed is not None


def evolve(state: TaskState | None, event: Event) -> TaskState:
    """``state`` after ``event``; the first event of each kind wins (a repeat is a redelivery)."""
    state = state or TaskState()
    if event.type == "task.submitted" and state.submitted is None and not state.settled:
        return replace(state, submitted=event)
    if event.type == "roles.assigned" and state.roles is None and not state.settled:
        return replace(state, roles=event)
    if event.type == "tools.allocated" and state.allocation is None and not state.settled:
        return replace(state, allocation=event)
    if event.type == "plan.created" and not state.planned:
        return TaskState(planned=True, closed=state.closed)
    if event.type in TERMINAL_TYPES and state.closed is None:
        return TaskState(planned=state.planned, closed=event.type)
    return state


@dataclass(frozen=True)
class PlanTask:
    """The planning a task still needs. ``roles`` and ``allocation`` are the events of an
    interrupted planning, when the log holds them; they are reused as they are."""

    submitted: Event
    roles: Event | None = None
    allocation: Event | None = None

    key: str = "plan"


def decide(state: TaskState, now: datetime | None = None) -> list[PlanTask]:
    """The planning ``state`` calls for: one PlanTask for a submitted task that is neither
    planned nor over, nothing otherwise (a task cancelled before planning gets no plan).
    Planning has no deadline of its own, so ``now`` is not consulted."""
    if state.submitted is None or state.settled:
        return []
    return [PlanTask(state.submitted, state.roles, state.allocation)]


# -- planning ------------------------------------------------------------------------------
class _Recorder:
    """Turns thoughts and token usage into events derived from the task.submitted event."""

    def __init__(self, cause: Event, emit: Emit, clock: Clock, prices: PriceTable) -> None:
        self.cause, self.emit, self.clock = cause, emit, clock
        self.prices, self.payer = prices, Payer.of(cause)
        self.operation: Operation = "assign_roles"
        self._counts: dict[str, int] = {}

    def _next(self, step: str) -> int:
        self._counts[step] = self._counts.get(step, 0) + 1
        return self._counts[step]

    async def derive(self, payload: EventPayload, step: str) -> None:
        await self.emit(
            self.cause.derive(payload, step=step, actor=ACTOR, occurred_at=self.clock())
        )

    def thoughts(self, operation: Operation) -> Callable[[Thought], Awaitable[None]]:
        """The ``on_thought`` callback of one reasoning operation."""
        self.operation = operation

        async def record(thought: Thought) -> None:
            number = self._next(f"{operation}/thought")
            payload = ThoughtRecorded(
                operation=operation,
                number=number,
                text=thought.text,
                revises=thought.revises,
                branch=thought.branch,
            )
            await self.derive(payload, f"{operation}/thought/{number}")

        return record

    async def usage(self, operation: Operation, usage: Sequence[Usage]) -> None:
        for item in usage:
            number = self._next(f"{operation}/usage")
            payload = usage_recorded(item, operation, self.prices, self.payer)
            await self.derive(payload, f"{operation}/usage/{number}")


@dataclass(frozen=True)
class _Outcome:
    roles: list[RoleSpec]
    reasons: dict[str, tuple[str, float]]
    allocation: Allocation
    plan: Plan
    proposed: frozenset[str] = frozenset()
    sampling: ThompsonDraw | None = None


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SuperAgent:
    """Plans tasks with a reasoner, the role catalog, the tool registry and the playbooks.

    ``offline_only`` restricts allocation to tools that need no network (the rule reasoner
    runs without an LLM, so llm.complete is never allocated); ``model`` and
    ``fallback_models`` are the LLM stages' model and its alternates.
    """

    def __init__(
        self,
        reasoner: Reasoner,
        catalog: RoleCatalog,
        registry: ToolRegistry,
        playbooks: dict[str, Playbook],
        prices: PriceTable = DEFAULT_PRICES,
        *,
        reasoner_kind: Literal["rule", "llm"],
        offline_only: bool,
        model: str | None = None,
        fallback_models: Sequence[str] = (),
        clock: Clock = _utcnow,
    ) -> None:
        self.reasoner = reasoner
        self.catalog = catalog
        self.registry = registry
        self.playbooks = playbooks
        self.prices = prices
        self.reasoner_kind: Literal["rule", "llm"] = reasoner_kind
        self.offline_only = offline_only
        self.model = model
        self.fallback_models = list(fallback_models)
        self.clock = clock
        self.breaker = CircuitBreaker()
        self.priors = Priors()
        self.newest_fit = NewestFit()
        self.mcp: McpToolset | None = None
        """The tools of WRENCH_MCP_SERVERS, listed into ``registry``."""

    def observe(self, event: Event) -> None:
        """Record tool.returned in the circuit breaker and take a newer quality.fitted as
        the tools' posteriors that Thompson sampling draws from, at once; the next load of
        the statistics brings every partition's, and counts nothing twice."""
        self.breaker.observe(event)
        if isinstance(event.payload, QualityFitted):
            self._use_fit(event.payload, event.occurred_at)

    def use_statistics(self, statistics: Statistics) -> None:
        """Take the breakers' calls of every partition and the newest fit."""
        self.breaker.record_all(statistics.outcomes)
        if statistics.fit is not None:
            self._use_fit(statistics.fit.fitted, statistics.fit.fitted_at)

    async def keep_statistics(self, settings: Settings) -> None:
        """Load the statistics now and every WRENCH_STATS_REFRESH_S (a worker's background)."""
        reader = StatisticsReader(settings, outcomes=True, fits=True)
        await keep_fresh(reader, self.use_statistics, settings.stats_refresh_s)

    async def keep_up(self, settings: Settings) -> None:
        """A worker's background: the statistics, and the MCP servers' tools (servers that
        could not be listed are tried again)."""
        if self.mcp is None:
            await self.keep_statistics(settings)
            return
        await asyncio.gather(self.keep_statistics(settings), self.mcp.keep_up())

    def _use_fit(self, fitted: QualityFitted, fitted_at: datetime) -> None:
        if self.newest_fit.offer(fitted, fitted_at):
            self.priors = self.priors.with_fit(fitted)

    @classmethod
    def offline(cls, registry: ToolRegistry | None = None, clock: Clock = _utcnow) -> SuperAgent:
        """The SuperAgent with the rule reasoner and the shipped roles and playbooks."""
        return cls(
            RuleReasoner(),
            load_role_catalog(),
            registry or _builtin_registry(),
            load_playbooks(),
            reasoner_kind="rule",
            offline_only=True,
            clock=clock,
        )

    @classmethod
    def from_settings(cls, settings: Settings, client: LLMClient | None = None) -> SuperAgent:
        """The SuperAgent as configured: the LLM reasoner when WRENCH_LLM_BASE_URL is set
        (through ``client``, or a new LLMClient), the rule reasoner otherwise; the user's
        roles file, playbooks folder, price table and tool modules on top of the shipped
        ones, and the tools of the MCP servers of WRENCH_MCP_SERVERS (listed before the first
        planning)."""
        from processors.shared.toolbox import toolbox

        llm = settings.llm_base_url is not None
        reasoner: Reasoner = LLMReasoner(client or LLMClient(settings)) if llm else RuleReasoner()
        models = settings.llm_models()
        agent = cls(
            reasoner,
            load_role_catalog(settings.roles_file),
            toolbox(settings)[0],
            load_playbooks(settings.playbooks_dir),
            price_table(settings.price_table),
            reasoner_kind="llm" if llm else "rule",
            offline_only=not llm,
            model=models[0] if llm else None,
            fallback_models=models[1:] if llm else (),
        )
        if settings.mcp_server_list():
            from processors.tools.mcp import McpToolset

            agent.mcp = McpToolset.from_settings(settings, agent.registry)
        return agent

    async def run(self, job: PlanTask, emit: Emit) -> None:
        """Plan the task of ``job``, emitting every event through ``emit`` in log order."""
        if self.mcp is not None:
            await self.mcp.ready()  # the playbook may name the MCP servers' tools
        cause = job.submitted
        submitted = cause.payload
        assert isinstance(submitted, TaskSubmitted)
        recorder = _Recorder(cause, emit, self.clock, self.prices)
        brief = TaskBrief(
            task_id=str(cause.task_id),
            description=submitted.description,
            constraints=submitted.constraints or {},
        )
        try:
            outcome = await self._plan(job, brief, recorder, frozenset(submitted.grants))
        except ReasoningError as exc:
            # The tokens of a failed call were spent all the same.
            await recorder.usage(recorder.operation, exc.details.get("usage", []))
            await recorder.derive(_failure(exc), "task.failed")
            return
        except (RoleAssignmentError, PlanningError) as exc:
            await recorder.derive(_failure(exc), "task.failed")
            return
        if job.roles is None:
            await recorder.derive(self._roles_assigned(outcome), "roles.assigned")
        if job.allocation is None:
            allocated = ToolsAllocated.model_validate(
                {**outcome.allocation.model_dump(), "sampling": outcome.sampling}
            )
            await recorder.derive(allocated, "tools.allocated")
        await recorder.derive(PlanCreated.model_validate(outcome.plan.model_dump()), "plan.created")

    async def _plan(
        self, job: PlanTask, brief: TaskBrief, recorder: _Recorder, grants: frozenset[str]
    ) -> _Outcome:
        # Refused before the reasoner is asked: a forbidden task spends no tokens.
        authorize_constraints(brief.constraints, grants)
        forbidden = forbidden_tools(grants)
        reasons: dict[str, tuple[str, float]] = {}
        proposal: RoleProposal | None = None
        if job.roles is None:
            reasoned = await self.reasoner.assign_roles(
                brief, self.catalog, on_thought=recorder.thoughts("assign_roles")
            )
            await recorder.usage("assign_roles", reasoned.usage)
            proposal = reasoned.result
            reasons = {item.role: (item.reason, item.score) for item in proposal.roles}
            candidates = validate_role_assignment(proposal.names(), self.catalog, brief.constraints)
            asked = candidates
        else:
            assigned = job.roles.payload
            assert isinstance(assigned, RolesAssigned)
            candidates = [self.catalog.get(role.name) for role in assigned.roles]
            asked = self._first_candidates(assigned, brief)
        planned = await self.reasoner.plan(
            brief,
            asked,
            self.registry,
            self.playbooks,
            on_thought=recorder.thoughts("plan"),
        )
        await recorder.usage("plan", planned.usage)
        playbook = authorize_playbook(
            validate_playbook(proposed_playbook(planned.result, self.playbooks), self.registry),
            grants,
        )
        roles = candidates
        if proposal is not None:
            # The playbook's steps may name roles the reasoner did not propose.
            roles = validate_role_assignment(
                [*proposal.names(), *playbook_roles(playbook)], self.catalog, brief.constraints
            )
            for name in playbook_roles(playbook):
                reasons.setdefault(name, (NAMED_BY_PLAYBOOK.format(playbook.name), 0.0))
        sampling: ThompsonDraw | None = None
        reliability: dict[str, tuple[float, float]] = {}
        posteriors = self.priors.tool_posteriors()
        if posteriors and job.allocation is None:
            # Thompson sampling: rank tools by one draw from each posterior, seeded by the
            # task so the draw is reproducible, and recorded in tools.allocated.
            seed = uuid.UUID(brief.task_id).int % 2**32
            draws = thompson_draws(posteriors, seed)
            sampling = ThompsonDraw(seed=seed, draws={t: round(d, 6) for t, d in draws.items()})
            reliability = {tool: (max(d, 1e-6), max(1 - d, 1e-6)) for tool, d in draws.items()}
        for tool in self.breaker.open_tools(self.clock()):
            reliability[tool] = OPEN_CIRCUIT_PRIOR
        if job.allocation is None:
            allocation = allocate_tools(
                roles,
                self.registry,
                reliability=reliability,
                offline_only=self.offline_only,
                pinned=playbook_tools(playbook),
                forbidden=forbidden,
            )
        else:
            allocation = Allocation.model_validate(job.allocation.payload.model_dump())
        plan = create_execution_plan(
            brief.description,
            roles,
            playbook,
            allocation,
            self.registry,
            self.prices,
            model=self.model,
            fallback_models=self.fallback_models,
            reliability=reliability,
            forbidden=forbidden,
        )
        proposed = frozenset(proposal.names() if proposal is not None else ())
        return _Outcome(roles, reasons, allocation, plan, proposed, sampling)

    def _first_candidates(self, assigned: RolesAssigned, brief: TaskBrief) -> list[RoleSpec]:
        """The roles the reasoner planned with before the planning was interrupted: the
        logged roles that came from its proposal, with their dependencies.

        The logged roles also hold those the chosen playbook added, and a reasoner given
        more roles may choose another playbook; resuming with the first run's roles makes
        the same plan, and the same thoughts under the same ids, as an uninterrupted run.
        """
        proposed = [role.name for role in assigned.roles if role.source == "proposed"]
        if not proposed:
            return [self.catalog.get(role.name) for role in assigned.roles]
        return validate_role_assignment(proposed, self.catalog, brief.constraints)

    def _roles_assigned(self, outcome: _Outcome) -> RolesAssigned:
        needed_by: dict[str, list[str]] = {}
        for role in outcome.roles:
            for dependency in role.depends_on:
                needed_by.setdefault(dependency, []).append(role.name)
        assigned = []
        for role in outcome.roles:
            default = (NEEDED_BY.format(", ".join(needed_by.get(role.name, []))), 0.0)
            reason, score = outcome.reasons.get(role.name, default)
            source = (
                "proposed"
                if role.name in outcome.proposed
                else "dependency"
                if role.name in needed_by
                else "playbook"
            )
            assigned.append(
                AssignedRole(
                    name=role.name,
                    reason=reason[:2_000],
                    score=score,
                    depends_on=list(role.depends_on),
                    source=source,
                )
            )
        return RolesAssigned(roles=assigned, reasoner=self.reasoner_kind)


def _failure(exc: RoleAssignmentError | PlanningError | ReasoningError) -> TaskFailed:
    """task.failed for a task that cannot be planned: the error's code is the reason."""
    details = {k: v for k, v in exc.details.items() if k != "usage"}
    # Details may hold sets or paths; the log holds JSON.
    details = json.loads(json.dumps(details, default=str))
    return TaskFailed(
        reason=exc.code[:100],
        message=exc.message[:10_000],
        errors=[TaskError(code=exc.code, message=exc.message[:10_000], details=details)],
    )


def worker(settings: Settings) -> Worker[TaskState, PlanTask]:
    """The SuperAgent's faust worker: folds the log with :func:`evolve`, plans what
    :func:`decide` asks for, and never publishes a plan for a task that closed meanwhile."""
    from processors.runtime import Worker

    agent = SuperAgent.from_settings(settings)
    return Worker(
        settings,
        NAME,
        folded_types=FOLDED_TYPES,
        evolve=evolve,
        decide=decide,
        run=agent.run,
        observe=agent.observe,
        suppress=lambda state, event: event.type in PLAN_TYPES and state.closed is not None,
        background=lambda _: agent.keep_up(settings),
        closed=lambda state: state.settled,
    )
