"""MCP tools in the running system: `wrenchai worker super-agent` and `wrenchai worker
journey-agent` on the real broker, configured with the test MCP server over stdio, and the
test tools of tests/processors/journey_tools.py as fallbacks."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from events import (
    Actor,
    Codec,
    Event,
    EventProducer,
    FernetCipher,
    TaskSubmitted,
    bootstrap_topics,
    generate_key,
)
from tests.processors.super.test_super_agent_worker import Log, WorkerProcess
from tests.processors.tools.mcp.support import calls, kill_pid_in, servers, stdio_server
from wrenchai.embedded import EmbeddedBroker
from wrenchai.settings import Settings

DONE_WAIT_S = 60.0


@pytest.fixture
def settings(broker: EmbeddedBroker, tmp_path: Path) -> Settings:
    """Fast group joins on the embedded broker, the test tools of journey_tools.py, and the
    stdio test server, whose echo and slow tools share the capabilities of test.backup and
    test.sleep (so those are their fallbacks)."""
    entry = stdio_server(
        "tools",
        capabilities={"echo": ["test_echo"], "slow": ["test_sleep"]},
        env={
            "MCP_TEST_PID_FILE": str(tmp_path / "pid"),
            "MCP_TEST_CALL_LOG": str(tmp_path / "calls"),
        },
    )
    return Settings(
        kafka_bootstrap=broker.bootstrap,
        namespace=f"m{uuid.uuid4().hex[:10]}.",
        partitions=3,
        kafka_session_timeout_ms=6_000,
        kafka_rebalance_timeout_ms=6_000,
        kafka_fetch_max_wait_ms=20,
        encryption_keys=generate_key(),
        log_format="console",
        tool_modules="tests.processors.journey_tools",
        require_acceptance=False,
        mcp_servers=servers(entry),
        mcp_probe_interval_s=1.0,
    )


@pytest.fixture
def workers(settings: Settings, tmp_path: Path) -> Iterator[None]:
    """The SuperAgent's and the JourneyAgent's workers, on the test's own topics."""
    asyncio.run(bootstrap_topics(settings))
    started = [
        WorkerProcess(settings, tmp_path / f"{name}.out", name=name)
        for name in ("super-agent", "journey-agent")
    ]
    yield
    for process in started:
        process.stop(signal.SIGKILL)


def task(description: str, tool: str, tool_input: dict[str, Any]) -> Event:
    """A task whose inline playbook is one stage calling ``tool``."""
    steps = [{"id": "only", "tool": tool, "role": "coder", "input": tool_input}]
    return Event.new(
        TaskSubmitted(
            description=description,
            constraints={"playbook": {"name": "mcp", "steps": steps}},
            grants=["playbooks:inline"],
        ),
        tenant_id="acme",
        actor=Actor(kind="user", id="ada"),
        task_id=uuid.uuid4(),
    )


async def finished(log: Log, task_id: uuid.UUID | None) -> list[Event]:
    """The task's events once it completed or failed."""
    assert task_id is not None
    deadline = time.monotonic() + DONE_WAIT_S
    while True:
        events = await log.events(task_id)
        if any(e.type in ("task.completed", "task.failed") for e in events):
            return events
        assert time.monotonic() < deadline, f"unfinished: {[e.type for e in events]}"
        await asyncio.sleep(0.3)


def of(events: list[Event], kind: str) -> list[Any]:
    return [e.payload for e in events if e.type == kind]


async def test_workers_run_mcp_tools_and_fail_over_when_the_server_dies_mid_call(
    settings: Settings, workers: None, tmp_path: Path
) -> None:
    """A stage calling mcp.tools.echo completes with the server's answer in tool.returned;
    the server's process killed while mcp.tools.slow runs fails that attempt as
    MCP_UNAVAILABLE and the stage completes with test.sleep; the next call starts the
    server again."""
    codec = Codec(FernetCipher(settings.fernet_keys()))
    producer = EventProducer(settings, codec)
    log = Log(settings, codec)
    try:
        echo = task("echo", "mcp.tools.echo", {"text": "hello"})
        await producer.publish(echo)
        events = await finished(log, echo.task_id)
        assert of(events, "task.failed") == []
        called, returned = of(events, "tool.called")[0], of(events, "tool.returned")[0]
        assert (called.tool, called.version) == ("mcp.tools.echo", "1.2.0")
        assert (returned.tool, returned.outcome) == ("mcp.tools.echo", "ok")
        assert returned.result["text"] == "hello"
        assert returned.result["structuredContent"] == {"result": "hello"}

        slow = task("slow", "mcp.tools.slow", {"seconds": 2})
        await producer.publish(slow)
        await asyncio.to_thread(kill_pid_in, tmp_path / "pid")
        events = await finished(log, slow.task_id)
        error = of(events, "step.failed")[0].error
        assert (error.code, error.transient) == ("MCP_UNAVAILABLE", True)
        planned = of(events, "recovery.planned")[0]
        assert (planned.action, planned.tool) == ("alternate_tool", "test.sleep")
        assert [p.tool for p in of(events, "step.started")] == ["mcp.tools.slow", "test.sleep"]
        assert of(events, "step.completed")[0].output == {"slept": 2}
        assert of(events, "task.completed")

        again = task("again", "mcp.tools.echo", {"text": "back"})
        await producer.publish(again)
        events = await finished(log, again.task_id)
        assert of(events, "step.completed")[0].output["text"] == "back"
        assert calls(tmp_path / "calls") == ["echo", "slow", "echo"]
    finally:
        await producer.stop()
