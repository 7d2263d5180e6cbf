"""One WebSocket stream from accept to close: authentication, then three tasks side by side:
the sender (frames to messages), the receiver (client messages) and the guard (pings, the
idle timeout, the credential's validity, a queue that overflowed). The first to finish
decides how the socket closes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import structlog
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from api._resources import Resources
from api.deps import record_denial
from api.security import CredentialRefused, Principal
from api.streams._auth import StreamCredential, header_credential, verify
from api.streams._frames import EndFrame, EventFrame, Frame, LiveFrame, control, error_message
from api.streams._hub import SlowConsumer, StreamUnavailable, Subscription

log = structlog.get_logger(__name__)

NORMAL = 1000
GOING_AWAY = 1001
POLICY = 1008
TRY_AGAIN_LATER = 1013
NOT_FOUND = 4404
TOO_MANY = 4429
INVALID = 4400
MAX_REASON_BYTES = 123
CLOSE_TIMEOUT_S = 30.0
"""How long a close frame may wait behind what a slow client has not read yet; after it the
connection is dropped without one."""

_REASONS = {
    "expired_credential": "credential expired",
    "revoked_credential": "credential revoked",
    "invalid_credential": "authentication failed",
}


class Close(Exception):
    """End the socket with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = fit_reason(reason)


def fit_reason(reason: str) -> str:
    """``reason`` cut to the 123 bytes of UTF-8 a close frame holds, never inside a character
    (a longer one makes the close frame invalid, and the socket ends without a close code)."""
    return reason.encode()[:MAX_REASON_BYTES].decode(errors="ignore")


MessageHandler = Callable[[dict[str, Any]], Awaitable[None]]


class StreamSocket:
    """A socket's life: who it acts as, what it has heard and when."""

    def __init__(self, websocket: WebSocket, resources: Resources) -> None:
        self.websocket = websocket
        self.resources = resources
        self.settings = resources.settings
        self.credential: StreamCredential | None = None
        self.principal: Principal | None = None
        self.first: dict[str, Any] | None = None
        self.overflow: asyncio.Event | None = None
        self._send_lock = asyncio.Lock()
        self._loop = asyncio.get_running_loop()
        self.last_activity = self._loop.time()

    def watch_overflow(self, subscription: Subscription) -> None:
        """Close the socket (1013) as soon as ``subscription`` overflows, even while a send
        to the slow client is still waiting."""
        self.overflow = subscription.overflowed

    # -- sending ---------------------------------------------------------------------------
    async def send(self, text: str, *, activity: bool = True) -> None:
        """Send one message (one at a time: pings and events share the socket)."""
        async with self._send_lock:
            await self.websocket.send_text(text)
        if activity:
            self.last_activity = self._loop.time()

    async def close(self, code: int, reason: str) -> None:
        """Close with ``code``, unless the client has gone already."""
        reason = fit_reason(reason)
        log.info("stream closed", code=code, reason=reason, path=self.websocket.url.path)
        if self.websocket.application_state == WebSocketState.DISCONNECTED:
            return
        try:
            await asyncio.wait_for(self.websocket.close(code, reason), CLOSE_TIMEOUT_S)
        except (TimeoutError, RuntimeError, WebSocketDisconnect, OSError):
            pass

    # -- receiving -------------------------------------------------------------------------
    async def receive(self, timeout_s: float | None = None) -> dict[str, Any] | None:
        """The next client message as an object; None when it was not one (the client has
        been told) or when ``timeout_s`` passed."""
        try:
            frame = await asyncio.wait_for(self.websocket.receive(), timeout_s)
        except TimeoutError:
            return None
        except (WebSocketDisconnect, RuntimeError) as exc:
            raise Close(GOING_AWAY, "client went away") from exc
        if frame["type"] == "websocket.disconnect":
            raise Close(GOING_AWAY, "client went away")
        self.last_activity = self._loop.time()
        text = frame.get("text")
        if text is None:  # a binary frame: answered, not fatal
            await self.send(
                error_message("invalid_message", "a message is one JSON object in a text frame")
            )
            return None
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError:
            message = None
        if not isinstance(message, dict):
            await self.send(error_message("invalid_message", "a message is one JSON object"))
            return None
        return message

    # -- authentication --------------------------------------------------------------------
    async def authenticate(self, scope: str, ticket: str | None) -> Principal:
        """The principal the socket acts as, holding ``scope``; Close(1008) otherwise."""
        credential = header_credential(self.websocket)
        try:
            if ticket is not None:
                credential = await self.resources.streams.tickets.redeem(ticket)
            if credential is None:
                credential = await self._first_message_credential()
            principal = await verify(self.resources.authenticator, credential)
        except CredentialRefused as exc:
            kind = credential.kind if credential is not None else "none"
            await record_denial(
                self.websocket,
                self.resources,
                exc.reason,
                kind,
                user_id=exc.user_id,
                key_id=exc.key_id,
            )
            raise Close(POLICY, _REASONS.get(exc.reason, "authentication failed")) from exc
        if not principal.holds(scope):
            await record_denial(
                self.websocket,
                self.resources,
                "missing_scope",
                principal.credential,
                scope=scope,
                user_id=principal.user_id,
                key_id=principal.key_id,
                tenant_id=principal.tenant_id,
            )
            raise Close(POLICY, f"this credential lacks the scope {scope}")
        self.credential, self.principal = credential, principal
        structlog.contextvars.bind_contextvars(
            tenant_id=principal.tenant_id, principal=principal.subject
        )
        return principal

    async def _first_message_credential(self) -> StreamCredential:
        deadline = self._loop.time() + self.settings.ws_auth_timeout_s
        while (left := deadline - self._loop.time()) > 0:
            message = await self.receive(left)
            if message is None:
                continue
            token = message.get("token")
            if message.get("type") == "auth" and isinstance(token, str) and token:
                self.first = message
                return StreamCredential.of(token)
            await self.send(
                error_message(
                    "unauthenticated",
                    'send {"type": "auth", "token": "<JWT or API key>"} first, or '
                    "connect with an Authorization or X-API-Key header or a ?ticket=",
                )
            )
        raise CredentialRefused("invalid_credential")

    async def reauthenticate(self, message: dict[str, Any]) -> None:
        """A fresh credential for the same principal (a renewed access token) replaces the
        one the socket holds, so a long stream outlives one token's lifetime."""
        token = message.get("token")
        if not isinstance(token, str) or not token:
            await self.send(error_message("invalid_message", "auth needs a token"))
            return
        credential = StreamCredential.of(token)
        try:
            principal = await verify(self.resources.authenticator, credential)
        except CredentialRefused as exc:
            await self.send(error_message("unauthenticated", f"credential refused: {exc.reason}"))
            return
        assert self.principal is not None
        if principal.subject != self.principal.subject:
            await self.send(
                error_message("forbidden", "a socket keeps the principal it was opened with")
            )
            return
        self.credential, self.principal = credential, principal
        await self.send(control("authenticated"), activity=False)

    # -- running ---------------------------------------------------------------------------
    async def run(
        self, frames: AsyncIterator[Frame], on_message: MessageHandler | None = None
    ) -> Close:
        """Stream ``frames`` until they end, the client leaves or the guard closes it."""
        tasks = [
            asyncio.create_task(self._sender(frames)),
            asyncio.create_task(self._receiver(on_message)),
            asyncio.create_task(self._guard()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        outcome = next(iter(done)).exception()
        if isinstance(outcome, Close):
            return outcome
        if outcome is not None:
            log.error("stream failed", error_type=type(outcome).__name__, error=str(outcome))
            return Close(1011, "internal error")
        return Close(NORMAL, "stream ended")

    async def _sender(self, frames: AsyncIterator[Frame]) -> None:
        try:
            async for frame in frames:
                if isinstance(frame, EventFrame):
                    await self.send(frame.message)
                elif isinstance(frame, LiveFrame):
                    await self.send(control("live"), activity=False)
                elif isinstance(frame, EndFrame):
                    await self.send(control("end", status=frame.status))
                    raise Close(NORMAL, f"task {frame.status}")
        except SlowConsumer as exc:
            raise Close(TRY_AGAIN_LATER, "client too slow: its queue overflowed") from exc
        except StreamUnavailable as exc:
            raise Close(TRY_AGAIN_LATER, str(exc)) from exc
        except (WebSocketDisconnect, RuntimeError) as exc:
            raise Close(GOING_AWAY, "client went away") from exc
        finally:
            aclose = getattr(frames, "aclose", None)
            if aclose is not None:
                await aclose()
        raise Close(NORMAL, "stream ended")

    async def _receiver(self, on_message: MessageHandler | None) -> None:
        while True:
            message = await self.receive()
            if message is None:
                continue
            kind = message.get("type")
            if kind == "pong":
                continue
            if kind == "ping":
                await self.send(control("pong"), activity=False)
            elif kind == "auth":
                await self.reauthenticate(message)
            elif "action" in message and on_message is not None:
                await on_message(message)
            elif "resume_from" in message:
                await self.send(
                    error_message(
                        "already_started",
                        "resume_from is taken from the query or the first message only; "
                        "reconnect to resume elsewhere",
                    )
                )
            else:
                await self.send(
                    error_message(
                        "invalid_message",
                        "unknown message; the client may send pong, ping, auth"
                        + (" or an action" if on_message else ""),
                        received=sorted(message)[:10],
                    )
                )

    async def _guard(self) -> None:
        settings = self.settings
        tick = min(settings.ws_recheck_interval_s, settings.ws_ping_interval_s)
        next_ping = self._loop.time() + settings.ws_ping_interval_s
        while True:
            if self.overflow is not None:
                try:
                    await asyncio.wait_for(self.overflow.wait(), tick)
                    raise Close(TRY_AGAIN_LATER, "client too slow: its queue overflowed")
                except TimeoutError:
                    pass
            else:
                await asyncio.sleep(tick)
            now = self._loop.time()
            if now - self.last_activity > settings.ws_idle_timeout_s:
                raise Close(GOING_AWAY, "idle timeout")
            assert self.credential is not None
            try:
                self.principal = await self.resources.streams.recheck(
                    self.resources.authenticator, self.credential
                )
            except CredentialRefused as exc:
                raise Close(POLICY, _REASONS.get(exc.reason, "credential refused")) from exc
            if now >= next_ping:
                next_ping = now + settings.ws_ping_interval_s
                await self.send(control("ping"), activity=False)
