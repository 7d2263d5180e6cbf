"""/tasks: submit and cancel by publishing events; read from the read models and the archive.

Writes answer 202 with the event's log position. Reads accept ``?wait_for=POSITION`` and wait
(up to ``read_wait_timeout_s``) until the projector has passed it, so a client reads its own
writes.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal, get_args

import structlog
from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import AwareDatetime, BeforeValidator

from api._execution import fetch_step_details
from api._inspection import fetch_evaluations
from api._listing import MAX_FILTER_VALUES, check_range, page_order, split_commas, task_id_text
from api._readmodels import (
    TASK_DEFAULT_ORDER,
    TASK_ORDERS,
    decode_history,
    fetch_history,
    fetch_output,
    fetch_task,
    fetch_task_detail,
    fetch_task_etag,
    fetch_thoughts,
    list_tasks,
)
from api.deps import (
    Principal,
    ResourcesDep,
    WaitFor,
    record_denial,
    require,
    wait_for_position,
)
from api.errors import Forbidden, TaskNotFound, TaskTerminal
from api.inspection_models import TaskEvaluations
from api.models import (
    CURSOR_PATTERN,
    TERMINAL_STATUSES,
    Accepted,
    CancelTask,
    SubmitTask,
    TaskDetail,
    TaskHistory,
    TaskPage,
    TaskStatus,
    TaskSteps,
    TaskThoughts,
)
from api.openapi import NOT_MODIFIED, responses_for
from events import EXECUTION_SCOPES, Event, TaskCancelled, TaskSubmitted
from processors.shared.playbook import required_scopes

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/tasks", tags=["tasks"])

Reader = Annotated[Principal, require("tasks:read")]
Writer = Annotated[Principal, require("tasks:write", write=True)]

_EXAMPLE_TASK = uuid.UUID("6f1c2a4e-8b0d-4c1e-9a57-3d2b1f0e4c88")
_ERRORS = responses_for(
    404,
    409,
    422,
    503,
    examples={
        404: TaskNotFound(f"no task {_EXAMPLE_TASK}", task_id=str(_EXAMPLE_TASK)),
        409: TaskTerminal(
            f"task {_EXAMPLE_TASK} is already completed and cannot be cancelled",
            task_id=str(_EXAMPLE_TASK),
            status="completed",
        ),
    },
)


def _not_found(task_id: uuid.UUID) -> TaskNotFound:
    return TaskNotFound(
        f"no task {task_id}; a task submitted a moment ago appears once it is projected: "
        "pass the position its submission returned as ?wait_for=",
        task_id=str(task_id),
    )


@router.post(
    "", status_code=202, response_model=Accepted, responses=_ERRORS, summary="Submit a task"
)
@router.post("/", status_code=202, response_model=Accepted, include_in_schema=False)
async def submit_task(
    body: SubmitTask,
    request: Request,
    response: Response,
    resources: ResourcesDep,
    principal: Writer,
) -> Accepted:
    """Publish task.submitted; the task exists once the projector applies it.

    The task carries as its grants the execution scopes its submitter holds (tools:code,
    playbooks:inline): the agents refuse a plan that needs one it lacks. What the request
    itself shows it needs (an inline playbook, a playbook that runs code) is refused here,
    before anything is published."""
    missing = sorted(required_scopes(body.constraints, resources.playbooks) - principal.scopes)
    if missing:
        await record_denial(
            request,
            resources,
            "missing_scope",
            principal.credential,
            scope=missing[0],
            user_id=principal.user_id,
            key_id=principal.key_id,
            tenant_id=principal.tenant_id,
        )
        raise Forbidden(
            f"this task needs the scope(s) {missing} that the credential lacks "
            "(an inline playbook needs playbooks:inline, code.python needs tools:code)",
            required=missing,
        )
    task_id = uuid.uuid4()
    event = Event.new(
        TaskSubmitted(
            description=body.description,
            constraints=body.constraints,
            timeout=body.timeout,
            grants=sorted(principal.scopes & EXECUTION_SCOPES),
            key_id=principal.key_id if principal.credential == "api_key" else None,
        ),
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        task_id=task_id,
    )
    position = await resources.producer.publish(event)
    log.info("task submitted", task_id=str(task_id), event_id=str(event.id), position=str(position))
    response.headers["Location"] = f"/tasks/{task_id}"
    return Accepted(task_id=task_id, status="submitted", position=str(position))


TaskSort = Literal["-created_at", "created_at", "-updated_at", "updated_at"]
assert set(get_args(TaskSort)) == set(TASK_ORDERS), "the sort parameter lists every order"
StatusFilter = Annotated[
    list[TaskStatus] | None,
    BeforeValidator(split_commas),
    Query(
        max_length=MAX_FILTER_VALUES,
        description="Only tasks in one of these statuses: repeat the parameter or separate "
        "values with commas (status=submitted,running).",
    ),
]
MAX_QUERY = 200


@router.get("", response_model=TaskPage, responses=_ERRORS, summary="List tasks")
@router.get("/", response_model=TaskPage, include_in_schema=False)
async def list_tasks_page(
    resources: ResourcesDep,
    principal: Reader,
    status: StatusFilter = None,
    created_after: Annotated[
        AwareDatetime | None,
        Query(description="Only tasks created at or after this instant (with its offset)."),
    ] = None,
    created_before: Annotated[
        AwareDatetime | None,
        Query(description="Only tasks created before this instant (with its offset)."),
    ] = None,
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_QUERY,
            # Some text besides spaces, and no NUL (which no Postgres text can hold).
            pattern=r"^[^\x00]*[^\x00\s][^\x00]*$",
            description="Full-text search of the description, with English stemming "
            '("reports" finds "report"); words are ANDed, "quoted phrases", OR and -word '
            "work as in a web search.",
        ),
    ] = None,
    playbook: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=100,
            pattern=r"^[^\x00]+$",
            description="Only tasks submitted with this playbook (constraints.playbook) or "
            "planned with it.",
        ),
    ] = None,
    sort: Annotated[
        TaskSort | None,
        Query(
            description="The order: created_at or updated_at, newest first with a leading "
            "'-'. Default -created_at; with a cursor, the cursor's own order."
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN, max_length=512)] = None,
    wait_for: WaitFor = None,
) -> TaskPage:
    """The caller's tasks, newest first unless ``sort`` says otherwise, a page at a time.
    Filters combine with AND; pass them again with ``cursor`` for the next page."""
    check_range(created_after, created_before, name="created")
    order, after = page_order(
        sort, cursor, orders=TASK_ORDERS, default=TASK_DEFAULT_ORDER, id_type=task_id_text
    )
    await wait_for_position(resources, wait_for)
    async with resources.tenant_database.tenant(principal.tenant_id) as conn:
        tasks, next_page = await list_tasks(
            conn,
            principal.tenant_id,
            status=status,
            created_after=created_after,
            created_before=created_before,
            q=q,
            playbook=playbook,
            order=order,
            limit=limit,
            after=after,
        )
    return TaskPage(tasks=tasks, next_cursor=next_page.encode() if next_page else None)


IfNoneMatch = Annotated[
    str | None,
    Header(
        max_length=2_048,
        description="Entity tags of bodies the client holds (or *): 304 with no body when "
        "the task's current one is among them.",
    ),
]


def _matches(if_none_match: str, etag: str) -> bool:
    """If-None-Match against the current tag, compared weakly as RFC 9110 asks of GET."""
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


@router.get(
    "/{task_id}",
    response_model=TaskDetail,
    responses={**_ERRORS, **NOT_MODIFIED},
    summary="Get a task",
)
async def get_task(
    task_id: uuid.UUID,
    resources: ResourcesDep,
    principal: Reader,
    response: Response,
    wait_for: WaitFor = None,
    if_none_match: IfNoneMatch = None,
) -> Any:
    """The task's read model row, its roles with their tools, its plan (null until the task
    is planned), its steps in plan order, its progress (null until execution reports some)
    and its summary and output (null until it completes).

    The answer carries a strong ``ETag``; send it back in ``If-None-Match`` and an unchanged
    task answers 304 with no body (``*`` matches any task that exists)."""
    await wait_for_position(resources, wait_for)
    topic = resources.settings.topic("events")
    async with resources.tenant_database.tenant(
        principal.tenant_id, isolation="repeatable_read"
    ) as conn:
        # One snapshot: the tag, the roles and the plan are those of the same projector batch.
        etag = await fetch_task_etag(conn, topic, principal.tenant_id, task_id)
        if etag is not None and if_none_match is not None and _matches(if_none_match, etag):
            return Response(status_code=304, headers={"ETag": etag})
        task = await fetch_task_detail(conn, principal.tenant_id, task_id)
        if task is not None and task.status == "completed":
            output = await fetch_output(conn, resources.codec, topic, principal.tenant_id, task_id)
            task = task.model_copy(update={"output": output})
    if task is None or etag is None:
        raise _not_found(task_id)
    response.headers["ETag"] = etag
    return task


@router.get(
    "/{task_id}/thoughts",
    response_model=TaskThoughts,
    responses=_ERRORS,
    summary="Task reasoning",
)
async def get_task_thoughts(
    task_id: uuid.UUID, resources: ResourcesDep, principal: Reader, wait_for: WaitFor = None
) -> TaskThoughts:
    """Every thought the reasoners recorded while working on the task, in log order."""
    await wait_for_position(resources, wait_for)
    async with resources.tenant_database.tenant(principal.tenant_id) as conn:
        if await fetch_task(conn, principal.tenant_id, task_id) is None:
            raise _not_found(task_id)
        thoughts = await fetch_thoughts(conn, task_id)
    return TaskThoughts(task_id=task_id, thoughts=thoughts)


@router.get("/{task_id}/steps", response_model=TaskSteps, responses=_ERRORS, summary="Task steps")
async def get_task_steps(
    task_id: uuid.UUID, resources: ResourcesDep, principal: Reader, wait_for: WaitFor = None
) -> TaskSteps:
    """Each stage of the plan as it executed, with its tool calls and recoveries in log
    order. Tool results are user content: read them in the task's history (``/events``)."""
    await wait_for_position(resources, wait_for)
    async with resources.tenant_database.tenant(
        principal.tenant_id, isolation="repeatable_read"
    ) as conn:
        # One snapshot: a step, its calls and its recoveries are those of the same batch.
        if await fetch_task(conn, principal.tenant_id, task_id) is None:
            raise _not_found(task_id)
        steps = await fetch_step_details(conn, principal.tenant_id, task_id)
    return TaskSteps(task_id=task_id, steps=steps)


@router.get(
    "/{task_id}/evaluations",
    response_model=TaskEvaluations,
    responses=_ERRORS,
    summary="Task evaluations",
)
async def get_task_evaluations(
    task_id: uuid.UUID, resources: ResourcesDep, principal: Reader, wait_for: WaitFor = None
) -> TaskEvaluations:
    """Every evaluation of the task's outputs in log order: each attempt's checks, its
    quality score with the credible interval and confidence, and the decision taken."""
    await wait_for_position(resources, wait_for)
    async with resources.tenant_database.tenant(
        principal.tenant_id, isolation="repeatable_read"
    ) as conn:
        if await fetch_task(conn, principal.tenant_id, task_id) is None:
            raise _not_found(task_id)
        evaluations = await fetch_evaluations(conn, principal.tenant_id, task_id)
    return TaskEvaluations(task_id=task_id, evaluations=evaluations)


@router.get(
    "/{task_id}/events", response_model=TaskHistory, responses=_ERRORS, summary="Task history"
)
async def get_task_events(
    task_id: uuid.UUID, resources: ResourcesDep, principal: Reader, wait_for: WaitFor = None
) -> TaskHistory:
    """Every event of the task in log order, from the archive, decrypted and upcast."""
    await wait_for_position(resources, wait_for)
    topic = resources.settings.topic("events")
    async with resources.tenant_database.tenant(principal.tenant_id) as conn:
        records = await fetch_history(conn, topic, principal.tenant_id, task_id)
        if not records and await fetch_task(conn, principal.tenant_id, task_id) is None:
            raise _not_found(task_id)
    return TaskHistory(task_id=task_id, events=await decode_history(resources.codec, records))


@router.post(
    "/{task_id}/cancel",
    status_code=202,
    response_model=Accepted,
    responses=_ERRORS,
    summary="Cancel a task",
)
async def cancel_task(
    task_id: uuid.UUID,
    resources: ResourcesDep,
    principal: Writer,
    body: CancelTask | None = None,
    wait_for: WaitFor = None,
) -> Accepted:
    """Publish task.cancelled unless the task has already ended."""
    await wait_for_position(resources, wait_for)
    async with resources.tenant_database.tenant(principal.tenant_id) as conn:
        task = await fetch_task(conn, principal.tenant_id, task_id)
    if task is None:
        raise _not_found(task_id)
    if task.status in TERMINAL_STATUSES:
        raise TaskTerminal(
            f"task {task_id} is already {task.status} and cannot be cancelled",
            task_id=str(task_id),
            status=task.status,
        )
    event = Event.new(
        TaskCancelled(reason=body.reason if body else None),
        tenant_id=task.tenant_id,
        actor=principal.actor,
        task_id=task_id,
    )
    position = await resources.producer.publish(event)
    log.info("task cancel requested", task_id=str(task_id), event_id=str(event.id))
    return Accepted(task_id=task_id, status="cancelling", position=str(position))
