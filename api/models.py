"""The API's request and response bodies. All frozen: a body is a value, never a workspace."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from events import Actor, Operation, PlanEstimate, StageFallback

# The same bounds as events.TaskSubmitted, so a request the API accepts always makes a valid
# event (tests/api pins the two together).
MAX_DESCRIPTION = 10_000
MAX_TIMEOUT_S = 86_400
DEFAULT_TIMEOUT_S = 3_600
MAX_REASON = 2_000

TaskStatus = Literal["submitted", "running", "completed", "failed", "cancelled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})

# PARTITION:OFFSET, as events.Position writes it; the digit counts keep both numbers inside
# the integer and bigint columns they are compared with.
POSITION_PATTERN = r"^[0-9]{1,9}:[0-9]{1,18}$"


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SubmitTask(_Body):
    """What a user asks for: a description, optional constraints and a time limit."""

    description: str = Field(min_length=1, max_length=MAX_DESCRIPTION)
    constraints: dict[str, Any] | None = None
    # strict: true, "60" and 60.5 are mistakes worth a 422, not values to coerce.
    timeout: int = Field(
        DEFAULT_TIMEOUT_S, ge=1, le=MAX_TIMEOUT_S, strict=True, description="Seconds."
    )


class CancelTask(_Body):
    """Why the task is being called off, if the caller says."""

    reason: str | None = Field(None, max_length=MAX_REASON)


class Accepted(_Body):
    """A write the log accepted; ``position`` is where to wait for it with ``?wait_for=``."""

    task_id: uuid.UUID
    status: Literal["submitted", "cancelling"]
    position: str = Field(examples=["2:41"])


class Task(_Body):
    """One row of the tasks read model."""

    task_id: uuid.UUID
    tenant_id: str
    description: str
    constraints: dict[str, Any] | None
    timeout: int
    status: TaskStatus
    created_at: datetime
    updated_at: datetime
    last_event_id: uuid.UUID
    position: str = Field(description="Log position of the last event applied to this row.")


class RoleTool(_Body):
    """One tool a role may call, and how it scored against the alternatives."""

    tool: str
    version: str
    need: str = Field(description="required_tool, optional_tool or capability:<name>.")
    reliability: float
    score: float
    alternatives: list[str]


class TaskRole(_Body):
    """One role of the task, why it was chosen, and the tools it was given."""

    name: str
    reason: str
    score: float
    depends_on: list[str]
    tools: list[RoleTool]


StageStatus = Literal["pending", "running", "completed", "failed", "skipped"]


class PlanStage(_Body):
    """One stage of the plan, with where its execution stands."""

    id: str
    role: str
    tools: list[str] = Field(description="The tool to call, then alternates by preference.")
    tool_version: str
    model: str | None
    depends_on: list[str]
    inputs: list[str] = Field(description="Stages whose outputs this stage reads.")
    tool_input: dict[str, Any]
    success_criteria: list[str]
    optional: bool
    timeout: int
    retry: int
    estimate: PlanEstimate
    fallbacks: list[StageFallback]
    status: StageStatus


class Plan(_Body):
    """The task's execution plan: stages in dependency order, with estimates and fallbacks."""

    playbook: str | None
    stages: list[PlanStage]
    total: PlanEstimate
    critical_path_seconds: float
    created_at: datetime


class TaskDetail(Task):
    """A task with its roles (in execution order) and its plan, null until it is planned."""

    roles: list[TaskRole]
    plan: Plan | None


class Thought(_Body):
    """One step of a reasoner's thinking about the task."""

    operation: Operation
    number: int
    text: str
    revises: int | None
    branch: str | None
    stage_id: str | None
    occurred_at: datetime
    position: str = Field(description="Log position of the thought.recorded event.")


class TaskThoughts(_Body):
    """Every thought recorded for one task, in log order."""

    task_id: uuid.UUID
    thoughts: list[Thought]


class TaskPage(_Body):
    """One page of tasks, newest first; pass ``next_cursor`` back as ``cursor`` for the next."""

    tasks: list[Task]
    next_cursor: str | None


class HistoryEvent(_Body):
    """One event of a task's history, decrypted and upcast to its newest version."""

    id: uuid.UUID
    type: str
    schema_version: int
    task_id: uuid.UUID | None
    tenant_id: str
    actor: Actor
    occurred_at: datetime
    correlation_id: uuid.UUID | None
    causation_id: uuid.UUID | None
    payload: dict[str, Any]
    position: str


class TaskHistory(_Body):
    """Every event of one task in log order."""

    task_id: uuid.UUID
    events: list[HistoryEvent]


class HealthChecks(_Body):
    """Each dependency's state; ``projector_lag`` is informational (null when unknown)."""

    database: bool
    broker: bool
    projector_lag: int | None


class Health(_Body):
    """``healthy`` when the database and the broker both answer."""

    status: Literal["healthy", "unhealthy"]
    checks: HealthChecks


class ErrorDetail(_Body):
    """The stable code, a message for people, and the ids or fields involved."""

    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorBody(_Body):
    """The body of every error answer."""

    error: ErrorDetail
