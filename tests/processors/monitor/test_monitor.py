"""The ResourceMonitor end to end, on the real broker and Postgres: heartbeats through the
projector into agent_instances, the monitor beside the projector (as `wrenchai projector`
runs it), its alerts on wrench.events, in the alerts read model and at GET /alerts' query
for the platform's tenant, and in the alert handlers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import pytest

from api._database import Database
from api._inspection import list_alerts
from events import (
    SYSTEM_TENANT,
    Actor,
    AgentHeartbeat,
    Codec,
    Event,
    EventProducer,
    PartitionLag,
    Record,
    codec_from_settings,
    kafka_headers,
)
from processors.monitor import ResourceMonitor
from processors.monitor.readings import PROJECTOR_GROUPS
from projections import run_projector
from projections._streams import STREAMS
from tests.events.topic_reader import read_topic
from wrenchai.settings import Settings

WAIT_S = 30.0
STARTED = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Collected:
    """An alert handler that keeps what it is handed."""

    events: list[Event] = field(default_factory=list)
    monitor: ResourceMonitor | None = None
    """The monitor it listens to, for tests that wait until it has looked."""

    def handle(self, event: Event) -> None:
        self.events.append(event)


@pytest.fixture
def monitored(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "monitor_interval_s": 0.3,
            "monitor_lag_records": 100,
            "monitor_dlq_growth": 3,
            "monitor_memory_mb": 4_096,
            "monitor_clear_ratio": 0.5,
        }
    )


@pytest.fixture
async def running(
    monitored: Settings, topics: dict[str, int], codec: Codec, db: asyncpg.Connection
) -> AsyncIterator[tuple[EventProducer, Collected]]:
    """The projector with the monitor beside it, on a migrated database, until the test
    ends."""
    handler = Collected()
    monitor = ResourceMonitor(monitored, handlers=[handler])
    handler.monitor = monitor
    stop = asyncio.Event()
    task = asyncio.create_task(run_projector(monitored, stop=stop, companions=[monitor.run]))
    producer = EventProducer(monitored, codec_from_settings(monitored))
    try:
        yield producer, handler
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 20)
        await producer.stop()


def heartbeat(lag: int, *, rss_bytes: int | None = 200 * 1024 * 1024) -> Event:
    return Event.new(
        AgentHeartbeat(
            agent_id="journey-agent",
            instance="host-a:41",
            started_at=STARTED,
            interval_s=10,
            partitions=[0, 1],
            lag=[
                PartitionLag(partition=0, committed=0, high_watermark=lag, lag=lag),
                PartitionLag(partition=1, committed=3, high_watermark=3, lag=0),
            ],
            rss_bytes=rss_bytes,
        ),
        tenant_id=SYSTEM_TENANT,
        actor=Actor(kind="agent", id="journey-agent"),
    )


async def eventually(check: Callable[[], Awaitable[Any]], what: str) -> Any:
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not (found := await check()):
        assert asyncio.get_running_loop().time() < deadline, f"{what}: not within {WAIT_S}s"
        await asyncio.sleep(0.2)
    return found


async def alert_row(settings: Settings, code: str, status: str) -> asyncpg.Record | None:
    conn = await asyncpg.connect(settings.database_dsn())
    try:
        return await conn.fetchrow(
            "SELECT * FROM alerts WHERE tenant_id = $1 AND code = $2 AND status = $3",
            SYSTEM_TENANT,
            code,
            status,
        )
    finally:
        await conn.close()


async def test_lag_above_the_threshold_raises_consumer_lag_and_lag_back_down_clears_it(
    monitored: Settings, running: tuple[EventProducer, Collected]
) -> None:
    producer, handler = running
    group = monitored.group("journey-agent")
    await producer.publish(heartbeat(lag=500))
    raised = await eventually(
        lambda: alert_row(monitored, "CONSUMER_LAG", "open"), "CONSUMER_LAG in the read model"
    )
    assert raised["task_id"] is None and raised["level"] == "warning"
    assert raised["alert_id"] == f"platform:CONSUMER_LAG:{group}:1"
    assert "500" in raised["message"]

    # The platform's tenant reads it through the API's query, as the API's role does.
    database = Database(monitored, role=monitored.api_database_role)
    try:
        async with database.tenant(SYSTEM_TENANT) as conn:
            alerts, _ = await list_alerts(conn, SYSTEM_TENANT, code=["CONSUMER_LAG"])
        async with database.tenant("acme") as conn:
            others, _ = await list_alerts(conn, "acme")
    finally:
        await database.close()
    assert [(a.alert_id, a.task_id, a.status) for a in alerts] == [
        (raised["alert_id"], None, "open")
    ]
    assert others == []

    await producer.publish(heartbeat(lag=20))
    cleared = await eventually(
        lambda: alert_row(monitored, "CONSUMER_LAG", "cleared"), "CONSUMER_LAG cleared"
    )
    assert cleared["alert_id"] == raised["alert_id"]
    assert "20" in cleared["clear_reason"]

    # On the log: one raise and one clear, platform events with no task.
    records = await read_topic(monitored, monitored.topic("events"), 2)
    codec = codec_from_settings(monitored)
    await codec.prepare_records(r.value for r in records)
    events = [codec.decode(r.value, kafka_headers(r.headers)) for r in records]
    alerts_on_log = [e for e in events if e.type.startswith("alert.")]
    assert [e.type for e in alerts_on_log] == ["alert.raised", "alert.cleared"]
    assert all(e.tenant_id == SYSTEM_TENANT and e.task_id is None for e in alerts_on_log)
    # And the handlers had each once.
    assert [e.id for e in handler.events] == [e.id for e in alerts_on_log]


async def test_records_added_to_the_dlq_beyond_the_threshold_raise_dlq_growth(
    monitored: Settings, running: tuple[EventProducer, Collected]
) -> None:
    producer, handler = running
    dlq = monitored.topic("dlq")
    monitor = handler.monitor
    assert monitor is not None

    async def looked() -> bool:
        return bool(monitor.dlq.samples)

    # The monitor has seen the DLQ empty before the records arrive: however slow its first
    # reading, their arrival is growth, not where it started.
    await eventually(looked, "a first reading of the DLQ")
    bad = [Record(b"k", b"not json", (("dlq.reason", b"invalid_json"),)) for _ in range(5)]
    await producer.send_records(dlq, bad)
    row = await eventually(lambda: alert_row(monitored, "DLQ_GROWTH", "open"), "DLQ_GROWTH")
    assert row["task_id"] is None and orjson.loads(row["details"])["value"] == 5
    assert row["alert_id"] == f"platform:DLQ_GROWTH:{dlq}:1"
    assert [e.type for e in handler.events] == ["alert.raised"]


async def test_a_worker_above_the_memory_threshold_raises_memory_high(
    monitored: Settings, running: tuple[EventProducer, Collected]
) -> None:
    producer, _ = running
    await producer.publish(heartbeat(lag=0, rss_bytes=5 * 1024**3))
    row = await eventually(lambda: alert_row(monitored, "MEMORY_HIGH", "open"), "MEMORY_HIGH")
    assert row["alert_id"] == "platform:MEMORY_HIGH:journey-agent@host-a:41:1"
    assert orjson.loads(row["details"])["rss_bytes"] == 5 * 1024**3


def test_the_projector_groups_measured_are_the_projectors_streams() -> None:
    assert {(s.name, s.group_name) for s in STREAMS} == set(PROJECTOR_GROUPS)
