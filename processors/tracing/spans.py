"""Task events to OpenTelemetry spans: the pure half of the tracer, no Kafka and no HTTP.

Each task is one trace, whatever processes wrote its events:

- ``task``: task.submitted to task.completed, task.failed or task.cancelled; the root.
- ``planning``: task.submitted to plan.created, under the task; roles.assigned and
  tools.allocated are its span events.
- ``stage {stage_id}``: its first step.started to the end of its last attempt or
  evaluation, under the task.
- ``step {stage_id} #{attempt}``: step.started to step.completed or step.failed, under its
  stage.
- ``tool {tool}``: tool.called to tool.returned, under its step.
- ``chat {model}``: one LLM request, from usage.recorded (see Times), under the tool call
  that made it, the planning, the evaluation it served, or its step.
- ``evaluation {stage_id} #{attempt}``: the attempt's end to evaluation.recorded, under the
  stage.

Recoveries are span events of their stage; alerts and budget verdicts, of the task.

**Ids.** The trace id is the task id's 128 bits, so the events of one task are one trace in
every process. Span ids are derived, never random: the spans that others hang under (task,
planning, stage, step, evaluation) from the task id and their place in it (stage id,
attempt), so a child names its parent before the parent has ended; the rest from the id of
the event that ends them. A replay of the same events yields the same spans, which a
receiver can drop as repeats.

**Times** are the events' ``occurred_at``, each from the clock of the process that wrote it.
usage.recorded has no duration: an LLM call made by a tool (operation ``execute``) takes
the bounds of that tool call, which is the request as the tool made it; the others (planning,
evaluation, error analysis) are instants at the moment the usage was recorded.

**State.** A span is exported once it ends, so only what pairs a start with its end is held:
per task in flight (from its task.submitted to its end), its start, its stages and open
attempts, and span events waiting for their span. A task's state goes when it ends. Events of
a task with no state (its task.submitted was never read) still give the spans they carry
whole: a step, tool or LLM call from its end event and duration; no task, planning or stage
span, whose start was in what was not read.

No user content reaches a span: only fields that are never encrypted are read.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event as SpanEvent
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from events import (
    END_STATUS,
    AlertCleared,
    AlertRaised,
    BudgetExceeded,
    BudgetThresholdCrossed,
    EvaluationRecorded,
    Event,
    PlanCreated,
    RecoveryExecuted,
    RecoveryPlanned,
    RolesAssigned,
    StepCompleted,
    StepFailed,
    StepStarted,
    TaskFailed,
    ToolCalled,
    ToolReturned,
    ToolsAllocated,
    UsageRecorded,
)
from processors.tracing._otel import SCOPE, Attrs, Spans, nanos, since, span_id, trace_id

MAX_OPEN_TASKS = 10_000
"""Tasks in flight whose starts are held; past it the oldest is dropped (its task, planning
and stage spans are lost; its steps, tools and LLM calls are still exported)."""
RETIRED_KEPT = 20_000
"""Ended tasks remembered, so a late repeat of a task.submitted does not open them again."""


# Where each structural span sits in its task: the keys its id derives from.
def _root() -> tuple[str, ...]:
    return ("task",)


def _planning() -> tuple[str, ...]:
    return ("planning",)


def _stage(stage_id: str) -> tuple[str, ...]:
    return ("stage", stage_id)


def _step(stage_id: str, attempt: int) -> tuple[str, ...]:
    return ("step", stage_id, str(attempt))


def _evaluation(stage_id: str, attempt: int) -> tuple[str, ...]:
    return ("evaluation", stage_id, str(attempt))


def _ended_by(event: Event) -> tuple[str, ...]:
    return ("event", str(event.id))


# -- what is held per task in flight -----------------------------------------------------
@dataclass
class _Attempt:
    started_at: datetime | None = None
    attributes: Attrs = field(default_factory=dict)
    ended_at: datetime | None = None
    tool_called_at: datetime | None = None
    tool_call: tuple[int, datetime, datetime] | None = None
    """The span id and bounds of the attempt's last tool call, for the LLM call it made."""


@dataclass
class _Stage:
    attempts: dict[int, _Attempt] = field(default_factory=dict)
    role: str | None = None
    outcome: str | None = None
    evaluated_at: datetime | None = None
    events: list[SpanEvent] = field(default_factory=list)

    def attempt(self, number: int) -> _Attempt:
        return self.attempts.setdefault(number, _Attempt())

    def latest(self) -> int | None:
        return max(self.attempts, default=None)

    def bounds(self, fallback: datetime) -> tuple[datetime, datetime]:
        starts = [a.started_at for a in self.attempts.values() if a.started_at]
        ends = [a.ended_at for a in self.attempts.values() if a.ended_at]
        start = min(starts, default=fallback)
        end = max([*ends, *([self.evaluated_at] if self.evaluated_at else [])], default=fallback)
        return start, max(start, end)


@dataclass
class _Task:
    submitted: Event
    planned: bool = False
    planning_events: list[SpanEvent] = field(default_factory=list)
    events: list[SpanEvent] = field(default_factory=list)
    stages: dict[str, _Stage] = field(default_factory=dict)
    seen: set[uuid.UUID] = field(default_factory=set)

    def stage(self, stage_id: str) -> _Stage:
        return self.stages.setdefault(stage_id, _Stage())


# -- one handler per event type ------------------------------------------------------------
Handler = Callable[[Spans, "_Task | None", Event], list[ReadableSpan]]


def _roles_assigned(b: Spans, task: _Task | None, event: Event) -> list[ReadableSpan]:
    p = event.payload
    assert isinstance(p, RolesAssigned)
    if task is not None:
        roles = [r.name for r in p.roles]
        task.planning_events.append(
            b.note("roles.assigned", {"wrench.roles": roles, "wrench.reasoner": p.reasoner})
        )
    return []


def _tools_allocated(b: Spans, task: _Task | None, event: Event) -> list[ReadableSpan]:
    p = event.payload
    assert isinstance(p, ToolsAllocated)
    if task is not None:
        tools = sorted({t.tool for r in p.roles for t in r.tools})
        attributes = {"wrench.tools": tools, "wrench.offline_only": p.offline_only}
        task.planning_events.append(b.note("tools.allocated", attributes))
    return []


def _plan_created(b: Spans, task: _Task | None, event: Event) -> list[ReadableSpan]:
    p = event.payload
    assert isinstance(p, PlanCreated)
    if task is None or task.planned:
        return []
    task.planned = True
    attributes = {
        "wrench.playbook": p.playbook,
        # The stages are encrypted as a whole; in clear only when no key is configured.
        "wrench.plan.stages": len(p.stages) if isinstance(p.stages, list) else None,
        "wrench.plan.estimate.tokens": p.total.tokens,
        "wrench.plan.estimate.seconds": p.total.seconds,
        "wrench.plan.estimate.cost_usd": p.total.cost_usd,
        "wrench.plan.critical_path_seconds": p.critical_path_seconds,
    }
    start = task.submitted.occurred_at
    return [
        b.span(
            "planning",
            _planning(),
            _root(),
            start,
            event.occurred_at,
            attributes,
            events=task.planning_events,
        )
    ]


def _step_started(b: Spans, task: _Task | None, event: Event) -> list[ReadableSpan]:
    p = event.payload
    assert isinstance(p, StepStarted)
    if task is not None:
        attempt = task.stage(p.stage_id).attempt(p.attempt)
        attempt.started_at = event.occurred_at
        attempt.attributes = {
            "wrench.tool": p.tool,
            "wrench.tool_version": p.tool_version,
            "wrench.model": p.model,
            "wrench.suggestions": len(p.suggestions),
        }
    return []


def _tool_called(b: Spans, task: _Task | None, event: Event) -> list[ReadableSpan]:
    p = event.payload
    assert isinstance(p, ToolCalled)
    if task is not None:
        task.stage(p.stage_id).attempt(p.attempt).tool_called_at = event.occurred_at
    return []


def _tool_returned(b: Spans, task: _Task | None, event: Event) -> list[ReadableSpan]:
    p = event.payload
    assert isinstance(p, ToolReturned)
    attempt = task.stage(p.stage_id).attempt(p.attempt) if task is not None else _Attempt()
    start = attempt.tool_called_at or since(event, p.duration_s)
    attributes = {
        "wrench.stage_id": p.stage_id,
        "wrench.attempt": p.attempt,
        "wrench.tool": p.tool,
        "wrench.tool_version": p.version,
        "wrench.outcome": p.outcome,
        "wrench.cached": p.cached,
        "wrench.duration_s": p.duration_s,
        "wrench.cost_usd": p.cost_usd,
        "error.type": p.error.code if p.error else None,
        "wrench.error.category": p.error.category if p.error else None,
    }
    key = _ended_by(event)
    span = b.span(
        f"tool {p.tool}",
        key,
        _step(p.stage_id, p.attempt),
        start,
        event.occurred_at,
        attributes,
        error=p.error.code if p.error else None,
    )
    assert event.task_id is not None
    attempt.tool_call = (span_id(event.task_id, *key), start, event.occurred_at)
    attempt.tool_called_at = None
    return [span]


def _step_ended(b: Spans, task: _Task | None, event: Event) -> list[ReadableSpan]:
    p = event.payload
    assert isinstance(p, StepCompleted | StepFailed)
    failed = isinstance(p, StepFailed)
    attempt = _Attempt()
    if task is not None:
        stage = task.stage(p.stage_id)
        attempt = stage.attempt(p.attempt)
        stage.outcome = "failed" if failed else "completed"
    start = attempt.started_at or since(event, p.duration_s)
    attempt.ended_at = event.occurred_at
    error = p.error if isinstance(p, StepFailed) else None
    attributes = {
        **attempt.attributes,
        "wrench.stage_id": p.stage_id,
        "wrench.attempt": p.attempt,
        "wrench.outcome": "failed" if failed else "completed",
        "wrench.duration_s": p.duration_s,
        "error.type": error.code if error else None,
        "wrench.error.category": error.category if error else None,
    }
    name = f"step {p.stage_id} #{p.attempt}"
    key, parent = _step(p.stage_id, p.attempt), _stage(p.stage_id)
    return [
        b.span(
            name,
            key,
            parent,
            start,
            event.occurred_at,
            attributes,
            error=error.code if error else None,
        )
    ]


def _evaluation_recorded(b: Spans, task: _Task | None, event: Event) -> list[ReadableSpan]:
    p = event.payload
    assert isinstance(p, EvaluationRecorded)
    start = event.occurred_at
    if task is not None:
        stage = task.stage(p.stage_id)
        stage.role, stage.evaluated_at = p.role, event.occurred_at
        start = stage.attempt(p.attempt).ended_at or start
    passed = sum(1 for check in p.checks if check.passed)
    attributes = {
        "wrench.stage_id": p.stage_id,
        "wrench.attempt": p.attempt,
        "wrench.role": p.role,
        "wrench.tool": p.tool,
        "wrench.model": p.model,
        "wrench.quality_score": p.quality_score,
        "wrench.confidence": p.confidence,
        "wrench.threshold": p.threshold,
        "wrench.decision": p.decision,
        "wrench.checks.passed": passed,
        "wrench.checks.failed": len(p.checks) - passed,
        "wrench.prior_source": p.prior_source,
    }
    name = f"evaluation {p.stage_id} #{p.attempt}"
    key, parent = _evaluation(p.stage_id, p.attempt), _stage(p.stage_id)
    return [b.span(name, key, parent, start, event.occurred_at, attributes)]


def _usage_recorded(b: Spans, task: _Task | None, event: Event) -> list[ReadableSpan]:
    p = event.payload
    assert isinstance(p, UsageRecorded)
    start = end = event.occurred_at
    parent: tuple[str, ...] | int = _root()
    stage = task.stages.get(p.stage_id) if task is not None and p.stage_id else None
    latest = stage.latest() if stage is not None else None
    if p.operation in ("assign_roles", "plan"):
        parent = _planning()
    elif p.stage_id is not None and p.operation == "evaluate":
        ended = [n for n, a in stage.attempts.items() if a.ended_at] if stage else []
        parent = _evaluation(p.stage_id, max(ended)) if ended else _stage(p.stage_id)
    elif stage is not None and latest is not None:
        assert p.stage_id is not None
        parent = _step(p.stage_id, latest)
        call = stage.attempts[latest].tool_call
        if p.operation == "execute" and call is not None:
            parent, start, end = call
    elif p.stage_id is not None:
        parent = _stage(p.stage_id)
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": p.model,
        "gen_ai.provider.name": p.provider,
        "gen_ai.usage.input_tokens": p.input_tokens,
        "gen_ai.usage.output_tokens": p.output_tokens,
        "wrench.usage.cached_tokens": p.cached_tokens,
        "wrench.usage.reasoning_tokens": p.reasoning_tokens,
        "wrench.usage.total_tokens": p.total_tokens,
        "wrench.usage.source": p.source,
        "wrench.cost_usd": p.cost_usd,
        "wrench.price_version": p.price_version,
        "wrench.operation": p.operation,
        "wrench.stage_id": p.stage_id,
        "wrench.role": p.role,
        "wrench.tool": p.tool,
        "wrench.timing": "tool_call" if isinstance(parent, int) else "instant",
    }
    return [
        b.span(
            f"chat {p.model}",
            _ended_by(event),
            parent,
            start,
            end,
            attributes,
            kind=SpanKind.CLIENT,
        )
    ]


def _recovery(b: Spans, task: _Task | None, event: Event) -> list[ReadableSpan]:
    p = event.payload
    assert isinstance(p, RecoveryPlanned | RecoveryExecuted)
    if task is None:
        return []
    stage = task.stage(p.stage_id)
    if isinstance(p, RecoveryPlanned):
        attributes: Attrs = {
            "wrench.attempt": p.attempt,
            "wrench.action": p.action,
            "wrench.error.category": p.category,
            "wrench.delay_s": p.delay_s,
            "wrench.tool": p.tool,
            "wrench.model": p.model,
        }
    else:
        attributes = {
            "wrench.attempt": p.attempt,
            "wrench.action": p.action,
            "wrench.next_attempt": p.next_attempt,
        }
        if p.action == "skip":
            stage.outcome = "skipped"
    stage.events.append(b.note(event.type, attributes))
    return []


def _task_note(b: Spans, task: _Task | None, event: Event) -> list[ReadableSpan]:
    p = event.payload
    if task is None:
        return []
    attributes: Attrs = {}
    if isinstance(p, AlertRaised):
        attributes = {"wrench.alert.code": p.code, "wrench.alert.level": p.level}
    elif isinstance(p, AlertCleared):
        attributes = {"wrench.alert.code": p.code}
    elif isinstance(p, BudgetThresholdCrossed | BudgetExceeded):
        attributes = {
            "wrench.budget.scope": p.scope,
            "wrench.budget.window": p.window,
            "wrench.budget.ratio": p.ratio,
        }
    task.events.append(b.note(event.type, attributes))
    return []


def _task_ended(b: Spans, task: _Task | None, event: Event) -> list[ReadableSpan]:
    """The task's stage spans, its planning span if no plan came, and the root."""
    if task is None:
        return []
    end = event.occurred_at
    status = END_STATUS[event.type]
    reason = event.payload.reason if isinstance(event.payload, TaskFailed) else None
    spans = []
    for stage_id, stage in task.stages.items():
        start, stop = stage.bounds(end)
        attributes = {
            "wrench.stage_id": stage_id,
            "wrench.role": stage.role,
            "wrench.attempts": len(stage.attempts),
            "wrench.outcome": stage.outcome or "unfinished",
        }
        spans.append(
            b.span(
                f"stage {stage_id}",
                _stage(stage_id),
                _root(),
                start,
                stop,
                attributes,
                error="failed" if stage.outcome == "failed" else None,
                events=stage.events,
            )
        )
    submitted = task.submitted
    if not task.planned:
        spans.append(
            b.span(
                "planning",
                _planning(),
                _root(),
                submitted.occurred_at,
                end,
                {"wrench.outcome": "no plan"},
                error=reason,
                events=task.planning_events,
            )
        )
    attributes = {
        "wrench.status": status,
        "wrench.reason": reason,
        "wrench.timeout_s": getattr(submitted.payload, "timeout", None),
        "wrench.submitted_by": f"{submitted.actor.kind}:{submitted.actor.id}",
        "wrench.stages": len(task.stages),
    }
    spans.append(
        b.span(
            "task",
            _root(),
            None,
            submitted.occurred_at,
            end,
            attributes,
            error=reason,
            events=task.events,
        )
    )
    return spans


HANDLERS: Mapping[str, Handler] = {
    "roles.assigned": _roles_assigned,
    "tools.allocated": _tools_allocated,
    "plan.created": _plan_created,
    "step.started": _step_started,
    "tool.called": _tool_called,
    "tool.returned": _tool_returned,
    "step.completed": _step_ended,
    "step.failed": _step_ended,
    "evaluation.recorded": _evaluation_recorded,
    "usage.recorded": _usage_recorded,
    "recovery.planned": _recovery,
    "recovery.executed": _recovery,
    "alert.raised": _task_note,
    "alert.cleared": _task_note,
    "budget.threshold_crossed": _task_note,
    "budget.exceeded": _task_note,
    **dict.fromkeys(END_STATUS, _task_ended),
}
TRACED_TYPES = frozenset({"task.submitted", *HANDLERS})
"""The event types that make or shape spans; the tracer decodes no others."""


class Traces:
    """The spans a stream of events ends, with what is held of each task in flight."""

    def __init__(self, resource: Resource, *, max_open: int = MAX_OPEN_TASKS) -> None:
        self.resource = resource
        self.max_open = max_open
        self.tasks: dict[uuid.UUID, _Task] = {}
        self._retired: OrderedDict[uuid.UUID, None] = OrderedDict()
        self.dropped = 0
        """Tasks let go to keep within ``max_open``."""

    def fold(self, event: Event) -> list[ReadableSpan]:
        """The spans ``event`` ends (none for most events); a repeat of an event already
        folded for a task in flight ends nothing again."""
        task_id = event.task_id
        if task_id is None or event.type not in TRACED_TYPES:
            return []
        task = self.tasks.get(task_id)
        if task is not None:
            if event.id in task.seen:
                return []
            task.seen.add(event.id)
        if event.type == "task.submitted":
            if task is None and task_id not in self._retired:
                self._open(task_id, event)
            return []
        spans = HANDLERS[event.type](Spans(self.resource, event), task, event)
        if event.type in END_STATUS:
            self._retire(task_id)
        return spans

    def forget(self, task_ids: set[uuid.UUID]) -> None:
        """Let go of these tasks (their partitions went to another tracer)."""
        for task_id in task_ids:
            self.tasks.pop(task_id, None)

    def _open(self, task_id: uuid.UUID, submitted: Event) -> None:
        self.tasks[task_id] = _Task(submitted, seen={submitted.id})
        while len(self.tasks) > self.max_open:
            oldest = next(iter(self.tasks))
            self._retire(oldest)
            self.dropped += 1

    def _retire(self, task_id: uuid.UUID) -> None:
        self.tasks.pop(task_id, None)
        self._retired[task_id] = None
        while len(self._retired) > RETIRED_KEPT:
            self._retired.popitem(last=False)


__all__ = [
    "MAX_OPEN_TASKS",
    "SCOPE",
    "TRACED_TYPES",
    "Traces",
    "nanos",
    "span_id",
    "trace_id",
]
