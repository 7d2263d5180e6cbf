"""Payloads of planning: the roles a task gets, their tools, the plan, and the reasoning
behind them (thoughts and token usage).

These are the log's own shapes. The SuperAgent builds them from its planning models, but the
log does not import the agents: a stored event must stay readable whatever the agents become.
The shapes follow the agents' JSON closely, so building a payload is one ``model_validate``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from events._catalog import event
from events._envelope import EventPayload, sensitive

MAX_NAME = 200
MAX_DETAIL = 2_000

Operation = Literal["assign_roles", "plan", "evaluate", "analyse_error", "execute"]
"""What a thought or a token count belongs to: a reasoning operation, or ``execute`` for
the LLM calls a stage makes through llm.complete."""


class _Part(BaseModel):
    """A value inside a payload: frozen, and strict about unknown fields like the payload."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# -- roles.assigned ------------------------------------------------------------------------
class AssignedRole(_Part):
    """One role of the task, why it was chosen, and the roles whose output it needs."""

    name: str = Field(min_length=1, max_length=MAX_NAME)
    reason: str = Field("", max_length=MAX_DETAIL)
    score: float = Field(0.0, description="How well the role matches the task (higher is better).")
    depends_on: list[str] = Field(default_factory=list)
    source: Literal["proposed", "dependency", "playbook"] = Field(
        "proposed",
        description="Why the task has the role: the reasoner proposed it, a role depends on "
        "it, or the playbook's steps name it.",
    )


@event("roles.assigned", version=1)
class RolesAssigned(EventPayload):
    """The roles the task will be worked by, in execution order (dependencies first)."""

    roles: list[AssignedRole] = Field(min_length=1)
    reasoner: Literal["rule", "llm"] = Field(description="Which reasoner proposed the roles.")


# -- tools.allocated -----------------------------------------------------------------------
class AllocatedTool(_Part):
    """One tool given to a role, why, and how it scored against the alternatives."""

    tool: str = Field(min_length=1, max_length=MAX_NAME)
    version: str = Field(min_length=1, max_length=MAX_NAME)
    need: str = Field(description="required_tool, optional_tool or capability:<name>.")
    reliability: float = Field(ge=0, le=1, description="Expected reliability, the Beta mean.")
    score: float = Field(ge=0)
    alternatives: list[str] = Field(
        default_factory=list, description="Other candidates for the same need, best first."
    )


class RoleTools(_Part):
    """The tools of one role, in allocation order."""

    role: str = Field(min_length=1, max_length=MAX_NAME)
    tools: list[AllocatedTool] = Field(default_factory=list)


class ThompsonDraw(_Part):
    """The reliability draws allocation ranked tools by: one sample per tool from its Beta
    posterior, made with ``seed`` so that a replay draws the same."""

    seed: int
    draws: dict[str, float] = Field(default_factory=dict)


@event("tools.allocated", version=1)
class ToolsAllocated(EventPayload):
    """The tools each role of the task may call."""

    roles: list[RoleTools]
    offline_only: bool = Field(False, description="Only tools that need no network were allowed.")
    sampling: ThompsonDraw | None = Field(
        None, description="The Thompson-sampling draws behind the choice, when posteriors exist."
    )


# -- plan.created --------------------------------------------------------------------------
class PlanEstimate(_Part):
    """Expected resources of a stage or of the whole plan."""

    tokens: int = Field(0, ge=0)
    prompt_tokens: int = Field(0, ge=0)
    completion_tokens: int = Field(0, ge=0)
    seconds: float = Field(0.0, ge=0)
    cost_usd: float = Field(0.0, ge=0)


class StageFallback(_Part):
    """One way to recover a failed stage; the fields that apply depend on ``kind``."""

    kind: Literal["retry", "alternate_model", "alternate_tool", "skip", "escalate"]
    detail: str = Field("", max_length=MAX_DETAIL)
    tool: str | None = None
    model: str | None = None
    attempts: int | None = Field(None, ge=0)
    backoff_s: float | None = Field(None, ge=0)
    backoff_factor: float | None = Field(None, ge=0)
    max_backoff_s: float | None = Field(None, ge=0)


class PlanStage(_Part):
    """One stage of the plan: a role calling a tool once the stages it depends on are done."""

    id: str = Field(min_length=1, max_length=MAX_NAME)
    role: str = Field(min_length=1, max_length=MAX_NAME)
    tools: list[str] = Field(
        min_length=1, description="The tool to call, then alternates by preference."
    )
    tool_version: str = Field(min_length=1, max_length=MAX_NAME)
    model: str | None = None
    depends_on: list[str] = Field(default_factory=list)
    inputs: list[str] = Field(
        default_factory=list, description="Stages whose outputs this stage reads."
    )
    tool_input: dict[str, Any] = Field(
        default_factory=dict, description="The tool's arguments; may quote the task."
    )
    success_criteria: list[str] = Field(default_factory=list)
    optional: bool = False
    timeout: int = Field(ge=1, description="Seconds the stage may run.")
    retry: int = Field(0, ge=0, description="Attempts after the first one.")
    estimate: PlanEstimate = Field(default_factory=PlanEstimate)
    fallbacks: list[StageFallback] = Field(default_factory=list)


@event("plan.created", version=1)
class PlanCreated(EventPayload):
    """The execution plan of the task: stages in dependency order, with estimates and
    fallbacks. One task gets one plan."""

    playbook: str | None = Field(None, description="The playbook the plan was built from.")
    # The codec encrypts top-level fields only, so the whole list is sensitive for the sake
    # of each stage's tool_input.
    stages: list[PlanStage] = sensitive(
        min_length=1,
        description="Stages in dependency order. Encrypted as a whole: a stage's tool_input "
        "may hold user content.",
    )
    total: PlanEstimate = Field(default_factory=PlanEstimate)
    critical_path_seconds: float = Field(
        0.0, ge=0, description="Seconds along the longest dependency chain."
    )

    @model_validator(mode="after")
    def _stage_ids_are_unique(self) -> PlanCreated:
        ids = [stage.id for stage in self.stages]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"stage ids must be unique; repeated: {', '.join(repeated)}")
        return self


# -- reasoning -----------------------------------------------------------------------------
@event("thought.recorded", version=1)
class ThoughtRecorded(EventPayload):
    """One numbered step of a reasoner's sequential thinking; it may revise an earlier
    thought or belong to a branch."""

    operation: Operation
    number: int = Field(ge=1, description="Position of the thought in its operation, from 1.")
    text: str = sensitive()
    revises: int | None = Field(None, ge=1, description="The thought this one corrects.")
    branch: str | None = Field(None, max_length=MAX_NAME)
    stage_id: str | None = Field(None, description="The stage reasoned about, if any.")
