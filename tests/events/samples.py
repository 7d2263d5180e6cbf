"""Sample events shared by the events tests: one of every task type, with user content in
every sensitive field so the tests can look for it in the raw bytes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from events import (
    Actor,
    Event,
    EventPayload,
    TaskCancelled,
    TaskCompleted,
    TaskError,
    TaskFailed,
    TaskSubmitted,
)

USER = Actor(kind="user", id="alice")
TENANT = "acme"

# Distinctive strings that must never show up in clear once a key is configured.
SECRETS = ("Summarise the Q3 board minutes", "hunter2", "revenue grew 12 percent")

PAYLOADS: dict[str, EventPayload] = {
    "task.submitted": TaskSubmitted(
        description="Summarise the Q3 board minutes",
        constraints={"password": "hunter2", "max_words": 200},
        timeout=600,
        grants=["playbooks:inline"],
    ),
    "task.cancelled": TaskCancelled(reason="the user changed their mind"),
    "task.completed": TaskCompleted(
        output={"text": "revenue grew 12 percent", "tokens": 42}, summary="one paragraph"
    ),
    "task.failed": TaskFailed(
        reason="TIMEOUT",
        message="no result within 600 s",
        errors=[TaskError(code="TOOL_TIMEOUT", message="search timed out", details={"s": 30})],
    ),
}


def sample_event(event_type: str, task_id: uuid.UUID | None = None) -> Event:
    """A fresh event of ``event_type`` at a fixed instant, for a new task unless one is given."""
    return Event.new(
        PAYLOADS[event_type],
        tenant_id=TENANT,
        actor=USER,
        task_id=task_id or uuid.uuid4(),
        occurred_at=datetime(2026, 3, 1, 12, 30, tzinfo=UTC),
    )
