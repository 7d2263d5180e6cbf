"""The check before an LLM call: would the call take a hard budget past its limit?

An agent estimates the call (its prompt counted with tiktoken, its completion at most its
``max_tokens``, priced by the table) and asks here before making it. The budgets that apply
are the tenant's hard budgets whose scope the call falls in; their spend is the CostGuard's
ledger in the window that holds now. A call that would go past any of them is refused, and
the agent fails the step with BUDGET_EXCEEDED.

The ledger is a moment behind the log (the CostGuard counts usage as it arrives), so two
calls made at once may both pass; the CostGuard's budget.exceeded then says so. When the
budgets cannot be read (Postgres is down) the call goes ahead and the worker logs it: the
usage is still counted and alerted once the CostGuard sees it.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import structlog

from events import UsageRecorded
from processors.cost.ledger import Budget, budgets_of, spent
from wrenchai.settings import Settings

log = structlog.get_logger(__name__)

UNREADABLE_PAUSE_S = 30.0
"""How long the check stays off after the budgets could not be read, so a Postgres outage
costs one failed connection per half-minute, not one per call."""


@dataclass(frozen=True)
class Refusal:
    """Why a call may not be made: the budget it would take past its limit."""

    budget: Budget
    message: str


def refusal(
    budget: Budget, usage: UsageRecorded, spent_usd: float, spent_tokens: int
) -> Refusal | None:
    """A refusal when ``usage`` (the call's estimate) on top of the spend goes past the
    limit of ``budget``; None when it fits."""
    what = f"the {budget.scope} budget of {budget.scope_id} ({budget.window} window)"
    cost = usage.cost_usd or 0.0
    if budget.limit_usd is not None and spent_usd + cost > budget.limit_usd:
        return Refusal(
            budget,
            f"{what} has ${spent_usd:.6f} of ${budget.limit_usd:.6f} spent, and this call "
            f"would cost about ${cost:.6f} more",
        )
    if budget.limit_tokens is not None and spent_tokens + usage.total_tokens > budget.limit_tokens:
        return Refusal(
            budget,
            f"{what} has {spent_tokens} of {budget.limit_tokens} tokens spent, and this call "
            f"would use about {usage.total_tokens} more",
        )
    return None


class Preflight:
    """Reads the hard budgets that apply to a call and their spend (Postgres)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool: asyncpg.Pool | None = None
        self._off_until = 0.0

    async def check(
        self, tenant_id: str, task_id: uuid.UUID, usage: UsageRecorded, now: datetime | None = None
    ) -> Refusal | None:
        """The refusal of the call ``usage`` estimates, or None when it may be made."""
        if time.monotonic() < self._off_until:
            return None
        now = now or datetime.now(UTC)
        try:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self.settings.database_dsn(), min_size=1, max_size=2
                )
            async with self._pool.acquire() as conn:
                for budget in await budgets_of(conn, [tenant_id]):
                    if not budget.hard or not budget.applies_to(tenant_id, usage, task_id):
                        continue
                    usd, tokens, _, _ = await spent(conn, budget, task_id, now)
                    refused = refusal(budget, usage, usd, tokens)
                    if refused is not None:
                        return refused
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            self._off_until = time.monotonic() + UNREADABLE_PAUSE_S
            log.warning(
                "budgets unreadable: LLM calls go ahead unchecked for a while",
                error=str(exc)[:200],
                pause_s=UNREADABLE_PAUSE_S,
            )
        return None

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
