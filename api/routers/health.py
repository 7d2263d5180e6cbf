"""/health: whether this API can serve, for load balancers and operators."""

from __future__ import annotations

import asyncio

import asyncpg
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api import _examples as ex
from api._readmodels import projector_lag
from api._resources import Resources
from api.deps import ResourcesDep
from api.models import Health, HealthChecks, McpServerHealth, SandboxHealth
from processors.tools.builtin import CodePython
from processors.tools.descriptors import CODE_PYTHON
from wrenchai.errors import WrenchError

router = APIRouter(tags=["health"])

DATABASE_TIMEOUT_S = 2.0
BROKER_TIMEOUT_S = 2.0
LAG_TIMEOUT_S = 3.0


async def database_ok(resources: Resources) -> bool:
    """Postgres answers ``SELECT 1`` within a short deadline."""
    try:
        async with asyncio.timeout(DATABASE_TIMEOUT_S):
            async with resources.database.connection() as conn:
                return bool(await conn.fetchval("SELECT 1") == 1)
    except (WrenchError, TimeoutError, asyncpg.PostgresError):
        return False


async def lag_or_none(resources: Resources) -> int | None:
    """How far the projector trails the log; None when it cannot be told quickly."""
    settings = resources.settings
    try:
        async with asyncio.timeout(LAG_TIMEOUT_S):
            ends = await resources.log_end.offsets(LAG_TIMEOUT_S)
            async with resources.database.connection() as conn:
                return await projector_lag(conn, settings, ends)
    except (WrenchError, TimeoutError, asyncpg.PostgresError):
        return None


async def sandbox_health(resources: Resources) -> SandboxHealth:
    """How code.python runs on this machine; the tool probes once, then remembers."""
    tool = resources.tools.tools.get(CODE_PYTHON.name)
    if not isinstance(tool, CodePython):
        return SandboxHealth(mode="refused", detail="code.python is not loaded here")
    status = await tool.sandbox()
    return SandboxHealth(mode=status.mode, detail=status.detail)


async def mcp_health(resources: Resources) -> list[McpServerHealth] | None:
    """Each configured MCP server's ping (this API's own connection to it), in the order of
    WRENCH_MCP_SERVERS; None when none is configured."""
    found = resources.tools.mcp_servers(resources.settings)
    if found is None:
        return None
    servers, board = found
    answers = await board.current()
    return [
        McpServerHealth(
            name=name,
            transport=connection.config.transport,
            ok=answers[name].ok,
            detail=answers[name].detail,
            checked_at=answers[name].checked_at,
        )
        for name, connection in servers.connections.items()
    ]


@router.get(
    "/health",
    response_model=Health,
    responses={
        503: {
            "model": Health,
            "description": "The database or the broker is down.",
            "content": {"application/json": {"example": ex.UNHEALTHY}},
        }
    },
    summary="Health",
)
async def health(resources: ResourcesDep) -> JSONResponse:
    """``healthy`` (200) when both the database and the broker answer, else 503.

    The projector's lag is informational: a lagging projector makes reads stale, not wrong.
    So is ``sandbox``: the mode code.python runs in on this machine (docs/tools.md), and so
    is ``mcp_servers``: whether each configured MCP server answers a ping, present only when
    some are configured (docs/mcp-tools.md).
    """
    database, broker, sandbox, mcp = await asyncio.gather(
        database_ok(resources),
        resources.broker.reachable(BROKER_TIMEOUT_S),
        sandbox_health(resources),
        mcp_health(resources),
    )
    lag = await lag_or_none(resources) if database and broker else None
    healthy = database and broker
    body = Health(
        status="healthy" if healthy else "unhealthy",
        checks=HealthChecks(database=database, broker=broker, projector_lag=lag),
        sandbox=sandbox,
        mcp_servers=mcp,
    )
    shown = body.model_dump(mode="json", exclude={"mcp_servers"} if mcp is None else None)
    return JSONResponse(shown, status_code=200 if healthy else 503)
