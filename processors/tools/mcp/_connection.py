"""One MCP server's connection: opened on first use, kept open, opened again after it drops.

The SDK's client is an async context manager whose task groups belong to the task that
enters it, so each connection is held open by a task of its own (:meth:`McpConnection._hold`)
and requests from any task go through its session. A request races that task, and the
transport's read side is watched: whatever ends the connection (the server's process died,
the HTTP server went away) ends a request in flight at once with :class:`McpUnavailable`,
and the next request opens a new connection, which for a stdio server starts its command
again.

The connection speaks the handshake era of the protocol (``initialize``), which every MCP
server answers and which keeps ``ping``, the health probe.

Errors leave as :class:`~processors.tools.builtin.ToolError`: a server that cannot be reached
or dropped the connection is :class:`McpUnavailable` (transient), a request that ran out of
time :class:`~processors.tools.builtin.ToolTimeout` (transient), a request the server refused
:class:`~processors.tools.builtin.ToolFailed`.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio
import httpx2
import mcp_types as types
import structlog
from mcp import Client
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import (
    MCP_DEFAULT_SSE_READ_TIMEOUT,
    MCP_DEFAULT_TIMEOUT,
    create_mcp_http_client,
)
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from mcp_types import CONNECTION_CLOSED, INVALID_REQUEST, REQUEST_TIMEOUT
from pydantic import ValidationError

from processors.tools.builtin import (
    ToolError,
    ToolFailed,
    ToolHealth,
    ToolOutputInvalid,
    ToolTimeout,
)
from wrenchai.settings import McpServerConfig

log = structlog.get_logger(__name__)

T = TypeVar("T")

CLOSE_TIMEOUT_S = 10.0
"""Longest closing a connection may take (a stdio server gets its stdin closed, then
SIGTERM, then SIGKILL: about 6 s at worst)."""
ANSWER_GRACE_S = 0.05
"""How long a request whose connection ended still waits for an answer already on its way."""
HEALTH_REUSE_S = 2.0
"""A ping this recent answers for every tool of the server, so probing ten tools pings once."""


class McpUnavailable(ToolError):
    """The MCP server could not be reached, or the connection dropped during the request.
    Transient: the next call connects again (for a stdio server, its command starts again)."""

    code = "MCP_UNAVAILABLE"
    transient = True


def _client_info() -> types.Implementation:
    try:
        version = importlib.metadata.version("wrenchai")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        version = "0.0.0"
    return types.Implementation(name="wrenchai", version=version)


def root_cause(exc: BaseException) -> BaseException:
    """The first error inside exception groups (the SDK's task groups wrap what failed)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _reason(exc: BaseException) -> str:
    cause = root_cause(exc)
    text = str(cause) or type(cause).__name__
    if isinstance(cause, MCPError) and cause.code == INVALID_REQUEST:
        return f"{text} (the server refused the request)"
    return text if len(text) < 500 else text[:500] + "…"


class _WatchedRead:
    """The transport's read stream, noting in ``ended`` when it ends: the server went away
    (its process exited, its HTTP stream broke), so the session can take no more requests."""

    def __init__(self, inner: Any, ended: asyncio.Event) -> None:
        self._inner, self._ended = inner, ended

    @property
    def last_context(self) -> Any:
        # The dispatcher runs each message in the sender's context when the stream keeps one.
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> SessionMessage | Exception:
        try:
            item: SessionMessage | Exception = await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self._ended.set()
            raise
        return item

    def __aiter__(self) -> _WatchedRead:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        self._ended.set()
        await self._inner.aclose()

    async def __aenter__(self) -> _WatchedRead:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


@dataclass
class _Open:
    """A connection held open by ``holder`` until ``stop`` is set."""

    client: Client
    holder: asyncio.Task[None]
    stop: asyncio.Event
    ended: asyncio.Event

    @property
    def alive(self) -> bool:
        return not self.holder.done() and not self.ended.is_set()


class McpConnection:
    """The connection to one configured server. ``server_info`` is what the server said it is
    (name and version) when it was last reached."""

    def __init__(self, config: McpServerConfig, *, connect_timeout_s: float = 10.0) -> None:
        self.config = config
        self.connect_timeout_s = connect_timeout_s
        self.server_info: types.Implementation | None = None
        self._open: _Open | None = None
        self._lock = asyncio.Lock()
        self._health: ToolHealth | None = None
        self._health_at = float("-inf")
        self._probe_lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self.config.name

    def where(self) -> str:
        """The command or the URL, for messages (no arguments, no query: they may hold
        secrets)."""
        if self.config.command is not None:
            return f"stdio `{Path(self.config.command).name}`"
        parts = urlsplit(self.config.url or "")
        return (
            f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"
        )

    # -- requests ------------------------------------------------------------------------
    async def list_tools(self) -> list[types.Tool]:
        """Every tool the server lists, all pages."""

        async def listing(session: ClientSession) -> list[types.Tool]:
            found: list[types.Tool] = []
            cursor: str | None = None
            for _ in range(100):  # a server that pages forever must not hold a worker
                page = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor))
                found.extend(page.tools)
                cursor = page.next_cursor
                if cursor is None:
                    break
            return found

        return await self._request("tools/list", listing, self.connect_timeout_s)

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        """The server's answer to ``tools/call``, an ``isError`` answer included."""

        async def call(session: ClientSession) -> types.CallToolResult:
            return await session.call_tool(
                name, arguments, read_timeout_seconds=self.config.timeout_s
            )

        return await self._request(f"the call of {name}", call, None)

    async def health(self) -> ToolHealth:
        """Whether the server answers a ping (connecting first when it must); a ping of the
        last few seconds is reused."""
        async with self._probe_lock:
            if self._health is not None and time.monotonic() - self._health_at < HEALTH_REUSE_S:
                return self._health
            started = time.monotonic()
            try:
                await self._request("ping", lambda s: s.send_ping(), self.connect_timeout_s)
            except ToolError as exc:
                health = ToolHealth(ok=False, detail=exc.message)
            else:
                ms = (time.monotonic() - started) * 1000
                health = ToolHealth(
                    ok=True, detail=f"{self.describe()} answered a ping in {ms:.0f} ms"
                )
            self._health, self._health_at = health, time.monotonic()
            return health

    def describe(self) -> str:
        """``wrench-test 1.2.0 over stdio `python```: the server as it named itself."""
        info = self.server_info
        named = f"{info.name} {info.version}" if info is not None else f"MCP server {self.name}"
        return f"{named} over {self.where()}"

    async def _request(
        self,
        what: str,
        send: Callable[[ClientSession], Awaitable[T]],
        timeout_s: float | None,
    ) -> T:
        """``send`` over the open connection, its failures mapped to ToolErrors. A request
        an HTTP server refuses for not knowing the session (it restarted and forgot it, so it
        never ran the request) is sent once more on a new connection."""
        for attempt in (1, 2):
            opened = await self._connected()
            try:
                return await self._race(opened, send, timeout_s)
            except MCPError as exc:
                forgotten = _session_forgotten(exc)
                if forgotten or exc.code == CONNECTION_CLOSED:
                    await self._drop(opened)
                    if forgotten and attempt == 1:
                        continue
                    raise McpUnavailable(
                        f"MCP server {self.name} ({self.where()}) closed the connection during "
                        f"{what}: {exc.message}",
                        server=self.name,
                    ) from None
                if exc.code == REQUEST_TIMEOUT:
                    raise self._timeout(what, timeout_s) from None
                raise ToolFailed(
                    f"MCP server {self.name} refused {what}: {exc.message} (code {exc.code})",
                    server=self.name,
                    mcp_code=exc.code,
                ) from None
            except TimeoutError:
                raise self._timeout(what, timeout_s) from None
            except _Ended as exc:
                await self._drop(opened)
                raise McpUnavailable(
                    f"the connection to MCP server {self.name} ({self.where()}) ended during "
                    f"{what}: {exc}",
                    server=self.name,
                ) from None
            except ValidationError as exc:
                raise ToolFailed(
                    f"MCP server {self.name} answered {what} with something that is not MCP: "
                    f"{exc.errors()[0]['msg']}",
                    server=self.name,
                ) from None
            except RuntimeError as exc:
                # The SDK checks structured content against the tool's own output schema.
                raise ToolOutputInvalid(
                    f"MCP server {self.name} answered {what} against its own output schema: {exc}",
                    server=self.name,
                ) from None
            except (OSError, httpx2.HTTPError, anyio.BrokenResourceError) as exc:
                await self._drop(opened)
                raise McpUnavailable(
                    f"MCP server {self.name} ({self.where()}) failed during {what}: {_reason(exc)}",
                    server=self.name,
                ) from None
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _timeout(self, what: str, timeout_s: float | None) -> ToolTimeout:
        limit = timeout_s if timeout_s is not None else self.config.timeout_s
        return ToolTimeout(
            f"MCP server {self.name} did not answer {what} within {limit} s", server=self.name
        )

    async def _race(
        self, opened: _Open, send: Callable[[ClientSession], Awaitable[T]], timeout_s: float | None
    ) -> T:
        """``send``'s answer, or _Ended as soon as the connection ends."""
        request = asyncio.ensure_future(send(opened.client.session))
        ended = asyncio.ensure_future(opened.ended.wait())
        try:
            async with asyncio.timeout(timeout_s):
                watched: set[asyncio.Future[Any]] = {request, ended, opened.holder}
                await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                if not request.done():
                    # The transport ended: an answer already on its way may still land.
                    await asyncio.wait({request}, timeout=ANSWER_GRACE_S)
        finally:
            ended.cancel()
            if not request.done():
                request.cancel()
                await asyncio.gather(request, return_exceptions=True)
        if request.cancelled():
            raise _Ended(self._ending(opened))
        return request.result()

    def _ending(self, opened: _Open) -> str:
        if opened.holder.done() and not opened.holder.cancelled():
            error = opened.holder.exception()
            if error is not None:
                return _reason(error)
        return "the server went away" if self.config.url else "the server's process exited"

    # -- the connection ------------------------------------------------------------------
    async def _connected(self) -> _Open:
        """The open connection, opened (again) when there is none or it ended."""
        async with self._lock:
            if self._open is not None and not self._open.alive:
                await self._drop(self._open)
            if self._open is None:
                self._open = await self._connect()
            return self._open

    async def _connect(self) -> _Open:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        stop, ended = asyncio.Event(), asyncio.Event()
        client = Client(
            self._transport(ended),
            mode="legacy",
            client_info=_client_info(),
            cache=None,
        )
        holder = asyncio.create_task(self._hold(client, ready, stop), name=f"mcp:{self.name}")
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                await asyncio.shield(ready)
        except BaseException as exc:
            stop.set()
            holder.cancel()
            await asyncio.gather(holder, return_exceptions=True)
            if ready.done() and not ready.cancelled():
                ready.exception()  # read, so asyncio does not report it as never retrieved
            if isinstance(exc, TimeoutError):
                raise McpUnavailable(
                    f"MCP server {self.name} ({self.where()}) did not complete its handshake "
                    f"within {self.connect_timeout_s} s (WRENCH_MCP_CONNECT_TIMEOUT_S)",
                    server=self.name,
                ) from None
            if isinstance(exc, Exception):
                raise McpUnavailable(
                    f"cannot connect to MCP server {self.name} ({self.where()}): {_reason(exc)}",
                    server=self.name,
                ) from None
            raise
        self.server_info = client.server_info
        log.info(
            "MCP server connected",
            server=self.name,
            transport=self.config.transport,
            version=None if self.server_info is None else self.server_info.version,
        )
        return _Open(client, holder, stop, ended)

    async def _hold(self, client: Client, ready: asyncio.Future[None], stop: asyncio.Event) -> None:
        try:
            async with client:
                ready.set_result(None)
                await stop.wait()
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
            else:
                log.warning("MCP connection ended", server=self.name, reason=_reason(exc))

    def _transport(self, ended: asyncio.Event) -> Any:
        """The transport, its read side watched (``ended``)."""
        config = self.config

        @asynccontextmanager
        async def watched() -> AsyncIterator[tuple[_WatchedRead, Any]]:
            if config.command is not None:
                params = StdioServerParameters(
                    command=config.command,
                    args=list(config.args),
                    env=config.resolved_env() or None,
                    cwd=config.cwd,
                )
                async with stdio_client(params) as (read, write):
                    yield _WatchedRead(read, ended), write
                return
            assert config.url is not None
            timeout = httpx2.Timeout(
                MCP_DEFAULT_TIMEOUT,
                connect=self.connect_timeout_s,
                read=MCP_DEFAULT_SSE_READ_TIMEOUT,
            )
            headers = config.resolved_headers() or None
            async with create_mcp_http_client(headers=headers, timeout=timeout) as http:
                async with streamable_http_client(config.url, http_client=http) as (read, write):
                    yield _WatchedRead(read, ended), write

        return watched()

    async def _drop(self, opened: _Open) -> None:
        """Close ``opened`` (a stdio server's process is stopped) and forget it."""
        if self._open is opened:
            self._open = None
        opened.stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(opened.holder), CLOSE_TIMEOUT_S)
        except TimeoutError:
            opened.holder.cancel()
            with suppress(asyncio.CancelledError):
                await opened.holder

    async def aclose(self) -> None:
        """Close the connection, if one is open."""
        async with self._lock:
            if self._open is not None:
                await self._drop(self._open)


def _session_forgotten(exc: MCPError) -> bool:
    """Whether an HTTP server answered that it does not know the session (it restarted):
    "Session terminated" (a 404 without a body) or its own "Session not found"."""
    text = exc.message.lower()
    return (
        exc.code == INVALID_REQUEST
        and "session" in text
        and ("terminated" in text or "not found" in text)
    )


class _Ended(Exception):
    """The connection ended while a request waited for its answer."""
