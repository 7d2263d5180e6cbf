"""Payloads of cost: the tokens each LLM request used and what they cost, and budgets.

``usage.recorded`` is a task event (on wrench.events, key = task_id), emitted by the agent
that made the request. Budgets are set and deleted on wrench.admin (key = tenant_id); the
CostGuard's verdicts on them (``budget.threshold_crossed``, ``budget.exceeded``) are task
events of the task whose usage crossed the line, so the agents that run that task see them.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import AwareDatetime, Field, field_validator, model_validator

from events._catalog import catalog, event
from events._envelope import EventPayload
from events._planning import Operation

MAX_NAME = 200

UsageSource = Literal["provider", "estimated"]
"""``provider``: the server reported the counts; ``estimated``: counted with tiktoken from
the request as sent."""

BudgetScope = Literal["tenant", "user", "key", "task", "model", "playbook"]
"""What a budget limits: a whole tenant, one user, one API key, one task, one model or one
playbook (its ``scope_id`` names which)."""

BudgetWindow = Literal["task", "hour", "day", "month"]
"""Over what a budget counts: each task's lifetime, a rolling hour, a UTC day, or a UTC
calendar month."""

BUDGET_SCOPES: tuple[BudgetScope, ...] = ("tenant", "user", "key", "task", "model", "playbook")
BUDGET_WINDOWS: tuple[BudgetWindow, ...] = ("task", "hour", "day", "month")
DEFAULT_THRESHOLDS = (0.5, 0.8, 0.95)


@event("usage.recorded", version=1)
class UsageRecordedV1(EventPayload):
    """The first shape of usage.recorded: the provider's counts alone, no price. Read as v2
    by upcasting."""

    operation: Operation
    model: str = Field(min_length=1, max_length=MAX_NAME)
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    total_tokens: int = Field(ge=0)
    stage_id: str | None = None


@event("usage.recorded", version=2)
class UsageRecorded(EventPayload):
    """The tokens one LLM request used, what they cost, and whose work it was.

    ``input_tokens`` holds every prompt token, the ``cached_tokens`` read from the provider's
    prompt cache among them; ``output_tokens`` every completion token, the hidden
    ``reasoning_tokens`` among them. Each kind is priced at its own rate in the price table
    ``price_version`` names; ``cost_usd`` is null when that table has no price for the model.
    """

    operation: Operation
    model: str = Field(min_length=1, max_length=MAX_NAME)
    provider: str | None = Field(None, max_length=MAX_NAME, description="Who served it.")
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    cached_tokens: int = Field(0, ge=0, description="Of input_tokens, read from a cache.")
    reasoning_tokens: int = Field(0, ge=0, description="Of output_tokens, hidden reasoning.")
    total_tokens: int = Field(ge=0)
    source: UsageSource = "provider"
    cost_usd: float | None = Field(None, ge=0, description="Null when the model has no price.")
    price_version: str | None = Field(None, max_length=MAX_NAME)
    stage_id: str | None = Field(None, description="The stage the request served, if any.")
    role: str | None = Field(None, max_length=MAX_NAME, description="The stage's role.")
    tool: str | None = Field(None, max_length=MAX_NAME, description="The tool that called.")
    user_id: str | None = Field(
        None, max_length=MAX_NAME, description="Who the task runs for: its submitter."
    )
    key_id: str | None = Field(
        None, max_length=MAX_NAME, description="The API key the task was submitted with."
    )
    playbook: str | None = Field(None, max_length=MAX_NAME, description="The task's playbook.")

    @model_validator(mode="after")
    def _parts_within_totals(self) -> UsageRecorded:
        if self.cached_tokens > self.input_tokens:
            raise ValueError("cached_tokens cannot exceed input_tokens")
        if self.reasoning_tokens > self.output_tokens:
            raise ValueError("reasoning_tokens cannot exceed output_tokens")
        return self


@catalog.upcaster("usage.recorded", 1)
def upcast_usage_recorded_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    """v1's prompt and completion tokens are v2's input and output tokens, as the provider
    reported them; v1 carried no price, so the cost is unknown (null)."""
    return {
        "operation": payload["operation"],
        "model": payload["model"],
        "input_tokens": payload["prompt_tokens"],
        "output_tokens": payload["completion_tokens"],
        "total_tokens": payload["total_tokens"],
        "source": "provider",
        "stage_id": payload.get("stage_id"),
    }


@event("price.unknown", version=1)
class PriceUnknown(EventPayload):
    """A model was used that the price table has no price for: its usage counts tokens but
    no dollars until the table gains it. One per model and price table (its id is derived
    from both), on wrench.admin."""

    model: str = Field(min_length=1, max_length=MAX_NAME)
    price_version: str = Field(min_length=1, max_length=MAX_NAME)


def _thresholds(values: list[float]) -> list[float]:
    if any(not 0 < v < 1 for v in values):
        raise ValueError("each threshold is a fraction of the limit, between 0 and 1")
    return sorted(set(values))


@event("budget.set", version=1)
class BudgetSet(EventPayload):
    """A budget for one scope: created, or replaced when the scope already has one.

    At each soft threshold (a fraction of the limit) the CostGuard raises a warning once per
    window; at the limit it raises budget.exceeded, and a ``hard`` budget stops the LLM calls
    that would go past it.
    """

    scope: BudgetScope
    scope_id: str = Field(min_length=1, max_length=MAX_NAME)
    limit_usd: float | None = Field(None, gt=0)
    limit_tokens: int | None = Field(None, gt=0)
    window: BudgetWindow
    thresholds: list[float] = Field(default_factory=lambda: list(DEFAULT_THRESHOLDS))
    hard: bool = True

    _sorted = field_validator("thresholds")(_thresholds)

    @model_validator(mode="after")
    def _has_a_limit(self) -> BudgetSet:
        if self.limit_usd is None and self.limit_tokens is None:
            raise ValueError("a budget needs limit_usd, limit_tokens or both")
        return self


@event("budget.deleted", version=1)
class BudgetDeleted(EventPayload):
    """The budget of a scope no longer applies."""

    scope: BudgetScope
    scope_id: str = Field(min_length=1, max_length=MAX_NAME)


class _BudgetState(EventPayload):
    """Where a budget stood when a usage event moved it past a line."""

    scope: BudgetScope
    scope_id: str = Field(min_length=1, max_length=MAX_NAME)
    window: BudgetWindow
    window_start: AwareDatetime | None = Field(None, description="Null for a task's lifetime.")
    window_end: AwareDatetime | None = Field(None, description="Null for a task's lifetime.")
    spent_usd: float = Field(ge=0)
    spent_tokens: int = Field(ge=0)
    limit_usd: float | None = None
    limit_tokens: int | None = None
    ratio: float = Field(ge=0, description="The larger of spent/limit in dollars and tokens.")
    usage_id: uuid.UUID = Field(description="The usage.recorded event that crossed the line.")


@event("budget.threshold_crossed", version=1)
class BudgetThresholdCrossed(_BudgetState):
    """Spending in a budget's window reached one of its soft thresholds."""

    threshold: float = Field(gt=0, lt=1)


@event("budget.exceeded", version=1)
class BudgetExceeded(_BudgetState):
    """Spending in a budget's window reached its limit."""

    hard: bool


def window_bounds(window: BudgetWindow, at: datetime) -> tuple[datetime | None, datetime | None]:
    """The start and end of the ``window`` holding the instant ``at`` (UTC). A rolling hour
    ends at ``at``; a task's lifetime has no clock bounds."""
    if window == "task":
        return None, None
    if window == "hour":
        return at - timedelta(hours=1), at
    start = at.replace(hour=0, minute=0, second=0, microsecond=0)
    if window == "day":
        return start, start + timedelta(days=1)
    start = start.replace(day=1)
    if start.month == 12:
        return start, start.replace(year=start.year + 1, month=1)
    return start, start.replace(month=start.month + 1)


COST_ADMIN_TYPES = frozenset({"budget.set", "budget.deleted", "price.unknown"})
"""The cost events that go to wrench.admin (key = tenant); the rest are task events."""
