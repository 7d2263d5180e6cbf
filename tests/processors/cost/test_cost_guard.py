"""The CostGuard on real Postgres and the real broker: each usage event counted once, soft
thresholds announced once per window and again after the window rolls over, the limit once,
unpriced models said once, and one tenant's budgets blind to another's usage."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from events import (
    Actor,
    BudgetExceeded,
    BudgetSet,
    BudgetThresholdCrossed,
    Event,
    EventProducer,
    Position,
    UsageRecorded,
    create_consumer,
)
from processors.cost import CostGuard
from projections._cost_models import BudgetsModel
from projections._read_model_types import Applied
from wrenchai.settings import Settings

ADMIN = Actor(kind="user", id="alice")
AGENT = Actor(kind="agent", id="journey_agent")
DAY = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


def usage(
    task_id: uuid.UUID,
    at: datetime,
    *,
    tenant_id: str = "acme",
    cost_usd: float | None = 1.0,
    tokens: int = 100,
    model: str = "gpt-4o-mini",
    user_id: str | None = "alice",
) -> Event:
    return Event.new(
        UsageRecorded(
            operation="execute", model=model, input_tokens=tokens, output_tokens=0,
            total_tokens=tokens, cost_usd=cost_usd, price_version="2026-11", user_id=user_id,
        ),
        tenant_id=tenant_id, actor=AGENT, task_id=task_id, occurred_at=at,
    )  # fmt: skip


async def set_budget(db: asyncpg.Connection, budget: BudgetSet, tenant_id: str = "acme") -> None:
    """The budget as the projector applies budget.set: through the read model's statements."""
    event = Event.new(budget, tenant_id=tenant_id, actor=ADMIN)
    for sql, args in BudgetsModel().statements(
        Applied(event, Position(0, 0)), {"budgets": "budgets"}
    ):
        await db.execute(sql, *args)


@pytest.fixture
async def guard(
    settings: Settings, topics: dict[str, int], db: asyncpg.Connection
) -> AsyncIterator[CostGuard]:
    instance = CostGuard(settings)
    yield instance
    await instance.close()


async def meter(guard: CostGuard, events: Sequence[Event], first: int = 0) -> list[Event]:
    return await guard.meter([(e, Position(0, first + i)) for i, e in enumerate(events)])


def kinds(events: Sequence[Event]) -> list[tuple[str, float | None]]:
    out: list[tuple[str, float | None]] = []
    for e in events:
        p = e.payload
        if isinstance(p, BudgetThresholdCrossed):
            out.append(("threshold", p.threshold))
        elif isinstance(p, BudgetExceeded):
            out.append(("exceeded", None))
    return out


async def test_soft_thresholds_fire_once_per_window_and_again_after_rollover(
    guard: CostGuard, db: asyncpg.Connection
) -> None:
    """$10 a UTC day: $4, $2 and $3 pass 50% then 80% (each once); $1 more reaches the limit;
    the next day starts from nothing and passes 50% again."""
    await set_budget(db, BudgetSet(scope="tenant", scope_id="acme", window="day", limit_usd=10))
    task = uuid.uuid4()
    first = await meter(guard, [usage(task, DAY, cost_usd=4.0)])
    assert kinds(first) == []
    second = await meter(guard, [usage(task, DAY + timedelta(hours=1), cost_usd=2.0)], 1)
    assert kinds(second) == [("threshold", 0.5)]
    third = await meter(guard, [usage(task, DAY + timedelta(hours=2), cost_usd=3.0)], 2)
    assert kinds(third) == [("threshold", 0.8)]
    fourth = await meter(guard, [usage(task, DAY + timedelta(hours=3), cost_usd=1.0)], 3)
    assert kinds(fourth) == [("threshold", 0.95), ("exceeded", None)]
    exceeded = fourth[2].payload
    assert isinstance(exceeded, BudgetExceeded)
    assert (exceeded.spent_usd, exceeded.ratio, exceeded.hard) == (10.0, 1.0, True)
    assert exceeded.window_start == DAY.replace(hour=0)
    alerts = [e.payload for e in fourth if e.type == "alert.raised"]
    assert [a.code for a in alerts] == ["BUDGET_THRESHOLD", "BUDGET_EXCEEDED"]  # type: ignore[attr-defined]
    tomorrow = await meter(guard, [usage(task, DAY + timedelta(days=1), cost_usd=6.0)], 4)
    assert kinds(tomorrow) == [("threshold", 0.5)]


async def test_a_usage_event_metered_again_counts_once_and_says_the_same(
    guard: CostGuard, db: asyncpg.Connection, settings: Settings
) -> None:
    """Redelivery (or a replay after a crash) finds the ledger row: the totals stay and the
    verdicts come again with the same ids, which every consumer drops."""
    await set_budget(
        db, BudgetSet(scope="user", scope_id="alice", window="month", limit_tokens=150)
    )
    task = uuid.uuid4()
    batch = [usage(task, DAY, tokens=100), usage(task, DAY + timedelta(minutes=1), tokens=60)]
    once = await meter(guard, batch)
    again = await meter(guard, batch)
    assert [e.id for e in again] == [e.id for e in once]
    assert kinds(once) == [
        ("threshold", 0.5),
        ("threshold", 0.8),
        ("threshold", 0.95),
        ("exceeded", None),
    ]
    assert await db.fetchval("SELECT sum(total_tokens) FROM cost_ledger") == 160
    assert await db.fetchval("SELECT count(*) FROM cost_ledger") == 2
    # What was published is on the log, once per id.
    consumer = create_consumer(settings, settings.topic("events"))
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=3000)
    finally:
        await consumer.stop()
    logged = {r.key for records in batches.values() for r in records}
    assert logged == {str(task).encode()}


async def test_an_unpriced_model_counts_tokens_and_is_announced_once(
    guard: CostGuard, db: asyncpg.Connection, settings: Settings
) -> None:
    await set_budget(db, BudgetSet(scope="model", scope_id="house-llm", window="day", limit_usd=1))
    task = uuid.uuid4()
    batch = [
        usage(task, DAY, model="house-llm", cost_usd=None, tokens=40),
        usage(task, DAY + timedelta(seconds=1), model="house-llm", cost_usd=None, tokens=50),
    ]
    assert await meter(guard, batch) == []
    assert await meter(guard, [usage(task, DAY, model="house-llm", cost_usd=None)], 2) == []
    row = await db.fetchrow("SELECT sum(total_tokens) AS t, sum(cost_usd) AS c FROM cost_ledger")
    assert (row["t"], row["c"]) == (190, None)
    consumer = create_consumer(settings, settings.topic("admin"))
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=3000)
    finally:
        await consumer.stop()
    announced = [dict(r.headers)["type"] for records in batches.values() for r in records]
    assert announced == [b"price.unknown"]


async def test_a_tenant_budget_never_counts_another_tenants_usage(
    guard: CostGuard, db: asyncpg.Connection
) -> None:
    await set_budget(db, BudgetSet(scope="tenant", scope_id="acme", window="day", limit_usd=1))
    task = uuid.uuid4()
    assert await meter(guard, [usage(task, DAY, tenant_id="globex", cost_usd=5.0)]) == []
    crossed = await meter(guard, [usage(task, DAY, cost_usd=0.6)], 1)
    assert kinds(crossed) == [("threshold", 0.5)]
    assert isinstance(crossed[0].payload, BudgetThresholdCrossed)
    assert crossed[0].payload.spent_usd == 0.6


async def test_a_task_lifetime_window_counts_each_task_apart(
    guard: CostGuard, db: asyncpg.Connection
) -> None:
    """A tenant budget with the task window limits each of its tasks on its own."""
    await set_budget(db, BudgetSet(scope="tenant", scope_id="acme", window="task", limit_usd=2))
    one, two = uuid.uuid4(), uuid.uuid4()
    assert kinds(await meter(guard, [usage(one, DAY, cost_usd=1.5)])) == [("threshold", 0.5)]
    assert kinds(await meter(guard, [usage(two, DAY, cost_usd=1.5)], 1)) == [("threshold", 0.5)]
    later = await meter(guard, [usage(one, DAY + timedelta(days=40), cost_usd=0.5)], 2)
    assert kinds(later) == [("threshold", 0.8), ("threshold", 0.95), ("exceeded", None)]


async def test_a_record_of_usage_that_cannot_be_read_goes_to_the_dlq(
    guard: CostGuard, settings: Settings, producer: EventProducer
) -> None:
    from events import Record

    bad = Record(key=b"k", value=b"{not json", headers=(("type", b"usage.recorded"),))
    assert await guard.decode([(0, 7, bad)]) == []
    consumer = create_consumer(settings, settings.topic("dlq"))
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=3000)
    finally:
        await consumer.stop()
    dead = [r for records in batches.values() for r in records]
    assert (
        len(dead) == 1
        and dict(dead[0].headers)["dlq.consumer"] == settings.group("cost-guard").encode()
    )
