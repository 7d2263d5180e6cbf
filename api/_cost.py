"""Reads of cost: budgets with their spend now, usage reports and a task's cost, from the
budgets read model and the CostGuard's ledger (each read inside the tenant's transaction)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from api.cost_models import (
    Amount,
    Budget,
    GroupBy,
    Interval,
    LlmCall,
    StageCost,
    TaskCost,
    UsageGroup,
    UsagePoint,
    UsageReport,
)
from processors.cost import spent
from processors.cost.ledger import SCOPE_COLUMN, budget_of
from processors.cost.ledger import Budget as LedgerBudget

_GROUP_COLUMN: dict[str, str] = {
    "model": "model",
    "user": "user_id",
    "key": "key_id",
    "task": "task_id::text",
    "playbook": "playbook",
    "day": "to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
}
_BUCKET: dict[str, str] = {
    "hour": "date_trunc('hour', occurred_at, 'UTC')",
    "day": "date_trunc('day', occurred_at, 'UTC')",
}
_TERMINAL = ["completed", "failed", "cancelled"]


async def list_budgets(conn: asyncpg.Connection, tenant_id: str, now: datetime) -> list[Budget]:
    """Every budget of the tenant with its spend in the window that holds ``now``."""
    rows = await conn.fetch(
        "SELECT * FROM budgets WHERE tenant_id = $1 ORDER BY scope, scope_id", tenant_id
    )
    out = []
    for row in rows:
        budget = budget_of(row)
        task_id: uuid.UUID | None = None
        if budget.window == "task" and budget.scope != "task":
            task_id = await _costliest_running_task(conn, budget)
        elif budget.scope == "task":
            task_id = _uuid(budget.scope_id)
        if budget.window == "task" and task_id is None:
            usd, tokens, start, end = 0.0, 0, None, None
        else:
            usd, tokens, start, end = await spent(conn, budget, task_id, now)
        out.append(
            Budget(
                scope=budget.scope,
                scope_id=budget.scope_id,
                limit_usd=budget.limit_usd,
                limit_tokens=budget.limit_tokens,
                window=budget.window,
                thresholds=list(budget.thresholds),
                hard=budget.hard,
                set_at=row["set_at"],
                set_by=row["set_by"],
                spent_usd=round(usd, 8),
                spent_tokens=tokens,
                ratio=round(budget.ratio(usd, tokens), 6),
                remaining_usd=None
                if budget.limit_usd is None
                else round(max(budget.limit_usd - usd, 0.0), 8),
                remaining_tokens=None
                if budget.limit_tokens is None
                else max(budget.limit_tokens - tokens, 0),
                window_start=start,
                window_end=end,
                task_id=task_id,
            )
        )
    return out


async def budget_exists(
    conn: asyncpg.Connection, tenant_id: str, scope: str, scope_id: str
) -> bool:
    """Whether the tenant has a budget for the scope (as projected)."""
    found = await conn.fetchval(
        "SELECT 1 FROM budgets WHERE tenant_id = $1 AND scope = $2 AND scope_id = $3",
        tenant_id,
        scope,
        scope_id,
    )
    return found is not None


async def _costliest_running_task(
    conn: asyncpg.Connection, budget: LedgerBudget
) -> uuid.UUID | None:
    scope_filter = "TRUE" if budget.scope == "tenant" else f"l.{SCOPE_COLUMN[budget.scope]} = $2"
    args: list[Any] = [budget.tenant_id]
    if budget.scope != "tenant":
        args.append(budget.scope_id)
    args.append(_TERMINAL)
    found = await conn.fetchval(
        f"""SELECT l.task_id FROM cost_ledger l JOIN tasks t ON t.task_id = l.task_id
        WHERE l.tenant_id = $1 AND {scope_filter} AND NOT (t.status = ANY(${len(args)}))
        GROUP BY l.task_id
        ORDER BY COALESCE(sum(l.cost_usd), 0) DESC, sum(l.total_tokens) DESC, l.task_id
        LIMIT 1""",
        *args,
    )
    return found if isinstance(found, uuid.UUID) else None


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


_SUMS = """count(*) AS calls, COALESCE(sum(input_tokens), 0) AS input_tokens,
    COALESCE(sum(output_tokens), 0) AS output_tokens,
    COALESCE(sum(cached_tokens), 0) AS cached_tokens,
    COALESCE(sum(reasoning_tokens), 0) AS reasoning_tokens,
    COALESCE(sum(total_tokens), 0) AS total_tokens,
    COALESCE(sum(cost_usd), 0) AS cost_usd,
    count(*) FILTER (WHERE cost_usd IS NULL) AS unpriced_calls,
    count(*) FILTER (WHERE source = 'estimated') AS estimated_calls"""


async def usage_report(
    conn: asyncpg.Connection,
    tenant_id: str | None,
    group_by: GroupBy,
    start: datetime | None,
    end: datetime | None,
    interval: Interval | None = None,
) -> UsageReport:
    """The tenant's usage (every tenant's for None: the platform's report) in [start, end)
    per ``group_by``, costliest first; with ``interval``, each group's and the total's
    usage per UTC hour or day too."""
    clauses: list[str] = ["TRUE"]
    args: list[Any] = []
    for condition, value in (
        ("tenant_id = ${}", tenant_id),
        ("occurred_at >= ${}", start),
        ("occurred_at < ${}", end),
    ):
        if value is not None:
            args.append(value)
            clauses.append(condition.format(len(args)))
    where = " AND ".join(clauses)
    column = _GROUP_COLUMN[group_by]
    rows = await conn.fetch(
        f"""SELECT {column} AS key, {_SUMS} FROM cost_ledger WHERE {where}
        GROUP BY 1 ORDER BY cost_usd DESC, total_tokens DESC, 1""",
        *args,
    )
    total = await conn.fetchrow(
        f"SELECT NULL::text AS key, {_SUMS} FROM cost_ledger WHERE {where}", *args
    )
    assert total is not None
    groups, overall = [_group(r) for r in rows], _group(total)
    if interval is not None:
        series, overall_series = await _series(conn, column, where, args, interval)
        groups = [g.model_copy(update={"series": series.get(g.key, [])}) for g in groups]
        overall = overall.model_copy(update={"series": overall_series})
    return UsageReport.model_validate(
        {
            "group_by": group_by,
            "interval": interval,
            "from": start,
            "to": end,
            "groups": groups,
            "total": overall,
        }
    )


async def _series(
    conn: asyncpg.Connection, column: str, where: str, args: list[Any], interval: Interval
) -> tuple[dict[str | None, list[UsagePoint]], list[UsagePoint]]:
    """Each group's usage per UTC hour or day, and the total's, oldest first: one query,
    whose grouping sets give the groups' buckets and the total's at once."""
    bucket = _BUCKET[interval]
    rows = await conn.fetch(
        f"""SELECT GROUPING({column}) = 1 AS overall, {column} AS key, {bucket} AS start,
            count(*) AS calls, COALESCE(sum(total_tokens), 0) AS total_tokens,
            COALESCE(sum(cost_usd), 0) AS cost_usd
        FROM cost_ledger WHERE {where}
        GROUP BY GROUPING SETS (({column}, {bucket}), ({bucket}))
        ORDER BY start""",
        *args,
    )
    per_group: dict[str | None, list[UsagePoint]] = {}
    overall: list[UsagePoint] = []
    for row in rows:
        point = UsagePoint(
            start=row["start"],
            calls=row["calls"],
            total_tokens=row["total_tokens"],
            cost_usd=round(float(row["cost_usd"]), 8),
        )
        (overall if row["overall"] else per_group.setdefault(row["key"], [])).append(point)
    return per_group, overall


def _group(row: asyncpg.Record) -> UsageGroup:
    values = dict(row)
    values["cost_usd"] = round(float(values["cost_usd"]), 8)
    return UsageGroup.model_validate(values)


async def task_cost(
    conn: asyncpg.Connection, tenant_id: str, task_id: uuid.UUID
) -> TaskCost | None:
    """The task's estimate against its spend, per stage and per LLM call; None when the
    tenant has no such task."""
    exists = await conn.fetchval(
        "SELECT 1 FROM tasks WHERE task_id = $1 AND tenant_id = $2", task_id, tenant_id
    )
    if exists is None:
        return None
    stages = await conn.fetch(
        "SELECT stage_id, estimate FROM task_stages WHERE task_id = $1 ORDER BY ordinal", task_id
    )
    tools = {
        r["stage_id"]: float(r["cost"])
        for r in await conn.fetch(
            """SELECT stage_id, sum(cost_usd) AS cost FROM tool_calls WHERE task_id = $1
            GROUP BY stage_id""",
            task_id,
        )
    }
    calls = [
        LlmCall.model_validate(dict(r))
        for r in await conn.fetch(
            """SELECT event_id, occurred_at, operation, stage_id, role, tool, model, provider,
                input_tokens, output_tokens, cached_tokens, reasoning_tokens, total_tokens,
                cost_usd, source, price_version
            FROM cost_ledger WHERE task_id = $1 AND tenant_id = $2 ORDER BY seq""",
            task_id,
            tenant_id,
        )
    ]
    per_stage = []
    for row in stages:
        sid, estimate = row["stage_id"], row["estimate"]
        mine = [c for c in calls if c.stage_id == sid]
        # A stage's tool calls are priced with their own LLM requests (llm.complete): only
        # the requests made about the stage besides them (error analysis, judging) add.
        others = sum(c.cost_usd or 0.0 for c in mine if c.operation != "execute")
        per_stage.append(
            StageCost(
                stage_id=sid,
                estimated=Amount(
                    tokens=int(estimate.get("tokens", 0)),
                    cost_usd=float(estimate.get("cost_usd", 0.0)),
                ),
                actual=Amount(
                    tokens=sum(c.total_tokens for c in mine),
                    cost_usd=round(tools.get(sid, 0.0) + others, 8),
                ),
            )
        )
    planning_calls = [c for c in calls if c.stage_id is None]
    planning = Amount(
        tokens=sum(c.total_tokens for c in planning_calls),
        cost_usd=round(sum(c.cost_usd or 0.0 for c in planning_calls), 8),
    )
    return TaskCost(
        task_id=task_id,
        estimated=Amount(
            tokens=sum(s.estimated.tokens for s in per_stage),
            cost_usd=round(sum(s.estimated.cost_usd for s in per_stage), 8),
        ),
        actual=Amount(
            tokens=planning.tokens + sum(s.actual.tokens for s in per_stage),
            cost_usd=round(planning.cost_usd + sum(s.actual.cost_usd for s in per_stage), 8),
        ),
        planning=planning,
        stages=per_stage,
        calls=calls,
    )
