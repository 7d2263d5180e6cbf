"""WrenchAI as a Model Context Protocol server, with the official ``mcp`` SDK.

Tools (submit_task, get_task, list_tasks, task_history, task_state_as_of, cancel_task,
watch_task), the resources ``task://{task_id}`` and ``task://{task_id}/events``, and a prompt
per shipped playbook, one implementation (:func:`build_server`) on two transports:

- stdio, ``wrenchai mcp`` (:func:`serve_stdio`): a client of the API at ``WRENCH_API_URL``
  with the credential of ``WRENCH_API_KEY``, as ``wrenchai submit`` is;
- streamable HTTP at ``/mcp`` on the API (:class:`McpEndpoint`): each request acts as the
  credential it carries, refused with 401 before any MCP message when the API refuses it.

Either way the server is a client of WrenchAI's public HTTP API with the caller's
credential, never of its internals: tenant isolation, scopes, rate limits, validation,
errors and read-your-writes hold exactly as for any client, and the tools cannot drift from
the routes. Over HTTP the calls go to the same app in process, through a transport that
streams (httpx's ASGITransport buffers whole answers, which a task's stream never ends);
see :mod:`api.mcp._http` for why not over the network. docs/mcp.md is the user's guide.
"""

from api.mcp._client import ApiCallError, WrenchApi
from api.mcp._http import McpEndpoint
from api.mcp._server import build_server
from api.mcp._stdio import serve_stdio

__all__ = ["ApiCallError", "McpEndpoint", "WrenchApi", "build_server", "serve_stdio"]
