"""What a tool answers: the API's JSON as structured content and as text, or the API's error
body as a tool error; and the writes each caller made, for reading them back."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import OrderedDict
from typing import Any

from mcp_types import CallToolResult, TextContent

from api.mcp._client import ApiCallError, WrenchApi

REMEMBERED_WRITES = 10_000
CREDENTIAL_HEADERS = ("x-api-key", "authorization")


def answer(value: dict[str, Any], text: str | None = None) -> CallToolResult:
    """A tool's success: ``value`` as structured content, and as JSON text for the model
    (after ``text`` when given)."""
    dumped = json.dumps(value, separators=(",", ":"))
    return CallToolResult(
        content=[TextContent(type="text", text=f"{text}\n{dumped}" if text else dumped)],
        structured_content=value,
    )


def refusal(error: ApiCallError) -> CallToolResult:
    """A tool error (``isError``) carrying the API's error body: its code, message, details."""
    body = error.body()
    return CallToolResult(
        content=[TextContent(type="text", text=json.dumps(body, separators=(",", ":")))],
        structured_content=body,
        is_error=True,
    )


def invalid(field: str, message: str) -> ApiCallError:
    """A VALIDATION_ERROR as the API words one, for ``field``."""
    return ApiCallError(
        422,
        "VALIDATION_ERROR",
        "the request is invalid",
        {"errors": [{"field": field, "message": message}]},
    )


class Writes:
    """The position of the latest write each caller made through this server, per task and
    overall, so a read that follows it waits for it (read-your-writes) without being told.

    Keyed by a digest of the caller's credential; bounded, oldest forgotten first. A position
    is no secret (it only says how long to wait), so a wrong guess costs a wait at most."""

    def __init__(self, size: int = REMEMBERED_WRITES) -> None:
        self.size = size
        self._positions: OrderedDict[tuple[str, str], str] = OrderedDict()

    def remember(self, api: WrenchApi, task_id: str, position: str) -> None:
        for key in ((caller(api), task_id), (caller(api), "")):
            self._positions[key] = position
            self._positions.move_to_end(key)
        while len(self._positions) > self.size:
            self._positions.popitem(last=False)

    def of_task(self, api: WrenchApi, task_id: uuid.UUID) -> str | None:
        """The caller's latest write to ``task_id``, if it made one."""
        return self._positions.get((caller(api), str(task_id)))

    def latest(self, api: WrenchApi) -> str | None:
        """The caller's latest write to any task."""
        return self._positions.get((caller(api), ""))


def caller(api: WrenchApi) -> str:
    """A digest of the credential the client sends: who the caller is, without the secret."""
    sent = {name.lower(): value for name, value in api.headers.items()}
    credential = "\n".join(f"{name}:{sent.get(name, '')}" for name in CREDENTIAL_HEADERS)
    return hashlib.sha256(credential.encode()).hexdigest()
