"""/insights: what the log teaches about roles, tools and models across tasks."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api._inspection import fetch_quality
from api.deps import Principal, ResourcesDep, WaitFor, require, wait_for_position
from api.inspection_models import QualityInsights
from api.openapi import responses_for
from projections import DatabaseUnavailable

router = APIRouter(prefix="/insights", tags=["insights"])

_ERRORS = responses_for(422, 503, examples={503: DatabaseUnavailable("postgres did not answer")})


@router.get(
    "/quality", response_model=QualityInsights, responses=_ERRORS, summary="Quality posteriors"
)
async def get_quality(
    resources: ResourcesDep,
    principal: Annotated[Principal, require("insights:read")],
    role: Annotated[str | None, Query(max_length=200)] = None,
    tool: Annotated[str | None, Query(max_length=200)] = None,
    wait_for: WaitFor = None,
) -> QualityInsights:
    """The quality posterior of each (role, tool, model) group from the newest converged fit
    of the hierarchical model that had the group, and the latest fit with its convergence.

    Fits pool every tenant's evaluations, but the caller sees only the groups its tenant's
    own evaluations touched, with its own counts. Empty until the first fit.
    """
    await wait_for_position(resources, wait_for)
    async with resources.tenant_database.tenant(principal.tenant_id) as conn:
        groups, last_fit = await fetch_quality(conn, principal.tenant_id, role=role, tool=tool)
    return QualityInsights(groups=groups, last_fit=last_fit)
