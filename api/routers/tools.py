"""/tools: the tool registry, with what the log says of each tool in the caller's tenant and
each tool's health."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from api._execution import fetch_tool_stats, no_calls
from api.deps import Principal, ResourcesDep, WaitFor, require, wait_for_position
from api.models import ToolCostHints, ToolHealthReport, ToolInfo, ToolList
from api.openapi import responses_for
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
    """Every tool of the agents' registry (the built-in tools and those of
    WRENCH_TOOL_MODULES; the newest version of each) by name: the descriptor, statistics of
    its calls in the caller's tenant, overall and per task type, and its health (probed at
    most every 30 s, each probe given 2 s; null for a descriptor with no implementation)."""
    await wait_for_position(resources, wait_for)
    async with resources.tenant_database.tenant(principal.tenant_id) as conn:
        observed = await fetch_tool_stats(conn, principal.tenant_id)
    health = await resources.tools.current()
    tools = []
    for spec in resources.tool_registry:
        report = health.get(spec.name)
        tools.append(
            ToolInfo(
                name=spec.name,
                version=spec.version,
                description=spec.description,
                capabilities=list(spec.capabilities),
                offline=spec.offline,
                uses_llm=spec.uses_llm,
                side_effects=spec.side_effects,
                idempotent=spec.idempotent,
                cost=ToolCostHints.model_validate(spec.cost.model_dump()),
                observed=observed.get(spec.name) or no_calls(),
                health=None
                if report is None
                else ToolHealthReport(
                    ok=report.ok, detail=report.detail, checked_at=report.checked_at
                ),
            )
        )
    return ToolList(tools=tools)
