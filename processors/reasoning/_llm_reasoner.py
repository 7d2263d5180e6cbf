"""The reasoner backed by an LLM: each operation is one :meth:`LLMClient.think` call.

The prompt gives the model what it chooses from as compact JSON (roles with their
capabilities, tools with their input schemas, playbook templates with their steps); the
answer is validated by the result's model, and then against the same facts the rule
reasoner would respect (catalog roles only, a playbook that validates with the registry).
A task's own ``constraints.playbook`` is used as it is, without asking the model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from processors.reasoning._errors import LLMInvalidOutput
from processors.reasoning._llm import LLMClient, OnThought
from processors.reasoning._protocol import (
    ERROR_CATEGORIES,
    ErrorAnalysis,
    Evaluation,
    PlanProposal,
    RoleProposal,
    TaskBrief,
    proposed_playbook,
)
from processors.reasoning._rule import RuleReasoner
from processors.reasoning._types import Reasoned
from processors.shared.playbook import Playbook, PlaybookError, validate_playbook
from processors.shared.roles import RoleCatalog, RoleSpec
from processors.tools.registry import ToolRegistry

MAX_OUTPUT_CHARS_IN_PROMPT = 20_000
"""A stage output longer than this is cut before it is shown to the model."""

INSTRUCTIONS = (
    "You are the reasoning of WrenchAI, a platform where agents in roles run tool stages "
    "to complete a user's task. {job}"
)
_JOBS = {
    "assign_roles": "Now you choose the roles a task needs.",
    "plan": "Now you choose the playbook (a DAG of tool steps) that completes a task.",
    "evaluate": "Now you judge whether a stage's output meets its success criteria.",
    "analyse_error": "Now you diagnose why a stage failed and whether to retry it.",
}


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _task(task: TaskBrief) -> str:
    return f"Task {task.task_id}: {task.description}\nConstraints: {_json(task.constraints)}"


def roles_prompt(task: TaskBrief, catalog: RoleCatalog) -> str:
    """The assign_roles prompt: the task and the catalog."""
    roles = [
        {
            "name": role.name,
            "description": role.description,
            "capabilities": role.capabilities,
            "depends_on": role.depends_on,
        }
        for role in catalog.roles.values()
    ]
    return (
        f"{_task(task)}\nRole catalog: {_json(roles)}\n"
        "Rank the roles this task needs, best first: each with a score from 0 to 1 and a "
        "one-line reason. Name catalog roles only; the roles they depend on are added later."
    )


def plan_prompt(
    task: TaskBrief,
    roles: list[RoleSpec],
    registry: ToolRegistry,
    playbooks: Mapping[str, Playbook],
) -> str:
    """The plan prompt: the task, its roles, the tools and the playbook templates."""
    role_names = [{"name": role.name, "capabilities": role.capabilities} for role in roles]
    tools = [
        {
            "name": spec.name,
            "version": spec.version,
            "description": spec.description,
            "capabilities": spec.capabilities,
            "input_schema": spec.input_schema,
            "offline": spec.offline,
        }
        for spec in registry
    ]
    templates = [
        {
            "name": playbook.name,
            "description": playbook.description,
            "inputs": playbook.inputs,
            "steps": [
                {"id": s.id, "tool": s.tool, "role": s.role, "depends_on": s.depends_on}
                for s in playbook.steps
            ],
        }
        for playbook in (playbooks[name] for name in sorted(playbooks))
    ]
    return (
        f"{_task(task)}\nRoles: {_json(role_names)}\n"
        f"Tools: {_json(tools)}\nPlaybook templates: {_json(templates)}\n"
        "Choose a template by name (playbook, with inputs over its defaults), or write an "
        "inline playbook whose steps use these tools with inputs valid for their schemas. "
        "A step input may be {{steps.<id>.output.<field>}} of an upstream step, "
        "{{inputs.<name>}} or {{task.description}}. Give exactly one of playbook and inline."
    )


def evaluate_prompt(task: TaskBrief, stage_id: str, criteria: list[str], output: Any) -> str:
    """The evaluate prompt: the task, the stage's criteria and its output (cut if long)."""
    text = output if isinstance(output, str) else _json(output)
    if len(text) > MAX_OUTPUT_CHARS_IN_PROMPT:
        text = text[:MAX_OUTPUT_CHARS_IN_PROMPT] + " [cut]"
    return (
        f"{_task(task)}\nStage: {stage_id}\nSuccess criteria: {_json(criteria)}\n"
        f"Output: {text}\n"
        "Give one finding per criterion (met or not, and what you saw), a score from 0 to 1, "
        "passed (true exactly when every finding is met) and suggestions for what is not met."
    )


def error_prompt(task: TaskBrief, stage_id: str, error: Mapping[str, Any]) -> str:
    """The analyse_error prompt: the task, the stage and its error."""
    return (
        f"{_task(task)}\nStage: {stage_id}\nError: {_json(dict(error))}\n"
        f"Classify the error as one of {', '.join(ERROR_CATEGORIES)}: transient (timeouts, "
        "rate limits, connections), tool_error (the tool ran and failed), invalid_output "
        "(output that does not validate), budget (out of money or tokens), fatal (retrying "
        "cannot help). Say whether a retry can help and what to do."
    )


def _invalid(name: str, message: str, reasoned: Reasoned[Any]) -> LLMInvalidOutput:
    """A well-formed answer that breaks a rule of the domain; its usage is still counted."""
    return LLMInvalidOutput(
        f"The model's answer for {name} is not usable: {message}",
        name=name,
        usage=list(reasoned.usage),
    )


class LLMReasoner:
    """The :class:`~processors.reasoning.Reasoner` that asks an LLM, through ``client``."""

    def __init__(self, client: LLMClient) -> None:
        self._client = client

    @staticmethod
    def instructions(operation: str) -> str:
        """The system instructions of one operation."""
        return INSTRUCTIONS.format(job=_JOBS[operation])

    async def assign_roles(
        self, task: TaskBrief, catalog: RoleCatalog, *, on_thought: OnThought | None = None
    ) -> Reasoned[RoleProposal]:
        """The model's ranking; a role outside the catalog is LLMInvalidOutput."""
        reasoned = await self._client.think(
            roles_prompt(task, catalog),
            RoleProposal,
            name="assign_roles",
            on_thought=on_thought,
            instructions=self.instructions("assign_roles"),
        )
        unknown = [name for name in reasoned.result.names() if name not in catalog]
        if unknown:
            raise _invalid(
                "assign_roles",
                f"{', '.join(unknown)} not in the role catalog ({', '.join(catalog.names())})",
                reasoned,
            )
        return reasoned

    async def plan(
        self,
        task: TaskBrief,
        roles: list[RoleSpec],
        registry: ToolRegistry,
        playbooks: Mapping[str, Playbook],
        *,
        on_thought: OnThought | None = None,
    ) -> Reasoned[PlanProposal]:
        """The task's own playbook, or the model's choice once it validates with ``registry``."""
        if task.constraints.get("playbook") is not None:
            return await RuleReasoner().plan(
                task, roles, registry, playbooks, on_thought=on_thought
            )
        reasoned = await self._client.think(
            plan_prompt(task, roles, registry, playbooks),
            PlanProposal,
            name="plan",
            on_thought=on_thought,
            instructions=self.instructions("plan"),
        )
        try:
            validate_playbook(proposed_playbook(reasoned.result, playbooks), registry)
        except PlaybookError as exc:
            raise _invalid("plan", exc.message, reasoned) from exc
        return reasoned

    async def evaluate(
        self,
        task: TaskBrief,
        stage_id: str,
        criteria: list[str],
        output: Any,
        *,
        on_thought: OnThought | None = None,
    ) -> Reasoned[Evaluation]:
        """The model's findings on the output, one per criterion."""
        return await self._client.think(
            evaluate_prompt(task, stage_id, criteria, output),
            Evaluation,
            name="evaluate",
            on_thought=on_thought,
            instructions=self.instructions("evaluate"),
        )

    async def analyse_error(
        self,
        task: TaskBrief,
        stage_id: str,
        error: Mapping[str, Any],
        *,
        on_thought: OnThought | None = None,
    ) -> Reasoned[ErrorAnalysis]:
        """The model's diagnosis of the error."""
        return await self._client.think(
            error_prompt(task, stage_id, error),
            ErrorAnalysis,
            name="analyse_error",
            on_thought=on_thought,
            instructions=self.instructions("analyse_error"),
        )
