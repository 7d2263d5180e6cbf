"""How fast the API accepts tasks, idle and under a burst, against a bare Kafka producer.

Starts the whole stack as a user does, ``wrenchai dev`` in a child process (the embedded
broker and Postgres, the projector, the SuperAgent, JourneyAgent and InspectorAgent workers,
the API), with its own state directory and ports, and reads the bootstrap admin's API key
from that directory. The write rate limit (120 writes a minute per principal by default) is
raised for the run with WRENCH_WRITE_RATE_LIMIT, or the burst would be refused with 429s.

Every submission is ``{"description": ..., "constraints": {"playbook": "research_report"}}``:
the shipped three-step playbook of offline tools (web.search over the local corpus,
text.summarize, report.compile), so each accepted task keeps the workers, the projector and
Postgres busy the way a user's task does, without an LLM or the network. Measured in one run:

1. idle: POST /tasks one at a time, each sent once the previous task reads ``completed``
   (so nothing else runs), p50 and p99 of the POST's round trip;
2. a burst: N POST /tasks at once (default 500, one connection each), p50 and p99 of each
   POST's round trip and accepted/s (N over the time from the first send to the last
   answer). The stack is busy meanwhile: the workers plan and run the first tasks while the
   later POSTs are still waiting. Each process's CPU time over the burst (psutil, the dev
   stack's children grouped by what they run, the InspectorAgent's quality fit apart, and
   what else ran on the machine) shows where the CPU goes;
3. how long until all N read ``completed`` (GET /tasks?status=...), with the CPU of that
   drain; when some are still open after --drain-timeout, a few of them are named;
4. the baseline, in the same run: a bare aiokafka producer (acks=all, gzip, the batch size
   of WrenchAI's producer and the linger of the API's, WRENCH_API_PRODUCER_LINGER_MS) on the
   same broker, publishing task.submitted records encoded as the API encodes them to a topic
   of its own (so no worker picks them up), one send_and_wait each: one at a time (and again
   with the workers' linger, WRENCH_PRODUCER_LINGER_MS), then N at once; p50, p99 and
   records/s.

The client is aiohttp: httpx's connection pool costs the client milliseconds of CPU per
request once hundreds are in flight (encode/httpx#3215), so a burst sent with httpx mostly
times the client (--client httpx shows it: answers the API wrote within 1.5 s reach the
caller 5 s later).

Diagnostics: --pause-workers suspends (SIGSTOP) the three workers and the projector over the
burst, so only the API, the broker and Postgres run; --profile-api FILE records the API
process with py-spy over the burst (``pip install py-spy``) and prints where its event loop
was; --set NAME=VALUE runs the stack with a setting (api_producer_linger_ms=5, ...); --keep
keeps the state directory and its logs.

Usage: python bench/intake.py [--requests N] [--idle N] [--client aiohttp|httpx]
       [--pause-workers] [--profile-api FILE] [--set NAME=VALUE] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
import psutil
from aiokafka import AIOKafkaProducer

from events import (
    Actor,
    Event,
    TaskSubmitted,
    bootstrap_topics,
    codec_from_settings,
    generate_key,
)
from wrenchai.embedded import free_port
from wrenchai.settings import Settings

PLAYBOOK = "research_report"
# The stack runs with no WRENCH_* variable but the rate limit, so with these defaults.
API_LINGER_MS: int = Settings.model_fields["api_producer_linger_ms"].default
WORKER_LINGER_MS: int = Settings.model_fields["producer_linger_ms"].default
COMPRESSION: str = Settings.model_fields["producer_compression"].default
RATE_LIMIT = "1000000/minute"
WORKERS = ("super-agent", "journey-agent", "inspector-agent")
OPEN = "submitted,running"
DONE = "completed,failed,cancelled"


def percentile(values: list[float], q: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def figures(values: list[float]) -> str:
    return f"p50 {percentile(values, 50):8.1f} ms   p99 {percentile(values, 99):8.1f} ms"


def body(i: int) -> dict[str, Any]:
    return {"description": f"intake bench task {i}", "constraints": {"playbook": PLAYBOOK}}


# -- the stack ----------------------------------------------------------------------------------
@dataclass
class Stack:
    proc: subprocess.Popen[bytes]
    state: Path
    base: str
    broker: str
    key: str


def start_stack(
    state: Path, log_level: str = "warning", extra: dict[str, str] | None = None
) -> Stack:
    """``wrenchai dev`` on free ports, once it says it is ready and its admin key exists;
    ``extra`` are settings (WRENCH_NAME: value) to run it with."""
    api_port, broker_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WRENCH_")}
    env["WRENCH_WRITE_RATE_LIMIT"] = RATE_LIMIT
    env["WRENCH_LOG_LEVEL"] = log_level
    env.update(extra or {})
    out = state / "dev.log"
    command = [sys.executable, "-m", "wrenchai", "dev", "--state-dir", str(state)]
    command += ["--api-port", str(api_port), "--broker-port", str(broker_port)]
    with open(out, "ab") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 120
    key_file = state / "admin-api-key"
    while True:
        text = out.read_text(errors="replace")
        if "dev stack ready" in text and key_file.exists():
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_stack(proc)
            raise SystemExit(f"wrenchai dev did not become ready:\n{text[-3000:]}")
        time.sleep(0.25)
    broker = re.search(r"^\s*broker\s+(\S+)", text, re.MULTILINE)
    assert broker is not None, text
    return Stack(
        proc, state, f"http://127.0.0.1:{api_port}", broker.group(1), key_file.read_text().strip()
    )


def stop_stack(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def role(proc: psutil.Process) -> str:
    """What a process of the stack runs: api, projector, a worker's name, broker, postgres;
    a process those start (the InspectorAgent's quality fit, a code sandbox) counts as
    ``parent/child``."""
    try:
        cmd = proc.cmdline()
        name = proc.name()
    except psutil.Error:
        return "gone"
    if "wrenchai" in cmd:
        after = cmd[cmd.index("wrenchai") + 1 :]
        if after[:1] == ["worker"] and len(after) > 1:
            return str(after[1])
        return str(after[0]) if after else "wrenchai"
    if name.startswith("postgres"):
        return "postgres"
    if "broker" in cmd:
        return "broker"
    try:
        parent = proc.parent()
    except psutil.Error:
        parent = None
    if parent is None:
        return str(name)
    kind = "quality fit" if any("multiprocessing" in c for c in cmd) else name
    return f"{role(parent)}/{kind}"


def processes(root: psutil.Process) -> dict[int, tuple[str, psutil.Process]]:
    found = {root.pid: ("supervisor", root)}
    for child in root.children(recursive=True):
        found[child.pid] = (role(child), child)
    return found


def cpu_by_pid(procs: dict[int, tuple[str, psutil.Process]]) -> dict[int, float]:
    seen: dict[int, float] = {}
    for pid, (_, proc) in procs.items():
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        seen[pid] = times.user + times.system
    return seen


class CpuWindow:
    """CPU seconds of each role of the stack (and of this client) over a window."""

    def __init__(self, root: psutil.Process) -> None:
        self.root = root
        self.procs = processes(root)
        self.before = cpu_by_pid(self.procs)
        self.client = time.process_time()
        self.machine = machine_busy()
        self.started = time.perf_counter()

    def close(self) -> tuple[float, dict[str, float]]:
        took = time.perf_counter() - self.started
        self.procs.update(processes(self.root))
        after = cpu_by_pid(self.procs)
        by_role: dict[str, float] = defaultdict(float)
        for pid, spent in after.items():
            by_role[self.procs[pid][0]] += spent - self.before.get(pid, 0.0)
        by_role["bench client"] = time.process_time() - self.client
        # Whatever else ran on the machine meanwhile (other users' jobs) took CPU too.
        by_role["not this run"] = max(0.0, machine_busy() - self.machine - sum(by_role.values()))
        return took, dict(by_role)


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy since boot."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def print_cpu(title: str, took: float, by_role: dict[str, float], tasks: int) -> None:
    cores = psutil.cpu_count() or 1
    total = sum(by_role.values())
    print(f"  CPU over the {title} ({took:.1f} s wall; {cores} cores = {cores * took:.1f} core-s):")
    for name, spent in sorted(by_role.items(), key=lambda item: -item[1]):
        if spent >= 0.005:
            print(
                f"    {name:28} {spent:7.2f} s  {spent / took * 100:5.0f}% of a core  "
                f"{spent / tasks * 1000:6.1f} ms/task"
            )
    print(f"    {'machine':28} {total:7.2f} s  {total / took * 100:5.0f}% of a core")


def suspend(root: psutil.Process, names: tuple[str, ...], resume: bool = False) -> list[str]:
    done = []
    for name, proc in processes(root).values():
        if name in names:
            proc.resume() if resume else proc.suspend()
            done.append(name)
    return done


# -- the API --------------------------------------------------------------------------------------
Post = Callable[[int], Awaitable[tuple[float, str]]]


@asynccontextmanager
async def poster(kind: str, base: str, key: str, connections: int) -> AsyncIterator[Post]:
    """A function that POSTs task ``i`` and returns (its round trip in ms, its task id).

    aiohttp by default: httpx's connection pool costs the client a few milliseconds of CPU
    per request once hundreds are in flight (encode/httpx#3215), so with httpx a burst of
    500 times mostly this process (--client httpx shows it)."""
    headers = {"X-API-Key": key}
    if kind == "httpx":
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(
            base_url=base, headers=headers, limits=limits, timeout=300
        ) as client:

            async def post_httpx(i: int) -> tuple[float, str]:
                sent = time.perf_counter()
                answer = await client.post("/tasks", json=body(i))
                took = (time.perf_counter() - sent) * 1000
                return took, accepted(answer.status_code, answer.text)

            yield post_httpx
        return
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(
        base, headers=headers, connector=connector, timeout=timeout
    ) as session:

        async def post_aiohttp(i: int) -> tuple[float, str]:
            sent = time.perf_counter()
            async with session.post("/tasks", json=body(i)) as answer:
                text = await answer.text()
            took = (time.perf_counter() - sent) * 1000
            return took, accepted(answer.status, text)

        yield post_aiohttp


def accepted(status: int, text: str) -> str:
    """The task id of a 202; anything else stops the run."""
    if status != 202:
        raise SystemExit(f"POST /tasks answered {status}: {text[:500]}")
    return str(orjson.loads(text)["task_id"])


async def wait_completed(client: httpx.AsyncClient, task_id: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = await client.get(f"/tasks/{task_id}")
        if answer.status_code == 200:
            status = answer.json()["status"]
            if status == "completed":
                return
            if status in ("failed", "cancelled"):
                raise SystemExit(f"task {task_id} {status}: {answer.text[:500]}")
        await asyncio.sleep(0.02)
    raise SystemExit(f"task {task_id} not completed in {timeout_s:.0f}s")


async def count_tasks(client: httpx.AsyncClient, statuses: str, since: datetime) -> int:
    """Tasks in ``statuses`` created at or after ``since``, a page of 200 at a time."""
    params: dict[str, Any] = {"status": statuses, "created_after": since.isoformat(), "limit": 200}
    count = 0
    while True:
        answer = await client.get("/tasks", params=params)
        answer.raise_for_status()
        page = answer.json()
        count += len(page["tasks"])
        if not page["next_cursor"]:
            return count
        params["cursor"] = page["next_cursor"]


async def idle(post: Post, client: httpx.AsyncClient, count: int) -> list[float]:
    """Each POST while the stack is quiet: the previous task completed before it is sent."""
    found = []
    for i in range(count):
        took, task_id = await post(i)
        found.append(took)
        await wait_completed(client, task_id, 60)
        await asyncio.sleep(0.05)  # the inspector's and projector's tail of that task
    return found


async def burst(post: Post, count: int) -> tuple[list[float], float]:
    """N POSTs at once, one connection each: each one's round trip, and the whole span."""
    started = time.perf_counter()
    results = await asyncio.gather(*(post(1_000_000 + i) for i in range(count)))
    span = time.perf_counter() - started
    return [took for took, _ in results], span


async def drain(
    client: httpx.AsyncClient, count: int, since: datetime, timeout_s: float
) -> tuple[float | None, int, int]:
    """Seconds until ``count`` tasks created since ``since`` are terminal, how many completed
    and how many did not; or None, how many are terminal and how many still open when
    ``timeout_s`` is over."""
    started = time.perf_counter()
    deadline = started + timeout_s
    finished = 0
    while time.perf_counter() < deadline:
        finished = await count_tasks(client, DONE, since)
        if finished >= count:
            took = time.perf_counter() - started
            failed = await count_tasks(client, "failed,cancelled", since)
            return took, finished - failed, failed
        await asyncio.sleep(0.5)
    return None, finished, await count_tasks(client, OPEN, since)


async def open_tasks(client: httpx.AsyncClient, since: datetime) -> list[str]:
    """A few tasks created since ``since`` that are still submitted or running."""
    params: dict[str, str | int] = {"status": OPEN, "created_after": since.isoformat(), "limit": 5}
    answer = await client.get("/tasks", params=params)
    answer.raise_for_status()
    return [
        f"{task['task_id']} ({task['status']}, last change {task['updated_at']})"
        for task in answer.json()["tasks"]
    ]


# -- the baseline -------------------------------------------------------------------------------
@dataclass
class Baseline:
    """A bare producer's figures: one record at a time (with the API's linger and with the
    workers'), and N at once (with the API's)."""

    idle_ms: list[float]
    idle_worker_linger_ms: list[float]
    burst_ms: list[float]
    span: float


async def baseline(
    broker: str, count: int, idle: int, linger_ms: int, worker_linger_ms: int
) -> Baseline:
    """A bare aiokafka producer, configured as the API's (acks=all, gzip, its batch size,
    its ``linger_ms``), publishing task.submitted records encoded as the API encodes them
    (description encrypted) to a topic of its own: ``idle`` one at a time, then ``count`` at
    once, one send_and_wait each; and ``idle`` one at a time with the workers' linger."""
    settings = Settings(
        kafka_bootstrap=broker,
        namespace=f"intake{uuid.uuid4().hex[:6]}.",
        encryption_keys=generate_key(),
    )
    await bootstrap_topics(settings)
    codec = codec_from_settings(settings)
    actor = Actor(kind="user", id="bench")
    records = [
        codec.encode(
            Event.new(
                TaskSubmitted(
                    description=body(i)["description"], constraints=body(i)["constraints"]
                ),
                tenant_id=settings.default_tenant,
                actor=actor,
                task_id=uuid.uuid4(),
            )
        )
        for i in range(max(count, idle))
    ]
    topic = settings.topic("events")

    async def publish(linger_ms: int, one_at_a_time: int, at_once: int) -> Baseline:
        producer = AIOKafkaProducer(
            bootstrap_servers=broker,
            acks="all",
            enable_idempotence=False,
            linger_ms=linger_ms,
            compression_type=None if COMPRESSION == "none" else "gzip",
            max_batch_size=256 * 1024,
        )
        await producer.start()
        try:
            await producer.send_and_wait(topic, value=b"warm-up", key=b"warm-up")

            async def send(record: Any) -> float:
                sent = time.perf_counter()
                await producer.send_and_wait(
                    topic, value=record.value, key=record.key, headers=list(record.headers)
                )
                return (time.perf_counter() - sent) * 1000

            alone = [await send(record) for record in records[:one_at_a_time]]
            started = time.perf_counter()
            together = await asyncio.gather(*(send(r) for r in records[:at_once]))
            span = time.perf_counter() - started
        finally:
            await producer.stop()
        return Baseline(alone, [], list(together), span)

    found = await publish(linger_ms, idle, count)
    found.idle_worker_linger_ms = (await publish(worker_linger_ms, idle, 0)).idle_ms
    return found


# -- profile --------------------------------------------------------------------------------------
def start_profile(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("  (no py-spy: pip install py-spy to profile the API)")
        return None
    command = [spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "500"]
    command += ["--output", str(out), "--nonblocking"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^:()]*)(?::\d+)?\)$")


def _frame(text: str) -> tuple[str, str]:
    """(function (file), package) of one py-spy frame, line numbers dropped."""
    found = _FRAME.match(text)
    if found is None:
        return text, "?"
    file = found["file"]
    parts = file.split("/")
    package = parts[0].removesuffix(".py") if len(parts) > 1 else f"stdlib {parts[0]}"
    return f"{found['function']} ({file})", package


def print_profile(out: Path, top: int = 20) -> None:
    """Where the API's event loop thread was when py-spy sampled it (idle waits are not
    sampled): by package of the innermost frame, by function (own time) and by function
    with what it calls."""
    own: dict[str, int] = defaultdict(int)
    inclusive: dict[str, int] = defaultdict(int)
    packages: dict[str, int] = defaultdict(int)
    samples = 0
    for line in out.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        # The loop's thread only: the others are the thread pool's workers, mostly waiting.
        if not stack or "Server.run (uvicorn" not in stack:
            continue
        count = int(number)
        samples += count
        frames = [_frame(text) for text in stack.split(";")]
        own[frames[-1][0]] += count
        packages[frames[-1][1]] += count
        for function in {function for function, _ in frames}:
            inclusive[function] += count
    if not samples:
        print("  py-spy: no samples of the API's event loop")
        return
    print(f"  py-spy of the API's event loop over the burst: {samples} samples at 500/s")
    print("    by package of the innermost frame:")
    for package, count in sorted(packages.items(), key=lambda item: -item[1])[:top]:
        print(f"      {count / samples * 100:5.1f}%  {package}")
    print("    by function, own time:")
    for function, count in sorted(own.items(), key=lambda item: -item[1])[:top]:
        print(f"      {count / samples * 100:5.1f}%  {function[:120]}")
    print("    by function, with what it calls (the frames under nearly every sample left out):")
    shown = 0
    for function, count in sorted(inclusive.items(), key=lambda item: -item[1]):
        if count < samples * 0.02 or shown >= top * 2:
            break
        if count < samples * 0.9:
            print(f"      {count / samples * 100:5.1f}%  {function[:120]}")
            shown += 1


# -- the run --------------------------------------------------------------------------------------
async def measure(stack: Stack, args: argparse.Namespace) -> None:
    root = psutil.Process(stack.proc.pid)
    async with httpx.AsyncClient(
        base_url=stack.base, headers={"X-API-Key": stack.key}, timeout=60
    ) as client:
        async with poster(args.client, stack.base, stack.key, 1) as post:
            # Warm-up, untimed: the workers' group joins and the first task of each path.
            for i in range(3):
                _, task_id = await post(-1 - i)
                await wait_completed(client, task_id, 120)
            idle_ms = await idle(post, client, args.idle)
        since = datetime.now(UTC) - timedelta(milliseconds=50)
        paused: list[str] = []
        if args.pause_workers:
            paused = suspend(root, (*WORKERS, "projector"))
        api_pid = next(p for p, (name, _) in processes(root).items() if name == "api")
        profile = start_profile(api_pid, Path(args.profile_api)) if args.profile_api else None
        async with poster(args.client, stack.base, stack.key, args.requests) as post:
            # Others' work on a shared machine moves every figure: say how busy it was.
            load = os.getloadavg()
            window = CpuWindow(root)
            burst_ms, span = await burst(post, args.requests)
            burst_cpu = window.close()
        if profile is not None:
            profile.send_signal(signal.SIGINT)
            profile.wait(30)
        if paused:
            suspend(root, (*WORKERS, "projector"), resume=True)
        window = CpuWindow(root)
        drained = await drain(client, args.requests, since, args.drain_timeout)
        drain_cpu = window.close()
        stuck = await open_tasks(client, since) if drained[0] is None else []
    changes = settings_of(args.set)
    linger = int(changes.get("WRENCH_API_PRODUCER_LINGER_MS", API_LINGER_MS))
    worker_linger = int(changes.get("WRENCH_PRODUCER_LINGER_MS", WORKER_LINGER_MS))
    base = await baseline(stack.broker, args.requests, args.idle, linger, worker_linger)

    changed = "".join(f", {name}={value}" for name, value in changes.items())
    print(
        f"intake: wrenchai dev (3 workers, projector, API, embedded broker and Postgres), "
        f"playbook {PLAYBOOK}; WRENCH_WRITE_RATE_LIMIT={RATE_LIMIT} for the bench{changed}"
    )
    print(
        f"  idle: {args.idle} POST /tasks one at a time, stack quiet ({args.client}): "
        f"{figures(idle_ms)}"
    )
    note = f", {'+'.join(paused)} suspended" if paused else ""
    print(
        f"  burst: {args.requests} concurrent POST /tasks ({args.client}{note}): "
        f"{figures(burst_ms)}   {args.requests / span:7.1f} accepted/s ({span:.2f} s)"
    )
    print(
        f"  machine load average before the burst: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
        f"(1, 5, 15 min; {psutil.cpu_count()} cores)"
    )
    took, by_role = burst_cpu
    print_cpu("burst", took, by_role, args.requests)
    took_drain, completed, failed = drained
    if took_drain is None:
        print(
            f"  drain: only {completed} of {args.requests} tasks terminal after "
            f"{args.drain_timeout:.0f} s ({failed} submitted or running), for example:"
        )
        for line in stuck:
            print(f"    {line}")
    else:
        whole = span + took_drain
        print(
            f"  drain: all {args.requests} terminal {took_drain:.1f} s after the last POST "
            f"({completed} completed, {failed} failed); {args.requests / whole:.1f} tasks/s "
            f"from the first POST"
        )
    took, by_role = drain_cpu
    print_cpu("drain", took, by_role, args.requests)
    print(f"  baseline: a bare aiokafka producer on the same broker (acks=all, {COMPRESSION}):")
    print(
        f"    one at a time, linger {linger} ms as the API's: {figures(base.idle_ms)}   "
        f"(the workers' {worker_linger} ms: {figures(base.idle_worker_linger_ms)})"
    )
    print(
        f"    {args.requests} send_and_wait at once:          {figures(base.burst_ms)}   "
        f"{args.requests / base.span:7.1f} records/s"
    )
    idle_ratio = percentile(idle_ms, 50) / percentile(base.idle_ms, 50)
    burst_ratio = percentile(burst_ms, 99) / percentile(base.burst_ms, 99)
    print(
        f"  ratios to the baseline: idle p50 {idle_ratio:.1f}x, burst p99 {burst_ratio:.1f}x, "
        f"accepted/s {base.span / span:.3f}x (targets: idle p50 <= 5 ms, burst p99 <= 250 ms)"
    )


def settings_of(pairs: list[str]) -> dict[str, str]:
    """--set NAME=VALUE pairs as WRENCH_NAME variables."""
    found = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name.lower() not in Settings.model_fields:
            raise SystemExit(f"--set {pair}: expected NAME=VALUE with NAME a setting")
        found[f"WRENCH_{name.upper()}"] = value
    return found


def main(args: argparse.Namespace) -> None:
    state = Path(tempfile.mkdtemp(prefix="wrench-intake-"))
    stack: Stack | None = None
    try:
        # Inside the try: a stack that does not start leaves no state directory behind
        # (its log's tail is in the error).
        stack = start_stack(state, args.log_level, settings_of(args.set))
        asyncio.run(measure(stack, args))
        if args.profile_api and Path(args.profile_api).exists():
            print_profile(Path(args.profile_api))
    finally:
        if stack is not None:
            stop_stack(stack.proc)
        if not args.keep:
            shutil.rmtree(state, ignore_errors=True)
        else:
            print(f"  state and logs kept in {state}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500, help="POSTs in the burst")
    parser.add_argument("--idle", type=int, default=100, help="POSTs one at a time, idle")
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument("--client", choices=("aiohttp", "httpx"), default="aiohttp")
    parser.add_argument("--pause-workers", action="store_true")
    parser.add_argument("--profile-api", metavar="FILE")
    parser.add_argument("--keep", action="store_true", help="keep the state directory")
    parser.add_argument("--log-level", default="warning", help="of the stack's processes")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="run the stack with this setting (for example api_producer_linger_ms=5)",
    )
    main(parser.parse_args())
