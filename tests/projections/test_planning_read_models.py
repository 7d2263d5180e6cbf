"""The planning read models: roles, allocations, plans with their stages, and thoughts, as
the projector builds them from the log, idempotently, and as a rebuild builds them again."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from events import Event, EventProducer, PlanEstimate, PlanStage, TaskCancelled
from projections import rebuild
from tests.events.planning_samples import AGENT, PLAN, PLANNING_SECRETS, planning_events
from tests.projections.conftest import USER, archived, eventually, submitted
from wrenchai.settings import Settings

PLANNING_TABLES = ("task_roles", "task_allocations", "task_plans", "task_stages", "task_thoughts")


async def _rows(db: asyncpg.Connection, table: str) -> list[dict[str, Any]]:
    return [dict(r) for r in await db.fetch(f"SELECT * FROM {table} ORDER BY 1, 2, 3")]


async def _all_archived(db: asyncpg.Connection, count: int) -> None:
    async def done() -> bool:
        return await archived(db) == count

    await eventually(done)


async def test_a_planned_task_has_its_roles_tools_plan_and_thoughts(
    producer: EventProducer, db: asyncpg.Connection, projector: asyncio.Task[None]
) -> None:
    """Every planning event lands in its table, in the order the event gives, and the plan
    sets the task running."""
    first = submitted()
    events = [first, *planning_events(first)]
    await producer.publish_many(events)
    await _all_archived(db, len(events))

    roles = await db.fetch(
        "SELECT * FROM task_roles WHERE task_id = $1 ORDER BY ordinal", first.task_id
    )
    assert [(r["name"], r["depends_on"]) for r in roles] == [
        ("researcher", []),
        ("writer", ["researcher"]),
    ]
    assert roles[0]["reason"] == "the task asks to find figures" and roles[0]["score"] == 0.82
    tools = await db.fetch(
        "SELECT * FROM task_allocations WHERE task_id = $1 ORDER BY role, ordinal", first.task_id
    )
    assert [(t["role"], t["tool"], t["version"], t["alternatives"]) for t in tools] == [
        ("researcher", "web.search", "1.2.0", ["docs.search"]),
        ("writer", "llm.generate", "1.0.0", []),
    ]
    plan = await db.fetchrow("SELECT * FROM task_plans WHERE task_id = $1", first.task_id)
    assert plan["playbook"] == "research_report"
    assert plan["total"] == PLAN.total.model_dump(mode="json")
    assert plan["critical_path_seconds"] == 25.0
    stages = await db.fetch(
        "SELECT * FROM task_stages WHERE task_id = $1 ORDER BY ordinal", first.task_id
    )
    assert [(s["stage_id"], s["depends_on"], s["inputs"], s["status"]) for s in stages] == [
        ("search", [], [], "pending"),
        ("write", ["search"], ["search"], "pending"),
    ]
    # The read model holds the decrypted content, as the plan was made.
    assert stages[0]["tool_input"] == {"query": PLANNING_SECRETS[0]}
    assert stages[0]["fallbacks"][0] == PLAN.stages[0].fallbacks[0].model_dump(mode="json")
    assert stages[1]["estimate"] == PLAN.stages[1].estimate.model_dump(mode="json")
    assert stages[1]["optional"] is True and stages[1]["model"] == "gpt-4o-mini"
    thoughts = await db.fetch(
        'SELECT * FROM task_thoughts WHERE task_id = $1 ORDER BY partition, "offset"',
        first.task_id,
    )
    assert [(t["operation"], t["number"], t["revises"], t["branch"]) for t in thoughts] == [
        ("assign_roles", 1, None, None),
        ("plan", 1, None, None),
        ("plan", 2, 1, None),
        ("plan", 3, None, "no-search"),
    ]
    assert thoughts[1]["text"] == PLANNING_SECRETS[1] and thoughts[3]["stage_id"] == "write"
    task = await db.fetchrow("SELECT * FROM tasks WHERE task_id = $1", first.task_id)
    plan_event = events[-1]
    assert task["status"] == "running" and task["last_event_id"] == plan_event.id


async def test_a_redelivered_or_second_plan_leaves_one_plan(
    producer: EventProducer, db: asyncpg.Connection, projector: asyncio.Task[None]
) -> None:
    """The same plan.created twice is applied once; a different plan for the same task adds
    nothing: not a second plan row, not a stage mixed into the first plan."""
    first = submitted()
    plan = first.derive(PLAN, step="plan", actor=AGENT)
    other = first.derive(
        PLAN.model_copy(
            update={
                "playbook": "other",
                "stages": [
                    PlanStage(
                        id="extra",
                        role="coder",
                        tools=["code.python"],
                        tool_version="1.0.0",
                        timeout=60,
                        estimate=PlanEstimate(),
                    )
                ],
            }
        ),
        step="plan-again",
        actor=AGENT,
    )
    await producer.publish_many([first, plan, plan, other])
    await _all_archived(db, 4)

    assert await db.fetchval("SELECT count(*) FROM task_plans") == 1
    assert await db.fetchval("SELECT playbook FROM task_plans") == "research_report"
    stage_ids = await db.fetch("SELECT stage_id FROM task_stages ORDER BY ordinal")
    assert [r["stage_id"] for r in stage_ids] == ["search", "write"]
    assert await db.fetchval("SELECT status FROM tasks") == "running"


async def test_a_second_roles_or_tools_event_adds_no_rows(
    producer: EventProducer, db: asyncpg.Connection, projector: asyncio.Task[None]
) -> None:
    """The first roles.assigned and tools.allocated of a task win whole."""
    first = submitted()
    roles, tools = planning_events(first)[4:6]
    again_roles = first.derive(roles.payload, step="roles-again", actor=AGENT)
    again_tools = first.derive(tools.payload, step="tools-again", actor=AGENT)
    await producer.publish_many([first, roles, tools, again_roles, again_tools])
    await _all_archived(db, 5)

    assert await db.fetchval("SELECT count(DISTINCT event_id) FROM task_roles") == 1
    assert await db.fetchval("SELECT count(*) FROM task_roles") == 2
    assert await db.fetchval("SELECT count(DISTINCT event_id) FROM task_allocations") == 1
    assert await db.fetchval("SELECT count(*) FROM task_allocations") == 2


async def test_a_plan_after_a_cancel_leaves_the_task_cancelled(
    producer: EventProducer, db: asyncpg.Connection, projector: asyncio.Task[None]
) -> None:
    """Only a submitted task starts running on its plan; an ended one stays as it ended."""
    first = submitted()
    cancel = first.derive(TaskCancelled(reason="changed my mind"), step="cancel", actor=USER)
    await producer.publish_many([first, cancel, first.derive(PLAN, step="plan", actor=AGENT)])
    await _all_archived(db, 3)

    assert await db.fetchval("SELECT status FROM tasks") == "cancelled"
    assert await db.fetchval("SELECT last_event_id FROM tasks") == cancel.id


async def test_rebuild_gives_the_planning_tables_the_projector_built(
    settings: Settings,
    producer: EventProducer,
    db: asyncpg.Connection,
    projector: asyncio.Task[None],
) -> None:
    """Replaying the log into fresh tables reproduces every planning row, redeliveries
    included; the swapped-in tables keep their index names."""
    events: list[Event] = []
    for i in range(4):
        first = submitted(f"task number {i}", tenant_id="acme" if i % 2 else "globex")
        events += [first, *planning_events(first)]
    await producer.publish_many(events)
    await producer.publish(events[-1])  # a redelivered plan
    await _all_archived(db, len(events) + 1)
    before = {table: await _rows(db, table) for table in ("tasks", *PLANNING_TABLES)}
    assert len(before["task_plans"]) == 4 and len(before["task_thoughts"]) == 16

    report = await rebuild(settings)
    assert report.skipped == 1
    assert {table: await _rows(db, table) for table in before} == before
    indexes = {
        r["indexname"]
        for r in await db.fetch(
            "SELECT indexname FROM pg_indexes WHERE tablename = ANY($1::text[])",
            list(PLANNING_TABLES),
        )
    }
    assert {"task_stages_order_idx", "task_thoughts_log_idx", "task_plans_pkey"} <= indexes
