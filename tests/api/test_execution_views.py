"""GET /tasks/{task_id} with the task's steps, progress and summary, and
GET /tasks/{task_id}/steps with each step's tool calls and recoveries, read from the
execution read models the projector builds from the log."""

from __future__ import annotations

import uuid

import httpx
import orjson
import pytest

from events import Event, EventProducer
from tests.events.execution_samples import (
    RESULT_SECRET,
    SUMMARY,
    Story,
    executed_task,
    search_retried,
)
from tests.events.planning_samples import planning_events
from tests.projections.conftest import submitted

pytestmark = pytest.mark.usefixtures("db", "topics", "projector")

TENANT = "default"  # the tenant of the test client's API key


async def _publish(producer: EventProducer, events: list[Event]) -> str:
    """Publish in order; the position to wait for (a task's events share a partition)."""
    return str(max(await producer.publish_many(events)))


def _at(event: Event) -> str:
    return event.occurred_at.isoformat().replace("+00:00", "Z")


async def test_an_executed_task_shows_its_steps_progress_and_summary(
    client: httpx.AsyncClient, producer: EventProducer
) -> None:
    """The detail lists each stage in plan order with where it ended: search completed on
    its second attempt (the first attempt's error kept), write skipped after its LLM failed;
    the progress is the last progress.updated, the summary the completion's."""
    first = submitted("write a churn report", tenant_id=TENANT)
    events = executed_task(first)
    position = await _publish(producer, events)

    response = await client.get(f"/tasks/{first.task_id}", params={"wait_for": position})

    assert response.status_code == 200
    task = response.json()
    assert task["status"] == "completed" and task["summary"] == SUMMARY
    assert task["position"] == position
    last_progress = [e for e in events if e.type == "progress.updated"][-1]
    assert task["progress"] == {
        "stages_done": 2,
        "stages_total": 2,
        "elapsed_s": last_progress.payload.model_dump()["elapsed_s"],
        "estimated_s": 25.0,
        "tokens": 120,
        "cost_usd": 0.0015,
    }
    by_type = {(e.type, getattr(e.payload, "stage_id", None)): e for e in events}
    search, write = task["steps"]
    assert search == {
        "stage_id": "search",
        "role": "researcher",
        "optional": False,
        "status": "completed",
        "attempts": 2,
        "tool": "web.search",
        "tool_version": "1.2.0",
        "model": None,
        "started_at": _at(events[len(planning_events(first)) + 1]),
        "completed_at": _at(by_type[("step.completed", "search")]),
        "duration_s": 2.5,
        "error": {
            "code": "TOOL_TIMEOUT",
            "message": "web.search gave no answer in 5 s",
            "category": "transient",
        },
    }
    assert (write["status"], write["attempts"], write["model"]) == ("skipped", 1, "gpt-4o-mini")
    assert write["optional"] is True and write["error"]["code"] == "LLM_UNAVAILABLE"
    assert write["completed_at"] is None and write["duration_s"] is None
    # The plan's stages carry the same status as the steps.
    assert [s["status"] for s in task["plan"]["stages"]] == ["completed", "skipped"]
    # The completion's output is served, decrypted from the archive; tool results are
    # nowhere else in the detail.
    completed = next(e for e in events if e.type == "task.completed")
    assert task["output"] == completed.payload.model_dump(mode="json")["output"]
    assert (
        RESULT_SECRET not in orjson.dumps({k: v for k, v in task.items() if k != "output"}).decode()
    )


async def test_a_planned_task_has_pending_steps_and_no_progress(
    client: httpx.AsyncClient, producer: EventProducer
) -> None:
    """Before execution each stage is pending with no attempt; progress is null."""
    first = submitted(tenant_id=TENANT)
    position = await _publish(producer, [first, *planning_events(first)])

    task = (await client.get(f"/tasks/{first.task_id}", params={"wait_for": position})).json()

    assert [(s["stage_id"], s["status"], s["attempts"], s["tool"]) for s in task["steps"]] == [
        ("search", "pending", 0, None),
        ("write", "pending", 0, None),
    ]
    assert task["progress"] is None and task["summary"] is None


async def test_steps_list_each_stages_tool_calls_and_recoveries(
    client: httpx.AsyncClient, producer: EventProducer
) -> None:
    """/steps gives each step with its tool calls in log order (outcome, error code, cost,
    never the result) and its recoveries with whether and when they were carried out."""
    first = submitted(tenant_id=TENANT)
    events = executed_task(first)
    positions = await producer.publish_many(events)

    response = await client.get(
        f"/tasks/{first.task_id}/steps", params={"wait_for": str(max(positions))}
    )

    assert response.status_code == 200
    body = response.json()
    assert body["task_id"] == str(first.task_id)
    search, write = body["steps"]
    returned = [(e, p) for e, p in zip(events, positions, strict=True) if e.type == "tool.returned"]
    assert search["tool_calls"] == [
        {
            "attempt": 1,
            "tool": "web.search",
            "version": "1.2.0",
            "outcome": "error",
            "duration_s": 5.0,
            "cached": False,
            "error_code": "TOOL_TIMEOUT",
            "cost_usd": 0.0,
            "occurred_at": _at(returned[0][0]),
            "position": str(returned[0][1]),
        },
        {
            "attempt": 2,
            "tool": "web.search",
            "version": "1.2.0",
            "outcome": "ok",
            "duration_s": 2.0,
            "cached": False,
            "error_code": None,
            "cost_usd": 0.001,
            "occurred_at": _at(returned[1][0]),
            "position": str(returned[1][1]),
        },
    ]
    planned = next(e for e in events if e.type == "recovery.planned")
    executed = next(e for e in events if e.type == "recovery.executed")
    assert search["recoveries"] == [
        {
            "attempt": 1,
            "category": "transient",
            "action": "retry",
            "reason": "a timeout is transient: retry after a backoff",
            "delay_s": 1.0,
            "tool": None,
            "model": None,
            "suggestion": "narrow the query",
            "planned_at": _at(planned),
            "executed": True,
            "executed_at": _at(executed),
            "next_attempt": 2,
        }
    ]
    assert [c["error_code"] for c in write["tool_calls"]] == ["LLM_UNAVAILABLE"]
    assert [(r["action"], r["executed"], r["next_attempt"]) for r in write["recoveries"]] == [
        ("skip", True, None)
    ]
    assert search["status"] == "completed" and write["status"] == "skipped"
    assert RESULT_SECRET not in response.text


async def test_a_planned_but_unexecuted_recovery_is_not_executed(
    client: httpx.AsyncClient, producer: EventProducer
) -> None:
    """Between recovery.planned and recovery.executed the step is recovering and its
    recovery says it has not been carried out."""
    first = submitted(tenant_id=TENANT)
    story = Story(first)
    search_retried(story)
    until_planned = story.events[:5]  # started, called, returned, failed, planned
    position = await _publish(producer, [first, *planning_events(first), *until_planned])

    body = (await client.get(f"/tasks/{first.task_id}/steps", params={"wait_for": position})).json()

    search = body["steps"][0]
    assert search["status"] == "recovering"
    assert [(r["executed"], r["executed_at"], r["next_attempt"]) for r in search["recoveries"]] == [
        (False, None, None)
    ]


async def test_steps_of_an_unknown_or_another_tenants_task_are_a_404(
    client: httpx.AsyncClient, producer: EventProducer
) -> None:
    """A task that does not exist, or belongs to another tenant, has no steps or detail to
    show; the answer is the standard error body."""
    theirs = submitted(tenant_id="globex")
    position = await _publish(producer, executed_task(theirs))

    for task_id in (theirs.task_id, uuid.uuid4()):
        response = await client.get(f"/tasks/{task_id}/steps", params={"wait_for": position})
        assert response.status_code == 404
        assert response.json() == {
            "error": {
                "code": "TASK_NOT_FOUND",
                "message": f"no task {task_id}; a task submitted a moment ago appears once it "
                "is projected: pass the position its submission returned as ?wait_for=",
                "details": {"task_id": str(task_id)},
            }
        }
    assert (await client.get(f"/tasks/{theirs.task_id}")).status_code == 404


async def test_the_steps_route_and_fields_are_in_the_openapi_document(
    client: httpx.AsyncClient,
) -> None:
    spec = (await client.get("/openapi.json")).json()
    route = spec["paths"]["/tasks/{task_id}/steps"]["get"]
    assert "wait_for" in {p["name"] for p in route["parameters"]}
    assert {"200", "404"} <= set(route["responses"])
    detail = spec["components"]["schemas"]["TaskDetail"]["properties"]
    assert {"steps", "progress", "summary"} <= set(detail)
    assert "recovering" in spec["components"]["schemas"]["Step"]["properties"]["status"]["enum"]
