"""Live streams: the hub (one Kafka consumer per API process), task streams that join the
archive to the live tail, WebSocket sessions and stream tickets. See docs/streams.md."""

from __future__ import annotations

import time
from typing import Literal

from api._database import Database
from api.security import Authenticator, CredentialRefused, Principal, TokenService
from api.streams._auth import StreamCredential, Tickets, header_credential, verify
from api.streams._frames import EndFrame, EventFrame, Frame, LiveFrame, control, error_message
from api.streams._hub import (
    Delivery,
    SlowConsumer,
    StreamHub,
    StreamUnavailable,
    Subscription,
    stream_message,
)
from events import Codec
from wrenchai import metrics
from wrenchai.settings import Settings


class TooManyStreams(Exception):
    """The principal holds as many open streams as it may."""


StreamProtocol = Literal["websocket", "sse"]


class Admission:
    """One open stream of a principal, counted until released (once), in the principal's
    limit and in wrench_stream_connections."""

    def __init__(self, streams: Streams, subject: str, protocol: StreamProtocol) -> None:
        self._streams: Streams | None = streams
        self.subject = subject
        self.protocol: StreamProtocol = protocol
        metrics.stream_opened(protocol)

    def release(self) -> None:
        """Stop counting this stream."""
        if self._streams is not None:
            self._streams._release(self.subject)
            self._streams = None
            metrics.stream_closed(self.protocol)

    def __enter__(self) -> Admission:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Streams:
    """An API process's streams: the hub, the tickets and how many each principal holds."""

    def __init__(
        self, settings: Settings, database: Database, codec: Codec, tokens: TokenService
    ) -> None:
        self.settings = settings
        self.hub = StreamHub(settings, database, codec)
        self.tickets = Tickets(settings, tokens, database)
        self.open: dict[str, int] = {}
        self._checked: dict[str, tuple[float, Principal | CredentialRefused]] = {}

    async def recheck(
        self, authenticator: Authenticator, credential: StreamCredential
    ) -> Principal:
        """``credential``'s principal now, checked at most once per recheck interval however
        many streams hold it (a thousand sockets of one key cost one check, not a thousand);
        CredentialRefused when it is no longer valid."""
        now = time.monotonic()
        seen = self._checked.get(credential.token)
        if seen is None or now - seen[0] >= self.settings.ws_recheck_interval_s:
            try:
                outcome: Principal | CredentialRefused = await verify(authenticator, credential)
            except CredentialRefused as exc:
                outcome = exc
            if len(self._checked) > 10_000:
                self._checked.clear()  # tokens of closed streams; cheap to check again
            seen = self._checked[credential.token] = (now, outcome)
        if isinstance(seen[1], CredentialRefused):
            raise seen[1]
        return seen[1]

    def admit(self, subject: str, protocol: StreamProtocol = "websocket") -> Admission:
        """Count one more open stream of ``subject`` until the admission is released;
        TooManyStreams past the limit."""
        if self.full(subject):
            raise TooManyStreams(subject)
        self.open[subject] = self.open.get(subject, 0) + 1
        return Admission(self, subject, protocol)

    def full(self, subject: str) -> bool:
        """Whether ``subject`` holds as many open streams as it may."""
        return self.open.get(subject, 0) >= self.settings.ws_max_sockets_per_principal

    def _release(self, subject: str) -> None:
        self.open[subject] -= 1
        if not self.open[subject]:
            del self.open[subject]

    async def close(self) -> None:
        """Stop the hub."""
        await self.hub.close()


__all__ = [
    "Admission",
    "Delivery",
    "EndFrame",
    "EventFrame",
    "Frame",
    "LiveFrame",
    "SlowConsumer",
    "StreamCredential",
    "StreamHub",
    "StreamUnavailable",
    "Streams",
    "Subscription",
    "Tickets",
    "TooManyStreams",
    "control",
    "error_message",
    "header_credential",
    "stream_message",
    "verify",
]
