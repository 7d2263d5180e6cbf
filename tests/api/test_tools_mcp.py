"""GET /tools and the MCP servers of WRENCH_MCP_SERVERS: each reachable server's tools listed
like any tool (descriptor, statistics from the log, health from the server's ping), from the
first ping a server answers on, and kept, not ok, while it is down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from events import EventProducer
from processors.tools import ToolRegistry, ToolSpec, builtin_registry
from processors.tools.builtin import Tool
from tests.api._support import seed_api_key, serve
from tests.events.execution_samples import SEARCH_TIMEOUT, TASK_TYPE, Story
from tests.processors.tools.mcp.support import (
    TOKEN,
    HttpServer,
    http_server,
    servers,
    stdio_server,
)
from tests.projections.conftest import submitted
from wrenchai.settings import Settings

pytestmark = pytest.mark.usefixtures("topics")

WAIT_S = 30.0
TENANT = "default"  # the tenant of the seeded API key

Tools = dict[str, dict[str, Any]]


@pytest.fixture
def http(tmp_path: Path) -> Iterator[HttpServer]:
    server = HttpServer(tmp_path / "http-server.out")
    yield server
    server.kill()


def mcp_tools(tools: Tools, server: str) -> Tools:
    """The listed tools of ``server``."""
    return {name: tool for name, tool in tools.items() if name.startswith(f"mcp.{server}.")}


async def until(client: httpx.AsyncClient, holds: Callable[[Tools], bool]) -> Tools:
    """GET /tools, by name, once its answer satisfies ``holds``."""
    deadline = time.monotonic() + WAIT_S
    while True:
        response = await client.get("/tools")
        assert response.status_code == 200, response.text
        tools = {tool["name"]: tool for tool in response.json()["tools"]}
        if holds(tools):
            return tools
        assert time.monotonic() < deadline, f"/tools never changed: {sorted(tools)}"
        await asyncio.sleep(0.1)


def all_ok(server: str, count: int) -> Callable[[Tools], bool]:
    """``count`` tools of ``server`` listed, each ok."""

    def holds(tools: Tools) -> bool:
        found = mcp_tools(tools, server)
        return len(found) == count and all(t["health"]["ok"] for t in found.values())

    return holds


@pytest.mark.usefixtures("projector")
async def test_an_mcp_servers_tools_are_listed_like_any_tool(
    settings: Settings, db: asyncpg.Connection, producer: EventProducer
) -> None:
    """The stdio server's configured tools join the built-in ones, sorted by name: the
    server's version, its description, the configured capabilities before the tool's own
    name, mcp and mcp:<server>, the configuration's flags and cost hints, the caller's
    tenant's calls from the log, and the server's ping as health. A tool the configuration
    leaves out is not listed."""
    entry = stdio_server(
        "files",
        tools=["add", "echo"],
        capabilities={"add": ["arithmetic"]},
        usd_per_call=0.001,
        seconds=2,
    )
    configured = settings.model_copy(
        update={"mcp_servers": servers(entry), "mcp_probe_interval_s": 0.2}
    )
    ours = submitted(tenant_id=TENANT)
    story = Story(ours)
    story.call("sum", 1, "mcp.files.add", "1.2.0", error=SEARCH_TIMEOUT, duration_s=3.0)
    story.call("sum", 2, "mcp.files.add", "1.2.0", duration_s=1.0, cost_usd=0.001)
    positions = await producer.publish_many([ours, *story.events])

    async with serve(configured, api_key=await seed_api_key(db, configured)) as client:
        await until(client, all_ok("files", 2))
        response = await client.get("/tools", params={"wait_for": str(max(positions))})

    listed = response.json()["tools"]
    names = [tool["name"] for tool in listed]
    assert names == sorted([*builtin_registry().names(), "mcp.files.add", "mcp.files.echo"])
    tools = {tool["name"]: tool for tool in listed}
    add = tools["mcp.files.add"]
    assert {k: v for k, v in add.items() if k not in ("observed", "health")} == {
        "name": "mcp.files.add",
        "version": "1.2.0",
        "description": "add of MCP server files: The sum of two integers.",
        "capabilities": ["arithmetic", "mcp.files.add", "mcp", "mcp:files"],
        "offline": True,
        "uses_llm": False,
        "side_effects": True,
        "idempotent": False,
        "cost": {"usd_per_call": 0.001, "tokens_per_call": 0, "seconds": 2.0},
    }
    assert tools["mcp.files.echo"]["capabilities"] == ["mcp.files.echo", "mcp", "mcp:files"]
    assert "wrench-test 1.2.0" in add["health"]["detail"] and "ping" in add["health"]["detail"]

    observed = add["observed"]
    assert (observed["calls"], observed["successes"], observed["failures"]) == (2, 1, 1)
    assert observed["cost_usd"] == pytest.approx(0.001)
    assert [b["task_type"] for b in observed["by_task_type"]] == [TASK_TYPE]
    assert tools["mcp.files.echo"]["observed"]["calls"] == 0


async def test_a_server_down_at_start_is_listed_once_it_answers_and_kept_while_down(
    settings: Settings, db: asyncpg.Connection, http: HttpServer, tmp_path: Path
) -> None:
    """An HTTP server that is not running when the API starts has no tools listed (and
    /health says it is down); started, its four tools appear, ok; killed, they stay listed
    with the same descriptors and a health that is not ok, naming the server; started
    again, they are ok again. The built-in tools are listed throughout."""
    token = tmp_path / "token"
    token.write_text(TOKEN)
    configured = settings.model_copy(
        update={
            "mcp_servers": servers(http_server("web", http.port, token)),
            "mcp_probe_interval_s": 0.2,
        }
    )
    async with serve(configured, api_key=await seed_api_key(db, configured)) as client:
        health = (await client.get("/health")).json()["mcp_servers"]
        assert [(s["name"], s["ok"]) for s in health] == [("web", False)]
        before = await until(client, lambda tools: True)
        assert mcp_tools(before, "web") == {}
        assert set(builtin_registry().names()) <= set(before)

        await asyncio.to_thread(http.start)
        up = mcp_tools(await until(client, all_ok("web", 4)), "web")
        assert set(up) == {"mcp.web.add", "mcp.web.echo", "mcp.web.fail", "mcp.web.slow"}

        await asyncio.to_thread(http.kill)
        down = mcp_tools(
            await until(
                client,
                lambda tools: (
                    bool(mcp_tools(tools, "web"))
                    and not any(t["health"]["ok"] for t in mcp_tools(tools, "web").values())
                ),
            ),
            "web",
        )
        assert set(down) == set(up)
        for name, tool in down.items():
            assert {k: v for k, v in tool.items() if k != "health"} == {
                k: v for k, v in up[name].items() if k != "health"
            }
            assert "MCP server web" in tool["health"]["detail"]

        await asyncio.to_thread(http.start)
        await until(client, all_ok("web", 4))


SHADOW = ToolSpec(
    name="mcp.files.echo",
    version="9.0.0",
    description="A tool module's own tool that an MCP tool's name would take.",
    capabilities=["echo"],
    input_schema={"type": "object"},
    output_schema={"type": "object"},
)


def register(registry: ToolRegistry, tools: dict[str, Tool], settings: Settings) -> None:
    """This module is also a tool module (WRENCH_TOOL_MODULES) registering a descriptor
    whose name the MCP server's echo would have."""
    registry.register(SHADOW)


async def test_a_registered_tool_keeps_its_name_over_an_mcp_tool(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """A tool of WRENCH_TOOL_MODULES named like one of an MCP server's tools is the one
    listed, once, as the agents leave that MCP tool out; the server's other tools are
    listed."""
    configured = settings.model_copy(
        update={
            "tool_modules": __name__,
            "mcp_servers": servers(stdio_server("files", tools=["add", "echo"])),
            "mcp_probe_interval_s": 0.2,
        }
    )
    async with serve(configured, api_key=await seed_api_key(db, configured)) as client:
        await until(
            client,
            lambda tools: "mcp.files.add" in tools and tools["mcp.files.add"]["health"]["ok"],
        )
        listed = (await client.get("/tools")).json()["tools"]
    names = [tool["name"] for tool in listed]
    assert names.count("mcp.files.echo") == 1 and "mcp.files.add" in names
    echo = next(tool for tool in listed if tool["name"] == "mcp.files.echo")
    assert (echo["version"], echo["health"]) == ("9.0.0", None)
