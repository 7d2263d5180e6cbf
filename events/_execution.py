"""Payloads of execution: steps, tool calls, recoveries and progress.

A stage of the plan runs as one or more attempts. An attempt is step.started, then its
tool.called and tool.returned (and usage.recorded for LLM calls), then step.completed or
step.failed. A failed attempt is followed by recovery.planned (what to do and why) and
recovery.executed (when it is done): another attempt, an alternate tool or model, skipping
an optional stage, or escalating (task.failed).

``stage_id`` is the id of the plan's stage; ``attempt`` counts from 1 within the stage.
Tool inputs, results and step outputs hold user content and are encrypted.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from events._catalog import event
from events._envelope import EventPayload, sensitive

MAX_NAME = 200
MAX_DETAIL = 2_000

ErrorCategory = Literal["transient", "tool_error", "invalid_output", "budget", "fatal"]
"""How a failure is classified for recovery (the reasoner's ErrorAnalysis uses the same)."""

RecoveryAction = Literal["retry", "alternate_tool", "alternate_model", "skip", "escalate"]


class StepError(BaseModel):
    """Why a tool call or a step failed: a stable code, a message, and its classification."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str = Field(min_length=1, max_length=100)
    message: str = Field("", max_length=10_000)
    category: ErrorCategory = "fatal"
    transient: bool = False
    details: dict[str, Any] = Field(default_factory=dict)


class _Attempt(EventPayload):
    """Fields every execution event carries: the stage and the attempt."""

    stage_id: str = Field(min_length=1, max_length=MAX_NAME)
    attempt: int = Field(ge=1, description="Attempt of the stage, counting from 1.")


@event("step.started", version=1)
class StepStarted(_Attempt):
    """An attempt of a stage began with this tool (and model, for LLM stages)."""

    tool: str = Field(min_length=1, max_length=MAX_NAME)
    tool_version: str = Field(min_length=1, max_length=MAX_NAME)
    model: str | None = None
    input: dict[str, Any] = sensitive(description="The tool's input, references resolved.")
    idempotency_key: str = Field(
        min_length=1,
        max_length=MAX_NAME,
        description="The same on every run of this attempt; tools use it to deduplicate.",
    )
    suggestions: list[str] = Field(
        default_factory=list, description="What earlier evaluations asked this attempt to fix."
    )


@event("tool.called", version=1)
class ToolCalled(_Attempt):
    """A tool was called (or its cached result reused) for an attempt."""

    tool: str = Field(min_length=1, max_length=MAX_NAME)
    version: str = Field(min_length=1, max_length=MAX_NAME)
    input_hash: str = Field(description="sha256 of the canonical JSON input (the cache key).")
    idempotency_key: str = Field(min_length=1, max_length=MAX_NAME)


@event("tool.returned", version=1)
class ToolReturned(_Attempt):
    """What a tool call gave back: a result or an error, and how long it took."""

    tool: str = Field(min_length=1, max_length=MAX_NAME)
    version: str = Field(min_length=1, max_length=MAX_NAME)
    outcome: Literal["ok", "error"]
    duration_s: float = Field(ge=0)
    result: Any = sensitive(None)
    error: StepError | None = None
    cached: bool = Field(False, description="The result of an earlier identical call, reused.")
    input_hash: str
    task_type: str | None = Field(None, description="The plan's playbook, for tool statistics.")
    cost_usd: float = Field(0.0, ge=0)


@event("step.completed", version=1)
class StepCompleted(_Attempt):
    """An attempt of a stage produced its output."""

    output: Any = sensitive(None)
    duration_s: float = Field(ge=0)


@event("step.failed", version=1)
class StepFailed(_Attempt):
    """An attempt of a stage failed; recovery decides what happens next."""

    error: StepError
    duration_s: float = Field(ge=0)


@event("recovery.planned", version=1)
class RecoveryPlanned(_Attempt):
    """What will be done about a failed attempt (``attempt``), and why."""

    category: ErrorCategory
    action: RecoveryAction
    reason: str = Field(max_length=MAX_DETAIL)
    delay_s: float = Field(0.0, ge=0, description="Backoff before the next attempt.")
    tool: str | None = Field(None, description="The tool of the next attempt.")
    model: str | None = Field(None, description="The model of the next attempt.")
    suggestion: str | None = Field(None, max_length=MAX_DETAIL)


@event("recovery.executed", version=1)
class RecoveryExecuted(_Attempt):
    """A planned recovery was carried out; ``attempt`` is the failed attempt it answered."""

    action: RecoveryAction
    next_attempt: int | None = Field(None, ge=1, description="The attempt it started, if any.")


@event("progress.updated", version=1)
class ProgressUpdated(EventPayload):
    """Where a task stands: stages done of total, time and tokens against the estimate."""

    stages_done: int = Field(ge=0)
    stages_total: int = Field(ge=0)
    stages_failed: int = Field(0, ge=0)
    stages_skipped: int = Field(0, ge=0)
    elapsed_s: float = Field(ge=0)
    estimated_s: float = Field(ge=0)
    tokens: int = Field(0, ge=0)
    estimated_tokens: int = Field(0, ge=0)
    cost_usd: float = Field(0.0, ge=0)
    estimated_cost_usd: float = Field(0.0, ge=0)
