"""Budgets, usage reports and a task's cost through the API, on the real projector, the
CostGuard's ledger and Postgres: budgets set and deleted through the log, spend per window,
usage grouped every way the API offers, a task's estimate against its spend, one tenant
blind to another's, and bad input refused with the error body."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from events import Event, EventProducer, Position, UsageRecorded
from processors.cost import CostGuard
from tests.api._support import seed_api_key, serve
from tests.events.execution_samples import executed_task
from tests.projections.conftest import eventually, submitted
from wrenchai.settings import Settings

pytestmark = pytest.mark.usefixtures("topics", "projector")

AGENT_ID = "journey_agent"


def _usage(
    task: Event,
    stage_id: str | None,
    cost: float | None,
    tokens: int,
    at: datetime | None = None,
    **kw: str,
) -> Event:
    from events import Actor

    return task.derive(
        UsageRecorded(
            operation="analyse_error" if stage_id else "plan", model=kw.get("model", "gpt-4o-mini"),
            input_tokens=tokens, output_tokens=0, total_tokens=tokens, cost_usd=cost,
            price_version="2026-11", stage_id=stage_id, user_id=kw.get("user", "alice"),
            key_id="k1", playbook="research_report",
        ),
        step=f"usage/{uuid.uuid4()}",
        actor=Actor(kind="agent", id=AGENT_ID),
        occurred_at=at or datetime.now(UTC) - timedelta(minutes=5),
    )  # fmt: skip


async def _metered(settings: Settings, events: list[Event]) -> None:
    guard = CostGuard(settings)
    try:
        await guard.meter([(e, Position(0, i)) for i, e in enumerate(events)])
    finally:
        await guard.close()


async def test_a_budget_set_through_the_api_reads_back_with_its_spend(
    client: httpx.AsyncClient, settings: Settings, producer: EventProducer
) -> None:
    task = submitted("research the costs", tenant_id="default")
    story = await producer.publish_many(executed_task(task))
    spends = [_usage(task, "write", 0.25, 300), _usage(task, None, 0.5, 200, model="gpt-4o")]
    await producer.publish_many(spends)
    await _metered(settings, spends)

    put = await client.put(
        "/budgets/user/alice", json={"limit_usd": 1.0, "window": "month", "thresholds": [0.5]}
    )
    assert put.status_code == 202, put.text
    assert put.json()["status"] == "setting"
    listed = await client.get("/budgets", params={"wait_for": put.json()["position"]})
    assert listed.status_code == 200, listed.text
    [budget] = listed.json()["items"]
    assert (budget["scope"], budget["scope_id"], budget["window"]) == ("user", "alice", "month")
    assert (budget["spent_usd"], budget["spent_tokens"]) == (0.75, 500)
    assert (budget["remaining_usd"], budget["ratio"]) == (0.25, 0.75)
    now = datetime.now(UTC)
    assert budget["window_start"] == now.strftime("%Y-%m-01T00:00:00Z")

    by_model = (await client.get("/usage", params={"group_by": "model"})).json()
    assert [(g["key"], g["calls"], g["cost_usd"]) for g in by_model["groups"]] == [
        ("gpt-4o", 1, 0.5),
        ("gpt-4o-mini", 1, 0.25),
    ]
    assert (by_model["total"]["calls"], by_model["total"]["total_tokens"]) == (2, 500)
    for group_by, key in (
        ("user", "alice"), ("key", "k1"), ("task", str(task.task_id)),
        ("playbook", "research_report"), ("day", (now - timedelta(minutes=5)).strftime("%Y-%m-%d")),
    ):  # fmt: skip
        report = (await client.get("/usage", params={"group_by": group_by})).json()
        assert [g["key"] for g in report["groups"]] == [key], group_by
    later = await client.get("/usage", params={"from": (now + timedelta(hours=1)).isoformat()})
    assert later.json()["groups"] == []

    # The task's read models hold its whole story before its cost is read.
    cost = await client.get(f"/tasks/{task.task_id}/cost", params={"wait_for": str(story[-1])})
    assert cost.status_code == 200, cost.text
    body = cost.json()
    stages = {s["stage_id"]: s for s in body["stages"]}
    assert stages["search"]["actual"] == {"tokens": 0, "cost_usd": 0.001}  # its tool calls
    assert stages["write"]["actual"] == {"tokens": 300, "cost_usd": 0.25}  # error analysis
    assert body["planning"] == {"tokens": 200, "cost_usd": 0.5}
    assert body["actual"] == {"tokens": 500, "cost_usd": 0.751}
    assert stages["search"]["estimated"]["cost_usd"] == 0.001
    assert [c["total_tokens"] for c in body["calls"]] == [300, 200]

    deleted = await client.delete("/budgets/user/alice")
    assert deleted.status_code == 202 and deleted.json()["status"] == "deleting"
    gone = await client.get("/budgets", params={"wait_for": deleted.json()["position"]})
    assert gone.json()["items"] == []


async def test_usage_over_time_is_bucketed_per_utc_hour_or_day(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    """With ?interval=, each group and the total carry their usage per UTC hour or day,
    only the buckets that have some, oldest first; another tenant's usage is in none of
    them, and without an interval the report has no series, as before."""
    ours, theirs = submitted("ours", tenant_id="default"), submitted("x", tenant_id="globex")

    def at(day: int, hour: int, minute: int) -> datetime:
        return datetime(2026, 11, day, hour, minute, tzinfo=UTC)

    await _metered(
        settings,
        [
            _usage(ours, None, 0.25, 300, at(3, 9, 10), model="gpt-4o-mini", user="alice"),
            _usage(ours, None, 0.5, 200, at(3, 9, 50), model="gpt-4o", user="bob"),
            _usage(ours, None, 0.125, 100, at(3, 11, 5), model="gpt-4o-mini", user="bob"),
            _usage(ours, None, None, 50, at(4, 8, 0), model="gpt-4o-mini", user="alice"),
            _usage(theirs, None, 9.0, 9000, at(3, 9, 20), model="gpt-4o", user="bob"),
        ],
    )
    span = {"from": "2026-11-03T00:00:00Z", "to": "2026-11-05T00:00:00Z"}

    def points(group: dict[str, object]) -> list[tuple[object, ...]]:
        series = group["series"]
        assert isinstance(series, list)
        return [(p["start"], p["calls"], p["total_tokens"], p["cost_usd"]) for p in series]

    hourly = await client.get("/usage", params={**span, "group_by": "model", "interval": "hour"})
    assert hourly.status_code == 200, hourly.text
    body = hourly.json()
    assert body["interval"] == "hour"
    by_model = {g["key"]: points(g) for g in body["groups"]}
    assert list(by_model) == ["gpt-4o", "gpt-4o-mini"]
    assert by_model["gpt-4o"] == [("2026-11-03T09:00:00Z", 1, 200, 0.5)]
    assert by_model["gpt-4o-mini"] == [
        ("2026-11-03T09:00:00Z", 1, 300, 0.25),
        ("2026-11-03T11:00:00Z", 1, 100, 0.125),
        ("2026-11-04T08:00:00Z", 1, 50, 0.0),  # unpriced: its tokens, no dollars
    ]
    assert points(body["total"]) == [
        ("2026-11-03T09:00:00Z", 2, 500, 0.75),
        ("2026-11-03T11:00:00Z", 1, 100, 0.125),
        ("2026-11-04T08:00:00Z", 1, 50, 0.0),
    ]

    daily = await client.get("/usage", params={**span, "group_by": "user", "interval": "day"})
    body = daily.json()
    by_user = {g["key"]: points(g) for g in body["groups"]}
    assert list(by_user) == ["bob", "alice"]
    assert by_user["bob"] == [("2026-11-03T00:00:00Z", 2, 300, 0.625)]
    assert by_user["alice"] == [
        ("2026-11-03T00:00:00Z", 1, 300, 0.25),
        ("2026-11-04T00:00:00Z", 1, 50, 0.0),
    ]
    assert points(body["total"]) == [
        ("2026-11-03T00:00:00Z", 3, 600, 0.875),
        ("2026-11-04T00:00:00Z", 1, 50, 0.0),
    ]
    # Days need no from: the whole ledger, still bucketed.
    unbounded = await client.get("/usage", params={"group_by": "user", "interval": "day"})
    assert points(unbounded.json()["total"]) == points(body["total"])

    plain = (await client.get("/usage", params={**span, "group_by": "user"})).json()
    assert plain["interval"] is None and plain["total"]["series"] is None
    assert all(g["series"] is None for g in plain["groups"])


async def test_usage_over_time_refuses_what_it_cannot_bucket(client: httpx.AsyncClient) -> None:
    """An unknown interval, hours without a start, and hours over more than 31 days are
    refused with the error body naming the parameter."""
    long_ago = (datetime.now(UTC) - timedelta(days=40)).isoformat()
    cases = [
        ({"interval": "week"}, "query.interval"),
        ({"interval": "hour"}, "query.from"),
        ({"interval": "hour", "to": "2026-11-05T00:00:00Z"}, "query.from"),
        (
            {"interval": "hour", "from": "2026-10-01T00:00:00Z", "to": "2026-11-05T00:00:00Z"},
            "query.interval",
        ),
        ({"interval": "hour", "from": long_ago}, "query.interval"),
    ]
    for params, field in cases:
        response = await client.get("/usage", params=params)
        assert response.status_code == 422, (params, response.text)
        error = response.json()["error"]
        assert error["code"] == "VALIDATION_ERROR", response.text
        assert [e["field"] for e in error["details"]["errors"]] == [field], response.text
    month = {"interval": "hour", "from": "2026-10-05T00:00:00Z", "to": "2026-11-05T00:00:00Z"}
    assert (await client.get("/usage", params=month)).status_code == 200


async def test_another_tenant_sees_none_of_it(
    client: httpx.AsyncClient,
    settings: Settings,
    producer: EventProducer,
    db: asyncpg.Connection,
) -> None:
    task = submitted("ours", tenant_id="default")
    await producer.publish_many(executed_task(task))
    spend = _usage(task, "write", 0.25, 300)
    await _metered(settings, [spend])
    put = await client.put(
        "/budgets/model/gpt-4o-mini", json={"limit_tokens": 1000, "window": "day"}
    )
    await client.get("/budgets", params={"wait_for": put.json()["position"]})

    async def projected() -> bool:
        return bool(await db.fetchval("SELECT count(*) FROM tasks") == 1)

    await eventually(projected)
    other = await seed_api_key(db, settings, tenant_id="globex", key_id="globex-key")
    async with serve(settings, api_key=other) as theirs:
        assert (await theirs.get("/budgets")).json()["items"] == []
        assert (await theirs.get("/usage")).json()["total"]["calls"] == 0
        refused = await theirs.get(f"/tasks/{task.task_id}/cost")
        assert refused.status_code == 404
        assert refused.json()["error"]["code"] == "TASK_NOT_FOUND"
        missing = await theirs.delete("/budgets/model/gpt-4o-mini")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "BUDGET_NOT_FOUND"


async def test_what_cannot_be_a_budget_is_refused_with_the_error_body(
    client: httpx.AsyncClient,
) -> None:
    cases = [
        ("/budgets/user/alice", {"window": "day"}, 422),  # no limit
        ("/budgets/user/alice", {"limit_usd": 1, "window": "week"}, 422),
        ("/budgets/user/alice", {"limit_usd": 1, "window": "day", "thresholds": [80]}, 422),
        ("/budgets/planet/earth", {"limit_usd": 1, "window": "day"}, 422),
        ("/budgets/task/not-a-uuid", {"limit_usd": 1, "window": "task"}, 422),
        ("/budgets/tenant/globex", {"limit_usd": 1, "window": "month"}, 403),
    ]
    for path, body, status in cases:
        response = await client.put(path, json=body)
        assert response.status_code == status, (path, body, response.text)
        error = response.json()["error"]
        assert error["code"] and error["message"], response.text
    naive = await client.get("/usage", params={"from": "2026-11-01T00:00:00"})
    assert naive.status_code == 422
    backwards = await client.get(
        "/usage", params={"from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z"}
    )
    assert backwards.status_code == 422
    assert (await client.get("/usage", params={"group_by": "colour"})).status_code == 422
