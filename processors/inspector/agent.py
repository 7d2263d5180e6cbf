"""The InspectorAgent: judges every completed step, fits the quality model, watches tasks.

The pure core folds a task's events into an :class:`Inspection` and decides:

- :class:`Evaluate` for every step.completed not yet judged: the output's checks
  (:func:`processors.inspector.quality.evaluate_agent_output`), the conjugate Beta update of the
  (role, tool, model) group's prior, and the decision (accept, retry, escalate), emitted as
  evaluation.recorded with an id derived from the step.completed id. The JourneyAgent acts
  on it.
- :class:`Watch` when the task's alerts change: :mod:`processors.inspector.monitoring` says which
  conditions hold (stalled, over time, over tokens, low quality, repeated failures) and
  which alerts to raise or clear; a timer finds stalled tasks when no event comes.

Across tasks the worker loads the counts per group of every partition's evaluations from the
read models (:mod:`processors.shared.statistics`, every ``WRENCH_STATS_REFRESH_S``), and the worker
that owns partition 0 fits the hierarchical model on them in another process
(:mod:`processors.inspector.quality_fit`) every ``WRENCH_FIT_INTERVAL_S`` or after
``WRENCH_FIT_MIN_NEW`` new evaluations. The fit is published as quality.fitted to every
partition, so every InspectorAgent and SuperAgent worker sees it at once (and the read
models have it for the next load): converged fits become the per-evaluation priors here and
Thompson sampling's posteriors in allocation.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import structlog

from events import (
    TERMINAL_TYPES,
    Actor,
    AlertCleared,
    AlertRaised,
    EvaluationRecorded,
    Event,
    PlanCreated,
    QualityFitted,
    StepCompleted,
    StepStarted,
    TaskSubmitted,
)
from processors.inspector import monitoring
from processors.inspector.alerts import (
    AlertHandler,
    AlertLogHandler,
    WebhookHandler,
    dispatch,
    handlers_from_settings,
)
from processors.inspector.quality import (
    Priors,
    Thresholds,
    decide,
    evaluate_agent_output,
    posterior,
    summary,
)
from processors.reasoning import LLMClient, LLMReasoner, Reasoner, RuleReasoner, TaskBrief
from processors.shared.metering import Payer, usage_recorded
from processors.shared.planning import Stage
from processors.shared.pricing import DEFAULT_PRICES, PriceTable, price_table
from processors.shared.statistics import NewestFit, Statistics, StatisticsReader, keep_fresh
from processors.tools import ToolRegistry, ToolSpec

if TYPE_CHECKING:
    from processors.inspector.quality_fit import GroupCounts
    from processors.runtime import Worker
    from wrenchai.settings import Settings

log = structlog.get_logger(__name__)

NAME = "inspector-agent"
ACTOR = Actor(kind="agent", id=NAME)
PLATFORM_TENANT = "wrenchai"
"""The tenant of platform-wide events (quality fits), which belong to no task."""
FIT_POLL_S = 5.0
REFIT_GROWTH = 0.2
"""A fit before the interval is up needs new evaluations of at least this share of those
the last fit saw (and at least WRENCH_FIT_MIN_NEW)."""

FOLDED_TYPES = frozenset(
    {
        "task.submitted",
        "plan.created",
        "step.started",
        "step.completed",
        "evaluation.recorded",
        "quality.fitted",
        "progress.updated",
        "usage.recorded",
        "step.failed",
        "recovery.planned",
        "tool.called",
        "tool.returned",
        *monitoring.ALERT_TYPES,
        *TERMINAL_TYPES,
    }
)

Emit = Callable[[Event], Awaitable[None]]
GroupKey = tuple[str, str, str | None]


def _utcnow() -> datetime:
    return datetime.now(UTC)


# -- state ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Inspection:
    """What the InspectorAgent knows of one task: its brief, its plan, the attempts it ran,
    the completed attempts awaiting a verdict, and the verdicts given."""

    submitted: Event | None = None
    plan: PlanCreated | None = None
    started: dict[tuple[str, int], StepStarted] = field(default_factory=dict)
    completed: dict[tuple[str, int], Event] = field(default_factory=dict)
    judged: frozenset[tuple[str, int]] = frozenset()
    closed: str | None = None
    watch: monitoring.TaskWatch | None = None


def evolve(state: Inspection | None, event: Event) -> Inspection:
    """``state`` after ``event``; repeats change nothing. Monitoring's view folds every
    event, also after the task ends, so that its open alerts can be cleared."""
    state = state or Inspection()
    state = replace(state, watch=monitoring.evolve(state.watch, event))
    payload = event.payload
    if state.closed is not None:
        return state
    if event.type in TERMINAL_TYPES:
        return Inspection(closed=event.type, submitted=state.submitted, watch=state.watch)
    if isinstance(payload, TaskSubmitted) and state.submitted is None:
        return replace(state, submitted=event)
    if isinstance(payload, PlanCreated) and state.plan is None:
        return replace(state, plan=payload)
    if isinstance(payload, StepStarted):
        key = (payload.stage_id, payload.attempt)
        return replace(state, started={**state.started, key: payload})
    if isinstance(payload, StepCompleted):
        key = (payload.stage_id, payload.attempt)
        if key in state.judged or key in state.completed:
            return state
        return replace(state, completed={**state.completed, key: event})
    if isinstance(payload, EvaluationRecorded):
        key = (payload.stage_id, payload.attempt)
        completed = {k: v for k, v in state.completed.items() if k != key}
        return replace(state, completed=completed, judged=state.judged | {key})
    return state


@dataclass(frozen=True)
class Evaluate:
    """Judge the completed ``attempt`` of a stage."""

    state: Inspection
    stage_id: str
    attempt: int

    @property
    def key(self) -> str:
        return f"evaluate:{self.stage_id}:{self.attempt}"


@dataclass(frozen=True)
class Watch:
    """Raise and clear the task's alerts as ``transitions`` say."""

    state: Inspection
    transitions: tuple[AlertRaised | AlertCleared, ...]

    @property
    def key(self) -> str:
        return "watch:" + ",".join(
            f"{t.alert_id}:{'raised' if isinstance(t, AlertRaised) else 'cleared'}"
            for t in self.transitions
        )


Job = Evaluate | Watch


def decide_inspection(
    state: Inspection, now: datetime, thresholds: monitoring.AlertThresholds | None = None
) -> list[Job]:
    """An Evaluate for each completed attempt without a verdict while the task is open,
    and a Watch when its alerts must change (with ``thresholds``)."""
    jobs: list[Job] = []
    if state.closed is None and state.plan is not None and state.submitted is not None:
        jobs = [Evaluate(state, sid, attempt) for sid, attempt in sorted(state.completed)]
    if thresholds is not None and state.watch is not None and state.submitted is not None:
        transitions = monitoring.watch(state.watch, now, thresholds)
        if transitions:
            jobs.append(Watch(state, tuple(transitions)))
    return jobs


def next_check(
    state: Inspection, now: datetime, thresholds: monitoring.AlertThresholds
) -> datetime | None:
    """When a condition may start to hold with no event: the task's stall time, or the end
    of its time estimate, whichever comes first after ``now``."""
    view = state.watch
    if view is None or not view.is_open or view.last_event_at is None:
        return None
    limits = thresholds.for_task(view.overrides)
    quiet_from = max(view.last_event_at, view.quiet_until or view.last_event_at)
    candidates = [quiet_from + timedelta(seconds=limits.stall_after_s)]
    if view.planned_at is not None and view.estimated_s > 0:
        window = limits.overrun_factor * max(view.estimated_s, monitoring.MIN_ESTIMATE_S)
        candidates.append(view.planned_at + timedelta(seconds=window))
    future = [when for when in candidates if when > now]
    return min(future) + timedelta(milliseconds=1) if future else None


# -- the agent -----------------------------------------------------------------------------
class InspectorAgent:
    """Carries out the inspection jobs and keeps the cross-task quality state."""

    def __init__(
        self,
        reasoner: Reasoner,
        registry: ToolRegistry,
        priors: Priors,
        thresholds: Thresholds,
        *,
        judge_votes: int = 0,
        prices: PriceTable = DEFAULT_PRICES,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.reasoner = reasoner
        self.prices = prices
        self.registry = registry
        self.priors = priors
        self.thresholds = thresholds
        self.judge_votes = judge_votes
        self.clock = clock
        # Evaluations and passed and failed checks per group, of every partition.
        self.counts: dict[GroupKey, list[int]] = {}
        self.evaluations = 0
        self.fitted_at_evaluations = 0
        self.newest_fit = NewestFit()
        # The interval counts from the start, so a worker does not fit on its first
        # evaluations (a fit takes the CPU for tens of seconds).
        self.last_fit = time.monotonic()
        self.handlers: list[AlertHandler] = [AlertLogHandler()]

    @classmethod
    def from_settings(cls, settings: Settings) -> InspectorAgent:
        """As configured: WRENCH_JUDGE_VOTES votes of the LLM as a judge when
        WRENCH_LLM_BASE_URL is set; without an LLM the checks alone decide."""
        from processors.shared.toolbox import toolbox

        llm = settings.llm_base_url is not None
        reasoner: Reasoner = LLMReasoner(LLMClient(settings)) if llm else RuleReasoner()
        return cls(
            reasoner,
            toolbox(settings)[0],
            Priors.from_settings(settings, max_weight=settings.prior_max_weight),
            Thresholds.from_settings(settings),
            # The rule reasoner's verdict is a keyword check of the criteria, which the
            # checks already make: as a judge it would count the same evidence twice.
            judge_votes=settings.judge_votes if llm else 0,
            prices=price_table(settings.price_table),
        )

    def observe(self, event: Event) -> None:
        """Take a fit into the priors at once. Evaluations are counted by the next load of
        the statistics, with every other partition's."""
        payload = event.payload
        if isinstance(payload, QualityFitted):
            self._use_fit(payload, event.occurred_at)

    def use_statistics(self, statistics: Statistics) -> None:
        """Take the counts of every partition's evaluations and the newest fit."""
        self.counts = {key: list(counts) for key, counts in statistics.counts.items()}
        self.evaluations = statistics.evaluations
        self.fitted_at_evaluations = max(self.fitted_at_evaluations, statistics.fitted_evaluations)
        if statistics.fit is not None:
            self._use_fit(statistics.fit.fitted, statistics.fit.fitted_at)

    async def keep_statistics(self, settings: Settings) -> None:
        """Load the statistics now and every WRENCH_STATS_REFRESH_S (a worker's background)."""
        reader = StatisticsReader(settings, evaluations=True, fits=True)
        await keep_fresh(reader, self.use_statistics, settings.stats_refresh_s)

    def _use_fit(self, fitted: QualityFitted, fitted_at: datetime) -> None:
        self.fitted_at_evaluations = max(self.fitted_at_evaluations, fitted.evaluations)
        if self.newest_fit.offer(fitted, fitted_at):
            self.priors = self.priors.with_fit(fitted)

    def _spec(self, started: StepStarted | None) -> ToolSpec | None:
        if started is None:
            return None
        try:
            return self.registry.get(started.tool, f"=={started.tool_version}")
        except Exception:  # a tool this worker does not know: judged without its schema
            return None

    async def run(self, job: Job, emit: Emit) -> None:
        """Carry out ``job``: a verdict, or alert transitions."""
        if isinstance(job, Watch):
            await self._watch(job, emit)
        else:
            await self._evaluate(job, emit)

    async def _watch(self, job: Watch, emit: Emit) -> None:
        """Emit the alert events, then hand them to the alert handlers (log, webhook)."""
        assert job.state.submitted is not None
        now = self.clock()
        for transition in job.transitions:
            # Derived from task.submitted, so the same alert transition has the same id
            # whenever it is decided.
            event = monitoring.alert_event(job.state.submitted, transition, now, ACTOR)
            await emit(event)
            dispatch(self.handlers, event)

    async def _evaluate(self, job: Evaluate, emit: Emit) -> None:
        """Judge one completed attempt and emit evaluation.recorded (and the judge's usage)."""
        state, sid, attempt = job.state, job.stage_id, job.attempt
        assert state.plan is not None and state.submitted is not None
        cause = state.completed[(sid, attempt)]
        completed = cause.payload
        assert isinstance(completed, StepCompleted)
        plan_stage = next(stage for stage in state.plan.stages if stage.id == sid)
        stage = Stage.model_validate(plan_stage.model_dump())
        started = state.started.get((sid, attempt))
        submitted = state.submitted.payload
        assert isinstance(submitted, TaskSubmitted)
        brief = TaskBrief(
            task_id=str(state.submitted.task_id),
            description=submitted.description,
            constraints=submitted.constraints or {},
        )
        checked = await evaluate_agent_output(
            stage,
            completed.output,
            self._spec(started),
            task=brief,
            reasoner=self.reasoner,
            votes=self.judge_votes,
            tool_input=started.input if started else None,
            duration_s=completed.duration_s,
        )
        now = self.clock()
        for number, item in enumerate(checked.usage, start=1):
            spent = usage_recorded(
                item,
                "evaluate",
                self.prices,
                Payer.of(state.submitted),
                stage_id=sid,
                role=stage.role,
                playbook=state.plan.playbook,
            )
            await emit(cause.derive(spent, step=f"judge/{number}", actor=ACTOR, occurred_at=now))
        tool = started.tool if started else stage.tools[0]
        model = started.model if started else stage.model
        prior = self.priors.prior(stage.role, tool, model)
        alpha, beta = posterior(prior.alpha, prior.beta, checked.passed, checked.failed)
        estimate = summary(alpha, beta, self.thresholds.threshold)
        decision, reason = decide(estimate.confidence, attempt, self.thresholds)
        verdict = EvaluationRecorded(
            stage_id=sid,
            attempt=attempt,
            role=stage.role,
            tool=tool,
            model=model,
            checks=list(checked.checks),
            prior_alpha=prior.alpha,
            prior_beta=prior.beta,
            prior_source=prior.source,
            quality_score=round(estimate.mean, 6),
            interval=[round(estimate.interval[0], 6), round(estimate.interval[1], 6)],
            confidence=round(estimate.confidence, 6),
            threshold=self.thresholds.threshold,
            decision=decision,
            reason=reason,
            suggestions=[] if decision == "accept" else list(checked.suggestions),
        )
        await emit(cause.derive(verdict, step="evaluation", actor=ACTOR, occurred_at=now))

    # -- the hierarchical fit ------------------------------------------------------------
    def fit_due(self, settings: Settings, now: float) -> bool:
        """Whether enough new evaluations arrived, or enough time passed with some new.
        Enough is ``WRENCH_FIT_MIN_NEW``, or a fifth of those the last fit saw when that is
        more: a posterior over thousands of evaluations barely moves with fifty more, and
        each fit costs seconds of CPU beside the agents."""
        new = self.evaluations - self.fitted_at_evaluations
        if new <= 0:
            return False
        if new >= max(settings.fit_min_new, int(self.fitted_at_evaluations * REFIT_GROWTH)):
            return True
        return now - self.last_fit >= settings.fit_interval_s

    def fit_input(self) -> list[GroupCounts]:
        """What the fit runs on: every partition's evaluations, per group in sorted order."""
        from processors.inspector.quality_fit import GroupCounts

        return [
            GroupCounts(role, tool, model, *self.counts[(role, tool, model)])
            for role, tool, model in sorted(self.counts, key=lambda k: (k[0], k[1], k[2] or ""))
        ]

    async def fitting(self, worker: Worker[Inspection, Job], settings: Settings) -> None:
        """Fit the quality model when it is due, on the worker that owns partition 0, and
        publish the fit to every partition."""
        from processors.inspector.quality_fit import fit_in_subprocess

        while True:
            await asyncio.sleep(FIT_POLL_S)
            owner = 0 in worker.partitions and worker.partitions[0].ready.is_set()
            if not owner or not self.fit_due(settings, time.monotonic()):
                continue
            self.last_fit = time.monotonic()
            counts = self.fit_input()
            seen = self.evaluations
            try:
                fitted = await fit_in_subprocess(counts, settings, seed=seen)
            except Exception:
                log.exception("quality fit failed", evaluations=seen)
                continue
            fitted = fitted.model_copy(update={"evaluations": seen})
            await self._broadcast(worker, fitted)
            log.info(
                "quality model fitted",
                fit_id=fitted.fit_id,
                converged=fitted.converged,
                groups=len(fitted.groups),
                evaluations=seen,
                seconds=fitted.seconds,
            )

    async def _broadcast(self, worker: Worker[Inspection, Job], fitted: QualityFitted) -> None:
        event = Event.new(
            fitted,
            tenant_id=PLATFORM_TENANT,
            actor=ACTOR,
            event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"wrench:quality.fitted:{fitted.fit_id}"),
            occurred_at=self.clock(),
        )
        await worker.codec.prepare_events([event])
        record = worker.codec.encode(event)
        count = await worker.producer.partitions(worker.topic)
        # One copy per partition, same id: every worker sees it on a partition it owns, and
        # the projector applies it once and archives the others as duplicates.
        for partition in range(count):
            await worker.producer.send_records(worker.topic, [record], partition=partition)


def worker(settings: Settings) -> Worker[Inspection, Job]:
    """The InspectorAgent's faust worker."""
    from processors.runtime import Worker

    agent = InspectorAgent.from_settings(settings)
    agent.handlers = handlers_from_settings(settings)
    thresholds = monitoring.AlertThresholds.from_settings(settings)

    async def background(running: Worker[Inspection, Job]) -> None:
        for handler in agent.handlers:
            if isinstance(handler, WebhookHandler):
                handler.start()
        await asyncio.gather(agent.fitting(running, settings), agent.keep_statistics(settings))

    return Worker(
        settings,
        NAME,
        folded_types=FOLDED_TYPES,
        evolve=evolve,
        decide=lambda state, now: decide_inspection(state, now, thresholds),
        run=agent.run,
        observe=agent.observe,
        deadline=lambda state: next_check(state, datetime.now(UTC), thresholds),
        closed=lambda state: state.closed is not None,
        background=background,
    )
