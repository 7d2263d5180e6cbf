"""Alert handlers: the log line, and webhook delivery to a local HTTP server that verifies
the signature the way a receiver would."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson
import pytest
import structlog
from aiohttp import web

from events import Event
from processors.inspector.alerts import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    AlertLogHandler,
    WebhookConfigError,
    WebhookHandler,
    backoff_s,
    dispatch,
    handlers_from_settings,
)
from tests.events.inspection_samples import acknowledged, cleared, raised
from tests.projections.conftest import submitted
from wrenchai.settings import Settings

SECRET = "whsec-test-0123456789"


@dataclass
class Receiver:
    """A webhook receiver: answers the statuses queued in ``script`` (then 200), optionally
    after a delay, and keeps every verified body."""

    script: list[int] = field(default_factory=list)
    delay_s: float = 0.0
    bodies: list[dict[str, object]] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    requests: int = 0
    bad_signatures: int = 0
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        raw = await request.read()
        expected = "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.headers.get(SIGNATURE_HEADER, ""), expected):
            self.bad_signatures += 1
            return web.Response(status=401)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        status = self.script.pop(0) if self.script else 200
        if status == 200:
            self.bodies.append(orjson.loads(raw))
            self.event_ids.append(request.headers[EVENT_ID_HEADER])
        return web.Response(status=status)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/hook", found.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    found.url = f"http://127.0.0.1:{port}/hook"
    yield found
    await runner.cleanup()


def webhook(url: str, **kwargs: object) -> WebhookHandler:
    options: dict[str, object] = {"backoff_base_s": 0.01, "backoff_max_s": 0.05}
    options.update(kwargs)
    return WebhookHandler(url, SECRET, **options)  # type: ignore[arg-type]


async def wait_until(check: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def alert() -> Event:
    return raised(submitted(), "REPEATED_FAILURES", level="critical")


async def test_a_delivery_is_signed_and_carries_the_event(receiver: Receiver) -> None:
    """The receiver verifies the HMAC of the raw body and gets the envelope and payload
    fields, with the event id in X-Wrench-Event-Id."""
    handler = webhook(receiver.url)
    handler.start()
    event = alert()
    assert handler.submit(event)
    await handler.aclose()
    assert receiver.bad_signatures == 0 and receiver.event_ids == [str(event.id)]
    [body] = receiver.bodies
    assert body["alert_id"] == f"{event.task_id}:REPEATED_FAILURES:1"
    assert (body["type"], body["level"], body["code"]) == (
        "alert.raised",
        "critical",
        "REPEATED_FAILURES",
    )
    assert body["event_id"] == str(event.id) and body["tenant_id"] == event.tenant_id
    assert body["task_id"] == str(event.task_id) and handler.delivered == 1


async def test_a_500_is_retried_then_delivered(receiver: Receiver) -> None:
    """500, 503 and 429 are retried with backoff; the third retry succeeds."""
    receiver.script = [500, 503, 429]
    handler = webhook(receiver.url, retries=3)
    handler.start()
    handler.submit(alert())
    await handler.aclose()
    assert receiver.requests == 4 and len(receiver.bodies) == 1 and handler.delivered == 1


async def test_retries_are_bounded_and_a_4xx_is_final(receiver: Receiver) -> None:
    """Past its retries a delivery is given up; a 400 is not retried at all."""
    receiver.script = [500, 500, 400]
    handler = webhook(receiver.url, retries=1)
    handler.start()
    handler.submit(alert())
    handler.submit(raised(submitted(), "STALLED"))
    await handler.aclose()
    assert receiver.requests == 3 and handler.failed == 2 and handler.delivered == 0


async def test_a_slow_receiver_times_out_and_is_retried(receiver: Receiver) -> None:
    """A receiver slower than the timeout counts as a failure that may pass."""
    receiver.delay_s = 0.5
    handler = webhook(receiver.url, timeout_s=0.1, retries=1)
    handler.start()
    handler.submit(alert())
    await handler.aclose()
    assert receiver.requests == 2 and handler.failed == 1


async def test_an_unreachable_receiver_is_retried_then_given_up() -> None:
    """Connection refused is retried like a 5xx."""
    handler = webhook("http://127.0.0.1:9/hook", retries=2)
    handler.start()
    handler.submit(alert())
    await handler.aclose()
    assert handler.failed == 1


async def test_submit_never_blocks_and_drops_the_oldest(receiver: Receiver) -> None:
    """With a receiver that takes 1 s per request, 50 submits return at once; past the
    queue's size the oldest waiting alerts are dropped; closing waits only its deadline."""
    receiver.delay_s = 1.0
    handler = webhook(receiver.url, queue_size=5, timeout_s=5.0)
    handler.start()
    story = submitted()
    events = [raised(story, "STALLED", n) for n in range(1, 51)]
    began = time.monotonic()
    assert all(handler.submit(e) for e in events)
    assert time.monotonic() - began < 0.1
    assert handler.queue.qsize() <= 5 and handler.dropped >= 44
    began = time.monotonic()
    await handler.aclose(deadline_s=0.3)
    assert time.monotonic() - began < 2.0
    assert handler.dropped + handler.delivered + handler.failed <= 50


async def test_a_repeat_of_a_recent_event_is_not_sent_twice(receiver: Receiver) -> None:
    """The same event handed over twice (a redelivery) is queued once."""
    handler = webhook(receiver.url)
    handler.start()
    event = alert()
    assert handler.submit(event) and not handler.submit(event)
    await wait_until(lambda: handler.delivered == 1)
    await handler.aclose()
    assert len(receiver.bodies) == 1


def test_backoff_grows_to_its_cap_with_jitter() -> None:
    """Half of each wait is fixed, half random, and the cap bounds it."""
    assert [backoff_s(n, 1.0, 5.0, lambda: 0.0) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 2.5]
    assert [backoff_s(n, 1.0, 5.0, lambda: 1.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]


def test_a_webhook_without_a_secret_is_refused() -> None:
    """Unsigned alerts would be forgeable: the settings must name a secret."""
    with pytest.raises(WebhookConfigError, match="WRENCH_ALERT_WEBHOOK_SECRET"):
        WebhookHandler.from_settings(Settings(alert_webhook_url="http://127.0.0.1:1/hook"))
    assert WebhookHandler.from_settings(Settings()) is None
    configured = Settings(
        alert_webhook_url="http://127.0.0.1:1/hook",
        alert_webhook_secret=SECRET,  # type: ignore[arg-type]
        alert_webhook_retries=5,
    )
    handlers = handlers_from_settings(configured)
    assert [type(h).__name__ for h in handlers] == ["AlertLogHandler", "WebhookHandler"]
    assert isinstance(handlers[1], WebhookHandler) and handlers[1].retries == 5


def test_the_log_handler_leaves_out_what_people_wrote() -> None:
    """Raised, cleared and acknowledged each log one line; an acknowledgement's note does
    not appear; events that are not alerts are ignored."""
    first = submitted()
    up = raised(first)
    note = "call the customer at +1 555 0100"
    with structlog.testing.capture_logs() as logs:
        dispatch([AlertLogHandler()], up)
        dispatch([AlertLogHandler()], cleared(up))
        dispatch([AlertLogHandler()], acknowledged(up, note=note))
        dispatch([AlertLogHandler()], first)
    assert [line["event"] for line in logs] == [
        "alert raised",
        "alert cleared",
        "alert acknowledged",
    ]
    assert all(line["alert_id"] == up.payload.alert_id for line in logs)  # type: ignore[attr-defined]
    assert note not in str(logs) and logs[2]["by"] == "bob"


def test_a_failing_handler_does_not_stop_the_others() -> None:
    """dispatch logs a handler's error and goes on to the next handler."""
    seen: list[Event] = []

    class Broken:
        def handle(self, event: Event) -> None:
            raise RuntimeError("boom")

    class Keeps:
        def handle(self, event: Event) -> None:
            seen.append(event)

    up = alert()
    dispatch([Broken(), Keeps()], up)
    assert seen == [up]
