"""The CostGuard's ledger: every usage.recorded event once, and where each budget stood
before and after it.

A usage event's row carries a ``seq``: a budget's spend before the event is the sum of the
rows of the budget's window with a smaller ``seq``. The rows of every budget a batch touches
are written under that budget's advisory lock (taken in one order, so two CostGuards never
wait on each other in a circle), so for any one budget ``seq`` order is commit order. An
event metered again (redelivered, or replayed after a crash) keeps its row and its ``seq``,
so it finds the same crossings, which the caller publishes with the same derived ids.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from events import BudgetScope, BudgetWindow, Event, Position, UsageRecorded, window_bounds

_SCOPE_COLUMN: dict[str, str] = {
    "tenant": "tenant_id",
    "user": "user_id",
    "key": "key_id",
    "task": "task_id::text",
    "model": "model",
    "playbook": "playbook",
}

_INSERT = """INSERT INTO cost_ledger (event_id, tenant_id, task_id, occurred_at, operation,
        model, provider, user_id, key_id, playbook, stage_id, role, tool, input_tokens,
        output_tokens, cached_tokens, reasoning_tokens, total_tokens, cost_usd, source,
        price_version, "partition", "offset")
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
        $19, $20, $21, $22, $23)
    ON CONFLICT (event_id) DO NOTHING"""


@dataclass(frozen=True)
class Budget:
    """A budget as the budgets read model holds it."""

    tenant_id: str
    scope: BudgetScope
    scope_id: str
    window: BudgetWindow
    thresholds: tuple[float, ...]
    hard: bool
    limit_usd: float | None = None
    limit_tokens: int | None = None

    @property
    def lock_key(self) -> str:
        """What the budget's advisory lock is taken on."""
        return f"budget:{self.tenant_id}:{self.scope}:{self.scope_id}"

    def applies_to(self, tenant_id: str, usage: UsageRecorded, task_id: uuid.UUID) -> bool:
        """Whether ``usage`` of a task of ``tenant_id`` counts against this budget."""
        if tenant_id != self.tenant_id:
            return False
        subject = {
            "tenant": tenant_id,
            "user": usage.user_id,
            "key": usage.key_id,
            "task": str(task_id),
            "model": usage.model,
            "playbook": usage.playbook,
        }[self.scope]
        return subject == self.scope_id

    def ratio(self, spent_usd: float, spent_tokens: int) -> float:
        """How far through its limit the budget is: the larger of dollars and tokens."""
        ratios = [0.0]
        if self.limit_usd:
            ratios.append(spent_usd / self.limit_usd)
        if self.limit_tokens:
            ratios.append(spent_tokens / self.limit_tokens)
        return max(ratios)

    def window_key(self, task_id: uuid.UUID, at: datetime) -> str:
        """Names the window a crossing belongs to, so each is announced once per window."""
        if self.window == "task":
            return f"task:{task_id}"
        if self.window == "hour":
            return f"hour:{at:%Y-%m-%dT%H}"
        start, _ = window_bounds(self.window, at)
        assert start is not None
        return f"{self.window}:{start:%Y-%m-%d}"


@dataclass(frozen=True)
class Spend:
    """A budget's spend in one window, before and after one usage event."""

    budget: Budget
    usage: Event
    window_start: datetime | None
    window_end: datetime | None
    before_usd: float
    before_tokens: int
    after_usd: float
    after_tokens: int

    @property
    def before(self) -> float:
        return self.budget.ratio(self.before_usd, self.before_tokens)

    @property
    def after(self) -> float:
        return self.budget.ratio(self.after_usd, self.after_tokens)

    def crossed(self) -> list[float]:
        """The thresholds (1.0 for the limit) this usage event moved the budget past."""
        lines = [*self.budget.thresholds, 1.0]
        return [line for line in lines if self.before < line <= self.after]


def budget_of(row: asyncpg.Record | dict[str, Any]) -> Budget:
    """A budgets row as a :class:`Budget`."""
    return Budget(
        tenant_id=row["tenant_id"],
        scope=row["scope"],
        scope_id=row["scope_id"],
        window=row["window"],
        thresholds=tuple(row["thresholds"]),
        hard=row["hard"],
        limit_usd=row["limit_usd"],
        limit_tokens=row["limit_tokens"],
    )


async def budgets_of(conn: asyncpg.Connection, tenants: Sequence[str]) -> list[Budget]:
    """Every budget of ``tenants``."""
    rows = await conn.fetch("SELECT * FROM budgets WHERE tenant_id = ANY($1)", list(tenants))
    return [budget_of(r) for r in rows]


async def spent(
    conn: asyncpg.Connection,
    budget: Budget,
    task_id: uuid.UUID | None,
    at: datetime,
    before_seq: int | None = None,
) -> tuple[float, int, datetime | None, datetime | None]:
    """Dollars and tokens ``budget`` counts in its window at ``at`` (for a task's-lifetime
    window, ``task_id``'s), from rows before ``before_seq`` when given; with the window's
    bounds."""
    start, end = window_bounds(budget.window, at)
    clauses = ["tenant_id = $1", f"{_SCOPE_COLUMN[budget.scope]} = $2"]
    args: list[Any] = [budget.tenant_id, budget.scope_id]
    if budget.window == "task":
        args.append(task_id)
        clauses.append(f"task_id = ${len(args)}")
    elif budget.window == "hour":
        args += [start, at]
        clauses.append(f"occurred_at > ${len(args) - 1} AND occurred_at <= ${len(args)}")
    else:
        args += [start, end]
        clauses.append(f"occurred_at >= ${len(args) - 1} AND occurred_at < ${len(args)}")
    if before_seq is not None:
        args.append(before_seq)
        clauses.append(f"seq < ${len(args)}")
    row = await conn.fetchrow(
        "SELECT COALESCE(sum(cost_usd), 0) AS usd, COALESCE(sum(total_tokens), 0) AS tokens "
        f"FROM cost_ledger WHERE {' AND '.join(clauses)}",
        *args,
    )
    assert row is not None
    return float(row["usd"]), int(row["tokens"]), start, end


async def meter(conn: asyncpg.Connection, usages: Sequence[tuple[Event, Position]]) -> list[Spend]:
    """Enter ``usages`` in the ledger (each event once) and say where every budget they
    count against stood before and after each. Runs in the caller's transaction: the caller
    publishes what the spends call for, then commits."""
    usages = [(e, p) for e, p in usages if isinstance(e.payload, UsageRecorded)]
    if not usages:
        return []
    budgets = await budgets_of(conn, sorted({e.tenant_id for e, _ in usages}))
    applying: dict[uuid.UUID, list[Budget]] = {}
    for event, _ in usages:
        payload = event.payload
        assert isinstance(payload, UsageRecorded) and event.task_id is not None
        applying[event.id] = [
            b for b in budgets if b.applies_to(event.tenant_id, payload, event.task_id)
        ]
    for key in sorted({b.lock_key for found in applying.values() for b in found}):
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", key)
    await conn.executemany(_INSERT, [_row(e, p) for e, p in usages])
    seqs = {
        r["event_id"]: r["seq"]
        for r in await conn.fetch(
            "SELECT event_id, seq FROM cost_ledger WHERE event_id = ANY($1)",
            [e.id for e, _ in usages],
        )
    }
    spends = []
    for event, _ in sorted(usages, key=lambda item: seqs[item[0].id]):
        payload = event.payload
        assert isinstance(payload, UsageRecorded)
        for budget in applying[event.id]:
            usd, tokens, start, end = await spent(
                conn, budget, event.task_id, event.occurred_at, before_seq=seqs[event.id]
            )
            spends.append(
                Spend(
                    budget=budget,
                    usage=event,
                    window_start=start,
                    window_end=end,
                    before_usd=usd,
                    before_tokens=tokens,
                    after_usd=usd + (payload.cost_usd or 0.0),
                    after_tokens=tokens + payload.total_tokens,
                )
            )
    return spends


def _row(event: Event, position: Position) -> tuple[Any, ...]:
    p = event.payload
    assert isinstance(p, UsageRecorded)
    return (
        event.id,
        event.tenant_id,
        event.task_id,
        event.occurred_at,
        p.operation,
        p.model,
        p.provider,
        p.user_id,
        p.key_id,
        p.playbook,
        p.stage_id,
        p.role,
        p.tool,
        p.input_tokens,
        p.output_tokens,
        p.cached_tokens,
        p.reasoning_tokens,
        p.total_tokens,
        p.cost_usd,
        p.source,
        p.price_version,
        position.partition,
        position.offset,
    )
