"""What `wrenchai watch` shows, folded from recorded stream messages, with no terminal and no
socket: the messages are built from the catalog's own payload classes, as the API serves
them (HistoryEvent JSON with its position)."""

from __future__ import annotations

import uuid
from functools import reduce
from typing import Any

from events import (
    Actor,
    AlertCleared,
    AlertRaised,
    AssignedRole,
    CheckResult,
    EvaluationRecorded,
    Event,
    EventPayload,
    PlanCreated,
    PlanEstimate,
    PlanStage,
    ProgressUpdated,
    RecoveryExecuted,
    RecoveryPlanned,
    RolesAssigned,
    StepCompleted,
    StepError,
    StepFailed,
    StepStarted,
    TaskCancelled,
    TaskCompleted,
    TaskFailed,
    TaskSubmitted,
    ToolCalled,
    ToolReturned,
    UsageRecorded,
)
from wrenchai._watch_view import WatchView, accepts, fold

TASK = uuid.uuid4()
AGENT = Actor(kind="agent", id="journey-agent")
Message = dict[str, Any]


def message(offset: int, payload: EventPayload, partition: int = 2) -> Message:
    """One event message of WS /ws/tasks/{task_id}: the event as the API's history shows it."""
    event = Event.new(payload, tenant_id="default", actor=AGENT, task_id=TASK)
    body = event.model_dump(mode="json")
    body["position"] = f"{partition}:{offset}"
    return {"position": body["position"], "event": body}


def stage(sid: str, role: str, tool: str, depends_on: list[str] | None = None) -> PlanStage:
    return PlanStage(
        id=sid, role=role, tools=[tool, f"{tool}.backup"], tool_version="1.0.0",
        depends_on=depends_on or [], timeout=30, estimate=PlanEstimate(tokens=200, seconds=2.0),
    )  # fmt: skip


def evaluation(sid: str, attempt: int, score: float, low: float, high: float) -> EvaluationRecorded:
    return EvaluationRecorded(
        stage_id=sid, attempt=attempt, role="writer", tool="report.compile",
        checks=[CheckResult(name="non_empty", passed=True)], prior_alpha=2, prior_beta=2,
        prior_source="default", quality_score=score, interval=[low, high], confidence=0.8,
        threshold=0.5, decision="accept", reason="checks passed",
    )  # fmt: skip


def attempt_of(sid: str, n: int) -> dict[str, Any]:
    return {"stage_id": sid, "attempt": n}


def recorded_run() -> list[Message]:
    """A two-stage task as the stream delivers it: the report stage fails once, is retried,
    and an alert is raised and cleared on the way."""
    search, report = attempt_of("search", 1), attempt_of("report", 1)
    retry = attempt_of("report", 2)
    payloads: list[EventPayload] = [
        TaskSubmitted(description="Research event sourcing", constraints={"playbook": "rr"}),
        RolesAssigned(roles=[AssignedRole(name="researcher"), AssignedRole(name="writer")],
                      reasoner="rule"),
        PlanCreated(playbook="research_report",
                    stages=[stage("search", "researcher", "search.local"),
                            stage("report", "writer", "report.compile", ["search"])],
                    total=PlanEstimate(tokens=400, cost_usd=0.01, seconds=4.0),
                    critical_path_seconds=4.0),
        StepStarted(**search, tool="search.local", tool_version="1.0.0", input={},
                    idempotency_key="k1"),
        ToolCalled(**search, tool="search.local", version="1.0.0", input_hash="h",
                   idempotency_key="k1"),
        UsageRecorded(operation="execute", model="m", input_tokens=100, output_tokens=20,
                      total_tokens=120, stage_id="search"),
        ToolReturned(**search, tool="search.local", version="1.0.0", outcome="ok",
                     duration_s=0.1, result={"hits": 3}, input_hash="h", cost_usd=0.002),
        StepCompleted(**search, output={"hits": 3}, duration_s=0.2),
        evaluation("search", 1, 0.8, 0.6, 0.93),
        AlertRaised(alert_id="a1", level="warning", code="STALLED", message="no step for 30 s"),
        StepStarted(**report, tool="report.compile", tool_version="1.0.0", input={},
                    idempotency_key="k2"),
        ToolReturned(**report, tool="report.compile", version="1.0.0", outcome="error",
                     duration_s=0.1, error=StepError(code="TOOL_ERROR"), input_hash="h2"),
        StepFailed(**report, error=StepError(code="TOOL_ERROR"), duration_s=0.1),
        RecoveryPlanned(**report, category="transient", action="retry", reason="flaky"),
        RecoveryExecuted(**report, action="retry", next_attempt=2),
        AlertCleared(alert_id="a1", code="STALLED", reason="a step started"),
        StepStarted(**retry, tool="report.compile", tool_version="1.0.0", input={},
                    idempotency_key="k3"),
        ToolReturned(**retry, tool="report.compile", version="1.0.0", outcome="ok",
                     duration_s=0.1, result={}, input_hash="h2", cost_usd=0.001),
        StepCompleted(**retry, output={"markdown": "# r"}, duration_s=0.1),
        evaluation("report", 2, 0.7, 0.45, 0.88),
        ProgressUpdated(stages_done=2, stages_total=2, elapsed_s=3.5, estimated_s=4.0,
                        tokens=120, cost_usd=0.0035),
        TaskCompleted(output={"final": "# r"}, summary="2 of 2 stages completed in 3.5 s"),
    ]  # fmt: skip
    # Offsets leave gaps, as other tasks' records share the partition.
    events = [message(10 + 3 * i, payload) for i, payload in enumerate(payloads)]
    return [*events[:-1], {"type": "live"}, events[-1], {"type": "end", "status": "completed"}]


def replay(messages: list[Message], view: WatchView | None = None) -> WatchView:
    return reduce(fold, messages, view or WatchView(task_id=str(TASK)))


def test_a_recorded_run_folds_to_its_finished_view() -> None:
    """Every stage ends with a full bar, the attempts, tokens, dollars, evaluations (score
    and interval) and the cleared alert are all there, and the view exits 0."""
    view = replay(recorded_run())
    assert view.status == "completed" and view.ended and view.live
    assert view.exit_status == 0
    assert view.playbook == "research_report"
    assert view.roles == ("researcher", "writer")
    assert [(s.id, s.status, s.fraction, s.attempt) for s in view.stages] == [
        ("search", "completed", 1.0, 1),
        ("report", "completed", 1.0, 2),
    ]
    assert view.attempts == 3
    assert (view.tokens, view.prompt_tokens, view.completion_tokens) == (120, 100, 20)
    assert view.cost_usd == 0.0035  # the JourneyAgent's report counted more than the tools
    assert (view.estimated_tokens, view.estimated_cost_usd) == (400, 0.01)
    assert [(e.stage_id, e.attempt, e.score, e.interval) for e in view.evaluations] == [
        ("search", 1, 0.8, (0.6, 0.93)),
        ("report", 2, 0.7, (0.45, 0.88)),
    ]
    assert view.stages[1].interval == (0.45, 0.88)
    assert [(a.code, a.cleared) for a in view.alerts] == [("STALLED", True)]
    assert view.active_alerts == ()
    assert view.outcome == "2 of 2 stages completed in 3.5 s"
    assert view.events == 22 and view.position == "2:73"


def test_midway_the_view_shows_the_current_step_its_tool_and_the_open_alert() -> None:
    """After the retry started: the report stage runs its second attempt with its tool and
    the search stage is done with its evaluation; before it, the failed attempt shows its
    error and recovery, and the alert raised meanwhile is open."""
    messages = recorded_run()
    view = replay(messages[:17])
    assert view.status == "running" and view.exit_status is None
    assert [(s.id, s.tool, s.attempt) for s in view.running] == [("report", "report.compile", 2)]
    assert 0 < view.stages[1].fraction < 1 and view.stages[1].error is None
    assert view.stages[0].score == 0.8
    assert [(a.code, a.cleared) for a in view.alerts] == [("STALLED", True)]
    before_retry = replay(messages[:14])
    assert [a.code for a in before_retry.active_alerts] == ["STALLED"]
    assert (before_retry.stages[1].status, before_retry.stages[1].error) == (
        "recovering",
        "TOOL_ERROR",
    )


def test_a_message_at_a_position_already_received_changes_nothing() -> None:
    """A stream resumed from an earlier position (or a server that repeats itself) folds to
    the same view as the run received once: repeats are refused by position."""
    messages = recorded_run()
    once = replay(messages)
    halfway = replay(messages[:12])
    assert not accepts(halfway, messages[5]) and accepts(halfway, messages[12])
    again = replay(messages[5:], halfway)
    assert again == once


def test_an_event_the_log_holds_twice_moves_the_position_but_counts_once() -> None:
    """The same event id at a later position (an at-least-once redelivery) is received, so
    the next resume starts after it, but its tokens and dollars are not counted again."""
    messages = recorded_run()
    usage, returned = messages[5], messages[6]
    twice = [
        *messages[:7],
        {**usage, "position": "2:500", "event": {**usage["event"], "position": "2:500"}},
        {**returned, "position": "2:501", "event": {**returned["event"], "position": "2:501"}},
    ]
    view = replay(twice)
    assert view.position == "2:501" and view.events == 9
    assert (view.tokens, view.tool_cost_usd) == (120, 0.002)


def test_the_end_says_how_the_task_ended_failed_is_1_and_cancelled_is_2() -> None:
    """task.failed and task.cancelled set the outcome; the end message settles the status."""
    head = recorded_run()[:4]
    failed = replay([*head, message(900, TaskFailed(reason="TIMEOUT", message="too slow")),
                     {"type": "end", "status": "failed"}])  # fmt: skip
    assert (failed.status, failed.exit_status, failed.outcome) == ("failed", 1, "TIMEOUT: too slow")
    cancelled = replay([*head, message(900, TaskCancelled(reason="changed my mind")),
                        {"type": "end", "status": "cancelled"}])  # fmt: skip
    assert (cancelled.exit_status, cancelled.outcome) == (2, "changed my mind")
    # An end without its event (resumed after the terminal event) still decides.
    assert replay([{"type": "end", "status": "cancelled"}]).exit_status == 2


def test_a_late_event_of_an_earlier_attempt_does_not_move_the_stage_back() -> None:
    """step.failed of attempt 1 arriving after attempt 2 started leaves attempt 2 running."""
    messages = recorded_run()
    view = replay(messages[:17])
    late = message(999, StepFailed(**attempt_of("report", 1), error=StepError(code="X"),
                                   duration_s=0.1))  # fmt: skip
    after = fold(view, late)
    assert after.stages == view.stages and after.position == "2:999"


def test_shredded_plans_unknown_types_pings_and_errors_do_not_stop_the_view() -> None:
    """A plan whose stages read [shredded] gives no bars, and a step of an unplanned stage
    adds one; types the view does not know, pings and error messages change nothing but
    the position."""
    view = replay(recorded_run()[:2])
    plan = message(50, PlanCreated(stages=[stage("s", "r", "t")]))
    plan["event"]["payload"]["stages"] = "[shredded]"
    view = fold(view, plan)
    assert view.stages == () and view.status == "running"
    step = message(51, StepStarted(**attempt_of("s", 1), tool="t", tool_version="1",
                                   input={}, idempotency_key="k"))  # fmt: skip
    view = fold(view, step)
    assert [(s.id, s.status, s.tool) for s in view.stages] == [("s", "running", "t")]
    unknown = {"position": "2:52", "event": {"id": "x", "type": "brand.new", "payload": {}}}
    for noise in ({"type": "ping"}, {"type": "error", "error": {"message": "bad"}}, unknown):
        assert fold(view, noise).stages == view.stages
    assert fold(view, unknown).position == "2:52"
    assert not accepts(view, {"position": "garbage", "event": {}})
