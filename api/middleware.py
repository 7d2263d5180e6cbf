"""Request ids and the last line of defence against unexpected exceptions.

A pure ASGI middleware rather than Starlette's BaseHTTPMiddleware, so streaming bodies and
background tasks are untouched. It sits inside Starlette's ServerErrorMiddleware: an exception
that no handler took is logged here with the request id and answered with the generic 500,
still carrying the X-Request-ID header.
"""

from __future__ import annotations

import re
import secrets

import structlog
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import internal_error_response, log_fault

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID_BYTES = REQUEST_ID_HEADER.encode()
# A caller's id is echoed back and logged, so it must be short and plain.
_ACCEPTABLE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def request_id_from(scope: Scope) -> str:
    """The caller's X-Request-ID when it is reasonable, a fresh one otherwise."""
    # ASGI servers hand header names over lowercased, so they compare as bytes.
    for name, value in scope.get("headers", ()):
        if name == _REQUEST_ID_BYTES:
            candidate = str(value.decode("latin-1"))
            if _ACCEPTABLE_ID.match(candidate):
                return candidate
    return secrets.token_hex(16)


class RequestContextMiddleware:
    """Binds ``request_id`` into the log context and answers with it in X-Request-ID."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        # bind and reset rather than structlog's bound_contextvars, which copies the whole
        # context to find what to restore: a cost on every request.
        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            log_fault(
                exc, request_id=request_id, method=scope.get("method"), path=scope.get("path")
            )
            if started:
                # Too late for a clean answer; let the server close the connection.
                raise
            await internal_error_response()(scope, receive, send_with_id)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)
