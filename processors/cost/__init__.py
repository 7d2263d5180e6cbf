"""The CostGuard: every LLM request's usage counted once, budgets per scope and window, and
the alerts when one runs out. See :mod:`processors.cost.agent`."""

from processors.cost.agent import CostGuard, unpriced, verdicts, worker
from processors.cost.ledger import Budget, Spend, budgets_of, meter, spent

__all__ = [
    "Budget",
    "CostGuard",
    "Spend",
    "budgets_of",
    "meter",
    "spent",
    "unpriced",
    "verdicts",
    "worker",
]
