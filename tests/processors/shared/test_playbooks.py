"""Playbooks: the schema, the shipped templates, loading by name or inline, references, and
each reason validation gives for refusing a playbook."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from events import EXECUTION_SCOPES
from processors.shared.playbook import (
    PLAYBOOKS_DIR,
    Playbook,
    PlaybookError,
    authorize_constraints,
    authorize_playbook,
    is_reference,
    list_playbooks,
    load_playbook,
    load_playbooks,
    playbook_json_schema,
    playbook_roles,
    playbook_tools,
    references,
    required_scopes,
    step_inputs,
    substitute,
    topological_steps,
    upstream,
    validate_playbook,
)
from processors.shared.roles import load_role_catalog
from processors.tools import PlanningError, ToolRegistry, builtin_registry
from processors.tools.allocation import ForbiddenToolError

REGISTRY = builtin_registry()


def _inline(*steps: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": "inline", "steps": list(steps), **fields}


def _reason(raw: dict[str, Any], registry: ToolRegistry = REGISTRY) -> str:
    with pytest.raises(PlaybookError) as info:
        validate_playbook(load_playbook(raw), registry)
    assert info.value.code == info.value.reason
    return info.value.reason


SEARCH = {"id": "search", "tool": "web.search", "input": {"query": "kafka"}}


def test_the_shipped_playbooks_include_the_three_the_issue_needs() -> None:
    assert {"research_report", "code_task", "research_and_analyse"} <= set(list_playbooks())


@pytest.mark.parametrize("name", list_playbooks())
def test_every_shipped_playbook_loads_validates_and_uses_catalog_roles(name: str) -> None:
    playbook = validate_playbook(load_playbook(name), REGISTRY)
    assert playbook.name == name
    catalog = load_role_catalog()
    assert all(role in catalog for role in playbook_roles(playbook))


@pytest.mark.parametrize("name", list_playbooks())
def test_every_shipped_playbook_file_matches_the_published_json_schema(name: str) -> None:
    raw = yaml.safe_load((PLAYBOOKS_DIR / f"{name}.yaml").read_text())
    jsonschema.validate(raw, playbook_json_schema())


def test_the_research_report_uses_only_offline_tools_in_a_chain() -> None:
    playbook = load_playbook("research_report")
    assert [s.tool for s in playbook.steps] == ["web.search", "text.summarize", "report.compile"]
    assert all(REGISTRY.get(step.tool).offline for step in playbook.steps)
    assert [s.id for s in topological_steps(playbook)] == ["search", "summarize", "report"]


def test_the_parallel_playbook_has_two_branches_that_share_an_ancestor_and_a_join() -> None:
    playbook = load_playbook("research_and_analyse")
    after_search = [s.id for s in playbook.steps if s.depends_on == ["search"]]
    assert len(after_search) == 2
    join = next(s for s in playbook.steps if set(s.depends_on) == set(after_search))
    assert join.tool == "report.compile"


def test_the_code_task_takes_its_code_from_the_task_inputs() -> None:
    playbook = load_playbook("code_task", inputs={"code": "print(6 * 7)"})
    run = playbook.steps[0]
    assert substitute(run.input, playbook.inputs)["code"] == "print(6 * 7)"
    with pytest.raises(PlaybookError, match="takes no input colour") as info:
        load_playbook("code_task", inputs={"colour": "red"})
    assert info.value.reason == "INVALID_PLAYBOOK"


def test_an_unknown_playbook_name_lists_the_available_ones() -> None:
    with pytest.raises(PlaybookError, match="research_report") as info:
        load_playbook("no_such_playbook")
    assert info.value.reason == "PLAYBOOK_NOT_FOUND"


def test_a_name_cannot_escape_the_playbook_folder(tmp_path: Path) -> None:
    (tmp_path / "inner").mkdir()
    (tmp_path / "secret.yaml").write_text("name: secret\nsteps: []\n")
    with pytest.raises(PlaybookError) as info:
        load_playbook("../secret", directory=tmp_path / "inner")
    assert info.value.reason == "PLAYBOOK_NOT_FOUND"


def test_a_playbook_file_that_is_not_yaml_is_invalid(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    with pytest.raises(PlaybookError) as info:
        load_playbook("broken", directory=tmp_path)
    assert info.value.reason == "INVALID_PLAYBOOK"


def test_an_inline_playbook_in_the_wrong_shape_is_invalid() -> None:
    assert _reason({"name": "x", "steps": []}) == "INVALID_PLAYBOOK"
    assert _reason(_inline({**SEARCH, "colour": "red"})) == "INVALID_PLAYBOOK"
    assert _reason(_inline({**SEARCH, "retry": -1})) == "INVALID_PLAYBOOK"


def test_a_valid_inline_playbook_is_returned_unchanged() -> None:
    raw = _inline(
        SEARCH,
        {
            "id": "sum",
            "tool": "text.summarize>=1",
            "depends_on": ["search"],
            "input": {"text": "{{steps.search.output.results}}", "max_sentences": 3},
        },
    )
    playbook = load_playbook(raw)
    assert validate_playbook(playbook, REGISTRY) is playbook


def test_duplicate_step_ids_are_refused() -> None:
    assert _reason(_inline(SEARCH, SEARCH)) == "DUPLICATE_STEP"


def test_an_unknown_tool_is_refused() -> None:
    assert _reason(_inline({"id": "x", "tool": "shell.exec"})) == "UNKNOWN_TOOL"


def test_an_unsatisfiable_tool_version_is_refused_as_an_unknown_tool() -> None:
    assert _reason(_inline({**SEARCH, "tool": "web.search>=2"})) == "UNKNOWN_TOOL"


def test_an_input_that_breaks_the_tool_schema_is_refused_with_its_path() -> None:
    with pytest.raises(PlaybookError, match="invalid at limit") as info:
        validate_playbook(
            load_playbook(_inline({**SEARCH, "input": {"query": "q", "limit": 500}})), REGISTRY
        )
    assert info.value.reason == "INVALID_INPUT"
    assert _reason(_inline({**SEARCH, "input": {}})) == "INVALID_INPUT"
    assert _reason(_inline({**SEARCH, "input": {"query": "q", "extra": 1}})) == "INVALID_INPUT"


def test_inputs_are_substituted_before_the_schema_check() -> None:
    raw = _inline(
        {**SEARCH, "input": {"query": "q", "limit": "{{inputs.limit}}"}}, inputs={"limit": 500}
    )
    assert _reason(raw) == "INVALID_INPUT"


def test_a_reference_counts_as_valid_wherever_it_stands() -> None:
    raw = _inline(
        SEARCH,
        {
            "id": "run",
            "tool": "code.python",
            "depends_on": ["search"],
            "input": {"code": "print(1)", "timeout_s": "{{steps.search.output.count}}"},
        },
    )
    validate_playbook(load_playbook(raw), REGISTRY)


def test_an_unknown_dependency_is_refused() -> None:
    assert _reason(_inline({**SEARCH, "depends_on": ["ghost"]})) == "UNKNOWN_DEPENDENCY"


def test_a_cycle_is_refused_naming_its_steps() -> None:
    raw = _inline(
        {**SEARCH, "id": "a", "depends_on": ["b"]},
        {**SEARCH, "id": "b", "depends_on": ["a"]},
        {**SEARCH, "id": "c"},
    )
    with pytest.raises(PlaybookError, match="a, b") as info:
        validate_playbook(load_playbook(raw), REGISTRY)
    assert info.value.reason == "PLAYBOOK_CYCLE"
    assert _reason(_inline({**SEARCH, "depends_on": ["search"]})) == "PLAYBOOK_CYCLE"


def test_a_reference_to_a_step_that_is_not_upstream_is_refused() -> None:
    raw = _inline(
        SEARCH,
        {**SEARCH, "id": "other", "input": {"query": "{{steps.search.output}}"}},
    )
    with pytest.raises(PlaybookError, match="add search to its depends_on") as info:
        validate_playbook(load_playbook(raw), REGISTRY)
    assert info.value.reason == "BAD_REFERENCE"


def test_a_reference_through_an_intermediate_step_is_upstream() -> None:
    raw = _inline(
        SEARCH,
        {**SEARCH, "id": "mid", "depends_on": ["search"]},
        {
            **SEARCH,
            "id": "last",
            "depends_on": ["mid"],
            "input": {"query": "{{steps.search.output}}"},
        },
    )
    playbook = validate_playbook(load_playbook(raw), REGISTRY)
    assert upstream(playbook)["last"] == {"mid", "search"}
    assert step_inputs(playbook.steps[2]) == ["search"]


def test_references_to_undeclared_inputs_or_unknown_fields_are_refused() -> None:
    assert _reason(_inline({**SEARCH, "input": {"query": "{{inputs.topic}}"}})) == "BAD_REFERENCE"
    assert _reason(_inline({**SEARCH, "input": {"query": "{{task.title}}"}})) == "BAD_REFERENCE"
    assert _reason(_inline({**SEARCH, "input": {"query": "{{steps.search}}"}})) == "BAD_REFERENCE"


def test_double_braces_outside_the_reference_namespaces_are_plain_text() -> None:
    code = 'name = "x"\nprint(f"{{name}}")'
    raw = _inline({"id": "run", "tool": "code.python", "input": {"code": code}})
    validate_playbook(load_playbook(raw), REGISTRY)
    assert references(code) == []


def test_substitution_keeps_types_for_whole_references_and_renders_text_inside_strings() -> None:
    value = {
        "limit": "{{inputs.limit}}",
        "query": "about {{task.description}} ({{inputs.limit}})",
        "later": "{{steps.search.output}}",
        "list": ["{{ inputs.tags }}"],
    }
    done = substitute(value, {"limit": 5, "tags": ["a", "b"]}, "kafka")
    assert done == {
        "limit": 5,
        "query": "about kafka (5)",
        "later": "{{steps.search.output}}",
        "list": [["a", "b"]],
    }
    assert is_reference("{{ steps.a.output }}")
    assert not is_reference("see {{steps.a.output}}")


def test_playbook_errors_are_planning_errors() -> None:
    assert issubclass(PlaybookError, PlanningError)


def test_the_json_schema_describes_steps_and_their_fields() -> None:
    schema = playbook_json_schema()
    assert schema["title"] == "Playbook"
    step = schema["$defs"]["PlaybookStep"]
    assert {"id", "tool", "input", "depends_on", "role", "optional", "timeout", "retry"} <= set(
        step["properties"]
    )
    Playbook.model_validate(_inline(SEARCH))


def test_playbook_tools_maps_each_role_to_the_tools_its_steps_call() -> None:
    assert playbook_tools(load_playbook("research_and_analyse")) == {
        "researcher": ["web.search"],
        "analyst": ["text.summarize"],
        "coder": ["code.python"],
        "writer": ["report.compile"],
    }


def test_a_playbook_constraint_that_is_neither_a_name_nor_an_object_is_invalid() -> None:
    with pytest.raises(PlaybookError, match="not list") as info:
        load_playbook(["search"])  # type: ignore[arg-type]
    assert info.value.reason == "INVALID_PLAYBOOK"


# -- what a task may run ---------------------------------------------------------------------
CODE = {"id": "run", "tool": "code.python>=1,<2", "input": {"code": "print(1)"}}


@pytest.mark.parametrize(
    ("constraints", "scopes"),
    [
        (None, set()),
        ({}, set()),
        ({"max_roles": 2}, set()),
        ({"playbook": "research_report"}, set()),
        ({"playbook": "code_task"}, set()),  # a name: the SuperAgent checks it
        ({"playbook": _inline(SEARCH)}, {"playbooks:inline"}),
        ({"playbook": _inline(SEARCH, CODE)}, {"playbooks:inline", "tools:code"}),
        ({"playbook": _inline({"tool": " code.python "})}, {"playbooks:inline", "tools:code"}),
        ({"playbook": {"steps": "not a list"}}, {"playbooks:inline"}),
        (
            {"playbook": {"steps": [5, {"tool": 7}, {"tool": "code.python<<"}]}},
            {"playbooks:inline"},
        ),
        ({"playbook": 5}, set()),
    ],
)
def test_required_scopes_are_known_from_the_constraints_alone(
    constraints: dict[str, Any] | None, scopes: set[str]
) -> None:
    """An inline playbook needs playbooks:inline, and tools:code when a step calls
    code.python (with or without a version constraint); whatever else the constraints hold,
    required_scopes answers without raising, so the API can ask before validating."""
    assert required_scopes(constraints) == scopes


def test_required_scopes_count_a_named_playbooks_steps_when_given_the_playbooks() -> None:
    """With the deployment's playbooks, naming code_task needs tools:code and naming
    research_report needs nothing; an unknown name needs nothing (it fails later)."""
    shipped = load_playbooks()
    assert required_scopes({"playbook": "code_task"}, shipped) == {"tools:code"}
    assert required_scopes({"playbook": "research_and_analyse"}, shipped) == {"tools:code"}
    assert required_scopes({"playbook": "research_report"}, shipped) == set()
    assert required_scopes({"playbook": "nope"}, shipped) == set()
    assert required_scopes({}, shipped) == set()


def test_the_scopes_a_task_may_need_are_execution_scopes() -> None:
    """What a playbook may require is exactly what a task can be granted."""
    assert required_scopes({"playbook": _inline(CODE)}) == EXECUTION_SCOPES


def test_an_inline_playbook_without_playbooks_inline_is_forbidden_playbook() -> None:
    """No grant for inline playbooks: FORBIDDEN_PLAYBOOK naming the scope, whatever the
    steps; a named playbook or none is not an inline one and passes."""
    with pytest.raises(PlaybookError) as info:
        authorize_constraints({"playbook": _inline(SEARCH)}, ["tools:code"])
    assert info.value.code == "FORBIDDEN_PLAYBOOK"
    assert info.value.details["scope"] == "playbooks:inline"
    assert "playbooks:inline" in info.value.message
    authorize_constraints({"playbook": "code_task"}, [])
    authorize_constraints(None, [])
    authorize_constraints({"playbook": _inline(SEARCH)}, ["playbooks:inline"])


def test_an_inline_code_step_without_tools_code_is_forbidden_tool_naming_the_step() -> None:
    with pytest.raises(ForbiddenToolError) as info:
        authorize_constraints({"playbook": _inline(SEARCH, CODE)}, ["playbooks:inline"])
    assert info.value.code == "FORBIDDEN_TOOL"
    assert info.value.details == {"step": "run", "tool": "code.python", "scope": "tools:code"}
    authorize_constraints({"playbook": _inline(SEARCH, CODE)}, sorted(EXECUTION_SCOPES))


def test_a_shipped_playbook_with_a_code_step_needs_tools_code() -> None:
    """code_task's run step calls code.python: refused without tools:code, returned as it
    is with it; research_report needs no grant at all."""
    code_task = load_playbook("code_task")
    with pytest.raises(ForbiddenToolError) as info:
        authorize_playbook(code_task, ["playbooks:inline"])
    assert info.value.details["playbook"] == "code_task"
    assert info.value.details["step"] == "run"
    assert authorize_playbook(code_task, ["tools:code"]) is code_task
    research = load_playbook("research_report")
    assert authorize_playbook(research, []) is research
