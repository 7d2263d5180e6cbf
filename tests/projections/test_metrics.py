"""The projector's metrics port: `wrenchai projector` with WRENCH_METRICS_PORT serves its batch
histograms, what it archived by type, and its lag per partition."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from events import EventProducer
from tests.metrics_support import samples, scrape_until, value
from tests.projections.conftest import submitted
from wrenchai.embedded import free_port
from wrenchai.settings import Settings


@pytest.mark.usefixtures("db")
async def test_the_projectors_port_has_batch_histograms_consumed_counts_and_lag(
    settings: Settings, producer: EventProducer, tmp_path: Path
) -> None:
    """Five submissions projected: task.submitted is consumed five times by the projector,
    its lag on the partitions written is 0, the batch size histogram holds at least those
    five records, and the latency histogram has as many observations as it has batches."""
    port = free_port()
    output = tmp_path / "projector.out"
    # The ResourceMonitor runs in the projector's process; its platform alerts would be
    # records of wrench.events too, which this count must not meet.
    quiet = settings.model_copy(update={"metrics_port": port, "monitor_enabled": False})
    proc = _projector(quiet, output)
    try:
        positions = await producer.publish_many([submitted() for _ in range(5)])
        written = {str(p.partition) for p in positions}
        group = settings.group("projector")

        def projected(text: str) -> bool:
            consumed = value(
                text, "wrench_events_consumed_total", processor="projector", type="task.submitted"
            )
            lags = {
                s.labels["partition"]: s.value
                for s in samples(text, "wrench_consumer_lag")
                if s.labels["group"] == group
            }
            return consumed == 5 and written <= set(lags) and not any(lags.values())

        url = f"http://127.0.0.1:{port}/metrics"
        text = await scrape_until(url, projected, "five records projected, lag 0")
        # A batch read again after the group rebalanced under load is work done twice: the
        # histogram counts it, the consumed counter (after the commit) does not.
        size = value(text, "wrench_projector_batch_size_sum", processor="projector")
        assert size is not None and size >= 5
        batches = value(text, "wrench_projector_batch_size_count", processor="projector")
        assert batches is not None and 1 <= batches <= size
        timed = value(text, "wrench_projector_batch_seconds_count", processor="projector")
        assert timed == batches
        buckets = [
            s
            for s in samples(text, "wrench_projector_batch_seconds_bucket")
            if s.labels["processor"] == "projector"
        ]
        assert buckets and buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == batches
        consumed = value(
            text, "wrench_events_consumed_total", processor="projector", type="task.submitted"
        )
        assert consumed == 5
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, output.read_text()


def _projector(settings: Settings, output: Path) -> subprocess.Popen[bytes]:
    """`wrenchai projector` with ``settings``, its output in ``output``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WRENCH_")}
    env.update(settings.to_env())
    with open(output, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "wrenchai", "projector"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
