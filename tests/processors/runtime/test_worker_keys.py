"""The worker shell with per-tenant keys: it loads a tenant's keys before decoding its
records, and a shredded tenant's events are neither folded (no agent acts on
``[shredded]``) nor poison (nothing goes to wrench.dlq)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

import asyncpg
import pytest

from events import (
    Actor,
    Codec,
    Event,
    PostgresKeyStore,
    Record,
    TaskSubmitted,
    log_end_offsets,
)
from processors.runtime import Emit, Worker
from tests.projections.shredding_support import keyed
from wrenchai.settings import Settings

USER = Actor(kind="user", id="alice")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return keyed(settings)


class _Job:
    key = "never"


def _fold(state: list[Event] | None, event: Event) -> list[Event]:
    return [*(state or []), event]


def _nothing(state: list[Event], now: datetime) -> list[_Job]:
    return []


async def _never(job: _Job, emit: Emit) -> None:
    raise AssertionError("no job is decided")


async def _record(codec: Codec, tenant_id: str) -> tuple[Event, Record]:
    event = Event.new(
        TaskSubmitted(description="the merger memo", timeout=60),
        tenant_id=tenant_id,
        actor=USER,
        task_id=uuid.uuid4(),
    )
    await codec.prepare_events([event])
    return event, codec.encode(event)


async def test_a_worker_folds_other_tenants_but_not_a_shredded_one_and_sends_nothing_to_the_dlq(
    settings: Settings, db: asyncpg.Connection, topics: dict[str, int], codec: Codec
) -> None:
    doomed, doomed_record = await _record(codec, "doomed")
    kept, kept_record = await _record(codec, "kept")
    await PostgresKeyStore(settings).destroy("doomed", None)
    await asyncio.sleep(settings.key_cache_ttl_s)

    worker: Worker[list[Event], _Job] = Worker(
        settings,
        "keys-probe",
        folded_types={"task.submitted"},
        evolve=_fold,
        decide=_nothing,
        run=_never,
    )
    try:
        [part] = worker.assign([0])
        await asyncio.wait_for(part.ready.wait(), 30)
        await worker.handle(doomed_record, 0, 0)
        await worker.handle(kept_record, 0, 1)
        assert kept.task_id is not None and doomed.task_id not in part.tasks
        assert part.tasks == {kept.task_id: [kept]}
    finally:
        await worker.close()
    assert set((await log_end_offsets(settings, settings.topic("dlq"))).values()) == {0}
