"""The projector's consumer loop: fetch a batch, read it, write it, repeat; drain on stop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from events import EventProducer, codec_from_settings, create_consumer
from projections._checkpoints import Checkpointer
from projections._db import connect
from projections._migrate import migrate
from projections._projector import BatchOutcome, OffsetGap, Projector, ReadBatch
from projections._streams import EVENTS, STREAMS, Stream
from wrenchai import metrics
from wrenchai.settings import Settings

log = structlog.get_logger(__name__)

DRAIN_TIMEOUT_S = 5.0


class _SeekToStored(ConsumerRebalanceListener):  # type: ignore[misc]
    """On assignment, continue from the offsets in Postgres, not Kafka's committed ones."""

    def __init__(self, runner: ProjectorRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        partitions = sorted(tp.partition for tp in revoked)
        metrics.forget_consumer_lag(self.runner.projector.group, partitions)
        log.info("partitions revoked", partitions=partitions)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.runner.seek_to_stored(list(assigned))
        log.info("partitions assigned", partitions=sorted(tp.partition for tp in assigned))


class ProjectorRunner:
    """The consumer loop around a Projector: fetch a batch, apply it, repeat; drain on stop."""

    def __init__(
        self, settings: Settings, stream: Stream = EVENTS, checkpointer: Checkpointer | None = None
    ) -> None:
        self.settings = settings
        self.checkpointer = checkpointer
        self.codec = codec_from_settings(settings)
        self.dlq = EventProducer(settings, self.codec, processor=stream.group_name)
        self.projector = Projector(settings, self.codec, self.dlq, stream)
        self.consumer: AIOKafkaConsumer | None = None
        self.conn: asyncpg.Connection | None = None
        self._writing: asyncio.Task[BatchOutcome] | None = None
        self.consumed = metrics.consumed(stream.group_name)

    async def seek_to_stored(self, partitions: list[TopicPartition]) -> None:
        # Its own connection: a rebalance callback may run while a batch holds self.conn.
        assert self.consumer is not None
        conn = await connect(self.settings)
        try:
            stored = await self.projector.stored_offsets(conn)
        finally:
            await conn.close()
        for tp in partitions:
            self.consumer.seek(tp, stored.get(tp.partition, 0))

    async def run(self, stop: asyncio.Event) -> None:
        self.conn = await connect(self.settings)
        await migrate(self.conn)
        self.consumer = create_consumer(
            self.settings,
            group=self.projector.group,
            max_poll_records=self.settings.projector_batch_size,
        )
        self.consumer.subscribe([self.projector.topic], listener=_SeekToStored(self))
        try:
            await self.consumer.start()
            log.info("projector started", topic=self.projector.topic, group=self.projector.group)
            while not stop.is_set():
                await self.step()
            await self.drain()
        finally:
            await self._close()

    async def step(self) -> bool:
        """Fetch up to one batch and read it while the previous batch is still being
        written, then start writing it. False when nothing came within the batch time.

        Batches are written one after the other, on one connection, in fetch order; only
        the reading of one overlaps the writing of the one before.
        """
        assert self.consumer is not None
        fetched = await self.consumer.getmany(
            timeout_ms=self.settings.projector_batch_ms,
            max_records=self.settings.projector_batch_size,
        )
        fetched_at = asyncio.get_running_loop().time()
        batches = {tp.partition: records for tp, records in fetched.items() if records}
        if not batches:
            await self.flush()
            return False
        read = await self.projector.read(batches)
        if await self.flush():
            self._writing = asyncio.create_task(self._write(read, fetched_at))
        # else the consumer was sent back to the stored offsets: this batch is refetched.
        return True

    async def flush(self) -> bool:
        """Wait for the batch being written, if any. False when it was discarded: another
        projector got there first, or records were skipped; then every partition starts
        again from what Postgres says, and whatever was fetched before is stale."""
        if self._writing is None:
            return True
        writing, self._writing = self._writing, None
        try:
            await writing
        except (OffsetGap, asyncpg.UniqueViolationError) as exc:
            log.warning("batch discarded; seeking to stored offsets", error=str(exc))
            assert self.consumer is not None
            await self.seek_to_stored(list(self.consumer.assignment()))
            return False
        return True

    async def _write(self, read: ReadBatch, fetched_at: float) -> BatchOutcome:
        assert self.conn is not None
        outcome = await self.projector.write(self.conn, read)
        self._measure(read, outcome, fetched_at)
        await self._commit_to_kafka(outcome)
        if self.checkpointer is not None:
            self.checkpointer.saw(outcome.applied + outcome.duplicates + outcome.poison)
        log.debug(
            "batch applied",
            applied=outcome.applied,
            duplicates=outcome.duplicates,
            poison=outcome.poison,
            skipped=outcome.skipped,
        )
        return outcome

    def _measure(self, read: ReadBatch, outcome: BatchOutcome, fetched_at: float) -> None:
        """A committed batch's metrics: its size and time, what it consumed, and the lag of
        its partitions behind the fetch high watermark."""
        assert self.consumer is not None
        seconds = asyncio.get_running_loop().time() - fetched_at
        size = sum(len(records) for records in read.values())
        metrics.observe_projector_batch(self.projector.stream.group_name, size, seconds)
        self.consumed.add_all(outcome.types)
        lags: dict[int, int | None] = {}
        for partition, next_offset in outcome.next_offsets.items():
            mark = self.consumer.highwater(TopicPartition(self.projector.topic, partition))
            lags[partition] = None if mark is None else max(mark - next_offset, 0)
        metrics.set_consumer_lag(self.projector.group, lags)

    async def drain(self) -> None:
        """On stop, keep applying until caught up with the log end (or a short deadline), so a
        clean shutdown of the embedded stack leaves nothing unarchived."""
        assert self.consumer is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_TIMEOUT_S
        while loop.time() < deadline:
            if not await self.step() and await self._caught_up():
                break
        await self.flush()
        log.info("projector drained", caught_up=await self._caught_up())

    async def _caught_up(self) -> bool:
        assert self.consumer is not None
        for tp in self.consumer.assignment():
            mark = self.consumer.highwater(tp)
            if mark is None or mark > await self.consumer.position(tp):
                return False
        return True

    async def _commit_to_kafka(self, outcome: BatchOutcome) -> None:
        """Mirror the offsets to Kafka for lag tooling; Postgres stays the record."""
        assert self.consumer is not None
        offsets = {
            TopicPartition(self.projector.topic, p): o for p, o in outcome.next_offsets.items()
        }
        if offsets:
            try:
                await self.consumer.commit(offsets)
            except KafkaError as exc:
                log.info("kafka offset commit skipped", error=str(exc))

    async def _close(self) -> None:
        if self._writing is not None:  # only when the loop failed: give up the batch
            self._writing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._writing
        if self.consumer is not None:
            held = [tp.partition for tp in self.consumer.assignment()]
            metrics.forget_consumer_lag(self.projector.group, held)
            await self.consumer.stop()
        await self.dlq.stop()
        if self.conn is not None:
            await self.conn.close()


Companion = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
"""A task that runs beside the projector until the same ``stop`` is set (the
ResourceMonitor's ``run``)."""


async def run_projector(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    companions: Sequence[Companion] = (),
) -> None:
    """Run the projector of every stream until ``stop`` is set, or until SIGTERM/SIGINT when
    none is given, the checkpointer that signs their chain heads when a key is set, and the
    ``companions``. One of them failing stops the others, so the process exits and is
    restarted whole."""
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    producer = EventProducer(settings, codec_from_settings(settings), processor="projector")
    checkpointer = Checkpointer.from_settings(settings, producer)
    try:
        async with asyncio.TaskGroup() as group:
            for stream in STREAMS:
                group.create_task(ProjectorRunner(settings, stream, checkpointer).run(stop))
            if checkpointer is not None:
                group.create_task(checkpointer.run(stop))
            for companion in companions:
                group.create_task(companion(stop))
    finally:
        await producer.stop()
