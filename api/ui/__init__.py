"""The dashboard: pages under ``/ui`` that sign in and then use only the public API and its
streams, so the dashboard is their first client. No build step: one HTML page, a script
and a stylesheet shipped in the package, and nothing fetched from anywhere else."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).with_name("static")

UI_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
"""The page loads its own script and style and talks to its own origin, nothing else."""

router = APIRouter(include_in_schema=False)


def _page() -> HTMLResponse:
    return HTMLResponse(
        (STATIC / "index.html").read_text(encoding="utf-8"),
        headers={"Content-Security-Policy": UI_CSP, "Cache-Control": "no-store"},
    )


@router.get("/ui")
@router.get("/ui/")
async def dashboard() -> HTMLResponse:
    """The dashboard's page; the script shows the view the address names."""
    return _page()


@router.get("/ui/{view:path}")
async def dashboard_view(view: str) -> HTMLResponse:
    """A view of the dashboard (``/ui/tasks/<id>``, ``/ui/alerts``...), the same page."""
    del view
    return _page()


def install_dashboard(app: FastAPI) -> None:
    """Serve the dashboard's files under /ui/static and its views under /ui."""
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
    app.include_router(router)
