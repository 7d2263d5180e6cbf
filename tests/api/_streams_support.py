"""Helpers of the stream tests: the app served by a real uvicorn in the test's event loop,
socket clients, and events for a task."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import uvicorn
from websockets.asyncio.client import ClientConnection, connect

from api.app import create_app
from events import (
    Actor,
    Event,
    EventProducer,
    TaskCompleted,
    TaskSubmitted,
    ThoughtRecorded,
)
from wrenchai.embedded import free_port
from wrenchai.settings import Settings

USER = Actor(kind="user", id="streams-test")
AGENT = Actor(kind="agent", id="journey-agent")


@asynccontextmanager
async def live_api(settings: Settings) -> AsyncIterator[str]:
    """The API served by uvicorn on a free port in this event loop; yields its base URL
    (http://...)."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        # As `wrenchai api` runs it: uvicorn leaves the process's logging alone (its own
        # config would give its loggers handlers of their own for the rest of the session).
        log_config=None,
        ws="websockets-sansio",
        ws_per_message_deflate=settings.ws_compression,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the API did not start"
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


def ws_url(base: str, path: str) -> str:
    """The ws:// address of ``path`` on the API at ``base``."""
    return base.replace("http://", "ws://", 1) + path


@asynccontextmanager
async def socket(
    base: str, path: str, api_key: str | None = None, **options: Any
) -> AsyncIterator[ClientConnection]:
    """A WebSocket to ``path``, sending ``api_key`` as X-API-Key when given."""
    headers = {"X-API-Key": api_key} if api_key else {}
    # A client that stops reading (a test that has what it wanted) does not wait 10 s for
    # the server's close frame queued behind the events it did not read.
    options.setdefault("close_timeout", 1)
    async with connect(ws_url(base, path), additional_headers=headers, **options) as ws:
        yield ws


async def receive(ws: ClientConnection, timeout_s: float = 20.0) -> dict[str, Any]:
    """The next message, parsed."""
    message: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), timeout_s))
    return message


async def until_end(ws: ClientConnection, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """Every message until the server closes the socket."""
    messages: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async for text in ws:
        messages.append(orjson.loads(text))
        assert loop.time() < deadline, "the stream did not end in time"
    return messages


def positions(messages: list[dict[str, Any]]) -> list[str]:
    """The positions of the event messages among ``messages``, in order."""
    return [m["position"] for m in messages if "position" in m]


def submitted(task_id: uuid.UUID, tenant_id: str = "default") -> Event:
    """A task.submitted of ``task_id``."""
    return Event.new(
        TaskSubmitted(description="stream me", timeout=600),
        tenant_id=tenant_id,
        actor=USER,
        task_id=task_id,
    )


def thought(task_id: uuid.UUID, number: int, tenant_id: str = "default", padding: int = 0) -> Event:
    """A thought of ``task_id`` (its text is sensitive: encrypted on the log), ``padding``
    random characters longer than a short one (random, so compression cannot shrink it)."""
    text = f"thought {number}" + secrets.token_hex(padding // 2)
    return Event.new(
        ThoughtRecorded(operation="plan", number=number, text=text),
        tenant_id=tenant_id,
        actor=AGENT,
        task_id=task_id,
    )


def completed(task_id: uuid.UUID, tenant_id: str = "default") -> Event:
    """The task.completed that ends ``task_id``."""
    return Event.new(
        TaskCompleted(output={"answer": 42}, summary="done"),
        tenant_id=tenant_id,
        actor=AGENT,
        task_id=task_id,
    )


async def publish_thoughts(
    producer: EventProducer,
    task_id: uuid.UUID,
    first: int,
    count: int,
    batch: int = 50,
    padding: int = 0,
    pause_s: float = 0.0,
) -> None:
    """Publish ``count`` thoughts numbered from ``first``, ``batch`` at a time, ``pause_s``
    apart."""
    for start in range(first, first + count, batch):
        end = min(start + batch, first + count)
        await producer.publish_many(
            [thought(task_id, n, padding=padding) for n in range(start, end)]
        )
        await asyncio.sleep(pause_s)
