"""MCP servers' tools as WrenchAI tools, against the test server over stdio and over
streamable HTTP: listing, names and schemas, calls and their errors, a server that dies
mid-call and comes back, health, and the settings that configure them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest

from processors.tools import ToolRegistry
from processors.tools.builtin import Tool, ToolError
from processors.tools.mcp import (
    MCP_RESULT,
    McpServers,
    McpToolset,
    McpUnavailable,
    local_name,
    semantic_version,
    tool_spec,
)
from tests.processors.tools.mcp.support import (
    TOKEN,
    HttpServer,
    calls,
    http_server,
    kill_pid_in,
    servers,
    stdio_server,
)
from wrenchai.settings import McpServerConfig, Settings

Toolsets = Callable[..., McpToolset]


@pytest.fixture
async def toolsets() -> AsyncIterator[Toolsets]:
    """Makes toolsets over a fresh registry and toolbox; closes them after the test."""
    made: list[McpToolset] = []

    def make(*entries: dict[str, Any], **settings: Any) -> McpToolset:
        configured = Settings(mcp_servers=servers(*entries), **settings)
        toolset = McpToolset.from_settings(configured, ToolRegistry(), {})
        assert toolset is not None
        made.append(toolset)
        return toolset

    yield make
    for toolset in made:
        await toolset.aclose()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "mcp-token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture
def http(tmp_path: Path) -> Iterator[HttpServer]:
    server = HttpServer(
        tmp_path / "http-server.out", env={"MCP_TEST_CALL_LOG": str(tmp_path / "calls")}
    )
    yield server
    server.kill()


def tools_of(toolset: McpToolset) -> dict[str, Tool]:
    assert toolset.tools is not None
    return toolset.tools


async def test_a_stdio_servers_tools_are_registered_as_mcp_server_tool_with_its_schemas(
    toolsets: Toolsets,
) -> None:
    """Each listed tool is mcp.<server>.<tool> in the registry and the toolbox: the server's
    input schema as it is, an output schema for MCP results, the server's version, its own
    name and mcp, mcp:<server> as capabilities, and conservative flags."""
    toolset = toolsets(stdio_server("files"))
    await toolset.ready()

    assert toolset.listed == {
        "files": ["mcp.files.add", "mcp.files.echo", "mcp.files.slow", "mcp.files.fail"]
    }
    add = toolset.registry.get("mcp.files.add")
    assert add.version == "1.2.0"
    assert add.input_schema["required"] == ["a", "b"]
    assert add.input_schema["properties"]["a"]["type"] == "integer"
    assert add.output_schema["properties"] == MCP_RESULT["properties"]
    assert "structuredContent" in add.output_schema["required"]
    assert add.capabilities == ["mcp.files.add", "mcp", "mcp:files"]
    assert (add.side_effects, add.idempotent, add.offline) == (True, False, True)
    assert add.health_probe == "mcp:files.ping"
    assert set(tools_of(toolset)) == set(toolset.listed["files"])


async def test_an_http_servers_tools_are_registered_its_token_read_from_a_secret_file(
    toolsets: Toolsets, http: HttpServer, token_file: Path
) -> None:
    """Over streamable HTTP, with the Authorization header's value from a file: the same
    tools; a server name with a hyphen gives an underscore in the tools' names."""
    http.start()
    toolset = toolsets(http_server("web-tools", http.port, token_file))
    await toolset.ready()

    assert toolset.problems == {}
    assert toolset.listed["web-tools"][0] == "mcp.web_tools.add"
    echo = toolset.registry.get("mcp.web_tools.echo")
    assert echo.input_schema["properties"]["text"]["type"] == "string"
    assert await tools_of(toolset)["mcp.web_tools.echo"].call({"text": "over http"}) == {
        "content": [{"type": "text", "text": "over http"}],
        "text": "over http",
        "structuredContent": {"result": "over http"},
    }


async def test_a_wrong_token_leaves_the_server_unlisted_with_the_reason(
    toolsets: Toolsets, http: HttpServer, tmp_path: Path
) -> None:
    """The server refuses the handshake: no tool is registered and the reason is kept."""
    http.start()
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token")
    toolset = toolsets(http_server("web", http.port, wrong))
    await toolset.ready()

    assert toolset.listed == {}
    assert "cannot connect to MCP server web" in toolset.problems["web"]
    assert "mcp.web.echo" not in toolset.registry


async def test_a_call_returns_the_content_its_text_and_the_structured_content(
    toolsets: Toolsets,
) -> None:
    """add answers its sum as text and as structured content."""
    toolset = toolsets(stdio_server())
    await toolset.ready()

    result = await tools_of(toolset)["mcp.tools.add"].call({"a": 2, "b": 40})

    assert result == {
        "content": [{"type": "text", "text": "42"}],
        "text": "42",
        "structuredContent": {"result": 42},
    }


async def test_invalid_input_is_invalid_input_before_any_call_reaches_the_server(
    toolsets: Toolsets, tmp_path: Path
) -> None:
    """Input that breaks the server's schema is refused here, naming the field; the server
    never sees the call."""
    log = tmp_path / "calls"
    toolset = toolsets(stdio_server(env={"MCP_TEST_CALL_LOG": str(log)}))
    await toolset.ready()
    add = tools_of(toolset)["mcp.tools.add"]

    with pytest.raises(ToolError) as refused:
        await add.call({"a": "two", "b": 40})

    assert refused.value.code == "INVALID_INPUT" and not refused.value.transient
    assert refused.value.details["path"] == "$.a"
    assert calls(log) == []
    await add.call({"a": 2, "b": 40})
    assert calls(log) == ["add"]


async def test_an_is_error_answer_is_a_tool_failed_that_is_not_transient(
    toolsets: Toolsets,
) -> None:
    """fail answers with isError: TOOL_FAILED with the server's text, not worth a retry."""
    toolset = toolsets(stdio_server())
    await toolset.ready()

    with pytest.raises(ToolError) as failed:
        await tools_of(toolset)["mcp.tools.fail"].call({"text": "the disk is full"})

    assert failed.value.code == "TOOL_FAILED" and not failed.value.transient
    assert "the disk is full" in failed.value.message
    assert failed.value.details == {"tool": "mcp.tools.fail", "server": "tools"}


async def test_a_stdio_server_killed_mid_call_fails_transiently_and_the_next_call_starts_it(
    toolsets: Toolsets, tmp_path: Path
) -> None:
    """SIGKILL the server's process while slow runs: MCP_UNAVAILABLE, transient, at once
    (not after the 30 s the call would take); the next call starts the command again."""
    pid_file = tmp_path / "pid"
    toolset = toolsets(stdio_server(env={"MCP_TEST_PID_FILE": str(pid_file)}))
    await toolset.ready()
    tools = tools_of(toolset)

    call = asyncio.create_task(tools["mcp.tools.slow"].call({"seconds": 30}))
    killed = await asyncio.to_thread(kill_pid_in, pid_file)
    with pytest.raises(ToolError) as lost:
        await asyncio.wait_for(call, 20)

    assert isinstance(lost.value, McpUnavailable)
    assert lost.value.code == "MCP_UNAVAILABLE" and lost.value.transient
    assert (await tools["mcp.tools.echo"].call({"text": "again"}))["text"] == "again"
    call = asyncio.create_task(tools["mcp.tools.slow"].call({"seconds": 0}))
    assert (await call)["text"] == "slept 0.0 s"
    assert int(pid_file.read_text()) != killed


async def test_an_http_server_killed_mid_call_fails_transiently_and_works_once_back(
    toolsets: Toolsets, http: HttpServer, token_file: Path
) -> None:
    """Kill the HTTP server while slow runs: MCP_UNAVAILABLE, transient; while it is down
    calls fail the same way; started again (a new process, which knows none of the old
    sessions), calls work again."""
    http.start()
    toolset = toolsets(http_server("web", http.port, token_file))
    await toolset.ready()
    tools = tools_of(toolset)

    call = asyncio.create_task(tools["mcp.web.slow"].call({"seconds": 30}))
    await asyncio.sleep(0.5)
    http.kill()
    with pytest.raises(ToolError) as lost:
        await asyncio.wait_for(call, 20)
    assert lost.value.code == "MCP_UNAVAILABLE" and lost.value.transient

    with pytest.raises(ToolError) as down:
        await tools["mcp.web.echo"].call({"text": "anyone?"})
    assert down.value.code == "MCP_UNAVAILABLE" and "cannot connect" in down.value.message

    http.start()
    assert (await tools["mcp.web.echo"].call({"text": "back"}))["text"] == "back"
    # Restarted again between two calls, unnoticed: the forgotten session is opened anew.
    http.kill()
    http.start()
    assert (await tools["mcp.web.echo"].call({"text": "again"}))["text"] == "again"


async def test_a_server_down_at_start_is_left_out_and_listed_once_it_answers(
    toolsets: Toolsets, http: HttpServer, token_file: Path
) -> None:
    """The HTTP server is not up: the other server's tools are listed, its own are not, and
    the toolset keeps trying every interval until it answers."""
    toolset = toolsets(
        stdio_server(), http_server("web", http.port, token_file), mcp_probe_interval_s=0.2
    )
    keeping = asyncio.create_task(toolset.keep_up())
    await toolset.ready()
    assert "tools" in toolset.listed and "web" not in toolset.listed
    assert "cannot connect to MCP server web" in toolset.problems["web"]

    http.start()
    for _ in range(200):
        if "web" in toolset.listed:
            break
        await asyncio.sleep(0.05)
    assert "mcp.web.echo" in toolset.registry and "web" not in toolset.problems
    keeping.cancel()
    await asyncio.gather(keeping, return_exceptions=True)


async def test_a_plan_naming_a_tool_of_an_unlisted_server_gets_a_stand_in_that_fails_transiently(
    toolsets: Toolsets, http: HttpServer, token_file: Path
) -> None:
    """The JourneyAgent's view of a tool the SuperAgent listed and it cannot: a stand-in
    descriptor (any input), and a call that fails as MCP_UNAVAILABLE without reaching
    anything; once the server answers, the real tool."""
    toolset = toolsets(http_server("web", http.port, token_file))
    await toolset.ready()

    spec = await toolset.stand_in("mcp.web.echo", "1.2.0")
    assert spec is not None and spec.version == "1.2.0" and spec.input_schema == {"type": "object"}
    with pytest.raises(ToolError) as down:
        await tools_of(toolset)["mcp.web.echo"].call({"text": "x"})
    assert down.value.code == "MCP_UNAVAILABLE" and down.value.transient
    assert await toolset.stand_in("web.search") is None

    http.start()
    spec = await toolset.stand_in("mcp.web.echo", "1.2.0")
    assert spec is not None and spec.input_schema["required"] == ["text"]
    assert (await tools_of(toolset)["mcp.web.echo"].call({"text": "x"}))["text"] == "x"


async def test_health_is_a_ping_and_says_why_when_the_server_cannot_answer(
    tmp_path: Path,
) -> None:
    """A server that answers: ok, naming it and its version; a command that cannot start:
    not ok, with the reason."""
    pool = McpServers(
        [
            McpServerConfig.model_validate(stdio_server()),
            McpServerConfig(name="nothing", command=str(tmp_path / "no-such-command")),
        ],
        connect_timeout_s=10,
    )
    try:
        up = await pool.connections["tools"].health()
        down = await pool.connections["nothing"].health()
    finally:
        await pool.aclose()

    assert up.ok and "wrench-test 1.2.0" in up.detail and "ping" in up.detail
    assert not down.ok and "no-such-command" in down.detail


def _tool(name: str, **fields: Any) -> types.Tool:
    return types.Tool.model_validate({"name": name, "input_schema": {"type": "object"}, **fields})


def test_names_versions_capabilities_and_flags_of_a_descriptor() -> None:
    """Tool names become dotted lower-case words; versions become semantic; configured
    capabilities come first; annotations count only when the configuration trusts them."""
    config = McpServerConfig(
        name="git-hub",
        url="http://127.0.0.1:1/mcp",
        capabilities={"searchCode": ["search"]},
        usd_per_call=0.01,
        seconds=2,
    )
    assert local_name(config, "searchCode") == "mcp.git_hub.search_code"
    assert local_name(config, "get-file.contents") == "mcp.git_hub.get_file_contents"
    assert local_name(config, "2fa") == "mcp.git_hub.t_2fa"
    assert local_name(config, "---") is None
    assert [semantic_version(v) for v in ("1.2", "v3", "2.0.1-beta", "", None, "01.002.3")] == [
        "1.2.0",
        "3.0.0",
        "2.0.1",
        "0.0.0",
        "0.0.0",
        "1.2.3",
    ]
    read_only = types.ToolAnnotations(read_only_hint=True)
    spec = tool_spec(config, "1.0.0", _tool("searchCode", annotations=read_only))
    assert spec.capabilities == ["search", "mcp.git_hub.search_code", "mcp", "mcp:git-hub"]
    assert (spec.side_effects, spec.idempotent, spec.offline) == (True, False, False)
    assert (spec.cost.usd_per_call, spec.cost.seconds) == (0.01, 2)
    trusted = config.model_copy(update={"trust_annotations": True})
    spec = tool_spec(trusted, "1.0.0", _tool("searchCode", annotations=read_only))
    assert (spec.side_effects, spec.idempotent) == (False, True)
    with pytest.raises(ValueError):
        bad = {"type": "object", "properties": {"a": {"type": "no such type"}}}
        tool_spec(config, "1.0.0", _tool("x", input_schema=bad))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('[{"name": "Files", "command": "x"}]', "server 1 (Files), name"),
        ('[{"name": "files"}]', "either command"),
        ('[{"name": "files", "command": "x", "url": "http://h/mcp"}]', "either command"),
        ('[{"name": "files", "url": "ftp://h/mcp"}]', "http:// or https://"),
        ('[{"name": "files", "url": "http://h/mcp", "env": {"A": "b"}}]', "takes headers"),
        ('[{"name": "a-b", "command": "x"}, {"name": "a_b", "command": "y"}]', "server 2 (a_b)"),
        ('[{"name": "files", "command": "x", "headers": {"A": "b"}}]', "takes env"),
        ('[{"name": "files", "command": "x", "timeout": 3}]', "timeout"),
        ('{"name": "files"}', "must be a list"),
        ("[{", "neither JSON nor YAML"),
    ],
)
def test_a_bad_server_list_is_refused_at_start_naming_the_server_and_the_field(
    value: str, message: str
) -> None:
    """WRENCH_MCP_SERVERS is checked when the settings load, and the error says where."""
    with pytest.raises(ValueError, match="WRENCH_MCP_SERVERS") as refused:
        Settings(mcp_servers=value)
    assert message in str(refused.value)


def test_an_unreadable_secret_file_is_refused_at_start(tmp_path: Path) -> None:
    """A header whose file is missing stops the settings from loading, naming the file."""
    entry = http_server("web", 1, tmp_path / "missing")
    with pytest.raises(ValueError, match=r"missing.*cannot be read"):
        Settings(mcp_servers=servers(entry))


def test_the_list_may_come_from_a_yaml_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, token_file: Path
) -> None:
    """WRENCH_MCP_SERVERS_FILE names a YAML file; secret values are read when asked for."""
    listing = tmp_path / "mcp.yaml"
    listing.write_text(
        "- name: web\n"
        "  url: https://mcp.example/mcp\n"
        "  headers:\n"
        f"    Authorization: {{file: {token_file}, prefix: 'Bearer '}}\n"
        "    X-Team: core\n"
        "- name: files\n"
        "  command: mcp-files\n"
        "  args: [/data]\n"
    )
    monkeypatch.delenv("WRENCH_MCP_SERVERS", raising=False)
    monkeypatch.setenv("WRENCH_MCP_SERVERS_FILE", str(listing))

    web, files = Settings().mcp_server_list()

    assert (web.transport, files.transport) == ("http", "stdio")
    assert web.resolved_headers() == {"Authorization": f"Bearer {TOKEN}", "X-Team": "core"}
    assert files.args == ["/data"] and files.tool_prefix == "mcp.files."
