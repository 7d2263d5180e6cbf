"""How fast live streams deliver, against a bare Kafka consumer of the same events.

Starts the embedded broker and embedded Postgres, the projector and the API as their own
processes (`wrenchai projector`, `wrenchai api`), creates a tenant with `wrenchai tenant
create`, and measures, in one run:

1. latency on an open WS /ws/events (the tenant's live stream): from POST /tasks to that
   task's task.submitted on the socket, and from an event's publication (the producer's
   ack) to its delivery on the socket; p50 and p99. Submissions and publications go one at
   a time, a random 0-25 ms apart (so they do not fall in step with the consumers' fetches);
2. fan-out: S sockets (default 1,000) open on the one API process, N events published at
   once (default 2,000): events delivered per second summed over the sockets, the API
   process's memory per socket (RSS before and after opening them) and its CPU time per
   delivered event. The projector is stopped first, so the API has the CPU the broker and
   the clients leave it;
3. the baseline, in the same run: a bare aiokafka consumer (no group, partitions assigned,
   from the same offsets) reading the same events: its latency from publication to receipt
   beside the socket's in 1., and its read rate and CPU per record over the events of 2.

The clients are all in this process (the websockets asyncio client); it prints how much of a
core they used, so a run where they, not the API, set the pace shows. They offer
permessage-deflate, as browsers do, and `wrenchai api` accepts it: the server then compresses
every message for every socket (--no-deflate: clients that do not offer it).
The consumers use kafka_fetch_max_wait_ms=20, the value `wrenchai dev` uses (the embedded
broker answers a fetch over several partitions only when that wait is over).

Usage: python bench/streams.py [--sockets N] [--events N] [--submissions N] [--no-deflate]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import SecretStr
from websockets.asyncio.client import ClientConnection, connect

from events import (
    Actor,
    Event,
    EventProducer,
    Position,
    ThoughtRecorded,
    bootstrap_topics,
    codec_from_settings,
    create_consumer,
    generate_key,
    log_end_offsets,
)
from projections._migrate import migrate
from wrenchai.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from wrenchai.logging import configure_logging
from wrenchai.settings import Settings
from wrenchai.stack import DEV_DEFAULTS

TENANT = "bench"
AGENT = Actor(kind="agent", id="journey-agent")
OPEN_AT_ONCE = 50
"""Sockets opened concurrently while the fan-out's sockets are being opened."""


# -- processes --------------------------------------------------------------------------------
def wrenchai(settings: Settings, logs: Path, *args: str) -> subprocess.Popen[bytes]:
    """``wrenchai ARGS`` as a child process on ``settings``, its output in ``logs``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WRENCH_")}
    env.update(settings.to_env())
    with open(logs / f"{args[0]}.log", "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "wrenchai", *args], stdout=out, stderr=subprocess.STDOUT, env=env
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def create_tenant(settings: Settings) -> str:
    """The first admin API key of a new tenant, issued by `wrenchai tenant create` (which
    waits for the projector to apply it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WRENCH_")}
    env.update(settings.to_env())
    done = subprocess.run(
        [sys.executable, "-m", "wrenchai", "tenant", "create", TENANT],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = re.search(r"admin API key \(shown once\): (\S+)", done.stdout)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"wrenchai tenant create failed: {done.stdout}{done.stderr}")
    return found.group(1)


async def wait_for_api(proc: subprocess.Popen[bytes], base: str, logs: Path) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        deadline = time.monotonic() + 60
        while True:
            try:
                if (await client.get("/health")).status_code in (200, 503):
                    return
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the API did not start: {(logs / 'api.log').read_text()[-2000:]}")
            await asyncio.sleep(0.2)


def cpu_s(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


# -- sockets and the baseline consumer --------------------------------------------------------
def ws_url(base: str, path: str) -> str:
    return base.replace("http://", "ws://", 1) + path


async def open_socket(base: str, key: str, deflate: bool) -> ClientConnection:
    """A WS /ws/events of the tenant, once the server says it is live."""
    ws = await connect(
        ws_url(base, "/ws/events"),
        additional_headers={"X-API-Key": key},
        compression="deflate" if deflate else None,
        ping_interval=None,
        close_timeout=1,
        open_timeout=60,
    )
    first = orjson.loads(await asyncio.wait_for(ws.recv(), 60))
    if first != {"type": "live"}:
        raise SystemExit(f"the socket opened with {first}, not live")
    return ws


@asynccontextmanager
async def baseline_consumer(
    settings: Settings, start: dict[int, int]
) -> AsyncIterator[AIOKafkaConsumer]:
    """A bare consumer as the hub makes its own (no group, every partition assigned), from
    ``start``; what the hub adds on top is routing, decoding and the sockets."""
    topic = settings.topic("events")
    consumer = create_consumer(settings, max_poll_records=500)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(start)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, start[tp.partition])
        yield consumer
    finally:
        await consumer.stop()


def thought(task_id: uuid.UUID, number: int) -> Event:
    """An agent's thought of the bench tenant (its text is encrypted on the log)."""
    return Event.new(
        ThoughtRecorded(operation="plan", number=number + 1, text=f"thought {number}"),
        tenant_id=TENANT,
        actor=AGENT,
        task_id=task_id,
    )


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


# -- 1. latency -------------------------------------------------------------------------------
@dataclass
class Arrivals:
    """When each position (and each task's first event) reached a reader."""

    at: dict[str, float] = field(default_factory=dict)
    task_at: dict[str, float] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def saw(self, position: str, task_id: str | None, now: float) -> None:
        self.at.setdefault(position, now)
        if task_id is not None:
            self.task_at.setdefault(task_id, now)
        self.changed.set()

    async def wait(self, found: Any) -> float:
        """The arrival time ``found()`` returns once it returns one."""
        async with asyncio.timeout(30):
            while (when := found()) is None:
                self.changed.clear()
                await self.changed.wait()
        return float(when)


async def read_socket(ws: ClientConnection, arrivals: Arrivals) -> None:
    async for text in ws:
        now = time.perf_counter()
        message = orjson.loads(text)
        if "position" in message:
            arrivals.saw(message["position"], message["event"].get("task_id"), now)


async def read_baseline(consumer: AIOKafkaConsumer, arrivals: Arrivals) -> None:
    while True:
        batch = await consumer.getmany(timeout_ms=1_000)
        now = time.perf_counter()
        for tp, records in batch.items():
            for record in records:
                arrivals.saw(str(Position(tp.partition, record.offset)), None, now)


@dataclass
class Latencies:
    submit_ms: list[float]
    post_ms: list[float]
    socket_ms: list[float]
    baseline_ms: list[float]


async def measure_latency(
    settings: Settings, base: str, key: str, producer: EventProducer, count: int, deflate: bool
) -> Latencies:
    ws_seen, base_seen = Arrivals(), Arrivals()
    ws = await open_socket(base, key, deflate)
    start = await log_end_offsets(settings, settings.topic("events"))
    found = Latencies([], [], [], [])
    async with (
        baseline_consumer(settings, start) as consumer,
        httpx.AsyncClient(base_url=base, headers={"X-API-Key": key}, timeout=30) as http,
        asyncio.TaskGroup() as readers,
    ):
        tasks = [
            readers.create_task(read_socket(ws, ws_seen)),
            readers.create_task(read_baseline(consumer, base_seen)),
        ]
        for i in range(count + 5):  # the first five warm the paths up, untimed
            await asyncio.sleep(random.uniform(0, 0.025))
            sent = time.perf_counter()
            answer = await http.post("/tasks", json={"description": f"bench task {i}"})
            answered = time.perf_counter()
            if answer.status_code != 202:
                raise SystemExit(f"POST /tasks answered {answer.status_code}: {answer.text}")
            task_id = answer.json()["task_id"]
            arrived = await ws_seen.wait(lambda t=task_id: ws_seen.task_at.get(t))
            if i >= 5:
                found.submit_ms.append((arrived - sent) * 1000)
                found.post_ms.append((answered - sent) * 1000)
        task_id = uuid.uuid4()
        for i in range(count):
            await asyncio.sleep(random.uniform(0, 0.025))
            position = str(await producer.publish(thought(task_id, i)))
            acked = time.perf_counter()
            on_socket = await ws_seen.wait(lambda p=position: ws_seen.at.get(p))
            on_baseline = await base_seen.wait(lambda p=position: base_seen.at.get(p))
            found.socket_ms.append((on_socket - acked) * 1000)
            found.baseline_ms.append((on_baseline - acked) * 1000)
        await ws.close()
        for task in tasks:
            task.cancel()
    return found


# -- 2. fan-out -------------------------------------------------------------------------------
@dataclass
class Counter:
    """Events one socket received, and when it had all it was waiting for."""

    want: int = 0
    got: int = 0
    done_at: float | None = None
    closed: int | None = None


async def count_events(ws: ClientConnection, counter: Counter, all_done: asyncio.Event) -> None:
    try:
        async for text in ws:
            # Only event messages count; the server's control messages ({"type": ...}) not.
            if isinstance(text, str) and text.startswith('{"position"'):
                counter.got += 1
                if counter.got == counter.want:
                    counter.done_at = time.perf_counter()
                    all_done.set()
    finally:
        counter.closed = ws.close_code
        all_done.set()


async def open_many(base: str, key: str, count: int, deflate: bool) -> list[ClientConnection]:
    sockets: list[ClientConnection] = []
    for first in range(0, count, OPEN_AT_ONCE):
        batch = min(OPEN_AT_ONCE, count - first)
        sockets += await asyncio.gather(*(open_socket(base, key, deflate) for _ in range(batch)))
    return sockets


@dataclass
class FanOut:
    sockets: int
    events: int
    open_s: float
    rss_before: int
    rss_after: int
    rss_peak: int
    idle_cpu: float
    delivered: int
    took_s: float
    api_cpu_s: float
    client_cpu_s: float
    cut: int
    deflate: str
    start: dict[int, int]
    last: dict[int, int]


async def sample_rss(proc: psutil.Process, peak: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], proc.memory_info().rss)
        try:
            await asyncio.wait_for(stop.wait(), 0.1)
        except TimeoutError:
            pass


async def measure_fan_out(
    settings: Settings,
    base: str,
    key: str,
    api: psutil.Process,
    producer: EventProducer,
    args: argparse.Namespace,
) -> FanOut:
    rss_before = api.memory_info().rss
    opened = time.perf_counter()
    sockets = await open_many(base, key, args.sockets, not args.no_deflate)
    open_s = time.perf_counter() - opened
    response = sockets[0].response
    agreed = response.headers.get("Sec-WebSocket-Extensions", "") if response else ""
    deflate = "on" if "permessage-deflate" in agreed else "off"
    await asyncio.sleep(2)  # the sockets settle (their first credential rechecks)
    rss_after = api.memory_info().rss
    idle_started, idle_cpu = time.perf_counter(), cpu_s(api)
    await asyncio.sleep(3)
    idle = (cpu_s(api) - idle_cpu) / (time.perf_counter() - idle_started)
    counters = [Counter(want=args.events) for _ in sockets]
    all_done, sampled = asyncio.Event(), asyncio.Event()
    peak = [rss_after]
    readers = [
        asyncio.create_task(count_events(ws, c, all_done))
        for ws, c in zip(sockets, counters, strict=True)
    ]
    sampler = asyncio.create_task(sample_rss(api, peak, sampled))
    tasks = [uuid.uuid4() for _ in range(50)]
    events = [thought(tasks[i % len(tasks)], i) for i in range(args.events)]
    api_cpu, client_cpu = cpu_s(api), time.process_time()
    started = time.perf_counter()
    positions = await producer.publish_many(events)
    async with asyncio.timeout(600):
        while not all(c.done_at is not None or c.closed is not None for c in counters):
            all_done.clear()
            await all_done.wait()
    finished = max((c.done_at for c in counters if c.done_at is not None), default=started)
    api_cpu, client_cpu = cpu_s(api) - api_cpu, time.process_time() - client_cpu
    sampled.set()
    await sampler
    await asyncio.gather(*(ws.close() for ws in sockets))
    await asyncio.gather(*readers, return_exceptions=True)
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for position in positions:
        first.setdefault(position.partition, position.offset)
        last[position.partition] = position.offset
    return FanOut(
        sockets=len(sockets),
        events=args.events,
        open_s=open_s,
        rss_before=rss_before,
        rss_after=rss_after,
        rss_peak=peak[0],
        idle_cpu=idle,
        delivered=sum(c.got for c in counters),
        took_s=finished - started,
        api_cpu_s=api_cpu,
        client_cpu_s=client_cpu,
        cut=sum(c.done_at is None for c in counters),
        deflate=deflate,
        start=first,
        last=last,
    )


# -- 3. the baseline's read rate --------------------------------------------------------------
async def baseline_rate(settings: Settings, fan: FanOut, runs: int = 5) -> tuple[float, float]:
    """(seconds, CPU seconds) a bare consumer takes to read the fan-out's events from the
    offsets they were written at: the median of ``runs`` reads (one read takes milliseconds).
    It reads them once untimed first, so its connections and metadata are in place as the
    hub's are."""
    topic = settings.topic("events")
    timings: list[tuple[float, float]] = []
    async with baseline_consumer(settings, fan.start) as consumer:
        await read_all(consumer, fan)
        for _ in range(runs):
            for partition, offset in fan.start.items():
                consumer.seek(TopicPartition(topic, partition), offset)
            started, cpu = time.perf_counter(), time.process_time()
            read = await read_all(consumer, fan)
            timings.append((time.perf_counter() - started, time.process_time() - cpu))
            if read != fan.events:
                raise SystemExit(f"the baseline read {read} records, not {fan.events}")
    return sorted(timings)[runs // 2]


async def read_all(consumer: AIOKafkaConsumer, fan: FanOut) -> int:
    """Read up to the fan-out's last record of every partition; how many records."""
    read, left = 0, set(fan.last)
    while left:
        batch = await consumer.getmany(timeout_ms=1_000)
        for tp, records in batch.items():
            read += len(records)
            if records and records[-1].offset >= fan.last[tp.partition]:
                left.discard(tp.partition)
    return read


# -- the run ----------------------------------------------------------------------------------
def raise_open_files(sockets: int) -> None:
    """Room for every socket (both ends: clients here, the server's in the API process,
    which inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = sockets * 2 + 1_024
    if soft < wanted:
        top = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (top, hard))
        if top < sockets + 256:
            raise SystemExit(f"only {top} open files allowed; --sockets {sockets} needs more")


def bench_settings(args: argparse.Namespace, broker: EmbeddedBroker, url: str) -> Settings:
    return Settings(
        **DEV_DEFAULTS,  # kafka_fetch_max_wait_ms=20 and the group timeouts of `wrenchai dev`
        kafka_bootstrap=broker.bootstrap,
        database_url=SecretStr(url),
        partitions=6,
        encryption_keys=generate_key(),
        jwt_secret=SecretStr(secrets.token_urlsafe(48)),
        # Sockets are the point here, and every one comes from one key; a full queue would
        # cut a socket the clients are about to read (the figure is throughput, not policy).
        ws_max_sockets_per_principal=args.sockets + 10,
        ws_queue_size=max(args.queue_size, 1),
        write_rate_limit=f"{args.submissions + 100}/minute",  # the submissions are one key's
        log_level="warning",
    )


async def main(args: argparse.Namespace) -> None:
    raise_open_files(args.sockets)
    configure_logging(Settings(log_level="warning", log_format="console"))
    state = Path(tempfile.mkdtemp(prefix="wrench-bench-"))
    broker = EmbeddedBroker(free_port(), state / "tansu.log")
    postgres = EmbeddedPostgres(state / "pg", free_port(), state / "pg.log", "bench")
    broker.start()
    postgres.start()
    children: list[subprocess.Popen[bytes]] = []
    try:
        settings = bench_settings(args, broker, postgres.url())
        await bootstrap_topics(settings)
        conn = await asyncpg.connect(settings.database_dsn())
        await migrate(conn)
        await conn.close()
        projector = wrenchai(settings, state, "projector")
        children.append(projector)
        key = await asyncio.to_thread(create_tenant, settings)
        port = free_port()
        api = wrenchai(settings, state, "api", "--port", str(port))
        children.append(api)
        base = f"http://127.0.0.1:{port}"
        await wait_for_api(api, base, state)
        producer = EventProducer(settings, codec_from_settings(settings))
        await producer.start()
        try:
            latency = await measure_latency(
                settings, base, key, producer, args.submissions, not args.no_deflate
            )
            stop(projector)
            process = psutil.Process(api.pid)
            fan = await measure_fan_out(settings, base, key, process, producer, args)
        finally:
            await producer.stop()
        read_s, read_cpu = await baseline_rate(settings, fan)
    finally:
        for child in reversed(children):
            stop(child)
        broker.stop()
        postgres.stop()
    report(args, latency, fan, read_s, read_cpu)


def report(
    args: argparse.Namespace, lat: Latencies, fan: FanOut, read_s: float, read_cpu: float
) -> None:
    def p(values: list[float]) -> str:
        return f"p50 {percentile(values, 50):6.1f} ms   p99 {percentile(values, 99):6.1f} ms"

    print(
        f"kafka_fetch_max_wait_ms={DEV_DEFAULTS['kafka_fetch_max_wait_ms']} (as `wrenchai dev`), "
        f"6 partitions, {os.cpu_count()} cores; permessage-deflate: {fan.deflate}"
    )
    print(f"1. latency on one open WS /ws/events ({args.submissions} each, one at a time)")
    print(f"   POST /tasks -> its task.submitted on the socket: {p(lat.submit_ms)}")
    print(f"   (POST /tasks answered in                         {p(lat.post_ms)})")
    print(f"   producer ack -> delivered on the socket:         {p(lat.socket_ms)}")
    print(f"   producer ack -> bare consumer (baseline):        {p(lat.baseline_ms)}")
    ratio50 = percentile(lat.socket_ms, 50) / percentile(lat.baseline_ms, 50)
    ratio99 = percentile(lat.socket_ms, 99) / percentile(lat.baseline_ms, 99)
    print(f"   socket / baseline: p50 {ratio50:.2f}x   p99 {ratio99:.2f}x")
    per_socket = (fan.rss_after - fan.rss_before) / fan.sockets
    rate = fan.delivered / fan.took_s
    read_rate = fan.events / read_s
    print(
        f"2. fan-out: {fan.sockets:,} sockets on one API process (opened in {fan.open_s:.1f}s), "
        f"{fan.events:,} events published at once"
    )
    client_share = fan.client_cpu_s / fan.took_s
    kept_up = "it kept up" if client_share < 0.9 else "it may be what limited the rate"
    print(
        f"   clients: all {fan.sockets:,} sockets read by this one process (websockets asyncio "
        f"client), {client_share:.0%} of a core during the burst: {kept_up}"
    )
    print(
        f"   delivered {fan.delivered:,} events in {fan.took_s:.1f}s = {rate:,.0f} events/s "
        f"in total, {rate / fan.sockets:,.1f}/s per socket; {fan.cut} sockets short or cut"
    )
    print(
        f"   API process: RSS {fan.rss_before / 2**20:.0f} MiB -> {fan.rss_after / 2**20:.0f} "
        f"MiB with the sockets open = {per_socket / 1024:.1f} KiB per socket; "
        f"peak {fan.rss_peak / 2**20:.0f} MiB during the burst"
    )
    api_us = fan.api_cpu_s / fan.delivered * 1e6
    print(
        f"   API process CPU: {api_us:.1f} us per delivered event ({fan.api_cpu_s:.1f}s, "
        f"{fan.api_cpu_s / fan.took_s:.0%} of a core during the burst; {fan.idle_cpu:.0%} of a "
        f"core idle with the sockets open) = {1e6 / api_us:,.0f} deliveries per API core-second"
    )
    read_us = read_cpu / fan.events * 1e6
    print(
        f"3. baseline: a bare aiokafka consumer read the same {fan.events:,} records from the "
        f"same offsets in {read_s * 1000:.1f} ms (median of 5 reads) = {read_rate:,.0f} records/s, "
        f"{read_us:.1f} us CPU per record"
    )
    print(
        f"   ratios: fan-out delivers {rate / read_rate:.3f}x the events/s the bare consumer "
        f"reads (each event read once by the hub, sent {fan.sockets:,} times); API CPU per "
        f"delivered event is {api_us / read_us:.1f}x the consumer's per record read"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=1_000)
    parser.add_argument("--events", type=int, default=2_000)
    parser.add_argument("--submissions", type=int, default=200)
    parser.add_argument(
        "--queue-size",
        type=int,
        default=0,
        help="WRENCH_WS_QUEUE_SIZE of the API (default: --events + 1,000, so none is cut)",
    )
    parser.add_argument(
        "--no-deflate",
        action="store_true",
        help="clients do not offer permessage-deflate (browsers and websockets do by default)",
    )
    parsed = parser.parse_args()
    parsed.queue_size = parsed.queue_size or parsed.events + 1_000
    asyncio.run(main(parsed))
