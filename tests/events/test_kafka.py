"""The Kafka edge, on the real (embedded) broker: topic bootstrap, the producer's partitions,
order and positions, broker failures as BrokerUnavailable, and the log end."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.partitioner import DefaultPartitioner

from events import (
    TOPICS,
    BrokerUnavailable,
    Codec,
    Event,
    EventProducer,
    Position,
    Record,
    TaskCancelled,
    TaskFailed,
    TaskFailedV1,
    TopicConfigError,
    bootstrap_topics,
    create_consumer,
    log_end_offsets,
)
from tests.events.samples import PAYLOADS, SECRETS, TENANT, USER, sample_event
from tests.events.topic_reader import PATIENCE_S, read_topic
from wrenchai.embedded import free_port
from wrenchai.settings import Settings


def unreachable() -> Settings:
    """Settings pointing at a port nothing listens on."""
    return Settings(
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        kafka_request_timeout_ms=500,
        namespace=f"gone{uuid.uuid4().hex[:6]}.",
    )


# -- topics ------------------------------------------------------------------------------
async def test_bootstrap_creates_the_three_topics_with_the_configured_partitions(
    settings: Settings, topics: dict[str, int]
) -> None:
    names = {settings.topic(t) for t in TOPICS}
    assert topics == dict.fromkeys(names, settings.partitions)
    consumer = create_consumer(settings)
    await consumer.start()
    try:
        assert names <= await consumer.topics()
        for name in names:
            assert consumer.partitions_for_topic(name) == set(range(settings.partitions))
    finally:
        await consumer.stop()


async def test_bootstrapped_topics_delete_rather_than_compact_and_never_expire(
    settings: Settings, topics: dict[str, int]
) -> None:
    """The log is the system of record: no compaction, infinite retention."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in topics]
        )
    finally:
        await admin.close()
    for response in responses:
        for resource in response.resources:
            configs = {entry[0]: entry[1] for entry in resource[4]}
            assert configs["cleanup.policy"] == "delete", resource[3]
            assert configs["retention.ms"] == "-1", resource[3]


async def test_bootstrap_is_idempotent(settings: Settings, topics: dict[str, int]) -> None:
    assert await bootstrap_topics(settings) == topics
    assert await bootstrap_topics(settings) == topics


async def test_an_existing_topic_with_another_partition_count_is_a_config_error(
    settings: Settings,
) -> None:
    """Keys would land on other partitions, so bootstrap refuses and names both counts."""
    three = settings.model_copy(update={"partitions": 3})
    await bootstrap_topics(three)
    five = settings.model_copy(update={"partitions": 5})
    with pytest.raises(TopicConfigError) as caught:
        await bootstrap_topics(five)
    message = caught.value.message
    assert "3 partitions" in message and "WRENCH_PARTITIONS is 5" in message
    assert caught.value.details["existing"] == 3
    assert caught.value.details["configured"] == 5
    assert await bootstrap_topics(three) == dict.fromkeys([three.topic(t) for t in TOPICS], 3), (
        "the failed attempt must leave the topics as they were"
    )


# -- producing ---------------------------------------------------------------------------
async def test_published_events_come_back_equal_keyed_and_encrypted_on_the_wire(
    settings: Settings, codec: Codec, producer: EventProducer
) -> None:
    sent = [sample_event(event_type) for event_type in sorted(PAYLOADS)]
    await producer.publish_many(sent)
    records = await read_topic(settings, settings.topic("events"), len(sent))
    by_id = {event.id: event for event in sent}
    for record in records:
        assert not [s for s in SECRETS if s.encode() in record.value]
        event = codec.decode(record.value, tuple(record.headers))
        assert event == by_id[event.id]
        assert record.key == str(event.task_id).encode()
        assert dict(record.headers)["type"] == event.type.encode()
    assert {codec.decode(r.value).id for r in records} == set(by_id)


async def test_each_task_keeps_one_partition_and_its_order(
    settings: Settings, codec: Codec, producer: EventProducer
) -> None:
    """Positions name where each record landed: the partition of its key (murmur2, like the
    Java client) and offsets rising in publish order, exactly as a consumer reads them."""
    tasks = [uuid.uuid4() for _ in range(6)]
    sent = [
        Event.new(TaskCancelled(reason=f"{n}"), tenant_id=TENANT, actor=USER, task_id=task)
        for n in range(5)
        for task in tasks
    ]
    positions = await producer.publish_many(sent)

    all_partitions = list(range(settings.partitions))
    for event, position in zip(sent, positions, strict=True):
        assert position.partition == DefaultPartitioner()(event.key, all_partitions, all_partitions)
    for task in tasks:
        mine = [p for e, p in zip(sent, positions, strict=True) if e.task_id == task]
        assert len({p.partition for p in mine}) == 1
        assert [p.offset for p in mine] == sorted(p.offset for p in mine)

    records = await read_topic(settings, settings.topic("events"), len(sent))
    read_at = {Position(r.partition, r.offset): codec.decode(r.value).id for r in records}
    assert read_at == {p: e.id for e, p in zip(sent, positions, strict=True)}


async def test_publish_returns_the_next_offset_of_the_partition(
    settings: Settings, producer: EventProducer
) -> None:
    task = uuid.uuid4()
    first = await producer.publish(sample_event("task.submitted", task))
    second = await producer.publish(sample_event("task.completed", task))
    assert second == Position(first.partition, first.offset + 1)


async def test_events_outside_a_task_are_keyed_by_tenant(
    settings: Settings, producer: EventProducer
) -> None:
    await producer.publish(Event.new(TaskCancelled(), tenant_id=TENANT, actor=USER))
    (record,) = await read_topic(settings, settings.topic("events"), 1)
    assert record.key == TENANT.encode()


async def test_raw_records_go_to_the_partition_asked_for(
    settings: Settings, producer: EventProducer
) -> None:
    """The DLQ and restore write raw records at chosen partitions."""
    topic = settings.topic("dlq")
    raw = Record(key=b"k", value=b"not an event", headers=(("reason", b"invalid_json"),))
    positions = await producer.send_records(topic, [raw, raw], partition=2)
    assert positions == [Position(2, 0), Position(2, 1)]
    records = await read_topic(settings, topic, 2)
    assert [(r.value, dict(r.headers)["reason"]) for r in records] == [
        (b"not an event", b"invalid_json")
    ] * 2
    assert await producer.partitions(topic) == settings.partitions


async def test_a_stored_v1_record_is_read_as_v2_and_never_rewritten(
    settings: Settings, codec: Codec, producer: EventProducer
) -> None:
    old = Event.new(
        TaskFailedV1(reason="the disk was full"),
        tenant_id=TENANT,
        actor=USER,
        task_id=uuid.uuid4(),
    )
    await producer.publish(old)
    (record,) = await read_topic(settings, settings.topic("events"), 1)
    assert orjson.loads(record.value)["schema_version"] == 1
    assert dict(record.headers)["schema_version"] == b"1"

    read = codec.decode(record.value, tuple(record.headers))
    assert (read.id, read.type, read.schema_version) == (old.id, "task.failed", 2)
    assert read.payload == TaskFailed(reason="UNSPECIFIED", message="the disk was full")


# -- broker failures ---------------------------------------------------------------------
async def test_publishing_to_a_closed_port_is_broker_unavailable() -> None:
    """The producer starts lazily, so construction succeeds; publishing fails fast, cleanly,
    and again on retry rather than with some half-started state."""
    settings = unreachable()
    producer = EventProducer(settings, Codec())
    for _ in range(2):
        with pytest.raises(BrokerUnavailable, match=settings.kafka_bootstrap):
            async with asyncio.timeout(PATIENCE_S):
                await producer.publish(sample_event("task.submitted"))
    await producer.stop()


async def test_bootstrap_against_a_closed_port_is_broker_unavailable() -> None:
    with pytest.raises(BrokerUnavailable):
        async with asyncio.timeout(PATIENCE_S):
            await bootstrap_topics(unreachable())


async def test_log_end_against_a_closed_port_is_broker_unavailable() -> None:
    settings = unreachable()
    with pytest.raises(BrokerUnavailable):
        async with asyncio.timeout(PATIENCE_S):
            await log_end_offsets(settings, settings.topic("events"), timeout_s=2)


# -- the log end -------------------------------------------------------------------------
async def test_log_end_counts_every_record_of_a_batch(
    settings: Settings, producer: EventProducer
) -> None:
    """Fifty records of one key go out in one batch; the embedded broker's ListOffsets answers
    the batch's base offset + 1 for that, and log_end_offsets must still say fifty."""
    task = uuid.uuid4()
    sent = [
        Event.new(TaskCancelled(reason=f"{n}"), tenant_id=TENANT, actor=USER, task_id=task)
        for n in range(50)
    ]
    positions = await producer.publish_many(sent)
    partition = positions[0].partition
    assert positions[-1] == Position(partition, 49)

    ends = await log_end_offsets(settings, settings.topic("events"))
    assert ends == {p: (50 if p == partition else 0) for p in range(settings.partitions)}


async def test_log_end_follows_several_partitions(
    settings: Settings, producer: EventProducer
) -> None:
    positions = await producer.publish_many([sample_event("task.cancelled") for _ in range(30)])
    expected = {p: 0 for p in range(settings.partitions)}
    for position in positions:
        expected[position.partition] = max(expected[position.partition], position.offset + 1)
    assert await log_end_offsets(settings, settings.topic("events")) == expected
    assert sum(expected.values()) == 30


async def test_log_end_of_a_missing_topic_is_a_config_error(
    settings: Settings, topics: dict[str, int]
) -> None:
    with pytest.raises(TopicConfigError, match="wrenchai topics create"):
        await log_end_offsets(settings, settings.topic("nothing-here"), timeout_s=5)
