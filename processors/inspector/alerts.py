"""Alert handlers: what happens when an alert event goes by, besides its read model.

Handlers subscribe to alert.raised, alert.cleared and alert.acknowledged. Each one's
:meth:`~AlertHandler.handle` returns at once, whatever the handler does: a processor never
waits on a log sink or a remote endpoint.

- :class:`AlertLogHandler` writes one structured log line per alert (ids, code, level, the
  generated message; never an acknowledgement's note, which people write).
- :class:`WebhookHandler` POSTs each alert event as JSON to ``WRENCH_ALERT_WEBHOOK_URL``,
  signed with HMAC-SHA256 (``X-Wrench-Signature: sha256=<hex>`` over the raw body, keyed by
  ``WRENCH_ALERT_WEBHOOK_SECRET``) and named by ``X-Wrench-Event-Id`` so the receiver can
  drop repeats: delivery is at least once. A bounded queue drained by a background task
  keeps the caller from waiting; when the queue is full the oldest alert is dropped (and
  logged), since a late alert is worth less than the next one. Failures that may pass
  (connection errors, timeouts, 429 and 5xx) are retried with exponential backoff and
  jitter; any other answer is final.

Handlers see the alerts of live events only: a worker replaying history must not call them,
or every old alert would be delivered again.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import httpx
import orjson
import structlog

from events import AlertAcknowledged, AlertCleared, AlertRaised, Event
from processors.inspector.monitoring import ALERT_TYPES
from wrenchai.errors import ConfigurationError
from wrenchai.settings import Settings

log = structlog.get_logger(__name__)

SIGNATURE_HEADER = "X-Wrench-Signature"
EVENT_ID_HEADER = "X-Wrench-Event-Id"
EVENT_TYPE_HEADER = "X-Wrench-Event-Type"
QUEUE_SIZE = 1_000
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0
CLOSE_DEADLINE_S = 5.0
_RECENT_IDS = 1_024
_RETRY_STATUSES = frozenset({429}) | frozenset(range(500, 600))


class WebhookConfigError(ConfigurationError):
    """The webhook is configured without what it needs (a URL without a secret)."""

    code = "WEBHOOK_CONFIG_ERROR"


class AlertHandler(Protocol):
    """Reacts to an alert event; returns at once."""

    def handle(self, event: Event) -> None: ...


def is_alert(event: Event) -> bool:
    """Whether ``event`` is one the alert handlers subscribe to."""
    return event.type in ALERT_TYPES


def dispatch(handlers: Sequence[AlertHandler], event: Event) -> None:
    """Hand an alert event to every handler; other events are ignored. A handler that
    raises is logged and does not keep the others from the alert."""
    if not is_alert(event):
        return
    for handler in handlers:
        try:
            handler.handle(event)
        except Exception as exc:
            log.error(
                "alert handler failed",
                handler=type(handler).__name__,
                error_type=type(exc).__name__,
                event_id=str(event.id),
            )


class AlertLogHandler:
    """One log line per alert event, with nothing a person wrote in it."""

    def handle(self, event: Event) -> None:
        p = event.payload
        context: dict[str, Any] = {
            "event_id": str(event.id),
            "task_id": str(event.task_id) if event.task_id else None,
            "tenant_id": event.tenant_id,
        }
        if isinstance(p, AlertRaised):
            level = "error" if p.level == "critical" else "warning"
            getattr(log, level)(
                "alert raised",
                alert_id=p.alert_id,
                code=p.code,
                level=p.level,
                message=p.message,
                **context,
            )
        elif isinstance(p, AlertCleared):
            log.info("alert cleared", alert_id=p.alert_id, code=p.code, reason=p.reason, **context)
        elif isinstance(p, AlertAcknowledged):
            # The note is free text from a person: left out.
            log.info("alert acknowledged", alert_id=p.alert_id, by=event.actor.id, **context)


def webhook_body(event: Event) -> bytes:
    """The JSON a webhook receives: the event's envelope fields and its payload's fields."""
    body = {
        "event_id": str(event.id),
        "type": event.type,
        "task_id": str(event.task_id) if event.task_id else None,
        "tenant_id": event.tenant_id,
        "occurred_at": event.occurred_at.isoformat(),
        "actor": event.actor.model_dump(mode="json"),
        **event.payload.model_dump(mode="json"),
    }
    return orjson.dumps(body)


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Wrench-Signature`` value of ``body``: ``sha256=`` and the hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def backoff_s(retry: int, base_s: float, max_s: float, rand: Callable[[], float]) -> float:
    """The wait before retry ``retry`` (from 1): an exponential cap, half of it fixed and
    half random, so many senders spread out and none retries at once."""
    cap = min(max_s, base_s * 2.0 ** (retry - 1))
    return cap / 2 + rand() * cap / 2


class WebhookHandler:
    """Delivers alert events to one URL, signed, in the background. :meth:`start` it in a
    running event loop, :meth:`submit` (or :meth:`handle`) events, :meth:`aclose` at the end."""

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        timeout_s: float = 5.0,
        retries: int = 3,
        queue_size: int = QUEUE_SIZE,
        backoff_base_s: float = BACKOFF_BASE_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        rand: Callable[[], float] = random.random,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not secret:
            raise WebhookConfigError(
                "the alert webhook needs a secret to sign with: set WRENCH_ALERT_WEBHOOK_SECRET "
                "(or WRENCH_ALERT_WEBHOOK_SECRET_FILE) to the key the receiver verifies with"
            )
        self.url = url
        self.secret = secret.encode()
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.rand = rand
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=queue_size)
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._recent: OrderedDict[Any, None] = OrderedDict()
        self._closing = False

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookHandler | None:
        """The configured webhook, or None when ``WRENCH_ALERT_WEBHOOK_URL`` is unset."""
        if settings.alert_webhook_url is None:
            return None
        secret = settings.alert_webhook_secret
        return cls(
            settings.alert_webhook_url,
            secret.get_secret_value() if secret else "",
            timeout_s=settings.alert_webhook_timeout_s,
            retries=settings.alert_webhook_retries,
        )

    def start(self) -> None:
        """Open the HTTP client and start draining the queue."""
        if self._task is not None:
            return
        self._client = httpx.AsyncClient(timeout=self.timeout_s, transport=self._transport)
        self._task = asyncio.create_task(self._drain(), name="alert-webhook")

    def handle(self, event: Event) -> None:
        """:meth:`submit`, as an :class:`AlertHandler`."""
        self.submit(event)

    def submit(self, event: Event) -> bool:
        """Queue ``event`` for delivery without waiting; False when it is not queued (a
        repeat of a recent event, or the handler is closing)."""
        if self._closing or event.id in self._recent:
            return False
        self._recent[event.id] = None
        if len(self._recent) > _RECENT_IDS:
            self._recent.popitem(last=False)
        if self.queue.full():
            oldest = self.queue.get_nowait()
            self.queue.task_done()
            self.dropped += 1
            log.warning(
                "alert webhook queue full: oldest alert dropped",
                dropped_event_id=str(oldest.id),
                queue_size=self.queue.maxsize,
            )
        self.queue.put_nowait(event)
        return True

    async def aclose(self, deadline_s: float = CLOSE_DEADLINE_S) -> None:
        """Stop taking alerts, deliver the queued ones for up to ``deadline_s``, then stop;
        what is left is logged as dropped."""
        self._closing = True
        if self._task is not None:
            try:
                await asyncio.wait_for(self.queue.join(), deadline_s)
            except TimeoutError:
                pass
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        left = self.queue.qsize()
        if left:
            self.dropped += left
            log.warning("alert webhook closed with alerts undelivered", undelivered=left)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _drain(self) -> None:
        while True:
            event = await self.queue.get()
            try:
                await self.deliver(event)
            except Exception as exc:  # a bug must not stop the deliveries after it
                log.error("alert webhook failed", error_type=type(exc).__name__)
            finally:
                self.queue.task_done()

    async def deliver(self, event: Event) -> bool:
        """POST one event, retrying what may pass; True when the receiver took it (2xx)."""
        assert self._client is not None, "start() the handler first"
        body = webhook_body(event)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.secret, body),
            EVENT_ID_HEADER: str(event.id),
            EVENT_TYPE_HEADER: event.type,
        }
        context = {"event_id": str(event.id), "event_type": event.type}
        for attempt in range(self.retries + 1):
            outcome, retry_after = await self._post(body, headers)
            if outcome == "ok":
                self.delivered += 1
                return True
            if outcome == "final" or attempt == self.retries:
                break
            wait = backoff_s(attempt + 1, self.backoff_base_s, self.backoff_max_s, self.rand)
            if retry_after is not None:
                wait = min(max(wait, retry_after), self.backoff_max_s)
            log.info("alert webhook retry", attempt=attempt + 1, wait_s=round(wait, 3), **context)
            await asyncio.sleep(wait)
        self.failed += 1
        log.warning("alert webhook delivery failed", attempts=attempt + 1, **context)
        return False

    async def _post(self, body: bytes, headers: Mapping[str, str]) -> tuple[str, float | None]:
        """("ok" | "retry" | "final", the Retry-After seconds if the receiver gave some)."""
        assert self._client is not None
        try:
            response = await self._client.post(self.url, content=body, headers=dict(headers))
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            log.info("alert webhook unreachable", error_type=type(exc).__name__)
            return "retry", None
        if response.is_success:
            return "ok", None
        if response.status_code in _RETRY_STATUSES:
            return "retry", _retry_after(response)
        log.warning("alert webhook refused", status=response.status_code)
        return "final", None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None


def handlers_from_settings(settings: Settings) -> list[AlertHandler]:
    """The log handler, and the webhook when one is configured (not started yet)."""
    handlers: list[AlertHandler] = [AlertLogHandler()]
    webhook = WebhookHandler.from_settings(settings)
    if webhook is not None:
        handlers.append(webhook)
    return handlers
