"""Prometheus metrics of every WrenchAI process: the families, the functions that record into
them, and the two ways they are exposed.

Every family lives in prometheus_client's default registry, which also holds its process
collector (``process_cpu_seconds_total``, ``process_resident_memory_bytes``, open file
descriptors; Linux only), its platform collector and its GC collector. A process exposes only
what it recorded itself: the API its produced events and open streams, a worker what it
consumed, produced and its lag, the projector its batches. Prometheus sums across processes.

Exposure (docs/operations.md, "Metrics"): the API answers ``GET /metrics`` to a credential
holding ``metrics:read`` (:func:`exposition`); a worker and the projector serve their own
port on ``WRENCH_METRICS_HOST:WRENCH_METRICS_PORT`` when the port is set
(:func:`serve_metrics`).

The module sits at the bottom of the layers, beside the settings: every process imports it,
and it imports nothing of WrenchAI but the settings.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from wrenchai.errors import ConfigurationError
from wrenchai.settings import Settings

log = structlog.get_logger(__name__)

__all__ = [
    "CONTENT_TYPE",
    "TOKEN_KINDS",
    "MetricsServer",
    "TokenKind",
    "TypeCounter",
    "exposition",
    "forget_budget",
    "forget_consumer_lag",
    "observe_llm_request",
    "observe_projector_batch",
    "observe_step",
    "record_cost",
    "record_tokens",
    "serve_metrics",
    "set_budget_ratio",
    "set_consumer_lag",
    "stream_closed",
    "stream_opened",
]

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
"""The media type of :func:`exposition`: Prometheus text format 0.0.4, which every
Prometheus reads (every name here is a classic one, so nothing needs the 1.0.0 format)."""

TokenKind = Literal["input", "output", "cached", "reasoning"]
TOKEN_KINDS: tuple[TokenKind, ...] = ("input", "output", "cached", "reasoning")

# -- the families ---------------------------------------------------------------------------
EVENTS_PRODUCED = Counter(
    "wrench_events_produced",
    "Events a process appended to the log and the broker acknowledged, by the processor that "
    "appended them (api, super-agent, journey-agent, inspector-agent, cost-guard, projector, "
    "cli) and event type.",
    ["processor", "type"],
)
EVENTS_CONSUMED = Counter(
    "wrench_events_consumed",
    "Records a processor read from the log and folded or projected, by event type (the "
    "record's type header; 'unknown' when it has none). Counted once per offset: a worker's "
    "replay of a snapshot is not consumption.",
    ["processor", "type"],
)
CONSUMER_LAG = Gauge(
    "wrench_consumer_lag",
    "Records a consumer group has not yet taken in, per partition it holds: the fetch high "
    "watermark minus the group's committed offset (a worker, at each heartbeat) or minus the "
    "next offset the projector stores (after each batch).",
    ["group", "partition"],
)
BATCH_SIZE = Histogram(
    "wrench_projector_batch_size",
    "Records per batch the projector fetched, read and wrote in one transaction.",
    ["processor"],
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
)
BATCH_SECONDS = Histogram(
    "wrench_projector_batch_seconds",
    "Seconds from a batch's fetch to its transaction's commit (reading, waiting for the "
    "batch before it, writing).",
    ["processor"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
STEP_SECONDS = Histogram(
    "wrench_step_duration_seconds",
    "Seconds of a JourneyAgent step attempt, from its start to step.completed or "
    "step.failed, by tool and outcome.",
    ["tool", "outcome"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0),
)
LLM_SECONDS = Histogram(
    "wrench_llm_request_seconds",
    "Seconds of one request to an LLM, by the model asked.",
    ["model"],
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0),
)
LLM_TOKENS = Counter(
    "wrench_llm_tokens",
    "Tokens LLM requests used, by model and kind (input, output, cached, reasoning).",
    ["model", "kind"],
)
LLM_COST = Counter(
    "wrench_llm_cost_usd",
    "What LLM requests cost, in US dollars, by model.",
    ["model"],
)
BUDGET_RATIO = Gauge(
    "wrench_budget_spend_ratio",
    "A budget's spend divided by its limit (1 is the limit), per tenant and budget scope.",
    ["tenant_id", "scope", "scope_id"],
)
STREAMS_OPEN = Gauge(
    "wrench_stream_connections",
    "Streams this API process has open, by protocol (websocket, sse).",
    ["protocol"],
)


# -- recording ------------------------------------------------------------------------------
MAX_TYPES = 256
"""Most distinct ``type`` labels one processor's row takes; past it a new type counts as
``other``. The catalog has far fewer, but a consumed record's type header is whatever its
producer wrote, and a label per bogus value would grow the process without bound."""


class TypeCounter:
    """One processor's row of a ``{processor, type}`` counter, its children kept so the hot
    path (a record, an event) pays a dict lookup, not a labels() call."""

    __slots__ = ("_children", "_family", "processor")

    def __init__(self, family: Counter, processor: str) -> None:
        self._family, self.processor = family, processor
        self._children: dict[str, Counter] = {}

    def add(self, event_type: str, n: int = 1) -> None:
        """Count ``n`` events of ``event_type``."""
        child = self._children.get(event_type)
        if child is None:
            if len(self._children) >= MAX_TYPES:
                self._family.labels(self.processor, "other").inc(n)
                return
            child = self._children[event_type] = self._family.labels(self.processor, event_type)
        child.inc(n)

    def add_all(self, counts: Mapping[str, int]) -> None:
        """Count each type's number in ``counts``."""
        for event_type, n in counts.items():
            self.add(event_type, n)


def produced(processor: str) -> TypeCounter:
    """``processor``'s row of wrench_events_produced_total."""
    return TypeCounter(EVENTS_PRODUCED, processor)


def consumed(processor: str) -> TypeCounter:
    """``processor``'s row of wrench_events_consumed_total."""
    return TypeCounter(EVENTS_CONSUMED, processor)


def set_consumer_lag(group: str, lags: Mapping[int, int | None]) -> None:
    """The lag of each partition ``group`` holds now; a partition whose lag is None (the
    broker did not say) loses its series rather than keep a stale value."""
    for partition, lag in lags.items():
        if lag is None:
            forget_consumer_lag(group, [partition])
        else:
            CONSUMER_LAG.labels(group, str(partition)).set(lag)


def forget_consumer_lag(group: str, partitions: Iterable[int]) -> None:
    """Drop the lag series of partitions ``group`` no longer holds in this process."""
    for partition in partitions:
        try:
            CONSUMER_LAG.remove(group, str(partition))
        except KeyError:
            pass


def observe_projector_batch(processor: str, size: int, seconds: float) -> None:
    """One batch the projector committed: its records and its seconds from fetch to commit."""
    BATCH_SIZE.labels(processor).observe(size)
    BATCH_SECONDS.labels(processor).observe(seconds)


def observe_step(tool: str, outcome: Literal["completed", "failed"], seconds: float) -> None:
    """One step attempt of the JourneyAgent with ``tool``, ended with ``outcome``."""
    STEP_SECONDS.labels(tool, outcome).observe(seconds)


def observe_llm_request(model: str, seconds: float) -> None:
    """One request to ``model`` took ``seconds`` (answered or failed; call it once per HTTP
    request, retries included, so the histogram is what the provider made us wait)."""
    LLM_SECONDS.labels(model).observe(max(seconds, 0.0))


def record_tokens(model: str, kind: TokenKind, n: int) -> None:
    """``n`` tokens of ``kind`` used with ``model``; ValueError for another kind or n < 0."""
    if kind not in TOKEN_KINDS:
        raise ValueError(f"token kind {kind!r} is not one of {', '.join(TOKEN_KINDS)}")
    if n < 0:
        raise ValueError(f"a token count is never negative (got {n} for {model} {kind})")
    if n:
        LLM_TOKENS.labels(model, kind).inc(n)


def record_cost(model: str, usd: float) -> None:
    """``usd`` US dollars spent on ``model``; ValueError when negative."""
    if usd < 0:
        raise ValueError(f"a cost is never negative (got {usd} for {model})")
    if usd:
        LLM_COST.labels(model).inc(usd)


def set_budget_ratio(tenant_id: str, scope: str, scope_id: str, ratio: float) -> None:
    """A budget's spend over its limit now (0.5 is half spent, above 1 is over)."""
    if ratio < 0:
        raise ValueError(f"a spend ratio is never negative (got {ratio})")
    BUDGET_RATIO.labels(tenant_id, scope, scope_id).set(ratio)


def forget_budget(tenant_id: str, scope: str, scope_id: str) -> None:
    """Drop a budget's series (the budget was deleted)."""
    try:
        BUDGET_RATIO.remove(tenant_id, scope, scope_id)
    except KeyError:
        pass


def stream_opened(protocol: Literal["websocket", "sse"]) -> None:
    """A WebSocket or SSE stream was admitted."""
    STREAMS_OPEN.labels(protocol).inc()


def stream_closed(protocol: Literal["websocket", "sse"]) -> None:
    """A stream admitted by :func:`stream_opened` ended."""
    STREAMS_OPEN.labels(protocol).dec()


# -- exposure -------------------------------------------------------------------------------
def exposition(tenant_id: str | None = None) -> bytes:
    """The registry in Prometheus text format. With ``tenant_id``, a series labelled with
    another tenant (a budget's ratio) is left out: a tenant's credential sees its own."""
    if tenant_id is None:
        return generate_latest(REGISTRY)
    return generate_latest(_OneTenant(tenant_id))


@dataclass(frozen=True)
class _OneTenant:
    """The default registry seen by one tenant (anything with ``collect`` can be exposed)."""

    tenant_id: str

    def collect(self) -> Iterator[Metric]:
        for family in REGISTRY.collect():
            mine = self.tenant_id
            samples = [s for s in family.samples if s.labels.get("tenant_id", mine) == mine]
            if len(samples) != len(family.samples):
                family = _with_samples(family, samples)
            yield family


def _with_samples(family: Metric, samples: list[Sample]) -> Metric:
    kept = Metric(family.name, family.documentation, family.type, family.unit)
    kept.samples = samples
    return kept


@dataclass
class MetricsServer:
    """A process's metrics port: a thread of prometheus_client's HTTP server."""

    url: str
    server: WSGIServer
    thread: threading.Thread

    def close(self) -> None:
        """Stop serving and free the port."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve_metrics(settings: Settings, process: str) -> MetricsServer | None:
    """Serve this process's metrics on ``WRENCH_METRICS_HOST:WRENCH_METRICS_PORT`` (port 0:
    one the system picks) from a thread, so a busy or blocked event loop never stops a
    scrape; None when no port is set. The server answers every path with the exposition."""
    if settings.metrics_port is None:
        return None
    try:
        server, thread = start_http_server(settings.metrics_port, addr=settings.metrics_host)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port} "
            f"({exc.strerror or exc}); set WRENCH_METRICS_PORT to a free port (0: any), or "
            "unset it to serve none",
            host=settings.metrics_host,
            port=settings.metrics_port,
        ) from exc
    host, port = str(settings.metrics_host), server.server_address[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/metrics"
    log.info("metrics served", process=process, url=url)
    return MetricsServer(url, server, thread)
