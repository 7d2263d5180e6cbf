"""The tool registry (versions, constraints, capabilities, descriptor validation) and tool
allocation (scoring, reliability, conflicts, offline_only, errors that name what is missing)."""

from __future__ import annotations

import json
from typing import Any

import pytest

import processors.tools as tools_package
from events import EXECUTION_SCOPES
from processors.shared.roles import RoleSpec, load_role_catalog, validate_role_assignment
from processors.tools import (
    BUILTIN_TOOLS,
    Allocation,
    MissingCapabilityError,
    PlanningError,
    ToolConflictError,
    ToolCost,
    ToolRegistry,
    ToolSpec,
    ToolUnavailableError,
    ToolVersionError,
    UnknownToolError,
    allocate_tools,
    builtin_registry,
    expected_reliability,
    parse_requirement,
    tool_score,
)
from processors.tools.allocation import TOOL_SCOPES, ForbiddenToolError, forbidden_tools
from wrenchai.errors import WrenchError

_ANY: dict[str, Any] = {"type": "object"}


def _tool(name: str, version: str = "1.0.0", **fields: Any) -> ToolSpec:
    fields.setdefault("capabilities", ["thing"])
    return ToolSpec(name=name, version=version, input_schema=_ANY, output_schema=_ANY, **fields)


def _role(name: str = "worker", **fields: Any) -> RoleSpec:
    return RoleSpec(name=name, description=f"the {name}", **fields)


def test_the_public_names_of_the_tools_package_are_pinned() -> None:
    assert set(tools_package.__all__) == {
        "BUILTIN_TOOLS", "NEUTRAL_PRIOR", "Allocation", "MissingCapabilityError",
        "PlanningError", "Reliability", "RoleAllocation", "ToolChoice", "ToolConflictError",
        "ToolCost", "ToolRegistry", "ToolSpec", "ToolUnavailableError", "ToolVersionError",
        "UnknownToolError", "allocate_tools", "builtin_registry", "conflicts",
        "expected_reliability", "parse_requirement", "rank_candidates", "tool_score",
    }  # fmt: skip


def test_the_builtin_registry_describes_the_six_tools_of_the_journey_issue() -> None:
    registry = builtin_registry()
    assert registry.names() == [
        "code.python", "http.fetch", "llm.complete", "report.compile", "text.summarize",
        "web.search",
    ]  # fmt: skip
    assert all(spec.health_probe for spec in BUILTIN_TOOLS)
    assert registry.get("web.search").input_schema["required"] == ["query"]
    assert registry.get("code.python").input_schema["properties"].keys() >= {"code", "timeout_s"}
    assert registry.get("report.compile").input_schema["required"] == ["title", "sections"]
    assert not registry.get("llm.complete").offline
    assert registry.get("llm.complete").uses_llm


def test_a_constraint_picks_the_newest_satisfying_version() -> None:
    registry = ToolRegistry([_tool("code.python", v) for v in ("1.0.0", "1.2.0", "1.4.1", "2.0.0")])
    assert registry.get("code.python").version == "2.0.0"
    assert registry.get("code.python>=1.2,<2").version == "1.4.1"
    assert registry.get("code.python", ">=1.2,<1.4").version == "1.2.0"
    assert registry.get("code.python", "==1.0.0").version == "1.0.0"


def test_an_unsatisfiable_constraint_names_the_tool_and_the_registered_versions() -> None:
    registry = ToolRegistry([_tool("code.python", "1.0.0"), _tool("code.python", "2.1.0")])
    with pytest.raises(ToolVersionError, match=r"no version of code\.python satisfies") as info:
        registry.get("code.python>=3")
    assert info.value.details["versions"] == ["1.0.0", "2.1.0"]
    assert info.value.code == "TOOL_VERSION_UNSATISFIED"


def test_an_unknown_tool_names_the_known_ones() -> None:
    with pytest.raises(UnknownToolError, match=r"known tools: code\.python") as info:
        builtin_registry().get("shell.exec")
    assert isinstance(info.value, PlanningError)
    assert isinstance(info.value, WrenchError)


@pytest.mark.parametrize("bad", ["code.python>=banana", "Code Python", ""])
def test_a_malformed_requirement_is_a_planning_error(bad: str) -> None:
    with pytest.raises(PlanningError):
        parse_requirement(bad)


def test_parse_requirement_splits_name_and_constraint() -> None:
    name, spec = parse_requirement("code.python>=1.2,<2")
    assert name == "code.python"
    assert spec.contains("1.9.0") and not spec.contains("2.0.0")


def test_descriptors_refuse_non_semver_versions_bad_names_and_invalid_schemas() -> None:
    with pytest.raises(ValueError, match="not semantic"):
        _tool("a.b", "1.2")
    with pytest.raises(ValueError, match="dotted lower-case"):
        _tool("A-B")
    with pytest.raises(ValueError, match="not a valid JSON Schema"):
        ToolSpec(
            name="a.b",
            version="1.0.0",
            capabilities=["x"],
            input_schema={"type": "no-such-type"},
            output_schema=_ANY,
        )


def test_registering_another_descriptor_under_the_same_version_is_refused() -> None:
    registry = ToolRegistry([_tool("a.b")])
    registry.register(_tool("a.b"))  # the same descriptor again is harmless
    with pytest.raises(PlanningError, match="already registered"):
        registry.register(_tool("a.b", description="different"))


def test_by_capability_lists_candidates_and_a_missing_capability_names_it() -> None:
    registry = builtin_registry()
    assert [s.name for s in registry.by_capability("summarization")] == [
        "llm.complete",
        "text.summarize",
    ]
    assert [s.name for s in registry.by_capability("summarization", offline_only=True)] == [
        "text.summarize"
    ]
    with pytest.raises(MissingCapabilityError, match="'telepathy'") as info:
        registry.by_capability("telepathy")
    assert info.value.details["capability"] == "telepathy"


def test_the_score_is_the_beta_mean_discounted_by_cost() -> None:
    free = _tool("a.free", cost=ToolCost(usd_per_call=0, seconds=0))
    cent = _tool("a.cent", cost=ToolCost(usd_per_call=0.01, seconds=0))
    assert expected_reliability("a.free", None) == 0.5
    assert tool_score(free) == 0.5
    assert tool_score(cent) == 0.25  # a cent per call halves the score
    assert tool_score(free, {"a.free": (3.0, 1.0)}) == 0.75
    with pytest.raises(PlanningError, match="both above zero"):
        expected_reliability("a.free", {"a.free": (0.0, 1.0)})


def test_the_cheaper_tool_wins_under_the_neutral_prior() -> None:
    roles = validate_role_assignment(["analyst"], load_role_catalog())
    allocation = allocate_tools(roles, builtin_registry())
    choice = allocation.for_role("analyst")
    assert choice is not None
    assert choice.tools[0].tool == "text.summarize"
    assert choice.tools[0].need == "capability:summarization"
    assert choice.tools[0].alternatives == ["llm.complete"]


def test_reliability_evidence_changes_the_choice() -> None:
    roles = validate_role_assignment(["analyst"], load_role_catalog())
    evidence = {"text.summarize": (2.0, 18.0), "llm.complete": (19.0, 1.0)}
    allocation = allocate_tools(roles, builtin_registry(), reliability=evidence)
    assert allocation.tools_for("analyst")[0] == "llm.complete"


def test_offline_only_never_allocates_llm_complete() -> None:
    roles = validate_role_assignment(
        ["planner", "researcher", "analyst", "coder", "reviewer", "writer"], load_role_catalog()
    )
    evidence = {"text.summarize": (1.0, 50.0), "llm.complete": (50.0, 1.0)}
    allocation = allocate_tools(roles, builtin_registry(), evidence, offline_only=True)
    held = {tool for item in allocation.roles for tool in item.names()}
    assert "llm.complete" not in held
    assert "http.fetch" not in held
    assert allocation.tools_for("analyst")[0] == "text.summarize"
    assert allocation.offline_only


def test_offline_only_with_a_required_online_tool_is_an_error_naming_it() -> None:
    role = _role("chatter", required_tools=["llm.complete"])
    with pytest.raises(ToolUnavailableError, match=r"chatter requires llm\.complete"):
        allocate_tools([role], builtin_registry(), offline_only=True)


def test_offline_only_with_a_capability_only_online_tools_offer_is_missing() -> None:
    role = _role("fetcher", required_capabilities=["fetch"])
    with pytest.raises(MissingCapabilityError, match="no offline tool offers the capability"):
        allocate_tools([role], builtin_registry(), offline_only=True)


def test_a_required_capability_no_tool_offers_is_a_planning_error_naming_it() -> None:
    role = _role("seer", required_capabilities=["prophecy"])
    with pytest.raises(MissingCapabilityError, match="prophecy") as info:
        allocate_tools([role], builtin_registry())
    assert info.value.code == "MISSING_CAPABILITY"


def test_conflicting_tools_are_never_allocated_to_the_same_role() -> None:
    registry = ToolRegistry(
        [
            _tool("search.local", capabilities=["search"], cost=ToolCost(seconds=0)),
            _tool(
                "search.remote", capabilities=["search", "fetch"], conflicts_with=["search.local"]
            ),
            _tool("page.fetch", capabilities=["fetch"], cost=ToolCost(seconds=30)),
        ]
    )
    role = _role(required_capabilities=["search", "fetch"], optional_tools=["search.remote"])
    allocation = allocate_tools([role], registry)
    # search.remote would cover fetch more cheaply, but it conflicts with search.local
    assert allocation.tools_for("worker") == ["search.local", "page.fetch"]
    evidence = {"search.remote": (99.0, 1.0), "search.local": (1.0, 99.0)}
    assert allocate_tools([role], registry, evidence).tools_for("worker") == ["search.remote"]


def test_a_conflict_works_in_either_direction() -> None:
    registry = ToolRegistry(
        [
            _tool("a.one", capabilities=["x"], conflicts_with=["a.two"]),
            _tool("a.two", capabilities=["y"]),
        ]
    )
    role = _role(required_tools=["a.two"], optional_tools=["a.one"])
    assert allocate_tools([role], registry).tools_for("worker") == ["a.two"]


def test_two_conflicting_required_tools_are_an_error_naming_both() -> None:
    registry = ToolRegistry([_tool("a.one", conflicts_with=["a.two"]), _tool("a.two")])
    role = _role(required_tools=["a.one", "a.two"])
    with pytest.raises(ToolConflictError, match=r"a\.one and a\.two") as info:
        allocate_tools([role], registry)
    assert info.value.details["tools"] == ["a.one", "a.two"]


def test_a_capability_whose_every_tool_conflicts_is_an_error() -> None:
    registry = ToolRegistry(
        [
            _tool("a.one", capabilities=["x"], conflicts_with=["a.two"]),
            _tool("a.two", capabilities=["y"]),
        ]
    )
    role = _role(required_tools=["a.two"], required_capabilities=["x"])
    with pytest.raises(ToolConflictError, match="'x'"):
        allocate_tools([role], registry)


def test_required_tools_honour_their_version_constraints() -> None:
    registry = ToolRegistry([_tool("code.python", "1.5.0"), _tool("code.python", "2.0.0")])
    role = _role(required_tools=["code.python>=1,<2"])
    allocation = allocate_tools([role], registry)
    held = allocation.for_role("worker")
    assert held is not None and held.tools[0].version == "1.5.0"
    with pytest.raises(ToolVersionError):
        allocate_tools([_role(required_tools=["code.python>=3"])], registry)


def test_optional_tools_that_are_missing_are_simply_not_given() -> None:
    role = _role(optional_tools=["not.there", "code.python>=9"])
    assert allocate_tools([role], builtin_registry()).tools_for("worker") == []


def test_ties_break_by_name_deterministically() -> None:
    registry = ToolRegistry([_tool("b.tool"), _tool("a.tool"), _tool("c.tool")])
    role = _role(required_capabilities=["thing"])
    allocation = allocate_tools([role], registry)
    held = allocation.for_role("worker")
    assert held is not None
    assert held.tools[0].tool == "a.tool"
    assert held.tools[0].alternatives == ["b.tool", "c.tool"]


def test_an_allocation_round_trips_through_json_and_is_deterministic() -> None:
    roles = validate_role_assignment(["writer", "analyst", "coder"], load_role_catalog())
    first = allocate_tools(roles, builtin_registry())
    second = allocate_tools(roles, builtin_registry())
    text = first.model_dump_json()
    assert text == second.model_dump_json()
    assert Allocation.model_validate(json.loads(text)) == first
    assert [item.role for item in first.roles] == [role.name for role in roles]
    assert first.tools_for("nobody") == []


def test_pinned_tools_are_required_for_their_role_and_cover_its_capabilities() -> None:
    registry = ToolRegistry(
        [
            _tool("search.a", capabilities=["search"], cost=ToolCost(seconds=0)),
            _tool("search.b", capabilities=["search"], cost=ToolCost(seconds=30)),
        ]
    )
    role = _role(required_capabilities=["search"])
    assert allocate_tools([role], registry).tools_for("worker") == ["search.a"]
    pinned = allocate_tools([role], registry, pinned={"worker": ["search.b"], "other": ["x"]})
    held = pinned.for_role("worker")
    assert held is not None
    assert [(c.tool, c.need) for c in held.tools] == [("search.b", "required_tool")]


def test_an_offline_tool_wins_a_tie() -> None:
    registry = ToolRegistry([_tool("a.online", offline=False), _tool("b.offline")])
    role = _role(required_capabilities=["thing"])
    assert allocate_tools([role], registry).tools_for("worker") == ["b.offline"]


# -- tools a task may not use ---------------------------------------------------------------
def _coders() -> ToolRegistry:
    """code.python and a slower second tool for the same capability."""
    return ToolRegistry(
        [
            _tool("code.python", capabilities=["code_execution"]),
            _tool("code.other", capabilities=["code_execution"], cost=ToolCost(seconds=30.0)),
        ]
    )


def test_forbidden_tools_are_those_whose_scope_the_grants_lack() -> None:
    """code.python needs tools:code; with it granted nothing is forbidden."""
    assert TOOL_SCOPES["code.python"] == "tools:code"
    assert set(TOOL_SCOPES.values()) <= EXECUTION_SCOPES
    assert forbidden_tools([]) == {"code.python"}
    assert forbidden_tools(["playbooks:inline"]) == {"code.python"}
    assert forbidden_tools(["tools:code"]) == frozenset()


def test_without_the_grant_code_python_is_no_candidate_another_tool_serves_instead() -> None:
    """Where code.python is one candidate among several, allocation drops it: the other
    tool is chosen and code.python is not even listed as an alternative."""
    role = _role(required_capabilities=["code_execution"])
    granted = allocate_tools([role], _coders()).for_role("worker")
    assert granted is not None
    assert (granted.tools[0].tool, granted.tools[0].alternatives) == ("code.python", ["code.other"])

    refused = allocate_tools([role], _coders(), forbidden={"code.python"}).for_role("worker")
    assert refused is not None
    assert [(t.tool, t.alternatives) for t in refused.tools] == [("code.other", [])]


def test_a_capability_only_a_forbidden_tool_offers_fails_with_forbidden_tool() -> None:
    """Nothing else can do the work: FORBIDDEN_TOOL naming the tool, the scope and the
    capability, and saying how to get it allowed."""
    registry = ToolRegistry([_tool("code.python", capabilities=["code_execution"])])
    role = _role(required_capabilities=["code_execution"])
    with pytest.raises(ForbiddenToolError) as info:
        allocate_tools([role], registry, forbidden={"code.python"})
    assert info.value.code == "FORBIDDEN_TOOL"
    assert info.value.details == {
        "role": "worker",
        "capability": "code_execution",
        "tool": "code.python",
        "scope": "tools:code",
    }
    assert "tools:code" in info.value.message and "holds" in info.value.message


def test_a_forbidden_tool_a_playbook_pins_fails_but_a_roles_own_is_left_out() -> None:
    """A step that calls code.python needs it: FORBIDDEN_TOOL. The coder's own required
    code.python and the reviewer's optional one are simply not given without the grant."""
    roles = validate_role_assignment(["coder", "reviewer"], load_role_catalog())
    with pytest.raises(ForbiddenToolError) as info:
        allocate_tools(
            roles, builtin_registry(), pinned={"coder": ["code.python"]}, forbidden={"code.python"}
        )
    assert info.value.details["role"] == "coder" and info.value.details["tool"] == "code.python"

    allocation = allocate_tools(roles, builtin_registry(), forbidden={"code.python"})
    assert all("code.python" not in entry.names() for entry in allocation.roles)
    allowed = allocate_tools(roles, builtin_registry())
    assert "code.python" in allowed.tools_for("coder")
    assert "code.python" in allowed.tools_for("reviewer")
