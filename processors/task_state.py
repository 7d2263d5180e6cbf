"""A task's state at any point of its log, folded by the agents' own pure cores.

:func:`fold` reads one task's events in log order, each with its position, and gives the
:class:`TaskState` as of the last one: time travel (``GET /audit/tasks/{id}/state``) and
``wrenchai replay`` serve it. Nothing here does I/O, calls an LLM or runs a tool: every
result of those calls is already on the log.

Who folds what:

- whether the task was planned and how it ended: the SuperAgent's
  :func:`processors.super.agent.evolve`;
- its roles and their tools: the first roles.assigned and tools.allocated that same
  evolve keeps while it plans;
- the plan, each stage's status, attempt and verdict, and the tokens and cost of execution:
  the JourneyAgent's :func:`processors.journey.execution.evolve`;
- the attempts awaiting a verdict, the open alerts and the tokens monitoring counts: the
  InspectorAgent's :func:`processors.inspector.agent.evolve` (with monitoring's TaskWatch).

What those states do not keep is recorded from the same events as they pass: when each
attempt started and ended and with which tool version (recorded when the Journey accepted
the event that moved the stage, so a stale or repeated event records nothing), every tool
call, every planned recovery, every evaluation, and the latest progress report.

Each agent folds only the event types its worker folds. The JourneyAgent and the
InspectorAgent fold none of a shredded tenant's events, as their workers do (their folds read
the content); the SuperAgent's fold reads only types, so it sees them all and the status
stays right. An agent drops what it knows of a task once the task ends,
while the read models go on applying facts that come after the end (a last progress
report). So the Journey and the SuperAgent's planning are fed every event but the end, and
the end is kept apart (the first one wins, as in the read models); the SuperAgent's own
state, fed everything, says whether the task was planned and how it ended.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Generic, Literal, NamedTuple, TypeVar

from events import (
    END_STATUS,
    TERMINAL_TYPES,
    Decision,
    EvaluationRecorded,
    Event,
    Position,
    ProgressUpdated,
    RecoveryExecuted,
    RecoveryPlanned,
    StepCompleted,
    StepError,
    StepFailed,
    StepStarted,
    TaskCompleted,
    ToolReturned,
    shredded_fields,
)
from processors.inspector import agent as inspector_agent
from processors.journey import execution
from processors.super import agent as super_agent

TaskStatus = Literal["submitted", "running", "completed", "failed", "cancelled"]
StageStatus = Literal["pending", "running", "completed", "failed", "recovering", "skipped"]
Outcome = Literal["running", "completed", "failed"]
P = TypeVar("P")

RUN_AGAIN = frozenset({"retry", "alternate_tool", "alternate_model"})
"""Recoveries that run the stage again: between the plan and the next attempt the stage is
``recovering``; a planned skip or escalation leaves it ``failed`` until it is carried out."""


class Logged(NamedTuple):
    """An event and where it sits on the log."""

    event: Event
    position: Position


@dataclass(frozen=True)
class Attempt:
    """One attempt of a stage, from the step.started the Journey accepted to its end and
    the InspectorAgent's verdict on it."""

    stage_id: str
    attempt: int
    tool: str
    tool_version: str
    model: str | None
    started_at: datetime
    position: Position
    suggestions: tuple[str, ...] = ()
    outcome: Outcome = "running"
    ended_at: datetime | None = None
    duration_s: float | None = None
    error: StepError | None = None
    decision: Decision | None = None
    quality_score: float | None = None


@dataclass(frozen=True)
class Fact(Generic[P]):
    """An event's payload with when and where it was logged."""

    payload: P
    occurred_at: datetime
    position: Position


@dataclass(frozen=True)
class Recovery:
    """A planned recovery of a failed attempt (the first plan for an attempt wins) and the
    first recovery.executed that carried it out."""

    planned: RecoveryPlanned
    planned_at: datetime
    executed: RecoveryExecuted | None = None
    executed_at: datetime | None = None


@dataclass(frozen=True)
class TaskState:
    """What the log says of one task as of ``last``. See the module's docstring for who
    folds which part."""

    submitted: Event | None = None
    planner: super_agent.TaskState = field(default_factory=super_agent.TaskState)
    planning: super_agent.TaskState = field(default_factory=super_agent.TaskState)
    roles: Event | None = None
    allocation: Event | None = None
    journey: execution.Journey = field(default_factory=execution.Journey)
    inspection: inspector_agent.Inspection = field(default_factory=inspector_agent.Inspection)
    ended: Event | None = None
    attempts: dict[tuple[str, int], Attempt] = field(default_factory=dict)
    recovering_after: dict[str, Literal["verdict", "recovery"]] = field(default_factory=dict)
    tool_calls: tuple[Fact[ToolReturned], ...] = ()
    recoveries: dict[tuple[str, int], Recovery] = field(default_factory=dict)
    evaluations: tuple[Fact[EvaluationRecorded], ...] = ()
    progress: Fact[ProgressUpdated] | None = None
    last: Logged | None = None
    events: int = 0

    @property
    def task_id(self) -> uuid.UUID | None:
        """The task these events are of."""
        return self.last.event.task_id if self.last is not None else None

    @property
    def status(self) -> TaskStatus:
        """How the task ended, else running once planned, else submitted."""
        if self.planner.closed is not None:
            return END_STATUS[self.planner.closed]
        return "running" if self.planner.planned else "submitted"

    @property
    def summary(self) -> str | None:
        """The summary of the task's completion, when the task ended by completing."""
        end = self.ended.payload if self.ended is not None else None
        return end.summary if isinstance(end, TaskCompleted) else None

    @property
    def output(self) -> object:
        """The compiled results of the task's completion (None until it completed)."""
        end = self.ended.payload if self.ended is not None else None
        return end.output if isinstance(end, TaskCompleted) else None

    def stage_status(self, stage_id: str) -> StageStatus:
        """The stage's status as the log's step events left it.

        That is the Journey's, with two names told apart: a stage the Journey holds as
        recovering because the InspectorAgent rejected its output did complete its attempt
        (``completed``, the verdict is on the attempt), and a failed stage whose planned
        recovery is a skip or an escalation stays ``failed`` until that is carried out.
        """
        run = self.journey.stages[stage_id]
        if run.status == "recovering":
            if self.recovering_after.get(stage_id) == "verdict":
                return "completed"
            if run.recovery is not None and run.recovery.action not in RUN_AGAIN:
                return "failed"
        return run.status

    def attempt(self, stage_id: str, number: int) -> Attempt | None:
        """The stage's attempt ``number``, if it started."""
        return self.attempts.get((stage_id, number))

    def stage_attempts(self, stage_id: str) -> list[Attempt]:
        """The stage's attempts in the order they started."""
        return [a for (sid, _), a in self.attempts.items() if sid == stage_id]

    def last_completed(self, stage_id: str) -> Attempt | None:
        """The stage's latest attempt that completed."""
        done = [a for a in self.stage_attempts(stage_id) if a.outcome == "completed"]
        return done[-1] if done else None

    def last_failed(self, stage_id: str) -> Attempt | None:
        """The stage's latest attempt that failed (its error is the stage's last error)."""
        failed = [a for a in self.stage_attempts(stage_id) if a.outcome == "failed"]
        return failed[-1] if failed else None


class ForeignEvent(ValueError):
    """An event of another task than the one being folded."""


def fold(events: Iterable[Logged | tuple[Event, Position]]) -> TaskState:
    """The state of the task whose events (in log order, with their positions) are given."""
    state = TaskState()
    for event, position in events:
        state = evolve(state, Logged(event, position))
    return state


def evolve(state: TaskState, logged: Logged) -> TaskState:
    """``state`` after one more event of its task."""
    event = logged.event
    if state.last is not None and event.task_id != state.task_id:
        raise ForeignEvent(
            f"event {event.id} is of task {event.task_id}, not {state.task_id}: fold one "
            "task's events at a time"
        )
    state = replace(state, last=logged, events=state.events + 1)
    ending = event.type in TERMINAL_TYPES
    if event.type == "task.submitted" and state.submitted is None:
        state = replace(state, submitted=event)
    if ending and state.ended is None:
        state = replace(state, ended=event)
    if event.type in super_agent.FOLDED_TYPES:
        # The SuperAgent's fold reads types, never content: a shredded event still counts.
        state = _plan(state, event, ending)
    if shredded_fields(event.payload):
        # The tenant was shredded: as in the workers, no agent acts on "[shredded]".
        return _record(state, logged)
    if event.type in inspector_agent.FOLDED_TYPES:
        state = replace(state, inspection=inspector_agent.evolve(state.inspection, event))
    if event.type in execution.FOLDED_TYPES and not ending:
        journey = execution.evolve(state.journey, event)
        state = _moved(replace(state, journey=journey), state.journey, logged)
    return _record(state, logged)


def _plan(state: TaskState, event: Event, ending: bool) -> TaskState:
    planner = super_agent.evolve(state.planner, event)
    if ending:
        return replace(state, planner=planner)
    planning = super_agent.evolve(state.planning, event)
    return replace(
        state,
        planner=planner,
        planning=planning,
        roles=state.roles or planning.roles,
        allocation=state.allocation or planning.allocation,
    )


def _moved(state: TaskState, before: execution.Journey, logged: Logged) -> TaskState:
    """Record what the Journey's step of ``logged`` did to its stage, if anything."""
    event, position = logged
    p = event.payload
    sid = getattr(p, "stage_id", None)
    if not isinstance(sid, str):
        return state
    old, new = before.stages.get(sid), state.journey.stages.get(sid)
    if old is None or new is None or new is old:
        return state
    attempts = dict(state.attempts)
    if isinstance(p, StepStarted) and new.attempt > old.attempt:
        attempts[(sid, p.attempt)] = Attempt(
            stage_id=sid,
            attempt=p.attempt,
            tool=p.tool,
            tool_version=p.tool_version,
            model=p.model,
            started_at=event.occurred_at,
            position=position,
            suggestions=tuple(p.suggestions),
        )
    elif isinstance(p, StepCompleted | StepFailed) and new.status != old.status:
        current = attempts.get((sid, p.attempt))
        if current is not None:
            attempts[(sid, p.attempt)] = replace(
                current,
                outcome="completed" if isinstance(p, StepCompleted) else "failed",
                ended_at=event.occurred_at,
                duration_s=p.duration_s,
                error=p.error if isinstance(p, StepFailed) else None,
            )
    recovering = dict(state.recovering_after)
    if new.status == "recovering" and old.status != "recovering":
        recovering[sid] = "verdict" if isinstance(p, EvaluationRecorded) else "recovery"
    return replace(state, attempts=attempts, recovering_after=recovering)


def _record(state: TaskState, logged: Logged) -> TaskState:
    """Keep the facts of ``logged`` that no agent's state holds."""
    event, position = logged
    p, at = event.payload, event.occurred_at
    if isinstance(p, ToolReturned):
        return replace(state, tool_calls=(*state.tool_calls, Fact(p, at, position)))
    if isinstance(p, RecoveryPlanned) and (p.stage_id, p.attempt) not in state.recoveries:
        recoveries = {**state.recoveries, (p.stage_id, p.attempt): Recovery(p, at)}
        return replace(state, recoveries=recoveries)
    if isinstance(p, RecoveryExecuted):
        planned = state.recoveries.get((p.stage_id, p.attempt))
        if planned is None or planned.executed is not None:
            return state
        done = replace(planned, executed=p, executed_at=at)
        return replace(state, recoveries={**state.recoveries, (p.stage_id, p.attempt): done})
    if isinstance(p, EvaluationRecorded):
        attempts = state.attempts
        judged = attempts.get((p.stage_id, p.attempt))
        if judged is not None and judged.decision is None:
            verdict = replace(judged, decision=p.decision, quality_score=p.quality_score)
            attempts = {**attempts, (p.stage_id, p.attempt): verdict}
        evaluations = (*state.evaluations, Fact(p, at, position))
        return replace(state, evaluations=evaluations, attempts=attempts)
    if isinstance(p, ProgressUpdated):
        return replace(state, progress=Fact(p, at, position))
    return state
