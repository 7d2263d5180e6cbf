"""/audit: the tenant's events from the archive, and any task's state as of a point of its
log (time travel). Both read the archive, never the read models, and need ``audit:read``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from api._audit_events import ActorFilter, EventCursor, EventFilters, list_events
from api._task_state import AsOfPoint, NoTaskState, fetch_task_records, task_state
from api.audit_models import AuditEventPage, TaskState
from api.deps import Principal, ResourcesDep, require
from api.errors import InvalidRequest, TaskNotFound
from api.models import CURSOR_PATTERN
from api.openapi import responses_for
from events import catalog

router = APIRouter(prefix="/audit", tags=["audit"])

Auditor = Annotated[Principal, require("audit:read")]

_EVENTS_ERRORS = responses_for(
    422,
    503,
    examples={
        422: [
            InvalidRequest(
                "query.to",
                "'to' (2026-03-01T00:00:00+00:00) must come after 'from' "
                "(2026-03-02T00:00:00+00:00)",
            ),
            InvalidRequest(
                "query.cursor", "not a cursor from this API; pass next_cursor back as is"
            ),
        ]
    },
)
_STATE_ERRORS = responses_for(
    404,
    422,
    503,
    examples={
        404: TaskNotFound(
            "no task 6f1c2a4e-8b0d-4c1e-9a57-3d2b1f0e4c88 in the archive",
            task_id="6f1c2a4e-8b0d-4c1e-9a57-3d2b1f0e4c88",
        ),
        422: InvalidRequest(
            "query.as_of",
            "as_of is a log position (PARTITION:OFFSET, e.g. 2:41) or an ISO 8601 time "
            "(e.g. 2026-03-01T12:00:00Z), not 'yesterday'",
        ),
    },
)
MAX_TYPES = 50


def _utc(value: datetime | None) -> datetime | None:
    """A time without an offset is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _types(values: list[str] | None) -> list[str]:
    """``type`` given once per type or comma separated, each a type of the catalog."""
    wanted = sorted({t.strip() for v in values or () for t in v.split(",") if t.strip()})
    if len(wanted) > MAX_TYPES:
        raise InvalidRequest("query.type", f"at most {MAX_TYPES} event types at once")
    known = set(catalog.types())
    unknown = [t for t in wanted if t not in known]
    if unknown:
        raise InvalidRequest(
            "query.type",
            f"unknown event type(s) {', '.join(unknown)}; the catalog (docs/events.md) "
            f"has {', '.join(sorted(known))}",
        )
    return wanted


@router.get(
    "/events", response_model=AuditEventPage, responses=_EVENTS_ERRORS, summary="Audit events"
)
async def list_audit_events(
    resources: ResourcesDep,
    principal: Auditor,
    start: Annotated[
        datetime | None,
        Query(
            alias="from",
            description="Events that occurred at or after this time (ISO 8601; UTC when no "
            "offset is given).",
        ),
    ] = None,
    end: Annotated[
        datetime | None,
        Query(alias="to", description="Events that occurred before this time (exclusive)."),
    ] = None,
    type: Annotated[
        list[str] | None,
        Query(
            description="Event types: repeat the parameter or separate them with commas.",
            examples=["task.submitted,task.completed"],
        ),
    ] = None,
    actor: Annotated[
        str | None,
        Query(
            max_length=256,
            description="Who caused them: KIND or KIND:ID, e.g. user:<user id>, "
            "user:apikey:<key id>, agent:journey-agent, system:api.",
        ),
    ] = None,
    task_id: Annotated[uuid.UUID | None, Query(description="Events of this task.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN, max_length=512)] = None,
) -> AuditEventPage:
    """The caller's tenant's events on both logs (tasks, and users, keys and security
    facts), oldest first by when they occurred, decrypted and upcast, a page at a time."""
    start, end = _utc(start), _utc(end)
    if start is not None and end is not None and end <= start:
        raise InvalidRequest(
            "query.to", f"'to' ({end.isoformat()}) must come after 'from' ({start.isoformat()})"
        )
    after = None
    if cursor is not None:
        try:
            after = EventCursor.decode(cursor)
        except ValueError as exc:
            raise InvalidRequest("query.cursor", str(exc)) from exc
    try:
        who = ActorFilter.parse(actor) if actor is not None else None
    except ValueError as exc:
        raise InvalidRequest("query.actor", str(exc)) from exc
    filters = EventFilters(start, end, _types(type), who, task_id)
    settings = resources.settings
    async with resources.tenant_database.tenant(principal.tenant_id) as conn:
        events, next_page = await list_events(
            conn,
            resources.codec,
            tenant_id=principal.tenant_id,
            topics=[settings.topic("events"), settings.topic("admin")],
            filters=filters,
            limit=limit,
            after=after,
        )
    return AuditEventPage(events=events, next_cursor=next_page.encode() if next_page else None)


@router.get(
    "/tasks/{task_id}/state",
    response_model=TaskState,
    responses=_STATE_ERRORS,
    summary="A task's state as of a point of its log",
)
async def get_task_state(
    task_id: uuid.UUID,
    resources: ResourcesDep,
    principal: Auditor,
    as_of: Annotated[
        str | None,
        Query(
            max_length=64,
            description="A log position of the task (PARTITION:OFFSET, as its history and "
            "its writes give them) or a time (ISO 8601): the state after that event, or "
            "after the task's last event that occurred by then. Absent: as of its last event.",
            examples=["2:41", "2026-03-01T12:00:00Z"],
        ),
    ] = None,
) -> TaskState:
    """The task's state folded from its own events in the archive, up to and including
    ``as_of``, by the agents' own functions: status, roles, plan, steps with every attempt,
    evaluations, tokens and cost, and each agent's view. ``task``, ``steps`` and
    ``evaluations`` read as ``GET /tasks/{task_id}``, ``/steps`` and ``/evaluations`` read
    when the read models stood at that event."""
    try:
        point = AsOfPoint.parse(as_of) if as_of is not None else None
    except ValueError as exc:
        raise InvalidRequest("query.as_of", str(exc)) from exc
    topic = resources.settings.topic("events")
    async with resources.tenant_database.tenant(principal.tenant_id) as conn:
        found = await fetch_task_records(conn, topic, principal.tenant_id, task_id, point)
    try:
        return await task_state(found, resources.codec, task_id, point)
    except ValueError as exc:
        raise InvalidRequest("query.as_of", str(exc)) from exc
    except NoTaskState as exc:
        raise TaskNotFound(exc.message, **exc.details) from exc
