"""Fallback strategies: how a failed stage may recover, decided when the plan is made.

In the order recovery should try them: retry with exponential backoff (the step's
``retry``, or two retries for an idempotent tool; a non-idempotent tool such as
llm.complete is retried only when the step asks), an alternate model (LLM stages), an
alternate tool with the same capability whose schema accepts the same input, skip
(optional stages only), and escalate, always last. The JourneyAgent's error handling
picks among them by the kind of failure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from jsonschema import Draft202012Validator
from pydantic import BaseModel, ConfigDict

from processors.shared.playbook import PlaybookStep, is_reference
from processors.tools.allocation import Allocation, Reliability, conflicts, rank_candidates
from processors.tools.registry import ToolRegistry, ToolSpec

DEFAULT_RETRIES = 2
BACKOFF_S = 1.0
BACKOFF_FACTOR = 2.0
MAX_BACKOFF_S = 30.0


class Fallback(BaseModel):
    """One way to recover a failed stage; the fields that apply depend on ``kind``."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["retry", "alternate_model", "alternate_tool", "skip", "escalate"]
    detail: str
    tool: str | None = None
    model: str | None = None
    attempts: int | None = None
    backoff_s: float | None = None
    backoff_factor: float | None = None
    max_backoff_s: float | None = None


def accepts_input(spec: ToolSpec, tool_input: Mapping[str, Any]) -> bool:
    """Whether ``tool_input`` fits ``spec``'s input schema, references accepted anywhere."""
    validator = Draft202012Validator(spec.input_schema)
    return all(is_reference(error.instance) for error in validator.iter_errors(tool_input))


def alternate_tools(
    spec: ToolSpec,
    tool_input: Mapping[str, Any],
    role_tools: Iterable[ToolSpec],
    registry: ToolRegistry,
    allocation: Allocation,
    reliability: Reliability | None,
) -> list[ToolSpec]:
    """Other tools that could do the stage: they share the tool's primary capability,
    accept the same input, respect offline_only and clash with none of the role's tools.
    Best first (see :func:`processors.tools.rank_candidates`)."""
    role_tools = [tool for tool in role_tools if tool.name != spec.name]
    return rank_candidates(
        (
            other
            for other in registry
            if other.name != spec.name
            and spec.capabilities[0] in other.capabilities
            and (other.offline or not allocation.offline_only)
            and not any(conflicts(other, have) for have in role_tools)
            and accepts_input(other, tool_input)
        ),
        reliability,
    )


def stage_fallbacks(
    step: PlaybookStep,
    spec: ToolSpec,
    model: str | None,
    fallback_models: Sequence[str],
    alternates: Sequence[ToolSpec],
) -> list[Fallback]:
    """The recovery options of one stage, in the order recovery should try them."""
    found: list[Fallback] = []
    attempts = step.retry or (DEFAULT_RETRIES if spec.idempotent else 0)
    if attempts:
        found.append(
            Fallback(
                kind="retry",
                detail=f"retry {spec.name} up to {attempts} times with exponential backoff",
                attempts=attempts,
                backoff_s=BACKOFF_S,
                backoff_factor=BACKOFF_FACTOR,
                max_backoff_s=MAX_BACKOFF_S,
            )
        )
    if spec.uses_llm:
        found.extend(
            Fallback(kind="alternate_model", detail=f"ask {other} instead of {model}", model=other)
            for other in dict.fromkeys(fallback_models)
            if other != model
        )
    found.extend(
        Fallback(kind="alternate_tool", detail=f"call {alt.ref} instead", tool=alt.name)
        for alt in alternates
    )
    if step.optional:
        found.append(Fallback(kind="skip", detail="the stage is optional; go on without it"))
    found.append(
        Fallback(kind="escalate", detail="fail the task with the chain of errors and alert")
    )
    return found
