"""The supervisor's machinery on small shell commands: restarts, backoff, stopping, and the
environment the dev stack hands its children."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import psutil
from pydantic import SecretStr

from wrenchai._supervisor import Backoff, Child
from wrenchai.settings import Settings
from wrenchai.stack import child_environment


async def _eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)


def test_backoff_doubles_to_its_cap_and_starts_over_after_a_stable_run() -> None:
    """0.5 s doubling per quick crash, never above the cap; a long run resets it."""
    backoff = Backoff(initial=0.5, cap=15.0, stable_after=30.0)
    delays = [backoff.delay(uptime=1.0) for _ in range(8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0]
    assert backoff.delay(uptime=31.0) == 0.5
    assert backoff.delay(uptime=1.0) == 1.0


async def test_a_child_that_dies_is_restarted_with_its_output_in_its_log(tmp_path: Path) -> None:
    """Each run's output lands in the child's log file, and every exit starts it again."""
    log_path = tmp_path / "logs" / "crasher.log"
    child = Child(
        "crasher",
        ["sh", "-c", "echo run; exit 3"],
        {"PATH": "/usr/bin:/bin"},
        log_path,
        echo=False,
        backoff=Backoff(initial=0.05, cap=0.1),
    )
    child.start()
    await _eventually(lambda: child.restarts >= 3)
    await child.stop(1.0)
    assert child.restarts >= 3
    assert log_path.read_text().count("run\n") >= 3


async def test_stop_kills_a_child_that_ignores_sigterm_once_its_share_runs_out(
    tmp_path: Path,
) -> None:
    """A child that traps SIGTERM is SIGKILLed after the timeout, and is not restarted."""
    child = Child(
        "stubborn",
        ["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done"],
        {"PATH": "/usr/bin:/bin"},
        tmp_path / "stubborn.log",
        echo=False,
    )
    child.start()
    await _eventually(lambda: "ready" in (tmp_path / "stubborn.log").read_text(errors="replace"))
    pid = child.pid
    assert pid is not None

    started = time.monotonic()
    await child.stop(0.5)

    assert 0.4 < time.monotonic() - started < 3
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert child.restarts == 0 and child.pid is None


def test_children_get_every_setting_but_secrets_travel_as_a_file(tmp_path: Path) -> None:
    """The child environment carries the supervisor's effective settings as WRENCH_*
    variables, keeps the rest of the environment, and never puts a key in a variable."""
    settings = Settings(
        kafka_bootstrap="127.0.0.1:1234",
        database_url="postgresql://postgres@127.0.0.1:5555/wrenchai",
        kafka_session_timeout_ms=6_000,
        encryption_keys=SecretStr("secret-key"),
    )
    key_file, url_file = tmp_path / "encryption.key", tmp_path / "database_url"
    inherited = {"PATH": "/bin", "WRENCH_ENCRYPTION_KEYS": "old", "WRENCH_API_PORT": "1"}
    files = {"encryption_keys": key_file, "database_url": url_file}

    env = child_environment(settings, inherited, files)

    assert env["PATH"] == "/bin"
    assert env["WRENCH_KAFKA_BOOTSTRAP"] == "127.0.0.1:1234"
    assert env["WRENCH_DATABASE_URL_FILE"] == str(url_file)
    assert env["WRENCH_KAFKA_SESSION_TIMEOUT_MS"] == "6000"
    assert env["WRENCH_API_PORT"] == str(settings.api_port)
    assert env["WRENCH_ENCRYPTION_KEYS_FILE"] == str(key_file)
    assert "WRENCH_ENCRYPTION_KEYS" not in env
    assert "secret-key" not in env.values()
