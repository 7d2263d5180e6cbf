"""The three agents as they run, on the real broker: the InspectorAgent judges every
completed step, the JourneyAgent waits for its verdicts and retries a rejected output with
the suggestions, and the quality model is fitted in another process and published."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from events import Codec, Event, EventProducer, FernetCipher, bootstrap_topics
from tests.processors.test_journey_agent_worker import (
    Agents,
    finished,
    of,
    stack_settings,
    step,
    submitted,
)
from tests.processors.test_super_agent_worker import Log
from wrenchai.embedded import EmbeddedBroker

FIT_WAIT_S = 180.0


@pytest.fixture
async def three(broker: EmbeddedBroker, tmp_path: Path) -> AsyncIterator[tuple[EventProducer, Log]]:
    settings = stack_settings(
        broker, require_acceptance=True, fit_min_new=3, fit_draws=200, fit_chains=2
    )
    await bootstrap_topics(settings)
    agents = Agents(settings, tmp_path)
    codec = Codec(FernetCipher(settings.fernet_keys()))
    producer = EventProducer(settings, codec)
    for name in ("super-agent", "journey-agent", "inspector-agent"):
        agents.start(name)
    try:
        yield producer, Log(settings, codec)
    finally:
        await producer.stop()
        agents.stop_all()


async def test_outputs_are_judged_rejected_ones_retried_and_the_model_is_fitted(
    three: tuple[EventProducer, Log],
) -> None:
    """A stage whose first two outputs are empty: two verdicts retry (with suggestions, which
    the next step.started carries), the third accepts, and only then the task completes.
    The evaluations then trigger a fit of the hierarchical model, published as
    quality.fitted with its convergence diagnostics."""
    producer, log = three
    task = submitted(
        "sloppy writing",
        [
            step(
                "write",
                "test.sloppy",
                {"text": "retry with backoff and jitter"},
                success_criteria=["mentions retry backoff jitter"],
            )
        ],
    )
    await producer.publish(task)
    events = await finished(log, task.task_id)
    verdicts = of(events, "evaluation.recorded")
    assert [(v.attempt, v.decision) for v in verdicts] == [
        (1, "retry"),
        (2, "retry"),
        (3, "accept"),
    ]
    started = of(events, "step.started")
    assert started[1].suggestions and started[1].suggestions == verdicts[0].suggestions[:5]
    kinds = [e.type for e in events]
    assert kinds[-1] == "task.completed"
    assert kinds.index("task.completed") > kinds.index("evaluation.recorded")

    fit = await wait_for_fit(log)
    assert fit.evaluations >= 3 and fit.groups
    assert {(g.role, g.tool) for g in fit.groups} >= {("coder", "test.sloppy")}
    assert fit.chains == 2 and fit.r_hat_max > 0


async def wait_for_fit(log: Log) -> Any:
    deadline = time.monotonic() + FIT_WAIT_S
    while True:
        fits: list[Event] = [e for e in await log.events() if e.type == "quality.fitted"]
        if fits:
            return fits[0].payload
        assert time.monotonic() < deadline, "no quality.fitted"
        await asyncio.sleep(2)
