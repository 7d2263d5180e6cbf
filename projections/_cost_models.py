"""The budgets set on wrench.admin, one row per scope (the CostGuard's ledger is its own)."""

from __future__ import annotations

from collections.abc import Mapping

from events import BudgetDeleted, BudgetSet
from projections._read_model_types import Applied, Statement


class BudgetsModel:
    """One row per budget: set replaces the scope's budget, deleted removes it."""

    tables: tuple[str, ...] = ("budgets",)
    event_types: tuple[str, ...] = (BudgetSet.event_type, BudgetDeleted.event_type)

    def statements(self, applied: Applied, names: Mapping[str, str]) -> list[Statement]:
        event, p = applied.event, applied.event.payload
        table = names["budgets"]
        if isinstance(p, BudgetSet):
            return [
                (
                    f"""INSERT INTO {table} (tenant_id, scope, scope_id, limit_usd, limit_tokens,
                        "window", thresholds, hard, set_at, set_by, event_id)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                    ON CONFLICT (tenant_id, scope, scope_id) DO UPDATE SET
                        limit_usd = EXCLUDED.limit_usd, limit_tokens = EXCLUDED.limit_tokens,
                        "window" = EXCLUDED."window", thresholds = EXCLUDED.thresholds,
                        hard = EXCLUDED.hard, set_at = EXCLUDED.set_at,
                        set_by = EXCLUDED.set_by, event_id = EXCLUDED.event_id
                    WHERE {table}.set_at <= EXCLUDED.set_at""",
                    (
                        event.tenant_id,
                        p.scope,
                        p.scope_id,
                        p.limit_usd,
                        p.limit_tokens,
                        p.window,
                        p.thresholds,
                        p.hard,
                        event.occurred_at,
                        f"{event.actor.kind}:{event.actor.id}",
                        event.id,
                    ),
                )
            ]
        if isinstance(p, BudgetDeleted):
            return [
                (
                    f"""DELETE FROM {table}
                    WHERE tenant_id = $1 AND scope = $2 AND scope_id = $3 AND set_at <= $4""",
                    (event.tenant_id, p.scope, p.scope_id, event.occurred_at),
                )
            ]
        return []


COST_READ_MODELS = (BudgetsModel(),)
