"""Tenant isolation: a principal of one tenant gets 404 for every id of another tenant on
every route with an id, and row-level security returns nothing of another tenant even to a
query that forgets (or gets wrong) its tenant filter."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from api._database import Database
from api._readmodels import fetch_history, fetch_task, list_tasks
from events import BudgetSet, Event, EventProducer, Position
from processors.cost import meter
from tests.api._support import seed_api_key, serve
from tests.api.test_access import SCOPE_OF
from tests.events.execution_samples import executed_task
from tests.events.inspection_samples import evaluation, raised
from tests.processors.cost.test_cost_guard import set_budget, usage
from tests.projections.conftest import eventually, submitted
from wrenchai.settings import Settings

pytestmark = pytest.mark.usefixtures("topics", "projector")

ISOLATED_TABLES = (
    "event_log",
    "tasks",
    "task_roles",
    "task_allocations",
    "task_plans",
    "task_stages",
    "task_thoughts",
    "tool_calls",
    "task_recoveries",
    "tool_stats",
    "evaluations",
    "alerts",
    "tenants",
    "users",
    "api_keys",
    "auth_sessions",
    "budgets",
    "cost_ledger",
    "budget_spend",
    "ledger_spends",
)


def _story(tenant_id: str) -> list[Event]:
    """A whole task of ``tenant_id``: planned, executed, judged and alerted."""
    task = submitted(f"work of {tenant_id}", tenant_id=tenant_id)
    return [*executed_task(task), evaluation(task), raised(task)]


async def _seed_user(db: asyncpg.Connection, tenant_id: str) -> str:
    user_id = uuid.uuid4().hex
    await db.execute(
        """INSERT INTO users (user_id, tenant_id, username, role, password_hash, created_at,
               updated_at, event_id)
           VALUES ($1, $2, $3, 'viewer', 'x', now(), now(), $4)""",
        user_id,
        tenant_id,
        f"{tenant_id}-{user_id[:6]}",
        uuid.uuid4(),
    )
    await db.execute(
        """INSERT INTO auth_sessions (session_id, tenant_id, user_id, refresh_id, expires_at,
               started_at)
           VALUES ($1, $2, $3, 'r', now() + interval '1 day', now())""",
        uuid.uuid4().hex,
        tenant_id,
        user_id,
    )
    return user_id


@pytest.fixture
async def two_tenants(
    db: asyncpg.Connection, settings: Settings, producer: EventProducer
) -> dict[str, dict[str, str]]:
    """Tenants acme and globex, each with a projected task story, a user, a session and an
    admin key; returns their ids by tenant."""
    seeded: dict[str, dict[str, str]] = {}
    for tenant_id in ("acme", "globex"):
        story = _story(tenant_id)
        await producer.publish_many(story)
        key_id = f"{tenant_id}-key"
        seeded[tenant_id] = {
            "task_id": str(story[0].task_id),
            "alert_id": f"{story[0].task_id}:STALLED:1",
            "user_id": await _seed_user(db, tenant_id),
            "key_id": key_id,
            "api_key": await seed_api_key(db, settings, tenant_id=tenant_id, key_id=key_id),
        }

    async def projected() -> bool:
        return bool(await db.fetchval("SELECT count(*) FROM alerts") == 2)

    await eventually(projected)
    for tenant_id, ids in seeded.items():
        # A budget and the CostGuard's ledger of one LLM call, as they would be written.
        await set_budget(
            db,
            BudgetSet(scope="tenant", scope_id=tenant_id, window="month", limit_usd=1.0),
            tenant_id=tenant_id,
        )
        spent = usage(uuid.UUID(ids["task_id"]), datetime.now(UTC), tenant_id=tenant_id)
        async with db.transaction():
            await meter(db, [(spent, Position(0, 0))])
    return seeded


async def test_every_route_with_an_id_answers_404_for_another_tenants_id(
    settings: Settings, two_tenants: dict[str, dict[str, str]]
) -> None:
    """acme's admin asks every route that takes an id for globex's ids: each answers 404,
    never 403 (which would confirm the id exists) and never the data; the same routes with
    acme's own ids answer."""
    acme, globex = two_tenants["acme"], two_tenants["globex"]
    bodies = {"/users/{user_id}/role": {"role": "viewer"}}
    # A budget's path names a scope inside the caller's own tenant, never another's id.
    routes = sorted({(m, p) for m, p in SCOPE_OF if "{" in p and not p.startswith("/budgets")})
    assert len(routes) >= 10
    async with serve(settings, api_key=acme["api_key"]) as client:
        for method, path in routes:
            foreign, own = path, path
            for name in ("task_id", "alert_id", "user_id", "key_id"):
                foreign = foreign.replace("{" + name + "}", globex[name])
                own = own.replace("{" + name + "}", acme[name])
            body = bodies.get(path)
            response = await client.request(method, foreign, json=body)
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["error"]["code"].endswith("NOT_FOUND"), response.text
            if method == "GET":
                mine = await client.request(method, own)
                assert mine.status_code == 200, (method, path, mine.text)


async def test_lists_hold_only_the_callers_tenant(
    settings: Settings, two_tenants: dict[str, dict[str, str]]
) -> None:
    """Listing tasks, alerts, keys and users shows only the caller's own."""
    acme, globex = two_tenants["acme"], two_tenants["globex"]
    async with serve(settings, api_key=acme["api_key"]) as client:
        for path in ("/tasks", "/alerts", "/api-keys", "/users", "/tools", "/insights/quality"):
            response = await client.get(path)
            assert response.status_code == 200, response.text
            text = response.text
            for value in globex.values():
                assert value not in text, (path, value)
        tasks = (await client.get("/tasks")).json()["tasks"]
        assert [t["task_id"] for t in tasks] == [acme["task_id"]]


async def test_row_level_security_hides_other_tenants_from_a_query_without_its_filter(
    settings: Settings, db: asyncpg.Connection, two_tenants: dict[str, dict[str, str]]
) -> None:
    """The backstop: on the API's tenant-scoped connection, a query with no tenant filter
    at all sees only the scoped tenant's rows in every isolated table, and the API's own
    queries given the wrong tenant find nothing; the owner sees both tenants."""
    acme, globex = two_tenants["acme"], two_tenants["globex"]
    database = Database(settings, role=settings.api_database_role)
    try:
        async with database.tenant("acme") as conn:
            assert await conn.fetchval("SELECT current_user") == "wrench_api"
            for table in ISOLATED_TABLES:
                tenants = {
                    r["tenant_id"] for r in await conn.fetch(f"SELECT tenant_id FROM {table}")
                }
                assert tenants == {"acme"}, (table, tenants)
                owner = await db.fetch(f"SELECT DISTINCT tenant_id FROM {table}")
                assert {"acme", "globex"} <= {r["tenant_id"] for r in owner}, table
            # The API's queries, handed globex's tenant on acme's connection: nothing.
            globex_task = uuid.UUID(globex["task_id"])
            assert await fetch_task(conn, "globex", globex_task) is None
            tasks, _ = await list_tasks(conn, "globex", status=None, limit=50, after=None)
            assert tasks == []
            topic = settings.topic("events")
            assert await fetch_history(conn, topic, "globex", globex_task) == []
            assert await fetch_task(conn, "acme", uuid.UUID(acme["task_id"])) is not None
        async with database.tenant("nobody") as conn:
            for table in ISOLATED_TABLES:
                assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table
        async with database.connection() as conn:
            # Outside a tenant transaction the setting is unset: nothing is visible.
            assert await conn.fetchval("SELECT count(*) FROM tasks") == 0
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DELETE FROM tasks")
    finally:
        await database.close()


async def test_a_tenants_writes_are_stamped_with_its_principal_not_the_body(
    settings: Settings, two_tenants: dict[str, dict[str, str]], producer: EventProducer
) -> None:
    """A body cannot choose the tenant: tenant_id in a submission is refused as an unknown
    field, and the event carries the caller's tenant and actor."""
    acme = two_tenants["acme"]
    async with serve(settings, api_key=acme["api_key"]) as client:
        refused = await client.post("/tasks", json={"description": "x", "tenant_id": "globex"})
        accepted = await client.post("/tasks", json={"description": "mine"})
    assert refused.status_code == 422
    assert accepted.status_code == 202
    body = accepted.json()
    async with serve(settings, api_key=acme["api_key"]) as client:
        task = (
            await client.get(f"/tasks/{body['task_id']}", params={"wait_for": body["position"]})
        ).json()
        events = (await client.get(f"/tasks/{body['task_id']}/events")).json()["events"]
    assert task["tenant_id"] == "acme"
    assert events[0]["tenant_id"] == "acme"
    assert events[0]["actor"] == {"kind": "user", "id": "apikey:acme-key"}
    assert Position.parse(body["position"])


async def test_quality_insights_are_per_tenant(
    settings: Settings, two_tenants: dict[str, dict[str, str]]
) -> None:
    """Before any fit neither tenant sees a group; the decision (a tenant sees only groups
    its own evaluations touched) is tested with fits in test_inspection_api."""
    for tenant in two_tenants.values():
        async with serve(settings, api_key=tenant["api_key"]) as client:
            body = (await client.get("/insights/quality")).json()
        assert body == {"groups": [], "last_fit": None}
