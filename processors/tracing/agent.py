"""The tracer: reads wrench.events and exports each task as one OpenTelemetry trace over
OTLP/HTTP (protobuf) to ``WRENCH_OTLP_ENDPOINT``; ``wrenchai worker tracer``.

The log already holds every fact with its time, its task and its cause, so traces are
derived from it (:mod:`processors.tracing.spans`) instead of instrumenting every process.
With no endpoint set nothing runs: ``wrenchai dev`` does not start the tracer and ``wrenchai
worker tracer`` says so and exits 0.

It reads in its own consumer group (``tracer``) with aiokafka, in batches: fold the batch,
export the spans it ended, then commit. The offset committed for a partition is never past
the task.submitted of a task of that partition still in flight, because that task's start
lives only in memory. So:

- **A restart or a rebalance** resumes at the oldest start still needed and folds again
  from there: tasks in flight get their starts back, and the spans that ended after that
  point are exported a second time with the same ids (and the same content), which a
  receiver may drop as repeats. A task in flight for long holds the replay back to its
  start; tasks held are bounded (``spans.MAX_OPEN_TASKS``), the oldest let go past it.
- **A collector that is down** holds the tracer back: a batch is tried again, with backoff,
  until it is taken, and nothing is committed meanwhile. No span is dropped; the lag grows
  (wrench_consumer_lag{group="…wrench-tracer"}).
- **A group that never committed** starts at the beginning of the log, like every consumer
  of WrenchAI: turning tracing on for a deployment that has history exports that history's
  traces once, with their original times. To skip it, move the group's offsets to the end
  of wrench.events before the first start.

The tracer reads no user content: it decodes with a cipher that opens nothing, so every
encrypted field reads as shredded, and it needs no key.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import uuid
from collections.abc import Collection, Sequence
from typing import Any

import structlog
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from events import (
    Codec,
    EventDecodeError,
    TenantKeysDestroyed,
    create_consumer,
    kafka_headers,
)
from processors.tracing.spans import TRACED_TYPES, Traces
from wrenchai import metrics
from wrenchai.errors import ConfigurationError
from wrenchai.settings import Settings

log = structlog.get_logger(__name__)

NAME = "tracer"
BATCH_MAX = 500
POLL_MS = 200
EXPORT_TIMEOUT_S = 10.0
RETRY_BASE_S = 0.5
RETRY_MAX_S = 30.0


class BlindCipher:
    """A cipher that opens nothing: the codec reads every encrypted field as shredded, so
    what the tracer decodes holds no user content and it needs no key."""

    per_tenant = False

    async def prepare(self, tenant_ids: Collection[str], *, create: bool = False) -> None:
        """Nothing to load."""

    def encrypt(self, tenant_id: str, plaintext: bytes) -> str:
        raise TypeError("the tracer writes no events")

    def decrypt(self, tenant_id: str, token: str) -> bytes:
        raise TenantKeysDestroyed("the tracer reads no user content", tenant_id=tenant_id)


def otlp_headers(settings: Settings) -> dict[str, str]:
    """``WRENCH_OTLP_HEADERS`` (``name=value,name=value``) as a mapping; ConfigurationError
    naming the bad pair's position (never its value, a credential) otherwise."""
    if settings.otlp_headers is None:
        return {}
    headers: dict[str, str] = {}
    for number, pair in enumerate(settings.otlp_headers.get_secret_value().split(","), 1):
        if not pair.strip():
            continue
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ConfigurationError(
                f"WRENCH_OTLP_HEADERS: pair {number} is not name=value; write the headers "
                "as name=value pairs separated by commas (authorization=Bearer xyz)"
            )
        headers[name.strip().lower()] = value.strip()
    return headers


def exporter_from_settings(settings: Settings) -> SpanExporter:
    """The OTLP/HTTP exporter to ``WRENCH_OTLP_ENDPOINT``; ConfigurationError when it is
    unset or not an http(s) URL."""
    endpoint = settings.otlp_endpoint
    if not endpoint:
        raise ConfigurationError("set WRENCH_OTLP_ENDPOINT (http://collector:4318/v1/traces)")
    if not endpoint.startswith(("http://", "https://")):
        raise ConfigurationError(
            f"WRENCH_OTLP_ENDPOINT {endpoint!r} is not an http(s) URL; give the collector's "
            "OTLP/HTTP traces URL, e.g. http://collector:4318/v1/traces"
        )
    return OTLPSpanExporter(
        endpoint=endpoint, headers=otlp_headers(settings), timeout=EXPORT_TIMEOUT_S
    )


def resource_of(settings: Settings) -> Resource:
    """What every span was made by: WrenchAI, in this namespace. Built as it is, without
    the OTEL_* variables the SDK's ``Resource.create`` would read."""
    attributes: dict[str, str] = {"service.name": "wrenchai"}
    if settings.namespace:
        attributes["service.namespace"] = settings.namespace
    return Resource(attributes)


class Tracer:
    """Folds wrench.events into spans, exports them, and commits what no task in flight
    still needs."""

    def __init__(self, settings: Settings, exporter: SpanExporter | None = None) -> None:
        self.settings = settings
        self.group = settings.group(NAME)
        self.topic = settings.topic("events")
        self.codec = Codec(BlindCipher())
        self.exporter = exporter
        self.traces = Traces(resource_of(settings))
        self.consumed = metrics.consumed(NAME)
        self.exported = 0
        """Spans the exporter has taken."""
        self._lock = asyncio.Lock()
        self._positions: dict[int, int] = {}
        self._pins: dict[int, dict[uuid.UUID, int]] = {}
        self._committed: dict[int, int] = {}

    # -- one batch -------------------------------------------------------------------------
    def fold(self, partition: int, record: ConsumerRecord[Any, Any]) -> list[ReadableSpan]:
        """The spans one record ends; the record's task is pinned while it is in flight."""
        self._positions[partition] = record.offset + 1
        headers = kafka_headers(record.headers)
        kind = next((v for k, v in headers if k == "type"), None)
        label = "unknown" if kind is None else kind.decode(errors="replace")
        self.consumed.add(label)
        if label not in TRACED_TYPES:
            return []
        try:
            event = self.codec.decode(record.value, headers)
        except EventDecodeError as exc:
            # Sending it to wrench.dlq is the job of the consumers that act on events.
            log.warning(
                "record skipped", reason=exc.reason, partition=partition, offset=record.offset
            )
            return []
        spans = self.traces.fold(event)
        task_id = event.task_id
        if task_id is not None and task_id in self.traces.tasks:
            self._pins.setdefault(partition, {}).setdefault(task_id, record.offset)
        return spans

    async def export(self, spans: Sequence[ReadableSpan], stop: asyncio.Event) -> bool:
        """Hand ``spans`` to the exporter, trying again with backoff until it takes them;
        False if ``stop`` came first."""
        if not spans:
            return True
        assert self.exporter is not None
        delay = RETRY_BASE_S
        while not stop.is_set():
            result = await asyncio.to_thread(self.exporter.export, spans)
            if result is SpanExportResult.SUCCESS:
                self.exported += len(spans)
                return True
            log.warning("spans not exported; trying again", spans=len(spans), in_s=delay)
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                pass
            delay = min(delay * 2, RETRY_MAX_S)
        return False

    def commit_offsets(self) -> dict[TopicPartition, int]:
        """Per partition read, the offset to commit: the oldest task.submitted still in
        flight, else the next record (only where that moved)."""
        offsets = {}
        for partition, position in self._positions.items():
            pins = self._pins.get(partition, {})
            for task_id in [t for t in pins if t not in self.traces.tasks]:
                del pins[task_id]
            offset = min(pins.values(), default=position)
            if self._committed.get(partition) != offset:
                offsets[TopicPartition(self.topic, partition)] = offset
        return offsets

    # -- the consumer ----------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Trace until ``stop`` is set."""
        if self.exporter is None:
            self.exporter = exporter_from_settings(self.settings)
        consumer = create_consumer(self.settings, group=self.group)
        consumer.subscribe([self.topic], listener=_Rebalance(self, consumer))
        await consumer.start()
        log.info("tracing", endpoint=self.settings.otlp_endpoint, group=self.group)
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=POLL_MS, max_records=BATCH_MAX)
                async with self._lock:
                    # A partition revoked since the fetch is another tracer's now.
                    owned = consumer.assignment()
                    spans = [
                        span
                        for tp, records in batches.items()
                        if tp in owned
                        for record in records
                        for span in self.fold(tp.partition, record)
                    ]
                    if not await self.export(spans, stop):
                        return
                    await self._commit(consumer)
                self._report_lag(consumer)
        finally:
            await consumer.stop()
            await asyncio.to_thread(self.exporter.shutdown)

    async def _commit(self, consumer: Any) -> None:
        offsets = self.commit_offsets()
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:  # a rebalance under way: the next batch commits again
            log.warning("offsets not committed", error=str(exc)[:200])
            return
        self._committed.update({tp.partition: offset for tp, offset in offsets.items()})

    def _report_lag(self, consumer: Any) -> None:
        lags = {}
        for partition, position in self._positions.items():
            mark = consumer.highwater(TopicPartition(self.topic, partition))
            lags[partition] = None if mark is None else max(mark - position, 0)
        metrics.set_consumer_lag(self.group, lags)

    async def revoked(self, consumer: Any, partitions: Collection[int]) -> None:
        """Partitions going to another tracer: commit them, then let go of their tasks."""
        async with self._lock:
            await self._commit(consumer)
            for partition in partitions:
                self.traces.forget(set(self._pins.pop(partition, {})))
                self._positions.pop(partition, None)
                self._committed.pop(partition, None)
            metrics.forget_consumer_lag(self.group, partitions)

    # -- the process -----------------------------------------------------------------------
    def main(self) -> None:
        """Run until SIGTERM or SIGINT; with no WRENCH_OTLP_ENDPOINT, say so and return."""
        if not self.settings.otlp_endpoint:
            log.info("WRENCH_OTLP_ENDPOINT is not set: no traces to export, the tracer exits")
            return
        self.exporter = self.exporter or exporter_from_settings(self.settings)
        if self.settings.log_level != "debug":
            logging.getLogger("aiokafka").setLevel(logging.WARNING)
        metrics.serve_metrics(self.settings, NAME)
        asyncio.run(self._until_signalled())

    async def _until_signalled(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.run(stop)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, tracer: Tracer, consumer: Any) -> None:
        self.tracer, self.consumer = tracer, consumer

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        await self.tracer.revoked(self.consumer, [tp.partition for tp in revoked])

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        """Nothing to load: reading resumes at the committed offset, the oldest start."""


def worker(settings: Settings) -> Tracer:
    """The tracer as ``wrenchai worker tracer`` runs it."""
    return Tracer(settings)


__all__ = ["NAME", "BlindCipher", "Tracer", "exporter_from_settings", "otlp_headers", "worker"]
