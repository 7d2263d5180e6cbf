"""GET /metrics: the API process's Prometheus metrics, for a credential holding metrics:read
(the operator and admin roles, or a key issued with only that scope), in the error shape
otherwise."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from api import create_app
from events import role_scopes
from tests.api._support import seed_api_key, serve
from tests.metrics_support import samples, value
from wrenchai import metrics
from wrenchai.settings import Settings

pytestmark = pytest.mark.usefixtures("topics")


async def test_metrics_refuse_a_caller_without_credentials_or_without_the_scope(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """No credential: 401 UNAUTHENTICATED with a Bearer challenge; a viewer's key (no
    metrics:read): 403 FORBIDDEN naming the scope. Neither answer carries any metric."""
    viewer = await seed_api_key(db, settings, scopes=sorted(role_scopes("viewer")))
    async with serve(settings) as client:
        anonymous = await client.get("/metrics")
        refused = await client.get("/metrics", headers={"X-API-Key": viewer})

    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert anonymous.json()["error"]["code"] == "UNAUTHENTICATED"
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["code"] == "FORBIDDEN" and error["details"]["required"] == ["metrics:read"]
    assert "wrench_" not in anonymous.text + refused.text


async def test_metrics_count_a_submitted_task_for_a_bearer_key_that_holds_only_the_scope(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """Prometheus scrapes with a key issued with metrics:read alone, sent as a bearer token:
    after a task is submitted, the exposition (text format, parsed as Prometheus parses it)
    counts task.submitted under processor="api" and carries the process collector's CPU and
    memory."""
    operator = await seed_api_key(db, settings, scopes=sorted(role_scopes("operator")))
    scraper = await seed_api_key(db, settings, scopes=["metrics:read"])
    async with serve(settings, api_key=operator) as client:
        submitted = await client.post("/tasks", json={"description": "count me"})
        assert submitted.status_code == 202, submitted.text
        response = await client.get(
            "/metrics", headers={"X-API-Key": "", "Authorization": f"Bearer {scraper}"}
        )

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    produced = value(text, "wrench_events_produced_total", processor="api", type="task.submitted")
    assert produced is not None and produced >= 1
    memory = value(text, "process_resident_memory_bytes")
    assert memory is not None and memory > 0
    assert samples(text, "process_cpu_seconds_total")


async def test_a_tenant_sees_only_its_own_tenant_labelled_series(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """A budget's spend ratio is labelled with its tenant: an operator of tenant A sees A's
    and not B's; the platform's bootstrap admin (tenants:admin) sees both."""
    metrics.set_budget_ratio("metrics-a", "tenant", "metrics-a", 0.25)
    metrics.set_budget_ratio("metrics-b", "tenant", "metrics-b", 0.75)
    own = await seed_api_key(
        db, settings, tenant_id="metrics-a", scopes=sorted(role_scopes("operator"))
    )
    platform = await seed_api_key(
        db, settings, scopes=sorted(role_scopes("admin") | {"tenants:admin"})
    )
    try:
        async with serve(settings) as client:
            mine = (await client.get("/metrics", headers={"X-API-Key": own})).text
            everyone = (await client.get("/metrics", headers={"X-API-Key": platform})).text
    finally:
        for tenant in ("metrics-a", "metrics-b"):
            metrics.forget_budget(tenant, "tenant", tenant)

    tenants = {s.labels["tenant_id"] for s in samples(mine, "wrench_budget_spend_ratio")}
    assert tenants == {"metrics-a"}
    assert value(mine, "wrench_budget_spend_ratio", tenant_id="metrics-a") == 0.25
    found = {s.labels["tenant_id"] for s in samples(everyone, "wrench_budget_spend_ratio")}
    assert {"metrics-a", "metrics-b"} <= found


async def test_open_streams_are_a_gauge_by_protocol(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """Each stream the hub admits counts in wrench_stream_connections{protocol} while it
    is open, and no longer once it is released."""
    key = await seed_api_key(db, settings, scopes=["metrics:read"])
    app: FastAPI = create_app(settings)

    async def streams(client: httpx.AsyncClient, protocol: str) -> float:
        text = (await client.get("/metrics")).text
        return value(text, "wrench_stream_connections", protocol=protocol) or 0.0

    async with serve(settings, app, api_key=key) as client:
        hub = app.state.resources.streams
        before = await streams(client, "sse")
        admission = hub.admit("key:metrics-test", "sse")
        during = await streams(client, "sse")
        admission.release()
        admission.release()  # released once, counted once
        after = await streams(client, "sse")

    assert (during - before, after - before) == (1.0, 0.0)
