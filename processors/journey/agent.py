"""The JourneyAgent: runs the plans the SuperAgent makes, stage by stage, with tools.

Its pure core is :mod:`processors.journey.execution` (what the log says and what to do next) and
:mod:`processors.journey.recovery` (what to do about a failure); this module carries the jobs out
and emits the events that record them. Every event takes its id from the plan.created (or,
for a timeout before any plan, the task.submitted) id and a step name such as
``search/2/started``, so a job run again after a crash emits the same ids.

An attempt of a stage: step.started (the input with upstream outputs filled in), then
tool.called, the call (or an earlier identical call's result, for an idempotent tool), then
tool.returned, usage.recorded for an LLM call, and step.completed or step.failed. A failed
attempt gets recovery.planned (from the stage's fallbacks, the error's category and the
reasoner's analysis) and then recovery.executed when it is carried out.

It never calls a tool the task's submitter did not allow (task.submitted ``grants``), even
when a plan names one: such a plan fails the task with FORBIDDEN_TOOL before any stage
starts, and a call that reaches a forbidden tool all the same fails as FORBIDDEN_TOOL,
fatal, without running it.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import ValidationError

from events import (
    Actor,
    Event,
    EventPayload,
    PlanCreated,
    ProgressUpdated,
    RecoveryExecuted,
    StepCompleted,
    StepError,
    StepFailed,
    StepStarted,
    TaskCompleted,
    TaskError,
    TaskFailed,
    TaskSubmitted,
    ThoughtRecorded,
    ToolCalled,
    ToolReturned,
    UsageRecorded,
    canonical_json,
)
from processors.cost.preflight import Preflight
from processors.journey.execution import (
    FOLDED_TYPES,
    Complete,
    Escalate,
    Job,
    Journey,
    Progress,
    Recover,
    Refuse,
    RunStage,
    Skip,
    TimeOut,
    cache_key,
    deadline,
    decide,
    evolve,
)
from processors.journey.recovery import classify, handle_error
from processors.reasoning import (
    ErrorAnalysis,
    LLMClient,
    LLMReasoner,
    Reasoner,
    ReasoningError,
    RuleReasoner,
    TaskBrief,
    Thought,
    Usage,
)
from processors.shared.metering import Payer, usage_recorded
from processors.shared.playbook import PlaybookError, fit_to_schema, resolve_outputs
from processors.shared.pricing import DEFAULT_PRICES, PriceTable, price_table
from processors.shared.statistics import Statistics, StatisticsReader, keep_fresh
from processors.shared.tokens import count_prompt_tokens
from processors.shared.tool_usage import CircuitBreaker, ToolStats, input_hash, optimize_tool_usage
from processors.tools import PlanningError, ToolRegistry, ToolSpec
from processors.tools.allocation import TOOL_SCOPES, forbidden_message
from processors.tools.builtin import Tool, ToolError
from wrenchai import metrics

if TYPE_CHECKING:
    from processors.runtime import Worker
    from processors.tools.mcp import McpToolset
    from wrenchai.settings import Settings

log = structlog.get_logger(__name__)

NAME = "journey-agent"
ACTOR = Actor(kind="agent", id=NAME)
CLOSING_TYPES = frozenset({"task.completed", "task.failed", "progress.updated"})
NOT_CALLED = frozenset({"CIRCUIT_OPEN", "UNKNOWN_TOOL", "FORBIDDEN_TOOL"})
"""Error codes of a call that never reached the tool (so it costs nothing)."""

Emit = Callable[[Event], Awaitable[None]]
Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _json_safe(details: Mapping[str, Any]) -> dict[str, Any]:
    safe: dict[str, Any] = json.loads(json.dumps(dict(details), default=str))
    return safe


class _Derive:
    """Emits events derived from the task's plan.created (or task.submitted)."""

    def __init__(self, journey: Journey, emit: Emit, clock: Clock) -> None:
        cause = journey.plan or journey.submitted
        assert cause is not None
        self.cause, self.emit, self.clock = cause, emit, clock

    async def __call__(self, payload: EventPayload, step: str) -> None:
        event = self.cause.derive(payload, step=step, actor=ACTOR, occurred_at=self.clock())
        await self.emit(event)


class JourneyAgent:
    """Carries out the jobs of :func:`processors.journey.execution.decide` with tools and a
    reasoner.

    ``stats`` and ``breaker`` order a stage's tools and keep failing tools out of use. Both
    come from every partition's tool calls in the read models (:meth:`use_statistics`,
    every WRENCH_STATS_REFRESH_S); the breaker also records at once the calls this worker
    sees (:meth:`observe`), and counts each call once either way.
    """

    def __init__(
        self,
        reasoner: Reasoner,
        registry: ToolRegistry,
        tools: Mapping[str, Tool],
        prices: PriceTable = DEFAULT_PRICES,
        *,
        max_event_bytes: int = 524_288,
        preflight: Preflight | None = None,
        clock: Clock = _utcnow,
        rng: random.Random | None = None,
    ) -> None:
        self.reasoner = reasoner
        self.preflight = preflight
        self.registry = registry
        self.tools = dict(tools)
        self.prices = prices
        self.max_event_bytes = max_event_bytes
        self.clock = clock
        self.rng = rng or random.Random()
        self.stats = ToolStats()
        self.breaker = CircuitBreaker()
        self.mcp: McpToolset | None = None
        """The tools of WRENCH_MCP_SERVERS, listed into ``registry`` and ``tools``."""

    @classmethod
    def from_settings(cls, settings: Settings) -> JourneyAgent:
        """As configured: the LLM reasoner when WRENCH_LLM_BASE_URL is set, the rule reasoner
        otherwise; the built-in tools, those of WRENCH_TOOL_MODULES and those of the MCP
        servers of WRENCH_MCP_SERVERS (listed before the first job)."""
        from processors.shared.toolbox import toolbox

        registry, tools = toolbox(settings)
        llm = settings.llm_base_url is not None
        reasoner: Reasoner = LLMReasoner(LLMClient(settings)) if llm else RuleReasoner()
        prices = price_table(settings.price_table)
        agent = cls(
            reasoner,
            registry,
            tools,
            prices,
            max_event_bytes=settings.max_event_bytes,
            preflight=Preflight(settings),
        )
        if settings.mcp_server_list():
            from processors.tools.mcp import McpToolset

            agent.mcp = McpToolset.from_settings(settings, agent.registry, agent.tools)
        return agent

    def observe(self, event: Event) -> None:
        """Record a tool.returned in the circuit breaker at once. The statistics wait for
        the next load, which counts it with every other partition's calls."""
        self.breaker.observe(event)

    def use_statistics(self, statistics: Statistics) -> None:
        """Take the tool statistics and the breakers' calls of every partition."""
        self.stats.load(statistics.tools)
        self.breaker.record_all(statistics.outcomes)

    async def keep_statistics(self, settings: Settings) -> None:
        """Load the statistics now and every WRENCH_STATS_REFRESH_S (a worker's background)."""
        reader = StatisticsReader(settings, tools=True, outcomes=True)
        await keep_fresh(reader, self.use_statistics, settings.stats_refresh_s)

    async def keep_up(self, settings: Settings) -> None:
        """A worker's background: the statistics, and the MCP servers' tools (servers that
        could not be listed are tried again; their connections close when it is cancelled)."""
        if self.mcp is None:
            await self.keep_statistics(settings)
            return
        await asyncio.gather(self.keep_statistics(settings), self.mcp.keep_up())

    async def run(self, job: Job, emit: Emit) -> None:
        """Carry out ``job``, emitting its events in log order."""
        if self.mcp is not None:
            await self.mcp.ready()  # a plan may name the MCP servers' tools
        derive = _Derive(job.journey, emit, self.clock)
        if isinstance(job, RunStage):
            await self._run_stage(job, derive)
        elif isinstance(job, Recover):
            await self._recover(job, derive)
        elif isinstance(job, Skip):
            await derive(
                RecoveryExecuted(stage_id=job.stage_id, attempt=job.attempt, action="skip"),
                f"{job.stage_id}/{job.attempt}/recovery.executed",
            )
        elif isinstance(job, Escalate):
            await self._escalate(job, derive)
        elif isinstance(job, Progress):
            await derive(self._progress(job.journey), f"progress/{job.settled}")
        elif isinstance(job, Complete):
            await derive(self._completed(job.journey), "task.completed")
        elif isinstance(job, TimeOut):
            await derive(self._timed_out(job.journey), "task.failed/timeout")
        elif isinstance(job, Refuse):
            await derive(_refused(job), "task.failed/forbidden")

    # -- a stage's attempt ---------------------------------------------------------------
    def _spec(self, stage_tools: list[str], version: str, tool: str) -> ToolSpec:
        if tool == stage_tools[0]:
            return self.registry.get(tool, f"=={version}")
        return self.registry.get(tool)

    async def _stage_spec(self, stage_tools: list[str], version: str, tool: str) -> ToolSpec:
        """The descriptor to run ``tool`` with. For an MCP server's tool this worker could not
        list (or whose server changed its version) the MCP toolset gives one, whose call
        fails transiently when the server is down, so recovery moves on to the fallback."""
        try:
            return self._spec(stage_tools, version, tool)
        except PlanningError:
            planned = version if tool == stage_tools[0] else None
            spec = None if self.mcp is None else await self.mcp.stand_in(tool, planned)
            if spec is None:
                raise
            return spec

    async def _run_stage(self, job: RunStage, derive: _Derive) -> None:
        journey, sid, attempt = job.journey, job.stage_id, job.attempt
        run = journey.stages[sid]
        plan = journey.plan.payload if journey.plan else None
        assert isinstance(plan, PlanCreated)
        if job.recovery is not None:
            executed = RecoveryExecuted(
                stage_id=sid,
                attempt=attempt - 1,
                action=job.recovery.action,
                next_attempt=attempt,
            )
            await derive(executed, f"{sid}/{attempt - 1}/recovery.executed")
        tool = job.tool
        if attempt == 1 and not job.resumed:
            tool = optimize_tool_usage(
                run.stage.tools, plan.playbook, self.stats, self.breaker, self.clock()
            )[0]
        spec = await self._stage_spec(run.stage.tools, run.stage.tool_version, tool)
        key = f"{job.journey.plan.task_id if job.journey.plan else ''}:{sid}:{attempt}"
        started = time.monotonic()
        try:
            tool_input = fit_to_schema(
                resolve_outputs(run.stage.tool_input, journey.inputs), spec.input_schema
            )
        except PlaybookError as exc:
            tool_input = dict(run.stage.tool_input)
            failure = StepError(code=exc.code, message=exc.message, category="fatal")
            await derive(self._started(job, spec, tool_input, key), f"{sid}/{attempt}/started")
            await derive(
                StepFailed(stage_id=sid, attempt=attempt, error=failure, duration_s=0.0),
                f"{sid}/{attempt}/failed",
            )
            metrics.observe_step(spec.name, "failed", 0.0)
            return
        if spec.uses_llm and job.model:
            tool_input = {**tool_input, "model": job.model}
        if spec.uses_llm and run.suggestions and isinstance(tool_input.get("prompt"), str):
            # A retry after a rejected output tells the model what the review asked for.
            points = "\n".join(f"- {text}" for text in run.suggestions)
            tool_input = {
                **tool_input,
                "prompt": f"{tool_input['prompt']}\n\nA review of an earlier answer asked "
                f"for these changes:\n{points}",
            }
        await derive(self._started(job, spec, tool_input, key), f"{sid}/{attempt}/started")
        refused = await self._over_budget(journey, run.stage.role, spec, sid, tool_input)
        if refused is not None:
            failure = StepError(code="BUDGET_EXCEEDED", message=refused, category="budget")
            await derive(
                StepFailed(stage_id=sid, attempt=attempt, error=failure, duration_s=0.0),
                f"{sid}/{attempt}/failed",
            )
            metrics.observe_step(spec.name, "failed", 0.0)
            return
        digest = input_hash(tool_input)
        called = ToolCalled(
            stage_id=sid,
            attempt=attempt,
            tool=spec.name,
            version=spec.version,
            input_hash=digest,
            idempotency_key=key,
        )
        await derive(called, f"{sid}/{attempt}/tool.called")
        result, error, cached, seconds = await self._call(job, spec, tool_input, key, digest)
        returned = ToolReturned(
            stage_id=sid,
            attempt=attempt,
            tool=spec.name,
            version=spec.version,
            outcome="ok" if error is None else "error",
            duration_s=round(seconds, 6),
            result=result if error is None else None,
            error=error,
            cached=cached,
            input_hash=digest,
            task_type=plan.playbook,
            cost_usd=0.0
            if cached or (error is not None and error.code in NOT_CALLED)
            else self._cost(spec, result if error is None else None),
        )
        await derive(returned, f"{sid}/{attempt}/tool.returned")
        if error is None and spec.uses_llm and not cached and isinstance(result, dict):
            spent = self._llm_usage(journey, run.stage.role, spec.name, sid, result)
            if spent is not None:
                await derive(spent, f"{sid}/{attempt}/usage")
        duration = round(time.monotonic() - started, 6)
        metrics.observe_step(spec.name, "completed" if error is None else "failed", duration)
        if error is None:
            completed = StepCompleted(
                stage_id=sid, attempt=attempt, output=result, duration_s=duration
            )
            await derive(completed, f"{sid}/{attempt}/completed")
        else:
            failed = StepFailed(stage_id=sid, attempt=attempt, error=error, duration_s=duration)
            await derive(failed, f"{sid}/{attempt}/failed")

    def _started(
        self, job: RunStage, spec: ToolSpec, tool_input: dict[str, Any], key: str
    ) -> StepStarted:
        return StepStarted(
            stage_id=job.stage_id,
            attempt=job.attempt,
            tool=spec.name,
            tool_version=spec.version,
            model=job.model if spec.uses_llm else None,
            input=tool_input,
            idempotency_key=key,
            suggestions=list(job.journey.stages[job.stage_id].suggestions),
        )

    async def _call(
        self, job: RunStage, spec: ToolSpec, tool_input: dict[str, Any], key: str, digest: str
    ) -> tuple[Any, StepError | None, bool, float]:
        """(result, error, cached, seconds) of one call of the stage's tool."""
        stage = job.journey.stages[job.stage_id].stage
        remembered = job.journey.cache.get(cache_key(spec.name, spec.version, digest))
        # A later attempt of a stage is a retry of a call that failed or was rejected: the
        # remembered result is the one that was not good enough.
        if spec.idempotent and remembered is not None and job.attempt == 1:
            return remembered, None, True, 0.0
        if spec.name in job.journey.forbidden:
            # Unreachable through a plan the SuperAgent made, and execution.decide refuses
            # any other plan naming the tool; this is the last fence before the call.
            message = forbidden_message(spec.name, f"stage {job.stage_id}")
            error = StepError(
                code="FORBIDDEN_TOOL",
                message=message,
                category="fatal",
                details={"tool": spec.name, "scope": TOOL_SCOPES[spec.name]},
            )
            return None, error, False, 0.0
        tool = self.tools.get(spec.name)
        if tool is None:
            message = f"no implementation of {spec.ref} is loaded; add it with WRENCH_TOOL_MODULES"
            return (
                None,
                StepError(code="UNKNOWN_TOOL", message=message, category="fatal"),
                False,
                0.0,
            )
        if self.breaker.is_open(spec.name, self.clock()):
            message = f"the circuit of {spec.name} is open after repeated failures; cooling down"
            error = StepError(
                code="CIRCUIT_OPEN", message=message, category="transient", transient=True
            )
            return None, error, False, 0.0
        started = time.monotonic()
        try:
            result = await asyncio.wait_for(
                tool.call(tool_input, idempotency_key=key), timeout=stage.timeout
            )
        except ToolError as exc:
            error = StepError(
                code=exc.code,
                message=exc.message[:10_000],
                category=classify(
                    exc.code, exc.transient, output_schema="output schema" in exc.message
                ),
                transient=exc.transient,
                details=_json_safe(exc.details),
            )
            return None, error, False, time.monotonic() - started
        except TimeoutError:
            message = f"stage {job.stage_id} did not finish within its {stage.timeout} s"
            error = StepError(
                code="STEP_TIMEOUT", message=message, category="transient", transient=True
            )
            return None, error, False, time.monotonic() - started
        seconds = time.monotonic() - started
        size = len(canonical_json(result))
        if size > self.max_event_bytes:
            message = (
                f"{spec.name} returned {size} bytes, more than the {self.max_event_bytes} an "
                "event may carry (WRENCH_MAX_EVENT_BYTES); ask the tool for less"
            )
            error = StepError(code="OUTPUT_TOO_LARGE", message=message, category="invalid_output")
            return None, error, False, seconds
        return result, None, False, seconds

    def _cost(self, spec: ToolSpec, result: Any) -> float:
        """The tool's price per call, plus what its LLM request cost when the table prices
        the model (an unpriced model's usage says so; the step counts the call alone)."""
        cost = self.prices.tool_price(spec.name, spec.cost.usd_per_call)
        usage = _tool_usage(result) if spec.uses_llm else None
        if usage is not None:
            llm = self.prices.cost(
                usage.model,
                usage.input_tokens,
                usage.output_tokens,
                usage.cached_tokens,
                usage.reasoning_tokens,
            )
            cost += llm or 0.0
        return round(cost, 8)

    async def _over_budget(
        self, journey: Journey, role: str, spec: ToolSpec, stage_id: str, tool_input: Any
    ) -> str | None:
        """Why the LLM call ``tool_input`` asks for may not be made (a hard budget it would
        pass), or None: estimated from its prompt and at most ``max_tokens`` of answer."""
        if self.preflight is None or not spec.uses_llm or journey.submitted is None:
            return None
        messages = [
            {"role": role_name, "content": tool_input[field]}
            for role_name, field in (("system", "system"), ("user", "prompt"))
            if isinstance(tool_input.get(field), str)
        ]
        prompt = count_prompt_tokens(messages)
        limit = tool_input.get("max_tokens")
        completion = limit if isinstance(limit, int) else spec.cost.tokens_per_call
        model = str(tool_input.get("model") or self.prices.default_model)
        estimate = usage_recorded(
            Usage(model=model, input_tokens=prompt, output_tokens=completion, source="estimated"),
            "execute",
            self.prices,
            Payer.of(journey.submitted),
            stage_id=stage_id,
            role=role,
            tool=spec.name,
            playbook=_playbook(journey),
        )
        # An unpriced model is estimated at the default model's price, never as free.
        estimate = estimate.model_copy(
            update={"cost_usd": self.prices.model_price(model).cost(prompt, completion)}
        )
        submitted = journey.submitted
        assert submitted.task_id is not None
        refused = await self.preflight.check(submitted.tenant_id, submitted.task_id, estimate)
        return None if refused is None else refused.message

    def _llm_usage(
        self, journey: Journey, role: str, tool: str, stage_id: str, result: Any
    ) -> UsageRecorded | None:
        usage = _tool_usage(result)
        if usage is None:
            return None
        return usage_recorded(
            usage,
            "execute",
            self.prices,
            Payer.of(journey.submitted),
            stage_id=stage_id,
            role=role,
            tool=tool,
            playbook=_playbook(journey),
        )

    # -- recovery ------------------------------------------------------------------------
    async def _recover(self, job: Recover, derive: _Derive) -> None:
        journey, sid, attempt = job.journey, job.stage_id, job.attempt
        run = journey.stages[sid]
        error = run.last_error
        assert error is not None and journey.submitted is not None
        submitted = journey.submitted.payload
        assert isinstance(submitted, TaskSubmitted)
        brief = TaskBrief(
            task_id=str(journey.submitted.task_id),
            description=submitted.description,
            constraints=submitted.constraints or {},
        )
        count = 0

        async def thought(item: Thought) -> None:
            nonlocal count
            count += 1
            recorded = ThoughtRecorded(
                operation="analyse_error",
                number=count,
                text=item.text,
                revises=item.revises,
                branch=item.branch,
                stage_id=sid,
            )
            await derive(recorded, f"{sid}/{attempt}/thought/{count}")

        analysis: ErrorAnalysis | None = None
        usage: list[Usage] = []
        try:
            if error.category != "budget":  # asking the model would spend more of it
                reasoned = await self.reasoner.analyse_error(
                    brief, sid, error.model_dump(), on_thought=thought
                )
                analysis, usage = reasoned.result, list(reasoned.usage)
        except ReasoningError as exc:
            # Without the model's view the error's own classification still decides.
            usage = list(exc.details.get("usage", []))
            log.warning("error analysis failed; recovering by the error's category", code=exc.code)
        for number, item in enumerate(usage, start=1):
            spent = usage_recorded(
                item,
                "analyse_error",
                self.prices,
                Payer.of(journey.submitted),
                stage_id=sid,
                role=run.stage.role,
                playbook=_playbook(journey),
            )
            await derive(spent, f"{sid}/{attempt}/analysis-usage/{number}")
        planned = handle_error(
            run, error, analysis, self.breaker.open_tools(self.clock()), self.rng
        )
        await derive(planned, f"{sid}/{attempt}/recovery.planned")

    async def _escalate(self, job: Escalate, derive: _Derive) -> None:
        sid, run = job.stage_id, job.journey.stages[job.stage_id]
        executed = RecoveryExecuted(stage_id=sid, attempt=job.attempt, action="escalate")
        await derive(executed, f"{sid}/{job.attempt}/recovery.executed")
        chain = [
            TaskError(
                code=error.code,
                message=error.message,
                details={"stage_id": sid, "attempt": number, "category": error.category},
            )
            for number, error in run.errors
        ]
        last = run.last_error
        failed = TaskFailed(
            reason="BUDGET_EXCEEDED" if last and last.code == "BUDGET_EXCEEDED" else "STAGE_FAILED",
            message=f"stage {sid} failed after {len(run.errors)} attempt(s) and recovery "
            f"ran out of fallbacks; last error {last.code if last else 'unknown'}: "
            f"{last.message if last else ''}"[:10_000],
            errors=chain,
        )
        await derive(failed, f"task.failed/escalate/{sid}")

    # -- the task ------------------------------------------------------------------------
    def _elapsed(self, journey: Journey) -> float:
        assert journey.submitted is not None
        return max(0.0, (self.clock() - journey.submitted.occurred_at).total_seconds())

    def _progress(self, journey: Journey) -> ProgressUpdated:
        plan = journey.plan.payload if journey.plan else None
        assert isinstance(plan, PlanCreated)
        runs = journey.stages.values()
        return ProgressUpdated(
            stages_done=sum(run.status == "completed" for run in runs),
            stages_total=len(journey.stages),
            stages_failed=sum(run.status in ("failed", "recovering") for run in runs),
            stages_skipped=sum(run.status == "skipped" for run in runs),
            elapsed_s=round(self._elapsed(journey), 3),
            estimated_s=plan.critical_path_seconds or plan.total.seconds,
            tokens=journey.tokens,
            estimated_tokens=plan.total.tokens,
            cost_usd=round(journey.cost_usd, 8),
            estimated_cost_usd=plan.total.cost_usd,
        )

    def _completed(self, journey: Journey) -> TaskCompleted:
        """The compiled results: the final output (that of the last stage nothing depends
        on), every stage's output, and the totals."""
        outputs = journey.outputs
        # The final output is that of the last completed stage no completed stage reads on
        # from; a skipped last stage leaves the one before it as the result.
        needed = {
            dep
            for run in journey.stages.values()
            if run.stage.id in outputs
            for dep in run.stage.depends_on
        }
        finals = [sid for sid in journey.stages if sid in outputs and sid not in needed]
        final = outputs[finals[-1]] if finals else None
        skipped = [sid for sid, run in journey.stages.items() if run.status == "skipped"]
        elapsed = round(self._elapsed(journey), 3)
        totals = {
            "stages": len(journey.stages),
            "completed": len(outputs),
            "skipped": len(skipped),
            "attempts": sum(run.attempt for run in journey.stages.values()),
            "elapsed_s": elapsed,
            "tokens": journey.tokens,
            "cost_usd": round(journey.cost_usd, 8),
        }
        summary = (
            f"{len(outputs)} of {len(journey.stages)} stages completed"
            f"{f', {len(skipped)} skipped' if skipped else ''} in {elapsed:.1f} s"
        )
        output = {
            "final": final,
            "final_stage": finals[-1] if finals else None,
            "stages": outputs,
            "skipped": skipped,
            "totals": totals,
        }
        return TaskCompleted(output=output, summary=summary)

    def _timed_out(self, journey: Journey) -> TaskFailed:
        assert journey.submitted is not None
        submitted = journey.submitted.payload
        assert isinstance(submitted, TaskSubmitted)
        running = [sid for sid, run in journey.stages.items() if run.status == "running"]
        message = f"the task did not finish within its timeout of {submitted.timeout} s"
        return TaskFailed(
            reason="TIMEOUT",
            message=message,
            errors=[TaskError(code="TIMEOUT", message=message, details={"running": running})],
        )


def _stages(stages: list[str]) -> str:
    return f"stage{'s' if len(stages) > 1 else ''} {', '.join(stages)}"


def _refused(job: Refuse) -> TaskFailed:
    """task.failed for a plan naming tools the task may not use: nothing of it runs."""
    errors = [
        TaskError(
            code="FORBIDDEN_TOOL",
            message=forbidden_message(tool, f"{_stages(stages)} of the plan"),
            details={"tool": tool, "scope": job.scopes().get(tool), "stages": stages},
        )
        for tool, stages in job.tools.items()
    ]
    return TaskFailed(
        reason="FORBIDDEN_TOOL",
        message=f"the plan was refused and none of its stages ran: {errors[0].message}"[:10_000],
        errors=errors,
    )


def worker(settings: Settings) -> Worker[Journey, Job]:
    """The JourneyAgent's faust worker."""
    from processors.runtime import Worker

    agent = JourneyAgent.from_settings(settings)
    limit, judged = settings.max_parallel_stages, settings.require_acceptance
    return Worker(
        settings,
        NAME,
        folded_types=FOLDED_TYPES,
        evolve=evolve,
        decide=lambda journey, now: decide(journey, now, limit, judged),
        run=agent.run,
        suppress=lambda journey, event: journey.closed is not None and event.type in CLOSING_TYPES,
        observe=agent.observe,
        deadline=deadline,
        background=lambda _: agent.keep_up(settings),
        closed=lambda journey: journey.closed is not None,
    )


def _tool_usage(result: Any) -> Usage | None:
    """The usage an LLM tool's result reports (llm.complete's ``model`` and ``usage``), or
    None when it reports none that reads as usage."""
    if not isinstance(result, dict) or not isinstance(result.get("usage"), dict):
        return None
    try:
        return Usage.model_validate(
            {"model": str(result.get("model") or "unknown"), **result["usage"]}
        )
    except ValidationError:
        log.warning("an LLM tool reported usage that does not read as usage; not recorded")
        return None


def _playbook(journey: Journey) -> str | None:
    """The playbook the task's plan was built from, if it names one."""
    plan = journey.plan.payload if journey.plan is not None else None
    return plan.playbook if isinstance(plan, PlanCreated) else None
