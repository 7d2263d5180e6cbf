"""Read models of the platform's own running, folded from wrench.admin: agent status.

Each agent worker process (an instance) publishes ``agent.heartbeat``; its row is what its
newest heartbeat said. Applying a heartbeat again, or an older one after a newer, changes
nothing: the instance row moves only forward in time, and its tenants' rows follow the
event that the instance row holds.

The rows are split by who may read them (see migration 0010): ``agent_instances`` holds
nothing of any tenant; ``agent_instance_tenants`` holds each tenant's part under row-level
security. An instance not heard from for ``FORGET_AFTER`` before a newer heartbeat of the
same agent is forgotten, so a table that sees a process per deploy stays small; the time is
the events', so a rebuild forgets the same instances.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from events import AgentHeartbeat
from projections._read_model_types import Applied, Statement

FORGET_AFTER = timedelta(days=1)


class AgentInstancesModel:
    """One row per (agent_id, instance), from its newest agent.heartbeat, and one row per
    tenant that heartbeat named (tasks in flight, or the last error's tenant)."""

    tables: tuple[str, ...] = ("agent_instances", "agent_instance_tenants")
    event_types: tuple[str, ...] = (AgentHeartbeat.event_type,)

    def statements(self, applied: Applied, names: Mapping[str, str]) -> list[Statement]:
        event = applied.event
        p = event.payload
        if not isinstance(p, AgentHeartbeat):
            return []
        instances, tenants = names["agent_instances"], names["agent_instance_tenants"]
        at = event.occurred_at
        error = p.last_error
        # Whether this event is the one the instance's row holds ($1, $2, $3).
        current = f"""EXISTS (SELECT 1 FROM {instances} i WHERE i.agent_id = $1
            AND i.instance = $2 AND i.event_id = $3)"""
        statements: list[Statement] = [
            (
                f"""DELETE FROM {tenants} t USING {instances} i
                WHERE t.agent_id = $1 AND i.agent_id = t.agent_id AND i.instance = t.instance
                    AND i.heartbeat_at < $2""",
                (p.agent_id, at - FORGET_AFTER),
            ),
            (
                f"DELETE FROM {instances} WHERE agent_id = $1 AND heartbeat_at < $2",
                (p.agent_id, at - FORGET_AFTER),
            ),
            (
                f"""INSERT INTO {instances} (agent_id, instance, started_at, heartbeat_at,
                    interval_s, partitions, lag, jobs_running, tasks_in_flight,
                    last_error_code, last_error_at, event_id, rss_bytes, jobs_failed,
                    decode_failures)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
                ON CONFLICT (agent_id, instance) DO UPDATE SET
                    started_at = EXCLUDED.started_at, heartbeat_at = EXCLUDED.heartbeat_at,
                    interval_s = EXCLUDED.interval_s, partitions = EXCLUDED.partitions,
                    lag = EXCLUDED.lag, jobs_running = EXCLUDED.jobs_running,
                    tasks_in_flight = EXCLUDED.tasks_in_flight,
                    last_error_code = EXCLUDED.last_error_code,
                    last_error_at = EXCLUDED.last_error_at, event_id = EXCLUDED.event_id,
                    rss_bytes = EXCLUDED.rss_bytes, jobs_failed = EXCLUDED.jobs_failed,
                    decode_failures = EXCLUDED.decode_failures
                WHERE {instances}.heartbeat_at <= EXCLUDED.heartbeat_at""",
                (
                    p.agent_id,
                    p.instance,
                    p.started_at,
                    at,
                    p.interval_s,
                    p.partitions,
                    [lag.model_dump(mode="json") for lag in p.lag],
                    p.jobs_running,
                    sum(flight.count for flight in p.tasks_in_flight.values()),
                    None if error is None else error.code,
                    None if error is None else error.at,
                    event.id,
                    p.rss_bytes,
                    p.jobs_failed,
                    p.decode_failures,
                ),
            ),
            (
                f"DELETE FROM {tenants} WHERE agent_id = $1 AND instance = $2 AND {current}",
                (p.agent_id, p.instance, event.id),
            ),
        ]
        insert = f"""INSERT INTO {tenants} (agent_id, instance, tenant_id, task_ids, task_count,
                error_code, error_message, error_task_id, error_at)
            SELECT $1, $2, $4, $5, $6, $7, $8, $9, $10
            WHERE {current}
            ON CONFLICT DO NOTHING"""
        named = set(p.tasks_in_flight)
        if error is not None and error.tenant_id is not None:
            named.add(error.tenant_id)
        for tenant in sorted(named):
            flight = p.tasks_in_flight.get(tenant)
            own = error if error is not None and error.tenant_id == tenant else None
            statements.append(
                (
                    insert,
                    (
                        p.agent_id,
                        p.instance,
                        event.id,
                        tenant,
                        [] if flight is None else flight.task_ids,
                        0 if flight is None else flight.count,
                        None if own is None else own.code,
                        None if own is None else own.message,
                        None if own is None else own.task_id,
                        None if own is None else own.at,
                    ),
                )
            )
        return statements


RUNTIME_READ_MODELS = (AgentInstancesModel(),)
"""The read models of the platform's own running, folded from wrench.admin."""
