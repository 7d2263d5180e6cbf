"""Execution planning: a validated playbook, the task's roles and their tools become a
plan of stages with estimates and fallbacks.

The plan is a pure function of its inputs, so the SuperAgent derives the identical plan
when it sees the same task.submitted again.

Estimates per stage:

- tokens: only stages whose tool calls the LLM send a prompt. The prompt is
  :func:`build_stage_prompt` of the task and the stage's input, counted with tiktoken
  (cl100k_base, offline); references to upstream outputs count as their reference text,
  so the figure is what is known at planning time. Completion tokens are the input's
  ``max_tokens`` or the tool's ``tokens_per_call`` hint.
- seconds: the tool's ``seconds`` hint. The total adds every stage (the serial worst
  case); ``critical_path_seconds`` is the longest dependency chain (the parallel case).
- cost: prompt and completion tokens at the model's price per 1k, plus the tool's price
  per call (see :mod:`processors.shared.pricing`).

Fallbacks per stage come from :mod:`processors.shared.fallbacks`, less the tools the task may not
use (``forbidden``): a plan never offers the JourneyAgent a tool the submitter did not allow.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from jsonschema import Draft202012Validator
from pydantic import BaseModel, ConfigDict, Field

from processors.shared.fallbacks import Fallback, alternate_tools, stage_fallbacks
from processors.shared.playbook import (
    Playbook,
    PlaybookStep,
    is_reference,
    step_inputs,
    substitute,
    topological_steps,
    validate_playbook,
)
from processors.shared.pricing import DEFAULT_PRICES, PriceTable, count_tokens
from processors.shared.roles import RoleSpec
from processors.tools.allocation import (
    TOOL_SCOPES,
    Allocation,
    ForbiddenToolError,
    Reliability,
    forbidden_message,
)
from processors.tools.registry import PlanningError, ToolRegistry, ToolSpec, parse_requirement

MIN_STAGE_TIMEOUT_S = 30
TIMEOUT_FACTOR = 4


class PlanError(PlanningError):
    """The stages cannot form a plan. ``code`` (also ``reason``): ROLE_NOT_ASSIGNED,
    TOOL_NOT_ALLOCATED, INVALID_INPUT, DUPLICATE_STAGE, UNKNOWN_DEPENDENCY, PLAN_CYCLE or
    MISSING_INPUT."""

    code = "PLAN_ERROR"

    def __init__(self, reason: str, message: str, **details: Any) -> None:
        super().__init__(message, reason=reason, **details)
        self.code = reason
        self.reason = reason


class Estimate(BaseModel):
    """Expected resources of a stage or a plan."""

    model_config = ConfigDict(frozen=True)

    tokens: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    cost_usd: float = 0.0

    def __add__(self, other: Estimate) -> Estimate:
        return Estimate(
            tokens=self.tokens + other.tokens,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            seconds=round(self.seconds + other.seconds, 6),
            cost_usd=round(self.cost_usd + other.cost_usd, 8),
        )


class Stage(BaseModel):
    """One step of the plan: a role calling a tool once its dependencies are done."""

    model_config = ConfigDict(frozen=True)

    id: str
    role: str
    tools: list[str] = Field(description="The tool to call, then alternates by preference.")
    tool_version: str
    model: str | None = None
    depends_on: list[str]
    inputs: list[str] = Field(description="Stages whose outputs this stage reads.")
    tool_input: dict[str, Any]
    success_criteria: list[str]
    optional: bool
    timeout: int
    retry: int
    estimate: Estimate
    fallbacks: list[Fallback]


class Plan(BaseModel):
    """Stages in dependency order with their totals; the payload of plan.created."""

    model_config = ConfigDict(frozen=True)

    playbook: str | None
    stages: list[Stage]
    total: Estimate
    critical_path_seconds: float


def build_stage_prompt(task_description: str, stage_id: str, role: str, tool_input: Any) -> str:
    """The prompt an LLM stage sends: the input's ``system`` (or the role's), the task,
    the stage, and the input's ``prompt`` (or the whole input as canonical JSON)."""
    fields = tool_input if isinstance(tool_input, Mapping) else {}
    system = fields.get("system")
    prompt = fields.get("prompt")
    body = prompt if isinstance(prompt, str) else json.dumps(tool_input, sort_keys=True)
    return "\n\n".join(
        [
            system if isinstance(system, str) else f"You are the {role} of a WrenchAI task.",
            f"Task: {task_description}",
            f"Stage: {stage_id}",
            body,
        ]
    )


def validate_stage_graph(stages: Sequence[Stage]) -> list[Stage]:
    """``stages`` in dependency order (ties keep their order) if they form a DAG in which
    every input is produced upstream; PlanError otherwise."""
    ids = [stage.id for stage in stages]
    duplicates = sorted({sid for sid in ids if ids.count(sid) > 1})
    if duplicates:
        raise PlanError("DUPLICATE_STAGE", f"stage ids repeat: {', '.join(duplicates)}")
    by_id = {stage.id: stage for stage in stages}
    for stage in stages:
        unknown = [dep for dep in stage.depends_on if dep not in by_id]
        if unknown:
            raise PlanError(
                "UNKNOWN_DEPENDENCY",
                f"stage {stage.id} depends on {', '.join(unknown)}, which the plan lacks",
                stage=stage.id,
            )
    ordered: list[Stage] = []
    upstream: dict[str, set[str]] = {}
    remaining = list(stages)
    while remaining:
        ready = next((s for s in remaining if all(d in upstream for d in s.depends_on)), None)
        if ready is None:
            stuck = sorted(stage.id for stage in remaining)
            raise PlanError(
                "PLAN_CYCLE", f"stages depend on each other in a circle: {', '.join(stuck)}"
            )
        remaining.remove(ready)
        upstream[ready.id] = set(ready.depends_on).union(*(upstream[d] for d in ready.depends_on))
        missing = sorted(set(ready.inputs) - upstream[ready.id])
        if missing:
            raise PlanError(
                "MISSING_INPUT",
                f"stage {ready.id} reads the output of {', '.join(missing)}, which is not "
                "produced upstream of it",
                stage=ready.id,
                missing=missing,
            )
        ordered.append(ready)
    return ordered


def _stage_role(step: PlaybookStep, tool: str, roles: Sequence[str], alloc: Allocation) -> str:
    if step.role is not None:
        if step.role not in roles:
            raise PlanError(
                "ROLE_NOT_ASSIGNED",
                f"step {step.id} is for role {step.role}, which the task was not given; "
                f"its roles: {', '.join(roles)}",
                step=step.id,
                role=step.role,
            )
        if tool not in alloc.tools_for(step.role):
            raise PlanError(
                "TOOL_NOT_ALLOCATED",
                f"step {step.id} calls {tool}, which role {step.role} was not allocated "
                f"(it has: {', '.join(alloc.tools_for(step.role)) or 'no tools'})",
                step=step.id,
                role=step.role,
                tool=tool,
            )
        return step.role
    for role in roles:
        if tool in alloc.tools_for(role):
            return role
    raise PlanError(
        "TOOL_NOT_ALLOCATED",
        f"step {step.id} calls {tool}, which none of the task's roles was allocated",
        step=step.id,
        tool=tool,
    )


def _estimate(
    spec: ToolSpec,
    prompt: str,
    tool_input: Mapping[str, Any],
    model: str | None,
    prices: PriceTable,
) -> Estimate:
    per_call = prices.tool_price(spec.name, spec.cost.usd_per_call)
    if not spec.uses_llm:
        return Estimate(seconds=spec.cost.seconds, cost_usd=round(per_call, 8))
    prompt_tokens = count_tokens(prompt)
    max_tokens = tool_input.get("max_tokens")
    completion = max_tokens if isinstance(max_tokens, int) else spec.cost.tokens_per_call
    cost = prices.model_price(model).cost(prompt_tokens, completion) + per_call
    return Estimate(
        tokens=prompt_tokens + completion,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion,
        seconds=spec.cost.seconds,
        cost_usd=round(cost, 8),
    )


def _stage_tool(
    step: PlaybookStep, role: str, allocation: Allocation, registry: ToolRegistry
) -> tuple[ToolSpec, list[ToolSpec]]:
    """The descriptor of the version of the step's tool that ``role`` holds, and the
    descriptors of all the tools the role holds."""
    name, constraint = parse_requirement(step.tool)
    held = allocation.for_role(role)
    role_tools = [registry.get(c.tool, f"=={c.version}") for c in held.tools] if held else []
    spec = next(tool for tool in role_tools if tool.name == name)
    if not constraint.contains(spec.version, prereleases=True):
        raise PlanError(
            "TOOL_NOT_ALLOCATED",
            f"step {step.id} needs {step.tool}, but role {role} holds {spec.ref}",
            step=step.id,
            tool=name,
        )
    return spec, role_tools


def _check_stage_input(step: PlaybookStep, spec: ToolSpec, tool_input: dict[str, Any]) -> None:
    """The input once the task is filled in must still fit the tool (step outputs aside)."""
    for error in Draft202012Validator(spec.input_schema).iter_errors(tool_input):
        if not is_reference(error.instance):
            where = "/".join(str(part) for part in error.absolute_path) or "(input)"
            raise PlanError(
                "INVALID_INPUT",
                f"step {step.id}: with the task filled in, the input for {spec.ref} is "
                f"invalid at {where}: {error.message}",
                step=step.id,
                tool=spec.name,
                path=where,
            )


def _success_criteria(step: PlaybookStep, spec: ToolSpec, timeout: int) -> list[str]:
    required = spec.output_schema.get("required", [])
    criteria = [f"the output matches the {spec.ref} output schema"]
    if required:
        criteria.append(f"the output has {', '.join(required)}")
    return [*criteria, *step.success_criteria, f"the stage finishes within {timeout} s"]


def _critical_path(stages: Sequence[Stage]) -> float:
    finish: dict[str, float] = {}
    for stage in stages:
        start = max((finish[dep] for dep in stage.depends_on), default=0.0)
        finish[stage.id] = start + stage.estimate.seconds
    return round(max(finish.values(), default=0.0), 6)


def create_execution_plan(
    task_description: str,
    roles: Sequence[RoleSpec],
    playbook: Playbook,
    allocation: Allocation,
    registry: ToolRegistry,
    prices: PriceTable | None = None,
    *,
    model: str | None = None,
    fallback_models: Sequence[str] = (),
    reliability: Reliability | None = None,
    forbidden: Collection[str] = frozenset(),
) -> Plan:
    """The plan of ``playbook`` for the task, with its roles' allocated tools.

    ``model`` is the LLM that llm.complete stages use when their input names none (the
    price table's default model otherwise); ``fallback_models`` become alternate-model
    fallbacks; ``reliability`` ranks alternate tools; ``forbidden`` holds the tools the
    task may not use (none of them is an alternate; a step calling one is a
    ForbiddenToolError). Raises PlaybookError or PlanError too.
    """
    prices = prices or DEFAULT_PRICES
    validate_playbook(playbook, registry)
    role_names = [role.name for role in roles]
    stages: list[Stage] = []
    for step in topological_steps(playbook):
        name = parse_requirement(step.tool)[0]
        if name in forbidden:
            raise ForbiddenToolError(
                forbidden_message(name, f"step {step.id} of playbook {playbook.name}"),
                playbook=playbook.name,
                step=step.id,
                tool=name,
                scope=TOOL_SCOPES.get(name),
            )
        role = _stage_role(step, name, role_names, allocation)
        spec, role_tools = _stage_tool(step, role, allocation, registry)
        tool_input = substitute(step.input, playbook.inputs, task_description)
        _check_stage_input(step, spec, tool_input)
        stage_model = None
        if spec.uses_llm:
            named = tool_input.get("model")
            stage_model = named if isinstance(named, str) else model or prices.default_model
        prompt = build_stage_prompt(task_description, step.id, role, tool_input)
        timeout = step.timeout or max(
            MIN_STAGE_TIMEOUT_S, math.ceil(TIMEOUT_FACTOR * spec.cost.seconds)
        )
        alternates = [
            alt
            for alt in alternate_tools(
                spec, tool_input, role_tools, registry, allocation, reliability
            )
            if alt.name not in forbidden
        ]
        stages.append(
            Stage(
                id=step.id,
                role=role,
                tools=[spec.name, *(alt.name for alt in alternates)],
                tool_version=spec.version,
                model=stage_model,
                depends_on=sorted(step.depends_on),
                inputs=step_inputs(step),
                tool_input=tool_input,
                success_criteria=_success_criteria(step, spec, timeout),
                optional=step.optional,
                timeout=timeout,
                retry=step.retry,
                estimate=_estimate(spec, prompt, tool_input, stage_model, prices),
                fallbacks=stage_fallbacks(step, spec, stage_model, fallback_models, alternates),
            )
        )
    ordered = validate_stage_graph(stages)
    total = sum((stage.estimate for stage in ordered), Estimate())
    return Plan(
        playbook=playbook.name,
        stages=ordered,
        total=total,
        critical_path_seconds=_critical_path(ordered),
    )
