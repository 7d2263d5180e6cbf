"""The MCP server's one way into WrenchAI: its public HTTP API, with the caller's credential.

Every tool and resource is a call of :class:`WrenchApi`, so tenant isolation, scopes, rate
limits, validation, errors and read-your-writes are exactly the API's. An answer that is not a
success becomes :class:`ApiCallError` carrying the API's own ``code``, ``message`` and
``details``; a transport failure becomes one too (``API_UNREACHABLE``), so no httpx error
leaves this module.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from wrenchai.errors import WrenchError

STREAM_TIMEOUT = httpx.Timeout(30.0, read=None)
"""A task's stream is quiet between events (the API pings every 15 s): no read timeout."""


class ApiCallError(WrenchError):
    """The API refused a call, or could not be reached. ``code``, ``message`` and ``details``
    are the API's error body (``API_UNREACHABLE`` when there was no answer); ``status`` is the
    HTTP status, None without an answer."""

    def __init__(
        self, status: int | None, code: str, message: str, details: Mapping[str, Any]
    ) -> None:
        super().__init__(message)
        self.details = dict(details)
        self.status = status
        self.code = code

    def body(self) -> dict[str, Any]:
        """The error in the API's shape: ``{"error": {"code", "message", "details"}}``."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


@dataclass(frozen=True)
class StreamEvent:
    """One server-sent event of a task's stream: ``event`` (event, live, end, error), its
    ``id`` (the position, on events) and its parsed ``data``."""

    event: str
    id: str | None
    data: Any


@dataclass(frozen=True)
class WrenchApi:
    """The API at ``http``'s base URL, called with ``headers`` (the caller's credential).

    ``extensions`` go with every request (the in-process transport reads the caller's address
    from them; a network transport ignores them)."""

    http: httpx.AsyncClient
    headers: Mapping[str, str]
    extensions: Mapping[str, Any] = field(default_factory=dict)

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> Any:
        """The JSON answer of a successful call; ApiCallError otherwise."""
        try:
            response = await self.http.request(
                method,
                path,
                params=_query(params),
                json=body,
                headers=dict(self.headers),
                extensions=dict(self.extensions),
            )
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        if not response.is_success:
            raise _refusal(response)
        try:
            return response.json()
        except ValueError as exc:
            raise ApiCallError(
                response.status_code,
                "UNEXPECTED_ANSWER",
                f"{method} {path} answered {response.status_code} without a JSON body",
                {},
            ) from exc

    async def me(self) -> dict[str, Any]:
        """Who the credential is: tenant, user, role and scopes (``GET /auth/me``)."""
        answer: dict[str, Any] = await self.call("GET", "/auth/me")
        return answer

    @asynccontextmanager
    async def task_stream(
        self, task_id: uuid.UUID, after: str | None
    ) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        """The task's events after position ``after`` (all when None) as server-sent events,
        until the task ends: ``GET /tasks/{task_id}/stream`` with ``Last-Event-ID``."""
        headers = dict(self.headers)
        if after is not None:
            headers["Last-Event-ID"] = after
        request = self.http.build_request(
            "GET",
            f"/tasks/{task_id}/stream",
            headers={**headers, "Accept": "text/event-stream"},
            timeout=STREAM_TIMEOUT,
            extensions=dict(self.extensions),
        )
        try:
            response = await self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        events = self._events(response)
        try:
            if not response.is_success:
                await response.aread()
                raise _refusal(response)
            yield events
        finally:
            # Shielded: a watch that timed out is cancelled, and the stream must still close.
            with anyio.CancelScope(shield=True):
                await events.aclose()
                await response.aclose()

    async def _events(self, response: httpx.Response) -> AsyncGenerator[StreamEvent, None]:
        try:
            async for event in parse_sse(response.aiter_lines()):
                yield event
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc

    def _unreachable(self, exc: httpx.HTTPError) -> ApiCallError:
        return ApiCallError(
            None,
            "API_UNREACHABLE",
            f"cannot reach the WrenchAI API at {self.http.base_url} "
            f"({exc or type(exc).__name__}); check that it runs (WRENCH_API_URL says where)",
            {},
        )


def _query(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Query parameters without the unset ones; lists are sent comma-separated, as every
    multi-valued filter of the API accepts."""
    if params is None:
        return None
    query: dict[str, Any] = {}
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, list | tuple):
            query[name] = ",".join(str(v) for v in value)
        elif hasattr(value, "isoformat"):
            query[name] = value.isoformat()
        else:
            query[name] = str(value)
    return query


def _refusal(response: httpx.Response) -> ApiCallError:
    """The API's error body as an ApiCallError (an answer without one is named by status)."""
    try:
        error = response.json()["error"]
        return ApiCallError(
            response.status_code,
            str(error["code"]),
            str(error["message"]),
            error.get("details") or {},
        )
    except (ValueError, KeyError, TypeError):
        return ApiCallError(
            response.status_code,
            f"HTTP_{response.status_code}",
            f"the API answered {response.status_code} {response.reason_phrase}",
            {},
        )


async def parse_sse(lines: AsyncIterator[str]) -> AsyncIterator[StreamEvent]:
    """Server-sent events from their text lines (comments, the pings, are skipped)."""
    event, event_id, data = "message", None, list[str]()
    async for line in lines:
        if not line:
            if data:
                text = "\n".join(data)
                try:
                    parsed: Any = json.loads(text)
                except ValueError:
                    parsed = text
                yield StreamEvent(event, event_id, parsed)
            event, event_id, data = "message", None, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "id":
            event_id = value
        elif name == "data":
            data.append(value)
