"""What the agents ask a reasoner, and the typed answers they get back.

Every operation returns a :class:`Reasoned` answer: the result, the numbered thoughts that
led to it and the LLM usage it cost. The results are frozen and JSON-serialisable, since
they travel in events (roles.assigned, plan.created, the InspectorAgent's evaluations).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from processors.reasoning._llm import OnThought
from processors.reasoning._types import Reasoned
from processors.shared.playbook import Playbook, PlaybookError
from processors.shared.roles import RoleCatalog, RoleSpec
from processors.tools.registry import ToolRegistry

ErrorCategory = Literal["transient", "tool_error", "invalid_output", "budget", "fatal"]
ERROR_CATEGORIES: tuple[str, ...] = get_args(ErrorCategory)


class TaskBrief(BaseModel):
    """What a reasoner knows of a task: its id, what the user asked and their constraints."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task_id: str = Field(min_length=1)
    description: str = Field(min_length=1)
    constraints: dict[str, Any] = Field(default_factory=dict)


class RoleScore(BaseModel):
    """One proposed role, how well it fits the task (0..1) and why, in one line."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: str
    score: float = Field(ge=0.0, le=1.0)
    reason: str = Field(min_length=1, max_length=500)


class RoleProposal(BaseModel):
    """The roles a reasoner proposes, best first (ties by name). Advice only:
    :func:`processors.shared.roles.validate_role_assignment` applies the catalog and constraints."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    roles: list[RoleScore] = Field(min_length=1)

    @field_validator("roles")
    @classmethod
    def _ranked(cls, value: list[RoleScore]) -> list[RoleScore]:
        # Ranking is part of the contract, so it is imposed here rather than trusted.
        return sorted(value, key=lambda item: (-item.score, item.role))

    def names(self) -> list[str]:
        """The proposed role names, best first."""
        return [item.role for item in self.roles]


class PlanProposal(BaseModel):
    """Either a playbook template by name (with inputs over its defaults) or an inline
    playbook; :func:`proposed_playbook` turns it into the playbook to validate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    playbook: str | None = Field(None, description="Name of a playbook template.")
    inputs: dict[str, Any] = Field(
        default_factory=dict, description="Inputs for the template, over its defaults."
    )
    inline: Playbook | None = Field(None, description="A playbook written for this task.")
    reason: str

    @model_validator(mode="after")
    def _one_source(self) -> PlanProposal:
        if (self.playbook is None) == (self.inline is None):
            raise ValueError("give either playbook (a template name) or inline, not both")
        return self


class CriterionFinding(BaseModel):
    """Whether one check or success criterion is met, and what was seen."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    criterion: str
    met: bool
    detail: str


class Evaluation(BaseModel):
    """The verdict on a stage's output: passed exactly when every finding is met."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    passed: bool
    score: float = Field(ge=0.0, le=1.0)
    findings: list[CriterionFinding] = Field(min_length=1)
    suggestions: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Evaluation:
        if self.passed != all(finding.met for finding in self.findings):
            raise ValueError("passed must be true exactly when every finding is met")
        return self


class ErrorAnalysis(BaseModel):
    """What kind of failure a stage met, whether retrying can help, and what to do."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    category: ErrorCategory
    retryable: bool
    suggestion: str


class Reasoner(Protocol):
    """The reasoning operations the agents use. ``on_thought`` is awaited with each thought
    as it is made, in order, so the caller can emit thought.recorded as they come."""

    async def assign_roles(
        self, task: TaskBrief, catalog: RoleCatalog, *, on_thought: OnThought | None = None
    ) -> Reasoned[RoleProposal]:
        """Catalog roles ranked by fit with the task, best first."""
        ...

    async def plan(
        self,
        task: TaskBrief,
        roles: list[RoleSpec],
        registry: ToolRegistry,
        playbooks: Mapping[str, Playbook],
        *,
        on_thought: OnThought | None = None,
    ) -> Reasoned[PlanProposal]:
        """A playbook for the task: one of ``playbooks`` by name, or an inline one."""
        ...

    async def evaluate(
        self,
        task: TaskBrief,
        stage_id: str,
        criteria: list[str],
        output: Any,
        *,
        on_thought: OnThought | None = None,
    ) -> Reasoned[Evaluation]:
        """Whether a stage's output meets its success criteria."""
        ...

    async def analyse_error(
        self,
        task: TaskBrief,
        stage_id: str,
        error: Mapping[str, Any],
        *,
        on_thought: OnThought | None = None,
    ) -> Reasoned[ErrorAnalysis]:
        """The category of a stage's failure and what to do about it."""
        ...


def proposed_playbook(proposal: PlanProposal, playbooks: Mapping[str, Playbook]) -> Playbook:
    """The playbook ``proposal`` names (with its inputs) or carries; check it with
    :func:`processors.shared.playbook.validate_playbook` before use.

    Raises PlaybookError PLAYBOOK_NOT_FOUND for an unknown template and INVALID_PLAYBOOK
    for inputs the template does not declare.
    """
    if proposal.inline is not None:
        return proposal.inline
    name = proposal.playbook or ""
    template = playbooks.get(name)
    if template is None:
        raise PlaybookError(
            "PLAYBOOK_NOT_FOUND",
            f"there is no playbook called {name!r}; available: "
            f"{', '.join(sorted(playbooks)) or 'none'}",
            playbook=name,
        )
    unknown = sorted(set(proposal.inputs) - set(template.inputs))
    if unknown:
        raise PlaybookError(
            "INVALID_PLAYBOOK",
            f"playbook {name} takes no input {', '.join(unknown)}; its inputs: "
            f"{', '.join(template.inputs) or 'none'}",
            playbook=name,
            unknown=unknown,
        )
    return template.model_copy(update={"inputs": {**template.inputs, **proposal.inputs}})
