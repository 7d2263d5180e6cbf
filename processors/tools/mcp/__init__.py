"""MCP servers' tools as WrenchAI tools: ``mcp.<server>.<tool>``.

The servers are configured in WRENCH_MCP_SERVERS (a stdio command or a streamable HTTP URL
each; docs/mcp-tools.md). :class:`McpToolset` lists each server's tools when a worker
starts and registers them in the worker's registry and toolbox; the JourneyAgent then calls
them like any tool: the input is checked against the server's schema first, failures are
ToolErrors (:class:`McpUnavailable` when the server cannot be reached or drops the
connection, transient, so recovery moves to the stage's fallback), and every call is a
tool.called and tool.returned pair. :class:`McpConnection` keeps one session per server open
and opens it again after the server dies; its ``health`` is a ping.
"""

from processors.tools.mcp._connection import McpConnection, McpUnavailable
from processors.tools.mcp._tools import (
    MCP_RESULT,
    McpTool,
    local_name,
    semantic_version,
    tool_output,
    tool_spec,
)
from processors.tools.mcp._toolset import McpServers, McpToolset

__all__ = [
    "MCP_RESULT",
    "McpConnection",
    "McpServers",
    "McpTool",
    "McpToolset",
    "McpUnavailable",
    "local_name",
    "semantic_version",
    "tool_output",
    "tool_spec",
]
