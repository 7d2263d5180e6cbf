"""A real HTTP server on loopback for the tools' tests: aiohttp routes on a free port.

Every request is recorded (path and headers), so a test can also prove that a refused URL
was never requested.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from wrenchai.embedded import free_port

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Seen:
    """One request the server received."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]


class LocalServer:
    """``async with LocalServer({"/path": handler}) as server``: served at ``server.url``
    (HTTPS when given an ``ssl_context``)."""

    def __init__(
        self, routes: dict[str, Handler], ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{self.port}"
        self._ssl = ssl_context
        self.seen: list[Seen] = []
        self._routes = routes
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> LocalServer:
        app = web.Application(middlewares=[self._record])
        for path, handler in self._routes.items():
            app.router.add_get(path, handler)
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self._ssl).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.seen.append(Seen(request.path, dict(request.query), dict(request.headers)))
        return await handler(request)
