"""The three agents as they run, on the real broker with the projector and Postgres: the
InspectorAgent judges every completed step, the JourneyAgent waits for its verdicts and
retries a rejected output with the suggestions, and the quality model is fitted in another
process, on the evaluation counts of the read models, and published."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from events import (
    AlertRaised,
    Codec,
    Event,
    EventProducer,
    FernetCipher,
    bootstrap_topics,
)
from projections import migrate_database, run_projector
from tests.processors.journey.test_journey_agent_worker import (
    Agents,
    finished,
    of,
    stack_settings,
    step,
    submitted,
)
from tests.processors.super.test_super_agent_worker import Log
from wrenchai.embedded import EmbeddedBroker

FIT_WAIT_S = 180.0


@pytest.fixture
async def three(
    broker: EmbeddedBroker, database_url: str, tmp_path: Path
) -> AsyncIterator[tuple[EventProducer, Log]]:
    """The three agents and the projector, whose read models give the agents their
    statistics (evaluation counts for the fit)."""
    settings = stack_settings(
        broker,
        require_acceptance=True,
        fit_min_new=3,
        fit_draws=200,
        fit_chains=2,
        database_url=SecretStr(database_url),
        stats_refresh_s=0.5,
    )
    await bootstrap_topics(settings)
    await migrate_database(settings)
    stop = asyncio.Event()
    projector = asyncio.create_task(run_projector(settings, stop=stop))
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
        stop.set()
        await asyncio.wait_for(projector, 60)


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


async def test_a_quiet_task_is_alerted_stalled_by_the_timer_and_cleared_when_it_moves(
    three: tuple[EventProducer, Log],
) -> None:
    """constraints.alerts.stall_after_s = 2 and a 6 s step: no event comes for 2 s, so the
    timer raises STALLED (warning) once; the step's completion clears it; the task ends."""
    producer, log = three
    task = submitted("quiet", [step("nap", "test.sleep", {"seconds": 6})])
    constraints = {**(task.payload.constraints or {}), "alerts": {"stall_after_s": 2}}  # type: ignore[attr-defined]
    task = task.model_copy(
        update={"payload": task.payload.model_copy(update={"constraints": constraints})}
    )
    await producer.publish(task)
    events = await finished(log, task.task_id)
    kinds = [e.type for e in events]
    began, ended = kinds.index("step.started"), kinds.index("step.completed")
    # (Another STALLED may come earlier while the workers join their group.)
    during = [e.payload for e in events[began:ended] if isinstance(e.payload, AlertRaised)]
    assert during and {(a.code, a.level) for a in during} == {("STALLED", "warning")}
    # Every alert raised is cleared once, by the end of the task.
    raised = [a.alert_id for a in of(events, "alert.raised")]
    cleared = [c.alert_id for c in of(events, "alert.cleared")]
    assert len(set(raised)) == len(raised) and sorted(cleared) == sorted(raised)
    assert kinds[-1] == "task.completed"
