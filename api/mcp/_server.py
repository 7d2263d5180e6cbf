"""The MCP server, the same for both transports: the tools, the ``task://`` resources, a
prompt per playbook, and the check of every tool call's arguments against the tool's input
schema, refused in the API's error shape before the tool runs."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.tools import Tool
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS
from pydantic import ValidationError

from api.mcp._client import ApiCallError, WrenchApi
from api.mcp._prompts import playbook_prompts
from api.mcp._results import Writes, refusal
from api.mcp._tools import Connect, task_tools
from processors.shared.playbook import Playbook

INSTRUCTIONS = """\
WrenchAI runs tasks with teams of AI agents; every step is an event on a log.
Submit a task with submit_task (each playbook prompt shows how), follow it with watch_task
(a progress notification per event, then the final task), and read it with get_task,
task_history or the task://{task_id} resources. Positions (PARTITION:OFFSET) order a task's
events; pass the position a write answered as wait_for to read your own write."""


def build_server(
    connect: Connect, playbooks: Mapping[str, Playbook], version: str = ""
) -> MCPServer:
    """The WrenchAI MCP server: its tools, the ``task://`` resources and a prompt per
    playbook, each calling the API that ``connect`` gives for the request."""
    writes = Writes()
    tools = task_tools(connect, writes)
    server: MCPServer = MCPServer(
        "wrenchai",
        title="WrenchAI",
        version=version,
        instructions=INSTRUCTIONS,
        tools=tools,
        middleware=[check_arguments({tool.name: tool for tool in tools})],
    )
    _resources(server, connect, writes)
    for prompt in playbook_prompts(playbooks):
        server.add_prompt(prompt)
    return server


def check_arguments(tools: Mapping[str, Tool]) -> ServerMiddleware[Any]:
    """Refuse a tool call whose arguments its input schema rejects, as the API refuses a
    request: a VALIDATION_ERROR tool error naming each field (``arguments.limit``), without
    echoing the values (they may be a sensitive description)."""

    async def middleware(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        params = ctx.params
        if ctx.method == "tools/call" and isinstance(params, Mapping):
            tool = tools.get(str(params.get("name")))
            arguments = params.get("arguments") or {}
            if tool is not None and isinstance(arguments, Mapping):
                try:
                    tool.fn_metadata.validate_arguments(dict(arguments))
                except ValidationError as exc:
                    errors = [
                        {
                            "field": ".".join(("arguments", *(str(p) for p in error["loc"]))),
                            "message": error["msg"],
                        }
                        for error in exc.errors(include_input=False)
                    ]
                    message = f"the arguments of {tool.name} are invalid"
                    return refusal(
                        ApiCallError(422, "VALIDATION_ERROR", message, {"errors": errors})
                    )
        return await call_next(ctx)

    return middleware


def _resources(server: MCPServer, connect: Connect, writes: Writes) -> None:
    @server.resource(
        "task://{task_id}",
        name="task",
        title="A task",
        description="The task as GET /tasks/{task_id} answers it.",
        mime_type="application/json",
    )
    async def task_resource(task_id: str, ctx: Context) -> str:
        api, task = connect(ctx), _task_id(task_id)
        return await _read(api, f"task://{task_id}", f"/tasks/{task}", writes.of_task(api, task))

    @server.resource(
        "task://{task_id}/events",
        name="task-events",
        title="A task's history",
        description="Every event of the task in log order, as GET /tasks/{task_id}/events "
        "answers them.",
        mime_type="application/json",
    )
    async def task_events_resource(task_id: str, ctx: Context) -> str:
        api, task = connect(ctx), _task_id(task_id)
        uri, path = f"task://{task_id}/events", f"/tasks/{task}/events"
        return await _read(api, uri, path, writes.of_task(api, task))


def _task_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise MCPError(INVALID_PARAMS, f"{text!r} is not a task id (a UUID)") from None


async def _read(api: WrenchApi, uri: str, path: str, wait_for: str | None) -> str:
    """A resource's JSON text. An API error is an MCP error: its message starts with the
    API's code, its data holds the API's error body."""
    try:
        body = await api.call("GET", path, params={"wait_for": wait_for})
    except ApiCallError as exc:
        code = INTERNAL_ERROR if exc.status is None or exc.status >= 500 else INVALID_PARAMS
        raise MCPError(code, f"{exc.code}: {exc.message}", {"uri": uri, **exc.body()}) from exc
    return json.dumps(body, separators=(",", ":"))
