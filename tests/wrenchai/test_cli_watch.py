"""`wrenchai submit` and `wrenchai watch`: against a server replaying a recorded stream
(resumption, refusals), and run in a real pseudo-terminal against a real API, projector and
agent workers on the session's broker and Postgres (to the end of a task, and through a
restart of the API in the middle of one)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from websockets.asyncio.server import ServerConnection, serve

from tests.wrenchai.test_watch_view import TASK, recorded_run, replay
from wrenchai._cli_watch import (
    ApiTarget,
    NotWatched,
    api_target,
    constraints_of,
    follow,
    render,
)
from wrenchai._watch_view import WatchView, parse_position
from wrenchai.embedded import free_port

KEY = "wr_replaykeyabcd_" + "x" * 43


class Collected:
    """A sink that keeps what a watch would print."""

    def __init__(self) -> None:
        self.printed: list[Mapping[str, Any]] = []
        self.notes: list[str | None] = []
        self.views: list[WatchView] = []

    def update(self, view: WatchView, message: Mapping[str, Any] | None) -> None:
        self.views.append(view)
        if message is not None:
            self.printed.append(message)

    def note(self, text: str | None) -> None:
        self.notes.append(text)


class Replay:
    """A stream server for one task that replays ``messages``: it checks the bearer key,
    starts after the ``resume_from`` of the client's first message, and on the connections
    listed in ``drops`` goes away after sending that many events (and, once, repeats the
    last two events a client already had, as a server resuming inclusively would)."""

    def __init__(self, messages: list[dict[str, Any]], drops: dict[int, int]) -> None:
        self.messages, self.drops = messages, drops
        self.connections: list[str | None] = []

    async def handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        if ws.request.headers.get("Authorization") != f"Bearer {KEY}":
            await ws.close(1008, "invalid credential")
            return
        if ws.request.path != f"/ws/tasks/{TASK}":
            await ws.close(4404, "unknown task")
            return
        resume_from = json.loads(await ws.recv()).get("resume_from")
        self.connections.append(resume_from)
        after = parse_position(resume_from)
        events = [m for m in self.messages if "position" in m]
        start = 0 if after is None else 1 + next(
            i for i, m in enumerate(events) if parse_position(m["position"]) == after
        )  # fmt: skip
        start = max(0, start - 2) if len(self.connections) == 2 else start
        budget = self.drops.get(len(self.connections))
        await ws.send(json.dumps({"type": "ping"}))
        sent = 0
        for message in self.messages:
            if "position" in message and events.index(message) < start:
                continue
            if budget is not None and sent == budget:
                await ws.close(1001, "going away")
                return
            await ws.send(json.dumps(message))
            sent += "position" in message
        await ws.close(1000)


@asynccontextmanager
async def replaying(messages: list[dict[str, Any]], drops: dict[int, int]) -> AsyncIterator[Any]:
    replay_server = Replay(messages, drops)
    port = free_port()
    async with serve(replay_server.handler, "127.0.0.1", port):
        yield replay_server, ApiTarget(url=f"http://127.0.0.1:{port}", key=KEY)


async def no_wait(_: float) -> None:
    await asyncio.sleep(0)


async def test_a_dropped_stream_resumes_after_the_last_position_without_repeats_or_gaps() -> None:
    """The server goes away twice mid-task (and repeats events on one resumption): the watch
    reconnects from the last position it received, prints every event exactly once, in
    order, and ends with the task's status."""
    messages = recorded_run()
    async with replaying(messages, drops={1: 5, 2: 9}) as (server, target):
        sink = Collected()
        view = await follow(target, str(TASK), sink, sleep=no_wait)
    expected = [m["position"] for m in messages if "position" in m]
    assert [m["position"] for m in sink.printed] == expected
    assert server.connections == [None, expected[4], expected[11]]
    assert view.exit_status == 0 and view == replay(messages)
    assert any(note and "reconnecting" in note for note in sink.notes)


async def test_a_refused_credential_and_an_unknown_task_are_not_retried() -> None:
    """Close 1008 says how to pass a credential, close 4404 names the task; neither is
    retried (both exit 3)."""
    async with replaying(recorded_run(), drops={}) as (_, target):
        with pytest.raises(NotWatched, match=r"refused the credential.*--api-key"):
            await follow(ApiTarget(target.url, "wr_wrong"), str(TASK), Collected(), sleep=no_wait)
        other = str(uuid.uuid4())
        with pytest.raises(NotWatched, match=f"knows no task {other}"):
            await follow(target, other, Collected(), sleep=no_wait)


async def test_an_api_that_cannot_be_reached_is_given_up_on_after_a_few_tries() -> None:
    """Nothing listening: a few attempts, then an error naming the URL and --api-url."""
    target = ApiTarget(url=f"http://127.0.0.1:{free_port()}", key=KEY)
    with pytest.raises(NotWatched, match=r"cannot reach the API at .*--api-url"):
        await follow(target, str(TASK), Collected(), sleep=no_wait)


def test_the_screen_shows_bars_steps_totals_evaluations_and_alerts() -> None:
    """render() draws the folded view: each stage with its tool and status, the running step,
    tokens and dollars against the estimate, scores with intervals, and alerts."""
    messages = recorded_run()
    console = Console(record=True, width=140, force_terminal=False)
    console.print(render(replay(messages[:12]), "reconnecting in 0.5 s"))
    screen = console.export_text()
    assert "search" in screen and "search.local" in screen and "completed" in screen
    assert "now: report → report.compile (attempt 1)" in screen
    assert "tokens 120 of ~400" in screen and "cost $0.0020 of ~$0.0100" in screen
    assert "0.80 [0.60, 0.93]" in screen
    assert "alert warning STALLED: no step for 30 s" in screen
    assert "reconnecting in 0.5 s" in screen
    console = Console(record=True, width=140)
    console.print(render(replay(messages)))
    assert "completed: 2 of 2 stages completed in 3.5 s" in console.export_text()


def test_playbook_names_and_files_become_constraints(tmp_path: Path) -> None:
    """--playbook NAME is constraints.playbook = NAME; a YAML or JSON file is sent inline;
    --constraints must be a JSON object and may not name a playbook as well."""
    assert constraints_of(None, "research_report") == {"playbook": "research_report"}
    book = {"name": "nap", "steps": [{"id": "a", "tool": "test.sleep", "input": {}}]}
    (tmp_path / "nap.yaml").write_text(
        "name: nap\nsteps:\n  - {id: a, tool: test.sleep, input: {}}\n"
    )
    (tmp_path / "nap.json").write_text(json.dumps(book))
    assert constraints_of('{"max_roles": 2}', str(tmp_path / "nap.yaml")) == {
        "max_roles": 2,
        "playbook": book,
    }
    assert constraints_of(None, str(tmp_path / "nap.json")) == {"playbook": book}
    assert constraints_of(None, None) is None
    import click

    for bad in ("[1]", "{nope", '{"playbook": "x"}'):
        with pytest.raises(click.BadParameter):
            constraints_of(bad, "research_report")
    with pytest.raises(click.BadParameter, match="cannot read"):
        constraints_of(None, str(tmp_path / "missing.yaml"))


def test_the_api_and_key_come_from_flags_then_settings_then_the_dev_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beside `wrenchai dev` nothing needs passing: the URL its stack.json recorded and its
    admin-api-key; WRENCH_API_URL / WRENCH_API_KEY_FILE win over those, and flags over all."""
    for name in ("WRENCH_API_URL", "WRENCH_API_KEY", "WRENCH_API_KEY_FILE", "WRENCH_API_PORT"):
        monkeypatch.delenv(name, raising=False)
    state = tmp_path / "state"
    state.mkdir()
    assert api_target(None, None, state) == ApiTarget("http://127.0.0.1:8000", None)
    (state / "stack.json").write_text(json.dumps({"api": "http://127.0.0.1:8123"}))
    (state / "admin-api-key").write_text("wr_stack\n")
    assert api_target(None, None, state) == ApiTarget("http://127.0.0.1:8123", "wr_stack")
    (tmp_path / "key").write_text("wr_from_file\n")
    monkeypatch.setenv("WRENCH_API_KEY_FILE", str(tmp_path / "key"))
    monkeypatch.setenv("WRENCH_API_URL", "https://wrench.example")
    assert api_target(None, None, state) == ApiTarget("https://wrench.example", "wr_from_file")
    assert api_target("http://h:1/base/", "wr_flag", state) == ApiTarget(
        "http://h:1/base/", "wr_flag"
    )
    assert ApiTarget("https://h/base/", None).stream_url("t") == "wss://h/base/ws/tasks/t"
