"""The MCP server's tests run against a whole stack: the session's broker and Postgres with a
namespace and database of their own, the projector, the three agent workers and the API as
processes (the streamable HTTP endpoint is the API's own ``/mcp``). Tasks run the ``nap``
playbook of ``tests.processors.journey_tools``, which completes offline in about a second."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, TextContent

from events import role_scopes
from projections._db import connect
from tests.api._support import seed_api_key
from tests.wrenchai.test_cli_watch import Stack
from wrenchai.embedded import EmbeddedBroker

NAP: dict[str, Any] = {
    "name": "nap",
    "description": "Sleep, then sleep a little more.",
    "steps": [
        {"id": "nap", "tool": "test.sleep", "role": "coder", "input": {"seconds": 0.2}},
        {
            "id": "after",
            "tool": "test.sleep",
            "role": "coder",
            "input": {"seconds": 0.1},
            "depends_on": ["nap"],
        },
    ],
}
"""A playbook whose task completes in about a second (inline: the admin key may)."""


def nap(seconds: float) -> dict[str, Any]:
    """The nap playbook, its first step sleeping ``seconds``."""
    steps = [{**NAP["steps"][0], "input": {"seconds": seconds}}, NAP["steps"][1]]
    return {**NAP, "steps": steps}


async def _database(url: str, statement: str) -> None:
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


@dataclass
class Keys:
    """API keys of the stack: the default tenant's admin and viewer, another tenant's admin."""

    admin: str
    viewer: str
    other_tenant: str


@pytest.fixture(scope="package")
def mcp_stack(
    broker: EmbeddedBroker, postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The stack, shared by the package's tests."""
    name = f"wrench_mcp_{uuid.uuid4().hex[:12]}"
    asyncio.run(_database(postgres_url, f'CREATE DATABASE "{name}"'))
    base, _, _ = postgres_url.rpartition("/")
    stack = Stack(broker, f"{base}/{name}", tmp_path_factory.mktemp("mcp"))
    try:
        stack.start("projector", "projector")
        for worker in ("super-agent", "journey-agent", "inspector-agent"):
            stack.start(worker, "worker", worker)
        stack.start_api()
        yield stack
    finally:
        for process in stack.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(15)
        asyncio.run(_database(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="package")
async def keys(mcp_stack: Stack) -> Keys:
    conn = await connect(mcp_stack.settings)
    try:
        viewer = await seed_api_key(conn, mcp_stack.settings, scopes=sorted(role_scopes("viewer")))
        other = await seed_api_key(conn, mcp_stack.settings, tenant_id="other")
    finally:
        await conn.close()
    return Keys(admin=mcp_stack.key, viewer=viewer, other_tenant=other)


@asynccontextmanager
async def mcp_over_http(url: str, headers: dict[str, str], **options: Any) -> AsyncIterator[Client]:
    """The SDK's client on ``url``/mcp over streamable HTTP, sending ``headers``."""
    timeout = httpx2.Timeout(30.0, read=300.0)
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeout) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http), **options) as client,
    ):
        yield client


async def api_get(stack: Stack, path: str, key: str, **params: Any) -> Any:
    """What the API itself answers to GET ``path`` with ``key``."""
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
        response = await http.get(path, params=params, headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    return response.json()


def structured(result: CallToolResult) -> dict[str, Any]:
    """A successful tool result's structured content (the API's answer)."""
    assert not result.is_error, result.content
    content: dict[str, Any] | None = result.structured_content
    assert content is not None
    return content


def refused(result: CallToolResult) -> dict[str, Any]:
    """A tool error's API error body (``{"code", "message", "details"}``)."""
    assert result.is_error, result.structured_content
    assert result.structured_content is not None
    error = result.structured_content["error"]
    assert isinstance(error, dict)
    assert isinstance(result.content[0], TextContent) and error["code"] in result.content[0].text
    return error


def offset(position: str) -> int:
    """The offset of a position (a task's events share one partition)."""
    return int(position.split(":")[1])
