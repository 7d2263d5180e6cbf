"""The behaviour every Reasoner must have, written once and run against the RuleReasoner
and against the LLMReasoner talking to a local chat completions server.

For the LLM side each test scripts two thoughts and then the final answer the model would
give; the contract is about what the reasoner makes of it (ranking, validation, the
thoughts and their order), so the same assertions hold for both implementations.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel

from processors.reasoning import (
    ERROR_CATEGORIES,
    CriterionFinding,
    ErrorAnalysis,
    Evaluation,
    LLMClient,
    LLMInvalidOutput,
    LLMReasoner,
    PlanProposal,
    Reasoned,
    Reasoner,
    RoleProposal,
    RoleScore,
    RuleReasoner,
    TaskBrief,
    Thought,
    proposed_playbook,
)
from processors.shared.playbook import Playbook, list_playbooks, load_playbook, validate_playbook
from processors.shared.roles import RoleCatalog, load_role_catalog, validate_role_assignment
from processors.tools import builtin_registry
from tests.processors.openai_server import OpenAIServer
from wrenchai.settings import Settings

RESEARCH = TaskBrief(
    task_id="task-1",
    description="Research the history of solar power and write a report with its sources",
)


@dataclass
class Harness:
    """A reasoner under test and, for the LLM one, the server that plays the model."""

    reasoner: Reasoner
    server: OpenAIServer | None = None

    def script(self, answer: BaseModel) -> None:
        """What the model says next: two thoughts, then ``answer`` (the rule reasoner
        needs no script)."""
        if self.server is None:
            return
        self.server.answer(Thought(number=1, text="Look at the task.", next_thought_needed=True))
        self.server.answer(Thought(number=2, text="Decide.", next_thought_needed=False))
        self.server.answer(answer)


class Recorder:
    """An on_thought callback that keeps what it was given, in order."""

    def __init__(self) -> None:
        self.thoughts: list[Thought] = []

    async def __call__(self, thought: Thought) -> None:
        self.thoughts.append(thought)


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[OpenAIServer]:
    async with OpenAIServer() as instance:
        yield instance


@pytest.fixture(params=["rule", "llm"])
async def harness(request: pytest.FixtureRequest, server: OpenAIServer) -> AsyncIterator[Harness]:
    if request.param == "rule":
        yield Harness(RuleReasoner())
        return
    server.reset()
    settings = Settings(
        llm_base_url=server.base_url, llm_model="model-a", llm_max_thoughts=4, llm_max_retries=0
    )
    async with LLMClient(settings) as client:
        yield Harness(LLMReasoner(client), server)


@pytest.fixture(scope="module")
def catalog() -> RoleCatalog:
    return load_role_catalog()


@pytest.fixture(scope="module")
def playbooks() -> dict[str, Playbook]:
    return {name: load_playbook(name) for name in list_playbooks()}


def assert_well_formed(reasoned: Reasoned[Any], model: type[BaseModel], seen: Recorder) -> None:
    """The shared shape: a result that survives the trip through JSON as its model, thoughts
    numbered from 1, each handed to on_thought once and in order."""
    assert isinstance(reasoned.result, model)
    assert model.model_validate_json(reasoned.result.model_dump_json()) == reasoned.result
    assert Reasoned[model].model_validate_json(reasoned.model_dump_json()) == reasoned  # type: ignore[valid-type]
    assert reasoned.thoughts
    assert [t.number for t in reasoned.thoughts] == list(range(1, len(reasoned.thoughts) + 1))
    assert seen.thoughts == reasoned.thoughts
    assert reasoned.thoughts[-1].next_thought_needed is False


async def test_assign_roles_proposes_only_catalog_roles_ranked_by_score(
    harness: Harness, catalog: RoleCatalog
) -> None:
    """assign_roles names catalog roles only, best score first, and the proposal passes
    validate_role_assignment."""
    harness.script(
        RoleProposal.model_construct(
            roles=[
                RoleScore(role="writer", score=0.6, reason="a report is asked for"),
                RoleScore(role="researcher", score=0.8, reason="sources must be found"),
            ]
        )
    )
    seen = Recorder()

    reasoned = await harness.reasoner.assign_roles(RESEARCH, catalog, on_thought=seen)

    assert_well_formed(reasoned, RoleProposal, seen)
    names = reasoned.result.names()
    assert names and all(name in catalog for name in names)
    scores = [item.score for item in reasoned.result.roles]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= score <= 1.0 for score in scores)
    assert {"researcher", "writer"} <= set(names)
    assert validate_role_assignment(names, catalog)


async def test_plan_proposes_a_playbook_that_validates_with_the_builtin_registry(
    harness: Harness, catalog: RoleCatalog, playbooks: dict[str, Playbook]
) -> None:
    """plan answers with a playbook (a template by name or inline) that validate_playbook
    accepts with the built-in tools."""
    harness.script(PlanProposal(playbook="research_report", reason="a sourced report"))
    roles = validate_role_assignment(["researcher", "writer"], catalog)
    seen = Recorder()

    reasoned = await harness.reasoner.plan(
        RESEARCH, roles, builtin_registry(), playbooks, on_thought=seen
    )

    assert_well_formed(reasoned, PlanProposal, seen)
    playbook = proposed_playbook(reasoned.result, playbooks)
    assert validate_playbook(playbook, builtin_registry()) == playbook
    assert reasoned.result.reason


async def test_plan_uses_the_tasks_own_playbook_without_asking_a_model(
    harness: Harness, catalog: RoleCatalog, playbooks: dict[str, Playbook]
) -> None:
    """constraints.playbook is the user's decision: both reasoners return it, with the
    task's playbook_inputs, and no model is asked."""
    task = RESEARCH.model_copy(
        update={"constraints": {"playbook": "code_task", "playbook_inputs": {"timeout_s": 5}}}
    )
    seen = Recorder()

    reasoned = await harness.reasoner.plan(
        task, [catalog.get("coder")], builtin_registry(), playbooks, on_thought=seen
    )

    assert_well_formed(reasoned, PlanProposal, seen)
    assert reasoned.result.playbook == "code_task"
    assert proposed_playbook(reasoned.result, playbooks).inputs["timeout_s"] == 5
    assert reasoned.usage == []
    if harness.server is not None:
        assert harness.server.requests == []


async def test_evaluate_scores_within_bounds_and_passes_only_when_every_finding_is_met(
    harness: Harness,
) -> None:
    """evaluate gives a score in [0, 1] and passed exactly when every finding is met."""
    harness.script(
        Evaluation(
            passed=False,
            score=0.5,
            findings=[
                CriterionFinding(criterion="the output is not empty", met=True, detail="ok"),
                CriterionFinding(criterion="the report cites sources", met=False, detail="none"),
            ],
            suggestions=["cite the sources"],
        )
    )
    seen = Recorder()

    reasoned = await harness.reasoner.evaluate(
        RESEARCH,
        "report",
        ["the report cites its sources"],
        {"markdown": "# Solar power\nIt grew."},
        on_thought=seen,
    )

    assert_well_formed(reasoned, Evaluation, seen)
    evaluation = reasoned.result
    assert 0.0 <= evaluation.score <= 1.0
    assert evaluation.passed == all(finding.met for finding in evaluation.findings)
    assert not evaluation.passed
    assert evaluation.suggestions


async def test_analyse_error_returns_a_known_category(harness: Harness) -> None:
    """analyse_error classifies into one of the five categories and says what to do."""
    harness.script(
        ErrorAnalysis(category="transient", retryable=True, suggestion="retry after a pause")
    )
    seen = Recorder()

    reasoned = await harness.reasoner.analyse_error(
        RESEARCH,
        "search",
        {"code": "TIMEOUT", "message": "web.search timed out after 30s"},
        on_thought=seen,
    )

    assert_well_formed(reasoned, ErrorAnalysis, seen)
    assert reasoned.result.category in ERROR_CATEGORIES
    assert reasoned.result.category == "transient"
    assert reasoned.result.retryable
    assert reasoned.result.suggestion


async def test_every_operation_works_without_an_on_thought_callback(
    harness: Harness, catalog: RoleCatalog
) -> None:
    """on_thought is optional: without it the thoughts are still returned."""
    harness.script(RoleProposal(roles=[RoleScore(role="researcher", score=0.9, reason="r")]))

    reasoned = await harness.reasoner.assign_roles(RESEARCH, catalog)

    assert reasoned.thoughts and reasoned.thoughts[0].number == 1


# -- the LLM side's own guards ---------------------------------------------------------


@pytest.fixture
async def llm(server: OpenAIServer) -> AsyncIterator[Harness]:
    server.reset()
    settings = Settings(
        llm_base_url=server.base_url, llm_model="model-a", llm_max_thoughts=4, llm_max_retries=0
    )
    async with LLMClient(settings) as client:
        yield Harness(LLMReasoner(client), server)


async def test_llm_prompts_carry_the_catalog_and_the_instructions(
    llm: Harness, catalog: RoleCatalog
) -> None:
    """The model sees every catalog role with its capabilities, and instructions saying
    what it is doing."""
    llm.script(RoleProposal(roles=[RoleScore(role="researcher", score=0.9, reason="r")]))

    await llm.reasoner.assign_roles(RESEARCH, catalog)

    assert llm.server is not None
    final = llm.server.requests[-1]
    prompt = next(m["content"] for m in final.messages if m["role"] == "user")
    assert RESEARCH.description in prompt
    for role in catalog.roles.values():
        assert f'"name":"{role.name}"' in prompt
    assert '"research"' in prompt
    assert "choose the roles" in final.messages[0]["content"]
    assert final.body["response_format"]["json_schema"]["name"] == "assign_roles"


async def test_llm_role_outside_the_catalog_is_invalid_output(
    llm: Harness, catalog: RoleCatalog
) -> None:
    """A role the catalog does not have is LLMInvalidOutput naming it, with the usage spent."""
    llm.script(RoleProposal(roles=[RoleScore(role="astrologer", score=0.9, reason="stars")]))

    with pytest.raises(LLMInvalidOutput, match="astrologer") as caught:
        await llm.reasoner.assign_roles(RESEARCH, catalog)

    assert len(caught.value.details["usage"]) == 3


async def test_llm_plan_that_does_not_validate_is_invalid_output(
    llm: Harness, catalog: RoleCatalog, playbooks: dict[str, Playbook]
) -> None:
    """A template the reasoner was not offered, or an inline playbook with an unknown tool,
    is LLMInvalidOutput carrying the playbook's reason."""
    bad = Playbook.model_validate(
        {"name": "oops", "steps": [{"id": "a", "tool": "shell.exec", "input": {}}]}
    )
    llm.script(PlanProposal(playbook="no_such_template", reason="?"))
    llm.script(PlanProposal(inline=bad, reason="?"))
    roles = [catalog.get("researcher")]

    with pytest.raises(LLMInvalidOutput, match="no_such_template"):
        await llm.reasoner.plan(RESEARCH, roles, builtin_registry(), playbooks)
    with pytest.raises(LLMInvalidOutput, match=r"shell\.exec"):
        await llm.reasoner.plan(RESEARCH, roles, builtin_registry(), playbooks)


async def test_llm_inline_plan_is_accepted_when_it_validates(
    llm: Harness, catalog: RoleCatalog, playbooks: dict[str, Playbook]
) -> None:
    """The model may write its own playbook; one that validates is returned as it is."""
    inline = Playbook.model_validate(
        {
            "name": "search_only",
            "steps": [
                {"id": "search", "tool": "web.search", "input": {"query": "{{task.description}}"}}
            ],
        }
    )
    llm.script(PlanProposal(inline=inline, reason="one search is enough"))

    reasoned = await llm.reasoner.plan(
        RESEARCH, [catalog.get("researcher")], builtin_registry(), playbooks
    )

    assert proposed_playbook(reasoned.result, playbooks) == inline
    assert len(reasoned.usage) == 3


async def test_llm_evaluation_that_contradicts_its_findings_gets_one_repair(
    llm: Harness,
) -> None:
    """passed=true with an unmet finding does not validate as an Evaluation, so the model
    is asked once more with the error; its corrected answer is the result."""
    assert llm.server is not None
    findings = [CriterionFinding(criterion="cites sources", met=False, detail="none")]
    contradiction = {
        "passed": True,
        "score": 1.0,
        "findings": [finding.model_dump() for finding in findings],
        "suggestions": [],
    }
    corrected = Evaluation(passed=False, score=0.0, findings=findings, suggestions=["cite"])
    llm.server.answer(Thought(number=1, text="Judge.", next_thought_needed=False))
    llm.server.answer(contradiction)
    llm.server.answer(corrected)

    reasoned = await llm.reasoner.evaluate(RESEARCH, "report", ["cites sources"], "text")

    assert reasoned.result == corrected
    repair = llm.server.requests[-1].messages[-1]["content"]
    assert "passed must be true exactly when every finding is met" in repair
    assert len(reasoned.usage) == 3
