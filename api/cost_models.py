"""Bodies of the cost endpoints: budgets, usage reports and a task's cost. Frozen, as in
api.models."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from api._examples import examples
from events import DEFAULT_THRESHOLDS, BudgetScope, BudgetWindow, Operation

TASK_ID = "6f1c2a4e-8b0d-4c1e-9a57-3d2b1f0e4c88"
GroupBy = Literal["model", "user", "key", "task", "playbook", "day"]
Interval = Literal["hour", "day"]


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


_SET_BUDGET: dict[str, Any] = {
    "limit_usd": 50.0,
    "window": "month",
    "thresholds": [0.5, 0.8, 0.95],
    "hard": True,
}


class SetBudget(_Body):
    """A budget for the scope in the path: a limit in US dollars, in tokens or both, over a
    window; soft thresholds (fractions of the limit) warn once per window, and a hard budget
    stops the LLM calls that would go past its limit."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra=examples(_SET_BUDGET))

    limit_usd: float | None = Field(None, gt=0, le=1e9)
    limit_tokens: int | None = Field(None, gt=0, le=10**15)
    window: BudgetWindow = Field(
        description="task: each task's lifetime; hour: a rolling hour; day: a UTC day; "
        "month: a UTC calendar month."
    )
    thresholds: list[float] = Field(
        default_factory=lambda: list(DEFAULT_THRESHOLDS), max_length=10,
        description="Fractions of the limit, each between 0 and 1.",
    )  # fmt: skip
    hard: bool = Field(True, description="Refuse LLM calls that would go past the limit.")

    @model_validator(mode="after")
    def _has_a_limit(self) -> SetBudget:
        if self.limit_usd is None and self.limit_tokens is None:
            raise ValueError("a budget needs limit_usd, limit_tokens or both")
        if any(not 0 < t < 1 for t in self.thresholds):
            raise ValueError("each threshold is a fraction of the limit, between 0 and 1")
        return self


_ACCEPTED: dict[str, Any] = {
    "scope": "user",
    "scope_id": "alice",
    "status": "setting",
    "position": "0:17",
}


class BudgetAccepted(_Body):
    """A budget change the log accepted; it reads back once projected (``?wait_for=``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra=examples(_ACCEPTED))

    scope: BudgetScope
    scope_id: str
    status: Literal["setting", "deleting"]
    position: str = Field(examples=["0:17"])


_BUDGET: dict[str, Any] = {
    "scope": "user",
    "scope_id": "alice",
    "limit_usd": 50.0,
    "limit_tokens": None,
    "window": "month",
    "thresholds": [0.5, 0.8, 0.95],
    "hard": True,
    "set_at": "2026-11-01T09:00:00+00:00",
    "set_by": "user:admin-1",
    "spent_usd": 12.5,
    "spent_tokens": 830_000,
    "ratio": 0.25,
    "remaining_usd": 37.5,
    "remaining_tokens": None,
    "window_start": "2026-11-01T00:00:00+00:00",
    "window_end": "2026-12-01T00:00:00+00:00",
    "task_id": None,
}


class Budget(_Body):
    """A budget and where it stands now. For a task's-lifetime window the spend is the
    costliest running task's (``task_id``), or that task's for a task budget."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra=examples(_BUDGET))

    scope: BudgetScope
    scope_id: str
    limit_usd: float | None
    limit_tokens: int | None
    window: BudgetWindow
    thresholds: list[float]
    hard: bool
    set_at: datetime
    set_by: str
    spent_usd: float
    spent_tokens: int
    ratio: float = Field(description="The larger of spent over limit in dollars and in tokens.")
    remaining_usd: float | None
    remaining_tokens: int | None
    window_start: datetime | None
    window_end: datetime | None
    task_id: uuid.UUID | None


class BudgetList(_Body):
    """Every budget of the caller's tenant."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", json_schema_extra=examples({"items": [_BUDGET]})
    )

    items: list[Budget]


_GROUP: dict[str, Any] = {
    "key": "gpt-4o-mini",
    "calls": 42,
    "input_tokens": 51_200,
    "output_tokens": 9_800,
    "cached_tokens": 12_000,
    "reasoning_tokens": 0,
    "total_tokens": 61_000,
    "cost_usd": 0.0125,
    "unpriced_calls": 0,
    "estimated_calls": 3,
}
_SERIES: list[dict[str, Any]] = [
    {"start": "2026-11-28T00:00:00Z", "calls": 30, "total_tokens": 40_000, "cost_usd": 0.009},
    {"start": "2026-11-29T00:00:00Z", "calls": 12, "total_tokens": 21_000, "cost_usd": 0.0035},
]


class UsagePoint(_Body):
    """One UTC hour or day of a group's usage: when it starts, its calls, tokens and dollars."""

    start: datetime = Field(description="The hour's or day's first instant, in UTC.")
    calls: int
    total_tokens: int
    cost_usd: float


class UsageGroup(_Body):
    """The LLM usage of one group: calls, tokens of each kind and dollars. ``unpriced_calls``
    had no price (their dollars are not in ``cost_usd``); ``estimated_calls`` were counted
    with tiktoken because the server reported no usage."""

    key: str | None = Field(description="The group's value; null for usage without one.")
    calls: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    total_tokens: int
    cost_usd: float
    unpriced_calls: int
    estimated_calls: int
    series: list[UsagePoint] | None = Field(
        None,
        description="With ?interval=: the group's usage per UTC hour or day, oldest first, "
        "only the hours or days that have some; null without.",
    )


class UsageReport(_Body):
    """Usage over [from, to) grouped as asked, largest cost first, with the totals; with an
    interval, each group and the totals also over time."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        json_schema_extra=examples(
            {
                "group_by": "model",
                "interval": "day",
                "from": "2026-11-28T00:00:00+00:00",
                "to": "2026-11-30T00:00:00+00:00",
                "groups": [{**_GROUP, "series": _SERIES}],
                "total": {**_GROUP, "key": None, "series": _SERIES},
            }
        ),
        populate_by_name=True,
    )

    group_by: GroupBy
    interval: Interval | None = Field(
        None, description="The width of each group's series (?interval=); null without."
    )
    from_: datetime | None = Field(alias="from")
    to: datetime | None
    groups: list[UsageGroup]
    total: UsageGroup


_CALL: dict[str, Any] = {
    "event_id": "0b9e6f1a-4c2d-4e8f-9a1b-2c3d4e5f6a7b",
    "occurred_at": "2026-11-29T09:00:01+00:00",
    "operation": "execute",
    "stage_id": "write",
    "role": "writer",
    "tool": "llm.complete",
    "model": "gpt-4o-mini",
    "provider": "api.openai.com",
    "input_tokens": 812,
    "output_tokens": 240,
    "cached_tokens": 0,
    "reasoning_tokens": 0,
    "total_tokens": 1052,
    "cost_usd": 0.0002658,
    "source": "provider",
    "price_version": "2026-11",
}


class LlmCall(_Body):
    """One LLM request of the task, as its usage.recorded says."""

    event_id: uuid.UUID
    occurred_at: datetime
    operation: Operation
    stage_id: str | None
    role: str | None
    tool: str | None
    model: str
    provider: str | None
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    total_tokens: int
    cost_usd: float | None
    source: Literal["provider", "estimated"]
    price_version: str | None


class Amount(_Body):
    """Tokens and US dollars."""

    tokens: int
    cost_usd: float


class StageCost(_Body):
    """A stage's plan estimate against what it spent: its tool calls (whose price includes
    their own LLM requests) and the LLM requests made about it (error analysis, judging)."""

    stage_id: str
    estimated: Amount
    actual: Amount


_COST: dict[str, Any] = {
    "task_id": TASK_ID,
    "estimated": {"tokens": 1300, "cost_usd": 0.0004},
    "actual": {"tokens": 1052, "cost_usd": 0.0002658},
    "planning": {"tokens": 0, "cost_usd": 0.0},
    "stages": [
        {
            "stage_id": "write",
            "estimated": {"tokens": 1300, "cost_usd": 0.0004},
            "actual": {"tokens": 1052, "cost_usd": 0.0002658},
        }
    ],
    "calls": [_CALL],
}


class TaskCost(_Body):
    """What a task was expected to cost and what it has cost, per stage and per LLM call."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra=examples(_COST))

    task_id: uuid.UUID
    estimated: Amount
    actual: Amount
    planning: Amount = Field(description="LLM requests made to plan the task (no stage).")
    stages: list[StageCost]
    calls: list[LlmCall]
