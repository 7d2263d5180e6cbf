"""The HTTP API: FastAPI app, routers, dependencies and error handlers."""

from api.app import create_app

__all__ = ["create_app"]
