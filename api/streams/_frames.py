"""What a stream sends, before it is written as a WebSocket message or a server-sent event."""

from __future__ import annotations

from dataclasses import dataclass

import orjson


@dataclass(frozen=True)
class EventFrame:
    """One event: its position and the message text ``{"position", "event"}``."""

    position: str
    message: str
    type: str


@dataclass(frozen=True)
class LiveFrame:
    """The catch-up from the archive is over: what follows is live."""


@dataclass(frozen=True)
class EndFrame:
    """The task has ended with ``status``; nothing follows."""

    status: str


Frame = EventFrame | LiveFrame | EndFrame


def control(kind: str, **fields: object) -> str:
    """A control message's text: ``{"type": kind, ...}``."""
    return orjson.dumps({"type": kind, **fields}).decode()


def error_message(code: str, message: str, **details: object) -> str:
    """An error message's text, in the API's error shape."""
    return control("error", error={"code": code, "message": message, "details": details})
