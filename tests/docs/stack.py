"""`wrenchai dev` started the README's way, in a folder of its own, for the documentation's
commands to run against."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil

from tests.docs.runner import Stack, environment
from wrenchai.embedded import free_port

READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0


@contextmanager
def dev_stack() -> Iterator[Stack]:
    """A running `wrenchai dev --state-dir HOME/.wrenchai` on free ports; stopped, and its
    folder removed, afterwards.

    HOME is outside pytest's temporary root: as root, Postgres runs as another user who must
    traverse every folder above its data. It holds a `.venv` link to this interpreter's
    environment, so the README's `.venv/bin/wrenchai` lines work as they do in a checkout."""
    home = Path(tempfile.mkdtemp(prefix="wrench-docs-"))
    home.chmod(0o755)
    (home / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    stack = Stack(home, free_port(), free_port())
    output = home / "dev.out"
    with open(output, "ab") as out:
        process = subprocess.Popen(
            [str(home / ".venv" / "bin" / "wrenchai"), "dev",
             "--state-dir", str(home / ".wrenchai"),
             "--api-port", str(stack.api_port), "--broker-port", str(stack.broker_port)],
            cwd=home, env=environment(), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait_ready(process, stack, output)
        yield stack
    finally:
        _stop(process)
        shutil.rmtree(home, ignore_errors=True)


def _wait_ready(process: subprocess.Popen[bytes], stack: Stack, output: Path) -> None:
    """Until /health answers 200 and the bootstrap admin's key, as dev wrote it, works."""
    key_file = stack.home / ".wrenchai" / "admin-api-key"
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(base_url=f"http://127.0.0.1:{stack.api_port}", timeout=10.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"wrenchai dev exited early:\n{output.read_text()}")
            try:
                if client.get("/health").status_code == 200 and key_file.exists():
                    key = key_file.read_text().strip()
                    if client.get("/auth/me", headers={"X-API-Key": key}).status_code == 200:
                        return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
    raise AssertionError(f"no ready API in {READY_TIMEOUT_S}s:\n{output.read_text()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as Ctrl-C would stop it; whatever is left after the timeout is killed."""
    try:
        tree = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    for child in tree:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
