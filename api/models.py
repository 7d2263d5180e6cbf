"""The API's request and response bodies. All frozen: a body is a value, never a workspace."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from api import _examples as ex
from events import (
    SCOPES,
    Actor,
    ErrorCategory,
    Operation,
    PlanEstimate,
    RecoveryAction,
    StageFallback,
)
from processors.inspector.monitoring import parse_overrides

# The same bounds as events.TaskSubmitted, so a request the API accepts always makes a valid
# event (tests/api pins the two together).
MAX_DESCRIPTION = 10_000
MAX_TIMEOUT_S = 86_400
DEFAULT_TIMEOUT_S = 3_600
MAX_REASON = 2_000

Shredded = Literal["[shredded]"]
"""What a field of user content reads once its tenant was shredded (``events.SHREDDED``)."""

TaskStatus = Literal["submitted", "running", "completed", "failed", "cancelled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})

# PARTITION:OFFSET, as events.Position writes it; the digit counts keep both numbers inside
# the integer and bigint columns they are compared with.
POSITION_PATTERN = r"^[0-9]{1,9}:[0-9]{1,18}$"
# What a cursor this API issues looks like (unpadded base64url); one that matches may still
# not be ours, and is refused with a 422 naming query.cursor.
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{1,1024}$"


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SubmitTask(_Body):
    """What a user asks for: a description, optional constraints and a time limit."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.SUBMIT_TASK))

    description: str = Field(min_length=1, max_length=MAX_DESCRIPTION)
    constraints: dict[str, Any] | None = Field(
        None,
        description="Free-form constraints for the agents. ``alerts`` sets this task's alert "
        "thresholds: stall_after_s, overrun_factor, low_quality_score, repeated_failures.",
        examples=[{"max_roles": 2, "alerts": {"stall_after_s": 30, "overrun_factor": 2}}],
    )
    # strict: true, "60" and 60.5 are mistakes worth a 422, not values to coerce. 60.0 is
    # not: JSON Schema's integer admits it, and so must an API whose schema says integer.
    timeout: int = Field(
        DEFAULT_TIMEOUT_S, ge=1, le=MAX_TIMEOUT_S, strict=True, description="Seconds."
    )

    @field_validator("timeout", mode="before")
    @classmethod
    def _integral_float(cls, value: Any) -> Any:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value

    @field_validator("constraints")
    @classmethod
    def _alert_thresholds(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # constraints.alerts overrides the task's alert thresholds; a bad one is refused
        # here, where the user can fix it, rather than ignored by the InspectorAgent later.
        parse_overrides(value)
        return value


class CancelTask(_Body):
    """Why the task is being called off, if the caller says."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.CANCEL_TASK))

    reason: str | None = Field(None, max_length=MAX_REASON)


class Accepted(_Body):
    """A write the log accepted; ``position`` is where to wait for it with ``?wait_for=``."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.ACCEPTED))

    task_id: uuid.UUID
    status: Literal["submitted", "cancelling"]
    position: str = Field(examples=["2:41"])


class WsTicket(_Body):
    """A single-use ticket for opening one stream: pass it as ``?ticket=``."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.WS_TICKET))

    ticket: str = Field(description="Opaque; opens one stream, once.")
    expires_in: int = Field(description="Seconds left to use it.", examples=[30])


class Task(_Body):
    """One row of the tasks read model."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.TASK))

    task_id: uuid.UUID
    tenant_id: str
    description: str
    constraints: dict[str, Any] | Shredded | None
    timeout: int
    status: TaskStatus
    created_at: datetime
    updated_at: datetime
    last_event_id: uuid.UUID
    position: str = Field(description="Log position of the last event applied to this row.")
    playbook: str | None = Field(
        None,
        description="The playbook the task was submitted with (constraints.playbook) or, "
        "once planned, the one its plan was built from; null when neither named one.",
    )


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


StageStatus = Literal["pending", "running", "completed", "failed", "skipped", "recovering"]
"""Where a stage of the plan stands: ``recovering`` between a failed attempt and the retry or
alternate that answers it."""


class PlanStage(_Body):
    """One stage of the plan, with where its execution stands."""

    id: str
    role: str
    tools: list[str] = Field(description="The tool to call, then alternates by preference.")
    tool_version: str
    model: str | None
    depends_on: list[str]
    inputs: list[str] = Field(description="Stages whose outputs this stage reads.")
    tool_input: dict[str, Any] | Shredded
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


class StepError(_Body):
    """Why the latest failed attempt of a stage failed."""

    code: str
    message: str
    category: ErrorCategory


class Step(_Body):
    """One stage of the plan as it executes. ``tool``, ``tool_version`` and ``model`` are
    those of the latest attempt (null until one starts); ``error`` is the latest failure's,
    kept when a later attempt succeeds."""

    stage_id: str
    role: str
    optional: bool
    status: StageStatus
    attempts: int = Field(description="The highest attempt started, 0 while pending.")
    tool: str | None
    tool_version: str | None
    model: str | None
    started_at: datetime | None = Field(description="When the first attempt started.")
    completed_at: datetime | None
    duration_s: float | None = Field(description="Seconds the completing attempt took.")
    error: StepError | None


class Progress(_Body):
    """Where the task stands, from its latest progress.updated."""

    stages_done: int
    stages_total: int
    elapsed_s: float
    estimated_s: float
    tokens: int
    cost_usd: float


class TaskDetail(Task):
    """A task with its roles (in execution order), its plan (null until it is planned), its
    steps in plan order, its progress (null until execution reports some), and the summary
    and output its completion gave."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.TASK_DETAIL))

    roles: list[TaskRole]
    plan: Plan | None
    steps: list[Step]
    progress: Progress | None
    summary: str | None
    output: Any = Field(
        None,
        description="The compiled results of task.completed (final, stages, skipped, totals), "
        "decrypted from the archived event; null until the task completes.",
    )


class ToolCall(_Body):
    """One call of a tool for an attempt of a stage. Its result is not served here: it is
    user content, in the task's history."""

    attempt: int
    tool: str
    version: str
    outcome: Literal["ok", "error"]
    duration_s: float
    cached: bool = Field(description="An earlier identical call's result, reused.")
    error_code: str | None
    cost_usd: float
    occurred_at: datetime
    position: str = Field(description="Log position of the tool.returned event.")


class Recovery(_Body):
    """What was planned about a failed attempt, and whether it was carried out."""

    attempt: int = Field(description="The failed attempt this recovery answers.")
    category: ErrorCategory
    action: RecoveryAction
    reason: str
    delay_s: float
    tool: str | None = Field(description="The tool of the next attempt, if it changes.")
    model: str | None = Field(description="The model of the next attempt, if it changes.")
    suggestion: str | None
    planned_at: datetime
    executed: bool
    executed_at: datetime | None
    next_attempt: int | None = Field(description="The attempt it started, if any.")


class StepDetail(Step):
    """A step with its tool calls and its recoveries, each in log order."""

    tool_calls: list[ToolCall]
    recoveries: list[Recovery]


class TaskSteps(_Body):
    """Every step of one task in plan order; empty until the task is planned."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.TASK_STEPS))

    task_id: uuid.UUID
    steps: list[StepDetail]


class ToolCostHints(_Body):
    """What the descriptor expects one call to cost."""

    usd_per_call: float
    tokens_per_call: int
    seconds: float


class ToolStats(_Body):
    """Calls of a tool as the log recorded them, counted as the agents count them: ``calls``
    are the calls that ran the tool; a reused result (``cached``) and a refusal by the
    circuit breaker (``refused``) are counted apart and add no duration or cost.
    ``reliability`` is the mean of the Beta posterior from a uniform prior,
    (1 + successes) / (2 + calls), the figure tool choice works with; the rates are null
    before the first call."""

    calls: int
    successes: int
    failures: int
    cached: int
    refused: int
    success_rate: float | None
    mean_duration_s: float | None
    cost_usd: float
    reliability: float
    last_called_at: datetime | None = Field(description="The latest call, reuse or refusal.")


class TaskTypeStats(ToolStats):
    """A tool's statistics for one task type (the plan's playbook; null when none was named)."""

    task_type: str | None


class ObservedStats(ToolStats):
    """A tool's statistics over the caller's tenant, with the breakdown by task type."""

    by_task_type: list[TaskTypeStats]


class ToolHealthReport(_Body):
    """The answer of the tool's health probe, as of ``checked_at``."""

    ok: bool
    detail: str
    checked_at: datetime


class ToolInfo(_Body):
    """One tool of the registry: its descriptor, what the log says of it, and its health."""

    name: str
    version: str
    description: str
    capabilities: list[str]
    offline: bool = Field(description="Works with no network and no LLM.")
    uses_llm: bool
    side_effects: bool
    idempotent: bool
    cost: ToolCostHints
    observed: ObservedStats
    health: ToolHealthReport | None = Field(
        description="Null when a tool module registered the descriptor without an implementation."
    )


class ToolList(_Body):
    """Every registered tool, by name."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.TOOL_LIST))

    tools: list[ToolInfo]


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

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.TASK_THOUGHTS))

    task_id: uuid.UUID
    thoughts: list[Thought]


class TaskPage(_Body):
    """One page of tasks, newest first; pass ``next_cursor`` back as ``cursor`` for the next."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.TASK_PAGE))

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

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.TASK_HISTORY))

    task_id: uuid.UUID
    events: list[HistoryEvent]


class HealthChecks(_Body):
    """Each dependency's state; ``projector_lag`` is informational (null when unknown)."""

    database: bool
    broker: bool
    projector_lag: int | None


class SandboxHealth(_Body):
    """How code.python runs on this API's machine: ``isolated`` (bubblewrap namespaces,
    user 65534), ``weak`` (no namespaces; only with WRENCH_SANDBOX_ALLOW_WEAK) or
    ``refused`` (it will not run); ``detail`` says why."""

    mode: Literal["isolated", "weak", "refused"]
    detail: str


class McpServerHealth(_Body):
    """One MCP server of WRENCH_MCP_SERVERS, as this API's ping found it at ``checked_at``
    (docs/mcp-tools.md)."""

    name: str
    transport: Literal["stdio", "http"]
    ok: bool
    detail: str
    checked_at: datetime


class Health(_Body):
    """``healthy`` when the database and the broker both answer; ``sandbox`` and
    ``mcp_servers`` are informational."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.HEALTHY))

    status: Literal["healthy", "unhealthy"]
    checks: HealthChecks
    sandbox: SandboxHealth
    mcp_servers: list[McpServerHealth] | None = Field(
        None,
        description="Each configured MCP server, in the order of WRENCH_MCP_SERVERS; absent "
        "when none is configured.",
    )


class ErrorDetail(_Body):
    """The stable code, a message for people, and the ids or fields involved."""

    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorBody(_Body):
    """The body of every error answer."""

    error: ErrorDetail


# -- identity ------------------------------------------------------------------------------


class TokenPair(_Body):
    """What /auth/token hands out: a short-lived access token and a refresh token."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.TOKEN_PAIR))

    access_token: str
    token_type: Literal["bearer"]
    expires_in: int = Field(description="Seconds the access token is valid.")
    refresh_token: str
    refresh_expires_in: int = Field(description="Seconds the refresh token is valid.")


class Me(_Body):
    """The caller, as the API sees it."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.ME))

    tenant_id: str
    credential: Literal["jwt", "api_key"]
    user_id: str | None
    key_id: str | None
    role: Literal["admin", "operator", "viewer"] | None
    scopes: list[str]
    expires_at: datetime | None


class CreateTenant(_Body):
    """A tenant to create: its name, and its id (made from the name when absent)."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.CREATE_TENANT))

    name: str = Field(min_length=1, max_length=200)
    tenant_id: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")


_SCOPE_ITEMS: dict[str, JsonValue] = {"items": {"enum": list(sorted(SCOPES))}}


class IssueKey(_Body):
    """A key to issue: a name, its scopes (the issuer's own when absent), an expiry."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.ISSUE_KEY))

    name: str = Field(min_length=1, max_length=200)
    scopes: list[str] | None = Field(None, max_length=64, json_schema_extra=_SCOPE_ITEMS)
    expires_at: datetime | None = None

    @field_validator("scopes")
    @classmethod
    def _known(cls, value: list[str] | None) -> list[str] | None:
        unknown = sorted(set(value or ()) - SCOPES)
        if unknown:
            raise ValueError(f"unknown scope(s) {unknown}; known: {sorted(SCOPES)}")
        return value


class ApiKeyIssuedBody(_Body):
    """A key, shown once: ``key`` is never shown again."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.API_KEY_ISSUED))

    key_id: str
    key: str = Field(description="wr_<prefix>_<secret>: store it now, it is shown once.")
    prefix: str
    name: str
    scopes: list[str]
    tenant_id: str
    user_id: str | None
    expires_at: datetime | None


class TenantCreatedBody(_Body):
    """A new tenant and its first admin key, shown once."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.TENANT_CREATED))

    tenant_id: str
    name: str
    api_key: ApiKeyIssuedBody


class ApiKeyInfo(_Body):
    """A key as listed: never its secret."""

    key_id: str
    prefix: str
    name: str
    scopes: list[str]
    user_id: str | None
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class ApiKeyList(_Body):
    """The tenant's keys, newest first."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.API_KEY_LIST))

    keys: list[ApiKeyInfo]


class CreateUser(_Body):
    """A user to create."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.CREATE_USER))

    username: str = Field(pattern=r"^[A-Za-z0-9._@+-]{1,200}$")
    password: str = Field(min_length=12, max_length=1_024)
    role: Literal["admin", "operator", "viewer"]


class ChangeRole(_Body):
    """The user's new role."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.CHANGE_ROLE))

    role: Literal["admin", "operator", "viewer"]


class DisableUser(_Body):
    """Why the user is disabled, if the caller says."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.DISABLE_USER))

    reason: str | None = Field(None, max_length=MAX_REASON)


class UserInfo(_Body):
    """A user as listed: never the password hash."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.USER_INFO))

    user_id: str
    username: str
    role: Literal["admin", "operator", "viewer"]
    created_at: datetime
    disabled_at: datetime | None


class UserList(_Body):
    """The tenant's users, newest first."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.USER_LIST))

    users: list[UserInfo]
