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

SCOPE_COLUMN: dict[str, str] = {  # the ledger's column each budget scope names
    "tenant": "tenant_id",
    "user": "user_id",
    "key": "key_id",
    "task": "task_id::text",
    "model": "model",
    "playbook": "playbook",
}

_LEDGER_TYPES = (
    "uuid", "text", "uuid", "timestamptz", "text", "text", "text", "text", "text", "text",
    "text", "text", "text", "bigint", "bigint", "bigint", "bigint", "bigint",
    "double precision", "text", "text", "integer", "bigint",
)  # fmt: skip
# One statement per batch, the rows as arrays: the ledger grows by a batch at a time.
_INSERT_MANY = f"""INSERT INTO cost_ledger (event_id, tenant_id, task_id, occurred_at,
        operation, model, provider, user_id, key_id, playbook, stage_id, role, tool,
        input_tokens, output_tokens, cached_tokens, reasoning_tokens, total_tokens, cost_usd,
        source, price_version, "partition", "offset")
    SELECT * FROM unnest({", ".join(f"${i}::{t}[]" for i, t in enumerate(_LEDGER_TYPES, 1))})
    ORDER BY 4, 1
    ON CONFLICT (event_id) DO NOTHING"""


def _columns(rows: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    """Rows as one list per column, for unnest."""
    return [list(column) for column in zip(*rows, strict=True)]


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
    clauses = ["tenant_id = $1", f"{SCOPE_COLUMN[budget.scope]} = $2"]
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
    publishes what the spends call for, then commits.

    A day's or a month's spend is kept running in ``budget_spend`` (started from the ledger
    the first time a window is met), so metering costs the same on the first day of a month
    as on its last; a task's lifetime and a rolling hour are summed from the ledger's index.
    An event already in the ledger takes where each budget stood from ``ledger_spends``."""
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
    for lock in sorted({b.lock_key for found in applying.values() for b in found}):
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", lock)
    fresh = {
        r["event_id"]: r["seq"]
        for r in await conn.fetch(
            f"""WITH added AS ({_INSERT_MANY} RETURNING event_id, seq)
            SELECT event_id, seq FROM added""",
            *_columns([_row(e, p) for e, p in usages]),
        )
    }
    seqs = {
        r["event_id"]: r["seq"]
        for r in await conn.fetch(
            "SELECT event_id, seq FROM cost_ledger WHERE event_id = ANY($1)",
            [e.id for e, _ in usages],
        )
    }
    known = await _known_spends(conn, [e.id for e, _ in usages if e.id not in fresh])
    running = _Running(conn)
    spends: list[Spend] = []
    recorded: list[tuple[Any, ...]] = []
    for event, _ in sorted(usages, key=lambda item: seqs[item[0].id]):
        payload = event.payload
        assert isinstance(payload, UsageRecorded) and event.task_id is not None
        for budget in applying[event.id]:
            start, end = window_bounds(budget.window, event.occurred_at)
            key = (event.id, budget.scope, budget.scope_id, budget.window)
            if key in known:
                usd, tokens = known[key]
            elif event.id not in fresh:
                # Counted before this budget existed: where it stood is read as of its row.
                usd, tokens, _, _ = await spent(
                    conn, budget, event.task_id, event.occurred_at, before_seq=seqs[event.id]
                )
            elif budget.window in ("day", "month"):
                assert start is not None
                usd, tokens = await running.before(budget, start, seqs[event.id])
            else:
                usd, tokens, _, _ = await spent(
                    conn, budget, event.task_id, event.occurred_at, before_seq=seqs[event.id]
                )
            amount_usd, amount_tokens = payload.cost_usd or 0.0, payload.total_tokens
            if event.id in fresh:
                if budget.window in ("day", "month"):
                    assert start is not None
                    running.add(budget, start, amount_usd, amount_tokens, seqs[event.id])
                recorded.append((event.id, *key[1:], event.tenant_id, usd, tokens))
            spends.append(
                Spend(
                    budget=budget,
                    usage=event,
                    window_start=start,
                    window_end=end,
                    before_usd=usd,
                    before_tokens=tokens,
                    after_usd=usd + amount_usd,
                    after_tokens=tokens + amount_tokens,
                )
            )
    if recorded:
        await conn.executemany(
            """INSERT INTO ledger_spends (event_id, scope, scope_id, "window", tenant_id,
                before_usd, before_tokens)
            VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING""",
            recorded,
        )
    await running.save()
    return spends


async def _known_spends(
    conn: asyncpg.Connection, event_ids: Sequence[uuid.UUID]
) -> dict[tuple[uuid.UUID, str, str, str], tuple[float, int]]:
    if not event_ids:
        return {}
    rows = await conn.fetch(
        """SELECT event_id, scope, scope_id, "window", before_usd, before_tokens
        FROM ledger_spends WHERE event_id = ANY($1)""",
        list(event_ids),
    )
    return {
        (r["event_id"], r["scope"], r["scope_id"], r["window"]): (
            r["before_usd"],
            r["before_tokens"],
        )
        for r in rows
    }


class _Running:
    """The running spend of day and month windows within one metering transaction: read
    (or started from the ledger) once, added to in memory, saved at the end."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.spend: dict[tuple[str, str, str, str, datetime], list[Any]] = {}

    @staticmethod
    def _key(budget: Budget, start: datetime) -> tuple[str, str, str, str, datetime]:
        return (budget.tenant_id, budget.scope, budget.scope_id, budget.window, start)

    async def before(self, budget: Budget, start: datetime, seq: int) -> tuple[float, int]:
        key = self._key(budget, start)
        if key not in self.spend:
            row = await self.conn.fetchrow(
                """SELECT spent_usd, spent_tokens, last_seq FROM budget_spend
                WHERE tenant_id = $1 AND scope = $2 AND scope_id = $3 AND "window" = $4
                    AND window_start = $5""",
                *key,
            )
            if row is not None:
                self.spend[key] = [row["spent_usd"], row["spent_tokens"], row["last_seq"]]
            else:
                # First met: the window's spend so far, from the ledger.
                usd, tokens, _, _ = await spent(self.conn, budget, None, start, before_seq=seq)
                self.spend[key] = [usd, tokens, seq - 1]
        usd, tokens, _ = self.spend[key]
        return float(usd), int(tokens)

    def add(self, budget: Budget, start: datetime, usd: float, tokens: int, seq: int) -> None:
        entry = self.spend[self._key(budget, start)]
        entry[0] += usd
        entry[1] += tokens
        entry[2] = max(entry[2], seq)

    async def save(self) -> None:
        if not self.spend:
            return
        await self.conn.executemany(
            """INSERT INTO budget_spend (tenant_id, scope, scope_id, "window", window_start,
                spent_usd, spent_tokens, last_seq)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            ON CONFLICT (tenant_id, scope, scope_id, "window", window_start) DO UPDATE SET
                spent_usd = EXCLUDED.spent_usd, spent_tokens = EXCLUDED.spent_tokens,
                last_seq = EXCLUDED.last_seq""",
            [(*key, *value) for key, value in self.spend.items()],
        )


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
