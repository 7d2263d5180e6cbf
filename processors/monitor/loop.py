"""The ResourceMonitor's loop: every WRENCH_MONITOR_INTERVAL_S read the figures, decide
with :func:`processors.monitor.core.decide`, publish the alert events on wrench.events
(tenant ``_system``, no task) and hand them to the alert handlers (log line, webhook).

It runs inside the projector process (``wrenchai projector``, see docs/operations.md,
"Resource monitoring"): the projector already folds the heartbeats it reads and has the
database and the broker at hand, and the monitor has no stream of its own to consume.

A check that fails (the database or the broker down) is logged and the next one tries
again: the monitor never stops the projector. State moves on only once the broker has taken
a check's events, so events that could not be published are decided again at the next
check, with the same ids.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import asyncpg
import structlog

from events import AlertCode, Event, EventProducer, codec_from_settings
from processors.inspector.alerts import AlertHandler, WebhookHandler, dispatch
from processors.inspector.alerts import handlers_from_settings as alert_handlers
from processors.monitor.core import (
    Limit,
    MonitorState,
    Reading,
    Window,
    alert_events,
    decide,
    limits_from_settings,
    restore,
)
from processors.monitor.readings import (
    Marks,
    dlq_reading,
    error_readings,
    lag_readings,
    live,
    memory_readings,
    read_alerts,
    read_instances,
)
from wrenchai.settings import Settings

log = structlog.get_logger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ResourceMonitor:
    """Raises and clears the platform's alerts on the thresholds of the settings."""

    def __init__(
        self,
        settings: Settings,
        *,
        producer: EventProducer | None = None,
        handlers: Sequence[AlertHandler] | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.settings = settings
        self.limits: dict[AlertCode, Limit] = limits_from_settings(settings)
        self._own_producer = producer is None
        self.producer = producer or EventProducer(
            settings, codec_from_settings(settings), processor="resource-monitor"
        )
        self.handlers = list(alert_handlers(settings) if handlers is None else handlers)
        self.clock = clock
        self.marks = Marks(settings)
        self.state: MonitorState | None = None
        self.errors: dict[str, Window] = {}
        self.dlq = Window(settings.monitor_window_s)

    async def check(self) -> list[Event]:
        """One check: read, decide, publish, dispatch. The events published."""
        now = self.clock()
        readings: dict[AlertCode, list[Reading]] = {}
        try:
            conn = await asyncpg.connect(self.settings.database_dsn())
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("resource monitor: database unreachable", error=type(exc).__name__)
            return []
        try:
            if self.state is None:
                self.state = restore(await read_alerts(conn))
            instances = live(await read_instances(conn), now)
        finally:
            await conn.close()
        lag = lag_readings(instances, self.settings) + await self.marks.projector_lag()
        readings["CONSUMER_LAG"] = lag
        readings["MEMORY_HIGH"] = memory_readings(instances)
        readings["ERROR_RATE"], self.errors = error_readings(
            instances, self.errors, self.settings.monitor_window_s
        )
        records = await self.marks.dlq_records()
        if records is not None:
            self.dlq = self.dlq.add(now.timestamp(), records)
        readings["DLQ_GROWTH"] = [dlq_reading(self.settings.topic("dlq"), self.dlq, records)]
        state, transitions = decide(self.state, readings, self.limits)
        events = alert_events(transitions, now)
        if events:
            await self.producer.publish_many(events)
        self.state = state
        for event in events:
            dispatch(self.handlers, event)
        return events

    async def run(self, stop: asyncio.Event) -> None:
        """Check every interval until ``stop`` is set."""
        for handler in self.handlers:
            if isinstance(handler, WebhookHandler):
                handler.start()
        log.info("resource monitor started", interval_s=self.settings.monitor_interval_s)
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.monitor_interval_s)
                if stop.is_set():
                    break
                try:
                    await self.check()
                except Exception:
                    # A failed check must never stop the projector it runs in.
                    log.exception("resource monitor check failed")
        finally:
            await self.close()

    async def close(self) -> None:
        """Disconnect, and deliver what the webhook still holds."""
        await self.marks.close()
        for handler in self.handlers:
            if isinstance(handler, WebhookHandler):
                await handler.aclose()
        if self._own_producer:
            await self.producer.stop()
