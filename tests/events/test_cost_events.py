"""The cost events: usage.recorded v1 reads as v2, budgets refuse what cannot be a budget,
and each budget window has the bounds its name promises."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from pydantic import ValidationError

from events import (
    BudgetExceeded,
    BudgetSet,
    Codec,
    Event,
    UsageRecorded,
    window_bounds,
)
from tests.events.planning_samples import AGENT
from tests.events.samples import TENANT


def test_a_v1_usage_record_reads_as_v2_with_an_unknown_cost() -> None:
    """A v1 record on the log (prompt/completion tokens, no price) upcasts on read."""
    codec = Codec()
    envelope = {
        "id": str(uuid.uuid4()),
        "type": "usage.recorded",
        "schema_version": 1,
        "task_id": str(uuid.uuid4()),
        "tenant_id": TENANT,
        "actor": {"kind": "agent", "id": "super_agent"},
        "occurred_at": "2026-03-01T12:30:00Z",
        "correlation_id": str(uuid.uuid4()),
        "causation_id": None,
        "payload": {
            "operation": "plan",
            "model": "gpt-4o-mini",
            "prompt_tokens": 120,
            "completion_tokens": 80,
            "total_tokens": 200,
            "stage_id": None,
        },
    }
    event = codec.decode(orjson.dumps(envelope))
    usage = event.payload
    assert isinstance(usage, UsageRecorded)
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (120, 80, 200)
    assert (usage.cached_tokens, usage.reasoning_tokens) == (0, 0)
    assert usage.cost_usd is None and usage.source == "provider"


def test_cached_and_reasoning_tokens_are_parts_of_their_totals() -> None:
    with pytest.raises(ValidationError, match="cached_tokens"):
        UsageRecorded(
            operation="execute", model="m", input_tokens=5, output_tokens=1, cached_tokens=6,
            total_tokens=6,
        )  # fmt: skip
    with pytest.raises(ValidationError, match="reasoning_tokens"):
        UsageRecorded(
            operation="execute", model="m", input_tokens=5, output_tokens=1, reasoning_tokens=2,
            total_tokens=6,
        )  # fmt: skip


def test_a_budget_needs_a_limit_and_fractional_thresholds() -> None:
    with pytest.raises(ValidationError, match="limit_usd, limit_tokens or both"):
        BudgetSet(scope="tenant", scope_id="acme", window="month")
    with pytest.raises(ValidationError, match="between 0 and 1"):
        BudgetSet(scope="tenant", scope_id="acme", window="month", limit_usd=5, thresholds=[80])
    budget = BudgetSet(
        scope="user", scope_id="alice", window="day", limit_tokens=1000, thresholds=[0.9, 0.5, 0.9]
    )
    assert budget.thresholds == [0.5, 0.9]
    assert budget.hard is True


def test_budget_events_round_trip_through_the_codec() -> None:
    codec = Codec()
    exceeded = BudgetExceeded(
        scope="model", scope_id="gpt-4o", window="month",
        window_start=datetime(2026, 3, 1, tzinfo=UTC), window_end=datetime(2026, 4, 1, tzinfo=UTC),
        spent_usd=10.5, spent_tokens=12_000, limit_usd=10.0, ratio=1.05, usage_id=uuid.uuid4(),
        hard=True,
    )  # fmt: skip
    event = Event.new(exceeded, tenant_id=TENANT, actor=AGENT, task_id=uuid.uuid4())
    record = codec.encode(event)
    assert codec.decode(record.value, record.headers) == event


@pytest.mark.parametrize(
    ("window", "at", "start", "end"),
    [
        ("task", datetime(2026, 3, 5, 10, tzinfo=UTC), None, None),
        (
            "hour",
            datetime(2026, 3, 5, 10, 30, tzinfo=UTC),
            datetime(2026, 3, 5, 9, 30, tzinfo=UTC),
            datetime(2026, 3, 5, 10, 30, tzinfo=UTC),
        ),
        (
            "day",
            datetime(2026, 3, 5, 23, 59, tzinfo=UTC),
            datetime(2026, 3, 5, tzinfo=UTC),
            datetime(2026, 3, 6, tzinfo=UTC),
        ),
        (
            "month",
            datetime(2026, 12, 31, 23, tzinfo=UTC),
            datetime(2026, 12, 1, tzinfo=UTC),
            datetime(2027, 1, 1, tzinfo=UTC),
        ),
    ],
)
def test_each_window_has_the_bounds_its_name_promises(
    window: str, at: datetime, start: datetime | None, end: datetime | None
) -> None:
    assert window_bounds(window, at) == (start, end)  # type: ignore[arg-type]
    if start is not None and end is not None:
        assert end - start in (timedelta(hours=1), timedelta(days=1), timedelta(days=31))
