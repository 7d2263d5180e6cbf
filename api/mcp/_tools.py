"""The MCP tools: each one a call of the public API (two for watch_task), as the caller.

A tool answers the API's JSON as it is (structured content, and the same as text); an API
error becomes a tool error holding the API's error body. The argument names, limits and
wording are the API's, so a tool reads like the route it calls.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal

import anyio
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult, ToolAnnotations
from pydantic import Field

from api.mcp._client import ApiCallError, WrenchApi
from api.mcp._results import Writes, answer, invalid, refusal
from api.models import MAX_DESCRIPTION, MAX_REASON, MAX_TIMEOUT_S, POSITION_PATTERN, TaskStatus

Connect = Callable[[Context], WrenchApi]
"""The API client of the caller of one request."""

END_TYPES = {"task.completed": "completed", "task.failed": "failed", "task.cancelled": "cancelled"}
MAX_WATCH_S = 3_600.0
RECONNECT_MAX_S = 2.0

TaskId = Annotated[uuid.UUID, Field(description="The task's id, as submit_task answers it.")]
Position = Annotated[
    str,
    Field(
        pattern=POSITION_PATTERN,
        description="A log position, PARTITION:OFFSET, as writes and events carry it.",
    ),
]
WaitFor = Annotated[
    Position | None,
    Field(
        description="Wait until the API has applied this position (the one a write "
        "answered) before reading. Unset: the last write made through this server for the "
        "task, if any."
    ),
]
TaskSort = Literal["-created_at", "created_at", "-updated_at", "updated_at"]

_READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
_WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
_CANCEL = ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=False)


async def _called(call: Awaitable[Any]) -> CallToolResult:
    try:
        return answer(await call)
    except ApiCallError as exc:
        return refusal(exc)


def task_tools(connect: Connect, writes: Writes) -> list[Tool]:
    """The seven tools, calling the API ``connect`` gives for each request."""

    async def submit_task(
        ctx: Context,
        description: Annotated[
            str,
            Field(min_length=1, max_length=MAX_DESCRIPTION, description="What the task is."),
        ],
        playbook: Annotated[
            str | None,
            Field(
                pattern=r"^[a-z][a-z0-9_]*$",
                description="A shipped playbook to run, by name (the prompts list them). "
                "Unset: the agents choose.",
            ),
        ] = None,
        playbook_inputs: Annotated[
            dict[str, Any] | None,
            Field(description="Values of the playbook's inputs over their defaults."),
        ] = None,
        constraints: Annotated[
            dict[str, Any] | None,
            Field(
                description="Constraints for the agents, as POST /tasks takes them (alert "
                "thresholds; an inline playbook, with the scope playbooks:inline)."
            ),
        ] = None,
        # The API's name for the task's time limit, not a timeout of this call.
        timeout: Annotated[  # noqa: ASYNC109
            int | None, Field(ge=1, le=MAX_TIMEOUT_S, description="Seconds the task may run.")
        ] = None,
    ) -> CallToolResult:
        """Submit a task to WrenchAI's agents (POST /tasks). Answers its task_id and the
        position of its submission: follow it with watch_task, read it with get_task."""
        api = connect(ctx)
        chosen = dict(constraints or {})
        for name, value in (("playbook", playbook), ("playbook_inputs", playbook_inputs)):
            if value is None:
                continue
            if name in chosen:
                return refusal(invalid(name, f"give {name} once, not in constraints too"))
            chosen[name] = value
        body: dict[str, Any] = {"description": description}
        if chosen:
            body["constraints"] = chosen
        if timeout is not None:
            body["timeout"] = timeout
        try:
            accepted = await api.call("POST", "/tasks", body=body)
        except ApiCallError as exc:
            return refusal(exc)
        writes.remember(api, accepted["task_id"], accepted["position"])
        return answer(accepted)

    async def get_task(ctx: Context, task_id: TaskId, wait_for: WaitFor = None) -> CallToolResult:
        """A task as GET /tasks/{task_id} answers it: status, plan steps, progress, summary
        and, once completed, its output."""
        api = connect(ctx)
        wait_for = wait_for or writes.of_task(api, task_id)
        return await _called(api.call("GET", f"/tasks/{task_id}", params={"wait_for": wait_for}))

    async def list_tasks(
        ctx: Context,
        status: Annotated[
            list[TaskStatus] | None, Field(max_length=5, description="Any of these statuses.")
        ] = None,
        q: Annotated[
            str | None,
            Field(max_length=200, description="Full-text search on the description."),
        ] = None,
        playbook: Annotated[
            str | None, Field(max_length=100, description="The playbook's name.")
        ] = None,
        created_after: Annotated[
            datetime | None, Field(description="Created at or after (ISO 8601, with offset).")
        ] = None,
        created_before: Annotated[
            datetime | None, Field(description="Created before (ISO 8601, with offset).")
        ] = None,
        sort: TaskSort = "-created_at",
        limit: Annotated[int, Field(ge=1, le=200)] = 20,
        cursor: Annotated[
            str | None, Field(max_length=512, description="next_cursor of the page before.")
        ] = None,
        wait_for: WaitFor = None,
    ) -> CallToolResult:
        """Your tenant's tasks, a page at a time, as GET /tasks answers them (newest first
        by default; pass next_cursor back as cursor, with the same filters)."""
        api = connect(ctx)
        params = {
            "status": status,
            "q": q,
            "playbook": playbook,
            "created_after": created_after,
            "created_before": created_before,
            "sort": sort,
            "limit": limit,
            "cursor": cursor,
            "wait_for": wait_for or writes.latest(api),
        }
        return await _called(api.call("GET", "/tasks", params=params))

    async def task_history(
        ctx: Context, task_id: TaskId, wait_for: WaitFor = None
    ) -> CallToolResult:
        """Every event of the task in log order, each with its position, as
        GET /tasks/{task_id}/events answers them."""
        api = connect(ctx)
        wait_for = wait_for or writes.of_task(api, task_id)
        path = f"/tasks/{task_id}/events"
        return await _called(api.call("GET", path, params={"wait_for": wait_for}))

    async def task_state_as_of(
        ctx: Context,
        task_id: TaskId,
        as_of: Annotated[
            str | None,
            Field(
                max_length=64,
                description="A position of the task's history (2:41) or a time (ISO 8601). "
                "Unset: as of its last event.",
            ),
        ] = None,
    ) -> CallToolResult:
        """Time travel: the task folded from its own events up to as_of, as
        GET /audit/tasks/{task_id}/state answers it (needs the scope audit:read)."""
        api = connect(ctx)
        path = f"/audit/tasks/{task_id}/state"
        return await _called(api.call("GET", path, params={"as_of": as_of}))

    async def cancel_task(
        ctx: Context,
        task_id: TaskId,
        reason: Annotated[
            str | None, Field(max_length=MAX_REASON, description="Why, for the record.")
        ] = None,
    ) -> CallToolResult:
        """Call a task off (POST /tasks/{task_id}/cancel). Answers the position of the
        cancellation; a task that has already ended is a TASK_TERMINAL error."""
        api = connect(ctx)
        try:
            accepted = await api.call(
                "POST",
                f"/tasks/{task_id}/cancel",
                params={"wait_for": writes.of_task(api, task_id)},
                body={"reason": reason},
            )
        except ApiCallError as exc:
            return refusal(exc)
        writes.remember(api, accepted["task_id"], accepted["position"])
        return answer(accepted)

    async def watch_task(
        ctx: Context,
        task_id: TaskId,
        timeout_s: Annotated[
            float, Field(gt=0, le=MAX_WATCH_S, description="Longest to watch, in seconds.")
        ] = 300.0,
        resume_from: Annotated[
            Position | None,
            Field(description="Start after this position (last_position of a watch cut short)."),
        ] = None,
    ) -> CallToolResult:
        """Follow the task's events (its history, then live) until it ends, with a progress
        notification per event (progress counts the events; the message is 'POSITION TYPE').
        Answers the final task once it is completed, failed or cancelled; if timeout_s runs
        out first, ended is false and last_position resumes the watch."""
        api = connect(ctx)
        watch = _Watch(api, task_id, resume_from, ctx)
        try:
            with anyio.move_on_after(timeout_s):
                await watch.follow()
            wait_for = watch.last or writes.of_task(api, task_id)
            task = await api.call("GET", f"/tasks/{task_id}", params={"wait_for": wait_for})
        except ApiCallError as exc:
            return refusal(exc)
        result = {
            "task_id": str(task_id),
            "ended": watch.status is not None,
            "status": watch.status or task["status"],
            "events": watch.count,
            "last_position": watch.last,
            "task": task,
        }
        if watch.status is not None:
            return answer(result, f"task {task_id} {watch.status} after {watch.count} events")
        return answer(
            result,
            f"task {task_id} is still {task['status']} after {timeout_s:g} s; call watch_task "
            f"again with resume_from={watch.last} to go on",
        )

    return [
        Tool.from_function(submit_task, title="Submit a task", annotations=_WRITE),
        Tool.from_function(get_task, title="Read a task", annotations=_READ),
        Tool.from_function(list_tasks, title="List tasks", annotations=_READ),
        Tool.from_function(task_history, title="A task's history", annotations=_READ),
        Tool.from_function(
            task_state_as_of, title="A task's state as of a point of its log", annotations=_READ
        ),
        Tool.from_function(cancel_task, title="Cancel a task", annotations=_CANCEL),
        Tool.from_function(watch_task, title="Watch a task until it ends", annotations=_READ),
    ]


class _Watch:
    """One watch of a task's stream: resumes after the last position when the stream drops,
    counts the events and reports each as progress."""

    def __init__(self, api: WrenchApi, task_id: uuid.UUID, after: str | None, ctx: Context) -> None:
        self.api, self.task_id, self.ctx = api, task_id, ctx
        self.last = after
        self.count = 0
        self.status: str | None = None

    async def follow(self) -> None:
        """Until the task ends; ApiCallError when the API refuses the stream (an unknown task,
        a credential it no longer takes). Anything else is retried with backoff."""
        failures = 0
        while self.status is None:
            try:
                async with self.api.task_stream(self.task_id, self.last) as events:
                    failures = 0
                    async for message in events:
                        await self._receive(message.event, message.data)
                        if self.status is not None:
                            return
            except ApiCallError as exc:
                if exc.status is not None and exc.status < 500 and exc.status != 429:
                    raise
            failures += 1
            await asyncio.sleep(min(RECONNECT_MAX_S, 0.25 * 2**failures))

    async def _receive(self, kind: str, data: Any) -> None:
        if not isinstance(data, dict):
            return
        if kind == "event":
            position, event = data.get("position"), data.get("event") or {}
            if not isinstance(position, str) or position == self.last:
                return
            self.last, self.count = position, self.count + 1
            await self.ctx.report_progress(self.count, None, f"{position} {event.get('type')}")
            self.status = END_TYPES.get(str(event.get("type")))
        elif kind == "end":
            self.status = str(data.get("status"))
        elif kind == "error":
            reason = str(data.get("reason", ""))
            if reason.endswith("_credential"):  # invalid, expired or revoked: stop
                message = f"the API stopped the task's stream: {reason}"
                raise ApiCallError(401, "UNAUTHENTICATED", message, {})
            raise ApiCallError(None, "STREAM_INTERRUPTED", reason, {})  # resumed
