"""Queries on the execution read models: steps, tool calls, recoveries, progress and tool
statistics.

Every query takes the tenant, as in api._readmodels: a row of another tenant is as absent as
a row that never was.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from api.models import (
    ObservedStats,
    Progress,
    Recovery,
    Step,
    StepDetail,
    TaskTypeStats,
    ToolCall,
    ToolStats,
)
from events import Position


async def fetch_steps(conn: asyncpg.Connection, tenant_id: str, task_id: uuid.UUID) -> list[Step]:
    """The task's steps in plan order; empty before it is planned."""
    rows = await conn.fetch(
        """SELECT stage_id, role, optional, status, attempts, last_tool AS tool,
               last_tool_version AS tool_version, last_model AS model, started_at,
               completed_at, duration_s, last_error AS error
           FROM task_stages WHERE task_id = $1 AND tenant_id = $2 ORDER BY ordinal""",
        task_id,
        tenant_id,
    )
    return [Step.model_validate(dict(row)) for row in rows]


async def fetch_step_details(
    conn: asyncpg.Connection, tenant_id: str, task_id: uuid.UUID
) -> list[StepDetail]:
    """The task's steps in plan order, each with its tool calls and recoveries."""
    steps = await fetch_steps(conn, tenant_id, task_id)
    calls = await conn.fetch(
        """SELECT stage_id, attempt, tool, version, outcome, duration_s, cached, error_code,
               cost_usd, occurred_at, partition, "offset"
           FROM tool_calls WHERE task_id = $1 AND tenant_id = $2 ORDER BY partition, "offset"
        """,
        task_id,
        tenant_id,
    )
    recoveries = await conn.fetch(
        """SELECT stage_id, attempt, category, action, reason, delay_s, tool, model, suggestion,
               planned_at, executed_at, next_attempt
           FROM task_recoveries WHERE task_id = $1 AND tenant_id = $2 ORDER BY attempt""",
        task_id,
        tenant_id,
    )
    calls_of: dict[str, list[ToolCall]] = {}
    for row in calls:
        calls_of.setdefault(row["stage_id"], []).append(_tool_call(row))
    recoveries_of: dict[str, list[Recovery]] = {}
    for row in recoveries:
        fields = {k: v for k, v in row.items() if k != "stage_id"}
        recoveries_of.setdefault(row["stage_id"], []).append(
            Recovery.model_validate({**fields, "executed": row["executed_at"] is not None})
        )
    return [
        StepDetail(
            **step.model_dump(),
            tool_calls=calls_of.get(step.stage_id, []),
            recoveries=recoveries_of.get(step.stage_id, []),
        )
        for step in steps
    ]


def _tool_call(row: Mapping[str, Any]) -> ToolCall:
    fields = {k: v for k, v in row.items() if k not in ("stage_id", "partition", "offset")}
    return ToolCall(**fields, position=str(Position(row["partition"], row["offset"])))


async def fetch_progress(
    conn: asyncpg.Connection, tenant_id: str, task_id: uuid.UUID
) -> tuple[Progress | None, str | None]:
    """The task's progress (None before the first progress.updated) and its summary."""
    row = await conn.fetchrow(
        """SELECT stages_done, stages_total, elapsed_s, estimated_s, tokens, cost_usd, summary
           FROM tasks WHERE task_id = $1 AND tenant_id = $2""",
        task_id,
        tenant_id,
    )
    if row is None:
        return None, None
    progress = None
    if row["stages_total"] is not None:
        progress = Progress.model_validate({k: v for k, v in row.items() if k != "summary"})
    return progress, row["summary"]


async def fetch_tool_stats(conn: asyncpg.Connection, tenant_id: str) -> dict[str, ObservedStats]:
    """Each called tool's statistics over the tenant, with the breakdown by task type."""
    rows = await conn.fetch(
        """SELECT tool, task_type, calls, successes, failures, cached, refused,
               total_duration_s, total_cost_usd, last_called_at
           FROM tool_stats WHERE tenant_id = $1 ORDER BY tool, task_type""",
        tenant_id,
    )
    by_tool: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_tool.setdefault(row["tool"], []).append(row)
    return {tool: _observed(tool_rows) for tool, tool_rows in by_tool.items()}


def no_calls() -> ObservedStats:
    """The statistics of a tool the tenant never called."""
    return _observed([])


def _observed(rows: Iterable[Mapping[str, Any]]) -> ObservedStats:
    rows = list(rows)
    total = _stats(rows)
    return ObservedStats(
        **total.model_dump(),
        by_task_type=[
            TaskTypeStats(**_stats([row]).model_dump(), task_type=row["task_type"] or None)
            for row in rows
        ],
    )


def _stats(rows: list[Mapping[str, Any]]) -> ToolStats:
    """Sums of tool_stats rows, and the rates and reliability they give."""
    calls = sum(int(r["calls"]) for r in rows)
    successes = sum(int(r["successes"]) for r in rows)
    duration = sum((Decimal(r["total_duration_s"]) for r in rows), Decimal(0))
    cost = sum((Decimal(r["total_cost_usd"]) for r in rows), Decimal(0))
    last: datetime | None = max((r["last_called_at"] for r in rows), default=None)
    return ToolStats(
        calls=calls,
        successes=successes,
        failures=sum(int(r["failures"]) for r in rows),
        cached=sum(int(r["cached"]) for r in rows),
        refused=sum(int(r["refused"]) for r in rows),
        success_rate=successes / calls if calls else None,
        mean_duration_s=float(duration / calls) if calls else None,
        cost_usd=float(cost),
        # The Beta(1, 1) prior of tool allocation (processors.tools.NEUTRAL_PRIOR), updated
        # with every call: a tool never called is a coin flip, not a certainty.
        reliability=(1 + successes) / (2 + calls),
        last_called_at=last,
    )
