"""What every answer of the API gets for being on a network (issue 9, "Hardening"): a bound on
request bodies, security headers, and CORS only for the origins an operator lists.

All of it is pure ASGI middleware (see api.middleware), installed by ``install_hardening``.
From the outside in: security headers (so a 413 or a CORS preflight carries them too), CORS
(so a browser can read a 413 as well as any other answer), then the body limit. It runs inside
api.middleware.RequestContextMiddleware, so every answer here still has its X-Request-ID.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response
from wrenchai.errors import ConfigurationError
from wrenchai.settings import Settings

log = structlog.get_logger(__name__)

# What a browser on an allowed origin may send and read: the methods the routes serve, the
# credentials both ways (api.deps), the request id, and what a client needs to back off.
CORS_METHODS = ("GET", "POST", "PUT", "DELETE")
CORS_REQUEST_HEADERS = ("Authorization", "X-API-Key", "Content-Type", "X-Request-ID")
CORS_EXPOSED_HEADERS = ("X-Request-ID", "Retry-After", "WWW-Authenticate")
CORS_MAX_AGE_S = 600

# A JSON API loads nothing and is framed by nobody.
API_CSP = "default-src 'none'; frame-ancestors 'none'"
# Swagger UI and ReDoc, as FastAPI serves them: scripts and styles from jsDelivr, an inline
# script that starts them, ReDoc's Google fonts and web worker, the schema fetched from here.
DOCS_CSP = (
    "default-src 'none'; "
    "script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src https://fonts.gstatic.com; "
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    "connect-src 'self'; "
    "worker-src blob:; "
    "frame-ancestors 'none'"
)
HSTS = "max-age=31536000"


def install_hardening(app: FastAPI, settings: Settings) -> None:
    """Add the body limit, CORS (when ``WRENCH_CORS_ORIGINS`` lists origins) and the security
    headers to ``app``. Call it after the error handlers, before the request-id middleware."""
    app.add_exception_handler(BodyTooLarge, _body_too_large)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    origins = cors_origins(settings.cors_origins)
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_credentials=True,
            allow_methods=CORS_METHODS,
            allow_headers=CORS_REQUEST_HEADERS,
            expose_headers=CORS_EXPOSED_HEADERS,
            max_age=CORS_MAX_AGE_S,
        )
    docs_paths = {path for path in (app.docs_url, app.redoc_url) if path}
    if app.docs_url and app.swagger_ui_oauth2_redirect_url:
        docs_paths.add(app.swagger_ui_oauth2_redirect_url)
    app.add_middleware(SecurityHeadersMiddleware, docs_paths=frozenset(docs_paths))


def cors_origins(raw: str) -> list[str]:
    """The origins of ``WRENCH_CORS_ORIGINS`` as a browser sends them (scheme://host[:port],
    no trailing slash); empty means CORS is off.

    Raises ConfigurationError for ``*`` (with credentials allowed, any site could act as the
    signed-in user) and for anything that is not an origin (a path would never match).
    """
    origins: list[str] = []
    for entry in (part.strip().rstrip("/") for part in raw.split(",")):
        if not entry:
            continue
        if entry == "*":
            raise ConfigurationError(
                "WRENCH_CORS_ORIGINS cannot be '*': credentials are allowed, so any site "
                "could act as a signed-in user; list the origins, e.g. https://app.example.com"
            )
        parts = urlsplit(entry)
        if parts.scheme not in {"http", "https"} or not parts.netloc or parts.path:
            raise ConfigurationError(
                f"WRENCH_CORS_ORIGINS holds {entry!r}, which is not an origin; write "
                "scheme://host[:port] as the browser sends it, e.g. https://app.example.com"
            )
        origins.append(f"{parts.scheme}://{parts.netloc}".lower())
    return origins


class BodyTooLarge(HTTPException):
    """The request body is over ``WRENCH_MAX_BODY_BYTES``. An HTTPException, so FastAPI passes
    it through when it reads the body (anything else it turns into a 400)."""

    def __init__(self, max_body_bytes: int) -> None:
        super().__init__(413, _too_large_message(max_body_bytes))
        self.max_body_bytes = max_body_bytes


def _too_large_message(max_body_bytes: int) -> str:
    return (
        f"the request body is larger than the {max_body_bytes} bytes this API accepts; "
        "send a smaller one"
    )


def payload_too_large(max_body_bytes: int) -> JSONResponse:
    """The 413 answer, in the standard error shape, saying what the limit is."""
    return error_response(
        413,
        "PAYLOAD_TOO_LARGE",
        _too_large_message(max_body_bytes),
        {"max_body_bytes": max_body_bytes},
    )


async def _body_too_large(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BodyTooLarge)
    return payload_too_large(exc.max_body_bytes)


def declared_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The Content-Length a request declares, or None when it declares none (or nonsense,
    which the server refuses before it gets here)."""
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimitMiddleware:
    """Refuses a body over ``max_body_bytes`` with 413 without reading it into memory: at once
    when Content-Length says so, otherwise as soon as the chunks read so far pass the limit
    (the application is reading it, so nothing it would do with the body has happened yet)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        declared = declared_length(scope.get("headers", ()))
        if declared is not None and declared > limit:
            log.info("request body too large", declared_bytes=declared, max_body_bytes=limit)
            await payload_too_large(limit)(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    log.info("request body too large", read_bytes=received, max_body_bytes=limit)
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            # Read outside the routes (whose error handlers answer it): answer here if we can.
            if started:
                raise
            await payload_too_large(limit)(scope, receive, send)


class SecurityHeadersMiddleware:
    """Adds the security headers to every HTTP answer that does not set its own: nosniff, no
    framing, no referrer, a CSP (a relaxed one on the docs pages), no caching, and HSTS when
    the request came over https (behind a proxy: its X-Forwarded-Proto, which uvicorn turns
    into the scheme for trusted proxies)."""

    def __init__(self, app: ASGIApp, docs_paths: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.docs_paths = docs_paths
        # The four sets of headers, encoded once rather than on every answer.
        self._raw = {
            (https, docs): [
                (name.lower().encode("latin-1"), value.encode("latin-1"))
                for name, value in security_headers(https=https, docs=docs)
            ]
            for https in (False, True)
            for docs in (False, True)
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = self._raw[scope.get("scheme") == "https", scope.get("path") in self.docs_paths]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer = message["headers"] = list(message.get("headers", ()))
                # A header the answer sets itself, in whatever case, wins.
                present = {name.lower() for name, _ in answer}
                answer.extend(header for header in headers if header[0] not in present)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def security_headers(*, https: bool, docs: bool) -> Sequence[tuple[str, str]]:
    """The security headers of one answer."""
    headers = [
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "no-referrer"),
        ("Content-Security-Policy", DOCS_CSP if docs else API_CSP),
        ("Cache-Control", "no-store"),
    ]
    if https:
        headers.append(("Strict-Transport-Security", HSTS))
    return headers
