"""How fast the projector catches up, against a bare baseline on the same records.

Publishes N events (default 100,000), then times:
- the projector: decode and validate (with decryption), archive with the hash chain, apply the
  read models and store offsets, one transaction per batch;
- the baseline: an aiokafka consumer that COPYs the same raw records into a plain table with
  asyncpg, with no validation, no hash chain and no read models.
Both run on the embedded broker and embedded Postgres started here. Prints both rates, their
ratio, and the CPU each run took per record (this process, Postgres, the broker) with what
the rest of the machine was doing meanwhile: on a shared machine the rates move with the
neighbours' load, the CPU per record much less.

The events are task.submitted by default (one read model row each); ``--workload lifecycle``
publishes whole task lifecycles (planning, a step with its tool call, an evaluation,
progress, completion: twelve events a task, touching every read model of wrench.events),
200 tasks interleaved at random as on a live log.

The projector's progress is read from its stored offsets, which cost Postgres nothing to
read, rather than by counting event_log, whose count(*) grows with the archive and took a
Postgres core away from the projector it was timing.

Usage: python bench/projector.py [--events N] [--batch-size N] [--workload submitted|lifecycle]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import psutil
from pydantic import SecretStr

from events import (
    Actor,
    AllocatedTool,
    AssignedRole,
    CheckResult,
    EvaluationRecorded,
    Event,
    EventProducer,
    PlanCreated,
    PlanEstimate,
    PlanStage,
    ProgressUpdated,
    RolesAssigned,
    RoleTools,
    StepCompleted,
    StepStarted,
    TaskCompleted,
    TaskSubmitted,
    ThoughtRecorded,
    ToolCalled,
    ToolReturned,
    ToolsAllocated,
    bootstrap_topics,
    codec_from_settings,
    create_consumer,
    generate_key,
)
from projections import EVENTS, run_projector
from projections._migrate import migrate
from wrenchai.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from wrenchai.logging import configure_logging
from wrenchai.settings import Settings

USER = Actor(kind="user", id="bench")
AGENT = Actor(kind="agent", id="bench-agent")


def submitted(i: int) -> Event:
    return Event.new(
        TaskSubmitted(description=f"benchmark task {i}", constraints={"i": i}),
        tenant_id="bench",
        actor=USER,
        task_id=uuid.uuid4(),
    )


def lifecycle(i: int) -> list[Event]:
    """One task from submission to completion through one stage, as the agents log it."""
    first = submitted(i)
    stage = PlanStage(
        id="search",
        role="researcher",
        tools=["web.search"],
        tool_version="1.0.0",
        tool_input={"query": f"question {i}"},
        success_criteria=["three sources"],
        timeout=60,
        estimate=PlanEstimate(seconds=5.0, cost_usd=0.001),
    )
    payloads = [
        ThoughtRecorded(operation="plan", number=1, text=f"search first for task {i}"),
        RolesAssigned(roles=[AssignedRole(name="researcher", score=0.8)], reasoner="rule"),
        ToolsAllocated(
            roles=[
                RoleTools(
                    role="researcher",
                    tools=[
                        AllocatedTool(
                            tool="web.search", version="1.0.0", need="required_tool",
                            reliability=0.9, score=0.5,
                        )
                    ],
                )
            ]
        ),
        PlanCreated(playbook="research", stages=[stage], total=stage.estimate),
        StepStarted(
            stage_id="search", attempt=1, tool="web.search", tool_version="1.0.0",
            input={"query": f"question {i}"}, idempotency_key=f"{first.task_id}:search:1",
        ),
        ToolCalled(
            stage_id="search", attempt=1, tool="web.search", version="1.0.0",
            input_hash="ab" * 32, idempotency_key=f"{first.task_id}:search:1",
        ),
        ToolReturned(
            stage_id="search", attempt=1, tool="web.search", version="1.0.0", outcome="ok",
            duration_s=1.5, result={"text": f"answer {i}"}, input_hash="ab" * 32,
            task_type="research", cost_usd=0.001,
        ),
        StepCompleted(stage_id="search", attempt=1, output={"text": f"answer {i}"}, duration_s=2),
        EvaluationRecorded(
            stage_id="search", attempt=1, role="researcher", tool="web.search",
            checks=[CheckResult(name="sources", passed=True)], prior_alpha=1.0,
            prior_beta=1.0, prior_source="default", quality_score=0.8, interval=[0.6, 0.9],
            confidence=0.9, threshold=0.6, decision="accept", reason="1 of 1 checks passed",
        ),
        ProgressUpdated(stages_done=1, stages_total=1, elapsed_s=3.0, estimated_s=5.0),
        TaskCompleted(output={"report": f"answer {i}"}, summary="one source"),
    ]  # fmt: skip
    return [first, *(first.derive(p, step=f"{n}", actor=AGENT) for n, p in enumerate(payloads))]


IN_FLIGHT = 200
"""Tasks whose lifecycles interleave on the log at any moment in the lifecycle workload."""


def workload(kind: str, count: int) -> Iterator[list[Event]]:
    """``count`` events in chunks of about 5,000. Lifecycles interleave as concurrent tasks
    do on a live log: each next event comes from one of ``IN_FLIGHT`` tasks drawn at random
    (seeded, so every run publishes the same mix), and a task that ends makes room for a
    new one."""
    if kind == "submitted":
        for start in range(0, count, 5_000):
            yield [submitted(i) for i in range(start, min(start + 5_000, count))]
        return
    draw = random.Random(0)
    started = 0
    in_flight: list[Iterator[Event]] = []
    chunk: list[Event] = []
    for _ in range(count):
        while len(in_flight) < IN_FLIGHT:
            in_flight.append(iter(lifecycle(started)))
            started += 1
        task = draw.randrange(len(in_flight))
        event = next(in_flight[task], None)
        if event is None:  # that task has ended: a new one takes its place
            in_flight[task] = iter(lifecycle(started))
            started += 1
            event = next(in_flight[task])
        chunk.append(event)
        if len(chunk) == 5_000:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def publish(settings: Settings, kind: str, count: int) -> None:
    producer = EventProducer(settings, codec_from_settings(settings))
    try:
        for chunk in workload(kind, count):
            await producer.publish_many(chunk)
    finally:
        await producer.stop()


@dataclass
class CpuClock:
    """CPU seconds spent by this process, the embedded Postgres (its server and every
    backend, exited ones included) and the broker, and by the whole machine, since start."""

    postgres: psutil.Process
    broker: psutil.Process

    def read(self) -> dict[str, float]:
        here = psutil.Process().cpu_times()
        machine = psutil.cpu_times()
        return {
            "this process": here.user + here.system,
            "Postgres": _with_children(self.postgres),
            "broker": _with_children(self.broker),
            "machine": sum(machine) - machine.idle - getattr(machine, "iowait", 0.0),
        }

    def window(self) -> CpuWindow:
        return CpuWindow(self, self.read(), time.perf_counter())


@dataclass
class CpuWindow:
    """The CPU spent from its start until :meth:`close`, which a run calls while its
    connections are still open (a backend's CPU is counted once Postgres has reaped it)."""

    clock: CpuClock
    start: dict[str, float]
    started: float
    spent: dict[str, float] | None = None
    wall: float = 0.0

    def close(self) -> None:
        end = self.clock.read()
        self.spent = {name: end[name] - self.start[name] for name in end}
        self.wall = time.perf_counter() - self.started

    def line(self, count: int) -> str:
        assert self.spent is not None
        ours = sum(v for k, v in self.spent.items() if k != "machine")
        others = max(self.spent["machine"] - ours, 0.0) / self.wall
        per = {name: self.spent[name] / count * 1e6 for name in self.spent}
        return (
            f"           CPU per record: {per['this process']:,.0f} us this process, "
            f"{per['Postgres']:,.0f} us Postgres, {per['broker']:,.0f} us broker; meanwhile the "
            f"rest of the machine kept {others:.1f} of its {psutil.cpu_count()} cores busy"
        )


def _with_children(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in proc.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return float(total)


async def time_projector(settings: Settings, count: int, cpu: CpuWindow) -> float:
    conn = await asyncpg.connect(settings.database_dsn())
    stop = asyncio.Event()
    task = asyncio.create_task(run_projector(settings, stop=stop))
    started: float | None = None
    try:
        # The clock starts at the first archived record, so the group join is not counted.
        while (done := await _projected(conn, settings)) < count:
            if started is None and done:
                started = time.perf_counter()
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        cpu.close()
        return time.perf_counter() - (started or time.perf_counter())
    finally:
        stop.set()
        await task
        await conn.close()


async def _projected(conn: asyncpg.Connection, settings: Settings) -> int:
    """Records of wrench.events the projector has committed: its stored offsets, summed."""
    return int(
        await conn.fetchval(
            "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets"
            " WHERE group_id = $1 AND topic = $2",
            EVENTS.group(settings),
            EVENTS.topic(settings),
        )
    )


async def time_baseline(settings: Settings, count: int, cpu: CpuWindow) -> float:
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
        cpu.close()
        return time.perf_counter() - (started or time.perf_counter())
    finally:
        await consumer.stop()
        await conn.close()


async def main(count: int, batch_size: int, kind: str) -> None:
    with tempfile.TemporaryDirectory(prefix="wrench-bench-") as tmp:
        state = Path(tmp)
        broker = EmbeddedBroker(free_port(), state / "tansu.log")
        postgres = EmbeddedPostgres(state / "pg", free_port(), state / "pg.log", "bench")
        broker.start()
        postgres.start()
        try:
            assert broker.proc is not None and postgres.proc is not None
            clock = CpuClock(psutil.Process(postgres.proc.pid), psutil.Process(broker.proc.pid))
            settings = Settings(
                kafka_bootstrap=broker.bootstrap,
                kafka_idempotent=False,  # the embedded broker refuses InitProducerId
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
            await publish(settings, kind, count)
            print(f"published {count:,} events ({kind}) in {time.perf_counter() - t0:.1f}s")
            projector_cpu = clock.window()
            projector_s = await time_projector(settings, count, projector_cpu)
            baseline_cpu = clock.window()
            baseline_s = await time_baseline(settings, count, baseline_cpu)
        finally:
            broker.stop()
            postgres.stop()
    projector_rate, baseline_rate = count / projector_s, count / baseline_s
    print(
        f"projector: {count:,} events in {projector_s:.1f}s = {projector_rate:,.0f} events/s "
        "(from the first record archived to the last)"
    )
    print(projector_cpu.line(count))
    print(
        f"baseline : {count:,} records in {baseline_s:.1f}s = {baseline_rate:,.0f} records/s "
        "(aiokafka + COPY, no validation, no read models)"
    )
    print(baseline_cpu.line(count))
    print(f"ratio    : projector runs at {projector_rate / baseline_rate:.2f}x the baseline")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--workload", choices=("submitted", "lifecycle"), default="submitted")
    args = parser.parse_args()
    asyncio.run(main(args.events, args.batch_size, args.workload))
