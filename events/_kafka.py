"""Kafka at the edge: topic bootstrap, the producer wrapper and consumer factory.

aiokafka's errors never leave this module as themselves: they become BrokerUnavailable or
TopicConfigError. Consumers are idempotent, so delivery stays effectively-once without Kafka
transactions (the embedded broker lacks them). The producer is idempotent where the broker
supports it (WRENCH_KAFKA_IDEMPOTENT, on by default: a retried produce is written once and
in order); the embedded broker refuses InitProducerId, so dev and the tests turn it off.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator, Iterable, Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError

from events._codec import Codec, Record
from events._cost import COST_ADMIN_TYPES
from events._envelope import Event, Position
from events._errors import BrokerUnavailable, TopicConfigError
from events._identity import IDENTITY_TYPES
from events._runtime import RUNTIME_TYPES
from wrenchai import metrics
from wrenchai.settings import Settings

log = structlog.get_logger(__name__)

TOPICS = ("events", "admin", "dlq")
ADMIN_TYPES = IDENTITY_TYPES | RUNTIME_TYPES | COST_ADMIN_TYPES
"""The event types published on wrench.admin (key = tenant): identity, security and the
platform's own running (agent heartbeats, tenant ``_system``), budgets and unpriced models."""
TOPIC_CONFIGS = {"cleanup.policy": "delete", "retention.ms": "-1"}
_TOPIC_EXISTS = 36


async def bootstrap_topics(settings: Settings) -> dict[str, int]:
    """Create wrench.events, wrench.admin and wrench.dlq if missing; check the ones that exist.

    Returns each topic's partition count. An existing topic with another partition count is
    a TopicConfigError naming both, since keys would land on other partitions.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap,
        request_timeout_ms=settings.kafka_request_timeout_ms,
    )
    try:
        await admin.start()
        names = [settings.topic(t) for t in TOPICS]
        response = await admin.create_topics(
            [
                NewTopic(
                    name,
                    num_partitions=settings.partitions,
                    replication_factor=settings.replication_factor,
                    topic_configs=TOPIC_CONFIGS,
                )
                for name in names
            ]
        )
        for name, code, message in response.topic_errors:
            if code not in (0, _TOPIC_EXISTS):
                raise TopicConfigError(
                    f"cannot create topic {name}: {message} (error {code})", topic=name
                )
        described = await admin.describe_topics(names)
    except KafkaError as exc:
        raise BrokerUnavailable(
            f"cannot reach the broker at {settings.kafka_bootstrap}: {exc}",
            bootstrap=settings.kafka_bootstrap,
        ) from exc
    finally:
        await admin.close()
    counts = {d["topic"]: len(d["partitions"]) for d in described}
    for name, count in counts.items():
        if count != settings.partitions:
            raise TopicConfigError(
                f"topic {name} exists with {count} partitions but WRENCH_PARTITIONS is "
                f"{settings.partitions}; set WRENCH_PARTITIONS={count} or recreate the topic",
                topic=name,
                existing=count,
                configured=settings.partitions,
            )
    log.info("topics ready", topics=counts)
    return counts


def producer_config(settings: Settings) -> dict[str, Any]:
    """The options of every WrenchAI producer (aiokafka's names), from ``settings``."""
    return {
        "bootstrap_servers": settings.kafka_bootstrap,
        "acks": "all",
        "enable_idempotence": settings.kafka_idempotent,
        "linger_ms": settings.producer_linger_ms,
        "compression_type": None if settings.producer_compression == "none" else "gzip",
        "request_timeout_ms": settings.kafka_request_timeout_ms,
        "retry_backoff_ms": 200,
        "max_batch_size": 256 * 1024,
    }


def _start_failed(settings: Settings, exc: KafkaError) -> BrokerUnavailable:
    """Why a producer did not start: the broker out of reach, or (an idempotent producer's
    start asks for a producer id) the broker refusing InitProducerId."""
    bootstrap = settings.kafka_bootstrap
    if settings.kafka_idempotent and not isinstance(exc, KafkaConnectionError):
        return BrokerUnavailable(
            f"the broker at {bootstrap} refused an idempotent producer (InitProducerId: "
            f"{exc!r}); the embedded broker does not support it: set "
            "WRENCH_KAFKA_IDEMPOTENT=false for it",
            bootstrap=bootstrap,
        )
    return BrokerUnavailable(f"cannot reach the broker at {bootstrap}: {exc}", bootstrap=bootstrap)


class Delivery:
    """The broker's answer to one record handed to the producer: await it for the
    record's Position (BrokerUnavailable when the broker refused it)."""

    __slots__ = ("_future", "_topic")

    def __init__(self, future: asyncio.Future[Any], topic: str) -> None:
        self._future, self._topic = future, topic

    def __await__(self) -> Generator[Any, None, Position]:
        return self._wait().__await__()

    async def _wait(self) -> Position:
        try:
            metadata = await self._future
        except KafkaError as exc:
            raise BrokerUnavailable(
                f"the broker did not accept records for {self._topic}: {exc}", topic=self._topic
            ) from exc
        return Position(metadata.partition, metadata.offset)


class EventProducer:
    """Publishes events and raw records with acks=all, batching, compression and retries.

    Starts lazily, so a process can come up while the broker is still down; every failure
    to publish is a BrokerUnavailable and nothing is half-written. ``processor`` names who
    publishes in wrench_events_produced_total (api, super-agent, projector, ...), which counts
    each event once the broker acknowledged it; raw records (DLQ copies, a restore's
    republishing) are not new events and are not counted.
    """

    def __init__(self, settings: Settings, codec: Codec, *, processor: str = "cli") -> None:
        self.settings = settings
        self.codec = codec
        self.processor = processor
        self._produced = metrics.produced(processor)
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Connect now rather than on the first publish."""
        await self._started()

    async def stop(self) -> None:
        """Flush what is pending and disconnect."""
        async with self._lock:
            if self._producer is not None:
                producer, self._producer = self._producer, None
                try:
                    await producer.stop()
                except KafkaError as exc:
                    log.warning("producer stop failed", error=str(exc))

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer  # started: no lock per record
        async with self._lock:
            if self._producer is None:
                s = self.settings
                producer = AIOKafkaProducer(**producer_config(s))
                try:
                    await producer.start()
                except KafkaError as exc:
                    await producer.stop()
                    raise _start_failed(s, exc) from exc
                self._producer = producer
            return self._producer

    async def publish(self, event: Event, topic: str | None = None) -> Position:
        """Append one event to its topic (or ``topic``) and wait for the broker's ack."""
        return (await self.publish_many([event], topic))[0]

    async def publish_many(
        self, events: Iterable[Event], topic: str | None = None
    ) -> list[Position]:
        """Append events in order; per-key order is kept because each key has one partition.

        Without ``topic``, identity, security and runtime events (``ADMIN_TYPES``) go to
        wrench.admin and every other event to wrench.events; one call publishes to one topic.
        """
        batch = list(events)
        name = topic or self.topic_of(batch)
        await self.codec.prepare_events(batch)
        positions = await self.send_records(name, [self.codec.encode(e) for e in batch])
        for event in batch:
            self._produced.add(event.type)
        return positions

    async def enqueue(self, event: Event, topic: str | None = None) -> Delivery:
        """Hand one event to the producer without waiting for the broker; await the
        Delivery for its ack. Events of one key keep the order they were handed over in:
        they share a partition, and the producer has one request in flight per broker."""
        name = topic or self.topic_of([event])
        await self.codec.prepare_events([event])
        record = self.codec.encode(event)
        producer = await self._started()
        try:
            future = await producer.send(
                name, value=record.value, key=record.key, headers=list(record.headers)
            )
        except KafkaError as exc:
            raise BrokerUnavailable(
                f"the broker did not accept records for {name}: {exc}", topic=name
            ) from exc
        kind = event.type

        def acked(done: asyncio.Future[Any]) -> None:
            # Counted when the broker acknowledges, whether or not anyone awaits the Delivery.
            if not done.cancelled() and done.exception() is None:
                self._produced.add(kind)

        future.add_done_callback(acked)
        return Delivery(future, name)

    def topic_of(self, events: Sequence[Event]) -> str:
        """The one topic ``events`` belong on (ValueError when they belong on two)."""
        kinds = {"admin" if e.type in ADMIN_TYPES else "events" for e in events} or {"events"}
        if len(kinds) > 1:
            raise ValueError("admin events and task events go to different topics")
        return self.settings.topic(kinds.pop())

    async def send_records(
        self, topic: str, records: Iterable[Record], partition: int | None = None
    ) -> list[Position]:
        """Produce raw records (the DLQ and restore use this) and wait for every ack."""
        producer = await self._started()
        try:
            futures = [
                await producer.send(
                    topic,
                    value=r.value,
                    key=r.key,
                    headers=list(r.headers),
                    partition=partition,
                )
                for r in records
            ]
            metadata = await asyncio.gather(*futures)
        except KafkaError as exc:
            raise BrokerUnavailable(
                f"the broker did not accept records for {topic}: {exc}", topic=topic
            ) from exc
        return [Position(m.partition, m.offset) for m in metadata]

    async def partitions(self, topic: str) -> int:
        """How many partitions ``topic`` has, from the producer's metadata."""
        producer = await self._started()
        try:
            found = await producer.partitions_for(topic)
        except KafkaError as exc:
            raise BrokerUnavailable(f"no metadata for {topic}: {exc}", topic=topic) from exc
        return len(found)


def create_consumer(
    settings: Settings, *topics: str, group: str | None = None, **overrides: Any
) -> AIOKafkaConsumer:
    """An aiokafka consumer with WrenchAI's defaults: manual commits, earliest reset, and the
    group timeouts from settings. Not started."""
    options: dict[str, Any] = dict(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=settings.kafka_session_timeout_ms,
        rebalance_timeout_ms=settings.kafka_rebalance_timeout_ms,
        heartbeat_interval_ms=max(settings.kafka_session_timeout_ms // 5, 500),
        request_timeout_ms=max(settings.kafka_request_timeout_ms, 40_000),
        max_poll_interval_ms=300_000,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
    )
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


async def log_end_offsets(
    settings: Settings, topic: str, timeout_s: float = 10.0
) -> dict[int, int]:
    """The next offset to be written in each partition of ``topic``, from fetch responses.

    ListOffsets (``end_offsets``) under-reports on the embedded broker when the last batch held
    several records, so this reads the high watermark that a fetch returns instead.
    """
    consumer = create_consumer(settings)
    try:
        await consumer.start()
        partitions = await _partitions_of(consumer, topic, timeout_s)
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        # Fetch from near the end so each response is small but still carries the mark.
        for tp, end in (await consumer.end_offsets(tps)).items():
            consumer.seek(tp, max(end - 1, 0))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        marks: dict[int, int] = {}
        while len(marks) < len(tps):
            if loop.time() > deadline:
                raise BrokerUnavailable(f"no high watermark for {topic} within {timeout_s}s")
            await consumer.getmany(timeout_ms=100)
            for tp in tps:
                mark = consumer.highwater(tp)
                if mark is not None:
                    marks[tp.partition] = mark
        return marks
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot read the end of {topic}: {exc}", topic=topic) from exc
    finally:
        await consumer.stop()


async def _partitions_of(consumer: AIOKafkaConsumer, topic: str, timeout_s: float) -> list[int]:
    if topic not in await consumer.topics():
        raise TopicConfigError(f"topic {topic} does not exist; run `wrenchai topics create`")
    found = consumer.partitions_for_topic(topic) or set()
    return sorted(found)
