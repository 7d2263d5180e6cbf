"""The tools' health, probed concurrently with a deadline and remembered a while.

A probe can be slow (code.python starts an interpreter, llm.complete asks the LLM server):
GET /tools must not wait on it, and a client polling /tools must not start a probe per
request. A probe that misses the deadline is reported as not ok and keeps running; the next
refresh takes its answer instead of starting another.

The MCP servers of WRENCH_MCP_SERVERS are probed the same way, by their ping (:class:`McpBoard`):
this API connects to each itself (a stdio server's command runs here too), as it probes the
built-in tools itself, and keeps the answers WRENCH_MCP_PROBE_INTERVAL_S. A server that
answers and whose tools are not listed yet is listed then, by the toolset the agents use, so
GET /tools shows a server's tools from its first answer on, and keeps them, not ok, while it
is down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

import structlog

from processors.tools import ToolRegistry, ToolSpec
from processors.tools.builtin import ToolHealth

if TYPE_CHECKING:
    from processors.tools.mcp import McpServers, McpToolset
    from wrenchai.settings import Settings

log = structlog.get_logger(__name__)


class Probed(Protocol):
    """Anything with a health probe: a tool, an MCP server's connection."""

    async def health(self) -> ToolHealth: ...


PROBE_TIMEOUT_S = 2.0
HEALTH_TTL_S = 30.0
CLOSE_TIMEOUT_S = 5.0


class ToolHealthBoard:
    """Health of each tool by name, at most ``ttl_s`` old."""

    def __init__(
        self,
        tools: Mapping[str, Probed],
        *,
        timeout_s: float = PROBE_TIMEOUT_S,
        ttl_s: float = HEALTH_TTL_S,
    ) -> None:
        self.tools = dict(tools)
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self._answers: dict[str, ToolHealth] = {}
        self._checked = float("-inf")
        self._inflight: dict[str, asyncio.Task[ToolHealth]] = {}
        self._lock = asyncio.Lock()
        self._mcp: McpBoard | None = None

    def mcp(self, settings: Settings) -> McpBoard | None:
        """The MCP servers of ``settings`` as this API sees them, made on first use and
        closed with this board; None when none is configured."""
        if self._mcp is None and settings.mcp_server_list():
            self._mcp = McpBoard(settings, timeout_s=self.timeout_s)
        return self._mcp

    def mcp_servers(self, settings: Settings) -> tuple[McpServers, ToolHealthBoard] | None:
        """The MCP servers of ``settings`` and the board of their pings (by server name);
        None when none is configured."""
        board = self.mcp(settings)
        return None if board is None else (board.servers, board.pings)

    async def current(self) -> dict[str, ToolHealth]:
        """Every tool's health, probing again when the last answers are older than the TTL."""
        async with self._lock:
            now = asyncio.get_running_loop().time()
            if now - self._checked >= self.ttl_s:
                self._answers = await self._probe_all()
                self._checked = asyncio.get_running_loop().time()
            return dict(self._answers)

    async def _probe_all(self) -> dict[str, ToolHealth]:
        # A probe still in flight is one that missed an earlier deadline: wait on it (or take
        # the answer it has since given) rather than start another.
        for name, tool in self.tools.items():
            if name not in self._inflight:
                self._inflight[name] = asyncio.create_task(_probe(name, tool))
        if self._inflight:
            await asyncio.wait(self._inflight.values(), timeout=self.timeout_s)
        answers = {}
        for name, task in list(self._inflight.items()):
            if task.done():
                answers[name] = task.result()
                del self._inflight[name]
            else:
                answers[name] = ToolHealth(
                    ok=False, detail=f"the health probe gave no answer within {self.timeout_s} s"
                )
        return answers

    async def close(self) -> None:
        """Let running probes finish (a cancelled probe could leave a child process), then
        release what the tools hold open."""
        running = [t for t in self._inflight.values() if not t.done()]
        if running:
            _, late = await asyncio.wait(running, timeout=CLOSE_TIMEOUT_S)
            for task in late:
                task.cancel()
        for tool in self.tools.values():
            aclose = getattr(tool, "aclose", None)  # not part of the Tool protocol
            if aclose is not None:
                await aclose()
        if self._mcp is not None:
            await self._mcp.close()


async def _probe(name: str, tool: Probed) -> ToolHealth:
    # Built-in probes report their own failures; a tool of another make might raise.
    try:
        return await tool.health()
    except Exception as exc:
        log.warning("tool health probe failed", tool=name, error_type=type(exc).__name__)
        return ToolHealth(ok=False, detail=f"{name} health probe failed: {type(exc).__name__}")


class McpBoard:
    """The MCP servers of WRENCH_MCP_SERVERS as this API sees them: each server's ping, by
    server name (``pings``), and the tools each has listed, in ``registry``.

    The tools are listed by :class:`~processors.tools.mcp.McpToolset`, as the agents list
    them, over the connection the pings use (one process of a stdio server), and only from a
    ping that was answered: a server down at start is listed at the first refresh it answers.
    As in a worker, a server is listed once: its tools stay in ``registry`` while it is down.
    """

    def __init__(self, settings: Settings, *, timeout_s: float = PROBE_TIMEOUT_S) -> None:
        from processors.tools.mcp import McpServers, McpToolset

        self.servers = McpServers.from_settings(settings)
        self.registry = ToolRegistry()
        self.toolset = McpToolset(self.servers, self.registry, keep_open=True)
        self.pings = ToolHealthBoard(
            {name: _ListingPing(self.toolset, name) for name in self.servers.connections},
            timeout_s=timeout_s,
            ttl_s=settings.mcp_probe_interval_s,
        )

    async def tools(self) -> list[tuple[ToolSpec, ToolHealth]]:
        """Every tool listed so far, in the order of WRENCH_MCP_SERVERS, with its server's
        ping; the pings are refreshed first when they are older than their TTL."""
        answers = await self.pings.current()
        return [
            (self.registry.get(name), answers[server])
            for server in self.servers.connections
            for name in self.toolset.listed.get(server, [])
        ]

    async def close(self) -> None:
        """Let running pings finish, then close every server's connection."""
        await self.pings.close()
        await self.toolset.aclose()


class _ListingPing:
    """One server's ping, which lists the server's tools once it answers, if that is not
    done yet: the listing is refreshed with the pings, under their deadline."""

    def __init__(self, toolset: McpToolset, server: str) -> None:
        self.toolset, self.server = toolset, server

    async def health(self) -> ToolHealth:
        health = await self.toolset.servers.connections[self.server].health()
        if not health.ok or await self.toolset.list_server(self.server):
            return health
        problem = self.toolset.problems.get(self.server, "no reason given")
        return ToolHealth(
            ok=True, detail=f"{health.detail}; its tools could not be listed: {problem}"
        )
