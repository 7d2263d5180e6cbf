"""How fast the CostGuard counts usage, against a bare consumer summing the same events.

Publishes N usage.recorded events (default 20,000) of 200 tasks of 4 tenants and 8 users, on
3 models, over one UTC day, with 6 budgets that their usage counts against (a tenant, a user
and a model budget with soft thresholds, a hard tenant budget per task...). Then times:
- the CostGuard: ``python -m wrenchai worker cost-guard`` as a user runs it, from its first
  ledger row to the N-th: decode and validate each event, enter it in the ledger once (by
  event id), read every budget it counts against and its spend in the window, publish the
  thresholds and limits it crosses, commit, ack;
- the baseline: an aiokafka consumer in the same run reading the same records, parsing each
  value as JSON and summing tokens and dollars per tenant, user and model in memory (no
  ledger, no budgets, no verdicts, nothing survives a crash).
Both on the embedded broker and embedded Postgres started here. Prints both rates, their
ratio, the verdicts published, and the CPU per event of the CostGuard's process, Postgres
and the broker.

Usage: python bench/cost.py [--events N] [--tasks N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
import psutil
from pydantic import SecretStr

from events import (
    Actor,
    BudgetSet,
    Event,
    EventProducer,
    Position,
    UsageRecorded,
    bootstrap_topics,
    codec_from_settings,
    create_consumer,
    generate_key,
)
from projections._cost_models import BudgetsModel
from projections._migrate import migrate
from projections._read_model_types import Applied
from wrenchai.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from wrenchai.logging import configure_logging
from wrenchai.settings import Settings

AGENT = Actor(kind="agent", id="journey_agent")
ADMIN = Actor(kind="user", id="bench")
TENANTS = ("acme", "globex", "initech", "umbrella")
MODELS = (("gpt-4o-mini", 0.00015), ("gpt-4o", 0.0025), ("gpt-4.1-mini", 0.0004))
DAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def usage_events(count: int, tasks: int) -> list[Event]:
    ids = [uuid.uuid4() for _ in range(tasks)]
    events = []
    for i in range(count):
        task = ids[i % tasks]
        model, per_token = MODELS[i % len(MODELS)]
        tokens_in, tokens_out = 400 + i % 300, 100 + i % 50
        events.append(
            Event.new(
                UsageRecorded(
                    operation="execute", model=model, input_tokens=tokens_in,
                    output_tokens=tokens_out, total_tokens=tokens_in + tokens_out,
                    cost_usd=round((tokens_in + tokens_out) * per_token / 1000, 8),
                    price_version="2026-11", user_id=f"user-{i % 8}", key_id=None,
                    playbook="research_report", stage_id="draft", role="writer",
                    tool="llm.complete",
                ),
                tenant_id=TENANTS[i % tasks % len(TENANTS)], actor=AGENT, task_id=task,
                occurred_at=DAY + timedelta(seconds=i * 40_000 / max(count, 1)),
            )
        )  # fmt: skip
    return events


BUDGETS = [
    ("acme", BudgetSet(scope="tenant", scope_id="acme", window="day", limit_usd=0.05)),
    ("acme", BudgetSet(scope="user", scope_id="user-0", window="month", limit_tokens=100_000)),
    ("globex", BudgetSet(scope="model", scope_id="gpt-4o", window="day", limit_usd=0.3)),
    ("globex", BudgetSet(scope="tenant", scope_id="globex", window="task", limit_usd=0.01)),
    ("initech", BudgetSet(scope="playbook", scope_id="research_report", window="hour",
                          limit_tokens=200_000, hard=False)),
    ("umbrella", BudgetSet(scope="tenant", scope_id="umbrella", window="month", limit_usd=1e6)),
]  # fmt: skip


async def set_budgets(conn: asyncpg.Connection) -> None:
    for tenant_id, budget in BUDGETS:
        event = Event.new(budget, tenant_id=tenant_id, actor=ADMIN)
        for sql, args in BudgetsModel().statements(
            Applied(event, Position(0, 0)), {"budgets": "budgets"}
        ):
            await conn.execute(sql, *args)


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in proc.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return float(total)


async def time_cost_guard(
    settings: Settings, count: int, state: Path, pg: psutil.Process, broker: psutil.Process
) -> tuple[float, dict[str, float], int]:
    """Seconds from the first ledger row to the last, CPU by process, verdicts published."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WRENCH_")}
    env.update(settings.to_env())
    out = await asyncio.to_thread((state / "cost-guard.log").open, "wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wrenchai", "worker", "cost-guard",
        stdout=out, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    guard = psutil.Process(proc.pid)
    conn = await asyncpg.connect(settings.database_dsn())
    started: float | None = None
    try:
        while True:
            done = int(await conn.fetchval("SELECT count(*) FROM cost_ledger"))
            if started is None and done:
                started = time.perf_counter()
                before = {"CostGuard": _cpu(guard), "Postgres": _cpu(pg), "broker": _cpu(broker)}
            if done >= count:
                break
            if proc.returncode is not None:
                raise SystemExit(f"the CostGuard exited ({proc.returncode}); see its log")
            await asyncio.sleep(0.05)
        seconds = time.perf_counter() - (started or time.perf_counter())
        after = {"CostGuard": _cpu(guard), "Postgres": _cpu(pg), "broker": _cpu(broker)}
        spent = {k: after[k] - before[k] for k in after}
    finally:
        await conn.close()
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
        out.close()
    verdicts = await count_verdicts(settings)
    return seconds, spent, verdicts


async def count_verdicts(settings: Settings) -> int:
    consumer = create_consumer(settings, settings.topic("events"), group="bench-verdicts")
    await consumer.start()
    found: set[bytes] = set()
    try:
        while batch := await consumer.getmany(timeout_ms=1000, max_records=5000):
            for records in batch.values():
                for r in records:
                    headers = dict(r.headers)
                    if headers.get("type", b"").startswith(b"budget."):
                        found.add(headers["event_id"])
    finally:
        await consumer.stop()
    return len(found)


async def time_baseline(settings: Settings, count: int) -> tuple[float, float]:
    """Seconds and CPU seconds of a bare consumer summing the usage in memory."""
    consumer = create_consumer(settings, settings.topic("events"), group="bench-baseline")
    await consumer.start()
    sums: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    seen = 0
    started: float | None = None
    cpu0 = 0.0
    try:
        while seen < count:
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            for records in batch.values():
                for r in records:
                    if dict(r.headers).get("type") != b"usage.recorded":
                        continue
                    if started is None:
                        started, cpu0 = time.perf_counter(), time.process_time()
                    envelope = orjson.loads(r.value)
                    p = envelope["payload"]
                    for key in (
                        (envelope["tenant_id"], p["model"]),
                        (envelope["tenant_id"], p["user_id"] or ""),
                    ):
                        sums[key][0] += p["total_tokens"]
                        sums[key][1] += p["cost_usd"] or 0.0
                    seen += 1
        return time.perf_counter() - (started or time.perf_counter()), time.process_time() - cpu0
    finally:
        await consumer.stop()


async def main(count: int, tasks: int) -> None:
    with tempfile.TemporaryDirectory(prefix="wrench-bench-") as tmp:
        state = Path(tmp)
        broker = EmbeddedBroker(free_port(), state / "tansu.log")
        postgres = EmbeddedPostgres(state / "pg", free_port(), state / "pg.log", "bench")
        broker.start()
        postgres.start()
        try:
            assert broker.proc is not None and postgres.proc is not None
            settings = Settings(
                kafka_bootstrap=broker.bootstrap,
                kafka_idempotent=False,  # the embedded broker refuses InitProducerId
                database_url=SecretStr(postgres.url()),
                partitions=6,
                kafka_session_timeout_ms=6_000,
                kafka_rebalance_timeout_ms=6_000,
                kafka_fetch_max_wait_ms=20,
                encryption_keys=generate_key(),  # type: ignore[arg-type]
                data_dir=state / "data",
                log_level="warning",
                log_format="console",
            )
            configure_logging(settings)
            await bootstrap_topics(settings)
            conn = await asyncpg.connect(settings.database_dsn())
            await migrate(conn)
            await set_budgets(conn)
            await conn.close()
            events = usage_events(count, tasks)
            producer = EventProducer(settings, codec_from_settings(settings))
            t0 = time.perf_counter()
            for start in range(0, count, 2000):
                await producer.publish_many(events[start : start + 2000])
            await producer.stop()
            print(
                f"published {count:,} usage.recorded of {tasks} tasks, {len(TENANTS)} tenants, "
                f"{len(BUDGETS)} budgets, in {time.perf_counter() - t0:.1f}s"
            )
            seconds, cpu, verdicts = await time_cost_guard(
                settings, count, state, psutil.Process(postgres.proc.pid),
                psutil.Process(broker.proc.pid),
            )  # fmt: skip
            base_s, base_cpu = await time_baseline(settings, count)
        finally:
            broker.stop()
            postgres.stop()
    rate, base_rate = count / seconds, count / base_s
    per = {k: v / count * 1e6 for k, v in cpu.items()}
    print(
        f"cost-guard: {count:,} usage events in {seconds:.1f}s = {rate:,.0f} events/s "
        f"(ledger, budgets, {verdicts} verdicts published)"
    )
    print(
        f"            CPU per event: {per['CostGuard']:,.0f} us CostGuard, "
        f"{per['Postgres']:,.0f} us Postgres, {per['broker']:,.0f} us broker"
    )
    print(
        f"baseline  : {count:,} records in {base_s:.2f}s = {base_rate:,.0f} events/s "
        f"(aiokafka + JSON, sums in memory; {base_cpu / count * 1e6:,.0f} us CPU per event)"
    )
    print(f"ratio     : the CostGuard runs at {rate / base_rate:.3f}x the baseline")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="usage events to count")
    parser.add_argument("--tasks", type=int, default=200, help="tasks they belong to")
    args = parser.parse_args()
    asyncio.run(main(args.events, args.tasks))
