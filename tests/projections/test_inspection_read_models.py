"""The inspection read models: evaluations, alerts (raised, cleared, acknowledged) and the
quality model's fits and posteriors, as the projector builds them from the log, idempotently
and per tenant, and as a rebuild builds them again."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from events import Codec, Event, EventProducer, Position
from projections import rebuild
from projections._read_model_types import Applied
from projections._read_models import apply_all
from tests.events.inspection_samples import (
    PLATFORM_TENANT,
    acknowledged,
    cleared,
    evaluation,
    fitted,
    group,
    raised,
)
from tests.projections.conftest import archived, eventually, submitted
from wrenchai.settings import Settings

INSPECTION_TABLES = ("evaluations", "alerts", "quality_fits", "quality_posteriors")


async def _all_archived(db: asyncpg.Connection, count: int) -> None:
    async def done() -> bool:
        return await archived(db) == count

    await eventually(done)


async def _rows(db: asyncpg.Connection, table: str) -> list[dict[str, Any]]:
    return [dict(r) for r in await db.fetch(f"SELECT * FROM {table} ORDER BY 1, 2")]


def task_story(tenant_id: str = "acme") -> list[Event]:
    """A task with a rejected then an accepted evaluation, a STALLED alert raised, cleared,
    raised again and acknowledged, and a REPEATED_FAILURES alert still open."""
    first = submitted(tenant_id=tenant_id)
    stalled = raised(first, "STALLED", 1, seconds=20)
    again = raised(first, "STALLED", 2, seconds=60)
    failures = raised(first, "REPEATED_FAILURES", 1, level="critical", seconds=70)
    return [
        first,
        evaluation(first, "search", 1, passed=1, failed=2, decision="retry", seconds=10),
        stalled,
        cleared(stalled, seconds=10),
        evaluation(first, "search", 2, passed=3, seconds=40),
        again,
        acknowledged(again, note="on it"),
        failures,
    ]


async def publish_fit(
    producer: EventProducer, codec: Codec, settings: Settings, fit: Event
) -> None:
    """A fit as the InspectorAgent publishes it: the same record on every partition."""
    record = codec.encode(fit)
    for partition in range(settings.partitions):
        await producer.send_records(settings.topic("events"), [record], partition=partition)


FITS = [
    fitted("fit-1", [group(alpha=4, beta=4), group("writer", "llm.generate", "gpt-4o-mini")]),
    fitted("fit-2", [group(alpha=9, beta=1)], minutes=10),
    fitted("fit-3", [group(alpha=1, beta=9)], minutes=20, converged=False),
]


async def test_evaluations_alerts_and_fits_fill_their_tables(
    settings: Settings,
    codec: Codec,
    producer: EventProducer,
    db: asyncpg.Connection,
    projector: asyncio.Task[None],
) -> None:
    """Each evaluation is a row in log order with its checks; each alert one row that moved
    open → cleared or stayed open, acknowledged once; every fit is recorded, and each group
    keeps the posterior of the newest converged fit that had it."""
    events = task_story()
    positions = await producer.publish_many(events)
    for fit in FITS:
        await publish_fit(producer, codec, settings, fit)
    await _all_archived(db, len(events) + len(FITS) * settings.partitions)
    task_id = events[0].task_id

    rows = await db.fetch('SELECT * FROM evaluations ORDER BY partition, "offset"')
    assert [(r["stage_id"], r["attempt"], r["decision"]) for r in rows] == [
        ("search", 1, "retry"),
        ("search", 2, "accept"),
    ]
    assert rows[0]["task_id"] == task_id and rows[0]["tenant_id"] == "acme"
    assert rows[0]["checks"][2] == {
        "name": "check-2",
        "passed": False,
        "detail": "fewer than three sources",
    }
    assert rows[0]["suggestions"] == ["cite at least three sources"]
    assert (rows[0]["quality_score"], rows[0]["prior_source"]) == (0.4, "default")
    assert Position(rows[1]["partition"], rows[1]["offset"]) == positions[4]

    alerts = {r["alert_id"]: r for r in await db.fetch("SELECT * FROM alerts")}
    first, second, failures = (
        f"{task_id}:{c}" for c in ("STALLED:1", "STALLED:2", "REPEATED_FAILURES:1")
    )
    assert set(alerts) == {first, second, failures}
    assert alerts[first]["status"] == "cleared" and alerts[first]["clear_reason"]
    assert alerts[first]["cleared_at"] == events[3].occurred_at
    assert alerts[first]["acknowledged_at"] is None
    assert (
        alerts[second]["status"],
        alerts[second]["acknowledged_by"],
        alerts[second]["note"],
    ) == (
        "open",
        "bob",
        "on it",
    )
    assert (
        alerts[failures]["level"] == "critical"
        and alerts[failures]["details"]["stall_after_s"] == 120.0
    )

    fits = await db.fetch("SELECT * FROM quality_fits ORDER BY fitted_at")
    assert [(f["fit_id"], f["converged"], f["groups"]) for f in fits] == [
        ("fit-1", True, 2),
        ("fit-2", True, 1),
        ("fit-3", False, 1),
    ]
    assert {f["tenant_id"] for f in fits} == {PLATFORM_TENANT}
    posteriors = await db.fetch("SELECT * FROM quality_posteriors ORDER BY role")
    assert [(p["role"], p["model"], p["alpha"], p["fit_id"]) for p in posteriors] == [
        ("researcher", "", 9.0, "fit-2"),
        ("writer", "gpt-4o-mini", 8.0, "fit-1"),
    ]


async def test_alert_moves_are_scoped_to_the_alerts_tenant(db: asyncpg.Connection) -> None:
    """A clear or an acknowledgement stamped with another tenant changes nothing, even when
    it names the alert's id."""
    events = task_story("acme")
    up = events[5]
    foreign_clear = cleared(up).model_copy(update={"tenant_id": "globex"})
    foreign_ack = acknowledged(up, note="not yours").model_copy(update={"tenant_id": "globex"})
    applied = [
        Applied(e, Position(0, i)) for i, e in enumerate([*events[:6], foreign_clear, foreign_ack])
    ]
    await apply_all(db, applied)
    row = await db.fetchrow("SELECT * FROM alerts WHERE alert_id = $1", up.payload.alert_id)  # type: ignore[attr-defined]
    assert (row["status"], row["acknowledged_at"], row["note"]) == ("open", None, None)


async def test_applying_the_inspection_events_twice_changes_nothing(
    db: asyncpg.Connection,
) -> None:
    """Without the projector's dedupe, every statement is still idempotent: a second
    acknowledgement does not overwrite the first, an older fit does not replace a newer
    posterior."""
    events = [*task_story(), *FITS]
    late_ack = acknowledged(events[5], note="second look", user="carol")
    applied = [Applied(e, Position(0, i)) for i, e in enumerate([*events, late_ack])]
    await apply_all(db, applied)
    before = {t: await _rows(db, t) for t in INSPECTION_TABLES}
    await apply_all(db, list(reversed(applied)))
    await apply_all(db, applied)
    assert {t: await _rows(db, t) for t in INSPECTION_TABLES} == before
    row = await db.fetchrow(
        "SELECT acknowledged_by, note FROM alerts WHERE acknowledged_at IS NOT NULL"
    )
    assert dict(row) == {"acknowledged_by": "bob", "note": "on it"}


async def test_rebuild_gives_the_inspection_tables_the_projector_built(
    settings: Settings,
    codec: Codec,
    producer: EventProducer,
    db: asyncpg.Connection,
    projector: asyncio.Task[None],
) -> None:
    """Replaying the log into fresh tables reproduces every inspection row, with tasks of two
    tenants on several partitions and fits copied to every partition."""
    events = [*task_story("acme"), *task_story("globex")]
    await producer.publish_many(events)
    for fit in FITS:
        await publish_fit(producer, codec, settings, fit)
    await _all_archived(db, len(events) + len(FITS) * settings.partitions)
    before = {t: await _rows(db, t) for t in INSPECTION_TABLES}
    assert len(before["alerts"]) == 6 and len(before["evaluations"]) == 4

    report = await rebuild(settings)

    assert set(INSPECTION_TABLES) <= set(report.tables)
    assert report.skipped == len(FITS) * (settings.partitions - 1)
    assert {t: await _rows(db, t) for t in INSPECTION_TABLES} == before
