"""An httpx transport that serves requests with an ASGI app in this process and streams the
app's response body as the app sends it.

httpx's own ``ASGITransport`` collects the whole body before it answers, so a stream that
ends only when the task ends (``GET /tasks/{task_id}/stream``) would never answer through it.
Here the app runs in a task of its own: the response is returned at ``http.response.start``,
its body is read from a small queue (the app waits when the reader falls behind, as on a
socket), and closing the response tells the app the client went away (``http.disconnect``)
and cancels it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx
from starlette.types import ASGIApp, Message

CLIENT_EXTENSION = "wrenchai.client"
"""A request extension naming the ``(host, port)`` the app should see as the client."""
BODY_QUEUE = 16
"""Body chunks the app may send ahead of the reader before it waits."""

_END = object()


class AppTransport(httpx.AsyncBaseTransport):
    """Requests to ``app``, answered as soon as it starts its response."""

    def __init__(self, app: ASGIApp, client: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        self.app = app
        self.client = client

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        scope: MutableMapping[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": request.url.scheme,
            "path": request.url.path,
            "raw_path": request.url.raw_path.split(b"?")[0],
            "query_string": request.url.query,
            "root_path": "",
            "headers": [(name.lower(), value) for name, value in request.headers.raw],
            "client": request.extensions.get(CLIENT_EXTENSION) or self.client,
            "server": (request.url.host, request.url.port),
            "state": {},
        }
        exchange = _Exchange(body)
        task = asyncio.create_task(exchange.run(self.app, scope))
        start = await exchange.messages.get()
        if start is _END:
            raise httpx.RemoteProtocolError(
                f"{request.method} {request.url.path} ended without a response", request=request
            )
        assert isinstance(start, dict) and start["type"] == "http.response.start"
        return httpx.Response(
            start["status"],
            headers=start.get("headers", []),
            stream=_Body(exchange, task, request),
            request=request,
        )


class _Exchange:
    """One request's ASGI channels: the request body once, then a disconnect when the reader
    closes; what the app sends goes to ``messages``, then ``_END`` when the app returns."""

    def __init__(self, body: bytes) -> None:
        self.body: bytes | None = body
        self.messages: asyncio.Queue[object] = asyncio.Queue(BODY_QUEUE)
        self.closed = asyncio.Event()

    async def receive(self) -> Message:
        if self.body is not None:
            body, self.body = self.body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self.closed.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.closed.is_set():
            return  # the reader left: what the app still sends goes nowhere, as on a socket
        if message["type"] in ("http.response.start", "http.response.body"):
            await self.messages.put(message)

    async def run(self, app: ASGIApp, scope: MutableMapping[str, Any]) -> None:
        try:
            await app(scope, self.receive, self.send)
        finally:
            if not self.closed.is_set():
                await self.messages.put(_END)


class _Body(httpx.AsyncByteStream):
    """The response body as the app sends it; closing it disconnects the app."""

    def __init__(self, exchange: _Exchange, task: asyncio.Task[None], request: httpx.Request):
        self.exchange = exchange
        self.task = task
        self.request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            message = await self.exchange.messages.get()
            if message is _END:
                # An app that returns (or fails) mid-body is a connection dropped mid-body.
                raise httpx.ReadError("the response ended early", request=self.request)
            assert isinstance(message, dict)
            if message.get("body"):
                yield message["body"]
            if not message.get("more_body", False):
                return

    async def aclose(self) -> None:
        self.exchange.closed.set()
        if not self.task.done():
            # Its finally blocks release what it holds (a stream's place, its subscription).
            self.task.cancel()
        self.task.add_done_callback(_retrieve)


def _retrieve(task: asyncio.Task[None]) -> None:
    """Take the app's outcome, so an error after the reader left is not reported as never
    retrieved (it was logged by the app's own middleware)."""
    if not task.cancelled():
        task.exception()
