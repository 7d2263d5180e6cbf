"""/alerts: the caller's alerts, newest first, and acknowledging one by publishing
alert.acknowledged.

An acknowledgement answers 202 with the event's log position; the alert reads as
acknowledged once the projector has applied it (``?wait_for=``). Two acknowledgements sent
before the first is projected are both accepted: the first on the log is the one kept.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal, get_args

import structlog
from fastapi import APIRouter, Path, Query
from pydantic import AwareDatetime, BeforeValidator

from api._inspection import ALERT_DEFAULT_ORDER, ALERT_ORDERS, fetch_alert, list_alerts
from api._listing import MAX_FILTER_VALUES, check_range, page_order, split_commas
from api.deps import Principal, ResourcesDep, WaitFor, require, wait_for_position
from api.errors import AlertAlreadyAcknowledged, AlertNotFound, Forbidden
from api.inspection_models import (
    MAX_ALERT_ID,
    AcknowledgeAlert,
    AlertAccepted,
    AlertPage,
    AlertStatus,
)
from api.models import CURSOR_PATTERN
from api.openapi import responses_for
from events import SYSTEM_TENANT, AlertAcknowledged, AlertCode, AlertLevel, Event

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/alerts", tags=["alerts"])

Reader = Annotated[Principal, require("alerts:read")]
Writer = Annotated[Principal, require("alerts:write", write=True)]

_EXAMPLE_ALERT = "6f1c2a4e-8b0d-4c1e-9a57-3d2b1f0e4c88:STALLED:1"
_ERRORS = responses_for(
    404,
    409,
    422,
    503,
    examples={
        404: AlertNotFound(
            f"no alert {_EXAMPLE_ALERT}; an alert appears once it is projected",
            alert_id=_EXAMPLE_ALERT,
        ),
        409: AlertAlreadyAcknowledged(
            f"alert {_EXAMPLE_ALERT} was acknowledged by user-7c1d already",
            alert_id=_EXAMPLE_ALERT,
            acknowledged_by="user-7c1d",
            acknowledged_at="2026-03-01T12:04:10+00:00",
        ),
    },
)

AlertId = Annotated[str, Path(min_length=1, max_length=MAX_ALERT_ID)]

AlertSort = Literal["-raised_at", "raised_at"]
assert set(get_args(AlertSort)) == set(ALERT_ORDERS), "the sort parameter lists every order"


LevelFilter = Annotated[
    list[AlertLevel] | None,
    BeforeValidator(split_commas),
    Query(
        max_length=MAX_FILTER_VALUES,
        description="Only alerts of one of these levels: repeat the parameter or separate "
        "values with commas (level=warning,critical).",
    ),
]
SeverityFilter = Annotated[
    list[AlertLevel] | None,
    BeforeValidator(split_commas),
    Query(max_length=MAX_FILTER_VALUES, description="Another name of level."),
]
CodeFilter = Annotated[
    list[AlertCode] | None,
    BeforeValidator(split_commas),
    Query(max_length=MAX_FILTER_VALUES, description="Only alerts of one of these codes."),
]
Platform = Annotated[
    bool,
    Query(
        description="The platform's own alerts (the ResourceMonitor's: tenant _system, no "
        "task) instead of the caller's tenant's; for the platform's admin (tenants:admin).",
    ),
]


def _alert_tenant(principal: Principal, platform: bool) -> str:
    """The tenant whose alerts the request reads: the caller's, or the platform's."""
    if not platform:
        return principal.tenant_id
    if not principal.holds("tenants:admin"):
        raise Forbidden(
            "the platform's alerts are for the platform's admin (scope tenants:admin)",
            required=["tenants:admin"],
        )
    return SYSTEM_TENANT


StatusFilter = Annotated[
    list[AlertStatus] | None,
    BeforeValidator(split_commas),
    Query(max_length=MAX_FILTER_VALUES, description="Only open alerts, or only cleared ones."),
]


@router.get("", response_model=AlertPage, responses=_ERRORS, summary="List alerts")
@router.get("/", response_model=AlertPage, include_in_schema=False)
async def list_alerts_page(
    resources: ResourcesDep,
    principal: Reader,
    level: LevelFilter = None,
    severity: SeverityFilter = None,
    code: CodeFilter = None,
    task_id: uuid.UUID | None = None,
    status: StatusFilter = None,
    raised_after: Annotated[
        AwareDatetime | None,
        Query(description="Only alerts raised at or after this instant (with its offset)."),
    ] = None,
    raised_before: Annotated[
        AwareDatetime | None,
        Query(description="Only alerts raised before this instant (with its offset)."),
    ] = None,
    sort: Annotated[
        AlertSort | None,
        Query(
            description="raised_at, newest first with a leading '-'. Default -raised_at; "
            "with a cursor, the cursor's own order."
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN, max_length=1024)] = None,
    wait_for: WaitFor = None,
    platform: Platform = False,
) -> AlertPage:
    """The caller's alerts, newest first unless ``sort`` says otherwise, a page at a time.
    Filters combine with AND (``level`` and ``severity`` are one filter: either name, or
    both, adds values to it); pass them again with ``cursor`` for the next page. With
    ``platform=true``, the platform's alerts instead (the platform's admin only)."""
    tenant = _alert_tenant(principal, platform)
    check_range(raised_after, raised_before, name="raised")
    order, after = page_order(sort, cursor, orders=ALERT_ORDERS, default=ALERT_DEFAULT_ORDER)
    levels = None if level is None and severity is None else [*(level or ()), *(severity or ())]
    await wait_for_position(resources, wait_for)
    async with resources.tenant_database.tenant(tenant) as conn:
        alerts, next_page = await list_alerts(
            conn,
            tenant,
            level=levels,
            code=code,
            task_id=task_id,
            status=status,
            raised_after=raised_after,
            raised_before=raised_before,
            order=order,
            limit=limit,
            after=after,
        )
    return AlertPage(alerts=alerts, next_cursor=next_page.encode() if next_page else None)


@router.post(
    "/{alert_id}/ack",
    status_code=202,
    response_model=AlertAccepted,
    responses=_ERRORS,
    summary="Acknowledge an alert",
)
async def acknowledge_alert(
    alert_id: AlertId,
    resources: ResourcesDep,
    principal: Writer,
    body: AcknowledgeAlert | None = None,
    wait_for: WaitFor = None,
    platform: Platform = False,
) -> AlertAccepted:
    """Publish alert.acknowledged unless the alert is acknowledged already. A cleared alert
    can still be acknowledged: someone has looked at it. With ``platform=true``, one of the
    platform's alerts (the platform's admin only), acknowledged under its tenant."""
    tenant = _alert_tenant(principal, platform)
    await wait_for_position(resources, wait_for)
    async with resources.tenant_database.tenant(tenant) as conn:
        alert = await fetch_alert(conn, tenant, alert_id)
    if alert is None:
        raise AlertNotFound(
            f"no alert {alert_id}; an alert appears once it is projected", alert_id=alert_id
        )
    if alert.acknowledged:
        raise AlertAlreadyAcknowledged(
            f"alert {alert_id} was acknowledged by {alert.acknowledged_by} already",
            alert_id=alert_id,
            acknowledged_by=alert.acknowledged_by,
            acknowledged_at=alert.acknowledged_at.isoformat() if alert.acknowledged_at else None,
        )
    event = Event.new(
        AlertAcknowledged(alert_id=alert_id, note=body.note if body else None),
        tenant_id=tenant,
        actor=principal.actor,
        task_id=alert.task_id,
    )
    position = await resources.producer.publish(event)
    log.info(
        "alert acknowledged",
        alert_id=alert_id,
        task_id=str(alert.task_id) if alert.task_id else None,
        event_id=str(event.id),
        position=str(position),
    )
    return AlertAccepted(
        alert_id=alert_id, task_id=alert.task_id, status="acknowledging", position=str(position)
    )
