"""Read models: each turns applied events into rows, inside the projector's transaction.

A read model names the tables it owns so that a rebuild can fill fresh copies of them and
swap them in; every statement goes through ``names`` so the same code writes either copy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import asyncpg

from events import (
    END_STATUS,
    PlanCreated,
    ProgressUpdated,
    RolesAssigned,
    TaskCompleted,
    TaskSubmitted,
    ThoughtRecorded,
    ToolsAllocated,
    submitted_playbook,
)
from projections._execution_models import RecoveriesModel, StepsModel, ToolCallsModel
from projections._inspection_models import AlertsModel, EvaluationsModel, QualityModel
from projections._read_model_types import Applied, ReadModel, Statement
from projections._statements import StatementPlan, ordering_key

TERMINAL_STATUSES = ("completed", "failed", "cancelled")


class TasksModel:
    """One row per task: what was asked, its status, and the last event applied to it."""

    tables: tuple[str, ...] = ("tasks",)
    event_types: tuple[str, ...] = (
        TaskSubmitted.event_type,
        PlanCreated.event_type,
        ProgressUpdated.event_type,
        *END_STATUS,
    )

    def statements(self, applied: Applied, names: Mapping[str, str]) -> list[Statement]:
        event, pos = applied.event, applied.position
        table = names["tasks"]
        if isinstance(event.payload, TaskSubmitted):
            p = event.payload
            return [
                (
                    f"""INSERT INTO {table} (task_id, tenant_id, description, constraints, timeout,
                        status, created_at, updated_at, last_event_id, last_partition, last_offset,
                        playbook)
                    VALUES ($1, $2, $3, $4, $5, 'submitted', $6, $6, $7, $8, $9, $10)
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
                        submitted_playbook(p.constraints),
                    ),
                )
            ]
        if isinstance(event.payload, PlanCreated) and event.task_id is not None:
            # A plan sets a submitted task to work; a task that already ended stays ended.
            # The plan names the playbook it was built from, whatever the task's status: the
            # first plan's (PlansModel, applied after this one, keeps the first plan too).
            return [
                (
                    f"""UPDATE {table} SET status = 'running', updated_at = $2,
                        last_event_id = $3, last_partition = $4, last_offset = $5
                    WHERE task_id = $1 AND status = 'submitted'""",
                    (event.task_id, event.occurred_at, event.id, pos.partition, pos.offset),
                ),
                (
                    f"""UPDATE {table} SET playbook = $2
                    WHERE task_id = $1 AND $2::text IS NOT NULL
                      AND NOT EXISTS (SELECT 1 FROM {names.get("task_plans", "task_plans")}
                                      WHERE task_id = $1 AND event_id <> $3)""",
                    (event.task_id, event.payload.playbook, event.id),
                ),
            ]
        if isinstance(event.payload, ProgressUpdated) and event.task_id is not None:
            return [_progress(table, applied, event.payload)]
        status = END_STATUS.get(event.type)
        if status is None or event.task_id is None:
            return []
        summary = event.payload.summary if isinstance(event.payload, TaskCompleted) else None
        # A terminal task stays as it ended: a late cancel does not rewrite a completion.
        # The output itself is user content; only the summary is kept on the row.
        return [
            (
                f"""UPDATE {table} SET status = $2, updated_at = $3, last_event_id = $4,
                    last_partition = $5, last_offset = $6, summary = COALESCE($7, summary)
                WHERE task_id = $1 AND status NOT IN ('completed', 'failed', 'cancelled')""",
                (
                    event.task_id,
                    status,
                    event.occurred_at,
                    event.id,
                    pos.partition,
                    pos.offset,
                    summary,
                ),
            )
        ]


def _progress(table: str, applied: Applied, p: ProgressUpdated) -> Statement:
    """The task's progress columns from progress.updated, whatever its status: the last word
    on progress may come after the task ended. A task's events share one partition, so an
    older offset than the row's last one is a stale copy and changes nothing."""
    event, pos = applied.event, applied.position
    return (
        f"""UPDATE {table} SET stages_done = $2, stages_total = $3, elapsed_s = $4,
            estimated_s = $5, tokens = $6, cost_usd = $7, updated_at = $8, last_event_id = $9,
            last_partition = $10, last_offset = $11
        WHERE task_id = $1 AND (last_partition, last_offset) < ($10, $11)""",
        (
            event.task_id,
            p.stages_done,
            p.stages_total,
            p.elapsed_s,
            p.estimated_s,
            p.tokens,
            p.cost_usd,
            event.occurred_at,
            event.id,
            pos.partition,
            pos.offset,
        ),
    )


# Planning read models. Each row's key is the task and a place inside the event that wrote it,
# and every insert is ON CONFLICT DO NOTHING. A task has one set of roles, tools and plan: the
# first event of a kind wins whole (a later one adds no rows), and applying an event again
# changes nothing.


class RolesModel:
    """The roles of each task in execution order, from roles.assigned."""

    tables: tuple[str, ...] = ("task_roles",)
    event_types: tuple[str, ...] = (RolesAssigned.event_type,)

    def statements(self, applied: Applied, names: Mapping[str, str]) -> list[Statement]:
        event = applied.event
        if not isinstance(event.payload, RolesAssigned) or event.task_id is None:
            return []
        sql = f"""INSERT INTO {names["task_roles"]}
                (task_id, ordinal, name, reason, score, depends_on, event_id, tenant_id)
            SELECT $1, $2, $3, $4, $5, $6, $7, $8
            WHERE NOT EXISTS (SELECT 1 FROM {names["task_roles"]}
                              WHERE task_id = $1 AND event_id <> $7)
            ON CONFLICT (task_id, ordinal) DO NOTHING"""
        return [
            (
                sql,
                (
                    event.task_id,
                    i,
                    r.name,
                    r.reason,
                    r.score,
                    r.depends_on,
                    event.id,
                    event.tenant_id,
                ),
            )
            for i, r in enumerate(event.payload.roles)
        ]


class AllocationsModel:
    """The tools of each role of each task, from tools.allocated."""

    tables: tuple[str, ...] = ("task_allocations",)
    event_types: tuple[str, ...] = (ToolsAllocated.event_type,)

    def statements(self, applied: Applied, names: Mapping[str, str]) -> list[Statement]:
        event = applied.event
        if not isinstance(event.payload, ToolsAllocated) or event.task_id is None:
            return []
        p = event.payload
        sql = f"""INSERT INTO {names["task_allocations"]}
                (task_id, role, ordinal, tool, version, need, reliability, score, alternatives,
                 offline_only, event_id, tenant_id)
            SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12
            WHERE NOT EXISTS (SELECT 1 FROM {names["task_allocations"]}
                              WHERE task_id = $1 AND event_id <> $11)
            ON CONFLICT (task_id, role, ordinal) DO NOTHING"""
        return [
            (
                sql,
                (
                    event.task_id,
                    role.role,
                    i,
                    t.tool,
                    t.version,
                    t.need,
                    t.reliability,
                    t.score,
                    t.alternatives,
                    p.offline_only,
                    event.id,
                    event.tenant_id,
                ),
            )
            for role in p.roles
            for i, t in enumerate(role.tools)
        ]


class PlansModel:
    """Each task's plan and its stages (status ``pending`` until execution moves them on:
    see :class:`StepsModel`), from plan.created."""

    tables: tuple[str, ...] = ("task_plans", "task_stages")
    event_types: tuple[str, ...] = (PlanCreated.event_type,)

    def statements(self, applied: Applied, names: Mapping[str, str]) -> list[Statement]:
        event = applied.event
        if not isinstance(event.payload, PlanCreated) or event.task_id is None:
            return []
        p = event.payload
        plan_sql = f"""INSERT INTO {names["task_plans"]}
                (task_id, event_id, playbook, total, critical_path_seconds, created_at,
                 tenant_id)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (task_id) DO NOTHING"""
        # Stages of a second, different plan must not mix into the first: insert them only
        # when the plan row that owns them is this event's.
        stage_sql = f"""INSERT INTO {names["task_stages"]}
                (task_id, stage_id, ordinal, role, tools, tool_version, model, depends_on,
                 inputs, tool_input, success_criteria, optional, timeout, retry, estimate,
                 fallbacks, event_id, tenant_id)
            SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                   $18
            WHERE EXISTS (SELECT 1 FROM {names["task_plans"]} WHERE task_id = $1 AND event_id = $17)
            ON CONFLICT (task_id, stage_id) DO NOTHING"""
        return [
            (
                plan_sql,
                (
                    event.task_id,
                    event.id,
                    p.playbook,
                    p.total.model_dump(mode="json"),
                    p.critical_path_seconds,
                    event.occurred_at,
                    event.tenant_id,
                ),
            ),
            *[
                (
                    stage_sql,
                    (
                        event.task_id,
                        s.id,
                        i,
                        s.role,
                        s.tools,
                        s.tool_version,
                        s.model,
                        s.depends_on,
                        s.inputs,
                        s.tool_input,
                        s.success_criteria,
                        s.optional,
                        s.timeout,
                        s.retry,
                        s.estimate.model_dump(mode="json"),
                        [f.model_dump(mode="json") for f in s.fallbacks],
                        event.id,
                        event.tenant_id,
                    ),
                )
                # A shredded tenant's stages are one "[shredded]" string: no stage rows.
                for i, s in enumerate(p.stages if isinstance(p.stages, list) else [])
            ],
        ]


class ThoughtsModel:
    """Every thought of every task, with its log position, from thought.recorded."""

    tables: tuple[str, ...] = ("task_thoughts",)
    event_types: tuple[str, ...] = (ThoughtRecorded.event_type,)

    def statements(self, applied: Applied, names: Mapping[str, str]) -> list[Statement]:
        event, pos = applied.event, applied.position
        if not isinstance(event.payload, ThoughtRecorded) or event.task_id is None:
            return []
        t = event.payload
        return [
            (
                f"""INSERT INTO {names["task_thoughts"]}
                    (event_id, task_id, operation, number, text, revises, branch, stage_id,
                     occurred_at, partition, "offset", tenant_id)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                ON CONFLICT (event_id) DO NOTHING""",
                (
                    event.id,
                    event.task_id,
                    t.operation,
                    t.number,
                    t.text,
                    t.revises,
                    t.branch,
                    t.stage_id,
                    event.occurred_at,
                    pos.partition,
                    pos.offset,
                    event.tenant_id,
                ),
            )
        ]


READ_MODELS: tuple[ReadModel, ...] = (
    TasksModel(),
    RolesModel(),
    AllocationsModel(),
    PlansModel(),
    ThoughtsModel(),
    # After PlansModel: it moves on the stage rows plan.created inserts.
    StepsModel(),
    RecoveriesModel(),
    ToolCallsModel(),
    EvaluationsModel(),
    AlertsModel(),
    QualityModel(),
)
"""Every read model the projector maintains, in the order they apply."""


def owned_tables(models: Sequence[ReadModel] = READ_MODELS) -> tuple[str, ...]:
    """Every table the read models own."""
    return tuple(t for m in models for t in m.tables)


class ModelsByType:
    """The read models that answer each event type, in their order. A model that declares
    ``event_types`` (the types its statements() answer) is asked about those only, which
    spares each event a call to every model that would ignore it; a model that declares
    none is asked about every event."""

    def __init__(self, models: Sequence[ReadModel]) -> None:
        self.models = tuple(models)
        self._by_type: dict[str, tuple[ReadModel, ...]] = {}

    def statements(self, applied: Applied, names: Mapping[str, str]) -> list[Statement]:
        """Every statement the models make of ``applied``, in model order."""
        event_type = applied.event.type
        models = self._by_type.get(event_type)
        if models is None:
            models = tuple(
                m for m in self.models if event_type in getattr(m, "event_types", (event_type,))
            )
            self._by_type[event_type] = models
        return [s for model in models for s in model.statements(applied, names)]


async def apply_all(
    conn: asyncpg.Connection,
    applied: Sequence[Applied],
    names: Mapping[str, str] | None = None,
    models: Sequence[ReadModel] = READ_MODELS,
) -> None:
    """Apply events in log order, each key's in order, grouped into few round trips
    (projections._statements)."""
    names = names or {t: t for t in owned_tables(models)}
    by_type = ModelsByType(models)
    plan = StatementPlan()
    for item in applied:
        plan.add(ordering_key(item.event), by_type.statements(item, names))
    await plan.run(conn)
