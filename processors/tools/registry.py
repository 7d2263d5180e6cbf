"""The tool registry: what each tool is (name, version, capabilities, schemas, cost hints,
conflicts, health probe), looked up by name and version constraint or by capability.

The registry holds descriptors only; the JourneyAgent issue builds the tools behind them.
A requirement names a tool and, optionally, a PEP 440 version constraint in the same
string, for example ``code.python>=1.2,<2``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version
from pydantic import BaseModel, ConfigDict, Field, field_validator

from wrenchai.errors import WrenchError

_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
_TOOL_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
_REQUIREMENT = re.compile(r"^\s*(?P<name>[a-z][a-z0-9_.]*?)\s*(?P<spec>[<>=!~].*)?$")


class PlanningError(WrenchError):
    """Root of what planning can refuse (tools, playbooks, plans).

    ``code`` is the stable reason the SuperAgent puts in task.failed; ``details`` names the
    tools, steps or capabilities involved.
    """

    code = "PLANNING_ERROR"


class UnknownToolError(PlanningError):
    """No tool of that name is registered."""

    code = "UNKNOWN_TOOL"


class ToolVersionError(PlanningError):
    """The tool exists, but no registered version satisfies the constraint."""

    code = "TOOL_VERSION_UNSATISFIED"


class MissingCapabilityError(PlanningError):
    """A role needs a capability that no (usable) registered tool offers."""

    code = "MISSING_CAPABILITY"


class ToolUnavailableError(PlanningError):
    """A required tool exists but cannot be used here (it needs a network or an LLM)."""

    code = "TOOL_UNAVAILABLE"


class ToolConflictError(PlanningError):
    """Two tools that declare a conflict would serve the same role."""

    code = "TOOL_CONFLICT"


class ToolCost(BaseModel):
    """Cost hints of one call: money, LLM tokens it consumes, and wall time."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    usd_per_call: float = Field(0.0, ge=0)
    tokens_per_call: int = Field(0, ge=0)
    seconds: float = Field(1.0, ge=0)


class ToolSpec(BaseModel):
    """The descriptor of one version of one tool."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    version: str = Field(description="Semantic version, MAJOR.MINOR.PATCH.")
    description: str = ""
    capabilities: list[str] = Field(min_length=1)
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    side_effects: bool = False
    idempotent: bool = True
    cost: ToolCost = ToolCost()
    conflicts_with: list[str] = Field(default_factory=list)
    offline: bool = Field(True, description="Works with no network and no LLM.")
    uses_llm: bool = Field(False, description="Calls the LLM provider (tokens are priced).")
    health_probe: str | None = None

    @field_validator("name")
    @classmethod
    def _dotted_name(cls, value: str) -> str:
        if not _TOOL_NAME.match(value):
            raise ValueError(f"tool name {value!r} must be dotted lower-case words (web.search)")
        return value

    @field_validator("version")
    @classmethod
    def _semver(cls, value: str) -> str:
        if not _SEMVER.match(value):
            raise ValueError(f"version {value!r} is not semantic (MAJOR.MINOR.PATCH)")
        return value

    @field_validator("input_schema", "output_schema")
    @classmethod
    def _json_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            Draft202012Validator.check_schema(value)
        except SchemaError as exc:
            raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
        return value

    @property
    def parsed_version(self) -> Version:
        """The version as a comparable object."""
        return Version(self.version)

    @property
    def ref(self) -> str:
        """``name==version``: the exact requirement that picks this descriptor."""
        return f"{self.name}=={self.version}"


def parse_requirement(requirement: str) -> tuple[str, SpecifierSet]:
    """Split ``code.python>=1.2,<2`` into the name and its version constraint."""
    match = _REQUIREMENT.match(requirement)
    if match is None:
        raise UnknownToolError(
            f"{requirement!r} is not a tool requirement; write a name with an optional "
            "constraint, for example code.python>=1.2,<2",
            requirement=requirement,
        )
    spec = match.group("spec") or ""
    try:
        return match.group("name"), SpecifierSet(spec)
    except InvalidSpecifier:
        raise ToolVersionError(
            f"{spec!r} in {requirement!r} is not a version constraint (PEP 440, e.g. >=1.2,<2)",
            requirement=requirement,
        ) from None


class ToolRegistry:
    """Tool descriptors by name and version. Lookups are deterministic: the newest
    version that satisfies a constraint wins."""

    def __init__(self, specs: Iterable[ToolSpec] = ()) -> None:
        self._specs: dict[str, dict[str, ToolSpec]] = {}
        for spec in specs:
            self.register(spec)

    def register(self, spec: ToolSpec) -> ToolSpec:
        """Add one version of a tool; registering the same descriptor twice is a no-op."""
        versions = self._specs.setdefault(spec.name, {})
        existing = versions.get(spec.version)
        if existing is not None and existing != spec:
            raise PlanningError(
                f"{spec.ref} is already registered with another descriptor; give the new "
                "one a new version",
                tool=spec.name,
                version=spec.version,
            )
        versions[spec.version] = spec
        return spec

    def names(self) -> list[str]:
        """Every registered tool name, sorted."""
        return sorted(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[ToolSpec]:
        """The newest version of every tool, by name."""
        return iter(self._newest(name) for name in self.names())

    def versions(self, name: str) -> list[ToolSpec]:
        """Every registered version of ``name``, oldest first."""
        if name not in self._specs:
            raise UnknownToolError(
                f"no tool named {name!r} is registered; known tools: "
                f"{', '.join(self.names()) or 'none'}",
                tool=name,
                known=self.names(),
            )
        return sorted(self._specs[name].values(), key=lambda spec: spec.parsed_version)

    def get(self, name: str, constraint: str | SpecifierSet | None = None) -> ToolSpec:
        """The newest version of ``name`` that satisfies ``constraint``.

        ``name`` may carry the constraint itself (``get("code.python>=1.2,<2")``).
        """
        parsed_name, inline = parse_requirement(name)
        spec_set = inline & _as_specifier(constraint)
        versions = self.versions(parsed_name)
        matching = [spec for spec in versions if spec_set.contains(spec.version, prereleases=True)]
        if not matching:
            raise ToolVersionError(
                f"no version of {parsed_name} satisfies {str(spec_set)!r}; registered: "
                f"{', '.join(spec.version for spec in versions)}",
                tool=parsed_name,
                constraint=str(spec_set),
                versions=[spec.version for spec in versions],
            )
        return matching[-1]

    def by_capability(self, capability: str, *, offline_only: bool = False) -> list[ToolSpec]:
        """The newest version of each tool that offers ``capability``, by name.

        Raises MissingCapabilityError, naming the capability, when no tool offers it.
        """
        found = [
            spec
            for spec in self
            if capability in spec.capabilities and (spec.offline or not offline_only)
        ]
        if not found:
            where = "offline tool" if offline_only else "registered tool"
            raise MissingCapabilityError(
                f"no {where} offers the capability {capability!r}; register a tool that "
                f"does, or drop the role that needs it. Capabilities on offer: "
                f"{', '.join(self.capabilities(offline_only=offline_only)) or 'none'}",
                capability=capability,
                offline_only=offline_only,
            )
        return found

    def capabilities(self, *, offline_only: bool = False) -> list[str]:
        """Every capability some tool offers, sorted."""
        return sorted(
            {cap for spec in self if spec.offline or not offline_only for cap in spec.capabilities}
        )

    def _newest(self, name: str) -> ToolSpec:
        return self.versions(name)[-1]


def _as_specifier(constraint: str | SpecifierSet | None) -> SpecifierSet:
    if constraint is None:
        return SpecifierSet()
    if isinstance(constraint, SpecifierSet):
        return constraint
    try:
        return SpecifierSet(constraint)
    except InvalidSpecifier:
        raise ToolVersionError(
            f"{constraint!r} is not a version constraint (PEP 440, e.g. >=1.2,<2)",
            constraint=constraint,
        ) from None
