"""Two workers of a kind share the partitions of wrench.events: a SuperAgent, two
JourneyAgents and two InspectorAgents (acceptance on), real processes on the real broker
and Postgres, with the projector. One of each pair is killed mid-run; the other takes over
its partitions from their snapshots and every task still completes, each stage once."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg

from events import Codec, EventProducer, bootstrap_topics
from projections import run_projector
from tests.processors.journey.test_journey_agent_worker import Agents, step, submitted
from tests.processors.super.test_super_agent_worker import Log
from wrenchai.settings import Settings

TASKS = 24
STAGES = 3
DONE_WAIT_S = 150.0


def _playbook() -> list[dict[str, Any]]:
    return [
        step(f"s{i}", "test.sleep", {"seconds": 0.4}, depends_on=[f"s{i - 1}"] if i else [])
        for i in range(STAGES)
    ]


async def _assigned(db: asyncpg.Connection, agent_id: str, instances: int) -> None:
    """Wait until ``instances`` workers of ``agent_id`` hold partitions, as their
    heartbeats say (the projector folds them into agent_instances)."""
    deadline = time.monotonic() + 60
    while True:
        rows = await db.fetch(
            "SELECT partitions FROM agent_instances WHERE agent_id = $1", agent_id
        )
        if sum(1 for row in rows if row["partitions"]) >= instances:
            return
        assert time.monotonic() < deadline, f"{agent_id}: {rows}"
        await asyncio.sleep(0.3)


async def test_two_workers_of_a_kind_share_the_work_and_one_killed_loses_nothing(
    settings: Settings, codec: Codec, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """24 three-stage tasks over two JourneyAgents and two InspectorAgents; once stages are
    running, one of each is SIGKILLed. Every task completes, every stage's step.completed
    is applied once (a rerun step repeats its ids: the projector archives the repeat as a
    duplicate), and every completed attempt got a verdict."""
    own = settings.model_copy(
        update={
            "tool_modules": "tests.processors.journey_tools",
            "require_acceptance": True,
            "heartbeat_interval_s": 1.0,
            "snapshot_interval_s": 0.5,
            "namespace": f"s{uuid.uuid4().hex[:10]}.",
            "partitions": 6,
        }
    )
    await bootstrap_topics(own)
    agents = Agents(own, tmp_path)
    stop = asyncio.Event()
    projector = asyncio.create_task(run_projector(own, stop=stop))
    producer = EventProducer(own, codec)
    try:
        agents.start("super-agent")
        journeys = [agents.start("journey-agent"), agents.start("journey-agent")]
        inspectors = [agents.start("inspector-agent"), agents.start("inspector-agent")]
        await _assigned(db, "journey-agent", 2)
        await _assigned(db, "inspector-agent", 2)

        tasks = [submitted(f"naps {n}", _playbook()) for n in range(TASKS)]
        await producer.publish_many(tasks)
        ids = {task.task_id for task in tasks}
        await _until(db, "SELECT count(*) FROM event_log WHERE type = 'step.completed'", 10)
        journeys[0].stop(signal.SIGKILL)
        inspectors[1].stop(signal.SIGKILL)

        deadline = time.monotonic() + DONE_WAIT_S
        while True:
            done = await db.fetch(
                "SELECT task_id, status FROM tasks WHERE task_id = ANY($1::uuid[])", list(ids)
            )
            if sum(row["status"] == "completed" for row in done) == TASKS:
                break
            assert time.monotonic() < deadline, Counter(row["status"] for row in done)
            await asyncio.sleep(0.5)

        applied = await db.fetch(
            "SELECT task_id, payload->>'stage_id' AS stage, count(*) AS n FROM event_log "
            "WHERE status = 'applied' AND type = 'step.completed' AND task_id = ANY($1::uuid[]) "
            "GROUP BY 1, 2",
            list(ids),
        )
        assert len(applied) == TASKS * STAGES
        assert {row["n"] for row in applied} == {1}
        verdicts = await db.fetchval(
            "SELECT count(DISTINCT (task_id, payload->>'stage_id')) FROM event_log "
            "WHERE status = 'applied' AND type = 'evaluation.recorded' "
            "AND payload->>'decision' = 'accept' AND task_id = ANY($1::uuid[])",
            list(ids),
        )
        assert verdicts == TASKS * STAGES
        log = Log(own, codec)
        completed = [e for e in await log.events() if e.type == "task.completed"]
        assert {e.task_id for e in completed} == ids
        assert len({e.id for e in completed}) == TASKS  # a repeat carries the same id
    finally:
        agents.stop_all()
        await producer.stop()
        stop.set()
        await asyncio.wait_for(projector, 60)


async def _until(db: asyncpg.Connection, query: str, at_least: int) -> None:
    deadline = time.monotonic() + 60
    while (await db.fetchval(query) or 0) < at_least:
        assert time.monotonic() < deadline, query
        await asyncio.sleep(0.2)
