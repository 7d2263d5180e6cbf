"""MCP over streamable HTTP at the API's ``/mcp``, with the SDK's own client: a task submitted
through MCP runs to its end on the real agents, watch_task's progress is the task's history
in log order, every read answers what the API answers, and credentials, scopes and tenants
hold as they do for the API."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from mcp.shared.exceptions import MCPError
from mcp_types import TextContent, TextResourceContents
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from processors.shared.playbook import list_playbooks
from tests.mcp.conftest import Keys, api_get, mcp_over_http, nap, offset, refused, structured
from tests.wrenchai.test_cli_watch import Stack

TOOLS = {
    "submit_task",
    "get_task",
    "list_tasks",
    "task_history",
    "task_state_as_of",
    "cancel_task",
    "watch_task",
}
WORD = f"zebra{uuid.uuid4().hex[:8]}"
"""A word only this module's finished task has in its description (for list_tasks' q)."""


@dataclass
class Run:
    """The task the module submitted through MCP and watched to its end."""

    task_id: str
    submitted: dict[str, Any]
    watched: dict[str, Any]
    progress: list[tuple[float, str | None]]


@pytest.fixture(scope="module")
async def run(mcp_stack: Stack, keys: Keys) -> Run:
    """A nap task submitted through MCP and watched until it ended, its progress kept."""
    seen: list[tuple[float, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, message))

    async with mcp_over_http(mcp_stack.url, {"X-API-Key": keys.admin}) as client:
        submitted = structured(
            await client.call_tool(
                "submit_task",
                {"description": f"Take a nap, {WORD}", "constraints": {"playbook": nap(0.2)}},
            )
        )
        watched = structured(
            await client.call_tool(
                "watch_task",
                {"task_id": submitted["task_id"], "timeout_s": 90},
                progress_callback=on_progress,
            )
        )
    return Run(submitted["task_id"], submitted, watched, seen)


async def test_the_server_lists_its_tools_task_resources_and_a_prompt_per_playbook(
    mcp_stack: Stack, keys: Keys
) -> None:
    """tools/list has the seven tools with their input schemas, the resource templates are
    task://{task_id} and task://{task_id}/events, and each shipped playbook is a prompt taking
    the task's description and the playbook's inputs; a rendered prompt asks for submit_task
    with the playbook and the inputs typed as the playbook's defaults."""
    async with mcp_over_http(mcp_stack.url, {"X-API-Key": keys.admin}) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        templates = (await client.list_resource_templates()).resource_templates
        prompts = {prompt.name: prompt for prompt in (await client.list_prompts()).prompts}
        rendered = await client.get_prompt(
            "research_report", {"description": "Explain retries", "limit": "3"}
        )

    assert set(tools) == TOOLS
    assert tools["get_task"].input_schema["required"] == ["task_id"]
    assert tools["watch_task"].input_schema["properties"]["timeout_s"]["maximum"] == 3600
    assert {t.uri_template for t in templates} == {"task://{task_id}", "task://{task_id}/events"}
    assert set(prompts) == set(list_playbooks())
    arguments = {a.name: a.required for a in prompts["research_report"].arguments or []}
    assert arguments == {"description": True, "limit": False, "max_sentences": False}
    (message,) = rendered.messages
    assert isinstance(message.content, TextContent)
    assert '"playbook": "research_report"' in message.content.text
    assert '"limit": 3' in message.content.text and "watch_task" in message.content.text


async def test_a_task_submitted_through_mcp_runs_to_completion(
    run: Run, mcp_stack: Stack, keys: Keys
) -> None:
    """submit_task answers the API's acceptance (task id, status, position); watch_task
    answers once the task has completed, with the final task exactly as GET /tasks/{task_id}
    shows it."""
    assert run.submitted["status"] == "submitted" and ":" in run.submitted["position"]
    assert run.watched["ended"] is True and run.watched["status"] == "completed"
    task = run.watched["task"]
    assert task["status"] == "completed" and task["output"]
    assert task == await api_get(mcp_stack, f"/tasks/{run.task_id}", keys.admin)


async def test_progress_notifications_are_the_tasks_history_in_log_order(
    run: Run, mcp_stack: Stack, keys: Keys
) -> None:
    """watch_task sends one progress notification per event of the task, counting 1, 2, 3...,
    each message 'POSITION TYPE': the positions and types are the task's history as the API
    serves it, in the same order, from task.submitted to task.completed."""
    history = await api_get(
        mcp_stack,
        f"/tasks/{run.task_id}/events",
        keys.admin,
        wait_for=run.watched["last_position"],
    )
    ended = offset(run.watched["last_position"])
    events = [e for e in history["events"] if offset(e["position"]) <= ended]
    expected = [f"{e['position']} {e['type']}" for e in events]
    assert [value for value, _ in run.progress] == list(range(1, len(expected) + 1))
    assert [message for _, message in run.progress] == expected
    assert expected[0].endswith("task.submitted") and expected[-1].endswith("task.completed")
    assert run.watched["events"] == len(expected)
    assert run.watched["last_position"] == events[-1]["position"]


async def test_reads_answer_what_the_api_answers(run: Run, mcp_stack: Stack, keys: Keys) -> None:
    """get_task, list_tasks, task_history and task_state_as_of answer the API's own answers to
    the same reads, and both resources read back the task and its history."""
    admin, task = keys.admin, f"/tasks/{run.task_id}"
    history = await api_get(mcp_stack, f"{task}/events", admin)
    middle = history["events"][len(history["events"]) // 2]["position"]
    async with mcp_over_http(mcp_stack.url, {"X-API-Key": admin}) as client:
        got = structured(await client.call_tool("get_task", {"task_id": run.task_id}))
        page = structured(await client.call_tool("list_tasks", {"q": WORD, "limit": 5}))
        events = structured(await client.call_tool("task_history", {"task_id": run.task_id}))
        state = structured(
            await client.call_tool("task_state_as_of", {"task_id": run.task_id, "as_of": middle})
        )
        read_task = (await client.read_resource(f"task://{run.task_id}")).contents
        read_events = (await client.read_resource(f"task://{run.task_id}/events")).contents

    assert got == await api_get(mcp_stack, task, admin)
    assert page == await api_get(mcp_stack, "/tasks", admin, q=WORD, limit=5)
    assert [t["task_id"] for t in page["tasks"]] == [run.task_id]
    assert events == history
    assert state == await api_get(mcp_stack, f"/audit{task}/state", admin, as_of=middle)
    assert state["as_of"]["position"] == middle
    for contents, expected in ((read_task, got), (read_events, history)):
        (content,) = contents
        assert isinstance(content, TextResourceContents)
        assert content.mime_type == "application/json"
        assert json.loads(content.text) == expected


async def test_cancel_task_cancels_a_running_task_and_refuses_an_ended_one(
    run: Run, mcp_stack: Stack, keys: Keys
) -> None:
    """cancel_task answers the cancellation's position, and a read right after it shows the
    task cancelled without being told to wait (the server passes the position itself); the
    task that already completed is the API's 409 TASK_TERMINAL."""
    async with mcp_over_http(mcp_stack.url, {"X-API-Key": keys.admin}) as client:
        submitted = structured(
            await client.call_tool(
                "submit_task", {"description": "A long nap", "constraints": {"playbook": nap(60)}}
            )
        )
        task_id = submitted["task_id"]
        cancelled = structured(
            await client.call_tool("cancel_task", {"task_id": task_id, "reason": "enough"})
        )
        task = structured(await client.call_tool("get_task", {"task_id": task_id}))
        ended = refused(await client.call_tool("cancel_task", {"task_id": run.task_id}))

    assert cancelled["task_id"] == task_id and cancelled["status"] == "cancelling"
    assert task["status"] == "cancelled"
    answered = await api_get(
        mcp_stack, f"/tasks/{task_id}", keys.admin, wait_for=cancelled["position"]
    )
    assert answered["status"] == "cancelled"
    assert ended["code"] == "TASK_TERMINAL" and ended["details"]["status"] == "completed"


async def test_api_errors_are_tool_errors_with_the_apis_code(
    run: Run, mcp_stack: Stack, keys: Keys
) -> None:
    """Another tenant's task is TASK_NOT_FOUND to every tool and to the resources; a scope
    the key lacks is FORBIDDEN; arguments the input schema rejects are VALIDATION_ERROR naming
    the fields, before the tool runs."""
    other = {"X-API-Key": keys.other_tenant}
    task = {"task_id": run.task_id}
    async with mcp_over_http(mcp_stack.url, other) as client:
        for tool in ("get_task", "task_history", "task_state_as_of", "cancel_task", "watch_task"):
            error = refused(await client.call_tool(tool, task))
            assert error["code"] == "TASK_NOT_FOUND", (tool, error)
            assert error["details"]["task_id"] == run.task_id
        page = structured(await client.call_tool("list_tasks", {"q": WORD}))
        assert page["tasks"] == []
        with pytest.raises(MCPError) as missing:
            await client.read_resource(f"task://{run.task_id}")
        assert missing.value.data["error"]["code"] == "TASK_NOT_FOUND"
        assert missing.value.message.startswith("TASK_NOT_FOUND")

    async with mcp_over_http(mcp_stack.url, {"X-API-Key": keys.viewer}) as client:
        assert structured(await client.call_tool("get_task", task))["task_id"] == run.task_id
        submit = refused(await client.call_tool("submit_task", {"description": "no"}))
        assert submit["code"] == "FORBIDDEN" and submit["details"]["required"] == ["tasks:write"]
        audit = refused(await client.call_tool("task_state_as_of", task))
        assert audit["code"] == "FORBIDDEN" and audit["details"]["required"] == ["audit:read"]
        bad = refused(
            await client.call_tool("list_tasks", {"limit": 1000, "status": ["running", "done"]})
        )
        assert bad["code"] == "VALIDATION_ERROR"
        fields = [e["field"] for e in bad["details"]["errors"]]
        assert fields == ["arguments.status.1", "arguments.limit"]
        unknown = refused(await client.call_tool("get_task", {"task_id": "not-a-task"}))
        assert [e["field"] for e in unknown["details"]["errors"]] == ["arguments.task_id"]
        assert "not-a-task" not in str(unknown), "the value is not echoed"


async def test_a_missing_or_refused_credential_is_401_before_any_mcp_session(
    run: Run, mcp_stack: Stack, keys: Keys
) -> None:
    """POST /mcp without a credential, or with one the API does not know, is the API's own
    401 with WWW-Authenticate, and the SDK's client cannot connect; a page of an origin that
    WRENCH_CORS_ORIGINS does not list is refused even with a key; an API key sent as a bearer
    token works, here with the SDK's handshake-era session (initialize), whose watch of the
    ended task replays its history as progress."""
    discover = {"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {}}
    accept = {"Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(base_url=mcp_stack.url) as http:
        for credential in ({}, {"X-API-Key": "wr_unknownkeyab_" + "x" * 43}):
            answer = await http.post("/mcp", json=discover, headers={**accept, **credential})
            assert answer.status_code == 401
            assert answer.headers["www-authenticate"] == "Bearer"
            assert answer.json()["error"]["code"] == "UNAUTHENTICATED"
        elsewhere = {"X-API-Key": keys.admin, "Origin": "http://rebinding.example"}
        answer = await http.post("/mcp", json=discover, headers={**accept, **elsewhere})
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "FORBIDDEN"
    with pytest.raises(BaseExceptionGroup) as failed:
        async with mcp_over_http(mcp_stack.url, {"X-API-Key": "wr_unknownkeyab_" + "x" * 43}):
            pass
    assert failed.group_contains(MCPError)

    messages: list[str | None] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message)

    bearer = {"Authorization": f"Bearer {keys.admin}"}
    async with mcp_over_http(mcp_stack.url, bearer, mode="legacy") as client:
        assert client.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS
        watched = structured(
            await client.call_tool(
                "watch_task", {"task_id": run.task_id}, progress_callback=on_progress
            )
        )
    assert watched["status"] == "completed" and watched["task"] == run.watched["task"]
    assert messages == [message for _, message in run.progress]
