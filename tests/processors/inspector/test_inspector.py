"""The InspectorAgent's core with the other agents on the in-memory driver: every completed
step is judged, the JourneyAgent waits for the verdicts, a rejected output is attempted
again with the suggestions, and a fit's posteriors become priors and Thompson draws."""

from __future__ import annotations

import random
import uuid
from typing import Any, ClassVar

from events import (
    EvaluationRecorded,
    Event,
    GroupPosterior,
    QualityFitted,
    StepStarted,
    TaskCompleted,
    TaskFailed,
    ToolsAllocated,
    derive_id,
)
from processors.inspector.agent import InspectorAgent
from processors.inspector.quality import Priors, Thresholds, decide, posterior, summary
from processors.journey.agent import JourneyAgent
from processors.reasoning import RuleReasoner
from processors.super.agent import SuperAgent
from processors.tools import ToolCost, ToolSpec, builtin_registry
from processors.tools.builtin import BuiltinTool, Tool, build_tools
from tests.processors.driver import Clock, Driver, executor, inspector, planner
from wrenchai.settings import Settings

RESEARCH = "Research how WrenchAI recovers from errors and write a short report"
SETTINGS = Settings(llm_base_url=None)
THRESHOLDS = Thresholds(threshold=0.6, accept_confidence=0.7, escalate_confidence=0.05, retries=2)


class Sloppy(BuiltinTool):
    """Answers with an empty text until its third call, then with a good one."""

    spec: ClassVar[ToolSpec] = ToolSpec(
        name="test.sloppy",
        version="1.0.0",
        capabilities=["test_sloppy"],
        input_schema={
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
            "additionalProperties": False,
        },
        output_schema={
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
            "additionalProperties": False,
        },
        cost=ToolCost(seconds=0.1),
    )

    def __init__(self, good_from: int = 3) -> None:
        super().__init__()
        self.calls = 0
        self.good_from = good_from

    async def _run(self, tool_input: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        return {"text": tool_input["text"] if self.calls >= self.good_from else ""}

    async def _probe(self) -> tuple[bool, str]:
        return True, "ok"


def system(*extra: Tool) -> tuple[Driver, InspectorAgent]:
    clock = Clock()
    registry = builtin_registry()
    for tool in extra:
        registry.register(tool.spec)
    tools = {**build_tools(SETTINGS), **{tool.spec.name: tool for tool in extra}}
    journey = JourneyAgent(RuleReasoner(), registry, tools, clock=clock, rng=random.Random(3))
    judge = InspectorAgent(RuleReasoner(), registry, Priors(), THRESHOLDS, clock=clock)
    driver = Driver(
        planner(SuperAgent.offline(registry, clock=clock)),
        executor(journey, require_acceptance=True),
        inspector(judge),
        clock=clock,
    )
    return driver, judge


async def run_task(driver: Driver, constraints: dict[str, Any] | None = None) -> list[Event]:
    """Submit a task as an operator would (who may bring inline playbooks) and run it."""
    submitted = driver.submit(RESEARCH, constraints, grants=["playbooks:inline"])
    await driver.settle()
    return [event for event in driver.log if event.task_id == submitted.task_id]


def only(events: list[Event], kind: type[Any]) -> list[Any]:
    return [event.payload for event in events if isinstance(event.payload, kind)]


async def test_every_completed_step_is_judged_before_the_task_completes() -> None:
    """The offline research task: each of its three stages gets one evaluation.recorded,
    derived from its step.completed, accepted; the task completes after the last verdict."""
    driver, _ = system()
    events = await run_task(driver)
    verdicts = only(events, EvaluationRecorded)
    assert [(v.stage_id, v.attempt, v.decision) for v in verdicts] == [
        ("search", 1, "accept"),
        ("summarize", 1, "accept"),
        ("report", 1, "accept"),
    ]
    for verdict in verdicts:
        assert verdict.prior_source == "default" and (verdict.prior_alpha, verdict.prior_beta) == (
            1.0,
            1.0,
        )
        passed = sum(check.passed for check in verdict.checks)
        failed = len(verdict.checks) - passed
        # The conjugate update of Beta(1, 1): its mean is the quality score.
        assert abs(verdict.quality_score - (1 + passed) / (2 + passed + failed)) < 1e-6
        assert verdict.interval[0] < verdict.quality_score < verdict.interval[1]
    kinds = [event.type for event in events]
    assert kinds[-1] == "task.completed"
    assert kinds.index("task.completed") > max(
        i for i, kind in enumerate(kinds) if kind == "evaluation.recorded"
    )
    completed = [e for e in events if e.type == "step.completed"]
    evaluations = [e for e in events if e.type == "evaluation.recorded"]
    assert [e.id for e in evaluations] == [derive_id(c.id, "evaluation") for c in completed]


def sloppy_playbook() -> dict[str, Any]:
    return {
        "playbook": {
            "name": "sloppy",
            "steps": [
                {
                    "id": "write",
                    "tool": "test.sloppy",
                    "role": "writer",
                    "input": {"text": "retry with backoff and jitter"},
                    "success_criteria": ["mentions retry backoff jitter"],
                },
            ],
        }
    }


async def test_a_rejected_output_is_attempted_again_with_the_suggestions() -> None:
    """An empty output fails its checks: the verdict is retry with suggestions, the next
    attempt's step.started carries them, and the third attempt's good output is accepted."""
    driver, _ = system(Sloppy(good_from=3))
    events = await run_task(driver, sloppy_playbook())
    verdicts = only(events, EvaluationRecorded)
    assert [(v.attempt, v.decision) for v in verdicts] == [
        (1, "retry"),
        (2, "retry"),
        (3, "accept"),
    ]
    assert verdicts[0].suggestions and verdicts[0].confidence < THRESHOLDS.accept_confidence
    started = only(events, StepStarted)
    assert [s.attempt for s in started] == [1, 2, 3]
    assert started[1].suggestions == verdicts[0].suggestions[:5]
    assert only(events, TaskCompleted)


async def test_an_output_still_rejected_after_the_retries_fails_the_task() -> None:
    """Always empty: after the retries the verdict is escalate and the task fails with the
    chain of rejections."""
    driver, _ = system(Sloppy(good_from=99))
    events = await run_task(driver, sloppy_playbook())
    verdicts = only(events, EvaluationRecorded)
    assert [v.decision for v in verdicts][-1] == "escalate"
    failed = only(events, TaskFailed)[0]
    assert failed.reason == "STAGE_FAILED"
    assert {error.code for error in failed.errors} == {"QUALITY_REJECTED"}
    assert len(failed.errors) == len(verdicts)


def fitted(tool_means: dict[str, float], fit_id: str = "fit-1") -> QualityFitted:
    groups = [
        GroupPosterior(
            role="analyst",
            tool=tool,
            model=None,
            evaluations=50,
            alpha=mean * 100,
            beta=(1 - mean) * 100,
            mean=mean,
            interval=[max(mean - 0.05, 0.0), min(mean + 0.05, 1.0)],
            r_hat=1.0,
            ess=800.0,
        )
        for tool, mean in tool_means.items()
    ]
    return QualityFitted(
        fit_id=fit_id,
        evaluations=100,
        groups=groups,
        mu=0.5,
        kappa=4.0,
        r_hat_max=1.0,
        ess_min=800.0,
        converged=True,
        draws=500,
        chains=2,
        seconds=1.0,
    )


def fit_event(payload: QualityFitted) -> Event:
    from events import Actor

    return Event.new(payload, tenant_id="wrenchai", actor=Actor(kind="agent", id="inspector"))


async def test_a_fit_becomes_the_prior_of_later_evaluations() -> None:
    """After a converged quality.fitted, a group's prior is its fitted Beta and the verdict
    names the fit; a fit that did not converge is ignored."""
    driver, judge = system()
    judge.observe(fit_event(fitted({"web.search": 0.9}).model_copy(update={"converged": False})))
    judge.observe(fit_event(fitted({"text.summarize": 0.9}, fit_id="fit-2")))
    events = await run_task(driver)
    verdicts = {v.stage_id: v for v in only(events, EvaluationRecorded)}
    assert verdicts["summarize"].prior_source == "fit-2"
    assert round(verdicts["summarize"].prior_alpha, 6) == 90.0
    # Groups the fit did not see get its population prior Beta(mu*kappa, (1-mu)*kappa).
    assert (verdicts["search"].prior_alpha, verdicts["search"].prior_beta) == (2.0, 2.0)


async def test_thompson_draws_are_seeded_by_the_task_recorded_and_steer_allocation() -> None:
    """With posteriors from a fit, tools.allocated records the seed (from the task id) and one
    draw per fitted tool; the same task draws the same; a tool whose posterior is far better
    wins the capability it shares with a worse one."""
    planner_agent = SuperAgent(
        RuleReasoner(),
        SuperAgent.offline().catalog,
        builtin_registry(),
        SuperAgent.offline().playbooks,
        reasoner_kind="rule",
        offline_only=False,
    )
    planner_agent.observe(fit_event(fitted({"text.summarize": 0.05, "llm.complete": 0.95})))
    from processors.super.agent import PlanTask
    from tests.processors.super.test_super_agent import submitted

    task = submitted(
        "Analyse the incident statistics, compare them and summarize the analysis",
        constraints={
            "playbook": {
                "name": "lookup",
                "steps": [
                    {"id": "s", "tool": "web.search", "role": "researcher",
                     "input": {"query": "incidents"}},
                ],
            }
        },
    )  # fmt: skip
    emitted: list[Event] = []

    async def emit(event: Event) -> None:
        emitted.append(event)

    await planner_agent.run(PlanTask(task), emit)
    allocated = next(e.payload for e in emitted if isinstance(e.payload, ToolsAllocated))
    assert allocated.sampling is not None
    assert allocated.sampling.seed == uuid.UUID(str(task.task_id)).int % 2**32
    assert set(allocated.sampling.draws) == {"text.summarize", "llm.complete"}
    analyst = next(item for item in allocated.roles if item.role == "analyst")
    chosen = next(t.tool for t in analyst.tools if t.need == "capability:summarization")
    assert chosen == "llm.complete"

    again: list[Event] = []

    async def emit_again(event: Event) -> None:
        again.append(event)

    await planner_agent.run(PlanTask(task), emit_again)
    repeat = next(e.payload for e in again if isinstance(e.payload, ToolsAllocated))
    assert repeat.sampling == allocated.sampling


def test_a_strong_fitted_prior_does_not_outvote_the_checks_of_a_bad_output() -> None:
    """A fit says writer/test.sloppy is good (Beta(80, 20)). Uncapped, an output failing all
    five of its checks would still be accepted; with the prior's weight capped
    (WRENCH_PRIOR_MAX_WEIGHT = 10) its mean is kept and the same output is not accepted."""
    group = fitted({"test.sloppy": 0.8}).groups[0].model_copy(update={"role": "writer"})
    fit = fitted({"test.sloppy": 0.8}).model_copy(update={"groups": [group]})
    verdicts = {}
    for cap in (None, 10.0):
        judge = InspectorAgent(
            RuleReasoner(), builtin_registry(), Priors(max_weight=cap), THRESHOLDS
        )
        judge.observe(fit_event(fit))
        prior = judge.priors.prior("writer", "test.sloppy")
        assert prior.source == "fit-1"
        assert abs(prior.alpha / (prior.alpha + prior.beta) - 0.8) < 1e-9
        alpha, beta = posterior(prior.alpha, prior.beta, passed=0, failed=5)
        confidence = summary(alpha, beta, THRESHOLDS.threshold).confidence
        verdicts[cap] = decide(confidence, 1, THRESHOLDS)[0]
    assert verdicts == {None: "accept", 10.0: "retry"}


def test_a_fit_is_due_after_fifty_new_evaluations_or_a_fifth_of_those_fitted() -> None:
    """Early on, WRENCH_FIT_MIN_NEW (50) new evaluations call for a fit; after a fit of 1,000
    it takes 200 more, since fifty barely move a posterior over a thousand; the interval
    still fits what is new."""
    settings = Settings(fit_min_new=50, fit_interval_s=300)
    agent = InspectorAgent(RuleReasoner(), builtin_registry(), Priors(), THRESHOLDS)
    agent.last_fit = 0.0
    agent.evaluations = 49
    assert not agent.fit_due(settings, 1.0)
    agent.evaluations = 50
    assert agent.fit_due(settings, 1.0)
    agent.fitted_at_evaluations, agent.evaluations = 1_000, 1_150
    assert not agent.fit_due(settings, 1.0)
    agent.evaluations = 1_200
    assert agent.fit_due(settings, 1.0)
    agent.evaluations = 1_001
    assert agent.fit_due(settings, 301.0)
