"""The tracer on the real broker, exporting to an OTLP/HTTP receiver the test runs; and
what happens without an endpoint."""

from __future__ import annotations

import asyncio
import gzip
import os
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from pydantic import SecretStr

from events import EventProducer
from processors.tracing.agent import Tracer, otlp_headers
from tests.processors.tracing.story import SECRET, task_events
from wrenchai._workers import available_workers, workers_to_start
from wrenchai.errors import ConfigurationError
from wrenchai.settings import Settings
from wrenchai.stack import build_children

WAIT_S = 60.0


@dataclass
class Receiver:
    """An OTLP/HTTP traces endpoint: every span it was sent, with the resource and the
    headers of its request."""

    url: str = ""
    spans: list[Span] = field(default_factory=list)
    services: set[str] = field(default_factory=set)
    headers: list[dict[str, str]] = field(default_factory=list)
    refuse: int = 0
    """Requests still to answer 503, as a collector that is down."""
    refused: int = 0

    def traces(self) -> dict[bytes, list[Span]]:
        found: dict[bytes, list[Span]] = defaultdict(list)
        for span in self.spans:
            found[span.trace_id].append(span)
        return found

    def root_of(self, task_id: uuid.UUID) -> Span | None:
        trace = self.traces().get(task_id.bytes, [])
        return next((s for s in trace if not s.parent_span_id), None)

    async def handle(self, request: web.Request) -> web.Response:
        if self.refused < self.refuse:
            self.refused += 1
            return web.Response(status=503)
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest()
        export.ParseFromString(body)
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        for resource_spans in export.resource_spans:
            for attribute in resource_spans.resource.attributes:
                if attribute.key == "service.name":
                    self.services.add(attribute.value.string_value)
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(scope_spans.spans)
        return web.Response(body=b"", content_type="application/x-protobuf")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", found.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    found.url = f"http://127.0.0.1:{port}/v1/traces"
    yield found
    await runner.cleanup()


@pytest.fixture
def traced(settings: Settings, receiver: Receiver) -> Settings:
    return settings.model_copy(
        update={
            "otlp_endpoint": receiver.url,
            "otlp_headers": SecretStr("Authorization=Bearer t0ken, x-team = wrench"),
        }
    )


async def until(check: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {WAIT_S}s: {what}")
        await asyncio.sleep(0.1)


async def trace_until(settings: Settings, check: Callable[[], bool], what: str) -> None:
    """Run a tracer until ``check`` holds, then stop it."""
    stop = asyncio.Event()
    running = asyncio.create_task(Tracer(settings).run(stop))
    try:
        await until(lambda: check() or running.done(), what)
        if running.done():
            running.result()
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)


def names(spans: list[Span]) -> list[str]:
    return sorted(span.name for span in spans)


async def test_each_task_is_one_trace_with_its_stages_steps_tools_and_llm_calls(
    traced: Settings, producer: EventProducer, receiver: Receiver
) -> None:
    """Two tasks' events, written encrypted by the agents, reach the collector as two
    traces whose ids are the task ids; each holds its task, planning, stage, step, tool,
    LLM and evaluation spans, every parent inside the trace, no user content, under the
    service wrenchai and with the configured headers."""
    stories = [task_events(uuid.uuid4()), task_events(uuid.uuid4(), tenant_id="globex")]
    for story in stories:
        await producer.publish_many(story)
    ids = [story[0].task_id for story in stories]
    assert None not in ids
    await trace_until(
        traced,
        lambda: all(receiver.root_of(i) is not None for i in ids if i),
        "both tasks' root spans",
    )
    traces = receiver.traces()
    assert set(traces) == {i.bytes for i in ids if i}
    for task_id in ids:
        assert task_id is not None
        trace = traces[task_id.bytes]
        assert names(trace) == sorted(
            [
                "task",
                "planning",
                "chat gpt-x",
                "stage draft",
                "step draft #1",
                "tool llm.complete",
                "chat gpt-x",
                "evaluation draft #1",
                "chat judge-y",
                "step draft #2",
                "tool llm.complete",
                "stage polish",
                "step polish #1",
                "tool text.format",
            ]
        )
        own = {span.span_id for span in trace}
        assert len(own) == len(trace)
        assert all(span.parent_span_id in own for span in trace if span.parent_span_id)
        assert all(SECRET not in str(span) for span in trace)
    assert receiver.services == {"wrenchai"}
    assert all(h.get("authorization") == "Bearer t0ken" for h in receiver.headers)
    assert all(h.get("x-team") == "wrench" for h in receiver.headers)
    assert all(h.get("content-type") == "application/x-protobuf" for h in receiver.headers)


async def test_a_restarted_tracer_still_ends_a_task_it_saw_start(
    traced: Settings, producer: EventProducer, receiver: Receiver
) -> None:
    """The offsets committed never pass the start of a task in flight: a tracer stopped
    mid-task and started again exports the task's root from its real submission time."""
    story = task_events(uuid.uuid4())
    task_id = story[0].task_id
    assert task_id is not None
    cut = next(n for n, e in enumerate(story) if e.type == "step.completed")
    await producer.publish_many(story[: cut + 1])
    await trace_until(
        traced,
        lambda: any(s.name == "step draft #1" for s in receiver.spans),
        "the first step's span",
    )
    assert receiver.root_of(task_id) is None
    await producer.publish_many(story[cut + 1 :])
    await trace_until(traced, lambda: receiver.root_of(task_id) is not None, "the root")
    root = receiver.root_of(task_id)
    assert root is not None
    submitted_at = story[0].occurred_at.timestamp()
    assert abs(root.start_time_unix_nano / 1e9 - submitted_at) < 1e-6
    assert any(s.name == "stage draft" for s in receiver.traces()[task_id.bytes])


async def test_two_tracers_share_the_partitions_and_every_task_keeps_its_start(
    traced: Settings, producer: EventProducer, receiver: Receiver
) -> None:
    """Two tracers in one group split the partitions between them (the second joining makes
    the first give some up); every task still ends as one trace whose root starts at its
    submission."""
    stories = [task_events(uuid.uuid4()) for _ in range(6)]
    halves = [story[: len(story) // 2] for story in stories]
    for half in halves:
        await producer.publish_many(half)
    stop = asyncio.Event()
    first = asyncio.create_task(Tracer(traced).run(stop))
    await until(lambda: any(s.name.startswith("step") for s in receiver.spans), "a step span")
    second = asyncio.create_task(Tracer(traced).run(stop))
    for story, half in zip(stories, halves, strict=True):
        await producer.publish_many(story[len(half) :])
    ids = [story[0].task_id for story in stories]
    try:
        await until(
            lambda: all(receiver.root_of(i) is not None for i in ids if i) or first.done(),
            "every task's root",
        )
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(first, second), 30)
    for story in stories:
        task_id = story[0].task_id
        assert task_id is not None
        root = receiver.root_of(task_id)
        assert root is not None
        assert root.start_time_unix_nano / 1e9 == pytest.approx(story[0].occurred_at.timestamp())


async def test_a_collector_that_refuses_holds_the_spans_back_until_it_takes_them(
    traced: Settings, producer: EventProducer, receiver: Receiver
) -> None:
    """While the collector answers 503 nothing is lost: the batch is sent again until it is
    taken."""
    story = task_events(uuid.uuid4())
    task_id = story[0].task_id
    assert task_id is not None
    await producer.publish_many(story)
    receiver.refuse = 3
    await trace_until(traced, lambda: receiver.root_of(task_id) is not None, "the root")
    assert receiver.refused == 3
    assert len(receiver.traces()[task_id.bytes]) == 14


def test_without_an_endpoint_no_tracer_is_started(tmp_path: Path) -> None:
    """`wrenchai dev` starts the tracer only when WRENCH_OTLP_ENDPOINT is set."""
    assert "tracer" in available_workers()
    assert "tracer" not in workers_to_start(Settings())
    assert "tracer" not in workers_to_start()
    assert "tracer" in workers_to_start(Settings(otlp_endpoint="http://127.0.0.1:1/v1/traces"))
    _, workers, _ = build_children({}, tmp_path, 8000)
    assert "tracer" not in {w.name for w in workers}
    _, workers, _ = build_children({}, tmp_path, 8000, names=workers_to_start(Settings()))
    assert "tracer" not in {w.name for w in workers}


def test_wrenchai_worker_tracer_without_an_endpoint_says_so_and_exits_0(tmp_path: Path) -> None:
    """The worker run by hand with no endpoint exits 0 at once, having sent nothing (it
    would need a broker to do anything else: none is given)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WRENCH_")}
    env.update(WRENCH_KAFKA_BOOTSTRAP="127.0.0.1:1", WRENCH_LOG_FORMAT="console")
    done = subprocess.run(
        [sys.executable, "-m", "wrenchai", "--state-dir", str(tmp_path), "worker", "tracer"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "WRENCH_OTLP_ENDPOINT is not set" in done.stdout + done.stderr


def test_headers_are_name_value_pairs_and_a_bad_one_is_named_without_its_value() -> None:
    """WRENCH_OTLP_HEADERS is name=value pairs; a malformed pair is refused by position, so
    the credential never reaches a message."""
    assert otlp_headers(Settings(otlp_headers=SecretStr("a=1, b = two=2,"))) == {
        "a": "1",
        "b": "two=2",
    }
    with pytest.raises(ConfigurationError) as caught:
        otlp_headers(Settings(otlp_headers=SecretStr("a=1,s3cret")))
    assert "pair 2" in caught.value.message and "s3cret" not in caught.value.message


def test_an_endpoint_that_is_no_http_url_is_refused() -> None:
    """The tracer says how to write the endpoint rather than fail at its first export."""
    with pytest.raises(ConfigurationError, match="http"):
        Tracer(Settings(otlp_endpoint="collector:4318")).main()
