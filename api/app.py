"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import metadata
from typing import Any

from fastapi import FastAPI
from starlette.routing import Route

from api._hardening import install_hardening
from api._resources import Resources
from api.errors import install_error_handlers
from api.mcp import McpEndpoint
from api.middleware import RequestContextMiddleware
from api.openapi import keep_null_examples, responses_for
from api.routers import (
    admin,
    alerts,
    audit,
    auth,
    cost,
    health,
    insights,
    metrics,
    streams,
    tasks,
    tools,
)
from api.ui import install_dashboard
from wrenchai.settings import Settings


def _version() -> str:
    try:
        return metadata.version("wrenchai")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def create_app(settings: Settings) -> FastAPI:
    """The API for ``settings``. The lifespan opens the Postgres pool and the event producer
    and closes them on shutdown; neither server has to be up for the app to start."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resources = Resources.build(settings)
        await resources.start()
        app.state.resources = resources
        try:
            async with mcp.running():
                yield
        finally:
            await resources.close()

    app = FastAPI(
        title="WrenchAI API",
        version=_version(),
        description="Submit tasks to WrenchAI's agents and follow them through the event log.",
        # WRENCH_DOCS_ENABLED=false takes the schema and both docs pages off the network.
        docs_url="/docs" if settings.docs_enabled else None,
        redoc_url="/redoc" if settings.docs_enabled else None,
        openapi_url="/openapi.json" if settings.docs_enabled else None,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    keep_null_examples(app)
    install_hardening(app, settings)
    app.add_middleware(RequestContextMiddleware)
    # Every authenticated route may answer 401 (no valid credential), 403 (a scope it does
    # not hold) and 429 (a rate limit); the schema says so once for all of them.
    guarded: dict[int | str, dict[str, Any]] = responses_for(401, 403, 429)
    app.include_router(auth.router)
    for router in (
        admin.router,
        tasks.router,
        streams.router,
        tools.router,
        alerts.router,
        insights.router,
        cost.router,
    ):
        app.include_router(router, responses=guarded)
    app.include_router(audit.router, responses=guarded)
    app.include_router(metrics.router, responses=guarded)
    app.include_router(health.router)
    install_dashboard(app)
    # MCP over streamable HTTP; the endpoint checks each request's credential itself.
    mcp = McpEndpoint(app, settings, _version())
    app.router.routes.append(Route("/mcp", mcp, methods=["GET", "POST", "DELETE"]))
    return app
