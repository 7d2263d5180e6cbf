"""GET /alerts, POST /alerts/{alert_id}/ack, GET /tasks/{task_id}/evaluations and
GET /insights/quality, read from the inspection read models the projector builds from the
log, and written by publishing alert.acknowledged."""

from __future__ import annotations

import uuid

import httpx
import pytest

from events import AlertAcknowledged, Codec, Event, EventProducer, Position
from tests.api._support import read_record
from tests.events.inspection_samples import (
    acknowledged,
    cleared,
    evaluation,
    fitted,
    group,
    raised,
)
from tests.projections.conftest import submitted
from wrenchai.settings import Settings

pytestmark = pytest.mark.usefixtures("db", "topics", "projector")

TENANT = "default"  # the tenant of the test client's API key


async def _publish(producer: EventProducer, events: list[Event]) -> str:
    """Publish in order; the largest position, to wait for (one partition per task)."""
    return str(max(await producer.publish_many(events)))


async def _seed_alerts(producer: EventProducer) -> tuple[Event, list[Event], str]:
    """A task of the caller's tenant with three alerts (one cleared), and another tenant's
    task with one; returns the caller's task, its raises (oldest first), and a position to
    wait for that covers both tasks."""
    mine = submitted("watched task", tenant_id=TENANT)
    stalled = raised(mine, "STALLED", 1, seconds=10)
    low = raised(mine, "LOW_QUALITY", 1, seconds=20)
    failures = raised(mine, "REPEATED_FAILURES", 1, level="critical", seconds=30)
    theirs = submitted("another tenant's task", tenant_id="globex")
    p1 = await _publish(producer, [mine, stalled, cleared(stalled), low, failures])
    p2 = await _publish(producer, [theirs, raised(theirs, "STALLED", 1)])
    # One wait covers both only when they share a partition; wait for each in turn instead.
    return mine, [stalled, low, failures], f"{p1} {p2}"


async def _wait(client: httpx.AsyncClient, positions: str) -> None:
    for position in positions.split():
        response = await client.get("/alerts", params={"wait_for": position, "limit": 1})
        assert response.status_code == 200


async def test_alerts_are_listed_newest_first_within_the_tenant(
    client: httpx.AsyncClient, producer: EventProducer
) -> None:
    """The caller sees its own three alerts, newest first, with their status; the other
    tenant's alert is absent; filters by level, status and task apply."""
    mine, raises, positions = await _seed_alerts(producer)
    await _wait(client, positions)

    body = (await client.get("/alerts")).json()
    ids = [a["alert_id"] for a in body["alerts"]]
    assert ids == [e.payload.alert_id for e in reversed(raises)]  # type: ignore[attr-defined]
    assert body["next_cursor"] is None
    newest = body["alerts"][0]
    assert newest["level"] == "critical" and newest["code"] == "REPEATED_FAILURES"
    assert newest["status"] == "open" and newest["acknowledged"] is False
    assert newest["task_id"] == str(mine.task_id) and ":" in newest["position"]
    oldest = body["alerts"][-1]
    assert oldest["status"] == "cleared" and oldest["clear_reason"]

    async def listed(**params: str) -> list[str]:
        response = await client.get("/alerts", params=params)
        assert response.status_code == 200
        return [a["code"] for a in response.json()["alerts"]]

    assert await listed(level="critical") == ["REPEATED_FAILURES"]
    assert await listed(status="cleared") == ["STALLED"]
    assert await listed(task_id=str(mine.task_id), status="open") == [
        "REPEATED_FAILURES",
        "LOW_QUALITY",
    ]
    assert await listed(task_id=str(uuid.uuid4())) == []
    bad = await client.get("/alerts", params={"level": "loud"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_alerts_page_with_a_cursor(
    client: httpx.AsyncClient, producer: EventProducer
) -> None:
    """Two at a time: the second page holds the last alert and no further cursor; a cursor
    this API never issued is a 422."""
    _, raises, positions = await _seed_alerts(producer)
    await _wait(client, positions)

    first = (await client.get("/alerts", params={"limit": 2})).json()
    assert len(first["alerts"]) == 2 and first["next_cursor"]
    second = (
        await client.get("/alerts", params={"limit": 2, "cursor": first["next_cursor"]})
    ).json()
    assert [a["alert_id"] for a in second["alerts"]] == [raises[0].payload.alert_id]  # type: ignore[attr-defined]
    assert second["next_cursor"] is None
    bad = await client.get("/alerts", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 422
    assert bad.json()["error"]["details"]["errors"][0]["field"] == "query.cursor"


async def test_ack_publishes_alert_acknowledged_and_a_second_ack_is_409(
    client: httpx.AsyncClient, producer: EventProducer, settings: Settings, codec: Codec
) -> None:
    """The first ack answers 202 with the position of an alert.acknowledged on the alert's
    task, by the caller, with the note; once projected the alert reads as acknowledged and
    another ack is refused with 409."""
    mine, raises, positions = await _seed_alerts(producer)
    await _wait(client, positions)
    alert_id = raises[1].payload.alert_id  # type: ignore[attr-defined]

    response = await client.post(f"/alerts/{alert_id}/ack", json={"note": "looking at it"})

    assert response.status_code == 202
    accepted = response.json()
    assert accepted["alert_id"] == alert_id and accepted["status"] == "acknowledging"
    assert accepted["task_id"] == str(mine.task_id)
    record = await read_record(settings, Position.parse(accepted["position"]))
    event = codec.decode(record.value, tuple(record.headers))
    assert isinstance(event.payload, AlertAcknowledged)
    assert (event.payload.alert_id, event.payload.note) == (alert_id, "looking at it")
    assert event.task_id == mine.task_id and event.tenant_id == TENANT
    assert event.actor.kind == "user"

    again = await client.post(
        f"/alerts/{alert_id}/ack", params={"wait_for": accepted["position"]}, json={}
    )
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "ALERT_ALREADY_ACKNOWLEDGED"
    listed = (await client.get("/alerts", params={"level": "warning", "status": "open"})).json()
    [row] = listed["alerts"]
    assert row["acknowledged"] is True and row["note"] == "looking at it"
    assert row["acknowledged_by"] == event.actor.id


async def test_ack_of_an_unknown_or_foreign_alert_is_404(
    client: httpx.AsyncClient, producer: EventProducer
) -> None:
    """An alert that does not exist and an alert of another tenant read the same: 404. A
    body is optional, and a cleared alert can still be acknowledged."""
    theirs = submitted("theirs", tenant_id="globex")
    foreign = raised(theirs, "STALLED")
    mine = submitted("mine", tenant_id=TENANT)
    up = raised(mine, "STALLED")
    p1 = await _publish(producer, [theirs, foreign])
    p2 = await _publish(producer, [mine, up, cleared(up)])
    await _wait(client, f"{p1} {p2}")

    for alert_id in ("nope:STALLED:1", foreign.payload.alert_id):  # type: ignore[attr-defined]
        response = await client.post(f"/alerts/{alert_id}/ack")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "ALERT_NOT_FOUND"
    response = await client.post(f"/alerts/{up.payload.alert_id}/ack")  # type: ignore[attr-defined]
    assert response.status_code == 202


async def test_an_already_acknowledged_alert_from_the_log_is_409(
    client: httpx.AsyncClient, producer: EventProducer
) -> None:
    """An acknowledgement that came through the log by any means counts."""
    mine = submitted("mine", tenant_id=TENANT)
    up = raised(mine, "LOW_QUALITY")
    position = await _publish(producer, [mine, up, acknowledged(up)])
    response = await client.post(
        f"/alerts/{up.payload.alert_id}/ack",  # type: ignore[attr-defined]
        params={"wait_for": position},
    )
    assert response.status_code == 409
    assert response.json()["error"]["details"]["acknowledged_by"] == "bob"


async def test_a_tasks_evaluations_in_log_order(
    client: httpx.AsyncClient, producer: EventProducer
) -> None:
    """Each evaluation with its checks, prior, score, interval, confidence and decision; a
    task of another tenant, or none, is 404."""
    mine = submitted("judged task", tenant_id=TENANT)
    rejected = evaluation(mine, "search", 1, passed=1, failed=2, decision="retry", seconds=5)
    accepted = evaluation(mine, "search", 2, passed=3, seconds=9)
    position = await _publish(producer, [mine, rejected, accepted])

    response = await client.get(f"/tasks/{mine.task_id}/evaluations", params={"wait_for": position})

    assert response.status_code == 200
    body = response.json()
    assert body["task_id"] == str(mine.task_id)
    first, second = body["evaluations"]
    assert (first["attempt"], first["decision"], second["decision"]) == (1, "retry", "accept")
    assert first["checks"][0] == {"name": "check-0", "passed": True, "detail": ""}
    assert first["prior"] == {"alpha": 1.0, "beta": 1.0, "source": "default"}
    assert first["quality_score"] == 0.4 and len(first["interval"]) == 2
    assert first["suggestions"] == ["cite at least three sources"]
    assert first["role"] == "researcher" and first["tool"] == "web.search"
    assert first["model"] is None and ":" in first["position"]

    theirs = submitted("theirs", tenant_id="globex")
    p2 = await _publish(producer, [theirs, evaluation(theirs)])
    for task_id, wait in ((theirs.task_id, p2), (uuid.uuid4(), None)):
        params = {"wait_for": wait} if wait else {}
        missing = await client.get(f"/tasks/{task_id}/evaluations", params=params)
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "TASK_NOT_FOUND"


async def test_quality_insights_show_the_tenants_own_groups_of_the_pooled_fit(
    client: httpx.AsyncClient, producer: EventProducer
) -> None:
    """Before any fit: nothing. Then each group the tenant's own evaluations touched, from
    the newest converged fit that had it, with the tenant's own counts; a group only another
    tenant used stays hidden, and so does how many evaluations other tenants have; role and
    tool filter the groups."""
    empty = await client.get("/insights/quality")
    assert empty.status_code == 200 and empty.json() == {"groups": [], "last_fit": None}

    mine = submitted("judged", tenant_id=TENANT)
    theirs = submitted("judged elsewhere", tenant_id="globex")
    judged = [
        mine,
        evaluation(mine),
        evaluation(mine, "draft", role="writer", tool="llm.generate", model="gpt-4o-mini"),
        evaluation(mine, "draft", 2, role="writer", tool="llm.generate", model="gpt-4o-mini"),
        theirs,
        evaluation(theirs, role="analyst", tool="code.python"),
        evaluation(theirs, "again"),
    ]
    await _publish(producer, judged)
    fits = [
        fitted(
            "fit-1",
            [
                group(alpha=4, beta=4),
                group("writer", "llm.generate", "gpt-4o-mini"),
                group("analyst", "code.python"),
            ],
        ),
        fitted("fit-2", [group(alpha=9, beta=1)], minutes=10),
        fitted("fit-3", [group(alpha=1, beta=9)], minutes=20, converged=False),
    ]
    position = await _publish(producer, fits)
    response = await client.get("/insights/quality", params={"wait_for": position})

    body = response.json()
    researcher, writer = body["groups"]
    assert (researcher["role"], researcher["model"], researcher["alpha"]) == ("researcher", None, 9)
    assert researcher["fit_id"] == "fit-2" and researcher["mean"] == 0.9
    assert len(researcher["interval"]) == 2 and researcher["r_hat"] == 1.004
    assert researcher["evaluations"] == 1, "the tenant's own count, not the fit's"
    assert (writer["model"], writer["fit_id"], writer["evaluations"]) == ("gpt-4o-mini", "fit-1", 2)
    last = body["last_fit"]
    assert (last["fit_id"], last["converged"], last["r_hat_max"]) == ("fit-3", False, 1.31)
    assert last["reason"] and last["groups"] == 2 and last["evaluations"] == 3
    only = (await client.get("/insights/quality", params={"tool": "llm.generate"})).json()
    assert [g["role"] for g in only["groups"]] == ["writer"]


async def test_submit_refuses_bad_alert_thresholds(client: httpx.AsyncClient) -> None:
    """constraints.alerts is checked at submission: an out-of-bounds threshold is a 422
    naming it; good ones are accepted."""
    bad = await client.post(
        "/tasks",
        json={"description": "watched", "constraints": {"alerts": {"overrun_factor": 0.5}}},
    )
    assert bad.status_code == 422
    [error] = bad.json()["error"]["details"]["errors"]
    assert error["field"] == "body.constraints" and "overrun_factor" in error["message"]
    good = await client.post(
        "/tasks",
        json={"description": "watched", "constraints": {"alerts": {"stall_after_s": 30}}},
    )
    assert good.status_code == 202


async def test_the_inspection_routes_are_in_the_openapi_document(
    client: httpx.AsyncClient,
) -> None:
    """The four routes are documented with their bodies and standard error answers."""
    spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    assert {"level", "task_id", "status", "cursor"} <= {
        p["name"] for p in paths["/alerts"]["get"]["parameters"]
    }
    ack = paths["/alerts/{alert_id}/ack"]["post"]
    assert {"202", "404", "409"} <= set(ack["responses"])
    assert "404" in paths["/tasks/{task_id}/evaluations"]["get"]["responses"]
    assert "last_fit" in spec["components"]["schemas"]["QualityInsights"]["properties"]
