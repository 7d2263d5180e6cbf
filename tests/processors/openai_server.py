"""A local HTTP server that speaks the OpenAI chat completions API, with scripted answers.

Real HTTP over loopback (aiohttp.web on a free port), so the LLM client's transport, timeouts
and retries run for real. A test queues the replies it wants with :meth:`answer`,
:meth:`error` and friends; every request the server receives is recorded in ``requests``.
With nothing queued the server answers 500 ``script exhausted``, which a test sees as an
extra request.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from wrenchai.embedded import free_port


@dataclass(frozen=True)
class Reply:
    """One scripted response: a status, a body, headers, and an optional delay before it."""

    status: int = 200
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass(frozen=True)
class Received:
    """What the server saw of one request."""

    model: str
    messages: list[dict[str, Any]]
    headers: dict[str, str]
    body: dict[str, Any]
    received_at: float = 0.0
    """``time.monotonic()`` when the request arrived: the gaps between retries."""

    @property
    def response_format(self) -> str:
        return str(self.body.get("response_format", {}).get("type"))


class OpenAIServer:
    """``async with OpenAIServer() as server``: the API at ``server.base_url``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.requests: list[Received] = []
        self._script: deque[Reply] = deque()
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> OpenAIServer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def reset(self) -> None:
        """Forget the script and the recorded requests (between tests)."""
        self._script.clear()
        self.requests.clear()

    # -- scripting -----------------------------------------------------------------------

    def answer(
        self,
        content: str | BaseModel | dict[str, Any],
        *,
        prompt_tokens: int = 10,
        completion_tokens: int = 5,
        model: str | None = None,
        delay_s: float = 0.0,
        usage: bool = True,
        cached_tokens: int | None = None,
        reasoning_tokens: int | None = None,
    ) -> None:
        """A 200 chat completion whose message content is ``content`` (models become JSON).

        ``model`` is the model the answer claims; by default the one that was asked.
        ``usage=False`` leaves the usage block out, as some local servers do.
        ``cached_tokens`` and ``reasoning_tokens`` add OpenAI's usage details.
        """
        if isinstance(content, BaseModel):
            content = content.model_dump_json()
        elif isinstance(content, dict):
            content = json.dumps(content)
        reported: dict[str, Any] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if cached_tokens is not None:
            reported["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
        if reasoning_tokens is not None:
            reported["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
        body = {"content": content, "model": model, "usage": reported if usage else None}
        self._script.append(Reply(200, json.dumps(body), {"x-scripted": "answer"}, delay_s))

    def error(
        self, status: int, message: str = "scripted error", *, retry_after: str | None = None
    ) -> None:
        """An error response in the OpenAI error shape, with Retry-After if given."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        body = json.dumps({"error": {"message": message, "type": "scripted", "code": status}})
        self._script.append(Reply(status, body, headers))

    def raw(self, status: int, body: str) -> None:
        """A response sent exactly as given (for bodies that are not a chat completion)."""
        self._script.append(Reply(status, body))

    def slow(self, delay_s: float) -> None:
        """An answer that comes only after ``delay_s``: longer than a timeout, it never arrives."""
        self.answer("{}", delay_s=delay_s)

    # -- serving -------------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(
            Received(
                model=str(body.get("model")),
                messages=list(body.get("messages", [])),
                headers=dict(request.headers),
                body=body,
                received_at=time.monotonic(),
            )
        )
        if not self._script:
            return web.json_response({"error": {"message": "script exhausted"}}, status=500)
        reply = self._script.popleft()
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply.headers.get("x-scripted") == "answer":
            return web.json_response(_completion(json.loads(reply.body), str(body.get("model"))))
        return web.Response(
            status=reply.status,
            text=reply.body,
            headers=reply.headers,
            content_type="application/json",
        )


def _completion(scripted: dict[str, Any], asked: str) -> dict[str, Any]:
    """A chat.completion object around the scripted content and usage."""
    completion: dict[str, Any] = {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": 0,
        "model": scripted["model"] or asked,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": scripted["content"]},
                "finish_reason": "stop",
            }
        ],
    }
    if scripted["usage"] is not None:
        completion["usage"] = scripted["usage"]
    return completion
