"""/budgets, /usage and /tasks/{task_id}/cost: budgets set and deleted by publishing on
wrench.admin, and what the CostGuard's ledger says was spent.

A budget change answers 202 with the event's log position; it reads back once the
projector has applied it (``?wait_for=``). Spend is the ledger's: usage the CostGuard has
counted, a moment behind the log.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated

import structlog
from fastapi import APIRouter, Path, Query

from api import _cost
from api.cost_models import (
    BudgetAccepted,
    BudgetList,
    GroupBy,
    Interval,
    SetBudget,
    TaskCost,
    UsageReport,
)
from api.deps import Principal, ResourcesDep, WaitFor, require, wait_for_position
from api.errors import BudgetNotFound, Forbidden, InvalidRequest, TaskNotFound
from api.openapi import responses_for
from events import BudgetDeleted, BudgetScope, BudgetSet, Event
from projections import ADMIN

log = structlog.get_logger(__name__)

router = APIRouter(tags=["cost"])

BudgetReader = Annotated[Principal, require("budgets:read")]
BudgetWriter = Annotated[Principal, require("budgets:write", write=True)]
UsageReader = Annotated[Principal, require("usage:read")]

_ERRORS = responses_for(
    404,
    422,
    503,
    examples={
        404: BudgetNotFound(
            "no user budget for alice; a budget set a moment ago appears once it is projected",
            scope="user",
            scope_id="alice",
        ),
    },
)
ScopeId = Annotated[str, Path(min_length=1, max_length=200)]
MAX_HOURLY_RANGE = timedelta(days=31)
"""The longest range /usage splits into hours (744 buckets a group): longer, ask for days."""


def _check_scope(principal: Principal, scope: BudgetScope, scope_id: str) -> None:
    """A tenant budget names the caller's tenant; a task budget names a task id."""
    if scope == "tenant" and scope_id != principal.tenant_id:
        raise Forbidden(
            f"a tenant budget can only be set for your own tenant {principal.tenant_id!r}",
            scope_id=scope_id,
        )
    if scope == "task":
        try:
            uuid.UUID(scope_id)
        except ValueError:
            raise InvalidRequest(
                "path.scope_id", "a task budget's scope_id is a task id (a UUID)"
            ) from None


@router.put(
    "/budgets/{scope}/{scope_id}",
    status_code=202,
    response_model=BudgetAccepted,
    responses=responses_for(403, 422, 503),
    summary="Set a budget",
)
async def set_budget(
    scope: BudgetScope,
    scope_id: ScopeId,
    body: SetBudget,
    resources: ResourcesDep,
    principal: BudgetWriter,
) -> BudgetAccepted:
    """Create the scope's budget or replace it. Scopes: tenant (your tenant's id), user (a
    user id), key (an API key id), task (a task id), model (a model name) or playbook."""
    _check_scope(principal, scope, scope_id)
    event = Event.new(
        BudgetSet(scope=scope, scope_id=scope_id, **body.model_dump()),
        tenant_id=principal.tenant_id,
        actor=principal.actor,
    )
    position = await resources.producer.publish(event)
    log.info("budget set", scope=scope, event_id=str(event.id), position=str(position))
    return BudgetAccepted(scope=scope, scope_id=scope_id, status="setting", position=str(position))


@router.delete(
    "/budgets/{scope}/{scope_id}",
    status_code=202,
    response_model=BudgetAccepted,
    responses=_ERRORS,
    summary="Delete a budget",
)
async def delete_budget(
    scope: BudgetScope,
    scope_id: ScopeId,
    resources: ResourcesDep,
    principal: BudgetWriter,
    wait_for: WaitFor = None,
) -> BudgetAccepted:
    """The scope's budget no longer applies (404 when it has none)."""
    await wait_for_position(resources, wait_for, ADMIN)
    async with resources.tenant_database.tenant(principal.tenant_id) as conn:
        found = await _cost.budget_exists(conn, principal.tenant_id, scope, scope_id)
    if not found:
        raise BudgetNotFound(
            f"no {scope} budget for {scope_id}; a budget set a moment ago appears once it is "
            "projected: pass the position its PUT returned as ?wait_for=",
            scope=scope,
            scope_id=scope_id,
        )
    event = Event.new(
        BudgetDeleted(scope=scope, scope_id=scope_id),
        tenant_id=principal.tenant_id,
        actor=principal.actor,
    )
    position = await resources.producer.publish(event)
    return BudgetAccepted(scope=scope, scope_id=scope_id, status="deleting", position=str(position))


@router.get(
    "/budgets",
    response_model=BudgetList,
    responses=responses_for(422, 503),
    summary="List budgets with their spend",
)
async def list_budgets(
    resources: ResourcesDep, principal: BudgetReader, wait_for: WaitFor = None
) -> BudgetList:
    """Every budget of your tenant with what its current window has spent, what remains and
    when the window ends."""
    await wait_for_position(resources, wait_for, ADMIN)
    async with resources.tenant_database.tenant(principal.tenant_id) as conn:
        items = await _cost.list_budgets(conn, principal.tenant_id, datetime.now(UTC))
    return BudgetList(items=items)


@router.get(
    "/usage",
    response_model=UsageReport,
    response_model_by_alias=True,
    responses=responses_for(422, 503),
    summary="Report LLM usage",
)
async def usage(
    resources: ResourcesDep,
    principal: UsageReader,
    group_by: Annotated[GroupBy, Query(description="What to group the usage by.")] = "model",
    from_: Annotated[
        datetime | None,
        Query(alias="from", description="From this instant on (inclusive, with a zone)."),
    ] = None,
    to: Annotated[
        datetime | None, Query(description="Up to this instant (exclusive, with a zone).")
    ] = None,
    interval: Annotated[
        Interval | None,
        Query(
            description="Also each group's usage per UTC hour or day (its series). hour needs "
            "from, over at most 31 days."
        ),
    ] = None,
) -> UsageReport:
    """Your tenant's LLM calls, tokens of each kind and dollars over [from, to), grouped by
    model, user, API key, task, playbook or UTC day; with an interval, each group's and the
    total's usage over time too."""
    for name, value in (("from", from_), ("to", to)):
        if value is not None and value.tzinfo is None:
            raise InvalidRequest(f"query.{name}", "give the instant with its time zone (…Z)")
    if from_ is not None and to is not None and to < from_:
        raise InvalidRequest("query.to", "to is earlier than from: the range [from, to) is empty")
    if interval == "hour":
        _check_hourly_range(from_, to)
    async with resources.tenant_database.tenant(principal.tenant_id) as conn:
        return await _cost.usage_report(conn, principal.tenant_id, group_by, from_, to, interval)


def _check_hourly_range(from_: datetime | None, to: datetime | None) -> None:
    """Hours are asked for over a bounded range: from given, and to (or now) at most
    MAX_HOURLY_RANGE after it."""
    if from_ is None:
        raise InvalidRequest(
            "query.from", "interval=hour needs from (and at most 31 days up to to or now)"
        )
    if (to or datetime.now(UTC)) - from_ > MAX_HOURLY_RANGE:
        raise InvalidRequest(
            "query.interval",
            "interval=hour covers at most 31 days: shorten [from, to) or ask for interval=day",
        )


@router.get(
    "/tasks/{task_id}/cost",
    response_model=TaskCost,
    responses=responses_for(
        404,
        422,
        503,
        examples={
            404: TaskNotFound(
                "no task 6f1c2a4e-8b0d-4c1e-9a57-3d2b1f0e4c88",
                task_id="6f1c2a4e-8b0d-4c1e-9a57-3d2b1f0e4c88",
            )
        },
    ),
    summary="A task's cost",
)
async def task_cost(
    task_id: uuid.UUID,
    resources: ResourcesDep,
    principal: UsageReader,
    wait_for: WaitFor = None,
) -> TaskCost:
    """The plan's estimate against what the task spent, per stage and per LLM call."""
    await wait_for_position(resources, wait_for)
    async with resources.tenant_database.tenant(principal.tenant_id) as conn:
        cost = await _cost.task_cost(conn, principal.tenant_id, task_id)
    if cost is None:
        raise TaskNotFound(
            f"no task {task_id}; a task submitted a moment ago appears once it is projected: "
            "pass the position its submission returned as ?wait_for=",
            task_id=str(task_id),
        )
    return cost
