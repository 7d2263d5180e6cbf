"""GET /health: healthy only when the database and the broker both answer."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from api._resources import LogEnd
from events import SYSTEM, Event, EventProducer, TaskSubmitted
from processors.tools.builtin import CodePython
from tests.api._support import serve, set_projector_offset
from wrenchai.embedded import free_port
from wrenchai.settings import Settings

pytestmark = pytest.mark.usefixtures("db", "topics")

SANDBOX_MODES = {"isolated", "weak", "refused"}


def _checks(body: dict[str, Any]) -> dict[str, Any]:
    """The body without its informational ``sandbox`` part, which must be well formed."""
    rest = dict(body)
    sandbox = rest.pop("sandbox")
    assert sandbox["mode"] in SANDBOX_MODES and sandbox["detail"]
    return rest


async def test_health_is_200_with_the_projector_lag_when_all_is_up(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    """Both checks pass; the lag counts records the projector has not committed yet."""
    for _ in range(3):
        assert (await client.post("/tasks", json={"description": "d"})).status_code == 202

    response = await client.get("/health")

    assert response.status_code == 200
    assert _checks(response.json()) == {
        "status": "healthy",
        "checks": {"database": True, "broker": True, "projector_lag": 3},
    }


async def test_health_lag_falls_as_the_projector_commits(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    """Offsets the projector has stored no longer count as lag."""
    accepted = (await client.post("/tasks", json={"description": "d"})).json()
    partition, offset = map(int, accepted["position"].split(":"))
    await set_projector_offset(db, settings, partition, offset + 1)

    response = await client.get("/health")

    assert response.json()["checks"]["projector_lag"] == 0


async def test_health_is_503_when_the_broker_is_down(settings: Settings) -> None:
    """With nothing listening at the bootstrap address the app still starts, and health
    says unhealthy: broker false, database true, lag unknown."""
    down = settings.model_copy(
        update={"kafka_bootstrap": f"127.0.0.1:{free_port()}", "kafka_request_timeout_ms": 1000}
    )
    async with serve(down) as client:
        response = await client.get("/health")

    assert response.status_code == 503
    assert _checks(response.json()) == {
        "status": "unhealthy",
        "checks": {"database": True, "broker": False, "projector_lag": None},
    }


async def test_health_is_503_when_the_database_is_down(settings: Settings) -> None:
    """With nothing listening at the database address the app still starts, and health
    says unhealthy: database false, broker true."""
    down = settings.model_copy(
        update={"database_url": SecretStr(f"postgresql://postgres@127.0.0.1:{free_port()}/none")}
    )
    async with serve(down) as client:
        response = await client.get("/health")

    assert response.status_code == 503
    assert _checks(response.json()) == {
        "status": "unhealthy",
        "checks": {"database": False, "broker": True, "projector_lag": None},
    }


async def test_log_end_is_read_at_most_once_per_ttl(
    settings: Settings, producer: EventProducer
) -> None:
    """Health checks in quick succession share one read of the log end; a later one sees new
    records."""
    log_end = LogEnd(settings, ttl_s=60)
    first = await log_end.offsets(5)
    await producer.publish(
        Event.new(TaskSubmitted(description="d"), tenant_id="t", actor=SYSTEM, task_id=uuid.uuid4())
    )
    assert await log_end.offsets(5) is first
    log_end.ttl_s = 0
    assert sum((await log_end.offsets(5)).values()) == sum(first.values()) + 1


async def test_health_says_which_sandbox_mode_code_python_runs_in(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    """The mode and its reason, as the code.python tool of this machine reports them; on a
    machine with working bubblewrap that is ``isolated``."""
    expected = await CodePython(settings).sandbox()

    sandbox = (await client.get("/health")).json()["sandbox"]

    assert sandbox == {"mode": expected.mode, "detail": expected.detail}
