"""Live streams: a task's events over WebSocket or Server-Sent Events (history, then live),
the tenant's live events, an agent's events and status, and single-use stream tickets.

Protocols, resume and close codes: docs/streams.md.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query, Request, Security, WebSocket
from sse_starlette import EventSourceResponse, ServerSentEvent

from api import _examples as ex
from api._agents import KNOWN_AGENTS, agent_status
from api._resources import Resources
from api.deps import ResourcesDep, authenticate_write, require
from api.errors import InvalidRequest, RateLimited, TaskNotFound
from api.models import POSITION_PATTERN, WsTicket
from api.openapi import responses_for
from api.security import CredentialRefused, Principal
from api.streams import (
    Admission,
    EndFrame,
    EventFrame,
    LiveFrame,
    StreamCredential,
    StreamUnavailable,
    TooManyStreams,
    control,
    error_message,
    header_credential,
)
from api.streams._frames import Frame
from api.streams._hub import Delivery
from api.streams._socket import (
    INVALID,
    NOT_FOUND,
    TOO_MANY,
    Close,
    StreamSocket,
)
from api.streams._task_stream import TaskStream, UnknownTask, locate_task, task_frames
from events import Position

router = APIRouter(tags=["streams"])

SSE_PING_S = 15


# -- WebSocket: one task --------------------------------------------------------------------
@router.websocket("/ws/tasks/{task_id}")
async def task_socket(
    websocket: WebSocket,
    task_id: str,
    resume_from: str | None = None,
    ticket: str | None = None,
) -> None:
    """The task's events from the archive, then live, until it ends."""
    resources: Resources = websocket.app.state.resources
    await websocket.accept()
    socket = StreamSocket(websocket, resources)
    close = Close(1000, "stream ended")
    try:
        principal = await socket.authenticate("tasks:read", ticket)
        with _admitted(resources, principal):
            stream = await _locate(resources, principal, task_id)
            after = await _start(socket, stream, resume_from)
            frames = task_frames(resources, stream, after, subscribed=socket.watch_overflow)
            close = await socket.run(frames)
    except Close as exc:
        close = exc
    await socket.close(close.code, close.reason)


def _admitted(resources: Resources, principal: Principal) -> Admission:
    try:
        return resources.streams.admit(principal.subject)
    except TooManyStreams as exc:
        raise Close(
            TOO_MANY,
            f"too many open streams; at most {resources.settings.ws_max_sockets_per_principal}",
        ) from exc


async def _locate(resources: Resources, principal: Principal, task_id: str) -> TaskStream:
    try:
        return await locate_task(resources, principal.tenant_id, uuid.UUID(task_id))
    except (ValueError, UnknownTask) as exc:
        raise Close(NOT_FOUND, "no such task") from exc


async def _start(socket: StreamSocket, stream: TaskStream, resume_from: str | None) -> int | None:
    """The offset after which the stream starts: from the query, from the first message
    (which may have come with the credential), or None (the beginning) after a short wait."""
    if resume_from is not None:
        after = _resume_offset(resume_from, stream)
        if isinstance(after, str):
            await socket.send(error_message("invalid_resume_from", after))
            raise Close(INVALID, "invalid resume_from")
        return after
    first = socket.first
    loop = asyncio.get_running_loop()
    deadline = loop.time() + socket.settings.ws_start_wait_s
    asked = False  # the client asked for a place and gave a bad one
    while True:
        if first is None:
            left = deadline - loop.time()
            first = await socket.receive(left) if left > 0 else None
            if first is None:
                if loop.time() < deadline:
                    continue
                if asked:
                    raise Close(INVALID, "invalid resume_from")
                return None
        if first.get("resume_from") is None:
            return None
        after = _resume_offset(first["resume_from"], stream)
        if not isinstance(after, str):
            return after
        await socket.send(error_message("invalid_resume_from", after))
        # Starting from the beginning would send what the client has: wait for a good place,
        # as long as a credential may take to come, then give up.
        first, asked = None, True
        deadline = loop.time() + socket.settings.ws_auth_timeout_s


def _resume_offset(value: Any, stream: TaskStream) -> int | str:
    """The offset in ``value`` (a position on the task's partition), or what is wrong."""
    if not isinstance(value, str):
        return "resume_from is a position PARTITION:OFFSET, as a string"
    try:
        position = Position.parse(value)
    except ValueError as exc:
        return str(exc)
    if position.partition != stream.partition:
        return f"position {value} is not on this task's partition ({stream.partition})"
    return position.offset


# -- WebSocket: the tenant's events and an agent's --------------------------------------------
@router.websocket("/ws/events")
async def events_socket(
    websocket: WebSocket,
    types: str | None = None,
    task_id: str | None = None,
    ticket: str | None = None,
) -> None:
    """The tenant's live events, optionally only some types or one task's."""
    resources: Resources = websocket.app.state.resources
    await websocket.accept()
    socket = StreamSocket(websocket, resources)
    try:
        principal = await socket.authenticate("tasks:read", ticket)
        wanted = {t for t in (types or "").split(",") if t.strip()} or None
        try:
            task = str(uuid.UUID(task_id)) if task_id is not None else None
        except ValueError as exc:
            await socket.send(error_message("invalid_task_id", "task_id is a UUID"))
            raise Close(INVALID, "invalid task_id") from exc

        def match(d: Delivery) -> bool:
            return (wanted is None or d.type in wanted) and (task is None or d.task_id == task)

        with _admitted(resources, principal):
            close = await socket.run(_live(resources, socket, principal, match))
    except Close as exc:
        close = exc
    await socket.close(close.code, close.reason)


@router.websocket("/ws/agent/{agent_id}")
async def agent_socket(websocket: WebSocket, agent_id: str, ticket: str | None = None) -> None:
    """The events an agent emits for the tenant, live; ``{"action": "status"}`` answers the
    agent's tasks in flight, partitions, lag and last error."""
    resources: Resources = websocket.app.state.resources
    await websocket.accept()
    socket = StreamSocket(websocket, resources)
    try:
        principal = await socket.authenticate("tasks:read", ticket)
        if agent_id not in KNOWN_AGENTS:
            raise Close(NOT_FOUND, f"no agent {agent_id[:40]}; agents: {', '.join(KNOWN_AGENTS)}")

        def match(d: Delivery) -> bool:
            return d.actor == ("agent", agent_id)

        async def on_message(message: dict[str, Any]) -> None:
            if message.get("action") != "status":
                await socket.send(
                    error_message("unknown_action", "the only action is status", actions=["status"])
                )
                return
            status = await _agent_status(resources, agent_id, principal.tenant_id)
            await socket.send(control("status", status=status))

        with _admitted(resources, principal):
            close = await socket.run(_live(resources, socket, principal, match), on_message)
    except Close as exc:
        close = exc
    await socket.close(close.code, close.reason)


async def _agent_status(resources: Resources, agent_id: str, tenant_id: str) -> dict[str, Any]:
    async with resources.tenant_database.tenant(tenant_id) as conn:
        status = await agent_status(conn, agent_id, tenant_id)
    result: dict[str, Any] = status.model_dump(mode="json")
    return result


async def _live(
    resources: Resources, socket: StreamSocket, principal: Principal, match: Any
) -> AsyncIterator[Frame]:
    subscription = await resources.streams.hub.subscribe(
        principal.tenant_id, match, resources.settings.read_wait_timeout_s
    )
    socket.watch_overflow(subscription)
    try:
        yield LiveFrame()
        while True:
            delivery = await subscription.next()
            if delivery.message is not None:
                yield EventFrame(str(delivery.position), delivery.message, delivery.type)
    finally:
        subscription.close()


# -- Server-Sent Events ------------------------------------------------------------------------
@router.get(
    "/tasks/{task_id}/stream",
    summary="Stream a task's events (Server-Sent Events)",
    response_class=EventSourceResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"example": ex.TASK_STREAM}},
            "description": "`event: event` messages with `id:` the position, `event: live` "
            "once caught up, `event: end` when the task ends.",
        },
        **responses_for(
            404,
            422,
            503,
            examples={
                404: TaskNotFound(f"no task {ex.TASK_ID}", task_id=ex.TASK_ID),
                422: InvalidRequest(
                    "header.last-event-id", "position 1:7 is not on this task's partition (2)"
                ),
            },
        ),
    },
)
async def task_event_stream(
    task_id: uuid.UUID,
    request: Request,
    resources: ResourcesDep,
    principal: Annotated[Principal, require("tasks:read")],
    last_event_id: Annotated[
        str | None,
        Header(
            pattern=POSITION_PATTERN,
            description="The position of the last event received: resume after it.",
        ),
    ] = None,
    resume_from: Annotated[
        str | None,
        Query(
            pattern=POSITION_PATTERN,
            description="As Last-Event-ID, for clients that cannot set headers.",
        ),
    ] = None,
) -> EventSourceResponse:
    """The task's events as Server-Sent Events, like ``WS /ws/tasks/{task_id}``; resumes
    after ``Last-Event-ID``."""
    try:
        stream = await locate_task(resources, principal.tenant_id, task_id)
    except UnknownTask as exc:
        raise TaskNotFound(f"no task {task_id}", task_id=str(task_id)) from exc
    after: int | None = None
    given = last_event_id or resume_from
    if given is not None:
        position = Position.parse(given)
        if position.partition != stream.partition:
            raise InvalidRequest(
                "header.last-event-id",
                f"position {given} is not on this task's partition ({stream.partition})",
            )
        after = position.offset
    credential = header_credential(request)
    assert credential is not None  # require() authenticated one
    if resources.streams.full(principal.subject):
        raise RateLimited(
            "too many open streams for this credential; at most "
            f"{resources.settings.ws_max_sockets_per_principal}",
            5,
        )
    return EventSourceResponse(
        _sse(resources, principal, credential, stream, after),
        ping=SSE_PING_S,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _sse(
    resources: Resources,
    principal: Principal,
    credential: StreamCredential,
    stream: TaskStream,
    after: int | None,
) -> AsyncIterator[ServerSentEvent]:
    """The task's frames as server-sent events, ending when the credential stops being valid.

    The stream is counted against the principal's limit only while this generator runs: a
    client that left before the response started never held a place."""
    try:
        admission = resources.streams.admit(principal.subject, "sse")
    except TooManyStreams:
        yield _sse_error("too many open streams for this credential")
        return
    queue: asyncio.Queue[Frame | BaseException] = asyncio.Queue(1)

    async def pump() -> None:
        try:
            async for frame in task_frames(resources, stream, after):
                await queue.put(frame)
        except Exception as exc:  # handed to the response, which ends the stream
            await queue.put(exc)

    task = asyncio.create_task(pump())
    interval = resources.settings.ws_recheck_interval_s
    loop = asyncio.get_running_loop()
    checked = loop.time()
    try:
        while True:
            try:
                item: Frame | BaseException | None = await asyncio.wait_for(queue.get(), interval)
            except TimeoutError:
                item = None
            # On a clock, not on quiet: a busy stream is rechecked as often as an idle one.
            if loop.time() - checked >= interval:
                checked = loop.time()
                try:
                    await resources.streams.recheck(resources.authenticator, credential)
                except CredentialRefused as exc:
                    yield _sse_error(exc.reason)
                    return
            if item is None:
                continue
            if isinstance(item, BaseException):
                reason = str(item) if isinstance(item, StreamUnavailable) else "client too slow"
                yield _sse_error(reason)
                return
            if isinstance(item, EventFrame):
                yield ServerSentEvent(data=item.message, event="event", id=item.position)
            elif isinstance(item, LiveFrame):
                yield ServerSentEvent(data="{}", event="live")
            elif isinstance(item, EndFrame):
                yield ServerSentEvent(
                    data=orjson.dumps({"status": item.status}).decode(), event="end"
                )
                return
    finally:
        # Released first: a client that left cancels this generator, and an await below
        # may be interrupted by that cancellation again.
        admission.release()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _sse_error(reason: str) -> ServerSentEvent:
    return ServerSentEvent(data=orjson.dumps({"reason": reason}).decode(), event="error")


# -- tickets ------------------------------------------------------------------------------------
@router.post(
    "/ws-ticket",
    response_model=WsTicket,
    summary="A single-use ticket to open a stream",
)
async def ws_ticket(
    request: Request,
    resources: ResourcesDep,
    principal: Annotated[Principal, Security(authenticate_write, scopes=[])],
) -> WsTicket:
    """A ticket to pass as ``?ticket=`` when opening a WebSocket (browsers cannot set headers
    on one). It opens one socket, within ``expires_in`` seconds, which then acts as the
    credential that asked for it."""
    del principal  # authenticated; the ticket carries the credential itself
    credential = header_credential(request)
    assert credential is not None
    ticket = resources.streams.tickets.issue(credential)
    return WsTicket(ticket=ticket, expires_in=resources.settings.ws_ticket_ttl_s)


__all__ = ["router"]
