"""Tool allocation: which tools each role of a task gets.

Per role, in order: its required tools (with their version constraints), one tool for
each required capability not yet covered, chosen by score, then its optional tools when
they are registered and usable. Two tools that conflict never serve one role.

The score of a candidate weighs expected reliability against cost::

    p       = alpha / (alpha + beta)          # mean of the Beta(alpha, beta) reliability
    penalty = usd_per_call / 0.01 + seconds / 60 + tokens_per_call / 10_000
    score   = p / (1 + penalty)

so a cent per call, a minute of wall time or ten thousand tokens each halve the score of an
otherwise equal tool. Unknown tools get the neutral prior Beta(1, 1) (p = 0.5); the
InspectorAgent later feeds posteriors in. Ties go to the higher p, then to offline tools,
then to the name.

Some tools are given only to tasks whose submitter allowed them (:data:`TOOL_SCOPES`; the
task carries the scopes as task.submitted ``grants``). A tool the task may not have is
never a candidate: a capability it would have served goes to another tool, and a role's
own required or optional tool is left out (no stage can call it: the playbook's steps are
refused first). Only a requirement nothing else can meet fails, with FORBIDDEN_TOOL.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from types import MappingProxyType

from pydantic import BaseModel, ConfigDict, Field

from processors.shared.roles import RoleSpec
from processors.tools.registry import (
    PlanningError,
    ToolConflictError,
    ToolRegistry,
    ToolSpec,
    ToolUnavailableError,
)

NEUTRAL_PRIOR: tuple[float, float] = (1.0, 1.0)
USD_UNIT = 0.01
SECONDS_UNIT = 60.0
TOKENS_UNIT = 10_000.0

Reliability = Mapping[str, tuple[float, float]]

TOOL_SCOPES: Mapping[str, str] = MappingProxyType({"code.python": "tools:code"})
"""Tools a task may use only when its submitter held a scope, by tool name. code.python
runs the task's code on the JourneyAgent's machine, so it needs ``tools:code`` whoever
chose it: the user, a shipped playbook or the allocation."""


class ForbiddenToolError(PlanningError):
    """The task's submitter did not hold the scope a tool its plan needs; ``details`` name
    the tool, the scope and the step, role or capability that needs it."""

    code = "FORBIDDEN_TOOL"


def forbidden_tools(grants: Iterable[str]) -> frozenset[str]:
    """The tools a task whose task.submitted carries ``grants`` may not use."""
    held = frozenset(grants)
    return frozenset(tool for tool, scope in TOOL_SCOPES.items() if scope not in held)


def forbidden_message(tool: str, needed_by: str) -> str:
    """Why ``tool`` is refused, and how to get it allowed."""
    scope = TOOL_SCOPES.get(tool, "?")
    return (
        f"{needed_by} needs {tool}, which a task may use only when its submitter holds the "
        f"scope {scope}, and this task's submitter did not; submit it as a user or with an "
        f"API key that holds {scope}, or use a playbook without {tool}"
    )


class ToolChoice(BaseModel):
    """One tool given to a role, why, and how it scored against the alternatives."""

    model_config = ConfigDict(frozen=True)

    tool: str
    version: str
    need: str = Field(description="required_tool, optional_tool or capability:<name>.")
    reliability: float = Field(description="Expected reliability, the Beta mean.")
    score: float
    alternatives: list[str] = Field(
        default_factory=list, description="Other candidates for the same need, best first."
    )


class RoleAllocation(BaseModel):
    """The tools of one role."""

    model_config = ConfigDict(frozen=True)

    role: str
    tools: list[ToolChoice]

    def names(self) -> list[str]:
        """The allocated tool names, in allocation order."""
        return [choice.tool for choice in self.tools]


class Allocation(BaseModel):
    """The tools of every role of a task; the payload of tools.allocated."""

    model_config = ConfigDict(frozen=True)

    roles: list[RoleAllocation]
    offline_only: bool = False

    def for_role(self, role: str) -> RoleAllocation | None:
        """The allocation of ``role``, if the task has that role."""
        return next((item for item in self.roles if item.role == role), None)

    def tools_for(self, role: str) -> list[str]:
        """The tool names allocated to ``role`` (empty for a role the task lacks)."""
        item = self.for_role(role)
        return item.names() if item else []


def expected_reliability(tool: str, reliability: Reliability | None) -> float:
    """The Beta mean of ``tool``'s reliability, 0.5 when nothing is known about it."""
    alpha, beta = (reliability or {}).get(tool, NEUTRAL_PRIOR)
    if alpha <= 0 or beta <= 0:
        raise PlanningError(
            f"reliability of {tool} must be Beta(alpha, beta) with both above zero, "
            f"not ({alpha}, {beta})",
            tool=tool,
        )
    return alpha / (alpha + beta)


def tool_score(spec: ToolSpec, reliability: Reliability | None = None) -> float:
    """Expected reliability discounted by cost, as the module docstring documents."""
    cost = spec.cost
    penalty = (
        cost.usd_per_call / USD_UNIT
        + cost.seconds / SECONDS_UNIT
        + cost.tokens_per_call / TOKENS_UNIT
    )
    return round(expected_reliability(spec.name, reliability) / (1.0 + penalty), 6)


def rank_candidates(
    candidates: Iterable[ToolSpec], reliability: Reliability | None = None
) -> list[ToolSpec]:
    """Candidates best first: by score, then expected reliability, then offline tools
    (they need nothing outside the machine), then name."""
    return sorted(
        candidates,
        key=lambda spec: (
            -tool_score(spec, reliability),
            -expected_reliability(spec.name, reliability),
            not spec.offline,
            spec.name,
        ),
    )


def conflicts(a: ToolSpec, b: ToolSpec) -> bool:
    """Whether either tool declares a conflict with the other."""
    return b.name in a.conflicts_with or a.name in b.conflicts_with


def _choice(
    spec: ToolSpec, need: str, reliability: Reliability | None, others: Iterable[ToolSpec] = ()
) -> ToolChoice:
    return ToolChoice(
        tool=spec.name,
        version=spec.version,
        need=need,
        reliability=round(expected_reliability(spec.name, reliability), 6),
        score=tool_score(spec, reliability),
        alternatives=[other.name for other in others if other.name != spec.name],
    )


def _required(
    role: RoleSpec, requirement: str, registry: ToolRegistry, held: list[ToolSpec], offline: bool
) -> ToolSpec:
    """The tool a role must hold, checked against offline_only and the tools it holds."""
    spec = registry.get(requirement)
    if offline and not spec.offline:
        raise ToolUnavailableError(
            f"role {role.name} requires {spec.name}, which needs a network or an LLM, "
            "and only offline tools can be used (no LLM is configured)",
            role=role.name,
            tool=spec.name,
        )
    other = next((have for have in held if conflicts(have, spec)), None)
    if other is not None:
        raise ToolConflictError(
            f"role {role.name} requires both {other.name} and {spec.name}, which "
            "conflict; drop one of them from the role",
            role=role.name,
            tools=[other.name, spec.name],
        )
    return spec


def _allocate_role(
    role: RoleSpec,
    registry: ToolRegistry,
    reliability: Reliability | None,
    offline_only: bool,
    pinned: Sequence[str],
    forbidden: Collection[str],
) -> RoleAllocation:
    held: list[ToolSpec] = []
    choices: list[ToolChoice] = []

    def fits(spec: ToolSpec) -> bool:
        return all(not conflicts(have, spec) for have in held)

    def take(spec: ToolSpec, choice: ToolChoice) -> None:
        if all(have.name != spec.name for have in held):
            held.append(spec)
            choices.append(choice)

    for requirement in [*role.required_tools, *pinned]:
        name = registry.get(requirement).name
        if name in forbidden and requirement in pinned:
            raise ForbiddenToolError(
                forbidden_message(name, f"a playbook step of role {role.name}"),
                role=role.name,
                tool=name,
                scope=TOOL_SCOPES[name],
            )
        if name in forbidden:
            continue  # the role's own: it goes without, and no step of this task calls it
        spec = _required(role, requirement, registry, held, offline_only)
        take(spec, _choice(spec, "required_tool", reliability))

    for capability in role.required_capabilities:
        if any(capability in have.capabilities for have in held):
            continue
        offered = registry.by_capability(capability, offline_only=offline_only)
        allowed = [spec for spec in offered if spec.name not in forbidden]
        if not allowed:
            tools = sorted(spec.name for spec in offered)
            raise ForbiddenToolError(
                forbidden_message(tools[0], f"capability {capability!r} of role {role.name}"),
                role=role.name,
                capability=capability,
                tool=tools[0],
                scope=TOOL_SCOPES[tools[0]],
            )
        ranked = rank_candidates(allowed, reliability)
        usable = [spec for spec in ranked if fits(spec)]
        if not usable:
            raise ToolConflictError(
                f"every tool offering {capability!r} ({', '.join(s.name for s in ranked)}) "
                f"conflicts with a tool role {role.name} already has "
                f"({', '.join(have.name for have in held)})",
                role=role.name,
                capability=capability,
            )
        take(usable[0], _choice(usable[0], f"capability:{capability}", reliability, usable))

    for requirement in role.optional_tools:
        try:
            spec = registry.get(requirement)
        except PlanningError:
            continue  # optional: a tool that is not registered is simply not given
        if (spec.offline or not offline_only) and spec.name not in forbidden and fits(spec):
            take(spec, _choice(spec, "optional_tool", reliability))

    return RoleAllocation(role=role.name, tools=choices)


def allocate_tools(
    roles: Iterable[RoleSpec],
    registry: ToolRegistry,
    reliability: Reliability | None = None,
    offline_only: bool = False,
    pinned: Mapping[str, Sequence[str]] | None = None,
    forbidden: Collection[str] = frozenset(),
) -> Allocation:
    """The tools of each role, in the order of ``roles``.

    ``reliability`` maps a tool name to its Beta(alpha, beta) posterior; ``offline_only``
    (no LLM configured, no network) restricts every choice to offline tools, so
    llm.complete is never allocated then. ``pinned`` maps a role to tool requirements it
    must hold on top of its own required tools: the tools a playbook's steps call for
    that role (:func:`processors.shared.playbook.playbook_tools`). ``forbidden`` holds the tools
    the task may not use (:func:`forbidden_tools` of its grants): they are never given, and
    a pinned one, or a capability only they offer, is a ForbiddenToolError. Raises
    MissingCapabilityError, ToolConflictError, ToolUnavailableError, UnknownToolError or
    ToolVersionError too, naming the role and the tools involved.
    """
    return Allocation(
        roles=[
            _allocate_role(
                role,
                registry,
                reliability,
                offline_only,
                (pinned or {}).get(role.name, ()),
                forbidden,
            )
            for role in roles
        ],
        offline_only=offline_only,
    )
