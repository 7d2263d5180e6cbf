"""The API's request and response bodies. All frozen: a body is a value, never a workspace."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from events import Actor

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
