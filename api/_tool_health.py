"""The built-in tools' health, probed concurrently with a deadline and remembered a while.

A probe can be slow (code.python starts an interpreter, llm.complete asks the LLM server):
GET /tools must not wait on it, and a client polling /tools must not start a probe per
request. A probe that misses the deadline is reported as not ok and keeps running; the next
refresh takes its answer instead of starting another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import structlog

from processors.tools.builtin import Tool, ToolHealth

log = structlog.get_logger(__name__)

PROBE_TIMEOUT_S = 2.0
HEALTH_TTL_S = 30.0
CLOSE_TIMEOUT_S = 5.0


class ToolHealthBoard:
    """Health of each tool by name, at most ``ttl_s`` old."""

    def __init__(
        self,
        tools: Mapping[str, Tool],
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


async def _probe(name: str, tool: Tool) -> ToolHealth:
    # Built-in probes report their own failures; a tool of another make might raise.
    try:
        return await tool.health()
    except Exception as exc:
        log.warning("tool health probe failed", tool=name, error_type=type(exc).__name__)
        return ToolHealth(ok=False, detail=f"{name} health probe failed: {type(exc).__name__}")
