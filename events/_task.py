"""Payloads of the task lifecycle: submitted, cancelled, completed, failed."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal

from pydantic import Field, field_validator

from events._catalog import catalog, event
from events._envelope import EventPayload, sensitive
from events._identity import EXECUTION_SCOPES

MAX_DESCRIPTION = 10_000
MAX_TIMEOUT_S = 86_400
MAX_PLAYBOOK_NAME = 100
"""As processors.shared.playbook.Playbook.name allows."""


@event("task.submitted", version=1)
class TaskSubmittedV1(EventPayload):
    """The first shape of task.submitted, from before identity: no grants. Read as v2 by
    upcasting."""

    description: str = sensitive(min_length=1, max_length=MAX_DESCRIPTION)
    constraints: dict[str, Any] | None = sensitive(None)
    timeout: int = Field(3600, ge=1, le=MAX_TIMEOUT_S, description="Seconds the task may run.")


@event("task.submitted", version=2)
class TaskSubmitted(EventPayload):
    """A user asked for work to be done.

    ``grants`` is what the submitter allowed the task to run: the execution scopes
    (``tools:code``, ``playbooks:inline``) they held when they submitted it. The agents
    decide from it alone, so a plan the submitter could not foresee (a shipped playbook
    with a code.python step, a role given code.python) never runs more than they may.
    """

    description: str = sensitive(min_length=1, max_length=MAX_DESCRIPTION)
    constraints: dict[str, Any] | None = sensitive(None)
    timeout: int = Field(3600, ge=1, le=MAX_TIMEOUT_S, description="Seconds the task may run.")
    grants: list[str] = Field(
        default_factory=list,
        description="The execution scopes the submitter held: what the task may run.",
    )
    key_id: str | None = Field(
        None,
        max_length=200,
        description="The API key the task was submitted with (none for a signed-in user): "
        "its usage counts against that key's budget.",
    )

    @field_validator("grants")
    @classmethod
    def _execution_scopes(cls, grants: list[str]) -> list[str]:
        unknown = sorted(set(grants) - EXECUTION_SCOPES)
        if unknown:
            raise ValueError(
                f"grants {unknown} are not execution scopes; a task may carry only "
                f"{sorted(EXECUTION_SCOPES)}"
            )
        return sorted(set(grants))


@catalog.upcaster("task.submitted", 1)
def upcast_task_submitted_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    """v1 was written before identity, when every request acted as the anonymous admin of
    the default tenant: that admin held every execution scope, so an old task keeps running
    as it did."""
    return {**payload, "grants": sorted(EXECUTION_SCOPES)}


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


EndStatus = Literal["completed", "failed", "cancelled"]
END_STATUS: Mapping[str, EndStatus] = MappingProxyType(
    {"task.completed": "completed", "task.failed": "failed", "task.cancelled": "cancelled"}
)
"""The status each terminal event leaves its task in."""
TERMINAL_TYPES = frozenset(END_STATUS)
"""Event types after which a task takes no more work."""


def submitted_playbook(constraints: object) -> str | None:
    """The playbook ``constraints.playbook`` names: a shipped playbook's name, or an inline
    playbook's ``name``; None when there is none (or the constraints were shredded).

    Free-form constraints may hold anything there: a string longer than any playbook name
    can be is no playbook, and kept out of the column's index (whose entries have a size
    limit that a projector write must never hit)."""
    chosen = constraints.get("playbook") if isinstance(constraints, Mapping) else None
    if isinstance(chosen, Mapping):
        chosen = chosen.get("name")
    if isinstance(chosen, str) and 0 < len(chosen) <= MAX_PLAYBOOK_NAME:
        return chosen
    return None
