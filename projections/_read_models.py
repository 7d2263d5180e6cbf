"""Read models: each turns applied events into rows, inside the projector's transaction.

A read model names the tables it owns so that a rebuild can fill fresh copies of them and
swap them in; every statement goes through ``names`` so the same code writes either copy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg

from events import Event, Position, TaskSubmitted

Statement = tuple[str, tuple[Any, ...]]


@dataclass(frozen=True)
class Applied:
    """An event the projector applies, with where it sits on the log."""

    event: Event
    position: Position


class ReadModel(Protocol):
    """Folds events into tables. ``tables`` are the ones a rebuild recreates."""

    tables: tuple[str, ...]

    def statements(self, applied: Applied, names: Mapping[str, str]) -> list[Statement]: ...


_STATUS_OF = {
    "task.completed": "completed",
    "task.failed": "failed",
    "task.cancelled": "cancelled",
}
TERMINAL_STATUSES = ("completed", "failed", "cancelled")


class TasksModel:
    """One row per task: what was asked, its status, and the last event applied to it."""

    tables: tuple[str, ...] = ("tasks",)

    def statements(self, applied: Applied, names: Mapping[str, str]) -> list[Statement]:
        event, pos = applied.event, applied.position
        table = names["tasks"]
        if isinstance(event.payload, TaskSubmitted):
            p = event.payload
            return [
                (
                    f"""INSERT INTO {table} (task_id, tenant_id, description, constraints, timeout,
                        status, created_at, updated_at, last_event_id, last_partition, last_offset)
                    VALUES ($1, $2, $3, $4, $5, 'submitted', $6, $6, $7, $8, $9)
                    ON CONFLICT (task_id) DO NOTHING""",
                    (
                        event.task_id,
                        event.tenant_id,
                        p.description,
                        p.constraints,
                        p.timeout,
                        event.occurred_at,
                        event.id,
                        pos.partition,
                        pos.offset,
                    ),
                )
            ]
        status = _STATUS_OF.get(event.type)
        if status is None or event.task_id is None:
            return []
        # A terminal task stays as it ended: a late cancel does not rewrite a completion.
        return [
            (
                f"""UPDATE {table} SET status = $2, updated_at = $3, last_event_id = $4,
                    last_partition = $5, last_offset = $6
                WHERE task_id = $1 AND status NOT IN ('completed', 'failed', 'cancelled')""",
                (event.task_id, status, event.occurred_at, event.id, pos.partition, pos.offset),
            )
        ]


READ_MODELS: tuple[ReadModel, ...] = (TasksModel(),)
"""Every read model the projector maintains, in the order they apply."""


def owned_tables(models: Sequence[ReadModel] = READ_MODELS) -> tuple[str, ...]:
    """Every table the read models own."""
    return tuple(t for m in models for t in m.tables)


async def apply_all(
    conn: asyncpg.Connection,
    applied: Sequence[Applied],
    names: Mapping[str, str] | None = None,
    models: Sequence[ReadModel] = READ_MODELS,
) -> None:
    """Apply events in log order, sending runs of the same statement as one executemany."""
    names = names or {t: t for t in owned_tables(models)}
    pending_sql: str | None = None
    pending_args: list[tuple[Any, ...]] = []
    for item in applied:
        for model in models:
            for sql, args in model.statements(item, names):
                if sql != pending_sql and pending_args:
                    await conn.executemany(pending_sql or "", pending_args)
                    pending_args = []
                pending_sql = sql
                pending_args.append(args)
    if pending_args and pending_sql:
        await conn.executemany(pending_sql, pending_args)
