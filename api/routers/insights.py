"""/insights: what the log teaches about roles, tools and models across tasks."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api._inspection import fetch_quality
from api.deps import PrincipalDep, ResourcesDep, WaitFor, wait_for_position
from api.inspection_models import QualityInsights
from api.models import ErrorBody

router = APIRouter(prefix="/insights", tags=["insights"])

_ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorBody} for status in (422, 503)}


@router.get(
    "/quality", response_model=QualityInsights, responses=_ERRORS, summary="Quality posteriors"
)
async def get_quality(
    resources: ResourcesDep,
    principal: PrincipalDep,
    role: Annotated[str | None, Query(max_length=200)] = None,
    tool: Annotated[str | None, Query(max_length=200)] = None,
    wait_for: WaitFor = None,
) -> QualityInsights:
    """The quality posterior of each (role, tool, model) group from the newest converged fit
    of the hierarchical model that had the group, and the latest fit with its convergence.

    Fits pool every tenant's evaluations, so every caller reads the same figures; they
    describe roles, tools and models, never a tenant's tasks. Empty until the first fit.
    """
    del principal  # authenticated like every route; nothing here is tenant data
    await wait_for_position(resources, wait_for)
    async with resources.database.connection() as conn:
        groups, last_fit = await fetch_quality(conn, role=role, tool=tool)
    return QualityInsights(groups=groups, last_fit=last_fit)
