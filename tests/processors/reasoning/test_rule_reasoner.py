"""The offline reasoner's own rules: deterministic answers, TF-IDF scores it explains,
offline playbooks only, the task's constraints first, errors classified by pattern."""

from __future__ import annotations

import math
from typing import Any

import pytest

from processors.reasoning import RuleReasoner, TaskBrief
from processors.reasoning._rule import ROLE_THRESHOLD, score_roles
from processors.reasoning._tfidf import idf, similarities, stem
from processors.shared.playbook import Playbook, PlaybookError, list_playbooks, load_playbook
from processors.shared.roles import RoleCatalog, load_role_catalog, validate_role_assignment
from processors.tools import builtin_registry

RESEARCH = TaskBrief(
    task_id="task-r",
    description="Research the history of solar power and write a report with its sources",
)
CODING = TaskBrief(
    task_id="task-c",
    description="Write a Python script that computes the first 20 prime numbers",
)


@pytest.fixture(scope="module")
def catalog() -> RoleCatalog:
    return load_role_catalog()


@pytest.fixture(scope="module")
def playbooks() -> dict[str, Playbook]:
    return {name: load_playbook(name) for name in list_playbooks()}


async def _plan_for(
    task: TaskBrief, catalog: RoleCatalog, playbooks: dict[str, Playbook]
) -> tuple[list[str], str | None]:
    reasoner = RuleReasoner()
    proposal = (await reasoner.assign_roles(task, catalog)).result
    roles = validate_role_assignment(proposal.names(), catalog, task.constraints)
    plan = (await reasoner.plan(task, roles, builtin_registry(), playbooks)).result
    return proposal.names(), plan.playbook


async def test_the_same_input_gives_the_identical_answer(
    catalog: RoleCatalog, playbooks: dict[str, Playbook]
) -> None:
    """Every operation is a pure function of its input: two calls, equal Reasoned values
    and byte-identical JSON, and never any usage."""
    first, second = RuleReasoner(), RuleReasoner()
    roles = [catalog.get("researcher"), catalog.get("writer")]
    calls = [
        (first.assign_roles(RESEARCH, catalog), second.assign_roles(RESEARCH, catalog)),
        (
            first.plan(RESEARCH, roles, builtin_registry(), playbooks),
            second.plan(RESEARCH, roles, builtin_registry(), playbooks),
        ),
        (
            first.evaluate(RESEARCH, "report", ["cites sources"], {"markdown": "x"}),
            second.evaluate(RESEARCH, "report", ["cites sources"], {"markdown": "x"}),
        ),
        (
            first.analyse_error(RESEARCH, "search", {"code": "TIMEOUT"}),
            second.analyse_error(RESEARCH, "search", {"code": "TIMEOUT"}),
        ),
    ]
    for left, right in calls:
        one: Any = await left
        two: Any = await right
        assert one == two
        assert one.model_dump_json() == two.model_dump_json()
        assert one.usage == []


async def test_a_research_task_gets_researcher_and_writer_and_the_research_report(
    catalog: RoleCatalog, playbooks: dict[str, Playbook]
) -> None:
    """A task asking for research and a report proposes researcher and writer (nothing
    else reaches the threshold) and plans with research_report."""
    names, playbook = await _plan_for(RESEARCH, catalog, playbooks)

    assert set(names) == {"researcher", "writer"}
    assert playbook == "research_report"


async def test_a_coding_task_gets_the_coder_first_and_the_code_task(
    catalog: RoleCatalog, playbooks: dict[str, Playbook]
) -> None:
    """A task asking for a Python script ranks the coder first and plans with code_task."""
    names, playbook = await _plan_for(CODING, catalog, playbooks)

    assert names[0] == "coder"
    assert playbook == "code_task"


async def test_a_task_that_matches_nothing_still_gets_one_role(catalog: RoleCatalog) -> None:
    """With every score under the threshold the best role (ties by name) is proposed alone,
    and the last thought says so."""
    task = TaskBrief(task_id="t", description="hello there")

    reasoned = await RuleReasoner().assign_roles(task, catalog)

    assert len(reasoned.result.roles) == 1
    assert reasoned.result.roles[0].score < ROLE_THRESHOLD
    assert "No role reaches" in reasoned.thoughts[-1].text


async def test_role_thoughts_explain_the_tfidf_score_and_the_matched_keywords(
    catalog: RoleCatalog,
) -> None:
    """One thought per catalog role gives its score, its TF-IDF part and the capability
    keywords the task matched; the score is half keywords, half TF-IDF."""
    reasoned = await RuleReasoner().assign_roles(RESEARCH, catalog)

    by_role = {t.text.split(":")[0]: t.text for t in reasoned.thoughts[:-1]}
    assert sorted(by_role) == catalog.names()
    assert "matched 'researcher', 'research', 'sources'" in by_role["researcher"]
    assert "no capability keyword matched" in by_role["coder"]
    scored = {
        item.role: (item, cosine) for item, cosine in score_roles(RESEARCH.description, catalog)
    }
    researcher, cosine = scored["researcher"]
    assert by_role["researcher"].startswith(
        f"researcher: {researcher.score:.2f} — tf-idf {cosine:.2f}"
    )
    assert researcher.score == round(0.5 * 1.0 + 0.5 * cosine, 4)
    assert reasoned.thoughts[-1].text.startswith("Proposing ")


def test_tfidf_is_smoothed_and_cosine_is_bounded() -> None:
    """idf is ln((1+n)/(1+df))+1; a document identical to the query scores 1, one with no
    shared stem scores 0; stems join the forms of a word."""
    weights = idf([["a", "b"], ["a"]])
    assert weights["a"] == pytest.approx(math.log(3 / 3) + 1)
    assert weights["b"] == pytest.approx(math.log(3 / 2) + 1)
    scores = similarities("solar power report", {"same": "solar power report", "other": "cats"})
    assert scores["same"] == pytest.approx(1.0)
    assert scores["other"] == 0.0
    assert stem("researcher") == stem("research") == stem("researching")
    assert stem("summary") == stem("summarize") == stem("summarization")


async def test_constraints_playbook_by_name_is_honoured_with_its_inputs(
    catalog: RoleCatalog, playbooks: dict[str, Playbook]
) -> None:
    """A research task that names code_task gets code_task, with its playbook_inputs."""
    task = RESEARCH.model_copy(
        update={"constraints": {"playbook": "code_task", "playbook_inputs": {"code": "print(1)"}}}
    )

    reasoned = await RuleReasoner().plan(task, [], builtin_registry(), playbooks)

    assert reasoned.result.playbook == "code_task"
    assert reasoned.result.inputs == {"code": "print(1)"}
    assert "constraints.playbook" in reasoned.thoughts[0].text


async def test_constraints_playbook_inline_is_honoured(playbooks: dict[str, Playbook]) -> None:
    """An inline playbook in the constraints is returned as the plan, inputs applied."""
    inline = {
        "name": "mine",
        "inputs": {"q": "default"},
        "steps": [{"id": "s", "tool": "web.search", "input": {"query": "{{inputs.q}}"}}],
    }
    task = RESEARCH.model_copy(
        update={"constraints": {"playbook": inline, "playbook_inputs": {"q": "solar"}}}
    )

    reasoned = await RuleReasoner().plan(task, [], builtin_registry(), playbooks)

    assert reasoned.result.inline is not None
    assert reasoned.result.inline.name == "mine"
    assert reasoned.result.inline.inputs == {"q": "solar"}


async def test_an_unknown_constraints_playbook_is_a_clear_error(
    playbooks: dict[str, Playbook],
) -> None:
    """A playbook name that is not shipped is PLAYBOOK_NOT_FOUND listing the available ones."""
    task = RESEARCH.model_copy(update={"constraints": {"playbook": "nope"}})

    with pytest.raises(PlaybookError, match="research_report") as caught:
        await RuleReasoner().plan(task, [], builtin_registry(), playbooks)

    assert caught.value.code == "PLAYBOOK_NOT_FOUND"


async def test_a_template_that_needs_the_llm_is_never_planned(
    catalog: RoleCatalog, playbooks: dict[str, Playbook]
) -> None:
    """A template using llm.complete is left out (and the thoughts say why) even when its
    description is the task word for word; with only such templates planning fails."""
    essay = Playbook.model_validate(
        {
            "name": "llm_essay",
            "description": RESEARCH.description,
            "steps": [{"id": "write", "tool": "llm.complete", "input": {"prompt": "x"}}],
        }
    )
    roles = [catalog.get("researcher"), catalog.get("writer")]

    reasoned = await RuleReasoner().plan(
        RESEARCH, roles, builtin_registry(), {**playbooks, "llm_essay": essay}
    )

    assert reasoned.result.playbook != "llm_essay"
    assert any(
        "llm_essay: left out" in t.text and "llm.complete" in t.text for t in reasoned.thoughts
    )
    with pytest.raises(PlaybookError) as caught:
        await RuleReasoner().plan(RESEARCH, roles, builtin_registry(), {"llm_essay": essay})
    assert caught.value.code == "PLAYBOOK_NOT_FOUND"


async def test_evaluate_flags_an_empty_output_and_missing_criterion_words() -> None:
    """An empty output fails; a criterion whose words are mostly absent is not met and
    gets a suggestion; the score is the share of checks met."""
    reasoner = RuleReasoner()

    empty = (await reasoner.evaluate(RESEARCH, "report", [], "")).result
    assert not empty.passed
    assert not empty.findings[0].met

    output = {"markdown": "# Solar\nPanels got cheaper."}
    reasoned = await reasoner.evaluate(RESEARCH, "report", ["cites its sources"], output)
    result = reasoned.result
    assert not result.passed
    assert result.findings[-1].met is False
    assert "missing 'cites', 'sources'" in result.findings[-1].detail
    assert result.score == pytest.approx(2 / 3, abs=1e-4)
    assert result.suggestions == [f"address: cites its sources ({result.findings[-1].detail})"]
    assert "fails" in reasoned.thoughts[-1].text


async def test_evaluate_passes_an_output_that_meets_its_criteria() -> None:
    """Words of each criterion found in the output (by stem) meet it."""
    output = {"stdout": "2 3 5 7", "stderr": "", "exit_code": 0}

    result = (
        await RuleReasoner().evaluate(CODING, "run", ["the code exits with status 0"], output)
    ).result

    assert result.passed
    assert result.score == 1.0


@pytest.mark.parametrize(
    ("error", "category", "retryable"),
    [
        ({"code": "TIMEOUT", "message": "web.search timed out after 30s"}, "transient", True),
        ({"message": "HTTP 429 Too Many Requests"}, "transient", True),
        ({"message": "connection reset by peer"}, "transient", True),
        ({"message": "HTTP 503 from the search API"}, "transient", True),
        ({"exit_code": 1, "stderr": "Traceback (most recent call last)"}, "tool_error", True),
        ({"code": "INVALID_OUTPUT", "message": "missing field summary"}, "invalid_output", True),
        ({"code": "BUDGET_EXCEEDED", "message": "HTTP 429 over budget"}, "budget", False),
        ({"code": "UNKNOWN_TOOL", "message": "shell.exec"}, "fatal", False),
        ({"message": "permission denied"}, "fatal", False),
        ({"message": "something odd"}, "fatal", False),
    ],
)
async def test_analyse_error_classifies_by_code_and_message(
    error: dict[str, Any], category: str, retryable: bool
) -> None:
    """Timeouts, 429s, connections and 5xx are transient; a crashing tool is a tool error;
    output that fails validation is invalid; budget beats 429; the rest is fatal, and the
    thoughts name what decided it."""
    reasoned = await RuleReasoner().analyse_error(RESEARCH, "search", error)

    assert reasoned.result.category == category
    assert reasoned.result.retryable is retryable
    assert category in reasoned.thoughts[1].text
