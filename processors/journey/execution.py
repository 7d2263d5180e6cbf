"""The JourneyAgent's pure core: a task's execution folded from the log, and what is next.

:func:`evolve` folds a task's events into a :class:`Journey`: the plan's stages with their
status, attempts, outputs and errors. :func:`decide` lists the jobs the journey calls for
at a moment in time:

- :class:`RunStage` for each stage whose dependencies are complete (or skipped), at most
  ``max_parallel`` at once, and for each stage that started and never finished (after a
  crash it runs again, with the same attempt and so the same idempotency key);
- :class:`Recover` for a failed attempt that has no recovery yet, then, once
  recovery.planned is on the log, the next attempt (:class:`RunStage`), :class:`Skip` or
  :class:`Escalate`;
- :class:`Progress` when more stages have settled than the last progress.updated said;
- :class:`Complete` once every stage is complete or skipped;
- :class:`TimeOut` once the task's timeout has passed; it is then the only job, so the
  worker cancels every running step;
- :class:`Refuse` for a plan that names a tool the task may not use (code.python without
  ``tools:code`` in task.submitted ``grants``): the SuperAgent never makes such a plan, so
  one on the log is refused whole, before any of its stages starts.

A closed task (completed, failed or cancelled) calls for nothing, so its running steps are
cancelled and none start.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from events import (
    TERMINAL_TYPES,
    EvaluationRecorded,
    Event,
    PlanCreated,
    PlanStage,
    ProgressUpdated,
    RecoveryExecuted,
    RecoveryPlanned,
    StepCompleted,
    StepError,
    StepFailed,
    StepStarted,
    TaskSubmitted,
    ToolReturned,
    UsageRecorded,
)
from processors.tools.allocation import TOOL_SCOPES, forbidden_tools

StageStatus = Literal["pending", "running", "completed", "failed", "recovering", "skipped"]
SETTLED = frozenset({"completed", "skipped"})

FOLDED_TYPES = frozenset(
    {
        "task.submitted",
        "plan.created",
        "step.started",
        "step.completed",
        "step.failed",
        "tool.returned",
        "usage.recorded",
        "recovery.planned",
        "recovery.executed",
        "progress.updated",
        "evaluation.recorded",
        *TERMINAL_TYPES,
    }
)
"""The event types the JourneyAgent folds; it skips the others unread."""


def cache_key(tool: str, version: str, input_hash: str) -> str:
    """Where an idempotent tool's result is remembered for the task's lifetime."""
    return f"{tool}=={version}#{input_hash}"


@dataclass(frozen=True)
class StageRun:
    """One stage of the plan as it runs.

    ``attempt`` is the last attempt started (0 before the first); ``tool`` and ``model``
    serve the current attempt, or the next one once a recovery has chosen them; ``tried``
    holds every (tool, model) used so far; ``retries`` counts retry recoveries.
    """

    stage: PlanStage
    tool: str
    model: str | None
    status: StageStatus = "pending"
    attempt: int = 0
    started_at: datetime | None = None
    output: Any = None
    errors: tuple[tuple[int, StepError], ...] = ()
    recovery: RecoveryPlanned | None = None
    recovery_at: datetime | None = None
    tried: frozenset[tuple[str, str | None]] = frozenset()
    retries: int = 0
    accepted: bool = False
    suggestions: tuple[str, ...] = ()

    @property
    def last_error(self) -> StepError | None:
        """The error of the latest failed attempt."""
        return self.errors[-1][1] if self.errors else None


@dataclass(frozen=True)
class Journey:
    """What the JourneyAgent knows of one task."""

    submitted: Event | None = None
    plan: Event | None = None
    stages: dict[str, StageRun] = field(default_factory=dict)
    closed: str | None = None
    cache: dict[str, Any] = field(default_factory=dict)
    tokens: int = 0
    cost_usd: float = 0.0
    reported: int = 0
    # Ids of the tool.returned and usage.recorded events whose cost or tokens are counted:
    # delivery is at-least-once, and a repeat must not count twice.
    counted: frozenset[uuid.UUID] = frozenset()

    @property
    def deadline(self) -> datetime | None:
        """When the task's timeout ends it; None once it is over or before it is known."""
        if self.closed is not None or self.submitted is None:
            return None
        payload = self.submitted.payload
        assert isinstance(payload, TaskSubmitted)
        return self.submitted.occurred_at + timedelta(seconds=payload.timeout)

    @property
    def forbidden(self) -> frozenset[str]:
        """The tools this task may not use: those whose scope its submitter did not grant
        (every such tool while the submission is unknown)."""
        payload = self.submitted.payload if self.submitted is not None else None
        grants = payload.grants if isinstance(payload, TaskSubmitted) else ()
        return forbidden_tools(grants)

    @property
    def settled(self) -> int:
        """How many stages are complete or skipped."""
        return sum(run.status in SETTLED for run in self.stages.values())

    @property
    def outputs(self) -> dict[str, Any]:
        """The output of every completed stage, by stage id."""
        return {sid: run.output for sid, run in self.stages.items() if run.status == "completed"}

    @property
    def inputs(self) -> dict[str, Any]:
        """What later stages read: completed stages' outputs, and None for skipped ones."""
        skipped = {sid: None for sid, run in self.stages.items() if run.status == "skipped"}
        return {**skipped, **self.outputs}


def _stages(plan: PlanCreated) -> dict[str, StageRun]:
    return {s.id: StageRun(stage=s, tool=s.tools[0], model=s.model) for s in plan.stages}


def _stage(journey: Journey, stage_id: str, **changes: Any) -> Journey:
    stages = dict(journey.stages)
    stages[stage_id] = replace(stages[stage_id], **changes)
    return replace(journey, stages=stages)


def evolve(journey: Journey | None, event: Event) -> Journey:
    """``journey`` after ``event``. Repeats and stale attempts change nothing."""
    journey = journey or Journey()
    payload = event.payload
    if journey.closed is not None:
        return journey
    if event.type in TERMINAL_TYPES:
        return Journey(closed=event.type)
    if isinstance(payload, TaskSubmitted):
        return journey if journey.submitted else replace(journey, submitted=event)
    if isinstance(payload, PlanCreated):
        return journey if journey.plan else replace(journey, plan=event, stages=_stages(payload))
    if isinstance(payload, ToolReturned | UsageRecorded) and event.id in journey.counted:
        return journey
    if isinstance(payload, ToolReturned):
        counted = journey.counted | {event.id}
        journey = replace(journey, cost_usd=journey.cost_usd + payload.cost_usd, counted=counted)
        if payload.outcome == "ok" and not payload.cached:
            key = cache_key(payload.tool, payload.version, payload.input_hash)
            journey = replace(journey, cache={**journey.cache, key: payload.result})
        return journey
    if isinstance(payload, UsageRecorded):
        if payload.stage_id is None:
            return journey
        counted = journey.counted | {event.id}
        return replace(journey, tokens=journey.tokens + payload.total_tokens, counted=counted)
    if isinstance(payload, ProgressUpdated):
        settled = payload.stages_done + payload.stages_skipped
        return replace(journey, reported=max(journey.reported, settled))
    stage_id = getattr(payload, "stage_id", None)
    run = journey.stages.get(stage_id) if isinstance(stage_id, str) else None
    if run is None or stage_id is None:
        return journey
    return _evolve_stage(journey, run, event)


def _evolve_stage(journey: Journey, run: StageRun, event: Event) -> Journey:
    payload = event.payload
    sid = run.stage.id
    if isinstance(payload, StepStarted):
        if payload.attempt <= run.attempt or run.status in SETTLED:
            return journey
        return _stage(
            journey,
            sid,
            status="running",
            attempt=payload.attempt,
            tool=payload.tool,
            model=payload.model,
            started_at=run.started_at or event.occurred_at,
            recovery=None,
            recovery_at=None,
            tried=run.tried | {(payload.tool, payload.model)},
        )
    current = payload.attempt == run.attempt  # type: ignore[attr-defined]
    if isinstance(payload, StepCompleted) and current and run.status == "running":
        return _stage(journey, sid, status="completed", output=payload.output)
    if isinstance(payload, StepFailed) and current and run.status == "running":
        return _stage(
            journey, sid, status="failed", errors=(*run.errors, (payload.attempt, payload.error))
        )
    if isinstance(payload, RecoveryPlanned) and current and run.status == "failed":
        return _stage(
            journey,
            sid,
            status="recovering",
            recovery=payload,
            recovery_at=event.occurred_at,
            tool=payload.tool or run.tool,
            model=payload.model if payload.action == "alternate_model" else run.model,
            retries=run.retries + (payload.action == "retry"),
        )
    if isinstance(payload, RecoveryExecuted) and current and payload.action == "skip":
        return _stage(journey, sid, status="skipped", recovery=None)
    if isinstance(payload, EvaluationRecorded) and current and run.status == "completed":
        return _judged(journey, run, payload, event.occurred_at)
    return journey


MAX_SUGGESTIONS = 5
MAX_SUGGESTION_CHARS = 500


def _judged(journey: Journey, run: StageRun, verdict: EvaluationRecorded, at: datetime) -> Journey:
    """The InspectorAgent's verdict on the current attempt: accepted, or another attempt
    carrying the suggestions (the verdict is the recovery's plan), or an escalation."""
    sid = run.stage.id
    if verdict.decision == "accept":
        return _stage(journey, sid, accepted=True)
    rejected = StepError(
        code="QUALITY_REJECTED",
        message=verdict.reason,
        category="invalid_output",
        details={"quality_score": verdict.quality_score, "confidence": verdict.confidence},
    )
    suggestions = tuple(
        text[:MAX_SUGGESTION_CHARS] for text in verdict.suggestions[:MAX_SUGGESTIONS]
    )
    recovery = RecoveryPlanned(
        stage_id=sid,
        attempt=verdict.attempt,
        category="invalid_output",
        action="retry" if verdict.decision == "retry" else "escalate",
        reason=verdict.reason[:2_000],
        tool=run.tool,
        model=run.model,
        suggestion="; ".join(suggestions)[:2_000] or None,
    )
    return _stage(
        journey,
        sid,
        status="recovering",
        recovery=recovery,
        recovery_at=at,
        errors=(*run.errors, (verdict.attempt, rejected)),
        suggestions=suggestions,
    )


# -- jobs ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunStage:
    """Run ``attempt`` of a stage with ``tool`` (and ``model``), after ``recovery`` if this
    attempt carries one out, not before ``not_before``."""

    journey: Journey
    stage_id: str
    attempt: int
    tool: str
    model: str | None
    resumed: bool = False
    recovery: RecoveryPlanned | None = None
    not_before: datetime | None = None

    @property
    def key(self) -> str:
        return f"run:{self.stage_id}:{self.attempt}"


@dataclass(frozen=True)
class Recover:
    """Decide what to do about the failed ``attempt`` of a stage."""

    journey: Journey
    stage_id: str
    attempt: int

    @property
    def key(self) -> str:
        return f"recover:{self.stage_id}:{self.attempt}"


@dataclass(frozen=True)
class Skip:
    """Carry out a planned skip of an optional stage."""

    journey: Journey
    stage_id: str
    attempt: int

    @property
    def key(self) -> str:
        return f"skip:{self.stage_id}:{self.attempt}"


@dataclass(frozen=True)
class Escalate:
    """Carry out a planned escalation: the task fails with the stage's chain of errors."""

    journey: Journey
    stage_id: str
    attempt: int

    @property
    def key(self) -> str:
        return f"escalate:{self.stage_id}"


@dataclass(frozen=True)
class Progress:
    """Report progress now that ``settled`` stages are complete or skipped."""

    journey: Journey
    settled: int

    @property
    def key(self) -> str:
        return f"progress:{self.settled}"


@dataclass(frozen=True)
class Complete:
    """Every stage is complete or skipped: compile the results and complete the task."""

    journey: Journey

    @property
    def key(self) -> str:
        return "complete"


@dataclass(frozen=True)
class Refuse:
    """The plan names tools the task may not use: fail it with FORBIDDEN_TOOL.
    ``tools`` maps each such tool to the stages that name it (to call, or as a fallback)."""

    journey: Journey
    tools: dict[str, list[str]]

    @property
    def key(self) -> str:
        return "refuse"

    def scopes(self) -> dict[str, str]:
        """The scope each refused tool needs."""
        return {tool: TOOL_SCOPES[tool] for tool in self.tools if tool in TOOL_SCOPES}


def forbidden_in_plan(journey: Journey) -> dict[str, list[str]]:
    """Each tool of the plan the task may not use, with the stages that name it."""
    forbidden = journey.forbidden
    found: dict[str, list[str]] = {}
    for run in journey.stages.values():
        named = {*run.stage.tools, *(f.tool for f in run.stage.fallbacks if f.tool)}
        for tool in sorted(named & forbidden):
            found.setdefault(tool, []).append(run.stage.id)
    return found


@dataclass(frozen=True)
class TimeOut:
    """The task's timeout has passed: fail it with TIMEOUT."""

    journey: Journey

    @property
    def key(self) -> str:
        return "timeout"


Job = RunStage | Recover | Skip | Escalate | Progress | Complete | TimeOut | Refuse


def decide(
    journey: Journey, now: datetime, max_parallel: int = 4, require_acceptance: bool = False
) -> list[Job]:
    """The jobs ``journey`` calls for at ``now`` (see the module's docstring). With
    ``require_acceptance`` a completed stage counts as done only once the InspectorAgent
    has accepted it: its dependents and the task's completion wait for the verdict."""
    deadline = journey.deadline
    if deadline is None:
        return []
    if now >= deadline:
        return [TimeOut(journey)]
    if journey.plan is None:
        return []
    refused = forbidden_in_plan(journey)
    if refused:
        return [Refuse(journey, refused)]
    runs = list(journey.stages.values())
    for run in runs:
        if run.status == "recovering" and run.recovery and run.recovery.action == "escalate":
            return [Escalate(journey, run.stage.id, run.attempt)]
    jobs: list[Job] = [
        RunStage(journey, run.stage.id, run.attempt, run.tool, run.model, resumed=True)
        for run in runs
        if run.status == "running"
    ]
    slots = max_parallel - len(jobs)
    done = {
        run.stage.id
        for run in runs
        if run.status == "skipped"
        or (run.status == "completed" and (run.accepted or not require_acceptance))
    }
    for run in runs:
        sid = run.stage.id
        if run.status == "pending" and set(run.stage.depends_on) <= done and slots > 0:
            jobs.append(RunStage(journey, sid, 1, run.tool, run.model))
            slots -= 1
        elif run.status == "failed":
            jobs.append(Recover(journey, sid, run.attempt))
        elif run.status == "recovering" and run.recovery is not None:
            if run.recovery.action == "skip":
                jobs.append(Skip(journey, sid, run.attempt))
            elif slots > 0 and _retry_at(run) <= now:
                jobs.append(
                    RunStage(
                        journey,
                        sid,
                        run.attempt + 1,
                        run.tool,
                        run.model,
                        recovery=run.recovery,
                        not_before=_retry_at(run),
                    )
                )
                slots -= 1
    if journey.settled > journey.reported:
        jobs.append(Progress(journey, journey.settled))
    if runs and len(done) == len(runs):
        jobs.append(Complete(journey))
    return jobs


def _retry_at(run: StageRun) -> datetime:
    """When a recovering stage's next attempt may start: its backoff is a wait for the
    worker's timer, not a job sleeping in a slot."""
    assert run.recovery is not None and run.recovery_at is not None
    return run.recovery_at + timedelta(seconds=run.recovery.delay_s)


def next_retry(journey: Journey) -> datetime | None:
    """When the earliest recovery backoff of ``journey``'s stages ends, if one waits."""
    waits = [
        _retry_at(run)
        for run in journey.stages.values()
        if run.status == "recovering"
        and run.recovery is not None
        and run.recovery.action not in ("skip", "escalate")
    ]
    return min(waits) if waits and journey.closed is None else None


def deadline(journey: Journey) -> datetime | None:
    """When the worker must decide again for ``journey`` even if no event comes: its
    timeout, or sooner the end of a recovery's backoff."""
    when, retry = journey.deadline, next_retry(journey)
    if when is None or retry is None:
        return when
    return min(when, retry)
