"""``wrenchai mcp`` over stdio, launched by the SDK's own stdio client as an MCP host would,
pointed at a running API with an API key in its environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp_types import TextResourceContents

from tests.mcp.conftest import Keys, api_get, nap, offset, structured
from tests.wrenchai.test_cli_watch import Stack


@pytest.fixture
def errlog(tmp_path: Path) -> Iterator[TextIO]:
    """Where the server's stderr (its logs) goes."""
    with open(tmp_path / "mcp.err", "w") as errors:
        yield errors


async def test_wrenchai_mcp_over_stdio_runs_a_task_to_its_end(
    mcp_stack: Stack, keys: Keys, tmp_path: Path, errlog: TextIO
) -> None:
    """Through `wrenchai mcp`: submit_task, then watch_task, whose progress notifications are
    the task's history in log order and whose answer is the completed task; the task://
    resource reads back what GET /tasks/{task_id} answers."""
    env = {**mcp_stack.env, "WRENCH_API_URL": mcp_stack.url, "WRENCH_API_KEY": keys.admin}
    server = StdioServerParameters(
        command=sys.executable, args=["-m", "wrenchai", "mcp"], env=env, cwd=tmp_path
    )
    messages: list[str | None] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        assert progress == len(messages) + 1
        messages.append(message)

    async with Client(stdio_client(server, errlog=errlog)) as client:
        submitted = structured(
            await client.call_tool(
                "submit_task",
                {"description": "Nap over stdio", "constraints": {"playbook": nap(0.1)}},
            )
        )
        task_id = submitted["task_id"]
        watched = structured(
            await client.call_tool(
                "watch_task",
                {"task_id": task_id, "timeout_s": 90},
                progress_callback=on_progress,
            )
        )
        (resource,) = (await client.read_resource(f"task://{task_id}")).contents

    assert watched["ended"] is True and watched["status"] == "completed"
    history = await api_get(
        mcp_stack, f"/tasks/{task_id}/events", keys.admin, wait_for=watched["last_position"]
    )
    ended = offset(watched["last_position"])
    events = [e for e in history["events"] if offset(e["position"]) <= ended]
    assert messages == [f"{e['position']} {e['type']}" for e in events]
    assert str(messages[-1]).endswith("task.completed")
    answered = await api_get(mcp_stack, f"/tasks/{task_id}", keys.admin)
    assert watched["task"] == answered and answered["status"] == "completed"
    assert isinstance(resource, TextResourceContents)
    assert json.loads(resource.text) == answered


def test_wrenchai_mcp_without_a_credential_says_how_to_give_one(tmp_path: Path) -> None:
    """With no key in the environment, the flags or a dev stack's state directory, `wrenchai
    mcp` exits 1 before serving anything, naming the variable to set; stdout stays empty."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WRENCH_")}
    done = subprocess.run(
        [sys.executable, "-m", "wrenchai", "mcp"],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert "WRENCH_API_KEY" in done.stderr
