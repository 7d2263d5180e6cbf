"""Time travel (GET /audit/tasks/{task_id}/state, ``wrenchai replay``) on a real run: the
three agent workers on the real broker, the projector into real Postgres, the API in front.

One task, run once for the module: three stages, the first of which fails once and is
retried, the second of which has its first output rejected by the InspectorAgent and is run
again. The state folded from the archive must equal what the read models show at the end,
and, replaying the log into a scratch database one record at a time, what they held after
every one of the task's events.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka.structs import ConsumerRecord
from pydantic import SecretStr

from api._task_state import NoTaskState
from api.audit_models import TaskState
from events import EventProducer, bootstrap_topics, codec_from_settings, generate_key, role_scopes
from projections import Projector, run_projector
from projections._db import connect
from projections._migrate import migrate
from tests.api._support import seed_api_key, serve
from tests.processors.super.test_super_agent_worker import Log, WorkerProcess
from wrenchai._cli_replay import render, replay_task
from wrenchai.embedded import EmbeddedBroker
from wrenchai.settings import Settings

END_WAIT_S = 90.0
REPO = Path(__file__).resolve().parents[2]
BOOKKEEPING = {"updated_at", "last_event_id", "position"}
"""The read model's own fields on GET /tasks/{id}: which event last moved its row. The
state says which event it is as of in ``as_of`` instead."""
TEXT = "retry with backoff and jitter"
PLAYBOOK = {
    "name": "time-travel",
    "steps": [
        {"id": "gather", "tool": "test.once", "role": "coder", "input": {"text": TEXT}},
        {
            "id": "draft",
            "tool": "test.careless",
            "role": "writer",
            "depends_on": ["gather"],
            "input": {"text": TEXT},
            "success_criteria": ["mentions retry backoff jitter"],
        },
        {
            "id": "publish",
            "tool": "test.echo",
            "role": "writer",
            "depends_on": ["draft"],
            "input": {"text": "{{steps.draft.output.text}}"},
        },
    ],
}


@dataclass
class Run:
    """The finished run: its settings, an admin's client, the task and its log."""

    settings: Settings
    postgres_url: str
    client: httpx.AsyncClient
    db: asyncpg.Connection
    task_id: str
    history: list[dict[str, Any]]
    partition: list[ConsumerRecord[bytes, bytes]]
    """Every record of the task's partition of wrench.events, from the broker."""


@asynccontextmanager
async def fresh_database(postgres_url: str) -> AsyncIterator[str]:
    """A new empty database on the session's Postgres, dropped afterwards."""
    name = f"wrench_tt_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield f"{postgres_url.rpartition('/')[0]}/{name}"
    finally:
        admin = await asyncpg.connect(postgres_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def _settings(broker: EmbeddedBroker, database_url: str) -> Settings:
    return Settings(
        kafka_bootstrap=broker.bootstrap,
        namespace=f"tt{uuid.uuid4().hex[:10]}.",
        partitions=3,
        database_url=SecretStr(database_url),
        kafka_session_timeout_ms=6_000,
        kafka_rebalance_timeout_ms=6_000,
        kafka_fetch_max_wait_ms=20,
        projector_batch_ms=50,
        encryption_keys=generate_key(),  # type: ignore[arg-type]
        log_format="console",
        tool_modules="tests.api.time_travel_tools",
        require_acceptance=True,
        read_wait_timeout_s=20.0,
        jwt_secret=SecretStr("test-jwt-secret-" + "x" * 32),
        api_key_pepper=SecretStr("test-api-key-pepper"),
    )


async def _ended(client: httpx.AsyncClient, task_id: str) -> None:
    deadline = asyncio.get_running_loop().time() + END_WAIT_S
    while True:
        response = await client.get(f"/tasks/{task_id}")
        if response.status_code == 200 and response.json()["status"] in ("completed", "failed"):
            return
        assert asyncio.get_running_loop().time() < deadline, f"not ended: {response.text}"
        await asyncio.sleep(0.3)


async def _projected(db: asyncpg.Connection, settings: Settings, ends: dict[int, int]) -> None:
    """Wait until the projector has applied every record up to ``ends`` (offset per
    partition)."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        rows = await db.fetch(
            "SELECT partition, next_offset FROM consumer_offsets WHERE group_id = $1"
            " AND topic = $2",
            settings.group("projector"),
            settings.topic("events"),
        )
        done = {r["partition"]: r["next_offset"] for r in rows}
        if all(done.get(p, 0) > offset for p, offset in ends.items()):
            return
        assert asyncio.get_running_loop().time() < deadline, f"projector at {done}, log {ends}"
        await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
async def run(
    broker: EmbeddedBroker, postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Run]:
    """The task, run to its end by the real workers; then the workers are stopped, so the
    log is complete, and the projector has applied all of it."""
    logs = tmp_path_factory.mktemp("time-travel")
    async with fresh_database(postgres_url) as url:
        settings = _settings(broker, url)
        await bootstrap_topics(settings)
        # The workers start first: joining their groups takes the longest.
        agents = [
            WorkerProcess(settings, logs / f"{name}.out", name=name)
            for name in ("super-agent", "journey-agent", "inspector-agent")
        ]
        db = await connect(settings)
        await migrate(db)
        key = await seed_api_key(db, settings)
        stop = asyncio.Event()
        projector = asyncio.create_task(run_projector(settings, stop=stop))
        try:
            async with serve(settings, api_key=key) as client:
                submitted = await client.post(
                    "/tasks",
                    json={"description": "Explain retries", "constraints": {"playbook": PLAYBOOK}},
                )
                assert submitted.status_code == 202, submitted.text
                task_id = submitted.json()["task_id"]
                await _ended(client, task_id)
                for agent in agents:
                    agent.stop(signal.SIGKILL)
                records = await Log(settings, codec_from_settings(settings)).records()
                ends: dict[int, int] = {}
                for p, record in records:
                    ends[p] = max(ends.get(p, -1), record.offset)
                await _projected(db, settings, ends)
                history = (await client.get(f"/tasks/{task_id}/events")).json()["events"]
                home = int(history[0]["position"].split(":")[0])
                partition = sorted((r for p, r in records if p == home), key=lambda r: r.offset)
                yield Run(settings, postgres_url, client, db, task_id, history, partition)
        finally:
            for agent in agents:
                agent.stop(signal.SIGKILL)
            stop.set()
            await asyncio.wait_for(projector, 30)
            await db.close()


async def read_models(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    """What GET /tasks/{id}, /steps and /evaluations show, without the row's bookkeeping."""
    detail = await client.get(f"/tasks/{task_id}")
    assert detail.status_code == 200, detail.text
    steps = (await client.get(f"/tasks/{task_id}/steps")).json()["steps"]
    evaluations = (await client.get(f"/tasks/{task_id}/evaluations")).json()["evaluations"]
    task = {k: v for k, v in detail.json().items() if k not in BOOKKEEPING}
    return {"task": task, "steps": steps, "evaluations": evaluations}


def comparable(state: dict[str, Any]) -> dict[str, Any]:
    """The parts of a state that the read models also show."""
    return {"task": state["task"], "steps": state["steps"], "evaluations": state["evaluations"]}


async def state_of(client: httpx.AsyncClient, task_id: str, as_of: str | None = None) -> Any:
    params = {"as_of": as_of} if as_of is not None else {}
    response = await client.get(f"/audit/tasks/{task_id}/state", params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_the_state_as_of_the_last_event_is_what_the_read_models_show(run: Run) -> None:
    """With no as_of the task's whole log is folded: status, roles, plan, steps with their
    tool calls and recoveries, progress, output and evaluations equal GET /tasks/{id},
    /steps and /evaluations field for field; the attempts show the retry and the rejected
    output, and tokens and cost are counted."""
    state = await state_of(run.client, run.task_id)

    assert comparable(state) == await read_models(run.client, run.task_id)
    last = run.history[-1]
    assert state["as_of"] == {
        "position": last["position"],
        "event_id": last["id"],
        "type": last["type"],
        "occurred_at": last["occurred_at"],
        "events": len(run.history),
    }
    assert state["task"]["status"] == "completed" and state["task"]["output"]
    attempts = [
        (a["stage_id"], a["attempt"], a["outcome"], a["decision"]) for a in state["attempts"]
    ]
    assert attempts == [
        ("gather", 1, "failed", None),
        ("gather", 2, "completed", "accept"),
        ("draft", 1, "completed", "retry"),
        ("draft", 2, "completed", "accept"),
        ("publish", 1, "completed", "accept"),
    ]
    gather = state["steps"][0]
    assert [(r["attempt"], r["action"], r["next_attempt"]) for r in gather["recoveries"]] == [
        (1, "retry", 2)
    ]
    assert gather["error"]["code"] and state["attempts"][0]["error_code"] == gather["error"]["code"]
    assert state["attempts"][3]["suggestions"], "the second draft carries the verdict's advice"
    assert state["usage"]["cost_usd"] == pytest.approx(0.002 * 5)
    assert state["agents"]["planner"] == {"planned": True, "closed": "task.completed"}
    journey = state["agents"]["journey"]
    assert journey["settled"] == 3 and all(s["accepted"] for s in journey["stages"])
    # The InspectorAgent forgets a task's verdicts once it ends; as of its last verdict it
    # had judged every completed attempt and awaited none.
    assert state["agents"]["inspector"]["awaiting"] == []
    verdict = [e for e in run.history if e["type"] == "evaluation.recorded"][-1]
    before_end = await state_of(run.client, run.task_id, verdict["position"])
    assert before_end["agents"]["inspector"]["judged"] == 4
    assert before_end["agents"]["inspector"]["awaiting"] == []


async def test_at_every_event_the_state_is_what_the_read_models_held_then(
    run: Run, postgres_url: str
) -> None:
    """The task's partition of wrench.events is applied by the projector's own code into a
    scratch database one record at a time; after each of the task's events, GET /tasks/{id},
    /steps and /evaluations on that database equal the state as of that event's position,
    through every turn of the retry and the rejected output."""
    positions = {e["position"] for e in run.history}
    seen: list[tuple[str, ...]] = []
    async with fresh_database(postgres_url) as url:
        scratch = run.settings.model_copy(update={"database_url": SecretStr(url)})
        db = await connect(scratch)
        try:
            await migrate(db)
            key = await seed_api_key(db, scratch)
            codec = codec_from_settings(scratch)
            projector = Projector(scratch, codec, EventProducer(scratch, codec))
            async with serve(scratch, api_key=key) as then:
                for record in run.partition:
                    await projector.apply(db, {record.partition: [record]})
                    position = f"{record.partition}:{record.offset}"
                    if position not in positions:
                        continue
                    state = await state_of(run.client, run.task_id, position)
                    assert state["as_of"]["position"] == position
                    held = await read_models(then, run.task_id)
                    assert comparable(state) == held, f"differs as of {position}"
                    seen.append(tuple(s["status"] for s in state["steps"]))
        finally:
            await db.close()
    assert len(seen) == len(run.history)
    gather = [statuses[0] for statuses in seen if statuses]
    assert _runs(gather) == ["pending", "running", "failed", "recovering", "running", "completed"]
    draft = [statuses[1] for statuses in seen if statuses]
    assert _runs(draft) == ["pending", "running", "completed", "running", "completed"]


def _runs(values: list[str]) -> list[str]:
    """``values`` with repeats in a row collapsed."""
    return [v for i, v in enumerate(values) if i == 0 or values[i - 1] != v]


async def test_as_of_a_time_folds_the_events_that_occurred_by_then(run: Run) -> None:
    """as_of=TIME is the state after the task's last event that occurred by then: the time
    of the first step.failed gives the state as of that event."""
    failed = next(e for e in run.history if e["type"] == "step.failed")
    by_position = await state_of(run.client, run.task_id, failed["position"])
    at = datetime.fromisoformat(failed["occurred_at"])
    after = [datetime.fromisoformat(e["occurred_at"]) > at for e in run.history] + [True]
    later = run.history[after.index(True) - 1]  # the longest run of events by then, in log order

    by_time = await state_of(run.client, run.task_id, failed["occurred_at"])

    assert by_time["as_of"]["position"] == later["position"]
    if later is failed:
        assert by_time == by_position
    assert by_position["task"]["status"] == "running"
    assert by_position["steps"][0]["status"] == "failed"
    assert by_position["attempts"][-1]["outcome"] == "failed"


async def test_bad_as_of_unknown_and_other_tenants_tasks(run: Run) -> None:
    """A malformed as_of or a position off the task's partition is 422; a time before the
    task is 404 naming where its log starts; an unknown task and another tenant's task are
    404; a viewer's and an operator's credentials lack audit:read (403)."""
    path = f"/audit/tasks/{run.task_id}/state"
    client = run.client
    for bad in ("yesterday", "1:2:3"):
        response = await client.get(path, params={"as_of": bad})
        assert response.status_code == 422, bad
        assert response.json()["error"]["details"]["errors"][0]["field"] == "query.as_of"
    home = int(run.history[0]["position"].split(":")[0])
    response = await client.get(path, params={"as_of": f"{(home + 1) % 3}:0"})
    assert response.status_code == 422 and "partition" in response.text

    early = await client.get(path, params={"as_of": "2000-01-01T00:00:00Z"})
    assert early.status_code == 404
    assert early.json()["error"]["details"]["first_position"] == run.history[0]["position"]
    unknown = await client.get(f"/audit/tasks/{uuid.uuid4()}/state")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "TASK_NOT_FOUND"

    other = await seed_api_key(run.db, run.settings, tenant_id="other-tenant")
    elsewhere = await client.get(path, headers={"X-API-Key": other})
    assert elsewhere.status_code == 404
    for role in ("viewer", "operator"):
        key = await seed_api_key(run.db, run.settings, scopes=sorted(role_scopes(role)))
        refused = await client.get(path, headers={"X-API-Key": key})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "FORBIDDEN"


async def _replay(settings: Settings, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WRENCH_")}
    env.update(settings.to_env())
    env["WRENCH_LOG_LEVEL"] = "warning"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wrenchai",
        "replay",
        *args,
        env=env,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_wrenchai_replay_prints_the_same_state(run: Run) -> None:
    """``wrenchai replay --task ID --as-of POSITION --json`` reads Postgres directly and
    prints the state the API gives as of that position; without --json it says the same in
    words; a task the archive does not hold is an error naming it."""
    failed = next(e for e in run.history if e["type"] == "step.failed")

    code, out, err = await _replay(
        run.settings, "--task", run.task_id, "--as-of", failed["position"], "--json"
    )

    assert code == 0, err
    expected = await state_of(run.client, run.task_id, failed["position"])
    assert json.loads(out) == expected
    text = render(TaskState.model_validate(expected))
    assert f"as of {failed['position']}: step.failed" in text
    assert "status: running" in text and "attempt 1  failed" in text
    missing = uuid.UUID(int=7)
    with pytest.raises(NoTaskState, match=str(missing)):
        await replay_task(run.settings, missing, None)
