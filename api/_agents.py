"""Agent status, read from the heartbeats' read model (never from a worker).

Each agent worker process (an instance) publishes ``agent.heartbeat``; the projector keeps
each instance's newest in ``agent_instances`` and its per-tenant part in
``agent_instance_tenants`` (see projections/_runtime_models.py). An instance heard from
within ``STALE_AFTER_INTERVALS`` of its own heartbeat intervals is ``up``, an older one
``stale``.

What a tenant sees. Partitions, lag, instances and the time and code of the last error are
the platform's and read the same for everyone. Tasks in flight are only the caller's
tenant's. The last error's message and task are shown only when the error was in the
caller's tenant's work; any other error (another tenant's, or a record that could not be
decoded, which belongs to no tenant) shows its code and time only.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from api.errors import ApiError

KNOWN_AGENTS: tuple[str, ...] = ("super-agent", "journey-agent", "inspector-agent", "cost-guard")
"""Every agent a status can be asked of: the actor ids they publish as (each is also the
name of its worker, ``wrenchai worker <id>``)."""

STALE_AFTER_INTERVALS = 3
MAX_INSTANCES = 50
"""The most recently heard-from instances a status lists."""

AgentState = Literal["up", "stale", "not_seen"]
InstanceState = Literal["up", "stale"]


class AgentNotFound(ApiError):
    """No agent by this id; ``details.agents`` lists the ones there are."""

    code = "AGENT_NOT_FOUND"
    status = 404

    def __init__(self, agent_id: str) -> None:
        super().__init__(
            f"no agent {agent_id[:60]!r}; agents: {', '.join(KNOWN_AGENTS)}",
            agent_id=agent_id[:60],
            agents=list(KNOWN_AGENTS),
        )


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PartitionLag(_Body):
    """How far the agent's consumer group is behind on one partition of wrench.events."""

    partition: int
    committed: int | None = Field(
        description="The group's committed offset: the next record it reads after a restart."
    )
    high_watermark: int | None = Field(description="The next offset to be written.")
    lag: int | None = Field(description="high_watermark - committed; None when not read.")


class AgentError(_Body):
    """The last error an agent's worker saw. ``message`` and ``task_id`` are null unless the
    error was in the caller's tenant's work."""

    code: str = Field(examples=["JOB_FAILED", "JOB_FAILING", "EVENT_DECODE_ERROR"])
    at: datetime
    instance: str
    message: str | None
    task_id: uuid.UUID | None


class AgentInstance(_Body):
    """One worker process of the agent, as its last heartbeat described it."""

    instance: str = Field(description="hostname:pid of the worker process.")
    state: InstanceState
    started_at: datetime
    last_heartbeat_at: datetime
    interval_s: float = Field(description="How often this instance publishes a heartbeat.")
    partitions: list[int]
    lag: list[PartitionLag]
    lag_total: int
    tasks_in_flight: list[uuid.UUID] = Field(
        description="The caller's tenant's tasks with a job running here (at most 100)."
    )
    tasks_in_flight_count: int
    last_error: AgentError | None


class AgentStatus(_Body):
    """An agent across its instances. ``partitions``, ``lag`` and the tasks in flight are
    those of the instances that are up; ``last_error`` is the newest of any instance."""

    agent_id: str
    state: AgentState = Field(
        description="up: an instance is up; stale: instances were heard from, none lately; "
        "not_seen: no heartbeat from this agent (in the last day)."
    )
    checked_at: datetime
    instances_up: int
    partitions: list[int]
    lag: list[PartitionLag]
    lag_total: int = Field(description="Sum of the known lags of the instances that are up.")
    tasks_in_flight: list[uuid.UUID]
    tasks_in_flight_count: int
    last_error: AgentError | None
    instances: list[AgentInstance] = Field(description="Up instances first, then newest first.")


async def agent_status(
    conn: asyncpg.Connection, agent_id: str, tenant_id: str, now: datetime | None = None
) -> AgentStatus:
    """``agent_id``'s status as ``tenant_id`` may see it, at ``now`` (default: the clock).

    Raises AgentNotFound for an id not in ``KNOWN_AGENTS``. Works on the API's
    tenant-scoped connection (row-level security) or the owner's alike: every query names
    the tenant.
    """
    if agent_id not in KNOWN_AGENTS:
        raise AgentNotFound(agent_id)
    now = now or datetime.now(UTC)
    rows = await conn.fetch(
        """SELECT instance, started_at, heartbeat_at, interval_s, partitions, lag,
               last_error_code, last_error_at
        FROM agent_instances WHERE agent_id = $1
        ORDER BY heartbeat_at DESC, instance LIMIT $2""",
        agent_id,
        MAX_INSTANCES,
    )
    own = {
        r["instance"]: r
        for r in await conn.fetch(
            """SELECT instance, task_ids, task_count, error_code, error_message, error_task_id,
                   error_at
            FROM agent_instance_tenants WHERE agent_id = $1 AND tenant_id = $2""",
            agent_id,
            tenant_id,
        )
    }
    instances = sorted(
        (_instance(row, own.get(row["instance"]), now) for row in rows),
        key=lambda i: (i.state != "up", -i.last_heartbeat_at.timestamp(), i.instance),
    )
    return _summary(agent_id, instances, now)


def _instance(
    row: Mapping[str, Any], mine: Mapping[str, Any] | None, now: datetime
) -> AgentInstance:
    fresh = now - row["heartbeat_at"] <= timedelta(
        seconds=STALE_AFTER_INTERVALS * row["interval_s"]
    )
    lag = [PartitionLag(**entry) for entry in row["lag"]]
    error = None
    if row["last_error_code"] is not None:
        # The tenant's row holds the error's details only when the error was in its work.
        told = mine is not None and mine["error_code"] is not None
        error = AgentError(
            code=row["last_error_code"],
            at=row["last_error_at"],
            instance=row["instance"],
            message=mine["error_message"] if told and mine is not None else None,
            task_id=mine["error_task_id"] if told and mine is not None else None,
        )
    return AgentInstance(
        instance=row["instance"],
        state="up" if fresh else "stale",
        started_at=row["started_at"],
        last_heartbeat_at=row["heartbeat_at"],
        interval_s=row["interval_s"],
        partitions=sorted(row["partitions"]),
        lag=lag,
        lag_total=_total(lag),
        tasks_in_flight=list(mine["task_ids"]) if mine else [],
        tasks_in_flight_count=mine["task_count"] if mine else 0,
        last_error=error,
    )


def _summary(agent_id: str, instances: Sequence[AgentInstance], now: datetime) -> AgentStatus:
    up = [i for i in instances if i.state == "up"]
    # During a rebalance two instances may both claim a partition: the newer heartbeat wins.
    by_partition: dict[int, PartitionLag] = {}
    for instance in sorted(up, key=lambda i: i.last_heartbeat_at):
        by_partition.update({lag.partition: lag for lag in instance.lag})
    lag = [by_partition[p] for p in sorted(by_partition)]
    tasks = sorted({task for i in up for task in i.tasks_in_flight})
    errors = [i.last_error for i in instances if i.last_error is not None]
    return AgentStatus(
        agent_id=agent_id,
        state="up" if up else "stale" if instances else "not_seen",
        checked_at=now,
        instances_up=len(up),
        partitions=sorted(by_partition),
        lag=lag,
        lag_total=_total(lag),
        tasks_in_flight=tasks,
        tasks_in_flight_count=sum(i.tasks_in_flight_count for i in up),
        last_error=max(errors, key=lambda e: e.at, default=None),
        instances=list(instances),
    )


def _total(lag: Sequence[PartitionLag]) -> int:
    return sum(entry.lag or 0 for entry in lag)
