"""An MCP server's tools as WrenchAI tools: their descriptors and the calls behind them.

Each tool the server lists becomes ``mcp.<server>.<tool>``: the tool's name lower-cased
(camelCase split with an underscore, every other run of characters outside ``a-z0-9_`` one
underscore). Its descriptor takes the server's input schema as it is, an output schema that
accepts any MCP result (:data:`MCP_RESULT`), the server's version (``1.2`` reads as
``1.2.0``), and capabilities that keep it from standing in for another tool unless the
server's configuration says it can (:func:`tool_spec`).

A call checks its input against that schema before anything is sent, as every tool does,
then calls the server and shapes its answer: ``content`` (the MCP content blocks),
``text`` (the text blocks joined) and ``structuredContent`` when the server gave one. An
answer with ``isError`` is a :class:`~processors.tools.builtin.ToolFailed` carrying its text.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, cast

import mcp_types as types
import structlog

from processors.tools.builtin import BuiltinTool, ToolFailed, ToolHealth
from processors.tools.mcp._connection import McpConnection, McpUnavailable
from processors.tools.registry import ToolCost, ToolSpec
from wrenchai.settings import McpServerConfig

log = structlog.get_logger(__name__)

MCP_RESULT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "content": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"type": {"type": "string"}},
                "required": ["type"],
            },
        },
        "text": {"type": "string"},
        "structuredContent": {"type": "object"},
    },
    "required": ["content", "text"],
    "additionalProperties": False,
}
"""What a call of any MCP tool returns (the server's own output schema, when it has one, is
checked by the MCP client against ``structuredContent``)."""

ANY_INPUT: dict[str, Any] = {"type": "object"}
"""The input schema of a stand-in for a tool whose server could not be listed."""

_SEMVER_START = re.compile(r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NOT_NAME = re.compile(r"[^a-z0-9_]+")


def local_name(config: McpServerConfig, remote: str) -> str | None:
    """``mcp.<server>.<tool>`` for the server's tool ``remote`` (``readFile`` is
    ``read_file``, ``get-page`` is ``get_page``, a name starting with a digit gets ``t_``);
    None when nothing of the name is left."""
    tool = _NOT_NAME.sub("_", _CAMEL.sub("_", remote).lower()).strip("_")
    if not tool:
        return None
    if not tool[0].isalpha():
        tool = f"t_{tool}"
    return f"{config.tool_prefix}{tool}"


def semantic_version(version: str | None) -> str:
    """The server's version as MAJOR.MINOR.PATCH: ``1.2`` is 1.2.0, ``v3`` is 3.0.0,
    ``2.0.1-beta`` is 2.0.1, and anything without a leading number is 0.0.0."""
    match = _SEMVER_START.match((version or "").strip())
    if match is None:
        return "0.0.0"
    return ".".join(str(int(part or 0)) for part in match.groups())


def tool_spec(config: McpServerConfig, version: str, tool: types.Tool) -> ToolSpec:
    """The descriptor of one of the server's tools.

    Capabilities: those the configuration gives the tool (``capabilities``), first, so that
    they are its primary one and a tool sharing it may stand in for it; then the tool's own
    name (no other tool has it, so without configured capabilities nothing stands in for
    it), ``mcp`` and ``mcp:<server>``.

    Conservative flags unless the configuration says otherwise: it needs a network
    (``offline``), it may change something and calling it twice is not calling it once
    (``trust_annotations`` takes the server's readOnlyHint and idempotentHint instead).

    Raises ValueError for a name nothing is left of, or an input schema that is not one.
    """
    name = local_name(config, tool.name)
    if name is None:
        raise ValueError(f"the tool name {tool.name!r} has nothing WrenchAI can name it by")
    hints = tool.annotations if config.trust_annotations else None
    read_only = bool(hints is not None and hints.read_only_hint)
    about = tool.description or tool.title or ""
    return ToolSpec(
        name=name,
        version=version,
        description=f"{tool.name} of MCP server {config.name}{': ' if about else ''}{about}"[
            :2_000
        ],
        capabilities=list(
            dict.fromkeys(
                [*config.capabilities.get(tool.name, []), name, "mcp", f"mcp:{config.name}"]
            )
        ),
        input_schema=dict(tool.input_schema),
        output_schema=_result_schema(tool),
        side_effects=not read_only,
        idempotent=read_only or bool(hints is not None and hints.idempotent_hint),
        cost=ToolCost(usd_per_call=config.usd_per_call, seconds=config.seconds),
        offline=config.offline,
        health_probe=f"mcp:{config.name}.ping",
    )


def stand_in_spec(config: McpServerConfig, name: str, version: str) -> ToolSpec:
    """The descriptor of a tool a plan names whose server could not be listed here: any
    input, so the stage's attempt gets as far as the call, which says why it cannot run."""
    return ToolSpec(
        name=name,
        version=version,
        description=f"{name}, a tool of MCP server {config.name}, which could not be listed",
        capabilities=[name, "mcp", f"mcp:{config.name}"],
        input_schema=ANY_INPUT,
        output_schema=MCP_RESULT,
        side_effects=True,
        idempotent=False,
        offline=config.offline,
        health_probe=f"mcp:{config.name}.ping",
    )


def _result_schema(tool: types.Tool) -> dict[str, Any]:
    if tool.output_schema is None:
        return MCP_RESULT
    return {**MCP_RESULT, "required": [*MCP_RESULT["required"], "structuredContent"]}


def tool_output(result: types.CallToolResult) -> dict[str, Any]:
    """A successful MCP answer as the tool's result."""
    output: dict[str, Any] = {
        "content": [
            block.model_dump(mode="json", by_alias=True, exclude_none=True)
            for block in result.content
        ],
        "text": _text(result),
    }
    if result.structured_content is not None:
        output["structuredContent"] = result.structured_content
    return output


def _text(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))


class McpTool(BuiltinTool):
    """One tool of an MCP server, called over its server's connection. Built by
    :func:`mcp_tool`, which gives each its descriptor."""

    spec: ClassVar[ToolSpec]

    def __init__(self, connection: McpConnection, remote: str, *, max_result_bytes: int) -> None:
        super().__init__(max_result_bytes=max_result_bytes)
        self.connection = connection
        self.remote = remote

    async def _run(self, tool_input: dict[str, Any]) -> dict[str, Any]:
        result = await self.connection.call_tool(self.remote, tool_input)
        if result.is_error:
            text = _text(result) or "no text"
            raise ToolFailed(
                f"{self.spec.name} answered with an error: {text[:4_000]}",
                tool=self.spec.name,
                server=self.connection.name,
            )
        return tool_output(result)

    async def _probe(self) -> tuple[bool, str]:
        health = await self.connection.health()
        return health.ok, health.detail


def mcp_tool(
    spec: ToolSpec,
    connection: McpConnection,
    remote: str,
    *,
    max_result_bytes: int,
) -> McpTool:
    """The tool ``remote`` of ``connection``'s server, implementing ``spec``.

    :class:`BuiltinTool` takes its descriptor from its class, so each MCP tool gets a class
    of its own, made here."""
    kind = type("McpTool", (McpTool,), {"spec": spec, "__doc__": spec.description})
    return cast(McpTool, kind(connection, remote, max_result_bytes=max_result_bytes))


class Unreachable:
    """Stands in for a tool of a server this worker could not list, or that no longer lists
    it: every call fails without reaching anything, transiently while the server is down."""

    def __init__(self, spec: ToolSpec, connection: McpConnection, reason: str) -> None:
        self._spec, self.connection, self.reason = spec, connection, reason

    @property
    def spec(self) -> ToolSpec:
        return self._spec

    async def call(
        self, tool_input: dict[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        message = f"{self.spec.name} cannot be called: {self.reason}"
        if self.connection.server_info is None:
            raise McpUnavailable(message, tool=self.spec.name, server=self.connection.name)
        raise ToolFailed(message, tool=self.spec.name, server=self.connection.name)

    async def health(self) -> ToolHealth:
        return ToolHealth(ok=False, detail=self.reason)
