"""The role catalog and the validation of proposed roles: catalog membership, allow and
deny lists, max_roles, dependency closure, topological order and cycles."""

from __future__ import annotations

from pathlib import Path

import pytest

from processors.shared.roles import (
    BUILTIN_ROLES_PATH,
    RoleAssignmentError,
    RoleCatalog,
    RoleCatalogError,
    RoleConstraintError,
    RoleCycleError,
    RoleSpec,
    UnknownRoleError,
    load_role_catalog,
    topological_order,
    validate_role_assignment,
)
from processors.tools import builtin_registry
from wrenchai.errors import WrenchError


def _role(name: str, *deps: str) -> RoleSpec:
    return RoleSpec(name=name, description=f"the {name}", depends_on=list(deps))


def _catalog(*roles: RoleSpec) -> RoleCatalog:
    return RoleCatalog(roles={role.name: role for role in roles})


def _names(roles: list[RoleSpec]) -> list[str]:
    return [role.name for role in roles]


@pytest.fixture(scope="module")
def catalog() -> RoleCatalog:
    return load_role_catalog()


def test_the_shipped_catalog_has_the_six_roles_the_issue_asks_for(catalog: RoleCatalog) -> None:
    assert {"planner", "researcher", "analyst", "coder", "reviewer", "writer"} <= set(
        catalog.names()
    )
    assert BUILTIN_ROLES_PATH.name == "roles.yaml"


def test_every_tool_a_shipped_role_names_is_in_the_builtin_registry(
    catalog: RoleCatalog,
) -> None:
    registry = builtin_registry()
    for role in catalog.roles.values():
        for requirement in [*role.required_tools, *role.optional_tools]:
            registry.get(requirement)  # raises if unknown or no version satisfies it
        for capability in role.required_capabilities:
            assert registry.by_capability(capability)


def test_a_user_catalog_adds_roles_and_overrides_builtins_by_name(tmp_path: Path) -> None:
    extra = tmp_path / "roles.yaml"
    extra.write_text(
        "roles:\n"
        "  - {name: translator, description: Translates text, depends_on: [writer]}\n"
        "  - {name: writer, description: Writes in plain words, max_instances: 2}\n"
    )
    catalog = load_role_catalog(extra)
    assert catalog.get("translator").depends_on == ["writer"]
    assert catalog.get("writer").description == "Writes in plain words"
    assert catalog.get("writer").max_instances == 2
    assert "planner" in catalog


def test_a_user_role_that_depends_on_an_unknown_role_is_refused_naming_both(
    tmp_path: Path,
) -> None:
    extra = tmp_path / "roles.yaml"
    extra.write_text("roles:\n  - {name: editor, description: Edits, depends_on: [ghost]}\n")
    with pytest.raises(RoleCatalogError, match=r"editor depends on unknown role\(s\) ghost"):
        load_role_catalog(extra)


def test_a_user_catalog_with_a_dependency_cycle_is_refused_naming_the_cycle(
    tmp_path: Path,
) -> None:
    extra = tmp_path / "roles.yaml"
    extra.write_text(
        "roles:\n"
        "  - {name: alpha, description: A, depends_on: [beta]}\n"
        "  - {name: beta, description: B, depends_on: [alpha]}\n"
    )
    with pytest.raises(RoleCycleError, match="alpha -> beta -> alpha") as info:
        load_role_catalog(extra)
    assert info.value.code == "ROLE_CYCLE"


def test_an_unreadable_or_malformed_user_catalog_is_a_catalog_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(RoleCatalogError, match="cannot read"):
        load_role_catalog(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("roles:\n  - {name: Bad Name, description: x}\n")
    with pytest.raises(RoleCatalogError, match="Bad Name"):
        load_role_catalog(bad)


def test_an_unknown_proposed_role_names_it_and_the_known_roles(catalog: RoleCatalog) -> None:
    with pytest.raises(UnknownRoleError) as info:
        validate_role_assignment(["writer", "astrologer"], catalog)
    assert "astrologer" in info.value.message
    assert "researcher" in info.value.message
    assert info.value.code == "UNKNOWN_ROLE"
    assert isinstance(info.value, WrenchError)
    assert info.value.details["role"] == "astrologer"


def test_dependencies_are_added_transitively_and_ordered_topologically(
    catalog: RoleCatalog,
) -> None:
    roles = validate_role_assignment(["analyst"], catalog)
    assert _names(roles) == ["planner", "researcher", "analyst"]


def test_order_is_deterministic_with_ties_broken_by_name(catalog: RoleCatalog) -> None:
    first = validate_role_assignment(["writer", "reviewer", "coder", "analyst"], catalog)
    second = validate_role_assignment(["analyst", "coder", "reviewer", "writer"], catalog)
    assert _names(first) == _names(second)
    assert _names(first) == ["planner", "coder", "researcher", "analyst", "reviewer", "writer"]


def test_duplicates_in_a_proposal_give_one_role(catalog: RoleCatalog) -> None:
    assert _names(validate_role_assignment(["writer", "writer"], catalog)) == ["writer"]


def test_denied_proposed_roles_are_dropped(catalog: RoleCatalog) -> None:
    roles = validate_role_assignment(
        ["writer", "reviewer"], catalog, {"roles": {"deny": ["reviewer"]}}
    )
    assert _names(roles) == ["writer"]


def test_proposed_roles_outside_the_allow_list_are_dropped(catalog: RoleCatalog) -> None:
    roles = validate_role_assignment(
        ["writer", "reviewer"], catalog, {"roles": {"allow": ["writer"]}}
    )
    assert _names(roles) == ["writer"]


def test_a_proposal_left_empty_by_the_constraints_is_a_constraint_error(
    catalog: RoleCatalog,
) -> None:
    with pytest.raises(RoleConstraintError, match="no proposed role is permitted"):
        validate_role_assignment(["reviewer"], catalog, {"roles": {"deny": ["reviewer"]}})


def test_a_denied_dependency_is_an_error_naming_the_role_and_the_dependency(
    catalog: RoleCatalog,
) -> None:
    with pytest.raises(RoleConstraintError, match="researcher depends on planner") as info:
        validate_role_assignment(["researcher"], catalog, {"roles": {"deny": ["planner"]}})
    assert info.value.code == "ROLE_CONSTRAINT"


def test_a_dependency_outside_the_allow_list_is_an_error(catalog: RoleCatalog) -> None:
    with pytest.raises(RoleConstraintError, match="coder depends on planner"):
        validate_role_assignment(["coder"], catalog, {"roles": {"allow": ["coder"]}})


def test_max_roles_counts_the_added_dependencies(catalog: RoleCatalog) -> None:
    assert len(validate_role_assignment(["analyst"], catalog, {"max_roles": 3})) == 3
    with pytest.raises(RoleConstraintError, match="max_roles is 2") as info:
        validate_role_assignment(["analyst"], catalog, {"max_roles": 2})
    assert info.value.details["roles"] == ["planner", "researcher", "analyst"]


@pytest.mark.parametrize("bad", [0, -1, "3", True, 2.5])
def test_a_max_roles_that_is_not_a_positive_integer_is_refused(
    catalog: RoleCatalog, bad: object
) -> None:
    with pytest.raises(RoleConstraintError, match="max_roles must be a positive integer"):
        validate_role_assignment(["writer"], catalog, {"max_roles": bad})


def test_constraints_naming_an_unknown_role_are_refused(catalog: RoleCatalog) -> None:
    with pytest.raises(UnknownRoleError, match="wizard"):
        validate_role_assignment(["writer"], catalog, {"roles": {"deny": ["wizard"]}})


def test_a_malformed_roles_constraint_is_refused(catalog: RoleCatalog) -> None:
    with pytest.raises(RoleConstraintError, match=r"constraints\.roles must be an object"):
        validate_role_assignment(["writer"], catalog, {"roles": ["writer"]})


def test_a_cycle_met_during_assignment_is_a_role_cycle_error() -> None:
    catalog = _catalog(_role("a", "b"), _role("b", "c"), _role("c", "a"), _role("d"))
    with pytest.raises(RoleCycleError) as info:
        validate_role_assignment(["a"], catalog)
    assert info.value.details["cycle"] == ["a", "b", "c", "a"]
    assert isinstance(info.value, RoleAssignmentError)
    assert _names(validate_role_assignment(["d"], catalog)) == ["d"]


def test_a_role_that_depends_on_itself_is_a_cycle() -> None:
    with pytest.raises(RoleCycleError, match="a -> a"):
        topological_order([_role("a", "a")])


def test_a_role_spec_refuses_duplicate_dependencies_and_unknown_fields() -> None:
    with pytest.raises(ValueError, match="depends_on lists a role twice"):
        _role("a", "b", "b")
    with pytest.raises(ValueError):
        RoleSpec.model_validate({"name": "a", "description": "x", "colour": "red"})


def test_role_specs_are_frozen() -> None:
    role = _role("a")
    with pytest.raises(ValueError):
        role.name = "b"  # type: ignore[misc]


@pytest.mark.parametrize("bad", ["writer", [1, 2], {"writer": True}])
def test_allow_and_deny_must_be_lists_of_role_names(catalog: RoleCatalog, bad: object) -> None:
    for key in ("allow", "deny"):
        with pytest.raises(RoleConstraintError, match=f"{key} must be a list of role names"):
            validate_role_assignment(["writer"], catalog, {"roles": {key: bad}})
