"""Payloads of the task lifecycle: submitted, cancelled, completed, failed."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from events._catalog import catalog, event
from events._envelope import EventPayload, sensitive

MAX_DESCRIPTION = 10_000
MAX_TIMEOUT_S = 86_400


@event("task.submitted", version=1)
class TaskSubmitted(EventPayload):
    """A user asked for work to be done."""

    description: str = sensitive(min_length=1, max_length=MAX_DESCRIPTION)
    constraints: dict[str, Any] | None = sensitive(None)
    timeout: int = Field(3600, ge=1, le=MAX_TIMEOUT_S, description="Seconds the task may run.")


@event("task.cancelled", version=1)
class TaskCancelled(EventPayload):
    """A user or the system called the task off; running steps stop, none start."""

    reason: str | None = Field(None, max_length=2_000)


@event("task.completed", version=1)
class TaskCompleted(EventPayload):
    """The task finished; ``output`` is the compiled result."""

    output: Any = sensitive(None)
    summary: str | None = Field(None, max_length=2_000)


@event("task.failed", version=1)
class TaskFailedV1(EventPayload):
    """The first shape of task.failed: a free-text reason. Read as v2 by upcasting."""

    reason: str


class TaskError(EventPayload):
    """One link in a chain of errors that ended a task."""

    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


@event("task.failed", version=2)
class TaskFailed(EventPayload):
    """The task ended without a result. ``reason`` is a stable code such as ``TIMEOUT``."""

    reason: str = Field(min_length=1, max_length=100)
    message: str = Field("", max_length=10_000)
    errors: list[TaskError] = Field(default_factory=list)


@catalog.upcaster("task.failed", 1)
def upcast_task_failed_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    """v1 had only free text; it becomes the message under the code ``UNSPECIFIED``."""
    return {"reason": "UNSPECIFIED", "message": payload["reason"], "errors": []}


TERMINAL_TYPES = frozenset({"task.completed", "task.failed", "task.cancelled"})
"""Event types after which a task takes no more work."""
