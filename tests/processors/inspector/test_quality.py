"""The quality model's pure parts: checks on outputs, the conjugate update against the
closed form, the decision at its thresholds, priors from a fit, and seeded Thompson draws.
No PyMC here: these run in milliseconds."""

from __future__ import annotations

from typing import Any, cast

import pytest
from scipy import special, stats

from events import GroupPosterior, QualityFitted
from processors.inspector.quality import (
    Checked,
    Prior,
    Priors,
    Thresholds,
    assess,
    check_agent_output,
    decide,
    evaluate_agent_output,
    parse_test_summary,
    posterior,
    summary,
    thompson_draws,
)
from processors.reasoning import (
    CriterionFinding,
    Evaluation,
    LLMUnavailable,
    Reasoned,
    Reasoner,
    RuleReasoner,
    TaskBrief,
    Usage,
)
from processors.shared.planning import Estimate, Stage, create_execution_plan
from processors.shared.playbook import load_playbook, playbook_roles, playbook_tools
from processors.shared.roles import load_role_catalog, validate_role_assignment
from processors.tools import allocate_tools, builtin_registry
from processors.tools.descriptors import (
    CODE_PYTHON,
    HTTP_FETCH,
    REPORT_COMPILE,
    TEXT_SUMMARIZE,
    WEB_SEARCH,
)
from wrenchai.settings import Settings

TASK = TaskBrief(task_id="task-q", description="Research solar power and write a report")
THRESHOLDS = Thresholds(threshold=0.6, accept_confidence=0.7, escalate_confidence=0.05, retries=2)


def _stage(tool: str, criteria: list[str] | None = None, **tool_input: Any) -> Stage:
    return Stage(
        id="s1",
        role="analyst",
        tools=[tool],
        tool_version="1.0.0",
        depends_on=[],
        inputs=[],
        tool_input=tool_input,
        success_criteria=criteria or [],
        optional=False,
        timeout=30,
        retry=0,
        estimate=Estimate(),
        fallbacks=[],
    )


def _by_name(checked: Checked) -> dict[str, bool]:
    return {check.name: check.passed for check in checked.checks}


def _code(exit_code: int = 0, stdout: str = "", stderr: str = "") -> dict[str, Any]:
    return {"stdout": stdout, "stderr": stderr, "exit_code": exit_code, "duration_s": 0.1}


# -- checks --------------------------------------------------------------------------------


def test_code_that_exits_0_passes_and_a_crash_fails_with_its_exception_named() -> None:
    stage = _stage("code.python", ["the code exits with status 0"], code="print(1)")
    good = check_agent_output(stage, _code(0, "1\n"), CODE_PYTHON)
    assert _by_name(good) == {"non_empty": True, "schema_valid": True, "exit_code": True}
    assert good.suggestions == ()
    crash = check_agent_output(
        stage, _code(1, stderr="Traceback ...\nZeroDivisionError: division by zero"), CODE_PYTHON
    )
    assert _by_name(crash)["exit_code"] is False
    assert "ZeroDivisionError" in crash.checks[2].detail
    assert any("exited with status 1" in s for s in crash.suggestions)
    # The criterion is answered by the exit-code check, not counted a second time.
    assert len(crash.checks) == 3


@pytest.mark.parametrize(
    ("stdout", "stderr", "passed"),
    [
        ("..\n======= 2 passed in 0.03s =======\n", "", True),
        ("3 passed, 1 warning in 0.10s\n", "", True),
        ("==== 1 failed, 4 passed in 0.20s ====\n", "", False),
        ("==== 1 error in 0.20s ====\n", "", False),
        ("", "..\n" + "-" * 70 + "\nRan 2 tests in 0.001s\n\nOK\n", True),
        ("", "Ran 3 tests in 0.004s\n\nFAILED (failures=1)\n", False),
        ("", "Ran 0 tests in 0.000s\n\nOK\n", False),
    ],
)
def test_a_pytest_or_unittest_summary_becomes_a_tests_passed_check(
    stdout: str, stderr: str, passed: bool
) -> None:
    stage = _stage("code.python", code="import pytest")
    checked = check_agent_output(stage, _code(0, stdout, stderr), CODE_PYTHON)
    assert _by_name(checked)["tests_passed"] is passed
    assert (checked.suggestions != ()) is not passed


def test_output_without_a_test_summary_has_no_tests_check() -> None:
    assert parse_test_summary("hello world\n") is None
    checked = check_agent_output(_stage("code.python", code="x"), _code(0, "42\n"), CODE_PYTHON)
    assert "tests_passed" not in _by_name(checked)


def test_the_last_test_summary_wins() -> None:
    text = "== 1 failed, 1 passed in 0.1s ==\nrerun\n== 2 passed in 0.1s ==\n"
    assert parse_test_summary(text) == (True, "2 passed")


def test_search_results_must_exist_and_carry_a_snippet() -> None:
    stage = _stage("web.search", ["at least one result with a snippet"], query="solar")
    hit = {"results": [{"title": "t", "url": "u", "snippet": "solar power"}]}
    assert all(_by_name(check_agent_output(stage, hit, WEB_SEARCH)).values())
    empty = check_agent_output(stage, {"results": []}, WEB_SEARCH)
    assert _by_name(empty) == {"non_empty": False, "schema_valid": True, "search_results": False}
    blank = {"results": [{"title": "t", "url": "u", "snippet": "  "}]}
    assert _by_name(check_agent_output(stage, blank, WEB_SEARCH))["search_results"] is False


def test_search_results_beyond_the_limit_asked_fail_a_length_check() -> None:
    stage = _stage("web.search", query="solar", limit=1)
    rows = [{"title": "t", "url": "u", "snippet": "s"}] * 2
    assert (
        _by_name(check_agent_output(stage, {"results": rows}, WEB_SEARCH))["length:limit"] is False
    )


def test_a_report_must_cite_its_sources() -> None:
    stage = _stage("report.compile", ["the report cites its sources"], title="t", sections=[])
    cited = {"markdown": "# t\n\nbody [1]\n\n## Sources\n\n1. a", "sources": ["a"]}
    assert all(_by_name(check_agent_output(stage, cited, REPORT_COMPILE)).values())
    bare = check_agent_output(stage, {"markdown": "# t\n\nbody\n", "sources": []}, REPORT_COMPILE)
    assert _by_name(bare)["cites_sources"] is False
    assert any("cite" in s for s in bare.suggestions)
    linked = {"markdown": "see https://example.org", "sources": []}
    assert _by_name(check_agent_output(stage, linked, REPORT_COMPILE))["cites_sources"] is True


def test_schema_invalid_output_fails_and_says_where_without_quoting_content() -> None:
    stage = _stage("code.python", code="x")
    bad = {"stdout": "secret text", "stderr": "", "exit_code": "zero", "duration_s": 0.1}
    checked = check_agent_output(stage, bad, CODE_PYTHON)
    schema = next(c for c in checked.checks if c.name == "schema_valid")
    assert schema.passed is False
    assert "$.exit_code fails type 'integer'" in schema.detail
    assert "secret" not in schema.detail and "zero" not in schema.detail
    assert _by_name(checked)["exit_code"] is False


def test_empty_output_fails_non_empty_whatever_its_shape() -> None:
    outputs: list[Any] = [None, "", "   ", {}, []]
    for output in outputs:
        assert _by_name(check_agent_output(_stage("misc.tool"), output, None))["non_empty"] is False
    empty_summary = {"summary": "", "sentences": []}
    checked = check_agent_output(_stage("text.summarize", text="x"), empty_summary, TEXT_SUMMARIZE)
    assert _by_name(checked)["non_empty"] is False


def test_a_summary_longer_than_max_sentences_fails_its_length_check() -> None:
    stage = _stage("text.summarize", text="...", max_sentences=2)
    short = {"summary": "One. Two.", "sentences": ["One.", "Two."]}
    long = {"summary": "One. Two. Three.", "sentences": ["One.", "Two.", "Three."]}
    assert _by_name(check_agent_output(stage, short, TEXT_SUMMARIZE))["length:max_sentences"]
    failed = check_agent_output(stage, long, TEXT_SUMMARIZE)
    assert _by_name(failed)["length:max_sentences"] is False
    assert "at most 2 sentences (it has 3)" in failed.suggestions[0]


@pytest.mark.parametrize(
    ("criterion", "text", "passed"),
    [
        ("at most 5 words", "one two three", True),
        ("at most 2 words", "one two three", False),
        ("at least 3 sentences", "A. B. C.", True),
        ("no fewer than 4 sentences", "A. B. C.", False),
        ("under 10 characters", "short", True),
        ("fewer than 3 lines", "a\nb\nc", False),
    ],
)
def test_a_length_a_criterion_states_is_checked(criterion: str, text: str, passed: bool) -> None:
    stage = _stage("llm.complete", [criterion], prompt="p")
    checked = check_agent_output(stage, text, None)
    assert _by_name(checked)[f"length: {criterion}"] is passed


def test_other_criteria_go_through_the_keyword_check() -> None:
    stage = _stage("llm.complete", ["mentions photovoltaic efficiency"], prompt="p")
    good = check_agent_output(stage, "Photovoltaic efficiency rose.", None)
    assert _by_name(good)["criterion: mentions photovoltaic efficiency"] is True
    bad = check_agent_output(stage, "Wind turbines.", None)
    assert _by_name(bad)["criterion: mentions photovoltaic efficiency"] is False
    assert bad.suggestions[0].startswith("address: mentions photovoltaic efficiency")


def test_the_time_limit_is_a_check_only_when_the_duration_is_known() -> None:
    stage = _stage("llm.complete", ["the stage finishes within 30 s"], prompt="p")
    assert "within_time" not in _by_name(check_agent_output(stage, "text", None))
    slow = check_agent_output(stage, "text", None, duration_s=31.0)
    assert _by_name(slow)["within_time"] is False
    assert _by_name(check_agent_output(stage, "text", None, duration_s=2.0))["within_time"]


def test_a_fetch_that_answered_an_error_status_fails() -> None:
    stage = _stage("http.fetch", url="https://example.org")
    page = {"url": "https://example.org", "status": 404, "text": "Not Found"}
    assert _by_name(check_agent_output(stage, page, HTTP_FETCH))["http_status"] is False


def test_good_outputs_of_the_shipped_research_plan_pass_every_check() -> None:
    """The planner's own criteria (schema, required fields, time) and the playbook's are
    all answered by structural checks: a good output is not failed by keyword matching."""
    registry = builtin_registry()
    playbook = load_playbook("research_report")
    roles = validate_role_assignment(playbook_roles(playbook), load_role_catalog())
    allocation = allocate_tools(roles, registry, pinned=playbook_tools(playbook))
    plan = create_execution_plan(TASK.description, roles, playbook, allocation, registry)
    outputs = {
        "web.search": {"results": [{"title": "t", "url": "u", "snippet": "solar"}]},
        "text.summarize": {"summary": "Solar grew.", "sentences": ["Solar grew."]},
        "report.compile": {"markdown": "# Solar\n\n1. u\n", "sources": ["u"]},
    }
    for stage in plan.stages:
        spec = registry.get(stage.tools[0])
        checked = check_agent_output(stage, outputs[spec.name], spec, duration_s=0.5)
        assert checked.failed == 0, (stage.id, checked.checks)


def test_suggestions_are_unique_and_bounded() -> None:
    criteria = [f"at most {n} words" for n in range(20)]
    checked = check_agent_output(_stage("llm.complete", criteria, prompt="p"), "a " * 50, None)
    assert checked.failed == 20
    assert len(checked.suggestions) == 10
    assert len(set(checked.suggestions)) == len(checked.suggestions)


# -- judge votes ---------------------------------------------------------------------------


class _Judge:
    """A reasoner whose votes are scripted: True, False, or an outage."""

    def __init__(self, *votes: bool | None) -> None:
        self.votes = list(votes)

    async def evaluate(
        self, task: TaskBrief, stage_id: str, criteria: list[str], output: Any, **_: Any
    ) -> Reasoned[Evaluation]:
        vote = self.votes.pop(0)
        if vote is None:
            raise LLMUnavailable("the judge is down")
        finding = CriterionFinding(criterion="good", met=vote, detail="d")
        evaluation = Evaluation(
            passed=vote,
            score=1.0 if vote else 0.0,
            findings=[finding],
            suggestions=[] if vote else ["say more about cost"],
        )
        usage = Usage(model="m", input_tokens=10, output_tokens=5)
        return Reasoned(result=evaluation, usage=[usage])


async def test_each_judge_vote_is_one_more_check_with_its_suggestions_and_usage() -> None:
    stage = _stage("llm.complete", prompt="p")
    judge = _Judge(True, False, None)
    # The scripted judge only answers evaluate, which is all a judge is asked.
    reasoner = cast(Reasoner, judge)
    checked = await evaluate_agent_output(
        stage, "text", None, task=TASK, reasoner=reasoner, votes=3
    )
    votes = {c.name: c.passed for c in checked.checks if c.name.startswith("judge")}
    # The outage gives no vote: it says nothing about the output.
    assert votes == {"judge_vote_1": True, "judge_vote_2": False}
    assert "say more about cost" in checked.suggestions
    assert len(checked.usage) == 2


async def test_the_rule_reasoner_judges_and_no_votes_means_no_judge() -> None:
    stage = _stage("llm.complete", ["mentions solar"], prompt="p")
    judged = await evaluate_agent_output(
        stage, "solar power", None, task=TASK, reasoner=RuleReasoner(), votes=2
    )
    assert _by_name(judged)["judge_vote_1"] and _by_name(judged)["judge_vote_2"]
    plain = await evaluate_agent_output(stage, "solar power", None, task=TASK, votes=0)
    assert plain == check_agent_output(stage, "solar power", None)


# -- the conjugate update against the closed form -----------------------------------------


@pytest.mark.parametrize(
    ("a0", "b0", "passed", "failed", "threshold"),
    [(1.0, 1.0, 4, 1, 0.6), (2.5, 7.25, 0, 3, 0.4), (30.0, 4.0, 9, 0, 0.8), (0.5, 0.5, 1, 1, 0.5)],
)
def test_the_posterior_is_the_analytical_beta_posterior(
    a0: float, b0: float, passed: int, failed: int, threshold: float
) -> None:
    alpha, beta = posterior(a0, b0, passed, failed)
    assert (alpha, beta) == (a0 + passed, b0 + failed)
    mean, (low, high), confidence = summary(alpha, beta, threshold)
    exact = stats.beta(alpha, beta)
    assert mean == pytest.approx(exact.mean(), abs=1e-9)
    assert low == pytest.approx(exact.ppf(0.05), abs=1e-9)
    assert high == pytest.approx(exact.ppf(0.95), abs=1e-9)
    assert confidence == pytest.approx(1 - special.betainc(alpha, beta, threshold), abs=1e-9)
    assert confidence == pytest.approx(exact.sf(threshold), abs=1e-9)


def test_a_prior_must_be_proper_and_counts_non_negative() -> None:
    with pytest.raises(ValueError, match="alpha, beta > 0"):
        posterior(0.0, 1.0, 1, 1)
    with pytest.raises(ValueError, match="negative"):
        posterior(1.0, 1.0, -1, 0)


def test_assess_is_update_then_summary_then_decision() -> None:
    checked = Checked(checks=check_agent_output(_stage("x.y"), "text", None).checks)
    verdict = assess(Prior(2.0, 1.0, "default"), checked, 1, THRESHOLDS)
    assert (verdict.alpha, verdict.beta) == (3.0, 1.0)
    assert verdict.estimate == summary(3.0, 1.0, 0.6)
    assert (verdict.decision, verdict.reason) == decide(verdict.estimate.confidence, 1, THRESHOLDS)


# -- the decision --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("confidence", "attempt", "decision"),
    [
        (0.7, 1, "accept"),  # exactly accept_confidence accepts
        (0.7, 3, "accept"),  # on the last attempt too
        (0.6999, 1, "retry"),
        (0.05, 1, "retry"),  # exactly escalate_confidence still retries
        (0.0499, 1, "escalate"),  # below it, at once
        (0.5, 2, "retry"),  # attempt 2 of 1 + 2 retries
        (0.5, 3, "escalate"),  # retries spent
    ],
)
def test_the_decision_at_its_thresholds(confidence: float, attempt: int, decision: str) -> None:
    found, reason = decide(confidence, attempt, THRESHOLDS)
    assert found == decision
    assert f"{confidence:.3f}" in reason


def test_no_retries_means_the_first_attempt_is_the_last() -> None:
    strict = Thresholds(threshold=0.6, accept_confidence=0.7, escalate_confidence=0.05, retries=0)
    assert decide(0.5, 1, strict)[0] == "escalate"


def test_thresholds_come_from_settings() -> None:
    settings = Settings(quality_threshold=0.55, accept_confidence=0.8, quality_retries=1)
    assert Thresholds.from_settings(settings) == Thresholds(0.55, 0.8, 0.05, 1)


# -- priors --------------------------------------------------------------------------------


def _fit(converged: bool = True, fit_id: str = "fit-1") -> QualityFitted:
    group = GroupPosterior(
        role="analyst",
        tool="web.search",
        evaluations=40,
        alpha=80.0,
        beta=20.0,
        mean=0.8,
        interval=[0.73, 0.86],
        r_hat=1.0,
        ess=900.0,
    )
    llm = group.model_copy(
        update={"role": "writer", "tool": "llm.complete", "model": "m", "evaluations": 0}
    )
    return QualityFitted(
        fit_id=fit_id,
        evaluations=40,
        groups=[group, llm.model_copy(update={"alpha": 10.0, "beta": 10.0})],
        mu=0.7,
        kappa=20.0,
        r_hat_max=1.0 if converged else 1.4,
        ess_min=900.0 if converged else 12.0,
        converged=converged,
        draws=500,
        chains=2,
        seconds=3.0,
        reason="" if converged else "r_hat 1.4 above 1.05",
    )


def test_before_any_fit_the_prior_comes_from_settings() -> None:
    priors = Priors.from_settings(Settings(prior_alpha=2.0, prior_beta=3.0))
    assert priors.prior("analyst", "web.search") == Prior(2.0, 3.0, "default")
    assert priors.tool_posteriors() == {}


def test_a_fitted_group_gets_its_posterior_and_an_unseen_one_the_population() -> None:
    priors = Priors(1.0, 1.0).with_fit(_fit())
    assert priors.prior("analyst", "web.search", None) == Prior(80.0, 20.0, "fit-1")
    assert priors.prior("writer", "llm.complete", "m") == Prior(10.0, 10.0, "fit-1")
    unseen = priors.prior("coder", "code.python")
    assert unseen.source == "fit-1"
    assert (unseen.alpha, unseen.beta) == pytest.approx((14.0, 6.0))
    # The model is part of the group: another model of the same tool is unseen.
    assert priors.prior("writer", "llm.complete", "other").alpha == pytest.approx(14.0)


def test_a_fit_that_has_not_converged_is_ignored() -> None:
    priors = Priors(1.0, 1.0).with_fit(_fit()).with_fit(_fit(converged=False, fit_id="fit-2"))
    assert priors.prior("analyst", "web.search").source == "fit-1"
    fresh = Priors(1.0, 1.0).with_fit(_fit(converged=False))
    assert fresh.prior("analyst", "web.search") == Prior(1.0, 1.0, "default")
    with pytest.raises(ValueError, match="has not converged"):
        Priors(fit=_fit(converged=False))


def test_the_latest_converged_fit_replaces_the_one_before() -> None:
    later = _fit(fit_id="fit-2").model_copy(update={"mu": 0.5, "kappa": 4.0})
    priors = Priors(1.0, 1.0).with_fit(_fit()).with_fit(later)
    assert priors.prior("coder", "code.python") == Prior(2.0, 2.0, "fit-2")


def test_max_weight_caps_a_fitted_prior_and_keeps_its_mean() -> None:
    priors = Priors(1.0, 1.0, max_weight=10.0).with_fit(_fit())
    assert priors.prior("analyst", "web.search") == Prior(8.0, 2.0, "fit-1")


def test_tool_posteriors_pool_the_groups_of_a_tool() -> None:
    found = Priors().with_fit(_fit()).tool_posteriors()
    assert found["web.search"] == pytest.approx((80.0, 20.0))
    assert found["llm.complete"] == pytest.approx((10.0, 10.0))


# -- Thompson sampling ---------------------------------------------------------------------


def test_thompson_draws_are_reproducible_with_a_seed_and_differ_with_another() -> None:
    posteriors = {"web.search": (8.0, 2.0), "http.fetch": (3.0, 3.0), "llm.complete": (1.0, 1.0)}
    first = thompson_draws(posteriors, seed=42)
    assert first == thompson_draws(dict(reversed(posteriors.items())), seed=42)
    assert sorted(first) == sorted(posteriors)
    assert all(0.0 <= value <= 1.0 for value in first.values())
    assert thompson_draws(posteriors, seed=43) != first


def test_thompson_draws_follow_the_posteriors() -> None:
    means = [thompson_draws({"t": (30.0, 10.0)}, seed=s)["t"] for s in range(2_000)]
    assert sum(means) / len(means) == pytest.approx(0.75, abs=0.01)
