"""Agent status as the API reads it: the heartbeats' read model, per tenant.

Heartbeats are applied by the projector's own read model (and, for the rebuild, published
and projected for real); status is read through the API's tenant-scoped role. The tests
share one migrated database and start from empty agent tables.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from api._agents import KNOWN_AGENTS, AgentNotFound, AgentStatus, agent_status
from api._database import Database
from api.errors import status_of
from events import (
    SYSTEM_TENANT,
    Actor,
    AgentError,
    AgentHeartbeat,
    Event,
    EventProducer,
    PartitionLag,
    Position,
    TasksInFlight,
)
from projections import ADMIN, connect, migrate, rebuild
from projections._read_model_types import Applied
from projections._read_models import apply_all
from projections._runtime_models import RUNTIME_READ_MODELS
from wrenchai._workers import WORKERS
from wrenchai.settings import Settings

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ACME_TASKS = [uuid.uuid4(), uuid.uuid4()]
GLOBEX_TASK = uuid.uuid4()


def heartbeat(
    instance: str = "host-a:1",
    at: datetime = T0,
    *,
    agent_id: str = "journey-agent",
    partitions: tuple[int, ...] = (0, 1),
    error_tenant: str | None = "globex",
    **fields: Any,
) -> Event:
    """A heartbeat of ``instance`` at ``at``: two acme tasks and one globex task in flight,
    lag 3 and 4 on its partitions, and a failed globex job as its last error."""
    error = AgentError(
        code="JOB_FAILED",
        message="a job failed with ToolCrashed (attempt 1 of 3); it is retried",
        task_id={"globex": GLOBEX_TASK, "acme": ACME_TASKS[0]}.get(error_tenant or ""),
        tenant_id=error_tenant,
        at=at - timedelta(seconds=5),
    )
    content: dict[str, Any] = {
        "tasks_in_flight": {
            "acme": TasksInFlight(count=2, task_ids=sorted(ACME_TASKS)),
            "globex": TasksInFlight(count=1, task_ids=[GLOBEX_TASK]),
        },
        "last_error": error,
        **fields,
    }
    payload = AgentHeartbeat(
        agent_id=agent_id,
        instance=instance,
        started_at=T0 - timedelta(hours=1),
        interval_s=10.0,
        partitions=list(partitions),
        lag=[
            PartitionLag(partition=p, committed=10 * p, high_watermark=10 * p + 3 + i, lag=3 + i)
            for i, p in enumerate(partitions)
        ],
        jobs_running=3,
        **content,
    )
    return Event.new(
        payload,
        tenant_id=SYSTEM_TENANT,
        actor=Actor(kind="agent", id=agent_id),
        occurred_at=at,
    )


async def apply(db: asyncpg.Connection, *events: Event) -> None:
    """Fold heartbeats as the projector does (each in its own batch, in order)."""
    for offset, event in enumerate(events):
        await apply_all(db, [Applied(event, Position(0, offset))], models=RUNTIME_READ_MODELS)


@pytest.fixture(scope="module")
async def module_database(postgres_url: str) -> AsyncIterator[str]:
    """One database for the module, migrated once."""
    name = f"wrench_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield f"{postgres_url.rpartition('/')[0]}/{name}"
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def database_url(module_database: str) -> str:
    """The module's database for every test (instead of one per test)."""
    return module_database


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """The owner's connection, migrated, with no agent rows left by an earlier test."""
    conn = await connect(settings)
    await migrate(conn)
    await conn.execute("TRUNCATE agent_instances, agent_instance_tenants")
    yield conn
    await conn.close()


@pytest.fixture
async def api_db(settings: Settings, db: asyncpg.Connection) -> AsyncIterator[Database]:
    """The API's tenant-scoped pool (role wrench_api, row-level security)."""
    database = Database(settings, role=settings.api_database_role)
    yield database
    await database.close()


async def status(
    database: Database, tenant_id: str, now: datetime, agent_id: str = "journey-agent"
) -> AgentStatus:
    async with database.tenant(tenant_id) as conn:
        return await agent_status(conn, agent_id, tenant_id, now)


async def test_a_tenant_sees_its_own_tasks_in_flight_and_only_its_own_errors_details(
    db: asyncpg.Connection, api_db: Database
) -> None:
    """One heartbeat with tasks of acme and globex and a failed globex job: acme sees its
    two tasks and the error's code and time only; globex sees its task and the error's
    message and task; a third tenant sees no task. Partitions and lag are everyone's."""
    await apply(db, heartbeat())
    now = T0 + timedelta(seconds=5)
    acme, globex, other = [await status(api_db, t, now) for t in ("acme", "globex", "initech")]

    assert acme.tasks_in_flight == sorted(ACME_TASKS) and acme.tasks_in_flight_count == 2
    assert globex.tasks_in_flight == [GLOBEX_TASK] and globex.tasks_in_flight_count == 1
    assert (other.tasks_in_flight, other.tasks_in_flight_count) == ([], 0)

    assert acme.last_error is not None and globex.last_error is not None
    assert (acme.last_error.code, acme.last_error.at) == ("JOB_FAILED", T0 - timedelta(seconds=5))
    assert (acme.last_error.message, acme.last_error.task_id) == (None, None)
    assert globex.last_error.task_id == GLOBEX_TASK
    assert globex.last_error.message is not None and "ToolCrashed" in globex.last_error.message
    assert other.last_error == acme.last_error

    for seen in (acme, globex, other):
        assert (seen.state, seen.instances_up, seen.partitions) == ("up", 1, [0, 1])
        assert [(e.partition, e.lag) for e in seen.lag] == [(0, 3), (1, 4)]
        assert seen.lag_total == 7
        assert seen.instances[0].instance == "host-a:1"


async def test_row_level_security_keeps_each_tenants_part_of_a_heartbeat_to_itself(
    db: asyncpg.Connection, api_db: Database
) -> None:
    """On acme's connection, a query without any tenant filter reads only acme's row of
    agent_instance_tenants; the platform table carries no tenant's task or message."""
    await apply(db, heartbeat())
    async with api_db.tenant("acme") as conn:
        rows = await conn.fetch("SELECT tenant_id FROM agent_instance_tenants")
        assert [r["tenant_id"] for r in rows] == ["acme"]
        platform = await conn.fetchrow("SELECT * FROM agent_instances")
    assert platform is not None
    assert str(GLOBEX_TASK) not in str(dict(platform)) and "ToolCrashed" not in str(dict(platform))
    owner = await db.fetch("SELECT tenant_id FROM agent_instance_tenants ORDER BY tenant_id")
    assert [r["tenant_id"] for r in owner] == ["acme", "globex"]


async def test_an_instance_is_up_for_three_of_its_intervals_then_stale(
    db: asyncpg.Connection, api_db: Database
) -> None:
    """Heard from at T0 with a 10 s interval: up at T0+30 s, stale after; the agent's
    partitions, lag and tasks count only instances that are up, and its last error stays."""
    await apply(db, heartbeat())
    up = await status(api_db, "acme", T0 + timedelta(seconds=30))
    stale = await status(api_db, "acme", T0 + timedelta(seconds=30.5))
    assert (up.state, up.instances[0].state) == ("up", "up")
    assert (stale.state, stale.instances[0].state, stale.instances_up) == ("stale", "stale", 0)
    assert (stale.partitions, stale.lag, stale.lag_total) == ([], [], 0)
    assert (stale.tasks_in_flight, stale.tasks_in_flight_count) == ([], 0)
    assert stale.instances[0].tasks_in_flight == sorted(ACME_TASKS)
    assert stale.last_error is not None and stale.last_error.code == "JOB_FAILED"


async def test_several_instances_add_up_and_the_newest_error_is_the_agents(
    db: asyncpg.Connection, api_db: Database
) -> None:
    """Two instances up (partitions 0-1 and 2) and one stale: the agent holds 0, 1, 2,
    their lags add up, the stale one's tasks are not counted, up instances come first, and
    the last error is the newest of all (an acme error, shown in full to acme)."""
    third = uuid.uuid4()
    await apply(
        db,
        heartbeat("host-a:1", T0),
        heartbeat(
            "host-b:2",
            T0 + timedelta(seconds=2),
            partitions=(2,),
            error_tenant="acme",
            tasks_in_flight={"acme": TasksInFlight(count=1, task_ids=[third])},
        ),
        heartbeat(
            "host-c:3",
            T0 - timedelta(minutes=5),
            partitions=(0,),
            tasks_in_flight={"acme": TasksInFlight(count=1, task_ids=[uuid.uuid4()])},
        ),
    )
    seen = await status(api_db, "acme", T0 + timedelta(seconds=10))
    assert [(i.instance, i.state) for i in seen.instances] == [
        ("host-b:2", "up"),
        ("host-a:1", "up"),
        ("host-c:3", "stale"),
    ]
    assert seen.partitions == [0, 1, 2] and seen.lag_total == 3 + 4 + 3
    assert seen.tasks_in_flight == sorted([*ACME_TASKS, third])
    assert seen.tasks_in_flight_count == 3
    error = seen.last_error
    assert error is not None and error.instance == "host-b:2"
    assert error.task_id == ACME_TASKS[0] and error.message is not None  # acme's own error


async def test_an_older_or_repeated_heartbeat_changes_nothing(
    db: asyncpg.Connection, api_db: Database
) -> None:
    """A newer heartbeat with no tasks and no error, then the older one again (a
    redelivery, or a rebuild's replay of both): the newer stands."""
    old = heartbeat(at=T0)
    new = heartbeat(at=T0 + timedelta(seconds=10), tasks_in_flight={}, last_error=None)
    await apply(db, old, new, old, new)
    seen = await status(api_db, "acme", T0 + timedelta(seconds=11))
    assert seen.instances[0].last_heartbeat_at == T0 + timedelta(seconds=10)
    assert (seen.tasks_in_flight_count, seen.last_error) == (0, None)
    assert await db.fetchval("SELECT count(*) FROM agent_instance_tenants") == 0


async def test_an_instance_silent_for_a_day_is_forgotten_at_the_next_heartbeat(
    db: asyncpg.Connection, api_db: Database
) -> None:
    """An instance last heard from over a day before another instance's heartbeat of the
    same agent is removed with its tenants' rows; another agent's are kept."""
    await apply(
        db,
        heartbeat("host-a:1", T0),
        heartbeat("host-x:9", T0, agent_id="super-agent"),
        heartbeat("host-b:2", T0 + timedelta(days=1, seconds=1)),
    )
    rows = await db.fetch("SELECT agent_id, instance FROM agent_instances ORDER BY instance")
    assert [(r["agent_id"], r["instance"]) for r in rows] == [
        ("journey-agent", "host-b:2"),
        ("super-agent", "host-x:9"),
    ]
    left = await db.fetch("SELECT DISTINCT instance FROM agent_instance_tenants ORDER BY 1")
    assert [r["instance"] for r in left] == ["host-b:2", "host-x:9"]


async def test_an_unknown_agent_is_agent_not_found_and_a_silent_one_is_not_seen(
    db: asyncpg.Connection, api_db: Database
) -> None:
    """An id that is no agent raises AgentNotFound (404, naming the agents there are); an
    agent that never sent a heartbeat is not_seen, with nothing in it."""
    with pytest.raises(AgentNotFound) as caught:
        await status(api_db, "acme", T0, agent_id="cost-guardian")
    assert status_of(caught.value) == 404 and caught.value.code == "AGENT_NOT_FOUND"
    assert caught.value.details["agents"] == list(KNOWN_AGENTS)
    silent = await status(api_db, "acme", T0, agent_id="cost-guard")
    assert (silent.state, silent.instances, silent.last_error) == ("not_seen", [], None)


def test_the_known_agents_are_the_workers_and_their_actor_ids() -> None:
    """KNOWN_AGENTS names every worker `wrenchai worker` runs; each agent's actor id, which
    its heartbeats carry as agent_id, is its worker's name."""
    import importlib

    assert KNOWN_AGENTS == tuple(name for name, _ in WORKERS)
    for name, module_name in WORKERS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue  # an agent not built yet
        assert module.ACTOR.id == module.NAME == name


async def test_a_rebuild_keeps_agent_status_and_its_isolation(
    settings: Settings,
    db: asyncpg.Connection,
    producer: EventProducer,
    api_db: Database,
) -> None:
    """Heartbeats published and projected, then wrench.admin's read models rebuilt: the
    status reads the same, and each tenant still sees only its own row."""
    from projections import run_projector

    now = T0 + timedelta(seconds=1)
    await producer.publish_many(
        [heartbeat(), heartbeat("host-b:2", partitions=(2,), error_tenant="acme")]
    )
    stop = asyncio.Event()
    projector = asyncio.create_task(run_projector(settings, stop=stop))
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while await db.fetchval("SELECT count(*) FROM agent_instances") < 2:
            assert asyncio.get_running_loop().time() < deadline, "heartbeats not projected"
            await asyncio.sleep(0.1)
        before = await status(api_db, "acme", now)
        await rebuild(settings, ADMIN)
        assert await status(api_db, "acme", now) == before
        async with api_db.tenant("globex") as conn:
            rows = await conn.fetch("SELECT DISTINCT tenant_id FROM agent_instance_tenants")
            assert [r["tenant_id"] for r in rows] == ["globex"]
    finally:
        stop.set()
        await asyncio.wait_for(projector, 30)
