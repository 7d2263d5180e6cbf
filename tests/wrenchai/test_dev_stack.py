"""`wrenchai dev` as a user runs it: the real command, its own broker and Postgres, the
projector and the API as child processes, driven over HTTP."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from wrenchai.embedded import free_port

READY_TIMEOUT_S = 60.0
STOP_LIMIT_S = 10.0
# Components the supervisor owns, by a fragment of their command line.
ROLES = {
    "broker": "tansu",
    "postgres": "postgres",
    "projector": "projector",
    "api": " api ",
    "super-agent": "worker super-agent",
    "journey-agent": "worker journey-agent",
    "inspector-agent": "worker inspector-agent",
    "cost-guard": "worker cost-guard",
}
REPORT = "Research how WrenchAI recovers from errors and write a short report"
PLAN_WAIT_S = 60.0


def _clean_env() -> dict[str, str]:
    """The caller's environment without any WRENCH_* setting, so dev embeds everything."""
    return {k: v for k, v in os.environ.items() if not k.startswith("WRENCH_")}


class DevStack:
    """One `wrenchai dev` process, its output in a file (a full pipe would block it)."""

    def __init__(
        self,
        state_dir: Path,
        output: Path,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        self.state_dir = state_dir
        self.api_port = free_port()
        self.broker_port = free_port()
        self.output = output
        self.base = f"http://127.0.0.1:{self.api_port}"
        with open(output, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "wrenchai", "dev", "--state-dir", str(state_dir),
                 "--api-port", str(self.api_port), "--broker-port", str(self.broker_port),
                 *args],
                stdout=out, stderr=subprocess.STDOUT, env={**_clean_env(), **(env or {})},
            )  # fmt: skip
        self.started = time.monotonic()
        self.client = httpx.Client(base_url=self.base, timeout=15.0)

    def wait_ready(self) -> float:
        """Seconds until /health answers 200 and the bootstrap admin's key works; the
        client sends that key from then on, as the README's curl lines do."""
        deadline = self.started + READY_TIMEOUT_S
        healthy: float | None = None
        key_file = self.state_dir / "admin-api-key"
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"dev exited early:\n{self.output.read_text()}"
            try:
                if healthy is None and self.client.get("/health").status_code == 200:
                    healthy = time.monotonic() - self.started
                if healthy is not None and key_file.exists():
                    self.client.headers["X-API-Key"] = key_file.read_text().strip()
                    if self.client.get("/auth/me").status_code == 200:
                        return healthy
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"no ready API in {READY_TIMEOUT_S}s:\n{self.output.read_text()}")

    def children(self) -> dict[str, int]:
        """The pid of each component the supervisor runs, by role."""
        found: dict[str, int] = {}
        for child in psutil.Process(self.proc.pid).children():
            try:
                cmdline = " ".join(child.cmdline()) + " "
            except psutil.NoSuchProcess:
                continue  # exited between the listing and the look; it is being restarted
            for role, fragment in ROLES.items():
                if fragment in cmdline:
                    found[role] = child.pid
        return found

    def submit(self, description: str) -> dict[str, Any]:
        response = self.client.post("/tasks", json={"description": description})
        assert response.status_code == 202, response.text
        body: dict[str, Any] = response.json()
        return body

    def read(self, path: str, wait_for: str, timeout_s: float = 30.0) -> dict[str, Any]:
        """GET ``path`` waiting for ``wait_for``; retried while the projector catches up
        (a restarted projector first has to rejoin its consumer group)."""
        deadline = time.monotonic() + timeout_s
        while True:
            response = self.client.get(path, params={"wait_for": wait_for})
            if response.status_code == 200 or time.monotonic() > deadline:
                assert response.status_code == 200, response.text
                body: dict[str, Any] = response.json()
                return body
            time.sleep(0.2)

    def stop(self, sig: int = signal.SIGTERM) -> float:
        """Signal dev and return how long it took to exit."""
        started = time.monotonic()
        self.proc.send_signal(sig)
        self.proc.wait(30)
        self.client.close()
        return time.monotonic() - started

    def kill_everything(self) -> None:
        """Clean-up after a failed test: the supervisor and whatever it started."""
        if self.proc.poll() is None:
            tree = psutil.Process(self.proc.pid).children(recursive=True)
            self.proc.kill()
            self.proc.wait(10)
            for child in tree:
                try:
                    child.kill()
                except psutil.NoSuchProcess:
                    pass
        self.client.close()


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A state directory outside pytest's temporary root: as root, Postgres runs as another
    user who must traverse every folder above its data, and a pytest session starting in
    parallel resets its root folder to 0700."""
    path = Path(tempfile.mkdtemp(prefix="wrench-dev-"))
    yield path / "state"
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start_dev(tmp_path: Path) -> Iterator[Any]:
    """Starts `wrenchai dev` on a state dir; everything started is gone after the test."""
    stacks: list[DevStack] = []

    def start(
        state_dir: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ()
    ) -> DevStack:
        stack = DevStack(state_dir, tmp_path / f"dev-{len(stacks)}.out", env, args)
        stacks.append(stack)
        return stack

    yield start
    for stack in stacks:
        stack.kill_everything()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def _stop_cleanly(stack: DevStack, sig: int = signal.SIGTERM) -> float:
    """SIGTERM (or Ctrl-C's SIGINT); dev must exit 0 within the limit and leave none of its
    children behind."""
    pids = stack.children()
    assert set(pids) == set(ROLES), pids
    took = stack.stop(sig)
    assert stack.proc.returncode == 0, stack.output.read_text()
    assert took < STOP_LIMIT_S, f"dev took {took:.1f}s to stop"
    assert _wait_gone(list(pids.values()), 0) == []
    return took


def _wait_new_pid(stack: DevStack, role: str, old: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pid = stack.children().get(role)
        if pid is not None and pid != old:
            return pid
        time.sleep(0.05)
    raise AssertionError(f"{role} was not restarted within {timeout_s}s")


def _wait_planned(
    stack: DevStack, task_id: str, status: str | None = None, timeout_s: float = PLAN_WAIT_S
) -> dict[str, Any]:
    """GET /tasks/{task_id} once the task has a plan (and ``status``, when given)."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = stack.client.get(f"/tasks/{task_id}")
        body: dict[str, Any] = response.json()
        if (
            response.status_code == 200
            and body.get("plan")
            and (status is None or body["status"] == status)
        ):
            return body
        assert time.monotonic() < deadline, f"not there in {timeout_s}s: {response.text}"
        time.sleep(0.2)


async def _records_of(bootstrap: str, task_id: str) -> list[tuple[str, bytes, tuple[Any, ...]]]:
    """(type, value, headers) of every record of the task on the dev broker's wrench.events."""
    consumer = AIOKafkaConsumer(
        "wrench.events", bootstrap_servers=bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        found = []
        while batch := await consumer.getmany(timeout_ms=1000):
            for messages in batch.values():
                found += [
                    (dict(m.headers)["type"].decode(), m.value, tuple(m.headers))
                    for m in messages
                    if m.key == task_id.encode()
                ]
        return found
    finally:
        await consumer.stop()


async def _republish(bootstrap: str, value: bytes, key: str, headers: tuple[Any, ...]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            "wrench.events", value, key=key.encode(), headers=list(headers)
        )
    finally:
        await producer.stop()


@pytest.mark.parametrize("flag", ["--api-port", "--broker-port"])
def test_a_port_in_use_is_refused_naming_the_port_and_the_flag(tmp_path: Path, flag: str) -> None:
    """dev exits non-zero at once, before starting anything, and says which port to change."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        ports = {"--api-port": free_port(), "--broker-port": free_port(), flag: taken}
        result = subprocess.run(
            [sys.executable, "-m", "wrenchai", "dev", "--state-dir", str(tmp_path / "state"),
             *(str(x) for pair in ports.items() for x in pair)],
            capture_output=True, text=True, env=_clean_env(), timeout=60,
        )  # fmt: skip
    # Nothing was started: no Postgres data directory (a hang would hit the timeout above).
    assert result.returncode != 0
    assert f"port {taken}" in result.stderr and flag in result.stderr, result.stderr
    assert not (tmp_path / "state" / "postgres").exists()


def test_dev_plans_tasks_and_restarts_killed_children(state_dir: Path, start_dev: Any) -> None:
    """Tasks submitted over HTTP are readable at their positions and planned by the
    SuperAgent within seconds; a redelivered task.submitted gets no second plan; a projector
    or a worker killed with SIGKILL comes back under a new pid and the stack keeps working;
    Ctrl-C stops it all."""
    stack: DevStack = start_dev(state_dir)
    ready_s = stack.wait_ready()
    print(f"stack ready in {ready_s:.1f}s")

    first = stack.submit(REPORT)
    submitted_at = time.monotonic()
    task = stack.read(f"/tasks/{first['task_id']}", first["position"])
    assert task["task_id"] == first["task_id"] and task["description"] == REPORT
    planned = _wait_planned(stack, first["task_id"])
    print(f"planned {time.monotonic() - submitted_at:.1f}s after submission")
    assert planned["status"] in ("running", "completed")
    assert planned["plan"]["playbook"] == "research_report"
    assert [s["id"] for s in planned["plan"]["stages"]] == ["search", "summarize", "report"]
    assert {"researcher", "analyst", "writer"} <= {r["name"] for r in planned["roles"]}

    bootstrap = f"127.0.0.1:{stack.broker_port}"
    before = asyncio.run(_records_of(bootstrap, first["task_id"]))
    _, value, headers = next(r for r in before if r[0] == "task.submitted")
    asyncio.run(_republish(bootstrap, value, first["task_id"], headers))

    for role in ("super-agent", "projector"):
        old = stack.children()[role]
        killed = time.monotonic()
        os.kill(old, signal.SIGKILL)
        _wait_new_pid(stack, role, old, timeout_s=10)
        print(f"{role} respawned in {time.monotonic() - killed:.2f}s")
    second = stack.submit("Research the crash and write a short report")
    task = stack.read(f"/tasks/{second['task_id']}", second["position"])
    assert task["task_id"] == second["task_id"]
    _wait_planned(stack, second["task_id"], "completed")
    print(f"planning and projecting again {time.monotonic() - killed:.1f}s after the kills")
    assert "child exited; restarting" in stack.output.read_text()

    after = [kind for kind, _, _ in asyncio.run(_records_of(bootstrap, first["task_id"]))]
    planning = after[: after.index("plan.created") + 1]
    assert planning == [kind for kind, _, _ in before][: len(planning)]
    assert after.count("plan.created") == 1 and after.count("task.completed") == 1
    assert after.count("task.submitted") == 2
    done = _wait_planned(stack, first["task_id"], "completed")
    # One plan: the same stages (their status moved on as they ran).
    assert [st["id"] for st in done["plan"]["stages"]] == ["search", "summarize", "report"]
    assert done["plan"]["total"] == planned["plan"]["total"]
    assert [step["status"] for step in done["steps"]] == ["completed"] * 3
    # The report the offline task wrote, decrypted from the archived task.completed.
    assert done["output"]["final_stage"] == "report"
    assert done["output"]["final"]["markdown"].startswith(f"# {REPORT}")
    assert done["output"]["final"]["sources"]

    print(f"stopped in {_stop_cleanly(stack, signal.SIGINT):.1f}s")


def test_restart_on_the_same_state_dir_restores_tasks_and_history(
    state_dir: Path, start_dev: Any
) -> None:
    """The embedded broker forgets everything when it stops; the next dev run republishes
    the archive, so tasks, their histories and their positions are as they were, and new
    tasks land after them (a log restarted at offset 0 would make the projector skip them)."""
    stack: DevStack = start_dev(state_dir)
    stack.wait_ready()
    long_running = {
        "playbook": {
            "name": "nap",
            "steps": [
                {"id": "nap", "tool": "code.python", "role": "coder",
                 "input": {"code": "import time; time.sleep(60)", "timeout_s": 90},
                 "timeout": 120},
            ],
        }
    }  # fmt: skip
    response = stack.client.post(
        "/tasks", json={"description": "Take a long nap", "constraints": long_running}
    )
    assert response.status_code == 202, response.text
    accepted = [response.json(), *(stack.submit(f"{REPORT}, part {i}") for i in range(3))]
    for item in accepted[1:]:
        _wait_planned(stack, item["task_id"], "completed")
    _wait_planned(stack, accepted[0]["task_id"], "running")
    cancel = stack.client.post(
        f"/tasks/{accepted[0]['task_id']}/cancel",
        params={"wait_for": accepted[0]["position"]},
        json={"reason": "changed my mind"},
    )
    assert cancel.status_code == 202, cancel.text
    # The last write of each task is where its reads must wait.
    last = {a["task_id"]: a["position"] for a in accepted}
    last[accepted[0]["task_id"]] = cancel.json()["position"]
    before = {
        task_id: (
            stack.read(f"/tasks/{task_id}", wait),
            stack.read(f"/tasks/{task_id}/events", wait),
        )
        for task_id, wait in last.items()
    }
    history = before[accepted[0]["task_id"]][1]["events"]
    assert [e["type"] for e in history][-1] == "task.cancelled"
    assert "step.completed" not in [e["type"] for e in history]
    archived = sum(len(events["events"]) for _, events in before.values())
    _stop_cleanly(stack)

    again: DevStack = start_dev(state_dir)
    ready_s = again.wait_ready()
    print(f"restarted (with restore) and ready in {ready_s:.1f}s")
    # Every record of the four tasks: submissions, planning, one cancellation.
    assert f"restored {archived} record(s)" in again.output.read_text()
    for task_id, (task, history) in before.items():
        assert again.read(f"/tasks/{task_id}", task["position"]) == task
        assert again.read(f"/tasks/{task_id}/events", task["position"]) == history

    fresh = again.submit(f"{REPORT}, after the restart")
    task = again.read(f"/tasks/{fresh['task_id']}", fresh["position"])
    assert task["task_id"] == fresh["task_id"]
    _wait_planned(again, fresh["task_id"], "completed")
    # The replayed agents planned and ran none of the restored tasks again.
    for task_id, (_, history) in before.items():
        assert again.read(f"/tasks/{task_id}/events", fresh["position"]) == history
    used = {e["position"] for _, h in before.values() for e in h["events"]}
    assert fresh["position"] not in used
    _stop_cleanly(again)


def test_killing_dev_leaves_no_orphans(state_dir: Path, start_dev: Any) -> None:
    """If dev itself is SIGKILLed (no chance to clean up), every child still goes away."""
    stack: DevStack = start_dev(state_dir)
    stack.wait_ready()
    pids = stack.children()
    assert set(pids) == set(ROLES), pids

    stack.stop(signal.SIGKILL)

    assert _wait_gone(list(pids.values()), timeout_s=15) == []


SNOOP = """
import glob, os, socket
for path in glob.glob("/proc/*/environ"):
    try:
        print(path, open(path, "rb").read().decode(errors="replace"))
    except OSError as exc:
        print(path, "refused", exc)
for name in ("/root", os.environ.get("STATE_DIR", ""), "/work", "/tmp"):
    try:
        print(name, os.listdir(name))
    except OSError as exc:
        print(name, "refused", exc)
print("uid", os.getuid())
"""


def _stage_stdout(stack: DevStack, task_id: str, stage_id: str) -> str:
    """What the stage's code printed, from its step.completed in the task's history."""
    deadline = time.monotonic() + PLAN_WAIT_S
    while time.monotonic() < deadline:
        events = stack.client.get(f"/tasks/{task_id}/events").json().get("events", [])
        for event in events:
            payload = event["payload"]
            if event["type"] == "step.completed" and payload.get("stage_id") == stage_id:
                return str(payload["output"]["stdout"])
        time.sleep(0.3)
    raise AssertionError(f"stage {stage_id} of {task_id} did not complete")


def test_code_run_by_a_task_sees_no_secret_of_the_stack(state_dir: Path, start_dev: Any) -> None:
    """The attack that opened this hole, repeated: the stack started with a canary LLM key,
    and a task whose code.python step reads every process's environment and lists the state
    directory. The step runs (an admin may run code) but sees no other process, no WRENCH_
    setting, no canary and no state directory, and runs as an unprivileged user."""
    canary = f"canary-{uuid.uuid4().hex}"
    stack: DevStack = start_dev(state_dir, {"WRENCH_LLM_API_KEY": canary})
    stack.wait_ready()
    snoop = SNOOP.replace('os.environ.get("STATE_DIR", "")', repr(str(state_dir)))
    response = stack.client.post(
        "/tasks",
        json={
            "description": "Look around",
            "constraints": {"playbook": "code_task", "playbook_inputs": {"code": snoop}},
        },
    )
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    stdout = _stage_stdout(stack, task_id, "run")
    assert "uid 65534" in stdout
    assert canary not in stdout and "WRENCH_" not in stdout
    assert str(state_dir) in stdout and "refused" in stdout
    history = stack.client.get(f"/tasks/{task_id}/events").text
    assert canary not in history
    _stop_cleanly(stack)


def test_dev_runs_replicas_of_an_agent_that_share_its_partitions(
    state_dir: Path, start_dev: Any
) -> None:
    """`--replicas journey-agent=2` runs two JourneyAgent workers, each logging to its own
    file and holding some of the partitions (as their heartbeats say), and tasks complete."""
    stack: DevStack = start_dev(state_dir, args=("--replicas", "journey-agent=2"))
    stack.wait_ready()
    journeys = [
        child
        for child in psutil.Process(stack.proc.pid).children()
        if "worker journey-agent" in " ".join(child.cmdline())
    ]
    assert len(journeys) == 2
    assert (state_dir / "logs" / "journey-agent-2.log").exists()
    ids = [stack.submit(f"{REPORT} ({n})")["task_id"] for n in range(4)]
    for task_id in ids:
        _wait_planned(stack, task_id, "completed")
    deadline = time.monotonic() + 30
    while True:
        held = asyncio.run(_partitions_of(state_dir, "journey-agent"))
        if len(held) == 2 and sorted(p for ps in held for p in ps) == list(range(6)):
            break
        assert time.monotonic() < deadline, held
        time.sleep(0.5)


async def _partitions_of(state_dir: Path, agent_id: str) -> list[list[int]]:
    """The partitions each live process of ``agent_id`` holds, from the dev stack's
    Postgres (agent_instances, folded from heartbeats)."""
    url = (state_dir / "secrets" / "database_url").read_text().strip()
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT partitions FROM agent_instances WHERE agent_id = $1 "
            "AND heartbeat_at > now() - interval '30 seconds' AND partitions <> '{}'",
            agent_id,
        )
    finally:
        await conn.close()
    return [list(row["partitions"]) for row in rows]


def test_dev_refuses_replicas_of_an_unknown_agent(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wrenchai", "dev", "--state-dir", str(tmp_path / "s"),
         "--replicas", "nobody=2", "--api-port", str(free_port())],
        capture_output=True, text=True, env=_clean_env(), timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "no worker named 'nobody'" in result.stderr and "journey-agent" in result.stderr
    assert not (tmp_path / "s" / "postgres").exists()
