"""What the JourneyAgent's orchestration costs per step, against a plain asyncio loop.

Starts the embedded broker, a SuperAgent, a JourneyAgent and an InspectorAgent worker (real
processes, the offline reasoner; the InspectorAgent accepts each step's output, as it must
before the next step runs), and submits N tasks (default 200) whose playbook is five chained steps
of ``bench.noop`` (bench/noop_tool.py), a tool that does nothing. From the log it measures:

- overhead per step: from the event that made a step runnable (plan.created for the first,
  the previous step.completed for the others) to that step's step.completed, minus the
  tool's own time (tool.returned's duration_s): the decision, the events and their round
  trips through the broker. Printed as p50 and p99 in milliseconds;
- tasks per second: tasks completed over the time from the first submission to the last
  task.completed;
- the floor, in the same run: a plain asyncio loop that calls the same tool five times per
  task, with no log, no events and no decisions.

Usage: python bench/journey.py [--tasks N] [--concurrency N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

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
from wrenchai.embedded import EmbeddedBroker, free_port
from wrenchai.settings import Settings

STEPS = 5
HERE = Path(__file__).resolve().parent


def playbook() -> dict[str, Any]:
    steps = [
        {
            "id": f"s{i}",
            "tool": "bench.noop",
            "role": "coder",
            "input": {"n": i},
            "depends_on": [f"s{i - 1}"] if i > 1 else [],
        }
        for i in range(1, STEPS + 1)
    ]
    return {"name": "bench", "steps": steps}


def start_worker(settings: Settings, name: str, logs: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WRENCH_")}
    env.update(settings.to_env())
    env["PYTHONPATH"] = str(HERE)
    with open(logs / f"{name}.log", "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "wrenchai", "worker", name],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


async def submit(settings: Settings, count: int, label: str = "benchmark") -> float:
    producer = EventProducer(settings, codec_from_settings(settings))
    actor = Actor(kind="user", id="bench")
    started = time.monotonic()
    await producer.publish_many(
        Event.new(
            TaskSubmitted(
                description=f"{label} {i}",
                constraints={"playbook": playbook()},
                grants=["playbooks:inline"],  # an inline playbook of bench.noop: no code
            ),
            tenant_id="bench",
            actor=actor,
            task_id=uuid.uuid4(),
        )
        for i in range(count)
    )
    await producer.stop()
    return started


async def collect(settings: Settings, count: int, timeout_s: float) -> list[Event]:
    """Every event of the run, once ``count`` tasks are completed or failed."""
    codec = codec_from_settings(settings)
    consumer = create_consumer(settings, settings.topic("events"))
    await consumer.start()
    events: list[Event] = []
    done = 0
    deadline = time.monotonic() + timeout_s
    try:
        while done < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {done} of {count} tasks finished in {timeout_s:.0f}s")
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                await codec.prepare_records(m.value for m in messages)
                for message in messages:
                    event = codec.decode(message.value, tuple(message.headers))
                    events.append(event)
                    done += event.type in ("task.completed", "task.failed")
    finally:
        await consumer.stop()
    return events


def overheads(events: list[Event]) -> list[float]:
    """Per step, in ms: runnable → completed, minus the tool's own time."""
    by_task: dict[uuid.UUID | None, list[Event]] = {}
    for event in events:
        by_task.setdefault(event.task_id, []).append(event)
    found: list[float] = []
    for items in by_task.values():
        if items[0].type != "task.submitted" or items[0].payload.description.startswith("warm"):  # type: ignore[attr-defined]
            continue
        ready = next((e.occurred_at for e in items if e.type == "plan.created"), None)
        tool_s: dict[str, float] = {}
        for event in items:
            payload: Any = event.payload
            if event.type == "tool.returned":
                tool_s[payload.stage_id] = payload.duration_s
            if event.type == "step.completed" and ready is not None:
                span = (event.occurred_at - ready).total_seconds()
                found.append((span - tool_s.get(payload.stage_id, 0.0)) * 1000)
                ready = event.occurred_at
    return found


async def floor(count: int) -> tuple[float, float]:
    """(tasks per second, ms per call) of a plain asyncio loop calling the tool."""
    sys.path.insert(0, str(HERE))
    from noop_tool import Noop

    tool = Noop()
    started = time.perf_counter()

    async def task() -> None:
        for i in range(1, STEPS + 1):
            await tool.call({"n": i})

    await asyncio.gather(*(task() for _ in range(count)))
    took = time.perf_counter() - started
    return count / took, took / (count * STEPS) * 1000


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def main(args: argparse.Namespace) -> None:
    state = Path(tempfile.mkdtemp(prefix="wrench-bench-"))
    broker = EmbeddedBroker(free_port(), state / "tansu.log")
    broker.start()
    workers: list[subprocess.Popen[bytes]] = []
    try:
        settings = Settings(
            kafka_bootstrap=broker.bootstrap,
            namespace=f"bench{uuid.uuid4().hex[:6]}.",
            partitions=args.partitions,
            kafka_session_timeout_ms=6_000,
            kafka_rebalance_timeout_ms=6_000,
            kafka_fetch_max_wait_ms=20,
            encryption_keys=generate_key(),  # type: ignore[arg-type]
            agent_concurrency=args.concurrency,
            tool_modules="noop_tool",
            log_level="warning",
        )
        await bootstrap_topics(settings)
        workers = [
            start_worker(settings, n, state)
            for n in ("super-agent", "journey-agent", "inspector-agent")
        ]
        # A warm-up task, so the workers' group joins are not timed.
        await submit(settings, 1, "warm-up")
        await collect(settings, 1, timeout_s=60)
        started = await submit(settings, args.tasks)
        events = await collect(settings, args.tasks + 1, timeout_s=600)
        finished = [e for e in events if e.type in ("task.completed", "task.failed")]
        failed = sum(e.type == "task.failed" for e in finished)
        took = time.monotonic() - started
        steps = overheads(events)
        rate, per_call = await floor(args.tasks)
        print(f"{args.tasks} tasks x {STEPS} steps of bench.noop, {args.partitions} partitions")
        print(f"  journey agent: {args.tasks / took:8.1f} tasks/s ({failed} failed)")
        print(
            f"  overhead/step: p50 {percentile(steps, 50):7.1f} ms   "
            f"p99 {percentile(steps, 99):7.1f} ms   ({len(steps)} steps)"
        )
        print(f"  floor (asyncio loop, same tool): {rate:10.1f} tasks/s, {per_call:.4f} ms/call")
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(15)
        broker.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--partitions", type=int, default=6)
    asyncio.run(main(parser.parse_args()))
