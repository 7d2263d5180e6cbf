"""`wrenchai submit` and `wrenchai watch`: against a server replaying a recorded stream
(resumption, refusals), and run in a real pseudo-terminal against a real API, projector and
agent workers on the session's broker and Postgres (to the end of a task, and through a
restart of the API in the middle of one)."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import click
import httpx
import pytest
import yaml
from pydantic import SecretStr
from rich.console import Console
from websockets.asyncio.server import ServerConnection, serve

from events import bootstrap_topics, generate_key
from projections._db import connect
from projections._migrate import migrate
from tests.api._support import seed_api_key
from tests.wrenchai.test_watch_view import TASK, recorded_run, replay
from wrenchai._cli_watch import (
    ApiTarget,
    NotWatched,
    SubmissionRefused,
    api_target,
    constraints_of,
    follow,
    post_task,
)
from wrenchai._watch_screen import render
from wrenchai._watch_view import WatchView, parse_position
from wrenchai.embedded import EmbeddedBroker, free_port
from wrenchai.settings import Settings

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


# -- the real thing: a pseudo-terminal, the API, the projector and the agents ----------------
REPO = Path(__file__).resolve().parents[2]
DONE_S = 90.0
NAP = """\
name: nap
description: Sleep, then sleep a little more.
steps:
  - {id: nap, tool: test.sleep, role: coder, input: {seconds: %s}, timeout: 60}
  - {id: after, tool: test.sleep, role: coder, input: {seconds: 0.1}, depends_on: [nap],
     timeout: 30}
"""


class Stack:
    """The session's broker and Postgres with a fresh namespace and database, and as their
    own processes: the projector, the three agents and an API on a fixed port, which a test
    may restart."""

    def __init__(self, broker: EmbeddedBroker, database_url: str, logs: Path) -> None:
        self.settings = Settings(
            kafka_bootstrap=broker.bootstrap,
            namespace=f"w{uuid.uuid4().hex[:10]}.",
            partitions=3,
            database_url=SecretStr(database_url),
            kafka_session_timeout_ms=6_000,
            kafka_rebalance_timeout_ms=6_000,
            kafka_fetch_max_wait_ms=20,
            projector_batch_ms=50,
            encryption_keys=generate_key(),  # type: ignore[arg-type]
            log_format="console",
            log_level="warning",
            tool_modules="tests.processors.journey_tools",
            # Every process must hash API keys alike: a made-up pepper would differ.
            jwt_secret=SecretStr(uuid.uuid4().hex * 2),
            api_key_pepper=SecretStr(uuid.uuid4().hex),
        )
        self.logs, self.port = logs, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("WRENCH_")}
        self.env |= {**self.settings.to_env(), "PYTHONPATH": str(REPO)}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.key = asyncio.run(self._prepare())

    async def _prepare(self) -> str:
        await bootstrap_topics(self.settings)
        conn = await connect(self.settings)
        try:
            await migrate(conn)
            return await seed_api_key(conn, self.settings)
        finally:
            await conn.close()

    def start(self, name: str, *args: str) -> None:
        with open(self.logs / f"{name}.out", "ab") as out:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "wrenchai", *args],
                stdout=out, stderr=subprocess.STDOUT, env=self.env,
            )  # fmt: skip

    def start_api(self, wait: bool = True) -> None:
        self.start("api", "api", "--port", str(self.port))
        deadline = time.monotonic() + 60
        while wait:
            assert self.processes["api"].poll() is None, (self.logs / "api.out").read_text()
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code in (200, 503):
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "no API after 60 s"
            time.sleep(0.1)

    def kill(self, name: str) -> None:
        process = self.processes[name]
        if process.poll() is None:
            process.kill()
            process.wait(15)

    def cli_env(self) -> dict[str, str]:
        """What a user's shell holds: where the API is and the key, nothing else of ours."""
        return {**self.env, "WRENCH_API_URL": self.url, "WRENCH_API_KEY": self.key,
                "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}  # fmt: skip

    def history(self, task_id: str, wait_for: str) -> list[str]:
        """The positions of the task's events, as GET /tasks/{id}/events serves them."""
        response = httpx.get(
            f"{self.url}/tasks/{task_id}/events",
            params={"wait_for": wait_for},
            headers={"X-API-Key": self.key},
            timeout=15,
        )
        assert response.status_code == 200, response.text
        return [event["position"] for event in response.json()["events"]]


@pytest.fixture(scope="module")
def stack(
    broker: EmbeddedBroker, postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    name = f"wrench_watch_{uuid.uuid4().hex[:12]}"
    asyncio.run(_database(postgres_url, f'CREATE DATABASE "{name}"'))
    base, _, _ = postgres_url.rpartition("/")
    instance = Stack(broker, f"{base}/{name}", tmp_path_factory.mktemp("watch"))
    try:
        instance.start("projector", "projector")
        for worker in ("super-agent", "journey-agent", "inspector-agent"):
            instance.start(worker, "worker", worker)
        instance.start_api()
        yield instance
    finally:
        for process in instance.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(15)
        asyncio.run(_database(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _database(url: str, statement: str) -> None:
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


class Terminal:
    """A command in a pseudo-terminal of its own (stdin and stdout; stderr to a file), read
    as it writes."""

    def __init__(self, args: list[str], env: dict[str, str], stderr: Path) -> None:
        leader, follower = pty.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.stderr = stderr
        with open(stderr, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "wrenchai", *args],
                stdin=follower, stdout=follower, stderr=err, env=env, start_new_session=True,
            )  # fmt: skip
        os.close(follower)
        self.leader = leader
        self.output = b""

    def read_until(self, done: Callable[[bytes], bool], timeout_s: float = DONE_S) -> bytes:
        """Read until ``done(output so far)`` or the command exits and its output is drained."""
        deadline = time.monotonic() + timeout_s
        while not done(self.output):
            assert time.monotonic() < deadline, self._stuck()
            ready, _, _ = select.select([self.leader], [], [], 0.2)
            if not ready:
                continue
            try:
                chunk = os.read(self.leader, 65536)
            except OSError:  # EIO: the command exited and its terminal closed
                chunk = b""
            if not chunk:
                break
            self.output += chunk
        return self.output

    def finish(self) -> int:
        self.read_until(lambda _: False)
        code = self.proc.wait(DONE_S)
        os.close(self.leader)
        return code

    def _stuck(self) -> str:
        return f"stuck; output so far:\n{self.output.decode(errors='replace')[-3000:]}\n" + (
            f"stderr:\n{self.stderr.read_text()[-2000:]}"
        )

    def json_lines(self) -> list[dict[str, Any]]:
        """The complete lines written so far, parsed."""
        text = self.output.decode().replace("\r\n", "\n")
        complete = text[: text.rfind("\n") + 1]
        return [json.loads(line) for line in complete.splitlines() if line.strip()]


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Callable[..., Terminal]]:
    """Opens terminals running ``wrenchai ARGS``; whatever still runs after the test is
    killed."""
    opened: list[Terminal] = []

    def open_terminal(args: list[str], env: dict[str, str]) -> Terminal:
        opened.append(Terminal(args, env, tmp_path / f"stderr-{len(opened)}"))
        return opened[-1]

    yield open_terminal
    for each in opened:
        if each.proc.poll() is None:
            each.proc.kill()
            each.proc.wait(15)


def test_submit_watch_in_a_terminal_follows_a_task_to_its_end_and_exits_0(
    stack: Stack, terminal: Callable[..., Terminal], tmp_path: Path
) -> None:
    """`wrenchai submit --playbook FILE --watch` in a terminal: prints the task id, draws the
    stages of its plan as it runs with their scores and intervals, and exits 0 when the task
    completes."""
    playbook = tmp_path / "nap.yaml"
    playbook.write_text(NAP % 0.2)
    shell = terminal(
        ["submit", "Take a short nap", "--playbook", str(playbook), "--watch"], stack.cli_env()
    )
    code = shell.finish()
    raw = shell.output.decode(errors="replace")
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)
    (tmp_path / "screen.txt").write_text(screen)
    assert code == 0, shell._stuck()
    task_id = screen.splitlines()[0].strip()
    assert uuid.UUID(task_id) and f"task {task_id}" in screen
    assert "playbook nap" in screen
    for shown in ("nap", "after", "test.sleep", "completed", "evaluated", "90% interval"):
        assert shown in screen, shown
    assert "\x1b[" in raw  # drawn for a terminal, with its escape sequences


def test_watch_json_survives_an_api_restart_without_repeating_or_missing_an_event(
    stack: Stack, terminal: Callable[..., Terminal], tmp_path: Path
) -> None:
    """`wrenchai submit --playbook FILE.json --watch --json` in a terminal while the API is
    killed as the task's nap starts, and started again: the watch reconnects from the last
    position it printed and catches up on what happened meanwhile; its lines are exactly the
    task's history, each event once, in order, and it exits 0."""
    playbook = tmp_path / "nap.json"
    playbook.write_text(json.dumps(yaml.safe_load(NAP % 2)))
    shell = terminal(
        ["submit", "Nap through a restart", "--playbook", str(playbook), "--watch", "--json"],
        stack.cli_env(),
    )
    shell.read_until(lambda out: b'"step.started"' in out)
    stack.kill("api")
    before = shell.json_lines()
    assert "task.completed" not in [line["event"]["type"] for line in before]
    stack.start_api(wait=False)  # the watch finds it when it is up
    code = shell.finish()

    assert code == 0, shell._stuck()
    lines = shell.json_lines()
    assert len(before) < len(lines)
    positions = [line["position"] for line in lines]
    assert positions == [line["event"]["position"] for line in lines]
    task_id = lines[0]["event"]["task_id"]
    assert positions == stack.history(task_id, positions[-1])
    assert [lines[0]["event"]["type"], lines[-1]["event"]["type"]] == [
        "task.submitted",
        "task.completed",
    ]
    assert "reconnecting" in shell.stderr.read_text()


async def test_the_real_api_refusals_map_to_exit_3_and_4(stack: Stack) -> None:
    """Against the real API: a key it does not know is refused for submit and watch alike, an
    unknown task is named, and a task it will not take is its own error (exit 4)."""
    good, bad = ApiTarget(stack.url, stack.key), ApiTarget(stack.url, "wr_aaaaaaaaaaaa_" + "b" * 43)
    with pytest.raises(NotWatched, match="refused the credential"):
        post_task(bad, {"description": "x"})
    with pytest.raises(SubmissionRefused, match="422"):
        post_task(good, {"description": "x", "constraints": {"alerts": {"stall_after_s": -1}}})
    task_id = post_task(good, {"description": "Refusals"})["task_id"]
    with pytest.raises(NotWatched, match="refused the credential"):
        await follow(bad, task_id, Collected(), sleep=no_wait)
    unknown = str(uuid.uuid4())
    with pytest.raises(NotWatched, match=f"knows no task {unknown}"):
        await follow(good, unknown, Collected(), sleep=no_wait)
