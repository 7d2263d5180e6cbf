"""A small MCP server for the tests: ``python -m tests.processors.tools.mcp.server``.

Over stdio by default; ``--http PORT`` serves streamable HTTP at ``/mcp`` with uvicorn
instead, and ``--token T`` then refuses every request without ``Authorization: Bearer T``.
``--pid-file F`` writes the server's process id to F when it starts; ``--refuse-if F``
makes it exit at once, before answering anything, while F exists (a server that cannot
start).

Tools:

- ``add(a, b)``: the sum, as structured content;
- ``echo(text)``: the text back;
- ``slow(seconds)``: sleeps, then says how long. Before sleeping it writes its process id
  to the file named by ``MCP_TEST_PID_FILE`` (when set), so a test can kill the server
  mid-call;
- ``fail(text)``: always answers with ``isError`` and the text.

Every call appends the tool's name to the file named by ``MCP_TEST_CALL_LOG`` (when set),
so a test can tell whether a call reached the server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

NAME = "wrench-test"
VERSION = "1.2.0"

server: MCPServer[Any] = MCPServer(NAME, version=VERSION, log_level="WARNING")


def _called(tool: str) -> None:
    log = os.environ.get("MCP_TEST_CALL_LOG")
    if log:
        with open(log, "a") as out:
            out.write(f"{tool}\n")


def _write_pid(path: Path) -> None:
    # Whole or not at all: a test polls the file and kills the process id it reads.
    partial = path.with_name(path.name + ".partial")
    partial.write_text(str(os.getpid()))
    os.replace(partial, path)


@server.tool(description="The sum of two integers.")
def add(a: int, b: int) -> int:
    _called("add")
    return a + b


@server.tool(description="The text, as given.")
def echo(text: str) -> str:
    _called("echo")
    return text


@server.tool(description="Sleeps for a number of seconds, then says so.")
async def slow(seconds: float) -> str:
    _called("slow")
    pid_file = os.environ.get("MCP_TEST_PID_FILE")
    if pid_file:
        _write_pid(Path(pid_file))
    await asyncio.sleep(seconds)
    return f"slept {seconds} s"


@server.tool(description="Always fails, with the text as its error.")
def fail(text: str) -> str:
    _called("fail")
    raise ToolError(text)


def _http_app(token: str | None) -> Any:
    from starlette.responses import JSONResponse
    from starlette.types import ASGIApp, Receive, Scope, Send

    app = server.streamable_http_app()
    if token is None:
        return app
    expected = f"Bearer {token}".encode()

    def guarded(inner: ASGIApp) -> ASGIApp:
        async def guard(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != expected:
                await JSONResponse({"error": "unauthorized"}, status_code=401)(scope, receive, send)
                return
            await inner(scope, receive, send)

        return guard

    return guarded(app)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", type=int, help="serve streamable HTTP on this port")
    parser.add_argument("--token", help="with --http: the bearer token every request needs")
    parser.add_argument("--pid-file", type=Path, help="write the process id here at start")
    parser.add_argument("--refuse-if", type=Path, help="exit at once while this file exists")
    args = parser.parse_args()
    if args.refuse_if is not None and args.refuse_if.exists():
        raise SystemExit(f"refusing to start: {args.refuse_if} exists")
    if args.pid_file is not None:
        _write_pid(args.pid_file)
    if args.http is None:
        server.run("stdio")
        return
    import uvicorn

    uvicorn.run(_http_app(args.token), host="127.0.0.1", port=args.http, log_level="warning")


if __name__ == "__main__":
    main()
