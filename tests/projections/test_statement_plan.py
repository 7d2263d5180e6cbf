"""The read models' statements run grouped (projections._statements): fewer round trips and
set-based inserts, with the same tables as running every statement one at a time in log
order."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
from hypothesis import given
from hypothesis import strategies as st

from events import (
    SYSTEM,
    AgentHeartbeat,
    ApiKeyIssued,
    ApiKeyRevoked,
    ApiKeyUsed,
    BudgetDeleted,
    BudgetSet,
    Event,
    EventPayload,
    KeyUse,
    Position,
    RoleChanged,
    SessionRefreshed,
    SessionRevoked,
    SessionStarted,
    TaskSubmitted,
    TenantCreated,
    TenantShredded,
    UserCreated,
    UserDisabled,
)
from projections import STREAMS
from projections._read_models import READ_MODELS, Applied, apply_all, owned_tables
from projections._statements import StatementPlan, _bulk_form, ordering_key
from tests.events.execution_samples import executed_task
from tests.events.inspection_samples import (
    acknowledged,
    cleared,
    evaluation,
    fitted,
    group,
    raised,
)
from tests.projections.conftest import USER, submitted

# (key, sql) pairs: a log of statements, each with a distinct argument (its place in the log).
Log = list[tuple[str, str]]
logs = st.lists(st.tuples(st.sampled_from("ABCD"), st.sampled_from("uvwxyz")), max_size=60)


def _planned(log: Log) -> tuple[StatementPlan, list[tuple[str, str, int]]]:
    plan = StatementPlan()
    for place, (key, sql) in enumerate(log):
        plan.add(key, [(sql, (place,))])
    run = [(group.sql, log[args[0]][0], args[0]) for group in plan.groups for args in group.args]
    return plan, run


@given(logs)
def test_a_plan_keeps_each_keys_order_and_each_statements_order(log: Log) -> None:
    """Whatever the interleaving, a key's statements and a SQL's statements run in log order;
    only statements of different keys and different SQL trade places."""
    _, run = _planned(log)
    assert sorted(place for _, _, place in run) == list(range(len(log)))
    for key in "ABCD":
        places = [place for _, k, place in run if k == key]
        assert places == sorted(places)
    for sql in "uvwxyz":
        places = [place for s, _, place in run if s == sql]
        assert places == sorted(places)


@given(logs)
def test_a_plan_never_needs_more_round_trips_than_runs_of_identical_sql(log: Log) -> None:
    """A run of the same SQL is one group, as the projector's executemany of runs was."""
    plan, _ = _planned(log)
    runs = sum(1 for _ in itertools.groupby(sql for _, sql in log))
    assert len(plan.groups) <= runs


def test_interleaved_tasks_take_one_group_per_kind_of_statement() -> None:
    """Twenty tasks' lifecycles interleaved on one partition, as a busy log holds them, run
    in about as many groups as one lifecycle has kinds of statement, not one per event."""
    tasks = [executed_task(submitted(f"task {i}")) for i in range(20)]
    log = [e for step in itertools.zip_longest(*tasks) for e in step if e is not None]
    names = {t: t for t in owned_tables()}
    plan = StatementPlan()
    kinds = set()
    for offset, event in enumerate(log):
        statements = _statements(event, offset, names)
        kinds |= {sql for sql, _ in statements}
        plan.add(ordering_key(event), statements)
    assert len(plan.groups) <= 2 * len(kinds) < len(log) // 10


async def test_plain_inserts_run_as_one_insert_select_and_others_as_written(
    db: asyncpg.Connection,
) -> None:
    """An insert of parameters and literals with at most ON CONFLICT DO NOTHING has a bulk
    form; an insert that reads its own table, an upsert, an update and an insert with an
    array parameter have none."""
    first = submitted()
    names = {t: t for t in owned_tables()}
    by_type = {e.type: _statements(e, i, names) for i, e in enumerate(executed_task(first))}
    tasks_insert = by_type["task.submitted"][0][0]
    roles_insert = by_type["roles.assigned"][0][0]  # WHERE NOT EXISTS on its own table
    stages_insert = by_type["plan.created"][-1][0]  # text[] parameters
    update = by_type["step.started"][0][0]
    upsert = by_type["tool.returned"][0][0]

    bulk = await _bulk_form(db, tasks_insert)
    assert bulk is not None and "unnest(" in bulk and "ORDER BY u.ordinal" in bulk
    assert "ON CONFLICT (task_id) DO NOTHING" in bulk
    for sql in (roles_insert, stages_insert, update, upsert):
        assert await _bulk_form(db, sql) is None


async def test_grouped_statements_build_the_tables_one_at_a_time_builds(
    db: asyncpg.Connection,
) -> None:
    """A log of many tasks of two tenants, interleaved, with a second task.submitted of a
    task (the first wins), a second plan, a redelivered tool.returned, alerts cleared and
    acknowledged and two quality fits, applied grouped and in bulk, gives every read model
    table the rows that applying one statement at a time in log order gives."""
    log = _busy_log()
    applied = [Applied(e, Position(0, offset)) for offset, e in enumerate(log)]
    tables = owned_tables(READ_MODELS)
    reference = {t: f"{t}__one_by_one" for t in tables}
    for table in tables:
        await db.execute(f"CREATE TABLE {reference[table]} (LIKE {table} INCLUDING ALL)")

    await apply_all(db, applied)
    async with db.transaction():
        for item in applied:
            for model in READ_MODELS:
                for sql, args in model.statements(item, reference):
                    await db.execute(sql, *args)

    for table in tables:
        grouped = await _rows(db, table)
        assert grouped, f"the log leaves {table} empty: the comparison would prove nothing"
        assert grouped == await _rows(db, reference[table]), table


def test_each_read_model_declares_every_event_type_it_answers() -> None:
    """A model is asked only about the event types it declares (projections._read_models.
    ModelsByType): one that made statements of an undeclared type would miss those events."""
    names = {t: t for stream in STREAMS for t in owned_tables(stream.models)}
    samples = [*_busy_log(), *_admin_log()]
    for model in (m for stream in STREAMS for m in stream.models):
        declared = model.event_types  # type: ignore[attr-defined]
        answered = {e.type for i, e in enumerate(samples) if _asked(model, e, i, names)}
        assert answered <= set(declared), type(model).__name__
        assert answered, f"no sample event for {type(model).__name__}: the check proves nothing"


def _asked(model: Any, event: Event, offset: int, names: dict[str, str]) -> bool:
    return bool(model.statements(Applied(event, Position(0, offset)), names))


def _admin_log() -> list[Event]:
    at = datetime(2026, 12, 1, tzinfo=UTC)
    payloads: list[EventPayload] = [
        TenantCreated(name="Acme"),
        UserCreated(user_id="u1", username="alice", role="admin", password_hash="x"),
        RoleChanged(user_id="u1", role="viewer"),
        ApiKeyIssued(key_id="k1", prefix="abcdefgh2345", secret_hash="x", name="ci", scopes=[]),
        ApiKeyUsed(uses=[KeyUse(key_id="k1", last_used_at=at)]),
        ApiKeyRevoked(key_id="k1"),
        SessionStarted(session_id="s1", user_id="u1", refresh_id="r1", expires_at=at),
        SessionRefreshed(session_id="s1", previous_refresh_id="r1", refresh_id="r2", expires_at=at),
        SessionRevoked(session_id="s1", reason="logout"),
        UserDisabled(user_id="u1"),
        AgentHeartbeat(agent_id="journey-agent", instance="host:1", started_at=at, interval_s=10.0),
        BudgetSet(scope="user", scope_id="u1", window="day", limit_usd=5.0),
        BudgetDeleted(scope="user", scope_id="u1"),
        TenantShredded(),
    ]
    return [Event.new(p, tenant_id="acme", actor=SYSTEM, occurred_at=at) for p in payloads]


def _busy_log() -> list[Event]:
    tasks = []
    for i in range(6):
        first = submitted(f"task {i}", tenant_id="acme" if i % 2 else "globex")
        alert = raised(first)
        tasks.append(
            [
                *executed_task(first),
                evaluation(first),
                evaluation(first, "write", decision="retry", passed=1, failed=2),
                alert,
                cleared(alert),
                acknowledged(alert),
            ]
        )
    log = [e for step in itertools.zip_longest(*tasks) for e in step if e is not None]
    # Right after the first, so that both land in one group: its order decides which wins.
    log.insert(log.index(tasks[3][0]) + 1, _submitted_again(tasks[3][0]))
    again = _submitted_again(tasks[0][0])
    second_plan = next(e for e in tasks[1] if e.type == "plan.created").model_copy(
        update={"id": uuid.uuid4()}
    )
    returned = next(e for e in tasks[2] if e.type == "tool.returned")
    fits = [fitted("fit-1", [group()]), fitted("fit-2", [group(alpha=9.0)], minutes=5)]
    return [*log[:40], again, *log[40:90], second_plan, returned, fits[1], *log[90:], fits[0]]


def _submitted_again(first: Event) -> Event:
    """Another task.submitted of the task ``first`` submitted, with another id."""
    return Event.new(
        TaskSubmitted(description="the same task again", timeout=30),
        tenant_id=first.tenant_id,
        actor=USER,
        task_id=first.task_id,
    )


def _statements(event: Event, offset: int, names: dict[str, str]) -> list[tuple[str, Any]]:
    applied = Applied(event, Position(0, offset))
    return [s for model in READ_MODELS for s in model.statements(applied, names)]


async def _rows(db: asyncpg.Connection, table: str) -> Sequence[str]:
    """Every row as text, sorted: the table's content, whatever order it was written in."""
    return sorted(str(tuple(r)) for r in await db.fetch(f"SELECT * FROM {table}"))
