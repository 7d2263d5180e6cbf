"""Queries on the read models and the event archive, and the read-your-writes wait.

Every query takes the tenant: a row of another tenant is as absent as a row that never was.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from api._database import Database
from api._execution import fetch_progress, fetch_steps
from api._keyset import Conditions, Order, PageCursor, keyset_rows
from api.models import (
    HistoryEvent,
    Plan,
    PlanStage,
    RoleTool,
    Task,
    TaskDetail,
    TaskRole,
    TaskStatus,
    Thought,
)
from events import Codec, Position
from projections import EVENTS, Stream, headers_from_json
from wrenchai.settings import Settings

POLL_INTERVAL_S = 0.025
"""How often a read with ``?wait_for=`` looks at the projector's offsets: one indexed
primary-key lookup, cheap enough that a short interval costs nothing noticeable."""

_TASK_COLUMNS = """task_id, tenant_id, description, constraints, timeout, status, created_at,
    updated_at, last_event_id, last_partition, last_offset, playbook"""


def _task(row: Mapping[str, Any]) -> Task:
    return Task(
        task_id=row["task_id"],
        tenant_id=row["tenant_id"],
        description=row["description"],
        constraints=row["constraints"],
        timeout=row["timeout"],
        status=row["status"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_event_id=row["last_event_id"],
        position=str(Position(row["last_partition"], row["last_offset"])),
        playbook=row["playbook"],
    )


async def fetch_task(conn: asyncpg.Connection, tenant_id: str, task_id: uuid.UUID) -> Task | None:
    """The task's row, or None."""
    row = await conn.fetchrow(
        f"SELECT {_TASK_COLUMNS} FROM tasks WHERE task_id = $1 AND tenant_id = $2",
        task_id,
        tenant_id,
    )
    return None if row is None else _task(row)


_DETAIL_SHAPE = hashlib.blake2b(
    orjson.dumps(TaskDetail.model_json_schema(), option=orjson.OPT_SORT_KEYS), digest_size=8
).hexdigest()
"""Changes whenever the shape of a task's body does, so a new release never answers 304 to
a body of the old shape."""


async def fetch_task_etag(
    conn: asyncpg.Connection, topic: str, tenant_id: str, task_id: uuid.UUID
) -> str | None:
    """The strong entity tag of the task's body (GET /tasks/{task_id}); None when there is
    no task. Read it in the snapshot the body is read in.

    The body is folded from the task's own events only (its row, roles, plan, steps,
    progress, and the output decoded from its archived task.completed), and every event the
    projector applies is archived in the same transaction: the newest archived position of
    the task names the body. The row's last position counts too (a row can move on before
    its record is archived only where the tables were written by hand), and so does the
    tenant's shredding, which rewrites the body with no event of the task."""
    row = await conn.fetchrow(
        """SELECT t.last_event_id, t.last_partition, t.last_offset,
               (SELECT array[e.partition::bigint, e."offset"] FROM event_log e
                WHERE e.task_id = t.task_id AND e.tenant_id = t.tenant_id AND e.topic = $3
                  AND e.status = 'applied'
                ORDER BY e.partition DESC, e."offset" DESC LIMIT 1) AS archived,
               (SELECT n.shredded_at FROM tenants n WHERE n.tenant_id = t.tenant_id) AS shredded
           FROM tasks t WHERE t.task_id = $1 AND t.tenant_id = $2""",
        task_id,
        tenant_id,
        topic,
    )
    if row is None:
        return None
    names = (
        f"{_DETAIL_SHAPE}|{task_id}|{row['last_event_id']}|{row['last_partition']}:"
        f"{row['last_offset']}|{row['archived']}|{row['shredded']}"
    )
    return '"' + hashlib.blake2b(names.encode(), digest_size=16).hexdigest() + '"'


async def fetch_task_detail(
    conn: asyncpg.Connection, tenant_id: str, task_id: uuid.UUID
) -> TaskDetail | None:
    """The task's row with its roles, their tools, its plan, its steps, its progress and
    its summary; None when there is no task."""
    task = await fetch_task(conn, tenant_id, task_id)
    if task is None:
        return None
    progress, summary = await fetch_progress(conn, tenant_id, task_id)
    return TaskDetail(
        **task.model_dump(),
        roles=await _fetch_roles(conn, task_id),
        plan=await _fetch_plan(conn, task_id),
        steps=await fetch_steps(conn, tenant_id, task_id),
        progress=progress,
        summary=summary,
    )


async def _fetch_roles(conn: asyncpg.Connection, task_id: uuid.UUID) -> list[TaskRole]:
    roles = await conn.fetch(
        "SELECT name, reason, score, depends_on FROM task_roles WHERE task_id = $1"
        " ORDER BY ordinal",
        task_id,
    )
    tools = await conn.fetch(
        """SELECT role, tool, version, need, reliability, score, alternatives
           FROM task_allocations WHERE task_id = $1 ORDER BY role, ordinal""",
        task_id,
    )
    by_role: dict[str, list[RoleTool]] = {}
    for row in tools:
        by_role.setdefault(row["role"], []).append(
            RoleTool.model_validate({k: v for k, v in row.items() if k != "role"})
        )
    return [TaskRole(**dict(row), tools=by_role.get(row["name"], [])) for row in roles]


async def _fetch_plan(conn: asyncpg.Connection, task_id: uuid.UUID) -> Plan | None:
    plan = await conn.fetchrow(
        """SELECT playbook, total, critical_path_seconds, created_at FROM task_plans
           WHERE task_id = $1""",
        task_id,
    )
    if plan is None:
        return None
    stages = await conn.fetch(
        """SELECT stage_id AS id, role, tools, tool_version, model, depends_on, inputs,
               tool_input, success_criteria, optional, timeout, retry, estimate, fallbacks,
               status
           FROM task_stages WHERE task_id = $1 ORDER BY ordinal""",
        task_id,
    )
    return Plan.model_validate(
        {**dict(plan), "stages": [PlanStage.model_validate(dict(row)) for row in stages]}
    )


async def fetch_thoughts(conn: asyncpg.Connection, task_id: uuid.UUID) -> list[Thought]:
    """The task's thoughts in log order (a task's events share one partition)."""
    rows = await conn.fetch(
        """SELECT operation, number, text, revises, branch, stage_id, occurred_at, partition,
               "offset"
           FROM task_thoughts WHERE task_id = $1 ORDER BY partition, "offset"
        """,
        task_id,
    )
    return [
        Thought(
            operation=row["operation"],
            number=row["number"],
            text=row["text"],
            revises=row["revises"],
            branch=row["branch"],
            stage_id=row["stage_id"],
            occurred_at=row["occurred_at"],
            position=str(Position(row["partition"], row["offset"])),
        )
        for row in rows
    ]


async def keyset_page(
    conn: asyncpg.Connection,
    *,
    table: str,
    columns: str,
    key: tuple[str, str],
    filters: Sequence[tuple[str, Any]],
    after: tuple[Any, Any] | None,
    limit: int,
) -> tuple[list[asyncpg.Record], bool]:
    """One page of ``table``, newest first by ``key`` (a time and an id), and whether a next
    page exists. ``filters`` are (column, value) equalities; a None value is no filter.

    Keyset pagination, served by an index on the key: a page costs the same however deep it
    is, and rows inserted meanwhile neither repeat nor vanish.
    """
    conditions: list[str] = []
    args: list[Any] = []
    for column, value in filters:
        if value is not None:
            args.append(value)
            conditions.append(f"{column} = ${len(args)}")
    first, second = key
    if after is not None:
        args.extend(after)
        conditions.append(f"({first}, {second}) < (${len(args) - 1}, ${len(args)})")
    args.append(limit + 1)  # one more than asked tells whether a next page exists
    where = " AND ".join(conditions) or "TRUE"
    rows = await conn.fetch(
        f"SELECT {columns} FROM {table} WHERE {where} "
        f"ORDER BY {first} DESC, {second} DESC LIMIT ${len(args)}",
        *args,
    )
    return rows[:limit], len(rows) > limit


TASK_ORDERS = ("-created_at", "created_at", "-updated_at", "updated_at")
"""The orders GET /tasks can list in: newest or oldest first, by creation or by last update."""
TASK_DEFAULT_ORDER = Order("created_at")


async def list_tasks(
    conn: asyncpg.Connection,
    tenant_id: str,
    *,
    status: TaskStatus | Sequence[TaskStatus] | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    q: str | None = None,
    playbook: str | None = None,
    order: Order = TASK_DEFAULT_ORDER,
    limit: int = 50,
    after: PageCursor | None = None,
) -> tuple[list[Task], PageCursor | None]:
    """One page of the tenant's tasks in ``order`` (keyset on the order's time column and
    task_id), and the cursor of the next page (None on the last one).

    Filters combine with AND: ``status`` (any of several), ``created_at`` in
    [``created_after``, ``created_before``), ``q`` matched against the description with
    Postgres full-text search (websearch syntax, English stemming), ``playbook`` the name
    the task was submitted or planned with.
    """
    where = Conditions()
    where.add("tenant_id = {}", tenant_id)
    if status is not None:
        where.add("status = ANY({}::text[])", [status] if isinstance(status, str) else list(status))
    if created_after is not None:
        where.add("created_at >= {}", created_after)
    if created_before is not None:
        where.add("created_at < {}", created_before)
    if q is not None:
        where.add("search @@ websearch_to_tsquery('english'::regconfig, {})", q)
    if playbook is not None:
        where.add("playbook = {}", playbook)
    rows, more = await keyset_rows(
        conn,
        table="tasks",
        columns=_TASK_COLUMNS,
        id_column="task_id",
        conditions=where,
        order=order,
        after=(after.at, uuid.UUID(after.id)) if after is not None else None,
        limit=limit,
    )
    tasks = [_task(row) for row in rows]
    if not more:
        return tasks, None
    last = rows[-1]
    return tasks, PageCursor(order, last[order.column], str(last["task_id"]))


@dataclass(frozen=True)
class ArchivedRecord:
    """An applied record of the archive, as it was on the log."""

    position: Position
    value: bytes
    headers: Sequence[Any]


async def fetch_history(
    conn: asyncpg.Connection, topic: str, tenant_id: str, task_id: uuid.UUID
) -> list[ArchivedRecord]:
    """The task's applied records in log order (a task's events share one partition)."""
    rows = await conn.fetch(
        """SELECT partition, "offset", raw_value, raw_headers FROM event_log
           WHERE task_id = $1 AND tenant_id = $2 AND topic = $3 AND status = 'applied'
           ORDER BY partition, "offset"
        """,
        task_id,
        tenant_id,
        topic,
    )
    return [
        ArchivedRecord(Position(r["partition"], r["offset"]), r["raw_value"], r["raw_headers"])
        for r in rows
    ]


async def fetch_history_after(
    conn: asyncpg.Connection,
    topic: str,
    tenant_id: str,
    task_id: uuid.UUID,
    after: Position,
    *,
    before: int,
) -> list[ArchivedRecord]:
    """The task's applied records on ``after``'s partition with ``after.offset < offset <
    before``, in log order: the archived part of a stream that resumes after ``after``."""
    rows = await conn.fetch(
        """SELECT partition, "offset", raw_value, raw_headers FROM event_log
           WHERE task_id = $1 AND tenant_id = $2 AND topic = $3 AND status = 'applied'
             AND partition = $4 AND "offset" > $5 AND "offset" < $6
           ORDER BY "offset"
        """,
        task_id,
        tenant_id,
        topic,
        after.partition,
        after.offset,
        before,
    )
    return [
        ArchivedRecord(Position(r["partition"], r["offset"]), r["raw_value"], r["raw_headers"])
        for r in rows
    ]


async def fetch_output(
    conn: asyncpg.Connection, codec: Codec, topic: str, tenant_id: str, task_id: uuid.UUID
) -> Any:
    """The output of the task's task.completed, decoded from the archived bytes like the
    history (read models keep no user content); None when the task has not completed."""
    row = await conn.fetchrow(
        """SELECT raw_value, raw_headers FROM event_log
           WHERE task_id = $1 AND tenant_id = $2 AND topic = $3 AND status = 'applied'
             AND type = 'task.completed'
           ORDER BY partition, "offset" LIMIT 1
        """,
        task_id,
        tenant_id,
        topic,
    )
    if row is None:
        return None
    await codec.prepare_records([row["raw_value"]])
    event = codec.decode(row["raw_value"], headers_from_json(list(row["raw_headers"])))
    return getattr(event.payload, "output", None)


async def decode_history(codec: Codec, records: Sequence[ArchivedRecord]) -> list[HistoryEvent]:
    """Each record's event, decrypted and upcast by the codec from the bytes that were logged
    (a shredded tenant's with ``[shredded]`` in place of its content).

    The archive's ``payload`` column is not used: it holds sensitive fields as ciphertext and
    the event as first written, not as the catalog reads it today.
    """
    await codec.prepare_records(record.value for record in records)
    return [
        history_event(codec, r.position, r.value, headers_from_json(list(r.headers)))
        for r in records
    ]


def history_event(
    codec: Codec, position: Position, value: bytes, headers: tuple[tuple[str, bytes | None], ...]
) -> HistoryEvent:
    """One logged record as the history shows it (the codec must be prepared for it)."""
    event = codec.decode(value, headers)
    return HistoryEvent.model_validate({**event.model_dump(mode="json"), "position": str(position)})


async def projector_passed(
    conn: asyncpg.Connection, settings: Settings, position: Position, stream: Stream = EVENTS
) -> bool:
    """True once the projector has committed everything up to and including ``position``
    of the stream's topic."""
    next_offset = await conn.fetchval(
        """SELECT next_offset FROM consumer_offsets
           WHERE group_id = $1 AND topic = $2 AND partition = $3""",
        stream.group(settings),
        stream.topic(settings),
        position.partition,
    )
    return next_offset is not None and next_offset > position.offset


async def wait_for_projector(
    database: Database,
    settings: Settings,
    position: Position,
    stream: Stream = EVENTS,
    timeout_s: float | None = None,
) -> bool:
    """Wait up to ``timeout_s`` (``read_wait_timeout_s`` by default) for the projector to
    pass ``position``.

    Returns whether it did; on a timeout the caller answers from what the read models hold.
    A connection is taken per look rather than held, so waiting readers do not drain the pool.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (settings.read_wait_timeout_s if timeout_s is None else timeout_s)
    while True:
        async with database.connection() as conn:
            if await projector_passed(conn, settings, position, stream):
                return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(min(POLL_INTERVAL_S, max(deadline - loop.time(), 0)))


async def projector_lag(
    conn: asyncpg.Connection, settings: Settings, ends: Mapping[int, int]
) -> int:
    """Records on the log that the projector has not committed yet, over all partitions."""
    rows = await conn.fetch(
        "SELECT partition, next_offset FROM consumer_offsets WHERE group_id = $1 AND topic = $2",
        settings.group("projector"),
        settings.topic("events"),
    )
    done = {row["partition"]: row["next_offset"] for row in rows}
    return sum(max(end - done.get(partition, 0), 0) for partition, end in ends.items())
