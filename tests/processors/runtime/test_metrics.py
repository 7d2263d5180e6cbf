"""A worker's metrics port: `wrenchai worker super-agent` with WRENCH_METRICS_PORT serves what
it consumed and produced, by type, and its group's lag per partition it holds."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import asyncpg
import pytest

from events import EventProducer
from tests.metrics_support import samples, scrape_until, value
from tests.processors.super.test_super_agent_worker import WorkerProcess, submitted
from wrenchai.embedded import free_port
from wrenchai.settings import Settings


@pytest.mark.usefixtures("db")
async def test_a_workers_port_counts_what_it_folded_and_its_lag_per_partition(
    settings: Settings, producer: EventProducer, tmp_path: Path
) -> None:
    """After the SuperAgent folded a task.submitted and planned it, its port counts the
    submission among the events consumed by super-agent and the plan among those it produced,
    and gives wrench_consumer_lag for its group on each partition it holds, down to 0 once its
    snapshots let the group commit."""
    port = free_port()
    settings = settings.model_copy(
        update={"metrics_port": port, "heartbeat_interval_s": 0.5, "snapshot_interval_s": 0.5}
    )
    group = settings.group("super-agent")
    worker = WorkerProcess(settings, tmp_path / "worker.out")
    try:
        await producer.publish(submitted())

        def planned(text: str) -> bool:
            consumed = value(
                text, "wrench_events_consumed_total", processor="super-agent", type="task.submitted"
            )
            plans = value(
                text, "wrench_events_produced_total", processor="super-agent", type="plan.created"
            )
            return consumed == 1 and plans == 1

        def caught_up(text: str) -> bool:
            lags = [s for s in samples(text, "wrench_consumer_lag") if s.labels["group"] == group]
            held = {s.labels["partition"] for s in lags}
            return held == {"0", "1", "2"} and all(s.value == 0 for s in lags)

        url = f"http://127.0.0.1:{port}/metrics"
        text = await scrape_until(url, planned, "the submission consumed and the plan produced")
        # The worker also reads back what it appended: every type it produced, it consumed.
        consumed = value(
            text, "wrench_events_consumed_total", processor="super-agent", type="plan.created"
        )
        assert consumed is not None
        text = await scrape_until(url, caught_up, f"lag 0 on every partition of {group}")
        assert samples(text, "process_resident_memory_bytes")
    finally:
        worker.stop(signal.SIGKILL)


async def test_a_workers_metrics_port_that_is_taken_stops_it_with_a_clear_error(
    settings: Settings, tmp_path: Path, db: asyncpg.Connection
) -> None:
    """WRENCH_METRICS_PORT on a port in use: the worker exits 1 naming the port and the
    setting, instead of running without the metrics it was asked for."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = WorkerProcess(settings.model_copy(update={"metrics_port": port}), tmp_path / "w")
        code = worker.proc.wait(60)
    output = (tmp_path / "w").read_text()
    assert code == 1, output
    assert f"127.0.0.1:{port}" in output and "WRENCH_METRICS_PORT" in output
