"""The stream hub: one Kafka consumer per API process feeds every socket and event stream.

The hub reads wrench.events from where the projector stood when the first subscriber came,
routes each record to the subscriptions of its tenant, and keeps the last records of every
partition in a ring so that a stream catching up from the archive can bridge the records the
projector has not archived yet. A record is decoded (decrypted, upcast) at most once, and only
when someone wants it; every socket it goes to shares the same bytes.

Each subscription has a bounded queue. The hub never waits for a subscriber: a queue that is
full marks its subscription overflowed and the socket behind it is closed, so a slow client
can neither slow the others nor make the process grow.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from api._database import Database
from api._readmodels import history_event
from events import Codec, EventDecodeError, Position, create_consumer
from projections import EVENTS
from wrenchai.settings import Settings

log = structlog.get_logger(__name__)

RESTART_DELAY_S = 1.0
"""How long the hub waits before reconnecting after its consumer failed."""


class SlowConsumer(Exception):
    """A subscription's queue overflowed: its client does not read as fast as events come."""


@dataclass(eq=False)
class Delivery:
    """One record of wrench.events as the hub read it, routed on its envelope's fields.

    ``message`` is the stream message ``{"position", "event"}`` as JSON text, made once on
    first need; None until then, and for good when the record cannot be decoded.
    """

    position: Position
    tenant_id: str
    task_id: str | None
    type: str
    actor: tuple[str, str]
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    message: str | None = None
    rendered: bool = False

    @property
    def offset(self) -> int:
        return self.position.offset


Match = Callable[[Delivery], bool]


@dataclass(eq=False)
class Subscription:
    """What one stream receives: the deliveries of its tenant that ``match`` accepts, from
    ``start`` (each partition's next offset when it subscribed) on."""

    hub: StreamHub
    tenant_id: str
    match: Match
    queue: asyncio.Queue[Delivery]
    start: dict[int, int]
    overflowed: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, delivery: Delivery) -> None:
        """Queue ``delivery`` without waiting; a full queue overflows the subscription."""
        if self.overflowed.is_set():
            return
        try:
            self.queue.put_nowait(delivery)
        except asyncio.QueueFull:
            log.info("stream overflowed", queued=self.queue.qsize(), tenant_id=self.tenant_id)
            self.overflowed.set()

    async def next(self) -> Delivery:
        """The next delivery; SlowConsumer once the queue has overflowed."""
        if self.overflowed.is_set():
            raise SlowConsumer
        if not self.queue.empty():
            return self.queue.get_nowait()
        getter = asyncio.ensure_future(self.queue.get())
        overflow = asyncio.ensure_future(self.overflowed.wait())
        try:
            await asyncio.wait((getter, overflow), return_when=asyncio.FIRST_COMPLETED)
        finally:
            overflow.cancel()
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
        raise SlowConsumer

    def close(self) -> None:
        """Stop receiving."""
        self.hub.unsubscribe(self)


class StreamHub:
    """The API process's one consumer of wrench.events, and its subscribers."""

    def __init__(self, settings: Settings, database: Database, codec: Codec) -> None:
        self.settings = settings
        self.database = database
        self.codec = codec
        self.topic = settings.topic("events")
        self.next_offset: dict[int, int] = {}
        self._rings: dict[int, deque[Delivery]] = {}
        self._subscribers: dict[str, set[Subscription]] = {}
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0

    # -- subscribers ---------------------------------------------------------------------
    async def subscribe(self, tenant_id: str, match: Match, timeout_s: float) -> Subscription:
        """A new subscription, once the hub reads the log (StreamUnavailable if it cannot
        within ``timeout_s``)."""
        self.start()
        try:
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        except TimeoutError:
            raise StreamUnavailable("the event stream is not reachable yet; retry") from None
        subscription = Subscription(
            self,
            tenant_id,
            match,
            asyncio.Queue(self.settings.ws_queue_size),
            dict(self.next_offset),
        )
        self._subscribers.setdefault(tenant_id, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Forget ``subscription`` (idempotent)."""
        subscribers = self._subscribers.get(subscription.tenant_id)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._subscribers[subscription.tenant_id]

    @property
    def subscriptions(self) -> int:
        """How many subscriptions are open."""
        return sum(len(s) for s in self._subscribers.values())

    def buffered(self, partition: int, first: int, end: int) -> list[Delivery] | None:
        """The ring's deliveries of ``partition`` with ``first <= offset < end``; None when the
        ring no longer reaches back to ``first``."""
        if first >= end:
            return []
        ring = self._rings.get(partition)
        if not ring or ring[0].offset > first:
            return None
        return [d for d in ring if first <= d.offset < end]

    def find_task(self, tenant_id: str, task_id: str) -> int | None:
        """The partition of a task the hub has read a record of (before it is projected)."""
        for partition, ring in self._rings.items():
            if any(d.task_id == task_id and d.tenant_id == tenant_id for d in ring):
                return partition
        return None

    async def render(self, deliveries: Iterable[Delivery]) -> None:
        """Give each delivery its stream message: decrypted and upcast as the history shows
        it. A record that cannot be decoded keeps ``message = None``."""
        todo = [d for d in deliveries if not d.rendered]
        if not todo:
            return
        try:
            await self.codec.prepare_records(d.value for d in todo)
        except EventDecodeError:
            pass  # each record is decoded alone below and reports its own problem
        for delivery in todo:
            try:
                event = history_event(
                    self.codec, delivery.position, delivery.value, delivery.headers
                )
            except EventDecodeError:
                delivery.message = None
            else:
                delivery.message = stream_message(event.position, event.model_dump(mode="json"))
            delivery.rendered = True

    # -- the consumer ----------------------------------------------------------------------
    def start(self) -> None:
        """Start reading the log, once, in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="stream-hub")

    async def close(self) -> None:
        """Stop reading; open subscriptions receive nothing more."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the hub outlives any one failure of the broker
                log.warning("stream hub restarting", error=str(exc), error_type=type(exc).__name__)
                await asyncio.sleep(RESTART_DELAY_S)

    async def _consume(self) -> None:
        # A fetch delivers at most half a stream's queue at once, so a client that keeps up
        # is never cut by one burst.
        batch = max(1, min(500, self.settings.ws_queue_size // 2))
        consumer = create_consumer(self.settings, max_poll_records=batch)
        await consumer.start()
        try:
            partitions = await self._partitions(consumer)
            if not self.next_offset:
                self.next_offset = await self._projector_offsets(partitions)
            tps = [TopicPartition(self.topic, p) for p in partitions]
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, self.next_offset.setdefault(tp.partition, 0))
                self._rings.setdefault(tp.partition, deque(maxlen=self.settings.stream_buffer))
            self._ready.set()
            log.info("stream hub reading", topic=self.topic, partitions=len(tps))
            while True:
                batches = await consumer.getmany(timeout_ms=1_000)
                for tp, records in batches.items():
                    await self._route(tp.partition, records)
                # getmany returns at once while fetched records wait: let the streams send
                # what they were given before taking more.
                await asyncio.sleep(0)
        finally:
            await consumer.stop()

    async def _partitions(self, consumer: Any) -> list[int]:
        while True:
            try:
                await consumer.topics()
            except KafkaError:
                pass
            found = consumer.partitions_for_topic(self.topic)
            if found:
                return sorted(found)
            await asyncio.sleep(RESTART_DELAY_S)

    async def _projector_offsets(self, partitions: list[int]) -> dict[int, int]:
        """Where the projector stands: the archive holds everything before it, so the ring
        only has to hold what comes after."""
        async with self.database.connection() as conn:
            rows = await conn.fetch(
                "SELECT partition, next_offset FROM consumer_offsets "
                "WHERE group_id = $1 AND topic = $2",
                EVENTS.group(self.settings),
                self.topic,
            )
        stood = {r["partition"]: r["next_offset"] for r in rows}
        return {p: stood.get(p, 0) for p in partitions}

    async def _route(self, partition: int, records: list[Any]) -> None:
        """Deliver one fetched batch of ``partition``. The hub's offsets move only once the
        batch is delivered: a failure half-way reads the batch again, and a subscription made
        while it was being decoded receives all of it."""
        fresh = [r for r in records if r.offset >= self.next_offset.get(partition, 0)]
        if not fresh:
            return
        deliveries = [d for d in (_delivery(partition, r) for r in fresh) if d is not None]
        if any(self._matching(d) for d in deliveries):
            await self.render(d for d in deliveries if self._matching(d))
        for delivery in deliveries:
            if delivery.message is None:
                continue
            for subscription in self._matching(delivery):
                if delivery.offset >= subscription.start.get(partition, 0):
                    subscription.offer(delivery)
                    self.delivered += 1
        # Poison records (no delivery) still move the offset: the DLQ and the archive hold
        # them, and streams show events.
        self._rings[partition].extend(deliveries)
        self.next_offset[partition] = fresh[-1].offset + 1

    def _matching(self, delivery: Delivery) -> list[Subscription]:
        return [s for s in self._subscribers.get(delivery.tenant_id, ()) if s.match(delivery)]


class StreamUnavailable(Exception):
    """The hub cannot read the log (the broker is down or the topic is missing)."""


def stream_message(position: str, event: dict[str, Any]) -> str:
    """The text of one event message: ``{"position": ..., "event": ...}``."""
    return orjson.dumps({"position": position, "event": event}).decode()


def _delivery(partition: int, record: Any) -> Delivery | None:
    headers = tuple((k, v) for k, v in (record.headers or ()))
    try:
        envelope = orjson.loads(record.value) if record.value is not None else None
    except orjson.JSONDecodeError:
        return None
    if not isinstance(envelope, dict):
        return None
    tenant_id, kind, actor = envelope.get("tenant_id"), envelope.get("type"), envelope.get("actor")
    if not isinstance(tenant_id, str) or not isinstance(kind, str):
        return None
    task_id = envelope.get("task_id")
    if task_id is not None:
        try:
            task_id = str(uuid.UUID(str(task_id)))
        except ValueError:
            return None
    if isinstance(actor, dict):
        who = (str(actor.get("kind", "")), str(actor.get("id", "")))
    else:
        who = ("", "")
    return Delivery(
        Position(partition, record.offset), tenant_id, task_id, kind, who, record.value, headers
    )
