"""Read models of execution: each stage's attempts, every tool call, every recovery, and tool
statistics, from step.*, tool.returned and recovery.* events.

The projector applies each event id once, and these statements are safe without that too:
a stage moves only on an event about its latest attempt, rows are keyed by the event or the
attempt that wrote them, and tool statistics move in the same statement that inserts the
call's row, so a call that is already there counts nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

from events import (
    RecoveryExecuted,
    RecoveryPlanned,
    StepCompleted,
    StepFailed,
    StepStarted,
    ToolReturned,
)
from projections._read_model_types import Applied, Statement

# Recoveries that run the stage again, so it is "recovering" until the next attempt starts.
RUN_AGAIN = ("retry", "alternate_tool", "alternate_model")

_MOVES_A_STAGE = (StepStarted, StepCompleted, StepFailed, RecoveryPlanned, RecoveryExecuted)

# The error code of a tool.returned refused by the JourneyAgent's circuit breaker: the tool
# never ran (processors.shared.tool_usage leaves these out of its statistics too).
REFUSED = "CIRCUIT_OPEN"

# Every stage update records what moved it last; $1 task, $2 stage, then these four.
_MOVED = "updated_at = $3, last_event_id = $4, last_partition = $5, last_offset = $6"


class StepsModel:
    """Moves each stage of the plan through its attempts: ``running`` on step.started,
    ``completed`` or ``failed`` when the attempt ends, ``recovering`` while a retry or an
    alternate is planned, ``skipped`` when a skip is carried out.

    The rows are task_stages, which :class:`~projections._read_models.PlansModel` owns and
    inserts from plan.created; this model only updates them, so it owns no table (a rebuild
    must recreate task_stages once).
    """

    tables: tuple[str, ...] = ()
    event_types: tuple[str, ...] = tuple(p.event_type for p in _MOVES_A_STAGE)

    def statements(self, applied: Applied, names: Mapping[str, str]) -> list[Statement]:
        event, pos = applied.event, applied.position
        p = event.payload
        if not isinstance(p, _MOVES_A_STAGE) or event.task_id is None:
            return []
        table = names["task_stages"]
        moved = (event.task_id, p.stage_id, event.occurred_at, event.id, pos.partition, pos.offset)
        if isinstance(p, StepStarted):
            # A start of an attempt no newer than the latest is a rerun of it: nothing moves.
            sql = f"""UPDATE {table} SET status = 'running', attempts = $7, last_tool = $8,
                    last_tool_version = $9, last_model = $10,
                    started_at = COALESCE(started_at, $3), {_MOVED}
                WHERE task_id = $1 AND stage_id = $2 AND attempts < $7"""
            return [(sql, (*moved, p.attempt, p.tool, p.tool_version, p.model))]
        if isinstance(p, StepCompleted):
            # The first end of the latest attempt wins; an older attempt's end changes nothing.
            sql = f"""UPDATE {table} SET status = 'completed', attempts = $7,
                    completed_at = $3, duration_s = $8, {_MOVED}
                WHERE task_id = $1 AND stage_id = $2 AND attempts <= $7
                    AND status IN ('pending', 'running')"""
            return [(sql, (*moved, p.attempt, p.duration_s))]
        if isinstance(p, StepFailed):
            error = {"code": p.error.code, "message": p.error.message, "category": p.error.category}
            sql = f"""UPDATE {table} SET status = 'failed', attempts = $7, last_error = $8,
                    {_MOVED}
                WHERE task_id = $1 AND stage_id = $2 AND attempts <= $7
                    AND status IN ('pending', 'running')"""
            return [(sql, (*moved, p.attempt, error))]
        if isinstance(p, RecoveryPlanned) and p.action in RUN_AGAIN:
            sql = f"""UPDATE {table} SET status = 'recovering', {_MOVED}
                WHERE task_id = $1 AND stage_id = $2 AND attempts = $7 AND status = 'failed'"""
            return [(sql, (*moved, p.attempt))]
        if isinstance(p, RecoveryExecuted) and p.action == "skip":
            sql = f"""UPDATE {table} SET status = 'skipped', {_MOVED}
                WHERE task_id = $1 AND stage_id = $2 AND attempts = $7
                    AND status IN ('failed', 'recovering')"""
            return [(sql, (*moved, p.attempt))]
        return []


class RecoveriesModel:
    """One row per failed attempt that got a recovery.planned (the first plan for an attempt
    wins), completed by its recovery.executed."""

    tables: tuple[str, ...] = ("task_recoveries",)
    event_types: tuple[str, ...] = (RecoveryPlanned.event_type, RecoveryExecuted.event_type)

    def statements(self, applied: Applied, names: Mapping[str, str]) -> list[Statement]:
        event = applied.event
        p = event.payload
        table = names["task_recoveries"]
        if event.task_id is None:
            return []
        if isinstance(p, RecoveryPlanned):
            sql = f"""INSERT INTO {table} (task_id, stage_id, attempt, tenant_id, category,
                    action, reason, delay_s, tool, model, suggestion, planned_at, event_id)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                ON CONFLICT (task_id, stage_id, attempt) DO NOTHING"""
            return [
                (
                    sql,
                    (
                        event.task_id,
                        p.stage_id,
                        p.attempt,
                        event.tenant_id,
                        p.category,
                        p.action,
                        p.reason,
                        p.delay_s,
                        p.tool,
                        p.model,
                        p.suggestion,
                        event.occurred_at,
                        event.id,
                    ),
                )
            ]
        if isinstance(p, RecoveryExecuted):
            sql = f"""UPDATE {table} SET executed_at = COALESCE(executed_at, $4),
                    next_attempt = COALESCE(next_attempt, $5)
                WHERE task_id = $1 AND stage_id = $2 AND attempt = $3"""
            return [
                (sql, (event.task_id, p.stage_id, p.attempt, event.occurred_at, p.next_attempt))
            ]
        return []


class ToolCallsModel:
    """Every tool.returned as a tool_calls row (never its result: that is user content), and
    the tenant's statistics of the tool for the plan's task type.

    The statistics count as the agents' own do (processors.shared.tool_usage): ``calls`` are the
    calls that ran the tool, so the reliability the API reports is the one allocation and
    tool choice work with; reused results and refusals are counted apart.
    """

    tables: tuple[str, ...] = ("tool_calls", "tool_stats")
    event_types: tuple[str, ...] = (ToolReturned.event_type,)

    def statements(self, applied: Applied, names: Mapping[str, str]) -> list[Statement]:
        event, pos = applied.event, applied.position
        p = event.payload
        if not isinstance(p, ToolReturned) or event.task_id is None:
            return []
        # One statement: the statistics move only when the call's row is new. The sums are
        # numeric so that a rebuild, which may interleave partitions in another order than
        # the projector did, adds up to the same totals to the last digit.
        sql = f"""WITH call AS (
                INSERT INTO {names["tool_calls"]} (event_id, task_id, tenant_id, stage_id,
                    attempt, tool, version, outcome, duration_s, cached, error_code, cost_usd,
                    task_type, occurred_at, partition, "offset")
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
                ON CONFLICT (event_id) DO NOTHING
                RETURNING tenant_id, tool, task_type, outcome, cached, duration_s, cost_usd,
                    occurred_at, COALESCE(error_code = '{REFUSED}', false) AS refused
            ), counted AS (
                SELECT *, NOT cached AND NOT refused AS ran FROM call
            )
            INSERT INTO {names["tool_stats"]} AS s (tenant_id, tool, task_type, calls,
                successes, failures, cached, refused, total_duration_s, total_cost_usd,
                last_called_at)
            SELECT tenant_id, tool, COALESCE(task_type, ''), ran::int,
                (ran AND outcome = 'ok')::int, (ran AND outcome = 'error')::int, cached::int,
                refused::int, CASE WHEN ran THEN duration_s ELSE 0 END,
                CASE WHEN ran THEN cost_usd ELSE 0 END, occurred_at
            FROM counted
            ON CONFLICT (tenant_id, tool, task_type) DO UPDATE SET
                calls = s.calls + EXCLUDED.calls,
                successes = s.successes + EXCLUDED.successes,
                failures = s.failures + EXCLUDED.failures,
                cached = s.cached + EXCLUDED.cached,
                refused = s.refused + EXCLUDED.refused,
                total_duration_s = s.total_duration_s + EXCLUDED.total_duration_s,
                total_cost_usd = s.total_cost_usd + EXCLUDED.total_cost_usd,
                last_called_at = GREATEST(s.last_called_at, EXCLUDED.last_called_at)"""
        return [
            (
                sql,
                (
                    event.id,
                    event.task_id,
                    event.tenant_id,
                    p.stage_id,
                    p.attempt,
                    p.tool,
                    p.version,
                    p.outcome,
                    p.duration_s,
                    p.cached,
                    p.error.code if p.error else None,
                    p.cost_usd,
                    p.task_type,
                    event.occurred_at,
                    pos.partition,
                    pos.offset,
                ),
            )
        ]
