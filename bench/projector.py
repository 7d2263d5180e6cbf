"""How fast the projector catches up, against a bare baseline on the same records.

Publishes N task.submitted events (default 100,000), then times:
- the projector: decode and validate (with decryption), archive with the hash chain, apply the
  read models and store offsets, one transaction per batch;
- the baseline: an aiokafka consumer that COPYs the same raw records into a plain table with
  asyncpg, with no validation, no hash chain and no read models.
Both run on the embedded broker and embedded Postgres started here. Prints both rates and
their ratio. Usage: python bench/projector.py [--events N] [--batch-size N]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
from pydantic import SecretStr

from events import (
    Actor,
    Event,
    EventProducer,
    TaskSubmitted,
    bootstrap_topics,
    codec_from_settings,
    create_consumer,
    generate_key,
)
from projections import run_projector
from projections._migrate import migrate
from wrenchai.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from wrenchai.logging import configure_logging
from wrenchai.settings import Settings


async def publish(settings: Settings, count: int) -> None:
    producer = EventProducer(settings, codec_from_settings(settings))
    actor = Actor(kind="user", id="bench")
    try:
        for start in range(0, count, 5_000):
            await producer.publish_many(
                Event.new(
                    TaskSubmitted(description=f"benchmark task {i}", constraints={"i": i}),
                    tenant_id="bench",
                    actor=actor,
                    task_id=uuid.uuid4(),
                )
                for i in range(start, min(start + 5_000, count))
            )
    finally:
        await producer.stop()


async def time_projector(settings: Settings, count: int) -> float:
    conn = await asyncpg.connect(settings.database_dsn())
    stop = asyncio.Event()
    task = asyncio.create_task(run_projector(settings, stop=stop))
    started: float | None = None
    try:
        # The clock starts at the first archived record, so the group join is not counted.
        while (done := await conn.fetchval("SELECT count(*) FROM event_log")) < count:
            if started is None and done:
                started = time.perf_counter()
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        return time.perf_counter() - (started or time.perf_counter())
    finally:
        stop.set()
        await task
        await conn.close()


async def time_baseline(settings: Settings, count: int) -> float:
    conn = await asyncpg.connect(settings.database_dsn())
    await conn.execute(
        'CREATE TABLE baseline (partition int, "offset" bigint, key bytea, value bytea)'
    )
    consumer = create_consumer(
        settings,
        settings.topic("events"),
        group="bench-baseline",
        max_poll_records=settings.projector_batch_size,
    )
    await consumer.start()
    copied = 0
    started: float | None = None
    try:
        while copied < count:
            batch = await consumer.getmany(
                timeout_ms=settings.projector_batch_ms, max_records=settings.projector_batch_size
            )
            rows = [(r.partition, r.offset, r.key, r.value) for rs in batch.values() for r in rs]
            if rows:
                started = started or time.perf_counter()
                await conn.copy_records_to_table("baseline", records=rows)
                copied += len(rows)
        return time.perf_counter() - (started or time.perf_counter())
    finally:
        await consumer.stop()
        await conn.close()


async def main(count: int, batch_size: int) -> None:
    with tempfile.TemporaryDirectory(prefix="wrench-bench-") as tmp:
        state = Path(tmp)
        broker = EmbeddedBroker(free_port(), state / "tansu.log")
        postgres = EmbeddedPostgres(state / "pg", free_port(), state / "pg.log", "bench")
        broker.start()
        postgres.start()
        try:
            settings = Settings(
                kafka_bootstrap=broker.bootstrap,
                database_url=SecretStr(postgres.url()),
                partitions=6,
                kafka_session_timeout_ms=6_000,
                kafka_rebalance_timeout_ms=6_000,
                projector_batch_size=batch_size,
                encryption_keys=generate_key(),  # type: ignore[arg-type]
                log_level="warning",
                log_format="console",
            )
            configure_logging(settings)
            await bootstrap_topics(settings)
            conn = await asyncpg.connect(settings.database_dsn())
            await migrate(conn)
            await conn.close()
            t0 = time.perf_counter()
            await publish(settings, count)
            print(f"published {count:,} events in {time.perf_counter() - t0:.1f}s")
            projector_s = await time_projector(settings, count)
            baseline_s = await time_baseline(settings, count)
        finally:
            broker.stop()
            postgres.stop()
    projector_rate, baseline_rate = count / projector_s, count / baseline_s
    print(
        f"projector: {count:,} events in {projector_s:.1f}s = {projector_rate:,.0f} events/s "
        "(from the first record archived to the last)"
    )
    print(
        f"baseline : {count:,} records in {baseline_s:.1f}s = {baseline_rate:,.0f} records/s "
        "(aiokafka + COPY, no validation, no read models)"
    )
    print(f"ratio    : projector runs at {projector_rate / baseline_rate:.2f}x the baseline")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.batch_size))
