"""The tools of every configured MCP server, in a worker's registry and toolbox.

A worker lists each server's tools when it starts (:meth:`McpToolset.ready`, which the
agents await before their first job) and registers them as ``mcp.<server>.<tool>``. A server
that cannot be reached then is left out, the worker runs on, and it is tried again every
WRENCH_MCP_PROBE_INTERVAL_S (:meth:`McpToolset.keep_up`, a worker's background) until its
tools are listed. Each server is listed once per process: a server that adds tools later is
seen by workers started later.

A plan may name a tool this worker has not listed (the SuperAgent reached the server, this
worker could not): :meth:`McpToolset.stand_in` tries the server once more and otherwise gives
a stand-in whose calls fail as MCP_UNAVAILABLE, so the stage's recovery moves to its fallback
tool as for any tool that is down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import mcp_types as types
import structlog
from pydantic import ValidationError

from processors.tools.builtin import Tool, ToolError
from processors.tools.mcp._connection import McpConnection
from processors.tools.mcp._tools import (
    McpTool,
    Unreachable,
    mcp_tool,
    semantic_version,
    stand_in_spec,
    tool_spec,
)
from processors.tools.registry import PlanningError, ToolRegistry, ToolSpec
from wrenchai.settings import McpServerConfig, Settings

log = structlog.get_logger(__name__)


class McpServers:
    """A connection to each configured server, by server name (none is opened yet)."""

    def __init__(self, configs: Iterable[McpServerConfig], *, connect_timeout_s: float) -> None:
        self.connections = {
            config.name: McpConnection(config, connect_timeout_s=connect_timeout_s)
            for config in configs
        }

    @classmethod
    def from_settings(cls, settings: Settings) -> McpServers:
        """The servers of WRENCH_MCP_SERVERS."""
        return cls(settings.mcp_server_list(), connect_timeout_s=settings.mcp_connect_timeout_s)

    def __len__(self) -> int:
        return len(self.connections)

    async def aclose(self) -> None:
        """Close every open connection (stdio servers' processes stop)."""
        await asyncio.gather(*(c.aclose() for c in self.connections.values()))


class McpToolset:
    """Registers the servers' tools in ``registry`` (descriptors, for planning) and, when
    given, in ``tools`` (implementations, for calls). With ``keep_open`` off the connection
    is closed once its tools are listed: the SuperAgent plans, it never calls."""

    def __init__(
        self,
        servers: McpServers,
        registry: ToolRegistry,
        tools: dict[str, Tool] | None = None,
        *,
        interval_s: float = 15.0,
        max_result_bytes: int = 524_288,
        keep_open: bool = True,
    ) -> None:
        self.servers = servers
        self.registry = registry
        self.tools = tools
        self.interval_s = interval_s
        self.max_result_bytes = max_result_bytes
        self.keep_open = keep_open
        self.listed: dict[str, list[str]] = {}
        """Each listed server's tools, by WrenchAI name."""
        self.problems: dict[str, str] = {}
        """Why each server not listed yet could not be."""
        self._locks = {name: asyncio.Lock() for name in servers.connections}
        self._ready = asyncio.Event()
        self._ready_lock = asyncio.Lock()

    @classmethod
    def from_settings(
        cls, settings: Settings, registry: ToolRegistry, tools: dict[str, Tool] | None = None
    ) -> McpToolset | None:
        """The toolset of WRENCH_MCP_SERVERS (connections held open when ``tools`` is
        given), or None when no server is configured."""
        servers = McpServers.from_settings(settings)
        if not servers:
            return None
        return cls(
            servers,
            registry,
            tools,
            interval_s=settings.mcp_probe_interval_s,
            max_result_bytes=settings.max_event_bytes,
            keep_open=tools is not None,
        )

    async def ready(self) -> None:
        """Return once every server has been tried once (listed or not)."""
        if self._ready.is_set():
            return
        async with self._ready_lock:
            if not self._ready.is_set():
                await self.list_all()
                self._ready.set()

    async def keep_up(self) -> None:
        """List every server, then try the ones that could not be listed every
        ``interval_s``; close the connections when cancelled (the worker stops)."""
        try:
            await self.ready()
            while len(self.listed) < len(self.servers):
                await asyncio.sleep(self.interval_s)
                await self.list_all()
            await asyncio.Event().wait()
        finally:
            await self.aclose()

    async def list_all(self) -> None:
        """Try every server whose tools are not listed yet, all at once."""
        names = [name for name in self.servers.connections if name not in self.listed]
        await asyncio.gather(*(self.list_server(name) for name in names))

    async def list_server(self, name: str) -> bool:
        """List ``name``'s tools and register them, unless that is done; whether it is."""
        connection = self.servers.connections[name]
        async with self._locks[name]:
            if name in self.listed:
                return True
            try:
                listing = await connection.list_tools()
            except ToolError as exc:
                self.problems[name] = exc.message
                log.warning(
                    "MCP server not listed; tried again later", server=name, reason=exc.message
                )
                return False
            info = connection.server_info
            version = semantic_version(None if info is None else info.version)
            registered = [
                spec.name
                for tool in listing
                if (spec := self._register(connection, version, tool)) is not None
            ]
            self.listed[name] = registered
            self.problems.pop(name, None)
            log.info("MCP tools registered", server=name, version=version, tools=registered)
            if not self.keep_open:
                await connection.aclose()
            return True

    def _register(
        self, connection: McpConnection, version: str, tool: types.Tool
    ) -> ToolSpec | None:
        """Register ``tool`` under its WrenchAI name; None when it is left out (not among the
        configured ``tools``, a name or schema it cannot have, a name already taken)."""
        config = connection.config
        if config.tools is not None and tool.name not in config.tools:
            return None
        try:
            spec = tool_spec(config, version, tool)
        except (ValueError, ValidationError) as exc:
            log.warning("MCP tool left out", server=config.name, tool=tool.name, reason=str(exc))
            return None
        listed = self.listed.get(config.name, [])
        if spec.name in self.registry or spec.name in listed:
            log.warning(
                "MCP tool left out: another tool has its name",
                server=config.name,
                tool=tool.name,
                name=spec.name,
            )
            return None
        try:
            self.registry.register(spec)
        except PlanningError as exc:
            log.warning("MCP tool left out", server=config.name, tool=tool.name, reason=exc.message)
            return None
        if self.tools is not None:
            self.tools[spec.name] = mcp_tool(
                spec, connection, tool.name, max_result_bytes=self.max_result_bytes
            )
        return spec

    def server_of(self, name: str) -> str | None:
        """The configured server whose tool ``name`` would be (``mcp.<server>.<tool>``)."""
        for server, connection in self.servers.connections.items():
            if name.startswith(connection.config.tool_prefix):
                return server
        return None

    async def stand_in(self, name: str, version: str | None = None) -> ToolSpec | None:
        """The descriptor to run ``name`` with when the registry cannot give the one a plan
        asks for: the server's newest listing of it, or a stand-in whose calls fail (the
        server cannot be listed, or lists no such tool). None for a name of no server."""
        server = self.server_of(name)
        if server is None:
            return None
        await self.list_server(server)
        if name in self.registry:
            return self.registry.get(name)
        connection = self.servers.connections[server]
        reason = self.problems.get(server) or (
            f"MCP server {server} lists no tool that WrenchAI names {name}"
        )
        spec = stand_in_spec(connection.config, name, version or "0.0.0")
        if self.tools is not None and not isinstance(self.tools.get(name), McpTool):
            self.tools[name] = Unreachable(spec, connection, reason)
        return spec

    async def aclose(self) -> None:
        """Close every server's connection."""
        await self.servers.aclose()
