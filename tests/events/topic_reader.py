"""Reading a topic back from offset 0, for tests that check what really reached the broker."""

from __future__ import annotations

import asyncio

from aiokafka import ConsumerRecord, TopicPartition

from events import create_consumer
from wrenchai.settings import Settings

# A liveness bound so a regression fails the run instead of hanging it; not a benchmark.
PATIENCE_S = 20


async def read_topic(settings: Settings, topic: str, count: int) -> list[ConsumerRecord]:
    """Every record of ``topic`` from offset 0, once ``count`` of them have arrived."""
    consumer = create_consumer(settings)
    await consumer.start()
    try:
        await consumer.topics()  # loads the metadata that partitions_for_topic reads
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[ConsumerRecord] = []
        async with asyncio.timeout(PATIENCE_S):
            while len(records) < count:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    records.extend(batch)
        return records
    finally:
        await consumer.stop()
