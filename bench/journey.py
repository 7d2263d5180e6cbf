"""The whole stack running five-step tasks as a user runs it, against LangGraph in the same run.

WrenchAI's side starts ``wrenchai dev`` in a child process, as a user does (bench/intake.py's
helpers): the embedded broker (Tansu) and Postgres, migrations, then the projector, the
SuperAgent, JourneyAgent and InspectorAgent workers and the API as separate processes, with
default settings (so each step waits for the InspectorAgent's acceptance). Only two variables
are set: WRENCH_TOOL_MODULES adds ``bench.noop`` (bench/noop_tool.py, a tool that does
nothing) and WRENCH_WRITE_RATE_LIMIT lets the run's POSTs through. Each task is submitted over
HTTP (POST /tasks with the bootstrap admin's API key) with an inline playbook of five chained
``bench.noop`` steps, and is done when it reads ``completed`` in the read model.

1. a lone task on the idle stack (after two untimed warm-up tasks, and once no quality fit
   of the InspectorAgent runs): from its POST until GET /tasks/{id} reads ``completed``
   (polled every 10 ms), and its overhead per step;
2. the load: N tasks (default 200), C in flight at a time (default 20; a task is sent when
   another reads completed), timed from the first POST until the last task reads completed.
   One watcher lists the tasks in flight that became terminal (GET /tasks?status=..., every
   --poll-ms), as a client following many tasks would. A task not terminal after
   --task-timeout is counted as stuck: its slot moves on, and its id, status and last events
   are printed. Printed: tasks/s, overhead per step p50 and p99, and CPU milliseconds per
   task of each process (psutil user + system time, before and after the load, with the
   processes each has started: the broker, Postgres with all its processes, each worker (the
   InspectorAgent with its quality fits), the projector, the API, the supervisor; the bench
   client and what else ran on the machine apart).

Overhead per step: from the event that made a step runnable (plan.created for the first,
the previous step.completed for the others) to that step's step.completed, minus the tool's
own time (tool.returned's duration_s); read from each task's history (GET /tasks/{id}/events)
after the run. It holds the decisions, the events' round trips through the broker and the
InspectorAgent's acceptance of the previous step.

The peer, in the same run: LangGraph with its Postgres checkpointer (AsyncPostgresSaver over
a psycopg pool of C connections, LangGraph's default durability unless --peer-durability),
on the same embedded Postgres in a database of its own, running the same graph: five chained
nodes, each calling the same ``bench.noop`` tool. Each task is one ``ainvoke`` on its own
thread_id; the same lone task, N and C. The stack's processes but Postgres are suspended
(SIGSTOP) over the peer's run: a quality fit that WrenchAI's load set off would otherwise take
the peer's cores. Its overhead per step is from the previous node's
return (the invoke's start for the first) to this node's return, minus the tool's time; its
CPU is this process's plus Postgres's (its database's backends and the shared processes;
the stack's backends left out). Printed: the same figures and the ratios WrenchAI/peer. The
peer comes from an optional extra (``pip install -e '.[bench]'``, which ``make bench`` runs);
without it the peer is skipped with a line saying so.

The floor, last: a plain asyncio loop calling the same tool, with no persistence at all.

Usage: python bench/journey.py [--tasks N] [--concurrency C] [--task-timeout S]
       [--poll-ms MS] [--peer-durability sync|async|exit] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import importlib.util
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypedDict

import asyncpg
import httpx
import psutil
from intake import RATE_LIMIT, Stack, machine_busy, percentile, processes, start_stack, stop_stack
from noop_tool import Noop

STEPS = 5
HERE = Path(__file__).resolve().parent
DONE = "completed,failed,cancelled"
PEER_DATABASE = "langgraph_bench"
PEER_PACKAGES = ("langgraph", "langgraph-checkpoint-postgres", "psycopg", "psycopg-pool")


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


def figures(values: list[float]) -> str:
    if not values:
        return "p50       - ms   p99       - ms"
    return f"p50 {percentile(values, 50):7.1f} ms   p99 {percentile(values, 99):7.1f} ms"


# -- CPU ----------------------------------------------------------------------------------------
Keep = Callable[[str, psutil.Process], bool]  # (what it runs, the process): is it measured


def cpu_of(proc: psutil.Process) -> float:
    """CPU seconds of a process and of the children it has reaped (a Postgres backend that
    exited, a quality fit that ended)."""
    times = proc.cpu_times()
    return float(times.user + times.system + times.children_user + times.children_system)


class CpuMeter:
    """CPU seconds of each process of the stack over a window, by what it runs; ``keep``
    says which processes count (the others are the rest of the stack)."""

    def __init__(self, root: psutil.Process, keep: Keep | None = None) -> None:
        self.root = root
        self.keep = keep or (lambda name, proc: True)
        self.procs = processes(root)
        self.before = self._read()
        self.client = time.process_time()
        self.machine = machine_busy()
        self.started = time.perf_counter()

    def _read(self) -> dict[int, float]:
        seen = {}
        for pid, (_, proc) in self.procs.items():
            try:
                seen[pid] = cpu_of(proc)
            except psutil.Error:
                continue
        return seen

    def close(self) -> Cpu:
        took = time.perf_counter() - self.started
        self.procs.update(processes(self.root))
        by_name: dict[str, float] = defaultdict(float)
        uncounted = 0.0
        for pid, spent in self._read().items():
            name, proc = self.procs[pid]
            spent -= self.before.get(pid, 0.0)
            try:
                counted = self.keep(name, proc)
            except psutil.Error:
                counted = False
            if counted:
                # A process that a worker starts (a quality fit, its compiler) counts with the
                # worker, as it does once the worker has reaped it.
                by_name[name.split("/")[0]] += spent
            else:
                uncounted += spent
        client = time.process_time() - self.client
        other = machine_busy() - self.machine - sum(by_name.values()) - uncounted - client
        return Cpu(took, dict(by_name), client, uncounted, max(0.0, other))


@dataclass
class Cpu:
    """CPU seconds spent over ``took`` wall seconds: by process, by this client, by the
    stack's processes that do not count, by the rest of the machine."""

    took: float
    by_name: dict[str, float]
    client: float
    uncounted: float
    other: float

    def print(self, tasks: int, own: str) -> None:
        def line(name: str, spent: float) -> None:
            print(
                f"    {name:38} {spent / tasks * 1000:8.2f} ms/task  "
                f"{spent / self.took * 100:5.0f}% of a core"
            )

        cores = psutil.cpu_count() or 1
        print(f"  CPU per task over the load ({self.took:.1f} s wall, {cores} cores):")
        for name, spent in sorted(self.by_name.items(), key=lambda item: -item[1]):
            line(name, spent)
        line(own, self.total)
        if self.client:
            line("bench client (not counted)", self.client)
        if self.uncounted:
            line("rest of the wrenchai stack (not counted)", self.uncounted)
        line("rest of the machine (not counted)", self.other)

    @property
    def total(self) -> float:
        return sum(self.by_name.values())


async def settle(root: psutil.Process, within: float = 120.0) -> str:
    """Wait until no quality fit of the InspectorAgent has run for two seconds: a fit starts
    every 50 evaluations and takes a core or more for seconds, so one still running after a
    load would compete with what is timed next. A line that says how long that took."""
    started = time.perf_counter()
    quiet_since = started
    while time.perf_counter() - started < within:
        if any("quality fit" in name for name, _ in processes(root).values()):
            quiet_since = time.perf_counter()
        elif time.perf_counter() - quiet_since >= 2.0:
            took = time.perf_counter() - started
            return f"the wrenchai stack had no quality fit running after {took:.0f} s"
        await asyncio.sleep(0.25)
    return f"the wrenchai stack still had a quality fit running after {within:.0f} s"


# -- WrenchAI -----------------------------------------------------------------------------------
@dataclass
class Run:
    """What one side measured."""

    lone_s: float
    lone_steps: list[float]
    tasks: int
    took: float
    steps: list[float]
    cpu: Cpu
    failed: int = 0
    stuck: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def rate(self) -> float:
        done = self.tasks - self.failed - len(self.stuck)
        return done / self.took if self.took else 0.0


def step_overheads(events: list[dict[str, Any]]) -> list[float]:
    """Per step of one task's history, in ms: runnable → completed, minus the tool's time."""
    found: list[float] = []
    ready: datetime | None = None
    tool_s: dict[str, float] = {}
    for event in events:
        payload = event["payload"]
        if event["type"] == "plan.created":
            ready = datetime.fromisoformat(event["occurred_at"])
        elif event["type"] == "tool.returned":
            tool_s[payload["stage_id"]] = payload["duration_s"] or 0.0
        elif event["type"] == "step.completed" and ready is not None:
            at = datetime.fromisoformat(event["occurred_at"])
            span = (at - ready).total_seconds() - tool_s.get(payload["stage_id"], 0.0)
            found.append(span * 1000)
            ready = at
    return found


class Watcher:
    """Which tasks in flight read a terminal status: one list query every ``interval`` for
    all of them, as a client following many tasks would poll."""

    def __init__(self, client: httpx.AsyncClient, interval: float) -> None:
        self.client = client
        self.interval = interval
        self.waiting: dict[str, tuple[datetime, asyncio.Future[tuple[str, float]]]] = {}

    async def wait(self, task_id: str, sent: datetime, within: float) -> tuple[str, float] | None:
        """(status, when it was seen) once the task is terminal; None after ``within`` s."""
        future: asyncio.Future[tuple[str, float]] = asyncio.get_running_loop().create_future()
        self.waiting[task_id] = (sent, future)
        try:
            return await asyncio.wait_for(future, within)
        except TimeoutError:
            return None
        finally:
            self.waiting.pop(task_id, None)

    async def run(self) -> None:
        while True:
            if self.waiting:
                try:
                    await self._poll()
                except httpx.HTTPError as exc:  # the next poll tries again
                    print(f"  (watcher: GET /tasks failed: {exc!r})", file=sys.stderr)
            await asyncio.sleep(self.interval)

    async def _poll(self) -> None:
        # A margin for the clock of the API that stamped created_at (same machine).
        since = min(sent for sent, _ in self.waiting.values()) - timedelta(seconds=1)
        params: dict[str, Any] = {"status": DONE, "created_after": since.isoformat()}
        params["limit"] = 200
        while True:
            answer = await self.client.get("/tasks", params=params)
            answer.raise_for_status()
            page = answer.json()
            seen = time.perf_counter()
            for task in page["tasks"]:
                entry = self.waiting.get(task["task_id"])
                if entry is not None and not entry[1].done():
                    entry[1].set_result((task["status"], seen))
            if not page["next_cursor"]:
                return
            params["cursor"] = page["next_cursor"]


async def post_task(client: httpx.AsyncClient, label: str) -> str:
    body = {"description": f"journey bench {label}", "constraints": {"playbook": playbook()}}
    answer = await client.post("/tasks", json=body)
    if answer.status_code != 202:
        raise SystemExit(f"POST /tasks answered {answer.status_code}: {answer.text[:500]}")
    return str(answer.json()["task_id"])


async def wait_one(client: httpx.AsyncClient, task_id: str, timeout_s: float) -> None:
    """Poll GET /tasks/{id} every 10 ms until it reads completed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = await client.get(f"/tasks/{task_id}")
        if answer.status_code == 200:
            status = answer.json()["status"]
            if status == "completed":
                return
            if status in ("failed", "cancelled"):
                raise SystemExit(f"task {task_id} {status}: {answer.text[:500]}")
        await asyncio.sleep(0.01)
    raise SystemExit(f"task {task_id} not completed in {timeout_s:.0f} s")


async def history(client: httpx.AsyncClient, task_id: str) -> list[dict[str, Any]]:
    answer = await client.get(f"/tasks/{task_id}/events")
    answer.raise_for_status()
    events: list[dict[str, Any]] = answer.json()["events"]
    return events


async def describe_stuck(client: httpx.AsyncClient, task_id: str) -> str:
    """A stuck task's status and its last events, for the report."""
    task = (await client.get(f"/tasks/{task_id}")).json()
    lines = [f"{task_id}: {task.get('status')}, updated {task.get('updated_at')}; last events:"]
    for event in (await history(client, task_id))[-6:]:
        stage = event["payload"].get("stage_id") if isinstance(event["payload"], dict) else None
        where = f" {stage}" if stage else ""
        lines.append(
            f"        {event['position']:>8} {event['occurred_at']} {event['type']}{where} "
            f"({event['actor']['kind']}:{event['actor']['id']})"
        )
    return "\n".join(lines)


async def run_wrenchai(stack: Stack, args: argparse.Namespace) -> Run:
    root = psutil.Process(stack.proc.pid)
    limits = httpx.Limits(max_connections=args.concurrency + 4)
    async with httpx.AsyncClient(
        base_url=stack.base, headers={"X-API-Key": stack.key}, timeout=60, limits=limits
    ) as client:
        for i in range(2):  # untimed: the workers' group joins, the first task of each path
            await wait_one(client, await post_task(client, f"warm-up {i}"), 120)
        quiet = await settle(root) + ", before the lone task"
        sent = time.perf_counter()
        lone = await post_task(client, "lone")
        await wait_one(client, lone, 60)
        lone_s = time.perf_counter() - sent
        await asyncio.sleep(0.5)

        watcher = Watcher(client, args.poll_ms / 1000)
        watching = asyncio.create_task(watcher.run())
        numbers = iter(range(args.tasks))
        stuck: list[str] = []
        finished: dict[str, tuple[str, float]] = {}

        async def slot() -> None:
            for i in numbers:
                at = datetime.now(UTC)
                task_id = await post_task(client, str(i))
                seen = await watcher.wait(task_id, at, args.task_timeout)
                if seen is None:
                    stuck.append(task_id)
                else:
                    finished[task_id] = seen

        meter = CpuMeter(root)
        started = time.perf_counter()
        try:
            await asyncio.gather(*(slot() for _ in range(args.concurrency)))
        finally:
            watching.cancel()
        cpu = meter.close()
        last = max((at for _, at in finished.values()), default=started)

        lone_steps = step_overheads(await history(client, lone))
        gate = asyncio.Semaphore(8)

        async def steps_of(task_id: str) -> list[float]:
            async with gate:
                return step_overheads(await history(client, task_id))

        completed = [t for t, (status, _) in finished.items() if status == "completed"]
        steps = [s for found in await asyncio.gather(*map(steps_of, completed)) for s in found]
        described = [await describe_stuck(client, task_id) for task_id in stuck]
    failed = sum(status != "completed" for status, _ in finished.values())
    return Run(lone_s, lone_steps, args.tasks, last - started, steps, cpu, failed, described, quiet)


# -- the peer: LangGraph with its Postgres checkpointer ------------------------------------------
def peer_missing() -> str | None:
    """The peer's module that is not installed, if one is not."""
    for module in ("langgraph.graph", "langgraph.checkpoint.postgres.aio", "psycopg_pool"):
        try:
            if importlib.util.find_spec(module) is None:
                return module
        except ImportError as exc:  # a parent package is missing
            return exc.name or module
    return None


async def peer_database(postgres_url: str) -> str:
    """A fresh database for the peer on the stack's Postgres; its URL."""
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {PEER_DATABASE}")
        await conn.execute(f"CREATE DATABASE {PEER_DATABASE}")
    finally:
        await conn.close()
    return postgres_url.rsplit("/", 1)[0] + f"/{PEER_DATABASE}"


def not_the_stacks_backend(database: str) -> Keep:
    """Keep every Postgres process but the backends serving the stack's own database."""
    prefix = f"postgres: postgres {database} "

    def keep(name: str, proc: psutil.Process) -> bool:
        if name != "postgres":
            return False
        cmd = proc.cmdline()
        return not (cmd and cmd[0].startswith(prefix))

    return keep


@contextmanager
def suspended(root: psutil.Process) -> Iterator[str]:
    """The stack's processes but Postgres stopped (SIGSTOP) meanwhile, so that its background
    work (a quality fit that the load set off) leaves the peer the cores; a line that says so."""
    procs = [(name, proc) for name, proc in processes(root).values() if name != "postgres"]
    fits = sum("quality fit" in name for name, _ in procs)
    stopped = []
    try:
        for _, proc in procs:
            with suppress(psutil.Error):
                proc.suspend()
                stopped.append(proc)
        yield (
            f"the wrenchai stack suspended meanwhile but Postgres: {len(stopped)} processes, "
            f"{fits} of them a quality fit"
        )
    finally:
        for proc in stopped:
            with suppress(psutil.Error):
                proc.resume()


class PeerState(TypedDict):
    n: int
    thread: str  # the task's thread_id, so each node's timings go with their task


class Peer:
    """The same five chained steps as a LangGraph graph, each node calling ``bench.noop``;
    each node's return time and tool time are kept by thread_id."""

    def __init__(self) -> None:
        from langgraph.graph import END, START, StateGraph

        self.tool = Noop()
        self.invoked: dict[str, float] = {}
        self.returns: dict[str, list[tuple[float, float]]] = defaultdict(list)
        builder = StateGraph(PeerState)
        for i in range(1, STEPS + 1):
            builder.add_node(f"s{i}", self.node(i))
            builder.add_edge(START if i == 1 else f"s{i - 1}", f"s{i}")
        builder.add_edge(f"s{STEPS}", END)
        self.builder = builder

    def node(self, i: int) -> Any:
        async def call(state: PeerState) -> dict[str, int]:
            started = time.perf_counter()
            result = await self.tool.call({"n": i})
            ended = time.perf_counter()
            self.returns[state["thread"]].append((ended, ended - started))
            return {"n": result["n"]}

        return call

    def overheads(self, thread: str) -> list[float]:
        """Per node, in ms: from the previous node's return (the invoke's start for the
        first) to this one's, minus the tool's time."""
        found, ready = [], self.invoked[thread]
        for ended, tool_s in self.returns[thread]:
            found.append((ended - ready - tool_s) * 1000)
            ready = ended
        return found


async def run_peer(stack: Stack, postgres_url: str, args: argparse.Namespace) -> Run:
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    peer = Peer()
    url = await peer_database(postgres_url)
    root = psutil.Process(stack.proc.pid)
    # As LangGraph's documentation sets up a pool for the saver.
    pool = AsyncConnectionPool(
        url,
        min_size=args.concurrency,
        max_size=args.concurrency,
        open=False,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
    )
    with suspended(root) as note:
        await pool.open(wait=True)
        try:
            saver = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
            await saver.setup()
            graph = peer.builder.compile(checkpointer=saver)

            async def invoke() -> str:
                thread = str(uuid.uuid4())
                peer.invoked[thread] = time.perf_counter()
                config: Any = {"configurable": {"thread_id": thread}}
                start: PeerState = {"n": 0, "thread": thread}
                await graph.ainvoke(start, config, durability=args.peer_durability)
                return thread

            for _ in range(2):
                await invoke()
            sent = time.perf_counter()
            lone = await invoke()
            lone_s = time.perf_counter() - sent

            meter = CpuMeter(root, not_the_stacks_backend(postgres_url.rsplit("/", 1)[1]))
            gate = asyncio.Semaphore(args.concurrency)

            async def task() -> str:
                async with gate:
                    return await invoke()

            started = time.perf_counter()
            threads = await asyncio.gather(*(task() for _ in range(args.tasks)))
            took = time.perf_counter() - started
            cpu = meter.close()
        finally:
            await pool.close()
    # This process is the peer: its CPU counts, not as a client's.
    cpu.by_name = {"langgraph (this process)": cpu.client, **cpu.by_name}
    cpu.client = 0.0
    steps = [s for thread in threads for s in peer.overheads(thread)]
    return Run(lone_s, peer.overheads(lone), args.tasks, took, steps, cpu, note=note)


def peer_versions() -> str:
    return ", ".join(f"{p} {importlib.metadata.version(p)}" for p in PEER_PACKAGES)


# -- the floor ----------------------------------------------------------------------------------
async def floor(count: int, concurrency: int) -> tuple[float, float]:
    """(tasks per second, ms per call) of a plain asyncio loop calling the tool."""
    tool = Noop()
    gate = asyncio.Semaphore(concurrency)

    async def task() -> None:
        async with gate:
            for i in range(1, STEPS + 1):
                await tool.call({"n": i})

    started = time.perf_counter()
    await asyncio.gather(*(task() for _ in range(count)))
    took = time.perf_counter() - started
    return count / took, took / (count * STEPS) * 1000


# -- the run ------------------------------------------------------------------------------------
def print_run(name: str, run: Run, own: str) -> None:
    print(f"  ({run.note})")
    print(
        f"  {name} lone task, idle: {run.lone_s * 1000:8.1f} ms to completed; "
        f"overhead/step {figures(run.lone_steps)}"
    )
    done = run.tasks - run.failed - len(run.stuck)
    print(
        f"  {name} load: {run.rate:8.1f} tasks/s ({done} completed, {run.failed} failed, "
        f"{len(run.stuck)} stuck, in {run.took:.2f} s); overhead/step {figures(run.steps)} "
        f"({len(run.steps)} steps)"
    )
    run.cpu.print(run.tasks, own)


def ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs else "-"


async def measure(stack: Stack, args: argparse.Namespace) -> None:
    ours = await run_wrenchai(stack, args)
    print(
        f"journey: {args.tasks} tasks x {STEPS} chained steps of bench.noop, "
        f"{args.concurrency} in flight"
    )
    print(
        "wrenchai: wrenchai dev (SuperAgent, JourneyAgent, InspectorAgent workers, projector, "
        "API, embedded broker and Postgres; default settings, acceptance on; "
        f"WRENCH_WRITE_RATE_LIMIT={RATE_LIMIT}); POST /tasks, done when the read model says "
        f"completed (polled every {args.poll_ms} ms)"
    )
    print_run("wrenchai", ours, "wrenchai total")
    for text in ours.stuck:
        print(f"    stuck {text}")

    missing = peer_missing()
    theirs: Run | None = None
    if missing is not None:
        print(
            f"peer skipped: LangGraph and its Postgres checkpointer are not installed (no module "
            f"{missing!r}); pip install -e '.[bench]' installs them (make bench does)"
        )
    else:
        printed = (stack.state / "dev.log").read_text()
        postgres = re.search(r"Postgres\s+(postgresql://\S+)", printed)
        assert postgres is not None, "wrenchai dev printed no Postgres URL"
        theirs = await run_peer(stack, postgres.group(1), args)
        print(
            f"peer: LangGraph, AsyncPostgresSaver over a pool of {args.concurrency} connections, "
            f"durability {args.peer_durability}, database {PEER_DATABASE} on the same Postgres "
            f"({peer_versions()}); one ainvoke per task, each its own thread_id"
        )
        print_run("peer", theirs, "peer total")

    rate, per_call = await floor(args.tasks, args.concurrency)
    print(f"floor (plain asyncio loop, same tool): {rate:10.1f} tasks/s, {per_call:.4f} ms/call")
    if theirs is not None:
        p50 = ratio(percentile(ours.steps, 50), percentile(theirs.steps, 50)) if ours.steps else "-"
        p99 = ratio(percentile(ours.steps, 99), percentile(theirs.steps, 99)) if ours.steps else "-"
        print(
            f"ratios wrenchai/peer: tasks/s {ratio(ours.rate, theirs.rate)}, "
            f"overhead/step p50 {p50}, p99 {p99}, "
            f"lone task {ratio(ours.lone_s, theirs.lone_s)}, "
            f"CPU ms/task {ratio(ours.cpu.total, theirs.cpu.total)}"
        )


def main(args: argparse.Namespace) -> None:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    state = Path(tempfile.mkdtemp(prefix="wrench-journey-"))
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
    extra = {"WRENCH_TOOL_MODULES": "noop_tool", "PYTHONPATH": path}
    stack = start_stack(state, args.log_level, extra)
    try:
        asyncio.run(measure(stack, args))
    finally:
        stop_stack(stack.proc)
        if args.keep:
            print(f"  state and logs kept in {state}")
        else:
            shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20, help="tasks in flight")
    parser.add_argument(
        "--task-timeout", type=float, default=120.0, help="seconds before a task counts as stuck"
    )
    parser.add_argument("--poll-ms", type=int, default=50, help="the watcher's list interval")
    parser.add_argument("--peer-durability", choices=("sync", "async", "exit"), default="async")
    parser.add_argument("--keep", action="store_true", help="keep the state directory")
    parser.add_argument("--log-level", default="warning", help="of the stack's processes")
    main(parser.parse_args())
