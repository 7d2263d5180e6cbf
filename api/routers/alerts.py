"""/alerts: the caller's alerts, newest first, and acknowledging one by publishing
alert.acknowledged.

An acknowledgement answers 202 with the event's log position; the alert reads as
acknowledged once the projector has applied it (``?wait_for=``). Two acknowledgements sent
before the first is projected are both accepted: the first on the log is the one kept.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Path, Query

from api._inspection import AlertCursor, fetch_alert, list_alerts
from api.deps import Principal, ResourcesDep, WaitFor, require, wait_for_position
from api.errors import AlertAlreadyAcknowledged, AlertNotFound, InvalidRequest
from api.inspection_models import (
    MAX_ALERT_ID,
    AcknowledgeAlert,
    AlertAccepted,
    AlertPage,
    AlertStatus,
)
from api.models import CURSOR_PATTERN, ErrorBody
from events import AlertAcknowledged, AlertLevel, Event

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/alerts", tags=["alerts"])

Reader = Annotated[Principal, require("alerts:read")]
Writer = Annotated[Principal, require("alerts:write", write=True)]

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in (404, 409, 422, 503)
}

AlertId = Annotated[str, Path(min_length=1, max_length=MAX_ALERT_ID)]


@router.get("", response_model=AlertPage, responses=_ERRORS, summary="List alerts")
@router.get("/", response_model=AlertPage, include_in_schema=False)
async def list_alerts_page(
    resources: ResourcesDep,
    principal: Reader,
    level: AlertLevel | None = None,
    task_id: uuid.UUID | None = None,
    status: AlertStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN, max_length=1024)] = None,
    wait_for: WaitFor = None,
) -> AlertPage:
    """The caller's alerts, newest first, a page at a time; filter by level, task and
    status (open or cleared)."""
    after = None
    if cursor is not None:
        try:
            after = AlertCursor.decode(cursor)
        except ValueError as exc:
            raise InvalidRequest("query.cursor", str(exc)) from exc
    await wait_for_position(resources, wait_for)
    async with resources.tenant_database.tenant(principal.tenant_id) as conn:
        alerts, next_page = await list_alerts(
            conn,
            principal.tenant_id,
            level=level,
            task_id=task_id,
            status=status,
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
) -> AlertAccepted:
    """Publish alert.acknowledged unless the alert is acknowledged already. A cleared alert
    can still be acknowledged: someone has looked at it."""
    await wait_for_position(resources, wait_for)
    async with resources.tenant_database.tenant(principal.tenant_id) as conn:
        alert = await fetch_alert(conn, principal.tenant_id, alert_id)
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
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        task_id=alert.task_id,
    )
    position = await resources.producer.publish(event)
    log.info(
        "alert acknowledged",
        alert_id=alert_id,
        task_id=str(alert.task_id),
        event_id=str(event.id),
        position=str(position),
    )
    return AlertAccepted(
        alert_id=alert_id, task_id=alert.task_id, status="acknowledging", position=str(position)
    )
