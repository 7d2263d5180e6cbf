"""The execution read models: stages moved through their attempts, tool calls, recoveries,
progress and tool statistics, as the projector builds them from the log, idempotently, and
as a rebuild builds them again."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from events import Event, EventProducer, Position, StepError
from projections import rebuild
from projections._read_model_types import Applied
from projections._read_models import apply_all
from tests.events.execution_samples import (
    RESULT_SECRET,
    SEARCH_TIMEOUT,
    SUMMARY,
    TASK_TYPE,
    WRITE_DOWN,
    Story,
    executed_task,
    search_retried,
)
from tests.events.planning_samples import planning_events
from tests.projections.conftest import archived, eventually, submitted
from wrenchai.settings import Settings

EXECUTION_TABLES = ("task_stages", "tool_calls", "task_recoveries", "tool_stats", "tasks")


async def _all_archived(db: asyncpg.Connection, count: int) -> None:
    async def done() -> bool:
        return await archived(db) == count

    await eventually(done)


async def _stage(db: asyncpg.Connection, stage_id: str) -> dict[str, Any]:
    row = await db.fetchrow("SELECT * FROM task_stages WHERE stage_id = $1", stage_id)
    assert row is not None
    return dict(row)


async def test_a_retried_stage_goes_failed_recovering_running_completed(
    producer: EventProducer, db: asyncpg.Connection, projector: asyncio.Task[None]
) -> None:
    """The search stage shows each state of its retry as the events arrive: running, failed
    with the error, recovering once a retry is planned, running again on attempt 2, and
    completed with that attempt's duration; started_at stays the first start."""
    first = submitted()
    story = Story(first)
    search_retried(story)
    events = story.events
    sent = [first, *planning_events(first)]
    await producer.publish_many(sent)
    seen = []
    # started, called+returned+failed, planned, executed+started, called+returned+completed
    for chunk in (events[0:1], events[1:4], events[4:5], events[5:7], events[7:10]):
        sent += chunk
        await producer.publish_many(chunk)
        await _all_archived(db, len(sent))
        row = await _stage(db, "search")
        seen.append((row["status"], row["attempts"]))
    assert seen == [
        ("running", 1),
        ("failed", 1),
        ("recovering", 1),
        ("running", 2),
        ("completed", 2),
    ]
    row = await _stage(db, "search")
    assert row["started_at"] == events[0].occurred_at
    assert row["completed_at"] == events[-1].occurred_at and row["duration_s"] == 2.5
    assert (row["last_tool"], row["last_tool_version"], row["last_model"]) == (
        "web.search",
        "1.2.0",
        None,
    )
    # The latest failure is kept after the retry succeeded, without its transient flag.
    assert row["last_error"] == {
        "code": SEARCH_TIMEOUT.code,
        "message": SEARCH_TIMEOUT.message,
        "category": "transient",
    }
    assert row["last_event_id"] == events[-1].id and row["tenant_id"] == first.tenant_id
    assert (await _stage(db, "write"))["status"] == "pending"


async def test_a_whole_execution_fills_every_execution_table(
    producer: EventProducer, db: asyncpg.Connection, projector: asyncio.Task[None]
) -> None:
    """Search retried then completed, the optional write stage skipped, progress and the
    summary on the task, one tool_calls row per tool.returned with no result content, one
    recovery per failed attempt with when it was carried out, and the tool statistics."""
    first = submitted()
    events = executed_task(first)
    positions = await producer.publish_many(events)
    await _all_archived(db, len(events))

    write = await _stage(db, "write")
    assert (write["status"], write["attempts"], write["last_model"]) == (
        "skipped",
        1,
        "gpt-4o-mini",
    )
    assert write["last_error"]["code"] == WRITE_DOWN.code and write["completed_at"] is None
    calls = await db.fetch('SELECT * FROM tool_calls ORDER BY partition, "offset"')
    assert [(c["stage_id"], c["attempt"], c["outcome"], c["error_code"]) for c in calls] == [
        ("search", 1, "error", "TOOL_TIMEOUT"),
        ("search", 2, "ok", None),
        ("write", 1, "error", "LLM_UNAVAILABLE"),
    ]
    returned = [e for e in events if e.type == "tool.returned"]
    assert [c["event_id"] for c in calls] == [e.id for e in returned]
    assert {c["task_type"] for c in calls} == {TASK_TYPE}
    assert (
        Position(calls[0]["partition"], calls[0]["offset"]) == positions[events.index(returned[0])]
    )
    # No column holds the tool's result.
    assert all(RESULT_SECRET not in str(dict(c)) for c in calls)
    recoveries = await db.fetch("SELECT * FROM task_recoveries ORDER BY stage_id")
    assert [
        (r["stage_id"], r["attempt"], r["action"], r["delay_s"], r["next_attempt"])
        for r in recoveries
    ] == [("search", 1, "retry", 1.0, 2), ("write", 1, "skip", 0.0, None)]
    assert recoveries[0]["suggestion"] == "narrow the query"
    assert recoveries[0]["executed_at"] == recoveries[0]["planned_at"] + timedelta(seconds=1)
    task = await db.fetchrow("SELECT * FROM tasks")
    assert task["status"] == "completed" and task["summary"] == SUMMARY
    assert (task["stages_done"], task["stages_total"], task["tokens"]) == (2, 2, 120)
    assert task["cost_usd"] == 0.0015 and task["estimated_s"] == 25.0
    assert task["last_event_id"] == events[-1].id
    stats = await db.fetch("SELECT * FROM tool_stats ORDER BY tool")
    assert [
        (s["tenant_id"], s["tool"], s["task_type"], s["calls"], s["successes"], s["failures"])
        for s in stats
    ] == [
        ("acme", "llm.generate", TASK_TYPE, 1, 0, 1),
        ("acme", "web.search", TASK_TYPE, 2, 1, 1),
    ]
    assert stats[1]["total_duration_s"] == Decimal("7") and stats[1]["total_cost_usd"] == Decimal(
        "0.001"
    )
    assert stats[1]["last_called_at"] == returned[1].occurred_at


async def test_a_redelivered_tool_returned_counts_once(
    producer: EventProducer, db: asyncpg.Connection, projector: asyncio.Task[None]
) -> None:
    """The same tool.returned twice on the log is one call in tool_calls and tool_stats."""
    first = submitted()
    story = Story(first)
    returned = story.call("search", 1, "web.search", "1.2.0", duration_s=1.5)
    await producer.publish_many([first, *story.events, returned])
    await _all_archived(db, 4)

    assert await db.fetchval("SELECT count(*) FROM tool_calls") == 1
    row = await db.fetchrow("SELECT * FROM tool_stats")
    assert (row["calls"], row["successes"], row["total_duration_s"]) == (1, 1, Decimal("1.5"))


async def test_reused_results_and_refusals_are_not_calls_of_the_tool(
    producer: EventProducer, db: asyncpg.Connection, projector: asyncio.Task[None]
) -> None:
    """As in the agents' statistics, a cached result and a circuit-breaker refusal are
    counted apart from the calls that ran the tool, and add no duration or cost; tool_calls
    keeps every one of them."""
    first = submitted()
    story = Story(first)
    story.call("search", 1, "web.search", "1.2.0", duration_s=2.0, cost_usd=0.5)
    story.call("search", 2, "web.search", "1.2.0", cached=True, duration_s=0.25)
    refusal = StepError(code="CIRCUIT_OPEN", message="web.search is cooling down")
    story.call("search", 3, "web.search", "1.2.0", error=refusal, duration_s=0.0)
    await producer.publish_many([first, *story.events])
    await _all_archived(db, 1 + len(story.events))

    assert await db.fetchval("SELECT count(*) FROM tool_calls") == 3
    row = dict(await db.fetchrow("SELECT * FROM tool_stats"))
    assert {k: row[k] for k in ("calls", "successes", "failures", "cached", "refused")} == {
        "calls": 1,
        "successes": 1,
        "failures": 0,
        "cached": 1,
        "refused": 1,
    }
    assert (row["total_duration_s"], row["total_cost_usd"]) == (Decimal("2"), Decimal("0.5"))
    assert row["last_called_at"] == story.events[-1].occurred_at


async def test_applying_the_execution_events_twice_changes_nothing(
    db: asyncpg.Connection,
) -> None:
    """Without the projector's dedupe, every execution statement is still idempotent: the
    statistics move with the call's row, and a stage moves only on its latest attempt."""
    first = submitted()
    events = executed_task(first)
    applied = [Applied(e, Position(0, i)) for i, e in enumerate(events)]
    await apply_all(db, applied)
    before = {t: await _rows(db, t) for t in EXECUTION_TABLES}
    await apply_all(db, applied)
    await apply_all(db, applied[len(events) // 2 :])
    assert {t: await _rows(db, t) for t in EXECUTION_TABLES} == before


async def test_each_tenant_has_its_own_tool_statistics(
    producer: EventProducer, db: asyncpg.Connection, projector: asyncio.Task[None]
) -> None:
    """Calls of the same tool for the same task type in two tenants count apart; a call that
    names no task type counts under ''."""
    ours, theirs = submitted(tenant_id="acme"), submitted(tenant_id="globex")
    story_ours, story_theirs = Story(ours), Story(theirs)
    story_ours.call("search", 1, "web.search", "1.2.0")
    story_ours.call("search", 2, "web.search", "1.2.0", task_type=None)
    story_theirs.call("search", 1, "web.search", "1.2.0", error=SEARCH_TIMEOUT)
    events = [ours, theirs, *story_ours.events, *story_theirs.events]
    await producer.publish_many(events)
    await _all_archived(db, len(events))

    rows = await db.fetch("SELECT * FROM tool_stats ORDER BY tenant_id, task_type")
    assert [(r["tenant_id"], r["task_type"], r["calls"], r["failures"]) for r in rows] == [
        ("acme", "", 1, 0),
        ("acme", TASK_TYPE, 1, 0),
        ("globex", TASK_TYPE, 1, 1),
    ]


async def _rows(db: asyncpg.Connection, table: str) -> list[dict[str, Any]]:
    return [dict(r) for r in await db.fetch(f"SELECT * FROM {table} ORDER BY 1, 2, 3")]


async def test_rebuild_gives_the_execution_tables_the_projector_built(
    settings: Settings,
    producer: EventProducer,
    db: asyncpg.Connection,
    projector: asyncio.Task[None],
) -> None:
    """Replaying the log into fresh tables reproduces every execution row, statistics summed
    over tasks on several partitions included, with a redelivered tool.returned."""
    events: list[Event] = []
    for i in range(4):
        first = submitted(f"task number {i}", tenant_id="acme" if i % 2 else "globex")
        events += executed_task(first)
    returned = next(e for e in events if e.type == "tool.returned")
    await producer.publish_many(events)
    await producer.publish(returned)
    await _all_archived(db, len(events) + 1)
    before = {t: await _rows(db, t) for t in EXECUTION_TABLES}
    assert len(before["tool_calls"]) == 12 and len(before["task_recoveries"]) == 8
    assert sum(r["calls"] for r in before["tool_stats"]) == 12

    report = await rebuild(settings)

    assert report.skipped == 1
    assert {"task_recoveries", "tool_calls", "tool_stats"} <= set(report.tables)
    assert {t: await _rows(db, t) for t in EXECUTION_TABLES} == before
    constraint = await db.fetchval(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conname = 'task_stages_status_check'"
    )
    assert "recovering" in constraint
