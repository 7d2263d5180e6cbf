"""``wrenchai mcp``: the MCP server over stdio, as a client of an API somewhere else."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from api.mcp._client import WrenchApi
from api.mcp._server import build_server
from processors.shared.playbook import Playbook

REQUEST_TIMEOUT = httpx.Timeout(30.0)
"""Longer than any ?wait_for= the API grants (WRENCH_READ_WAIT_TIMEOUT_S)."""


async def serve_stdio(
    api_url: str, credential: str, playbooks: Mapping[str, Playbook], version: str = ""
) -> None:
    """Serve MCP on stdin and stdout until stdin closes, calling the API at ``api_url`` with
    ``credential`` (an API key or an access token) for every tool and resource."""
    async with httpx.AsyncClient(base_url=api_url, timeout=REQUEST_TIMEOUT) as http:
        # A bearer token may be an API key (wr_...) or a JWT: the API tells them apart.
        api = WrenchApi(http, {"Authorization": f"Bearer {credential}"})
        server = build_server(lambda _ctx: api, playbooks, version)
        await server.run_stdio_async()
