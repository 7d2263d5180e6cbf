"""One task's events as the agents write them, at known times: planned with an LLM, a stage
whose first attempt is judged and retried and whose second fails and is skipped, a second
stage that completes, and the task's end."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from events import (
    Actor,
    AlertRaised,
    AssignedRole,
    CheckResult,
    EvaluationRecorded,
    Event,
    EventPayload,
    PlanCreated,
    PlanStage,
    RecoveryExecuted,
    RecoveryPlanned,
    RolesAssigned,
    StepCompleted,
    StepError,
    StepFailed,
    StepStarted,
    TaskCompleted,
    TaskSubmitted,
    ToolCalled,
    ToolReturned,
    UsageRecorded,
)

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
SECRET = "the user's private prompt"
USER = Actor(kind="user", id="ada")
SUPER = Actor(kind="agent", id="super-agent")
JOURNEY = Actor(kind="agent", id="journey-agent")
INSPECTOR = Actor(kind="agent", id="inspector-agent")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def usage(operation: str, stage_id: str | None = None, model: str = "gpt-x") -> UsageRecorded:
    return UsageRecorded(
        operation=operation,  # type: ignore[arg-type]
        model=model,
        provider="api.example.test",
        input_tokens=120,
        output_tokens=30,
        cached_tokens=20,
        reasoning_tokens=5,
        total_tokens=150,
        source="provider",
        cost_usd=0.0042,
        price_version="2026-01",
        stage_id=stage_id,
        role="writer" if stage_id else None,
        tool="llm.complete" if operation == "execute" else None,
    )


def evaluation(stage_id: str, attempt: int, decision: str) -> EvaluationRecorded:
    return EvaluationRecorded(
        stage_id=stage_id,
        attempt=attempt,
        role="writer",
        tool="llm.complete",
        model="gpt-x",
        checks=[
            CheckResult(name="non_empty", passed=True),
            CheckResult(name="cites", passed=False),
        ],
        prior_alpha=1.0,
        prior_beta=1.0,
        prior_source="default",
        quality_score=0.5,
        interval=[0.1, 0.9],
        confidence=0.4,
        threshold=0.6,
        decision=decision,  # type: ignore[arg-type]
        reason="one check of two passed",
    )


def task_events(task_id: uuid.UUID | None = None, tenant_id: str = "acme") -> list[Event]:
    """The task's events in log order, each derived from the one before (as the agents'
    events derive from their causes)."""
    task_id = task_id or uuid.uuid4()
    submitted = Event.new(
        TaskSubmitted(description=SECRET, timeout=600),
        tenant_id=tenant_id,
        actor=USER,
        task_id=task_id,
        occurred_at=T0,
    )
    # fmt: off
    story: list[tuple[float, Actor, EventPayload]] = [
        (1.0, SUPER, usage("assign_roles")),
        (1.1, SUPER, RolesAssigned(roles=[AssignedRole(name="writer")], reasoner="llm")),
        (2.0, SUPER, PlanCreated(
            playbook="report",
            stages=[
                PlanStage(id="draft", role="writer", tools=["llm.complete"],
                          tool_version="1", timeout=60, tool_input={"prompt": SECRET}),
                PlanStage(id="polish", role="writer", tools=["text.format"],
                          tool_version="1", timeout=60, depends_on=["draft"]),
            ],
        )),
        (3.0, JOURNEY, started("draft", 1, {"prompt": SECRET})),
        (3.1, JOURNEY, called("draft", 1)),
        (4.0, JOURNEY, returned("draft", 1, 0.9)),
        (4.0, JOURNEY, usage("execute", "draft")),
        (4.2, JOURNEY, StepCompleted(stage_id="draft", attempt=1, output=SECRET, duration_s=1.2)),
        (5.0, INSPECTOR, usage("evaluate", "draft", model="judge-y")),
        (5.0, INSPECTOR, evaluation("draft", 1, "retry")),
        (6.0, JOURNEY, started("draft", 2, {"prompt": SECRET})),
        (6.1, JOURNEY, called("draft", 2)),
        (6.5, JOURNEY, returned("draft", 2, 0.4, error=True)),
        (6.6, JOURNEY, StepFailed(stage_id="draft", attempt=2, duration_s=0.6,
                                  error=StepError(code="TOOL_TIMEOUT", category="transient"))),
        (6.7, JOURNEY, RecoveryPlanned(stage_id="draft", attempt=2, category="transient",
                                       action="skip", reason="optional stage")),
        (6.8, JOURNEY, RecoveryExecuted(stage_id="draft", attempt=2, action="skip")),
        (7.0, JOURNEY, started("polish", 1, {"text": SECRET})),
        (7.1, JOURNEY, called("polish", 1, tool="text.format")),
        (7.3, JOURNEY, returned("polish", 1, 0.2, tool="text.format")),
        (7.4, JOURNEY, StepCompleted(stage_id="polish", attempt=1, output=SECRET, duration_s=0.4)),
        (7.5, INSPECTOR, AlertRaised(alert_id="a1", level="warning", code="OVERRUN_TIME",
                                     message="slow")),
        (9.0, JOURNEY, TaskCompleted(output=SECRET, summary="done")),
    ]
    # fmt: on
    out = [submitted]
    for seconds, actor, payload in story:
        step = f"{len(out)}/{payload.event_type}"
        out.append(out[-1].derive(payload, step=step, actor=actor, occurred_at=at(seconds)))
    return out


def started(stage_id: str, attempt: int, tool_input: dict[str, str]) -> StepStarted:
    tool = "llm.complete" if stage_id == "draft" else "text.format"
    return StepStarted(
        stage_id=stage_id,
        attempt=attempt,
        tool=tool,
        tool_version="1",
        model="gpt-x" if stage_id == "draft" else None,
        input=tool_input,
        idempotency_key=f"{stage_id}:{attempt}",
    )


def called(stage_id: str, attempt: int, tool: str = "llm.complete") -> ToolCalled:
    return ToolCalled(
        stage_id=stage_id,
        attempt=attempt,
        tool=tool,
        version="1",
        input_hash="ab" * 32,
        idempotency_key=f"{stage_id}:{attempt}",
    )


def returned(
    stage_id: str, attempt: int, seconds: float, *, tool: str = "llm.complete", error: bool = False
) -> ToolReturned:
    return ToolReturned(
        stage_id=stage_id,
        attempt=attempt,
        tool=tool,
        version="1",
        outcome="error" if error else "ok",
        duration_s=seconds,
        result=None if error else {"text": SECRET},
        error=StepError(code="TOOL_TIMEOUT", category="transient") if error else None,
        input_hash="ab" * 32,
        cost_usd=0.001,
    )
