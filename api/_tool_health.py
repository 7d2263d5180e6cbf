"""The tools' health, probed concurrently with a deadline and remembered a while.

A probe can be slow (code.python starts an interpreter, llm.complete asks the LLM server):
GET /tools must not wait on it, and a client polling /tools must not start a probe per
request. A probe that misses the deadline is reported as not ok and keeps running; the next
refresh takes its answer instead of starting another.

The MCP servers of WRENCH_MCP_SERVERS are probed the same way, by their ping, for /health:
this API connects to each itself (a stdio server's command runs here too), as it probes the
built-in tools itself, and keeps the answers WRENCH_MCP_PROBE_INTERVAL_S.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

import structlog

from processors.tools.builtin import ToolHealth

if TYPE_CHECKING:
    from processors.tools.mcp import McpServers
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
        self._mcp: tuple[McpServers, ToolHealthBoard] | None = None

    def mcp_servers(self, settings: Settings) -> tuple[McpServers, ToolHealthBoard] | None:
        """The MCP servers of ``settings`` and the board of their pings (by server name),
        made on first use and closed with this board; None when none is configured."""
        if self._mcp is None and settings.mcp_server_list():
            from processors.tools.mcp import McpServers

            servers = McpServers.from_settings(settings)
            board = ToolHealthBoard(
                servers.connections, timeout_s=self.timeout_s, ttl_s=settings.mcp_probe_interval_s
            )
            self._mcp = servers, board
        return self._mcp

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
            await self._mcp[1].close()


async def _probe(name: str, tool: Probed) -> ToolHealth:
    # Built-in probes report their own failures; a tool of another make might raise.
    try:
        return await tool.health()
    except Exception as exc:
        log.warning("tool health probe failed", tool=name, error_type=type(exc).__name__)
        return ToolHealth(ok=False, detail=f"{name} health probe failed: {type(exc).__name__}")
