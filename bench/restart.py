"""How long a restarted JourneyAgent worker takes to decide again, and its memory, with a long
history on the log: 1,000 completed tasks against 100,000.

The requirement: with 100,000 completed tasks on the log a restarted worker is deciding again
within 5 s, and its resident memory is within 20% of the same worker with 1,000 completed
tasks. A worker holds only its tasks in flight and restores them from its snapshot
(worker_snapshots), so neither should grow with the history.

One embedded broker (Tansu) and one embedded Postgres (migrated) serve both sizes, each in a
namespace of its own (its topics, consumer group and snapshots). For each size, the smaller
(--small, default 1,000) first:

1. the fill: N completed tasks' histories published straight to wrench.events. One task's
   history is built with the event payload classes and ``Event.derive`` as the agents emit
   it (task.submitted; roles.assigned, tools.allocated, plan.created; per stage of an inline
   playbook of --stages chained ``bench.noop`` steps: step.started, tool.called,
   tool.returned, step.completed, evaluation.recorded, progress.updated; task.completed)
   and encoded once with the stack's codec (per-tenant keys, sensitive fields encrypted);
   every task is that history with fresh ids (task, events, correlation and causation ids,
   the key and the event_id header; the timestamps and ciphertexts stay the template's), so
   each record costs the worker a real decode and decryption while the fill costs a string
   substitution. Printed: records, bytes, records/s.
2. three starts of ``python -m wrenchai worker journey-agent``, a real process with the dev
   stack's settings (wrenchai.stack.DEV_DEFAULTS: a group join held ~3 s by the embedded
   broker, fetches waiting 20 ms), WRENCH_REQUIRE_ACCEPTANCE=false (no InspectorAgent runs),
   WRENCH_SNAPSHOT_INTERVAL_S=1 and WRENCH_TOOL_MODULES=noop_tool:
   - first start, the baseline: no snapshot and no committed offset, so it replays the
     whole log; then stopped with SIGTERM (which saves a last snapshot);
   - restart after SIGTERM; then, once a snapshot covers the log, killed with SIGKILL;
   - restart after SIGKILL (no last snapshot, no clean leave of the consumer group).
   Before each start a probe task is published: task.submitted and the plan.created of one
   ``bench.noop`` stage. "Deciding" is that stage's step.started: from the moment the
   process is spawned to the step.started's occurred_at (stamped by the worker when it
   decides), so it holds Python's start, faust's, the group join, the snapshot's restore
   and the catch-up. Where the time went: the process's first connection to the broker
   (its imports and faust's start are over), then the worker's own log lines (partitions
   assigned, the last partition restored, the last caught up); with the process's CPU
   seconds by then, since the wall time on a busy machine is mostly waiting for a core.
   Resident memory (psutil RSS) is read as soon as the step.started is seen on the log,
   with the peak so far (VmHWM). Each start ends once the probe is completed and a
   snapshot covers the log.

Printed last: the restart of N against the requirement (5 s), its RSS against the small
size's (within 20%), and the first start of each size as the baseline of what the snapshot
saves. Nothing is asserted. The machine's load average is printed at the start and the end:
the figures are wall-clock times on a shared machine.

Usage: python bench/restart.py [--tasks N] [--small N] [--stages N] [--snapshot-interval S]
       [--timeout S] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import psutil
from aiokafka import TopicPartition
from pydantic import SecretStr

from events import (
    Actor,
    AllocatedTool,
    AssignedRole,
    CheckResult,
    Codec,
    EvaluationRecorded,
    Event,
    EventProducer,
    PlanCreated,
    PlanEstimate,
    PlanStage,
    ProgressUpdated,
    Record,
    RolesAssigned,
    RoleTools,
    StepCompleted,
    StepStarted,
    TaskCompleted,
    TaskSubmitted,
    ToolCalled,
    ToolReturned,
    ToolsAllocated,
    bootstrap_topics,
    codec_from_settings,
    create_consumer,
    log_end_offsets,
)
from processors.shared.tool_usage import input_hash
from projections._migrate import migrate
from wrenchai._state import secret_files, with_generated_secrets
from wrenchai.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from wrenchai.logging import configure_logging
from wrenchai.settings import Settings
from wrenchai.stack import DEV_DEFAULTS, child_environment

HERE = Path(__file__).resolve().parent
WORKER = "journey-agent"
TENANT = "bench"
TOOL, VERSION = "bench.noop", "1.0.0"
USER = Actor(kind="user", id="bench")
SUPER = Actor(kind="agent", id="super-agent")
JOURNEY = Actor(kind="agent", id="journey-agent")
INSPECTOR = Actor(kind="agent", id="inspector-agent")
CHUNK = 20_000
"""Records handed to the producer per call during the fill."""
RESTART_LIMIT_S = 5.0
RSS_LIMIT = 0.20
UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


# -- one task's history, as the agents write it --------------------------------------------------
def plan(stages: int) -> PlanCreated:
    steps = [
        PlanStage(
            id=f"s{i}",
            role="coder",
            tools=[TOOL],
            tool_version=VERSION,
            depends_on=[f"s{i - 1}"] if i > 1 else [],
            inputs=[f"s{i - 1}"] if i > 1 else [],
            tool_input={"n": i},
            success_criteria=["returns its input"],
            timeout=60,
            estimate=PlanEstimate(seconds=0.001),
        )
        for i in range(1, stages + 1)
    ]
    total = PlanEstimate(seconds=0.001 * stages)
    return PlanCreated(
        playbook="bench", stages=steps, total=total, critical_path_seconds=total.seconds
    )


def submitted(stages: int, description: str, at: datetime) -> Event:
    steps = [
        {"id": f"s{i}", "tool": TOOL, "role": "coder", "input": {"n": i}}
        | ({"depends_on": [f"s{i - 1}"]} if i > 1 else {})
        for i in range(1, stages + 1)
    ]
    payload = TaskSubmitted(
        description=description,
        constraints={"playbook": {"name": "bench", "steps": steps}},
        grants=["playbooks:inline"],
    )
    return Event.new(payload, tenant_id=TENANT, actor=USER, task_id=uuid.uuid4(), occurred_at=at)


def history(stages: int, at: datetime) -> list[Event]:
    """A completed task of ``stages`` chained bench.noop stages, each accepted."""
    tick = (at + timedelta(milliseconds=3 * i) for i in itertools.count())
    task = submitted(stages, "restart benchmark: a completed task of the history", next(tick))
    role = AssignedRole(name="coder", reason="the playbook names it", score=1.0, source="playbook")
    allocated = AllocatedTool(
        tool=TOOL, version=VERSION, need="required_tool", reliability=0.5, score=1.0
    )
    events = [
        task,
        task.derive(
            RolesAssigned(roles=[role], reasoner="rule"),
            step="roles.assigned",
            actor=SUPER,
            occurred_at=next(tick),
        ),
        task.derive(
            ToolsAllocated(roles=[RoleTools(role="coder", tools=[allocated])]),
            step="tools.allocated",
            actor=SUPER,
            occurred_at=next(tick),
        ),
    ]
    made = task.derive(plan(stages), step="plan.created", actor=SUPER, occurred_at=next(tick))
    events.append(made)
    outputs: dict[str, Any] = {}
    for i in range(1, stages + 1):
        sid, tool_input = f"s{i}", {"n": i}
        key, digest = f"{task.task_id}:{sid}:1", input_hash(tool_input)
        started = StepStarted(
            stage_id=sid,
            attempt=1,
            tool=TOOL,
            tool_version=VERSION,
            input=tool_input,
            idempotency_key=key,
        )
        called = ToolCalled(
            stage_id=sid,
            attempt=1,
            tool=TOOL,
            version=VERSION,
            input_hash=digest,
            idempotency_key=key,
        )
        returned = ToolReturned(
            stage_id=sid,
            attempt=1,
            tool=TOOL,
            version=VERSION,
            outcome="ok",
            duration_s=0.000021,
            result=tool_input,
            input_hash=digest,
            task_type="bench",
        )
        for payload, name in (
            (started, "started"),
            (called, "tool.called"),
            (returned, "tool.returned"),
        ):
            events.append(
                made.derive(payload, step=f"{sid}/1/{name}", actor=JOURNEY, occurred_at=next(tick))
            )
        completed = made.derive(
            StepCompleted(stage_id=sid, attempt=1, output=tool_input, duration_s=0.0004),
            step=f"{sid}/1/completed",
            actor=JOURNEY,
            occurred_at=next(tick),
        )
        events.append(completed)
        verdict = EvaluationRecorded(
            stage_id=sid,
            attempt=1,
            role="coder",
            tool=TOOL,
            checks=[
                CheckResult(name="schema", passed=True),
                CheckResult(name="non_empty", passed=True),
            ],
            prior_alpha=2.0,
            prior_beta=1.0,
            prior_source="default",
            quality_score=0.8,
            interval=[0.472871, 0.983048],
            confidence=0.8704,
            threshold=0.6,
            decision="accept",
            reason="quality 0.80 above the threshold with confidence 0.87",
        )
        events.append(
            completed.derive(verdict, step="evaluation", actor=INSPECTOR, occurred_at=next(tick))
        )
        progress = ProgressUpdated(
            stages_done=i, stages_total=stages, elapsed_s=0.003 * i, estimated_s=0.001 * stages
        )
        events.append(
            made.derive(progress, step=f"progress/{i}", actor=JOURNEY, occurred_at=next(tick))
        )
        outputs[sid] = tool_input
    output = {"final": outputs[f"s{stages}"], "final_stage": f"s{stages}", "stages": outputs}
    done = TaskCompleted(output=output, summary=f"{stages} of {stages} stages completed in 0.1 s")
    events.append(made.derive(done, step="task.completed", actor=JOURNEY, occurred_at=next(tick)))
    return events


@dataclass
class Template:
    """One task's encoded records, with every id of the task left as a slot: a record's
    value is ``value % ids``, its key ``ids[0]`` (the task id)."""

    slots: int
    records: list[tuple[bytes, tuple[int, ...], tuple[tuple[str, bytes | int], ...]]]

    @classmethod
    def of(cls, events: list[Event], codec: Codec) -> Template:
        known = [str(events[0].task_id).encode()]
        for event in events:
            known.append(str(event.id).encode())
        index = {value: i for i, value in enumerate(known)}
        records = []
        for event in events:
            record = codec.encode(event)
            parts, slots, at = [], [], 0
            for match in UUID.finditer(record.value):
                if match.group(0) in index:  # never a look-alike inside a ciphertext
                    parts.append(record.value[at : match.start()].replace(b"%", b"%%"))
                    slots.append(index[match.group(0)])
                    at = match.end()
            parts.append(record.value[at:].replace(b"%", b"%%"))
            headers = tuple(
                (name, index[value] if name == "event_id" else value)
                for name, value in record.headers
            )
            records.append((b"%b".join(parts), tuple(slots), headers))
        return cls(len(known), records)

    def task(self) -> list[Record]:
        """The history of a new task: the template with fresh ids."""
        ids = [str(uuid.uuid4()).encode() for _ in range(self.slots)]
        return [
            Record(
                key=ids[0],
                value=value % tuple(ids[i] for i in slots),
                headers=tuple(
                    (name, ids[raw] if isinstance(raw, int) else raw) for name, raw in headers
                ),
            )
            for value, slots, headers in self.records
        ]


async def fill(settings: Settings, count: int, stages: int) -> tuple[int, int, float]:
    """Publish ``count`` completed tasks; (records, bytes, seconds)."""
    codec = codec_from_settings(settings)
    events = history(stages, datetime.now(UTC) - timedelta(hours=1))
    await codec.prepare_events(events)
    template = Template.of(events, codec)
    producer = EventProducer(settings, codec)
    topic = settings.topic("events")
    records = size = 0
    started = time.perf_counter()
    try:
        batch: list[Record] = []
        for i in range(count):
            batch.extend(template.task())
            if len(batch) >= CHUNK or i == count - 1:
                await producer.send_records(topic, batch)
                records += len(batch)
                size += sum(len(r.value) for r in batch)
                batch = []
    finally:
        await producer.stop()
    return records, size, time.perf_counter() - started


# -- the probe: a new task, and the log watched for its step ------------------------------------
@dataclass
class Probe:
    """A new task of one bench.noop stage, and when its step started and it completed."""

    task_id: uuid.UUID
    partition: int
    offset: int
    started_at: datetime | None = None
    completed: asyncio.Event = field(default_factory=asyncio.Event)
    found: asyncio.Event = field(default_factory=asyncio.Event)


async def publish_probe(settings: Settings, codec: Codec) -> Probe:
    task = submitted(1, "restart benchmark: the probe", datetime.now(UTC))
    made = task.derive(plan(1), step="plan.created", actor=SUPER, occurred_at=datetime.now(UTC))
    producer = EventProducer(settings, codec)
    try:
        positions = await producer.publish_many([task, made])
    finally:
        await producer.stop()
    assert task.task_id is not None
    return Probe(task.task_id, positions[-1].partition, positions[-1].offset)


async def watch(settings: Settings, probe: Probe, ready: asyncio.Event) -> None:
    """Follow the probe's partition from its plan: note its step.started (the time the
    worker stamped on it) and its task.completed."""
    consumer = create_consumer(settings)
    await consumer.start()
    try:
        tp = TopicPartition(settings.topic("events"), probe.partition)
        consumer.assign([tp])
        consumer.seek(tp, probe.offset + 1)
        key = str(probe.task_id).encode()
        ready.set()
        while not probe.completed.is_set():
            batch = await consumer.getmany(tp, timeout_ms=200)
            for message in batch.get(tp, []):
                if message.key != key:
                    continue
                kind = dict(message.headers).get("type")
                if kind == b"step.started" and probe.started_at is None:
                    envelope = orjson.loads(message.value)
                    probe.started_at = datetime.fromisoformat(envelope["occurred_at"])
                    probe.found.set()
                elif kind == b"task.completed":
                    probe.completed.set()
    finally:
        await consumer.stop()


# -- the worker process -------------------------------------------------------------------------
def peak_rss(pid: int) -> int | None:
    """The process's peak resident memory (VmHWM), in bytes; None off Linux."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass
class Start:
    """One start of the worker: what it took to decide, and its memory then."""

    label: str
    decided_s: float | None = None
    assigned_s: float | None = None
    restored_s: float | None = None
    caught_up_s: float | None = None
    connected_s: float | None = None
    cpu_s: float | None = None
    seeks: int = 0
    rss: int | None = None
    peak: int | None = None
    snapshot: str = ""


class WorkerProcess:
    """``python -m wrenchai worker journey-agent``, its output (JSON log lines) in a file."""

    def __init__(self, env: dict[str, str], output: Path) -> None:
        self.output = output
        with open(output, "ab") as out:
            self.spawned = time.time()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "wrenchai", "worker", WORKER],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.ps = psutil.Process(self.proc.pid)

    def connected(self, port: int) -> bool:
        """Whether the process has a connection to ``port`` (the broker's) open yet."""
        try:
            return any(c.raddr and c.raddr.port == port for c in self.ps.net_connections("tcp"))
        except psutil.Error:
            return False

    def cpu(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def stop(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def milestones(self, start: Start) -> None:
        """Seconds from the spawn to the worker's own log lines: its partitions assigned
        (the first such line), the last partition restored, the last caught up."""
        firsts: dict[str, float] = {}
        lasts: dict[str, float] = {}
        for line in self.output.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                entry = orjson.loads(line)
                at = datetime.fromisoformat(entry["timestamp"]).timestamp() - self.spawned
            except (orjson.JSONDecodeError, KeyError, ValueError):
                continue
            name = entry.get("event", "")
            firsts.setdefault(name, at)
            lasts[name] = at
            if name.startswith("stream ahead of the snapshot"):
                start.seeks += 1
        start.assigned_s = firsts.get("partitions assigned")
        start.restored_s = lasts.get("partition restored")
        start.caught_up_s = lasts.get("partition caught up")


async def snapshots_cover_log(settings: Settings, timeout_s: float) -> str:
    """Wait until the worker's snapshot of every partition covers the log's end; a line
    that says what the snapshots hold."""
    group, topic = settings.group(WORKER), settings.topic("events")
    conn = await asyncpg.connect(settings.database_dsn())
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            ends = await log_end_offsets(settings, topic)
            rows = await conn.fetch(
                "SELECT partition, log_offset, tasks, length(records) AS size "
                "FROM worker_snapshots WHERE consumer_group = $1",
                group,
            )
            covered = {r["partition"]: r["log_offset"] for r in rows}
            if all(covered.get(p, -1) >= end for p, end in ends.items()):
                tasks = sum(r["tasks"] for r in rows)
                size = sum(r["size"] for r in rows)
                return f"{len(rows)} partitions, {tasks} tasks in flight, {size:,} bytes"
            if time.monotonic() > deadline:
                return f"snapshots did not cover the log within {timeout_s:.0f} s: {covered}"
            await asyncio.sleep(0.25)
    finally:
        await conn.close()


async def start_worker(
    settings: Settings, env: dict[str, str], output: Path, label: str, timeout_s: float
) -> tuple[WorkerProcess, Start]:
    """Publish a probe, start the worker, and wait until it decides for the probe, then
    until the probe is completed and a snapshot covers the log."""
    codec = codec_from_settings(settings)
    probe = await publish_probe(settings, codec)
    ready = asyncio.Event()
    watching = asyncio.create_task(watch(settings, probe, ready))
    await ready.wait()
    worker = WorkerProcess(env, output)
    start = Start(label)
    try:
        found = asyncio.create_task(probe.found.wait())
        port = int(settings.kafka_bootstrap.rsplit(":", 1)[1])
        while not found.done():
            await asyncio.wait([found], timeout=0.05)
            if start.connected_s is None and worker.connected(port):
                start.connected_s = time.time() - worker.spawned
            if worker.proc.poll() is not None:
                raise SystemExit(f"the worker exited ({worker.proc.returncode}); see {output}")
            if time.time() - worker.spawned > timeout_s:
                raise SystemExit(f"the worker did not decide in {timeout_s:.0f} s; see {output}")
        start.rss = worker.ps.memory_info().rss
        start.cpu_s = worker.cpu()
        start.peak = peak_rss(worker.proc.pid)
        assert probe.started_at is not None
        start.decided_s = probe.started_at.timestamp() - worker.spawned
        await asyncio.wait_for(probe.completed.wait(), 120)
        start.snapshot = await snapshots_cover_log(settings, 60)
        worker.milestones(start)
    except BaseException:
        worker.stop(signal.SIGKILL)
        raise
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
    return worker, start


# -- one size -----------------------------------------------------------------------------------
@dataclass
class Size:
    tasks: int
    records: int
    size: int
    fill_s: float
    starts: list[Start]

    def of(self, label: str) -> Start:
        return next(s for s in self.starts if s.label == label)


FIRST, AFTER_TERM, AFTER_KILL = "first start", "restart after SIGTERM", "restart after SIGKILL"


async def measure(base: Settings, state: Path, tasks: int, args: argparse.Namespace) -> Size:
    settings = base.model_copy(update={"namespace": f"restart{tasks}."})
    await bootstrap_topics(settings)
    records, size, fill_s = await fill(settings, tasks, args.stages)
    print(
        f"  {tasks:,} completed tasks: {records:,} records ({size / 1e6:,.0f} MB) published in "
        f"{fill_s:.1f} s = {records / fill_s:,.0f} records/s"
    )
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("WRENCH_")}
    inherited["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p
    )
    env = child_environment(settings, inherited, secret_files(settings, state))
    starts: list[Start] = []
    for label, stop in (
        (FIRST, signal.SIGTERM),
        (AFTER_TERM, signal.SIGKILL),
        (AFTER_KILL, signal.SIGTERM),
    ):
        output = state / f"worker-{tasks}-{len(starts)}.log"
        worker, start = await start_worker(settings, env, output, label, args.timeout)
        print_start(start)
        starts.append(start)
        worker.stop(stop)
    return Size(tasks, records, size, fill_s, starts)


# -- output -------------------------------------------------------------------------------------
def seconds(value: float | None) -> str:
    return "    -  " if value is None else f"{value:6.2f}s"


def mb(value: int | None) -> str:
    return "     - MB" if value is None else f"{value / 2**20:6.1f} MB"


def print_start(start: Start) -> None:
    seeks = f"; stream ahead of the snapshot on {start.seeks} partition(s)" if start.seeks else ""
    cpu = "-" if start.cpu_s is None else f"{start.cpu_s:.2f} s"
    print(
        f"    {start.label:22} deciding after {seconds(start.decided_s)} (its CPU by then "
        f"{cpu}); RSS {mb(start.rss)}, peak {mb(start.peak)}"
    )
    print(
        f"      from its spawn: broker connected {seconds(start.connected_s)}, partitions "
        f"assigned {seconds(start.assigned_s)}, last restored {seconds(start.restored_s)}, "
        f"last caught up {seconds(start.caught_up_s)}{seeks}"
    )
    print(f"      its snapshot once settled: {start.snapshot}")


def ratio(big: float | None, small: float | None) -> str:
    return f"{big / small:.2f}x" if big and small else "-"


def verdicts(small: Size, big: Size) -> None:
    print(f"summary ({big.tasks:,} completed tasks against {small.tasks:,}):")
    for label in (AFTER_TERM, AFTER_KILL):
        b, s = big.of(label), small.of(label)
        within = b.decided_s is not None and b.decided_s <= RESTART_LIMIT_S
        growth = (b.rss / s.rss - 1) if b.rss and s.rss else None
        rss_ok = growth is not None and growth <= RSS_LIMIT
        print(
            f"  {label}: deciding after {seconds(b.decided_s)} against {seconds(s.decided_s)} "
            f"({ratio(b.decided_s, s.decided_s)}; requirement within {RESTART_LIMIT_S:.0f} s: "
            f"{'met' if within else 'not met'}); RSS {mb(b.rss)} against {mb(s.rss)} "
            f"({'-' if growth is None else f'{growth:+.1%}'}; requirement within "
            f"{RSS_LIMIT:.0%}: {'met' if rss_ok else 'not met'})"
        )
    b, s = big.of(FIRST), small.of(FIRST)
    print(
        f"  baseline, the first start (no snapshot, the whole log replayed): deciding after "
        f"{seconds(b.decided_s)} against {seconds(s.decided_s)} "
        f"({ratio(b.decided_s, s.decided_s)}); RSS {mb(b.rss)} against {mb(s.rss)} "
        f"({ratio(b.rss, s.rss)}), peak {mb(b.peak)} against {mb(s.peak)}"
    )
    restart = big.of(AFTER_TERM).decided_s
    if b.decided_s and restart:
        print(
            f"  the snapshot saves {b.decided_s - restart:.1f} s of the first start's "
            f"{b.decided_s:.1f} s at {big.tasks:,} tasks"
        )


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {psutil.cpu_count()} cores"


async def run(args: argparse.Namespace, state: Path) -> None:
    configure_logging(Settings(log_level="warning", log_format="console"))
    broker = EmbeddedBroker(free_port(), state / "tansu.log")
    postgres = EmbeddedPostgres(state / "pg", free_port(), state / "pg.log", "bench")
    broker.start()
    postgres.start()
    try:
        base = Settings(
            kafka_bootstrap=broker.bootstrap,
            database_url=SecretStr(postgres.url()),
            **DEV_DEFAULTS,
        ).model_copy(
            update={
                "log_format": "json",
                "log_level": "info",
                "require_acceptance": False,
                "snapshot_interval_s": args.snapshot_interval,
                "tool_modules": "noop_tool",
                "data_dir": state / "data",
            }
        )
        base = with_generated_secrets(base, state)
        conn = await asyncpg.connect(base.database_dsn())
        await migrate(conn)
        await conn.close()
        print(
            f"restart: the JourneyAgent worker with {args.small:,} and with {args.tasks:,} "
            f"completed tasks ({args.stages} stage(s) each) on the log; {load()}"
        )
        print(
            f"worker: python -m wrenchai worker {WORKER}, {base.partitions} partitions, "
            f"snapshot every {base.snapshot_interval_s:g} s, group join held ~"
            f"{base.kafka_rebalance_timeout_ms / 2000:g} s by the embedded broker, "
            "no acceptance; deciding = spawn to the probe's step.started"
        )
        sizes: list[Size] = []
        for tasks in (args.small, args.tasks):
            sizes.append(await measure(base, state, tasks, args))
        verdicts(*sizes)
        print(f"  {load()}")
    finally:
        broker.stop()
        postgres.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000, help="the long history")
    parser.add_argument("--small", type=int, default=1_000, help="the short history")
    parser.add_argument("--stages", type=int, default=1, help="stages of each task")
    parser.add_argument("--snapshot-interval", type=float, default=1.0)
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds a start may take to decide"
    )
    parser.add_argument("--keep", action="store_true", help="keep the state and worker logs")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    state = Path(tempfile.mkdtemp(prefix="wrench-restart-"))
    try:
        asyncio.run(run(args, state))
    finally:
        if args.keep:
            print(f"  state and worker logs kept in {state}")
        else:
            shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
