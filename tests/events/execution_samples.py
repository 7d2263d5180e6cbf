"""Execution events shared by the projections and API tests, derived from the two-stage plan
of planning_samples: the search stage fails once on a timeout and succeeds on its retry; the
optional write stage fails on its tool and is skipped; the task then completes.

Every event is derived from the submitted one (deterministic ids) and one second after the
one before it, so tests can name each event's time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from events import (
    Actor,
    Event,
    EventPayload,
    ProgressUpdated,
    RecoveryAction,
    RecoveryExecuted,
    RecoveryPlanned,
    StepCompleted,
    StepError,
    StepFailed,
    StepStarted,
    TaskCompleted,
    ToolCalled,
    ToolReturned,
)
from tests.events.planning_samples import PLAN, SEARCH, WRITE, planning_events

JOURNEY = Actor(kind="agent", id="journey_agent")
INSPECTOR = Actor(kind="agent", id="inspector_agent")

TASK_TYPE = PLAN.playbook or "research_report"
# User content that the tool_calls rows and the steps API must never hold.
RESULT_SECRET = "churn doubled to 7.4% in Q3 per the board minutes"

SEARCH_TIMEOUT = StepError(
    code="TOOL_TIMEOUT", message="web.search gave no answer in 5 s", category="transient"
)
WRITE_DOWN = StepError(
    code="LLM_UNAVAILABLE", message="the LLM server refused the connection", category="tool_error"
)
SUMMARY = "churn report: three sources, no written section"


@dataclass
class Story:
    """Events of one task's execution, timed one second apart after its cause."""

    cause: Event
    events: list[Event] = field(default_factory=list)

    def add(self, payload: EventPayload, step: str, actor: Actor = JOURNEY) -> Event:
        """Append the event ``step`` derives from the cause, a second after the last one."""
        at = self.cause.occurred_at + timedelta(seconds=len(self.events) + 1)
        event = self.cause.derive(payload, step=step, actor=actor, occurred_at=at)
        self.events.append(event)
        return event

    def started(
        self, stage: str, attempt: int, tool: str, version: str, model: str | None = None
    ) -> Event:
        return self.add(
            StepStarted(
                stage_id=stage,
                attempt=attempt,
                tool=tool,
                tool_version=version,
                model=model,
                input={"secret": RESULT_SECRET},
                idempotency_key=f"{self.cause.task_id}:{stage}:{attempt}",
            ),
            f"step:{stage}:{attempt}:started",
        )

    def call(
        self,
        stage: str,
        attempt: int,
        tool: str,
        version: str,
        *,
        error: StepError | None = None,
        duration_s: float = 1.0,
        cached: bool = False,
        cost_usd: float = 0.0,
        task_type: str | None = TASK_TYPE,
    ) -> Event:
        """tool.called, then the tool.returned it gave; returns the tool.returned."""
        key = f"{self.cause.task_id}:{stage}:{attempt}"
        self.add(
            ToolCalled(
                stage_id=stage,
                attempt=attempt,
                tool=tool,
                version=version,
                input_hash="ab" * 32,
                idempotency_key=key,
            ),
            f"step:{stage}:{attempt}:called",
        )
        return self.add(
            ToolReturned(
                stage_id=stage,
                attempt=attempt,
                tool=tool,
                version=version,
                outcome="error" if error else "ok",
                duration_s=duration_s,
                result=None if error else {"text": RESULT_SECRET},
                error=error,
                cached=cached,
                input_hash="ab" * 32,
                task_type=task_type,
                cost_usd=cost_usd,
            ),
            f"step:{stage}:{attempt}:returned",
        )

    def completed(self, stage: str, attempt: int, duration_s: float) -> Event:
        return self.add(
            StepCompleted(
                stage_id=stage,
                attempt=attempt,
                output={"text": RESULT_SECRET},
                duration_s=duration_s,
            ),
            f"step:{stage}:{attempt}:completed",
        )

    def failed(self, stage: str, attempt: int, error: StepError, duration_s: float) -> Event:
        return self.add(
            StepFailed(stage_id=stage, attempt=attempt, error=error, duration_s=duration_s),
            f"step:{stage}:{attempt}:failed",
        )

    def recovery(
        self,
        stage: str,
        attempt: int,
        error: StepError,
        action: RecoveryAction,
        *,
        reason: str,
        delay_s: float = 0.0,
        tool: str | None = None,
        model: str | None = None,
        suggestion: str | None = None,
        next_attempt: int | None = None,
    ) -> tuple[Event, Event]:
        """recovery.planned and recovery.executed for a failed attempt."""
        planned = self.add(
            RecoveryPlanned(
                stage_id=stage,
                attempt=attempt,
                category=error.category,
                action=action,
                reason=reason,
                delay_s=delay_s,
                tool=tool,
                model=model,
                suggestion=suggestion,
            ),
            f"step:{stage}:{attempt}:recovery",
        )
        executed = self.add(
            RecoveryExecuted(
                stage_id=stage, attempt=attempt, action=action, next_attempt=next_attempt
            ),
            f"step:{stage}:{attempt}:recovered",
        )
        return planned, executed

    def progress(self, done: int, *, skipped: int = 0, tokens: int = 0, cost: float = 0.0) -> Event:
        elapsed = float(len(self.events) + 1)
        return self.add(
            ProgressUpdated(
                stages_done=done,
                stages_total=len(PLAN.stages),
                stages_skipped=skipped,
                elapsed_s=elapsed,
                estimated_s=PLAN.total.seconds,
                tokens=tokens,
                estimated_tokens=PLAN.total.tokens,
                cost_usd=cost,
                estimated_cost_usd=PLAN.total.cost_usd,
            ),
            f"progress:{done}:{skipped}",
            actor=INSPECTOR,
        )


def search_retried(story: Story) -> None:
    """The search stage: a timeout on attempt 1, a planned and executed retry, success on 2."""
    tool, version = SEARCH.tools[0], SEARCH.tool_version
    story.started("search", 1, tool, version)
    story.call("search", 1, tool, version, error=SEARCH_TIMEOUT, duration_s=5.0)
    story.failed("search", 1, SEARCH_TIMEOUT, duration_s=5.25)
    story.recovery(
        "search",
        1,
        SEARCH_TIMEOUT,
        "retry",
        reason="a timeout is transient: retry after a backoff",
        delay_s=1.0,
        suggestion="narrow the query",
        next_attempt=2,
    )
    story.started("search", 2, tool, version)
    story.call("search", 2, tool, version, duration_s=2.0, cost_usd=0.001)
    story.completed("search", 2, duration_s=2.5)


def write_skipped(story: Story) -> None:
    """The optional write stage: its LLM is down, and the stage is skipped."""
    tool, version = WRITE.tools[0], WRITE.tool_version
    story.started("write", 1, tool, version, model=WRITE.model)
    story.call("write", 1, tool, version, error=WRITE_DOWN, duration_s=0.5)
    story.failed("write", 1, WRITE_DOWN, duration_s=0.75)
    story.recovery(
        "write", 1, WRITE_DOWN, "skip", reason="the stage is optional: skip it", next_attempt=None
    )


def execution_story(submitted: Event) -> Story:
    """The whole execution of the planned task: search retried, write skipped, completed."""
    story = Story(submitted)
    search_retried(story)
    story.progress(1, tokens=0, cost=0.001)
    write_skipped(story)
    story.progress(2, skipped=1, tokens=120, cost=0.0015)
    story.add(TaskCompleted(output={"report": RESULT_SECRET}, summary=SUMMARY), "completed")
    return story


def executed_task(submitted: Event) -> list[Event]:
    """Submission, planning and the whole execution of one task, in log order."""
    return [submitted, *planning_events(submitted), *execution_story(submitted).events]
