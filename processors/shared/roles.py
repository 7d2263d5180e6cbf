"""The role catalog and the validation of a proposed set of roles.

The catalog ships in ``processors/shared/roles.yaml``; a user file in the same format adds roles
or replaces built-in ones by name. A reasoner proposes roles for a task;
:func:`validate_role_assignment` turns the proposal into the roles the task gets:
catalog members only, within the task's constraints, with every role they depend on, in
dependency order. Every refusal is a :class:`RoleAssignmentError` whose ``code`` becomes
the reason of task.failed.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from wrenchai.errors import WrenchError

BUILTIN_ROLES_PATH = Path(__file__).with_name("roles.yaml")


class RoleAssignmentError(WrenchError):
    """Root of the role errors; ``code`` is the stable reason for task.failed."""

    code = "ROLE_ASSIGNMENT_ERROR"


class UnknownRoleError(RoleAssignmentError):
    """A role that is not in the catalog was named."""

    code = "UNKNOWN_ROLE"


class RoleCycleError(RoleAssignmentError):
    """Roles depend on each other in a circle; ``details["cycle"]`` lists it."""

    code = "ROLE_CYCLE"


class RoleConstraintError(RoleAssignmentError):
    """The task's constraints (allow, deny, max_roles) cannot be met."""

    code = "ROLE_CONSTRAINT"


class RoleCatalogError(RoleAssignmentError):
    """A catalog file is unreadable or inconsistent; the message names the file and roles."""

    code = "ROLE_CATALOG_INVALID"


class RoleSpec(BaseModel):
    """One role an agent can play.

    ``capabilities`` describe the role's work (the reasoner matches tasks against them);
    ``required_capabilities`` are tool capabilities the role cannot work without, each
    covered by one allocated tool; ``required_tools`` and ``optional_tools`` name tools,
    optionally with a version constraint (``code.python>=1,<2``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = Field(min_length=1)
    capabilities: list[str] = Field(default_factory=list)
    required_capabilities: list[str] = Field(default_factory=list)
    required_tools: list[str] = Field(default_factory=list)
    optional_tools: list[str] = Field(default_factory=list)
    depends_on: list[str] = Field(default_factory=list)
    max_instances: int = Field(1, ge=1, le=64)

    @field_validator("depends_on")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("depends_on lists a role twice")
        return value


class RoleCatalog(BaseModel):
    """The roles a task may be given, by name."""

    model_config = ConfigDict(frozen=True)

    roles: dict[str, RoleSpec]

    def names(self) -> list[str]:
        """Every role name, sorted."""
        return sorted(self.roles)

    def __contains__(self, name: object) -> bool:
        return name in self.roles

    def get(self, name: str) -> RoleSpec:
        """The role called ``name``; UnknownRoleError naming the known roles otherwise."""
        try:
            return self.roles[name]
        except KeyError:
            raise UnknownRoleError(
                f"{name!r} is not a role in the catalog; known roles: {', '.join(self.names())}",
                role=name,
                known=self.names(),
            ) from None


def _read_roles(path: Path) -> list[RoleSpec]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RoleCatalogError(
            f"cannot read the role catalog {path}: {exc}", path=str(path)
        ) from exc
    entries = raw.get("roles") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise RoleCatalogError(f"{path} must be a mapping with a 'roles' list", path=str(path))
    roles: list[RoleSpec] = []
    for index, entry in enumerate(entries):
        try:
            roles.append(RoleSpec.model_validate(entry))
        except ValidationError as exc:
            name = entry.get("name", f"#{index}") if isinstance(entry, dict) else f"#{index}"
            raise RoleCatalogError(
                f"role {name} in {path} is invalid: {exc}", path=str(path), role=name
            ) from None
    return roles


def load_role_catalog(extra_path: Path | None = None) -> RoleCatalog:
    """The built-in roles, extended (or overridden by name) by the roles in ``extra_path``.

    Raises RoleCatalogError when a role depends on a role that does not exist, and
    RoleCycleError when dependencies form a circle; both name the roles involved.
    """
    roles = {role.name: role for role in _read_roles(BUILTIN_ROLES_PATH)}
    if extra_path is not None:
        roles.update({role.name: role for role in _read_roles(Path(extra_path))})
    for role in roles.values():
        missing = [dep for dep in role.depends_on if dep not in roles]
        if missing:
            raise RoleCatalogError(
                f"role {role.name} depends on unknown role(s) {', '.join(missing)}; "
                f"known roles: {', '.join(sorted(roles))}",
                role=role.name,
                missing=missing,
            )
    topological_order(roles.values())
    return RoleCatalog(roles=dict(sorted(roles.items())))


def topological_order(roles: Iterable[RoleSpec]) -> list[RoleSpec]:
    """``roles`` with every role after the roles it depends on; ties broken by name.

    Dependencies outside ``roles`` are ignored. A circle raises RoleCycleError.
    """
    by_name = {role.name: role for role in roles}
    pending = {
        name: {dep for dep in role.depends_on if dep in by_name} for name, role in by_name.items()
    }
    ready = [name for name, deps in pending.items() if not deps]
    heapq.heapify(ready)
    ordered: list[RoleSpec] = []
    while ready:
        name = heapq.heappop(ready)
        ordered.append(by_name[name])
        for other, deps in pending.items():
            if name in deps:
                deps.discard(name)
                if not deps:
                    heapq.heappush(ready, other)
    if len(ordered) != len(by_name):
        cycle = _find_cycle({n: d for n, d in pending.items() if d})
        raise RoleCycleError(
            f"roles depend on each other in a circle: {' -> '.join(cycle)}; remove one of "
            "these depends_on links",
            cycle=cycle,
        )
    return ordered


def _find_cycle(edges: Mapping[str, set[str]]) -> list[str]:
    """One cycle in a graph where every node has an unresolved edge, as a closed path."""
    node = min(edges)
    path: list[str] = []
    while node not in path:
        path.append(node)
        node = min(edges[node])
    return [*path[path.index(node) :], node]


def _role_constraints(
    constraints: Mapping[str, Any] | None, catalog: RoleCatalog
) -> tuple[set[str] | None, set[str], int | None]:
    constraints = constraints or {}
    spec = constraints.get("roles") or {}
    if not isinstance(spec, Mapping):
        raise RoleConstraintError(
            "constraints.roles must be an object with 'allow' and/or 'deny' lists"
        )
    allow_raw, deny_raw = spec.get("allow"), spec.get("deny") or []
    for key, names in (("allow", allow_raw or []), ("deny", deny_raw)):
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise RoleConstraintError(
                f"constraints.roles.{key} must be a list of role names, not {names!r}"
            )
    for name in [*(allow_raw or []), *deny_raw]:
        catalog.get(name)
    max_roles = constraints.get("max_roles")
    if max_roles is not None and (
        isinstance(max_roles, bool) or not isinstance(max_roles, int) or max_roles < 1
    ):
        raise RoleConstraintError(
            f"constraints.max_roles must be a positive integer, not {max_roles!r}"
        )
    allow = set(allow_raw) if allow_raw is not None else None
    return allow, set(deny_raw), max_roles


def validate_role_assignment(
    proposed: list[str],
    catalog: RoleCatalog,
    constraints: Mapping[str, Any] | None = None,
) -> list[RoleSpec]:
    """The roles a task gets from a proposal, in dependency order (ties by name).

    - every proposed name must be in the catalog (UnknownRoleError);
    - proposed roles outside ``constraints.roles.allow`` or inside ``deny`` are dropped:
      the proposal is advice, the user's constraints are the rule;
    - the roles each remaining role depends on are added, transitively; a dependency that
      the constraints exclude is a RoleConstraintError naming both roles;
    - more roles than ``constraints.max_roles`` after that is a RoleConstraintError;
    - a dependency circle is a RoleCycleError.
    """
    allow, deny, max_roles = _role_constraints(constraints, catalog)
    for name in proposed:
        catalog.get(name)

    def permitted(name: str) -> bool:
        return name not in deny and (allow is None or name in allow)

    chosen = sorted({name for name in proposed if permitted(name)})
    if not chosen:
        raise RoleConstraintError(
            f"no proposed role is permitted by the task's constraints (proposed: "
            f"{', '.join(proposed) or 'none'}; allow: {sorted(allow) if allow else 'any'}; "
            f"deny: {sorted(deny)})",
            proposed=list(proposed),
        )
    closure: dict[str, RoleSpec] = {}
    stack = list(chosen)
    while stack:
        name = stack.pop()
        if name in closure:
            continue
        role = closure[name] = catalog.get(name)
        for dep in role.depends_on:
            if not permitted(dep):
                raise RoleConstraintError(
                    f"role {name} depends on {dep}, which the task's constraints exclude; "
                    f"allow {dep} or do without {name}",
                    role=name,
                    dependency=dep,
                )
            stack.append(dep)
    ordered = topological_order(closure.values())
    if max_roles is not None and len(ordered) > max_roles:
        names = [role.name for role in ordered]
        raise RoleConstraintError(
            f"the task needs {len(names)} roles ({', '.join(names)}, dependencies "
            f"included) but constraints.max_roles is {max_roles}",
            roles=names,
            max_roles=max_roles,
        )
    return ordered
