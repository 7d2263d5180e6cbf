"""/tools: the tools the agents may use, with what the log says of each tool in the caller's
tenant and each tool's health."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter

from api._execution import fetch_tool_stats, no_calls
from api._resources import Resources
from api.deps import Principal, ResourcesDep, WaitFor, require, wait_for_position
from api.models import ObservedStats, ToolCostHints, ToolHealthReport, ToolInfo, ToolList
from api.openapi import responses_for
from processors.tools import ToolSpec
from processors.tools.builtin import ToolHealth
from projections import DatabaseUnavailable

router = APIRouter(prefix="/tools", tags=["tools"])

_ERRORS = responses_for(422, 503, examples={503: DatabaseUnavailable("postgres did not answer")})


@router.get("", response_model=ToolList, responses=_ERRORS, summary="List tools")
@router.get("/", response_model=ToolList, include_in_schema=False)
async def list_tools(
    resources: ResourcesDep,
    principal: Annotated[Principal, require("tools:read")],
    wait_for: WaitFor = None,
) -> ToolList:
    """Every tool the agents may use, by name: the built-in tools, those of
    WRENCH_TOOL_MODULES and those of the MCP servers of WRENCH_MCP_SERVERS
    (``mcp.<server>.<tool>``), the newest version of each. For each: the descriptor,
    statistics of its calls in the caller's tenant, overall and per task type, and its
    health (probed at most every 30 s, each probe given 2 s; null for a descriptor with no
    implementation).

    An MCP tool's health is its server's ping from this API, refreshed every
    WRENCH_MCP_PROBE_INTERVAL_S. A server's tools are listed from the first ping it answers
    (a server down when the API started shows its tools once it is reachable) and stay
    listed, not ok, while it is down; a server never reached has none listed."""
    await wait_for_position(resources, wait_for)
    async with resources.tenant_database.tenant(principal.tenant_id) as conn:
        observed = await fetch_tool_stats(conn, principal.tenant_id)
    health, mcp = await asyncio.gather(resources.tools.current(), _mcp_tools(resources))
    listed = [(spec, health.get(spec.name)) for spec in resources.tool_registry]
    # A registered tool keeps its name: the agents leave out an MCP tool named like it.
    listed += [(spec, report) for spec, report in mcp if spec.name not in resources.tool_registry]
    listed.sort(key=lambda pair: pair[0].name)
    return ToolList(
        tools=[
            _tool_info(spec, observed.get(spec.name) or no_calls(), report)
            for spec, report in listed
        ]
    )


async def _mcp_tools(resources: Resources) -> list[tuple[ToolSpec, ToolHealth]]:
    board = resources.tools.mcp(resources.settings)
    return [] if board is None else await board.tools()


def _tool_info(spec: ToolSpec, observed: ObservedStats, report: ToolHealth | None) -> ToolInfo:
    return ToolInfo(
        name=spec.name,
        version=spec.version,
        description=spec.description,
        capabilities=list(spec.capabilities),
        offline=spec.offline,
        uses_llm=spec.uses_llm,
        side_effects=spec.side_effects,
        idempotent=spec.idempotent,
        cost=ToolCostHints.model_validate(spec.cost.model_dump()),
        observed=observed,
        health=None
        if report is None
        else ToolHealthReport(ok=report.ok, detail=report.detail, checked_at=report.checked_at),
    )
