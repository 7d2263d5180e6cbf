"""wrenchai.metrics: what the recording functions put in the registry, what they refuse, a
process's metrics port, and the port each child of `wrenchai dev` gets."""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.metrics_support import samples, scrape_until, value
from tests.wrenchai.test_dev_stack import DevStack
from wrenchai import metrics
from wrenchai.errors import ConfigurationError
from wrenchai.settings import Settings
from wrenchai.stack import build_children, metrics_urls


def _now(name: str, **labels: str) -> float:
    return value(metrics.exposition().decode(), name, **labels) or 0.0


def test_tokens_cost_and_llm_latency_are_counted_by_model_and_kind() -> None:
    """record_tokens adds to {model, kind}, record_cost to {model}, and observe_llm_request
    puts one observation in the model's latency histogram."""
    model = "metrics-test-model"
    before = _now("wrench_llm_tokens_total", model=model, kind="cached")
    metrics.record_tokens(model, "cached", 120)
    metrics.record_tokens(model, "cached", 0)
    metrics.record_cost(model, 0.0125)
    metrics.observe_llm_request(model, 1.5)

    assert _now("wrench_llm_tokens_total", model=model, kind="cached") - before == 120
    assert _now("wrench_llm_cost_usd_total", model=model) == pytest.approx(0.0125)
    assert _now("wrench_llm_request_seconds_count", model=model) == 1
    assert _now("wrench_llm_request_seconds_bucket", model=model, le="2.5") == 1
    assert _now("wrench_llm_request_seconds_bucket", model=model, le="1.0") == 0


def test_bad_token_kinds_and_negative_amounts_are_refused_naming_the_value() -> None:
    """A kind outside input/output/cached/reasoning, a negative count, cost or ratio: a
    ValueError that names what was given, and nothing recorded."""
    with pytest.raises(ValueError, match=r"'prompt'.*input, output, cached, reasoning"):
        metrics.record_tokens("m", "prompt", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="-3"):
        metrics.record_tokens("m", "input", -3)
    with pytest.raises(ValueError, match=r"-0\.5"):
        metrics.record_cost("m", -0.5)
    with pytest.raises(ValueError, match="-1"):
        metrics.set_budget_ratio("t", "tenant", "t", -1)


def test_a_processors_types_are_capped_so_bogus_type_headers_cannot_grow_the_process() -> None:
    """Past MAX_TYPES distinct types, a processor's new types count under type="other"."""
    row = metrics.consumed("metrics-test-cap")
    for n in range(metrics.MAX_TYPES + 10):
        row.add(f"bogus.{n}")
    text = metrics.exposition().decode()

    assert value(text, "wrench_events_consumed_total", processor="metrics-test-cap", type="other")
    assert value(text, "wrench_events_consumed_total", type=f"bogus.{metrics.MAX_TYPES}") is None


def test_a_metrics_port_serves_the_exposition_and_a_taken_one_is_a_configuration_error() -> None:
    """Port 0 serves on a port the system picks, named in the URL; a port in use is a
    ConfigurationError naming the address and WRENCH_METRICS_PORT."""
    server = metrics.serve_metrics(Settings(metrics_port=0), "test")
    assert server is not None
    try:
        response = httpx.get(server.url)
        assert response.status_code == 200 and "process_cpu_seconds_total" in response.text
        port = int(server.url.rsplit(":", 1)[1].split("/")[0])
        with pytest.raises(ConfigurationError, match=f"127.0.0.1:{port}.*WRENCH_METRICS_PORT"):
            metrics.serve_metrics(Settings(metrics_port=port), "test")
    finally:
        server.close()
    assert metrics.serve_metrics(Settings(), "test") is None  # unset: no port at all


def test_dev_gives_the_projector_and_each_worker_a_port_of_its_own_and_none_to_the_api(
    tmp_path: Path,
) -> None:
    """Every child but the API gets its own WRENCH_METRICS_PORT, whatever the environment
    said; metrics_urls lists them for the banner, on loopback when the host is a wildcard."""
    env = {"WRENCH_METRICS_PORT": "9100"}
    projector, workers, api = build_children(env, tmp_path, 8000, {"journey-agent": 2})
    urls = metrics_urls(Settings(metrics_host="0.0.0.0"), [projector, *workers, api])

    ports = [child.env["WRENCH_METRICS_PORT"] for child in (projector, *workers)]
    assert len(set(ports)) == len(ports) and "9100" not in ports
    assert "WRENCH_METRICS_PORT" not in api.env
    assert set(urls) == {projector.name, *(w.name for w in workers)}
    assert {"journey-agent", "journey-agent-2"} <= set(urls)
    assert urls["projector"] == f"http://127.0.0.1:{projector.env['WRENCH_METRICS_PORT']}/metrics"
    for port in ports:  # free when handed out
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", int(port)))


@pytest.fixture
def dev_stack(tmp_path: Path) -> Iterator[DevStack]:
    """`wrenchai dev` on a state directory of its own; everything it started is gone after."""
    root = Path(tempfile.mkdtemp(prefix="wrench-dev-"))  # see test_dev_stack.state_dir
    stack = DevStack(root / "state", tmp_path / "dev.out")
    try:
        yield stack
    finally:
        stack.kill_everything()
        shutil.rmtree(root, ignore_errors=True)


async def test_dev_prints_each_processes_metrics_url_and_each_one_answers(
    dev_stack: DevStack,
) -> None:
    """The ready banner lists the API's /metrics and a URL per process; the admin key reads
    the API's, which counts the task submitted; the SuperAgent's port has its group's lag;
    the JourneyAgent's has the task's step durations by tool; the projector's its batches."""
    dev_stack.wait_ready()
    urls = await asyncio.to_thread(_banner_urls, dev_stack)
    assert {"projector", "super-agent", "journey-agent", "inspector-agent"} <= set(urls)
    task = dev_stack.submit("Research how WrenchAI counts events and write a short report")

    api = await asyncio.to_thread(dev_stack.client.get, "/metrics")
    assert api.status_code == 200, api.text
    submitted = value(
        api.text, "wrench_events_produced_total", processor="api", type="task.submitted"
    )
    assert submitted is not None and submitted >= 1

    def has_lag(text: str) -> bool:
        return any(
            s.labels["group"].endswith("super-agent") for s in samples(text, "wrench_consumer_lag")
        )

    def ran_steps(text: str) -> bool:
        return sum(s.value for s in samples(text, "wrench_step_duration_seconds_count")) >= 3

    def projected(text: str) -> bool:
        return (value(text, "wrench_projector_batch_size_sum", processor="projector") or 0) > 0

    await scrape_until(urls["super-agent"], has_lag, "the SuperAgent's lag")
    steps = await scrape_until(urls["journey-agent"], ran_steps, f"the steps of {task}", 90)
    tools = {s.labels["tool"] for s in samples(steps, "wrench_step_duration_seconds_count")}
    assert tools and all(
        s.labels["outcome"] in ("completed", "failed")
        for s in samples(steps, "wrench_step_duration_seconds_count")
    )
    await scrape_until(urls["projector"], projected, "the projector's batches")


def _banner_urls(stack: DevStack, timeout_s: float = 60.0) -> dict[str, str]:
    """Each process's metrics URL, from the lines under ``metrics`` in the ready banner."""
    deadline = time.monotonic() + timeout_s
    while True:
        lines = stack.output.read_text().splitlines()
        if any(line.startswith("  metrics ") for line in lines):
            start = next(i for i, line in enumerate(lines) if line.startswith("  metrics "))
            assert lines[start].split()[1] == f"{stack.base}/metrics"
            found = {}
            for line in lines[start + 1 :]:
                parts = line.split()
                if not line.startswith("    ") or len(parts) != 2:
                    break
                found[parts[0]] = parts[1]
            return found
        assert time.monotonic() < deadline, f"no metrics in the banner:\n{lines}"
        time.sleep(0.2)
