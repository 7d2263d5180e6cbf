"""processors.task_state: a task's state folded from its log by the agents' own evolve
functions, on logs the offline agents write (no broker, no database)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import pytest

from events import Actor, Event, Position, TaskSubmitted
from processors.task_state import ForeignEvent, Logged, TaskState, fold
from tests.processors.journey.test_execution import Broken, playbook, run_task, step, system


def logged(events: Sequence[Event]) -> list[Logged]:
    return [Logged(event, Position(0, offset)) for offset, event in enumerate(events)]


def as_of(events: Sequence[Event], kind: str, action: str | None = None) -> TaskState:
    """The state after the first event of ``kind`` (with the recovery ``action``)."""
    for i, event in enumerate(events):
        if event.type == kind and action in (None, getattr(event.payload, "action", None)):
            return fold(logged(events[: i + 1]))
    raise AssertionError(f"no {kind} {action or ''}")


async def test_an_escalated_stage_reads_failed_and_its_attempts_are_all_there() -> None:
    """A stage that fails every attempt: while the escalation is planned the JourneyAgent
    holds it as recovering, the state names it failed (as the read models do); once the task
    failed, the stage, its three failed attempts and their recoveries are still there, and
    the SuperAgent's fold says how the task ended."""
    driver, _ = system(Broken())
    events = await run_task(driver, {"playbook": playbook(step("fragile", "test.broken", "coder"))})

    planned = as_of(events, "recovery.planned", "escalate")
    assert planned.journey.stages["fragile"].status == "recovering"
    assert planned.stage_status("fragile") == "failed"
    assert planned.status == "running"

    end = fold(logged(events))
    assert end.status == "failed" and end.planner.closed == "task.failed"
    assert end.stage_status("fragile") == "failed"
    assert [(a.attempt, a.outcome) for a in end.stage_attempts("fragile")] == [
        (1, "failed"),
        (2, "failed"),
        (3, "failed"),
    ]
    assert all(a.error is not None and a.error.code == "TOOL_FAILED" for a in end.attempts.values())
    assert [
        (k[1], r.planned.action, r.executed is not None) for k, r in end.recoveries.items()
    ] == [
        (1, "retry", True),
        (2, "retry", True),
        (3, "escalate", True),
    ]
    assert end.events == len(events) and end.last == logged(events)[-1]


async def test_a_skipped_optional_stage_reads_failed_then_skipped() -> None:
    """An optional stage out of retries: failed while its skip is planned, skipped once it is
    carried out; the task completes with its output and summary."""
    book = playbook(
        {"id": "search", "tool": "web.search", "role": "researcher", "input": {"query": "retry"}},
        step("extra", "test.broken", "coder", optional=True),
    )
    driver, _ = system(Broken())
    events = await run_task(driver, {"playbook": book})

    assert as_of(events, "recovery.planned", "skip").stage_status("extra") == "failed"
    assert as_of(events, "recovery.executed", "skip").stage_status("extra") == "skipped"
    end = fold(logged(events))
    assert end.status == "completed" and end.output["skipped"] == ["extra"]  # type: ignore[index]
    assert end.stage_status("search") == "completed"


async def test_the_fold_refuses_another_tasks_event() -> None:
    """One task at a time: an event of another task is refused, naming both."""
    first, second = (
        Event.new(
            TaskSubmitted(description="d"),
            tenant_id="acme",
            actor=Actor(kind="user", id="u"),
            task_id=uuid.uuid4(),
        )
        for _ in range(2)
    )
    with pytest.raises(ForeignEvent, match=str(second.task_id)):
        fold(logged([first, second]))
    assert fold([]).last is None and fold([]).status == "submitted"
