"""`wrenchai health`, the health check of every WrenchAI container: the API's GET /health,
and for a worker or the projector a fresh tick of its event loop read on its metrics port."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api._support import api_process
from wrenchai.embedded import free_port
from wrenchai.health import LOOP_TICK, check_loop, target_of, tick
from wrenchai.metrics import MetricsServer, serve_metrics
from wrenchai.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def wrenchai_health(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`wrenchai health ARGS` as a container's health check runs it."""
    return subprocess.run(
        [sys.executable, "-m", "wrenchai", "health", *args],
        env={**env, "WRENCH_LOG_LEVEL": "warning"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def environment(settings: Settings, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("WRENCH_")}
    return {**base, **settings.to_env(), **extra}


@pytest.mark.parametrize(
    ("cmdline", "target"),
    [
        (["/opt/wrenchai/bin/python", "/opt/wrenchai/bin/wrenchai", "api", "--host", "0.0.0.0"],
         "api"),
        (["/opt/wrenchai/bin/python", "/opt/wrenchai/bin/wrenchai", "projector"], "projector"),
        (["python", "-m", "wrenchai", "worker", "journey-agent"], "worker"),
        (["wrenchai", "--state-dir", "api", "worker", "cost-guard"], "worker"),
        (["/bin/sh", "-c", "wrenchai topics create && wrenchai migrate"], None),
        (["wrenchai", "keys", "issue", "--name", "api"], None),
        (["wrenchai", "--help"], None),
        ([], None),
    ],
)  # fmt: skip
def test_the_check_follows_what_the_container_runs(cmdline: list[str], target: str) -> None:
    """The image's HEALTHCHECK has no argument: the subcommand of PID 1 chooses the check,
    and a one-shot command or a shell has none."""
    assert target_of(cmdline) == target


@pytest.fixture
def metrics_port() -> Iterator[MetricsServer]:
    server = serve_metrics(Settings(metrics_port=0, metrics_host="127.0.0.1"), "test")
    assert server is not None
    yield server
    server.close()
    LOOP_TICK.set(0)


def test_a_loop_is_alive_while_it_ticks_and_dead_once_its_tick_is_old(
    metrics_port: MetricsServer,
) -> None:
    """Read through the process's metrics port: a fresh tick is alive, a tick older than
    the limit is a stuck loop (whose port, served by a thread, still answers), and no tick
    yet is a process still starting."""
    LOOP_TICK.set(0)
    starting = check_loop(metrics_port.url)
    assert not starting.healthy and "no loop tick yet" in starting.reason
    tick()
    assert check_loop(metrics_port.url).healthy
    LOOP_TICK.set(time.time() - 120)
    stuck = check_loop(metrics_port.url, max_age_s=30)
    assert not stuck.healthy and "last ticked 120s ago" in stuck.reason


def test_a_port_that_does_not_answer_is_dead() -> None:
    verdict = check_loop(f"http://127.0.0.1:{free_port()}/metrics", timeout_s=2)
    assert not verdict.healthy and "does not answer" in verdict.reason


def test_a_worker_without_a_metrics_port_cannot_be_checked(settings: Settings) -> None:
    """The check needs WRENCH_METRICS_PORT (compose sets it) and says so."""
    result = wrenchai_health(environment(settings), "worker")
    assert result.returncode == 1
    assert "unhealthy: worker: WRENCH_METRICS_PORT is not set" in result.stdout


def test_outside_a_wrenchai_container_there_is_nothing_to_check(settings: Settings) -> None:
    """Without a target and with no `wrenchai` service as PID 1, the check passes."""
    result = wrenchai_health(environment(settings))
    assert result.returncode == 0 and "no long-running WrenchAI process" in result.stdout


def _until_healthy(env: dict[str, str], target: str, proc: subprocess.Popen[bytes]) -> str:
    """`wrenchai health TARGET` until it passes (the process joins its group and ticks)."""
    deadline = time.monotonic() + 90
    while True:
        result = wrenchai_health(env, target)
        if result.returncode == 0:
            return result.stdout
        assert proc.poll() is None, f"the {target} exited with {proc.returncode}"
        assert time.monotonic() < deadline, f"never healthy: {result.stdout}{result.stderr}"
        time.sleep(0.5)


@pytest.mark.parametrize("command", [["worker", "super-agent"], ["projector"]])
@pytest.mark.usefixtures("topics", "db")
def test_a_running_worker_and_projector_are_healthy_and_a_frozen_one_is_not(
    settings: Settings, tmp_path: Path, command: list[str]
) -> None:
    """The real process, as compose runs it (WRENCH_METRICS_PORT set): healthy once its loop
    ticks; stopped with SIGSTOP (loop and port frozen) it fails the check."""
    env = environment(settings, WRENCH_METRICS_PORT=str(free_port()), WRENCH_METRICS_HOST="0.0.0.0")
    target = "worker" if command[0] == "worker" else "projector"
    with open(tmp_path / "process.out", "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wrenchai", *command], stdout=out, stderr=subprocess.STDOUT,
            env=env, cwd=tmp_path,
        )  # fmt: skip
    try:
        healthy = _until_healthy(env, target, proc)
        assert healthy.startswith(f"ok: {target}: the event loop ticked")
        proc.send_signal(signal.SIGSTOP)
        frozen = wrenchai_health(env, target)
        assert frozen.returncode == 1 and frozen.stdout.startswith(f"unhealthy: {target}:")
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        proc.wait(30)


@pytest.mark.usefixtures("topics", "db")
async def test_the_api_is_healthy_while_it_answers_its_health(settings: Settings) -> None:
    """`wrenchai health api` passes on a running API (database and broker up), and fails
    on a port where none answers."""
    async with api_process(settings) as base:
        result = await asyncio.to_thread(
            wrenchai_health, environment(settings), "api", "--url", f"{base}/health"
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.startswith(f"ok: api: {base}/health answered 200")
    port = free_port()
    down = await asyncio.to_thread(
        wrenchai_health, environment(settings, WRENCH_API_PORT=str(port)), "api"
    )
    assert down.returncode == 1
    assert f"unhealthy: api: http://127.0.0.1:{port}/health does not answer" in down.stdout
