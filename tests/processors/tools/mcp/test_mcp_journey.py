"""Stages that call MCP servers' tools, planned by the SuperAgent and run by the JourneyAgent
on the in-memory driver (tests/processors/driver.py) against the test MCP server: every call
is a tool.called and tool.returned pair, errors are classified as any tool's are, a server
that dies mid-call makes the stage fail over to its fallback tool, and the circuit breaker
opens after repeated failures and closes once the server is back."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest

from events import (
    Event,
    EventPayload,
    PlanCreated,
    RecoveryPlanned,
    StepCompleted,
    StepFailed,
    StepStarted,
    TaskCompleted,
    TaskFailed,
    ToolCalled,
    ToolReturned,
)
from processors.journey.agent import JourneyAgent
from processors.reasoning import RuleReasoner
from processors.super.agent import SuperAgent
from processors.tools import ToolCost, ToolSpec, builtin_registry
from processors.tools.builtin import BuiltinTool, build_tools
from processors.tools.mcp import McpServers, McpToolset
from tests.processors.driver import Clock, Driver, executor, planner
from tests.processors.tools.mcp.support import (
    TOKEN,
    HttpServer,
    calls,
    http_server,
    kill_pid_in,
    stdio_server,
)
from wrenchai.settings import McpServerConfig, Settings

INLINE = ["playbooks:inline"]
P = TypeVar("P", bound=EventPayload)


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


class Echo(BuiltinTool):
    """The fallback of the servers' echo tools: it shares their configured capabilities."""

    spec: ClassVar[ToolSpec] = ToolSpec(
        name="test.echo",
        version="1.0.0",
        capabilities=["test_echo", "web_echo"],
        input_schema=_object({"text": {"type": "string"}}),
        output_schema=_object({"echo": {"type": "string"}}),
        cost=ToolCost(seconds=0.1),
    )

    async def _run(self, tool_input: dict[str, Any]) -> dict[str, Any]:
        return {"echo": tool_input["text"]}

    async def _probe(self) -> tuple[bool, str]:
        return True, "a test tool"


class Nap(BuiltinTool):
    """The fallback of the server's slow tool; it does not really sleep."""

    spec: ClassVar[ToolSpec] = ToolSpec(
        name="test.nap",
        version="1.0.0",
        capabilities=["naps"],
        input_schema=_object({"seconds": {"type": "number"}}),
        output_schema=_object({"slept": {"type": "number"}}),
        cost=ToolCost(seconds=0.1),
    )

    async def _run(self, tool_input: dict[str, Any]) -> dict[str, Any]:
        return {"slept": 0}

    async def _probe(self) -> tuple[bool, str]:
        return True, "a test tool"


System = tuple[Driver, JourneyAgent]


@pytest.fixture
async def systems() -> AsyncIterator[Callable[..., Any]]:
    """Makes the offline SuperAgent and a JourneyAgent on one driver, with the built-in tools,
    test.echo, test.nap and the tools of the given MCP servers (listed first); closes the
    servers' connections after the test."""
    toolsets: list[McpToolset] = []

    async def make(*entries: dict[str, Any]) -> System:
        clock = Clock()
        registry = builtin_registry()
        fallbacks = [Echo(), Nap()]
        for tool in fallbacks:
            registry.register(tool.spec)
        tools = {**build_tools(Settings()), **{tool.spec.name: tool for tool in fallbacks}}
        agent = JourneyAgent(RuleReasoner(), registry, tools, clock=clock, rng=random.Random(7))
        configs = [McpServerConfig.model_validate(entry) for entry in entries]
        agent.mcp = McpToolset(McpServers(configs, connect_timeout_s=10), registry, agent.tools)
        toolsets.append(agent.mcp)
        await agent.mcp.ready()
        planning = planner(SuperAgent.offline(registry, clock=clock))
        return Driver(planning, executor(agent), clock=clock), agent

    yield make
    for toolset in toolsets:
        await toolset.aclose()


@pytest.fixture
def http(tmp_path: Path) -> Iterator[HttpServer]:
    server = HttpServer(tmp_path / "http-server.out")
    yield server
    server.kill()


def step(sid: str, tool: str, tool_input: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"id": sid, "tool": tool, "role": "coder", "input": tool_input, **fields}


async def run_task(driver: Driver, *steps: dict[str, Any]) -> list[Event]:
    """Submit a task with an inline playbook of ``steps``, run until nothing is due, and
    return its events."""
    submitted = driver.submit(
        "call the MCP tools",
        {"playbook": {"name": "mcp", "steps": list(steps)}},
        grants=INLINE,
    )
    await driver.settle()
    return [event for event in driver.log if event.task_id == submitted.task_id]


def only(events: list[Event], kind: type[P]) -> list[P]:
    return [event.payload for event in events if isinstance(event.payload, kind)]


def tools_entry(tmp_path: Path, **options: Any) -> dict[str, Any]:
    """The stdio test server, its slow and echo tools given the fallbacks' capabilities."""
    return stdio_server(
        "tools",
        capabilities={"echo": ["test_echo"], "slow": ["naps"]},
        env={
            "MCP_TEST_PID_FILE": str(tmp_path / "pid"),
            "MCP_TEST_CALL_LOG": str(tmp_path / "calls"),
        },
        **options,
    )


async def test_a_stage_calling_an_mcp_tool_records_the_call_and_its_result(
    systems: Callable[..., Any], tmp_path: Path
) -> None:
    """The plan names mcp.tools.echo with test.echo as its alternate (shared capability) and
    no retry (the tool may have side effects); the attempt is step.started, tool.called,
    tool.returned with the server's answer, step.completed; the task completes with it."""
    driver, _ = await systems(tools_entry(tmp_path))

    events = await run_task(driver, step("greet", "mcp.tools.echo", {"text": "hello"}))

    stage = only(events, PlanCreated)[0].stages[0]
    assert stage.tools == ["mcp.tools.echo", "test.echo"] and stage.tool_version == "1.2.0"
    assert [f.kind for f in stage.fallbacks] == ["alternate_tool", "escalate"]
    kinds = [e.type for e in events if getattr(e.payload, "stage_id", None) == "greet"]
    assert kinds[:4] == ["step.started", "tool.called", "tool.returned", "step.completed"]
    called, returned = only(events, ToolCalled)[0], only(events, ToolReturned)[0]
    assert (called.tool, called.version) == ("mcp.tools.echo", "1.2.0")
    assert (returned.tool, returned.outcome, returned.input_hash) == (
        "mcp.tools.echo",
        "ok",
        called.input_hash,
    )
    answer = {
        "content": [{"type": "text", "text": "hello"}],
        "text": "hello",
        "structuredContent": {"result": "hello"},
    }
    assert returned.result == answer
    assert only(events, StepCompleted)[0].output == answer
    assert only(events, TaskCompleted)[0].output["final"] == answer
    assert calls(tmp_path / "calls") == ["echo"]


async def test_input_that_breaks_the_servers_schema_fails_the_stage_before_any_call(
    systems: Callable[..., Any], tmp_path: Path
) -> None:
    """add's a comes from the first stage's text ("hello"): INVALID_INPUT, fatal, at
    $.a; add never reaches the server and the task fails with the stage."""
    driver, _ = await systems(tools_entry(tmp_path))

    events = await run_task(
        driver,
        step("greet", "mcp.tools.echo", {"text": "hello"}),
        step(
            "sum",
            "mcp.tools.add",
            {"a": "{{steps.greet.output.text}}", "b": 1},
            depends_on=["greet"],
        ),
    )

    failed = only(events, StepFailed)
    assert [(f.stage_id, f.error.code, f.error.category) for f in failed] == [
        ("sum", "INVALID_INPUT", "fatal")
    ]
    assert failed[0].error.details["path"] == "$.a"
    assert only(events, TaskFailed)[0].reason == "STAGE_FAILED"
    assert calls(tmp_path / "calls") == ["echo"]


async def test_an_is_error_answer_fails_the_stage_as_a_tool_error_without_a_retry(
    systems: Callable[..., Any], tmp_path: Path
) -> None:
    """fail answers isError: TOOL_FAILED, not transient, carrying the server's text; with no
    retry and no alternate the task fails after that one call."""
    driver, _ = await systems(tools_entry(tmp_path))

    events = await run_task(driver, step("oops", "mcp.tools.fail", {"text": "quota exceeded"}))

    error = only(events, StepFailed)[0].error
    assert (error.code, error.category, error.transient) == ("TOOL_FAILED", "tool_error", False)
    assert "quota exceeded" in error.message
    returned = only(events, ToolReturned)[0]
    assert returned.outcome == "error" and returned.error is not None
    assert returned.error.code == "TOOL_FAILED"
    assert [p.action for p in only(events, RecoveryPlanned)] == ["escalate"]
    assert calls(tmp_path / "calls") == ["fail"]


async def test_a_server_killed_mid_call_fails_over_to_the_fallback_and_the_task_completes(
    systems: Callable[..., Any], tmp_path: Path
) -> None:
    """SIGKILL the stdio server while mcp.tools.slow runs: MCP_UNAVAILABLE, transient; the
    recovery calls the alternate test.nap, which completes the stage. The next task's call
    starts the server again."""
    driver, _ = await systems(tools_entry(tmp_path))

    killer = asyncio.create_task(asyncio.to_thread(kill_pid_in, tmp_path / "pid"))
    events = await run_task(driver, step("wait", "mcp.tools.slow", {"seconds": 30}))
    await killer

    error = only(events, StepFailed)[0].error
    assert (error.code, error.category, error.transient) == ("MCP_UNAVAILABLE", "transient", True)
    planned = only(events, RecoveryPlanned)
    assert [(p.action, p.tool) for p in planned] == [("alternate_tool", "test.nap")]
    assert [(s.attempt, s.tool) for s in only(events, StepStarted)] == [
        (1, "mcp.tools.slow"),
        (2, "test.nap"),
    ]
    assert only(events, StepCompleted)[0].output == {"slept": 0}
    assert only(events, TaskCompleted)

    events = await run_task(driver, step("greet", "mcp.tools.echo", {"text": "back"}))
    assert only(events, StepCompleted)[0].output["text"] == "back"


async def test_the_circuit_opens_after_repeated_failures_and_closes_once_the_server_is_back(
    systems: Callable[..., Any], http: HttpServer, tmp_path: Path
) -> None:
    """The HTTP server goes down after its tools were listed: five tasks each fail over from
    mcp.web.echo to test.echo; then its circuit is open and the next task calls test.echo
    first, never the server. Back up and past the cool-down, a call closes it again."""
    token = tmp_path / "token"
    token.write_text(TOKEN)
    http.start()
    entry = http_server("web", http.port, token, capabilities={"echo": ["web_echo"]})
    driver, agent = await systems(entry)
    http.kill()

    for n in range(5):
        events = await run_task(driver, step("greet", "mcp.web.echo", {"text": f"try {n}"}))
        assert only(events, StepFailed)[0].error.code == "MCP_UNAVAILABLE"
        assert only(events, StepCompleted)[0].output == {"echo": f"try {n}"}
    assert agent.breaker.is_open("mcp.web.echo", driver.clock())

    events = await run_task(driver, step("greet", "mcp.web.echo", {"text": "open"}))
    assert [(s.attempt, s.tool) for s in only(events, StepStarted)] == [(1, "test.echo")]
    assert [c.tool for c in only(events, ToolCalled)] == ["test.echo"]

    http.start()
    driver.clock.advance(31)
    events = await run_task(driver, step("greet", "mcp.web.echo", {"text": "closed"}))
    assert [(s.attempt, s.tool) for s in only(events, StepStarted)] == [(1, "mcp.web.echo")]
    assert only(events, StepCompleted)[0].output["text"] == "closed"
    assert not agent.breaker.is_open("mcp.web.echo", driver.clock())
