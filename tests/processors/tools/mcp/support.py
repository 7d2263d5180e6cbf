"""The test MCP server (tests/processors/tools/mcp/server.py) as configuration and as a
process: over stdio, a WRENCH_MCP_SERVERS entry whose command the worker starts; over
streamable HTTP, a uvicorn process on a free port that a test starts, stops and starts
again."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from wrenchai.embedded import free_port

REPO = Path(__file__).resolve().parents[4]
MODULE = "tests.processors.tools.mcp.server"
TOKEN = "test-mcp-token"
START_TIMEOUT_S = 30.0


def stdio_server(name: str = "tools", *args: str, **options: Any) -> dict[str, Any]:
    """A WRENCH_MCP_SERVERS entry that starts the test server over stdio with ``args``;
    ``options`` are the entry's other fields (``env`` adds to the environment)."""
    env = {"PYTHONPATH": str(REPO), **options.pop("env", {})}
    return {
        "name": name,
        "command": sys.executable,
        "args": ["-m", MODULE, *args],
        "env": env,
        "offline": True,
        **options,
    }


def http_server(name: str, port: int, token_file: Path, **options: Any) -> dict[str, Any]:
    """A WRENCH_MCP_SERVERS entry for the test server on ``port``, its bearer token read from
    ``token_file``."""
    return {
        "name": name,
        "url": f"http://127.0.0.1:{port}/mcp",
        "headers": {"Authorization": {"file": str(token_file), "prefix": "Bearer "}},
        "offline": True,
        **options,
    }


def servers(*entries: dict[str, Any]) -> str:
    """WRENCH_MCP_SERVERS holding ``entries``."""
    return json.dumps(list(entries))


def calls(log: Path) -> list[str]:
    """The tools called so far, from the server's MCP_TEST_CALL_LOG."""
    return log.read_text().split() if log.exists() else []


def wait_for_file(path: Path, timeout_s: float = START_TIMEOUT_S) -> str:
    """The content of ``path`` once it exists."""
    deadline = time.monotonic() + timeout_s
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)
    return path.read_text()


def kill_pid_in(path: Path) -> int:
    """SIGKILL the process whose id ``path`` holds (once it holds one), and remove the file."""
    pid = int(wait_for_file(path))
    os.kill(pid, signal.SIGKILL)
    path.unlink()
    return pid


class HttpServer:
    """The test server over streamable HTTP on a free port, with a bearer token."""

    def __init__(self, output: Path, *, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.output = output
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self) -> HttpServer:
        """Start it and wait until it accepts connections."""
        env = {**os.environ, "PYTHONPATH": str(REPO), **self.env}
        with open(self.output, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", MODULE, "--http", str(self.port), "--token", TOKEN],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert self.proc.poll() is None, f"the MCP server exited: {self.output.read_text()}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                assert time.monotonic() < deadline, "the MCP server did not start listening"
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL it: connections break mid-call, as when its machine dies."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None
