"""Bodies of the audit endpoints: the tenant's events from the archive, and a task's state
as of a point of its log. Frozen, as in api.models."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api import _audit_examples as ex
from api.inspection_models import Evaluation
from api.models import (
    HistoryEvent,
    Plan,
    Progress,
    Shredded,
    Step,
    StepDetail,
    TaskRole,
    TaskStatus,
)
from events import Decision


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AuditEvent(HistoryEvent):
    """One event of the archive, decrypted and upcast, with the topic it was logged on."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.AUDIT_EVENT))

    topic: str = Field(description="The topic of the log it is on (wrench.events or wrench.admin).")


class AuditEventPage(_Body):
    """One page of the tenant's events, oldest first; pass ``next_cursor`` back as ``cursor``
    for the next (null on the last page)."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.AUDIT_EVENT_PAGE))

    events: list[AuditEvent]
    next_cursor: str | None


class AsOf(_Body):
    """The last event folded into a task's state: the state is the task as of this event."""

    position: str = Field(description="Its log position (PARTITION:OFFSET).", examples=["2:41"])
    event_id: uuid.UUID
    type: str
    occurred_at: datetime
    events: int = Field(description="How many of the task's events were folded.")


class TaskSnapshot(_Body):
    """The task as ``GET /tasks/{task_id}`` shows it, folded from the log: every field but
    the read model's own bookkeeping (``updated_at``, ``last_event_id``, ``position``; the
    state's ``as_of`` says which event it is as of)."""

    task_id: uuid.UUID
    tenant_id: str
    description: str
    constraints: dict[str, Any] | Shredded | None
    timeout: int
    status: TaskStatus
    created_at: datetime
    playbook: str | None
    roles: list[TaskRole]
    plan: Plan | None
    steps: list[Step]
    progress: Progress | None
    summary: str | None
    output: Any = None


class AttemptState(_Body):
    """One attempt of a stage: its tool, when it started and ended, how, and the verdict."""

    stage_id: str
    attempt: int
    tool: str
    tool_version: str
    model: str | None
    suggestions: list[str] = Field(description="What earlier verdicts asked it to fix.")
    started_at: datetime
    outcome: Literal["running", "completed", "failed"]
    ended_at: datetime | None
    duration_s: float | None
    error_code: str | None
    error: str | None
    decision: Decision | None = Field(description="The InspectorAgent's verdict, if given.")
    quality_score: float | None
    cost_usd: float = Field(description="What its tool calls cost.")
    position: str = Field(description="Log position of its step.started.")


class Usage(_Body):
    """Tokens and dollars as of the state's event."""

    tokens: int = Field(description="Every LLM token recorded for the task, planning included.")
    execution_tokens: int = Field(description="The tokens of the stages' LLM calls.")
    cost_usd: float = Field(description="What the task's tool calls cost.")


class StageView(_Body):
    """A stage as the JourneyAgent holds it: ``status`` is its own (``recovering`` also
    while a rejected output waits for its next attempt), ``tool``/``model`` those of the
    current attempt or of the next once a recovery chose them."""

    stage_id: str
    status: Literal["pending", "running", "completed", "failed", "recovering", "skipped"]
    attempt: int
    tool: str
    model: str | None
    accepted: bool
    retries: int
    recovery: str | None = Field(description="The planned recovery's action, while one waits.")


class JourneyView(_Body):
    """The JourneyAgent's state of the task."""

    stages: list[StageView]
    settled: int = Field(description="Stages completed or skipped.")
    reported: int = Field(description="Settled stages the last progress report counted.")


class PlannerView(_Body):
    """The SuperAgent's state of the task."""

    planned: bool
    closed: str | None = Field(description="The event type that ended the task, if any.")


class AwaitedVerdict(_Body):
    """A completed attempt the InspectorAgent has not judged yet."""

    stage_id: str
    attempt: int


class InspectorView(_Body):
    """The InspectorAgent's state of the task, with monitoring's."""

    awaiting: list[AwaitedVerdict]
    judged: int
    open_alerts: dict[str, str] = Field(description="The id of each open alert, by code.")
    failed_attempts: int
    retries: int
    tokens: int
    last_event_at: datetime | None


class AgentViews(_Body):
    """What each agent's own fold holds."""

    planner: PlannerView
    journey: JourneyView
    inspector: InspectorView


class TaskState(_Body):
    """A task as of one event of its log, folded by the agents' own functions from the
    archive alone. ``task``, ``steps`` and ``evaluations`` read as ``GET /tasks/{task_id}``,
    ``/steps`` and ``/evaluations`` read when the read models had applied that event."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.TASK_STATE))

    task_id: uuid.UUID
    tenant_id: str
    as_of: AsOf
    task: TaskSnapshot
    steps: list[StepDetail]
    evaluations: list[Evaluation]
    attempts: list[AttemptState] = Field(description="Every attempt of every stage, as started.")
    usage: Usage
    agents: AgentViews
