"""``wrenchai dev``: the whole stack on one machine, supervised.

Start-up order matters: the embedded broker and Postgres first, then topics, migrations and a
restore of the archive into the (in-memory, so usually empty) broker, and only then the
processes that read the log: the projector, the processor workers and the API. Shutdown runs
the other way round, each step with its share of a ten-second budget, so Ctrl-C never leaves
a process behind; every child also dies with the supervisor if the supervisor is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import structlog
from pydantic import SecretStr, ValidationError

from events import bootstrap_topics
from projections._db import connect
from projections._migrate import migrate
from projections._restore import RestoreReport, restore_all
from wrenchai._bootstrap import Bootstrap, bootstrap_admin
from wrenchai._state import record_stack, secret_files, with_generated_secrets
from wrenchai._supervisor import Child, stop_all
from wrenchai._workers import available_workers, workers_to_start
from wrenchai.embedded import EmbeddedBroker, EmbeddedPostgres, free_port, require_free_port
from wrenchai.errors import ConfigurationError, WrenchError
from wrenchai.logging import configure_logging
from wrenchai.settings import _SECRET_FIELDS, Settings

log = structlog.get_logger(__name__)
T = TypeVar("T")

# Shares of the shutdown budget (they add up to 9 s, under the promised 10 s).
API_STOP_S = 2.0
WORKER_STOP_S = 1.5
PROJECTOR_STOP_S = 2.5
BROKER_STOP_S = 1.0
POSTGRES_STOP_S = 2.0

READY_TIMEOUT_S = 60.0
_WATCH_INTERVAL_S = 0.5

# Values for people at a keyboard: the embedded broker holds a group join for half the
# rebalance timeout, so a restarted projector or worker rejoins in ~3 s instead of 5; it
# answers a fetch over several partitions only when the fetch's wait is over, so a short
# wait keeps each hop through the log at a few milliseconds; and it refuses InitProducerId,
# which an idempotent producer asks for at its start.
DEV_DEFAULTS: dict[str, Any] = {
    "kafka_session_timeout_ms": 6_000,
    "kafka_rebalance_timeout_ms": 6_000,
    "kafka_fetch_max_wait_ms": 20,
    "kafka_idempotent": False,
    "log_format": "console",
}


@dataclass
class Embedded:
    """The embedded components this run started (None: configured from outside)."""

    broker: EmbeddedBroker | None = None
    postgres: EmbeddedPostgres | None = None

    def stop(self) -> None:
        """The broker, then Postgres (fast shutdown); each killed if it overruns its share."""
        if self.broker is not None and self.broker.proc is not None:
            self.broker.stop(BROKER_STOP_S)
            log.info("broker stopped")
        if self.postgres is not None and self.postgres.proc is not None:
            self.postgres.stop(POSTGRES_STOP_S)
            log.info("postgres stopped")


def run_dev(
    *,
    state_dir: Path,
    api_port: int,
    broker_port: int,
    replicas: Iterable[str] = (),
) -> int:
    """Run the stack until SIGINT or SIGTERM; returns the process exit code. ``replicas``
    are ``NAME=COUNT`` options: COUNT workers of agent NAME share its partitions."""
    try:
        settings = Settings()
    except ValidationError as exc:
        raise ConfigurationError(f"invalid WRENCH_* settings: {exc}") from exc
    counts = parse_replicas(replicas, settings)
    embed_broker = "kafka_bootstrap" not in settings.model_fields_set
    try:
        require_free_port(api_port, "--api-port", settings.api_host)
        if embed_broker:
            require_free_port(broker_port, "--broker-port")
    except ConfigurationError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    state_dir = state_dir.resolve()
    (state_dir / "logs").mkdir(parents=True, exist_ok=True)
    embedded = Embedded()
    settings = with_generated_secrets(_dev_settings(settings, api_port), state_dir)
    if "data_dir" not in settings.model_fields_set:
        settings = settings.model_copy(update={"data_dir": state_dir / "data"})
    # After the secrets are known, so the log redactor knows them too.
    configure_logging(settings, process="dev")
    # The supervisor polls /health; one line per poll would drown the children's output.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Until the event loop takes over the signals, SIGTERM unwinds like Ctrl-C, so the
    # finally below stops whatever already started.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        started = time.monotonic()
        settings = _start_embedded(settings, state_dir, broker_port, embed_broker, embedded)
        return asyncio.run(_supervise(settings, state_dir, api_port, embedded, started, counts))
    except KeyboardInterrupt:
        log.info("stopped during start-up")
        return 0
    finally:
        embedded.stop()
        signal.signal(signal.SIGTERM, previous)


def _dev_settings(settings: Settings, api_port: int) -> Settings:
    """Dev-friendly values for whatever the environment leaves unset."""
    update = {k: v for k, v in DEV_DEFAULTS.items() if k not in settings.model_fields_set}
    update["api_port"] = api_port
    return settings.model_copy(update=update)


def _start_embedded(
    settings: Settings, state_dir: Path, broker_port: int, embed_broker: bool, embedded: Embedded
) -> Settings:
    """Start the broker and Postgres the environment does not point at; returns the settings
    that point at them. Runs on the main thread: PR_SET_PDEATHSIG is tied to the thread that
    spawned a child, so starting them from a worker thread would kill them when it ends."""
    logs = state_dir / "logs"
    update: dict[str, Any] = {}
    if embed_broker:
        embedded.broker = EmbeddedBroker(broker_port, logs / "tansu.log")
        embedded.broker.start()
        update["kafka_bootstrap"] = embedded.broker.bootstrap
        if settings.kafka_idempotent:  # asked for explicitly: DEV_DEFAULTS turn it off
            log.warning(
                "WRENCH_KAFKA_IDEMPOTENT=true ignored: the embedded broker does not support "
                "idempotent producers; point WRENCH_KAFKA_BOOTSTRAP at Apache Kafka for them"
            )
        update["kafka_idempotent"] = False
    if "database_url" not in settings.model_fields_set:
        embedded.postgres = EmbeddedPostgres(
            state_dir / "postgres", free_port(), logs / "postgres.log"
        )
        embedded.postgres.start()
        update["database_url"] = SecretStr(embedded.postgres.url())
    return settings.model_copy(update=update)


def child_environment(
    settings: Settings, inherited: Mapping[str, str], secret_files: Mapping[str, Path]
) -> dict[str, str]:
    """The environment of every child: ``inherited`` with each setting written as its
    ``WRENCH_*`` variable, so the children run with exactly the supervisor's configuration.

    This is the one place that reads ``os.environ`` besides Settings: children need PATH,
    HOME and the rest of it. Secrets never travel as variables, because a process's
    environment is readable by whatever can read ``/proc/<pid>/environ`` (issue 9, "Running
    code safely"): every secret that is set goes as ``WRENCH_<NAME>_FILE`` naming its file in
    ``secret_files`` (``wrenchai._state.secret_files`` writes them, 0600, under the state
    directory), and the variable the supervisor inherited, or a ``_FILE`` pointing elsewhere,
    is removed.
    """
    env = dict(inherited)
    env["PYTHONUNBUFFERED"] = "1"  # so each child's log file is current, line by line
    for name, value in settings.model_dump(mode="json", exclude=set(_SECRET_FIELDS)).items():
        variable = f"WRENCH_{name.upper()}"
        if value is None:
            env.pop(variable, None)
        else:
            env[variable] = value if isinstance(value, str) else json.dumps(value)
    for name in _SECRET_FIELDS:
        variable = f"WRENCH_{name.upper()}"
        env.pop(variable, None)
        env.pop(f"{variable}_FILE", None)
        if getattr(settings, name) is None:
            continue
        if name not in secret_files:
            # A child without it would fall back to a default (another database) or run
            # without a key; better to stop here than to start a stack that half works.
            raise ConfigurationError(
                f"the secret {name} has no file to hand the children; pass "
                "wrenchai._state.secret_files(settings, state_dir) as secret_files"
            )
        env[f"{variable}_FILE"] = str(secret_files[name])
    return env


def _replica_names(name: str, count: int) -> list[str]:
    return [name if n == 1 else f"{name}-{n}" for n in range(1, count + 1)]


def parse_replicas(values: Iterable[str], settings: Settings) -> dict[str, int]:
    """``NAME=COUNT`` options to counts per worker; ConfigurationError naming the fix
    otherwise."""
    known = available_workers()
    found: dict[str, int] = {}
    for value in values:
        name, _, count = value.partition("=")
        if name not in known:
            raise ConfigurationError(
                f"--replicas {value}: no worker named {name!r}; one of {', '.join(known)}"
            )
        if not count.isdigit() or not 1 <= int(count) <= settings.partitions:
            raise ConfigurationError(
                f"--replicas {value}: give a count from 1 to {settings.partitions} (the "
                "partitions of wrench.events: more workers of a kind than partitions would idle)"
            )
        found[name] = int(count)
    return found


def build_children(
    env: Mapping[str, str],
    logs: Path,
    api_port: int,
    replicas: Mapping[str, int] | None = None,
    names: Iterable[str] | None = None,
) -> tuple[Child, list[Child], Child]:
    """The projector, the workers ``names`` (default: the agents; ``replicas`` of a worker
    share its partitions: names ``journey-agent``, ``journey-agent-2``, ...) and the API, as
    separate processes.

    The projector and each worker get a free port of their own for their metrics
    (WRENCH_METRICS_PORT, whatever the environment said: one port cannot serve them all);
    a restarted child keeps its port. The API serves GET /metrics on its own port."""
    command = [sys.executable, "-m", "wrenchai"]
    projector = Child(
        "projector", [*command, "projector"], _with_metrics_port(env), logs / "projector.log"
    )
    workers = [
        Child(label, [*command, "worker", name], _with_metrics_port(env), logs / f"{label}.log")
        for name in (workers_to_start() if names is None else names)
        for label in _replica_names(name, (replicas or {}).get(name, 1))
    ]
    api_env = {k: v for k, v in env.items() if k != "WRENCH_METRICS_PORT"}
    api = Child("api", [*command, "api", "--port", str(api_port)], api_env, logs / "api.log")
    return projector, workers, api


def _with_metrics_port(env: Mapping[str, str]) -> dict[str, str]:
    return {**env, "WRENCH_METRICS_PORT": str(free_port())}


def metrics_urls(settings: Settings, children: Iterable[Child]) -> dict[str, str]:
    """Where each child serves its metrics, by the child's name (those that serve some)."""
    host = settings.metrics_host
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"  # listening everywhere: loopback reaches it
    shown = f"[{host}]" if ":" in host else host
    return {
        child.name: f"http://{shown}:{child.env['WRENCH_METRICS_PORT']}/metrics"
        for child in children
        if "WRENCH_METRICS_PORT" in child.env
    }


async def _prepare(settings: Settings) -> list[RestoreReport]:
    """Topics, migrations and a restore of the archive, before anything reads the log."""
    await bootstrap_topics(settings)
    conn = await connect(settings)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return await restore_all(settings)


async def _supervise(
    settings: Settings,
    state_dir: Path,
    api_port: int,
    embedded: Embedded,
    started: float,
    replicas: Mapping[str, int],
) -> int:
    """Prepare, run the children until a signal (or an embedded component dies), stop them."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _request_stop, stop, sig)
    reports = await _until_stopped(_prepare(settings), stop)
    if reports is None:
        return 0
    for report in reports:
        if report.outcome == "restored":
            print(report, flush=True)
    files = secret_files(settings, state_dir)
    record_stack(settings, state_dir, f"http://127.0.0.1:{api_port}", files)
    env = child_environment(settings, os.environ, files)
    # The tracer only with an OTLP endpoint: without one it would have nothing to do.
    names = workers_to_start(settings)
    projector, workers, api = build_children(env, state_dir / "logs", api_port, replicas, names)
    for child in (projector, *workers, api):
        child.start()
    urls = metrics_urls(settings, (projector, *workers))
    announce = asyncio.create_task(
        _announce(settings, state_dir, api_port, embedded, started, urls)
    )
    died = asyncio.create_task(_watch_embedded(embedded, stop))
    await stop.wait()
    failed = died.done()
    for task in (announce, died):
        task.cancel()
    log.info("stopping the stack")
    await api.stop(API_STOP_S)
    await stop_all(workers, WORKER_STOP_S)
    await projector.stop(PROJECTOR_STOP_S)
    await asyncio.to_thread(embedded.stop)
    log.info("stack stopped")
    return 1 if failed else 0


def _request_stop(stop: asyncio.Event, sig: int) -> None:
    if stop.is_set():
        log.info("already stopping", signal=signal.Signals(sig).name)
    else:
        log.info("signal received; stopping", signal=signal.Signals(sig).name)
        stop.set()


async def _until_stopped(work: Coroutine[Any, Any, T], stop: asyncio.Event) -> T | None:
    """Await ``work`` unless ``stop`` is set first (then cancel it and return None)."""
    task = asyncio.create_task(work)
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return None
    return task.result()


async def _watch_embedded(embedded: Embedded, stop: asyncio.Event) -> None:
    """Stop the stack if the broker or Postgres exits: nothing works without them, and the
    broker's data is gone with it. Returns only in that case."""
    components = [
        (n, c)
        for n, c in (("broker", embedded.broker), ("postgres", embedded.postgres))
        if c is not None
    ]
    while True:
        for name, component in components:
            proc = component.proc
            if proc is not None and proc.poll() is not None:
                log.error(
                    "embedded component exited; stopping the stack",
                    component=name,
                    exit_code=proc.returncode,
                    log=str(component.log_path),
                )
                stop.set()
                return
        await asyncio.sleep(_WATCH_INTERVAL_S)


async def _announce(
    settings: Settings,
    state_dir: Path,
    api_port: int,
    embedded: Embedded,
    started: float,
    metrics: Mapping[str, str],
) -> None:
    """Once the API answers /health, make the bootstrap admin on a first start and print
    where everything is (each process's metrics too), with a curl line that uses the admin
    key."""
    base = f"http://127.0.0.1:{api_port}"
    ready = await _wait_healthy(f"{base}/health", READY_TIMEOUT_S)
    admin = await _bootstrap(settings, state_dir)
    elapsed = time.monotonic() - started
    status = f"ready in {elapsed:.1f}s" if ready else "started, but /health does not answer yet"
    postgres = embedded.postgres.url() if embedded.postgres else "(WRENCH_DATABASE_URL)"
    key = admin.key_file if admin else state_dir / "admin-api-key"
    created = " (created now)" if admin and admin.created else ""
    width = max((len(name) for name in metrics), default=0)
    scrapes = "".join(f"    {name:<{width}}  {url}\n" for name, url in metrics.items())
    print(
        f"\nWrenchAI dev stack {status}\n"
        f"  API          {base}\n"
        f"  API docs     {base}/docs\n"
        f"  dashboard    {base}/ui (sign in with the admin key or login)\n"
        f"  broker       {settings.kafka_bootstrap}\n"
        f"  Postgres     {postgres}\n"
        f"  state dir    {state_dir}\n"
        f"  logs         {state_dir / 'logs'}\n"
        f"  admin key    {key}{created}\n"
        f"  admin login  user 'admin', password in {state_dir / 'admin-password'}\n"
        f"  metrics      {base}/metrics (scope metrics:read: the admin key)\n"
        f"{scrapes}"
        f"Submit a task:\n"
        f'  curl -s -X POST {base}/tasks -H "X-API-Key: $(cat {key})" '
        f"-H 'content-type: application/json' "
        f'-d \'{{"description": "Summarise the open incidents"}}\'\n'
        f"Ctrl-C stops everything.\n",
        flush=True,
    )


async def _bootstrap(settings: Settings, state_dir: Path) -> Bootstrap | None:
    """The bootstrap admin, made on a first start; None (and an error logged) when it could
    not be, so the stack still runs and says so."""
    try:
        return await bootstrap_admin(settings, state_dir)
    except WrenchError as exc:
        log.error("bootstrap admin not created", reason=exc.message)
        return None


async def _wait_healthy(url: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=1.0) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return True
            await asyncio.sleep(0.25)
    return False
