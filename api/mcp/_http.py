"""``/mcp`` on the API: MCP over streamable HTTP, acting as the caller's credential.

Before any MCP message is read, the request's credential (``X-API-Key``, or
``Authorization: Bearer`` with an API key or an access token) is shown to the API itself
(``GET /auth/me``): a missing or refused one gets the API's own 401 (or 429, 503) and never
reaches the MCP session manager, and the refusal is recorded as an ``access.denied`` like any
other. An accepted one becomes the :class:`WrenchApi` the request's tools call with.

Those calls go to this same app in this process (:class:`AppTransport`), through its whole
middleware stack and routes, so an MCP caller gets exactly what an HTTP caller gets. Calling
back over the network would need the address the server listens on, which the app cannot
know for sure (a port picked at start, a Unix socket, TLS, a proxy in front).

The session manager is stateless: every MCP request stands alone and carries its credential,
so any API process behind a load balancer can serve it and no session outlives a revoked key.
Progress notifications ride the response stream of the request they belong to.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from mcp.server.mcpserver import Context
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from api._hardening import cors_origins
from api.errors import error_response
from api.mcp._client import ApiCallError, WrenchApi
from api.mcp._server import build_server
from api.mcp._transport import CLIENT_EXTENSION, AppTransport
from processors.shared.playbook import load_playbooks
from wrenchai.settings import Settings

CALLER = "wrenchai.mcp.api"
"""The scope key under which an accepted request carries its caller's API client."""
INTERNAL_BASE_URL = "http://wrenchai-api.internal"
"""The base URL of calls to the app in process (the host is only a label)."""


class McpEndpoint:
    """The ASGI app at ``/mcp``; :meth:`running` must wrap the app's lifespan."""

    def __init__(self, app: ASGIApp, settings: Settings, version: str = "") -> None:
        self.app = app
        self.settings = settings
        self.version = version
        self.origins = frozenset(cors_origins(settings.cors_origins))
        self._http: httpx.AsyncClient | None = None
        self._manager: StreamableHTTPSessionManager | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Serve MCP until the block ends (in the app's lifespan, after its resources)."""
        server = build_server(_caller, load_playbooks(self.settings.playbooks_dir), self.version)
        server.streamable_http_app(
            stateless_http=True,
            max_request_body_size=self.settings.max_body_bytes,
            # The API's own checks apply (an Origin must be one of WRENCH_CORS_ORIGINS, see
            # __call__); a credential in a header is what a rebinding page cannot forge.
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        manager = server.session_manager
        started, stop = asyncio.Event(), asyncio.Event()

        async def run_manager() -> None:
            async with manager.run():
                started.set()
                await stop.wait()

        # The manager's task group must be left by the task that entered it, and a lifespan
        # may end in another task than it began (pytest-asyncio's fixtures do): it gets a
        # task of its own.
        runner = asyncio.create_task(run_manager())
        ready = asyncio.create_task(started.wait())
        await asyncio.wait([runner, ready], return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if runner.done():
            runner.result()  # raises why it could not start
        http = httpx.AsyncClient(transport=AppTransport(self.app), base_url=INTERNAL_BASE_URL)
        self._http, self._manager = http, manager
        try:
            yield
        finally:
            self._http = self._manager = None
            stop.set()
            await runner
            await http.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        http, manager = self._http, self._manager
        if http is None or manager is None:
            refused = error_response(
                503, "SERVICE_UNAVAILABLE", "the MCP endpoint is starting or stopping; retry"
            )
            await refused(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is not None and origin not in self.origins:
            refused = error_response(
                403,
                "FORBIDDEN",
                f"requests from the origin {origin} are not accepted; list it in "
                "WRENCH_CORS_ORIGINS to allow it",
                {"origin": origin},
            )
            await refused(scope, receive, send)
            return
        api = WrenchApi(http, _forwarded(headers, scope), {CLIENT_EXTENSION: scope.get("client")})
        try:
            await api.me()
        except ApiCallError as exc:
            await _refuse(exc, scope, receive, send)
            return
        scope[CALLER] = api
        await manager.handle_request(scope, receive, send)


def _forwarded(headers: Headers, scope: Scope) -> dict[str, str]:
    """What the calls on the caller's behalf send: its credential, as it gave it (the API
    reads X-API-Key first, then the bearer token), and its request id."""
    forwarded: dict[str, str] = {}
    api_key = headers.get("x-api-key")
    if api_key:
        forwarded["X-API-Key"] = api_key
    elif headers.get("authorization"):
        forwarded["Authorization"] = headers["authorization"]
    request_id = scope.get("state", {}).get("request_id")
    if request_id:
        forwarded["X-Request-ID"] = request_id
    return forwarded


async def _refuse(error: ApiCallError, scope: Scope, receive: Receive, send: Send) -> None:
    extra: dict[str, str] = {}
    if error.status == 401:
        extra["WWW-Authenticate"] = "Bearer"
    retry = error.details.get("retry_after_s")
    if error.status == 429 and retry is not None:
        extra["Retry-After"] = str(retry)
    refused = error_response(
        error.status or 503, error.code, error.message, error.details, extra or None
    )
    await refused(scope, receive, send)


def _caller(ctx: Context[Any, Any]) -> WrenchApi:
    """The API client the request's credential was accepted for (see McpEndpoint)."""
    request = ctx.request_context.request
    api = getattr(request, "scope", {}).get(CALLER)
    if not isinstance(api, WrenchApi):
        raise MCPError(INTERNAL_ERROR, "this request has no accepted credential")
    return api
