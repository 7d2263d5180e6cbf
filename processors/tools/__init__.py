"""The tool registry, the built-in tool descriptors and tool allocation."""

from processors.tools.allocation import (
    NEUTRAL_PRIOR,
    Allocation,
    Reliability,
    RoleAllocation,
    ToolChoice,
    allocate_tools,
    conflicts,
    expected_reliability,
    rank_candidates,
    tool_score,
)
from processors.tools.descriptors import BUILTIN_TOOLS, builtin_registry
from processors.tools.registry import (
    MissingCapabilityError,
    PlanningError,
    ToolConflictError,
    ToolCost,
    ToolRegistry,
    ToolSpec,
    ToolUnavailableError,
    ToolVersionError,
    UnknownToolError,
    parse_requirement,
)

__all__ = [
    "BUILTIN_TOOLS",
    "NEUTRAL_PRIOR",
    "Allocation",
    "MissingCapabilityError",
    "PlanningError",
    "Reliability",
    "RoleAllocation",
    "ToolChoice",
    "ToolConflictError",
    "ToolCost",
    "ToolRegistry",
    "ToolSpec",
    "ToolUnavailableError",
    "ToolVersionError",
    "UnknownToolError",
    "allocate_tools",
    "builtin_registry",
    "conflicts",
    "expected_reliability",
    "parse_requirement",
    "rank_candidates",
    "tool_score",
]
