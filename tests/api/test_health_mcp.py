"""GET /health and the MCP servers of WRENCH_MCP_SERVERS: each one's ping, informational."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api._support import serve
from tests.processors.tools.mcp.support import (
    TOKEN,
    HttpServer,
    http_server,
    kill_pid_in,
    servers,
    stdio_server,
)
from wrenchai.settings import Settings

pytestmark = pytest.mark.usefixtures("db", "topics")

WAIT_S = 30.0


@pytest.fixture
def http(tmp_path: Path) -> Iterator[HttpServer]:
    server = HttpServer(tmp_path / "http-server.out")
    yield server
    server.kill()


async def until(
    client: httpx.AsyncClient, holds: Callable[[list[dict[str, Any]]], bool]
) -> httpx.Response:
    """GET /health until its ``mcp_servers`` satisfy ``holds``."""
    deadline = time.monotonic() + WAIT_S
    while True:
        response = await client.get("/health")
        reported = response.json()["mcp_servers"]
        if holds(reported):
            return response
        assert time.monotonic() < deadline, f"/health never changed: {reported}"
        await asyncio.sleep(0.1)


async def test_health_reports_each_mcp_server_up_then_down_once_it_dies(
    settings: Settings, http: HttpServer, tmp_path: Path
) -> None:
    """A stdio server and an HTTP server both answer their ping: ok, named with their
    version. The HTTP server killed: not ok, saying it cannot be reached. The stdio server's
    process killed, with its command now failing to start: not ok too. The status stays
    healthy throughout: the servers are informational."""
    http.start()
    token = tmp_path / "token"
    token.write_text(TOKEN)
    pid_file, refuse = tmp_path / "stdio.pid", tmp_path / "refuse"
    entries = [
        stdio_server("files", "--pid-file", str(pid_file), "--refuse-if", str(refuse)),
        http_server("web", http.port, token),
    ]
    configured = settings.model_copy(
        update={"mcp_servers": servers(*entries), "mcp_probe_interval_s": 0.2}
    )
    async with serve(configured) as client:
        response = await until(client, lambda found: all(s["ok"] for s in found))
        assert response.status_code == 200
        files, web = response.json()["mcp_servers"]
        assert (files["name"], files["transport"]) == ("files", "stdio")
        assert (web["name"], web["transport"]) == ("web", "http")
        assert "wrench-test 1.2.0" in files["detail"] and "ping" in web["detail"]
        assert datetime.fromisoformat(web["checked_at"]).tzinfo is not None

        http.kill()
        response = await until(client, lambda found: not found[1]["ok"])
        files, web = response.json()["mcp_servers"]
        assert files["ok"] and "MCP server web" in web["detail"]
        assert response.status_code == 200 and response.json()["status"] == "healthy"

        refuse.touch()
        await asyncio.to_thread(kill_pid_in, pid_file)
        # Each ping tries to start it again, and says why that fails.
        response = await until(client, lambda found: "cannot connect" in found[0]["detail"])
        files, _ = response.json()["mcp_servers"]
        assert not files["ok"] and "MCP server files" in files["detail"]
        assert response.status_code == 200


async def test_health_has_no_mcp_servers_when_none_is_configured(settings: Settings) -> None:
    """Without WRENCH_MCP_SERVERS the body has no mcp_servers at all."""
    async with serve(settings) as client:
        body = (await client.get("/health")).json()
    assert "mcp_servers" not in body and body["status"] == "healthy"
