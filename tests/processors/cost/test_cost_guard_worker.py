"""`wrenchai worker cost-guard` as a process on the real broker and Postgres: killed with
SIGKILL mid-stream, its successor ends with the same totals, every usage event counted once
and every threshold announced once (a repeat carries the same event id)."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from events import BudgetSet, Codec, EventProducer, create_consumer
from tests.processors.cost.test_cost_guard import set_budget, usage
from tests.processors.super.test_super_agent_worker import WorkerProcess
from wrenchai.settings import Settings

EVENTS = 400
WAIT_S = 90.0


async def _counted(db: asyncpg.Connection, at_least: int) -> int:
    deadline = time.monotonic() + WAIT_S
    while True:
        count = int(await db.fetchval("SELECT count(*) FROM cost_ledger"))
        if count >= at_least:
            return count
        assert time.monotonic() < deadline, f"only {count} of {at_least} usage events counted"
        await asyncio.sleep(0.2)


async def test_a_cost_guard_killed_mid_stream_resumes_with_the_same_totals(
    settings: Settings,
    db: asyncpg.Connection,
    producer: EventProducer,
    codec: Codec,
    tmp_path: Path,
) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    await set_budget(
        db, BudgetSet(scope="tenant", scope_id="acme", window="month", limit_tokens=EVENTS * 10)
    )
    tasks = [uuid.uuid4() for _ in range(12)]
    events = [
        usage(tasks[i % len(tasks)], start + timedelta(seconds=i), tokens=10, cost_usd=0.001)
        for i in range(EVENTS)
    ]
    await producer.publish_many(events[: EVENTS // 2])
    first = WorkerProcess(settings, tmp_path / "cost-guard-0.out", name="cost-guard")
    try:
        await _counted(db, 20)
    finally:
        first.stop(signal.SIGKILL)
    await producer.publish_many(events[EVENTS // 2 :])
    second = WorkerProcess(settings, tmp_path / "cost-guard-1.out", name="cost-guard")
    try:
        assert await _counted(db, EVENTS) == EVENTS
        row = await db.fetchrow(
            "SELECT count(DISTINCT event_id) AS n, sum(total_tokens) AS tokens FROM cost_ledger"
        )
        assert (row["n"], row["tokens"]) == (EVENTS, EVENTS * 10)
        consumer = create_consumer(settings, settings.topic("events"))
        await consumer.start()
        try:
            verdicts: dict[uuid.UUID, str] = {}
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and len(verdicts) < 4:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for r in records:
                        kind = dict(r.headers)["type"].decode()
                        if kind.startswith("budget."):
                            verdicts[uuid.UUID(dict(r.headers)["event_id"].decode())] = kind
        finally:
            await consumer.stop()
        # Its heartbeats say which partitions it reads, as every worker's do.
        admin = create_consumer(settings, settings.topic("admin"))
        await admin.start()
        try:
            beats = [
                codec.decode(r.value, tuple(r.headers))
                for records in (await admin.getmany(timeout_ms=3000)).values()
                for r in records
                if dict(r.headers)["type"] == b"agent.heartbeat"
            ]
        finally:
            await admin.stop()
        assert {b.payload.agent_id for b in beats} == {"cost-guard"}
        assert sorted({p for b in beats for p in b.payload.partitions}) == [0, 1, 2]
        # 50%, 80%, 95% and the limit, each once whatever was announced twice.
        assert sorted(verdicts.values()) == [
            "budget.exceeded",
            "budget.threshold_crossed",
            "budget.threshold_crossed",
            "budget.threshold_crossed",
        ]
    finally:
        second.stop(signal.SIGTERM)
