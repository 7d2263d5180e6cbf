"""GET /tasks/{task_id} with the task's roles and plan, and GET /tasks/{task_id}/thoughts,
read from the planning read models the projector builds from the log."""

from __future__ import annotations

import uuid

import httpx
import pytest

from events import Event, EventProducer, Position
from tests.events.planning_samples import AGENT, PLAN, PLANNING_SECRETS, planning_events
from tests.projections.conftest import submitted

pytestmark = pytest.mark.usefixtures("db", "topics", "projector")

TENANT = "default"  # the tenant of the test client's API key


async def _publish(producer: EventProducer, events: list[Event]) -> str:
    """Publish in order; the position to wait for (a task's events share a partition)."""
    return str(max(await producer.publish_many(events)))


async def test_a_planned_task_shows_its_roles_their_tools_and_its_plan(
    client: httpx.AsyncClient, producer: EventProducer
) -> None:
    """After planning, the task is running and its detail lists the roles in execution order
    with their tools, and the plan's stages with dependencies, estimates, fallbacks and a
    pending status."""
    first = submitted("write a churn report", tenant_id=TENANT)
    position = await _publish(producer, [first, *planning_events(first)])

    response = await client.get(f"/tasks/{first.task_id}", params={"wait_for": position})

    assert response.status_code == 200
    task = response.json()
    assert task["status"] == "running"
    assert task["position"] == position
    assert task["roles"] == [
        {
            "name": "researcher",
            "reason": "the task asks to find figures",
            "score": 0.82,
            "depends_on": [],
            "tools": [
                {
                    "tool": "web.search",
                    "version": "1.2.0",
                    "need": "capability:search",
                    "reliability": 0.5,
                    "score": 0.41,
                    "alternatives": ["docs.search"],
                }
            ],
        },
        {
            "name": "writer",
            "reason": "the task asks for a report",
            "score": 0.64,
            "depends_on": ["researcher"],
            "tools": [
                {
                    "tool": "llm.generate",
                    "version": "1.0.0",
                    "need": "required_tool",
                    "reliability": 0.5,
                    "score": 0.3,
                    "alternatives": [],
                }
            ],
        },
    ]
    plan = task["plan"]
    assert plan["playbook"] == "research_report"
    assert plan["total"] == PLAN.total.model_dump(mode="json")
    assert plan["critical_path_seconds"] == 25.0
    assert plan["created_at"]
    expected = [{**stage.model_dump(mode="json"), "status": "pending"} for stage in PLAN.stages]
    assert plan["stages"] == expected
    assert plan["stages"][0]["tool_input"] == {"query": PLANNING_SECRETS[0]}


async def test_a_task_not_planned_yet_has_no_roles_and_a_null_plan(
    client: httpx.AsyncClient,
) -> None:
    """A submitted task answers with empty roles and ``plan: null``, still submitted."""
    accepted = (await client.post("/tasks", json={"description": "Plan a trip"})).json()

    response = await client.get(
        f"/tasks/{accepted['task_id']}", params={"wait_for": accepted["position"]}
    )

    assert response.status_code == 200
    task = response.json()
    assert task["status"] == "submitted"
    assert task["roles"] == [] and task["plan"] is None


async def test_a_plan_delivered_twice_shows_once(
    client: httpx.AsyncClient, producer: EventProducer
) -> None:
    """A redelivered plan.created leaves one plan with each stage once."""
    first = submitted(tenant_id=TENANT)
    plan = first.derive(PLAN, step="plan", actor=AGENT)
    position = await _publish(producer, [first, plan, plan])

    task = (await client.get(f"/tasks/{first.task_id}", params={"wait_for": position})).json()

    assert [s["id"] for s in task["plan"]["stages"]] == ["search", "write"]
    assert task["roles"] == []


async def test_thoughts_are_listed_in_log_order_with_their_positions(
    client: httpx.AsyncClient, producer: EventProducer
) -> None:
    """Each thought.recorded of the task, decrypted, in log order, with its revision, branch,
    stage and log position; the other planning events are not thoughts."""
    first = submitted(tenant_id=TENANT)
    events = planning_events(first)
    positions = await producer.publish_many([first, *events])

    response = await client.get(
        f"/tasks/{first.task_id}/thoughts", params={"wait_for": str(max(positions))}
    )

    assert response.status_code == 200
    body = response.json()
    assert body["task_id"] == str(first.task_id)
    thoughts = body["thoughts"]
    assert [
        (t["operation"], t["number"], t["revises"], t["branch"], t["stage_id"]) for t in thoughts
    ] == [
        ("assign_roles", 1, None, None, None),
        ("plan", 1, None, None, None),
        ("plan", 2, 1, None, None),
        ("plan", 3, None, "no-search", "write"),
    ]
    assert thoughts[1]["text"] == PLANNING_SECRETS[1]
    # The thoughts were the first four events after the submission.
    assert [t["position"] for t in thoughts] == [str(p) for p in positions[1:5]]
    assert [Position.parse(t["position"]) for t in thoughts] == sorted(positions[1:5])
    assert thoughts[0]["occurred_at"]


async def test_a_task_without_thoughts_lists_none(
    client: httpx.AsyncClient, producer: EventProducer
) -> None:
    """A known task with no reasoning yet answers an empty list, not a 404."""
    first = submitted(tenant_id=TENANT)
    position = await _publish(producer, [first])

    response = await client.get(f"/tasks/{first.task_id}/thoughts", params={"wait_for": position})

    assert response.status_code == 200
    assert response.json() == {"task_id": str(first.task_id), "thoughts": []}


async def test_thoughts_of_an_unknown_or_another_tenants_task_are_a_404(
    client: httpx.AsyncClient, producer: EventProducer
) -> None:
    """A task that does not exist, or belongs to another tenant, has no thoughts to show."""
    theirs = submitted(tenant_id="globex")
    position = await _publish(producer, [theirs, *planning_events(theirs)])

    for task_id in (theirs.task_id, uuid.uuid4()):
        response = await client.get(f"/tasks/{task_id}/thoughts", params={"wait_for": position})
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "TASK_NOT_FOUND"
    detail = await client.get(f"/tasks/{theirs.task_id}")
    assert detail.status_code == 404


async def test_the_thoughts_route_is_in_the_openapi_document(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    route = spec["paths"]["/tasks/{task_id}/thoughts"]["get"]
    assert "wait_for" in {p["name"] for p in route["parameters"]}
    assert "404" in route["responses"]
