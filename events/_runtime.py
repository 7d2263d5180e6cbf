"""Payloads of the platform's own running, on ``wrench.admin`` with tenant ``_system``.

An agent worker says how it is doing by publishing ``agent.heartbeat``; the API reads the
read model folded from them and never asks a worker directly. These events are not
encrypted, so they carry no user content: ids, offsets, counts and error codes, and
messages the worker writes itself (never an exception's text or a payload's).
"""

from __future__ import annotations

import uuid

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from events._catalog import event
from events._envelope import EventPayload

AGENT_ID_PATTERN = r"^[a-z][a-z0-9-]{0,62}$"
MAX_TASKS_PER_TENANT = 100
"""How many task ids of one tenant a heartbeat lists; ``count`` says how many there were."""
MAX_PARTITIONS = 1_024


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PartitionLag(_Part):
    """How far the agent's consumer group is behind the end of one partition of
    wrench.events. ``committed`` is the group's committed offset (the next record it reads
    after a restart), ``high_watermark`` the next offset to be written, from a fetch
    response; ``lag`` is their difference. Any of them is None when it could not be read."""

    partition: int = Field(ge=0)
    committed: int | None = Field(None, ge=0, description="The group's committed offset.")
    high_watermark: int | None = Field(None, ge=0, description="The next offset to be written.")
    lag: int | None = Field(None, ge=0, description="high_watermark - committed (0 if none).")


class TasksInFlight(_Part):
    """One tenant's tasks that have a job running in the worker: ``count`` of them, and the
    first 100 of their ids (``MAX_TASKS_PER_TENANT``), in id order."""

    count: int = Field(ge=0)
    task_ids: list[uuid.UUID] = Field(default_factory=list, max_length=MAX_TASKS_PER_TENANT)

    @model_validator(mode="after")
    def _ids_within_count(self) -> TasksInFlight:
        if len(self.task_ids) > self.count:
            raise ValueError("task_ids lists more tasks than count says are in flight")
        return self


class AgentError(_Part):
    """The last error the worker's shell saw: a job that failed (``task_id`` and
    ``tenant_id`` are its task's) or a record that could not be decoded (sent to
    wrench.dlq; no tenant is known). ``message`` is written by the worker from the error's
    kind, never copied from the error, so it holds no user content."""

    code: str = Field(min_length=1, max_length=100)
    message: str = Field(max_length=500)
    task_id: uuid.UUID | None = None
    tenant_id: str | None = Field(None, min_length=1, max_length=63)
    at: AwareDatetime


@event("agent.heartbeat", version=1)
class AgentHeartbeat(EventPayload):
    """An agent worker process (``instance``) is alive: the wrench.events partitions it
    holds, its consumer group's lag on each, the tasks it has jobs running for (per
    tenant), the last error it saw, its resident memory and how many jobs and records
    failed since it started. Published every ``interval_s`` seconds
    (WRENCH_HEARTBEAT_INTERVAL_S), at start, and when its partitions change."""

    agent_id: str = Field(
        pattern=AGENT_ID_PATTERN,
        description="The actor id the agent publishes its events as (super-agent, ...).",
    )
    instance: str = Field(
        min_length=1, max_length=200, description="The worker process: hostname:pid."
    )
    started_at: AwareDatetime = Field(description="When the process started.")
    interval_s: float = Field(gt=0, le=3_600, description="Seconds to the next heartbeat.")
    partitions: list[int] = Field(
        default_factory=list,
        max_length=MAX_PARTITIONS,
        description="The wrench.events partitions the process holds.",
    )
    lag: list[PartitionLag] = Field(
        default_factory=list, max_length=MAX_PARTITIONS, description="One per partition held."
    )
    jobs_running: int = Field(0, ge=0, description="Jobs (LLM or tool calls) running now.")
    # No bound of its own: no more tenants than jobs running (WRENCH_AGENT_CONCURRENCY).
    tasks_in_flight: dict[str, TasksInFlight] = Field(
        default_factory=dict, description="tenant_id: that tenant's tasks with a job running."
    )
    last_error: AgentError | None = Field(None, description="The last error; null if none.")
    rss_bytes: int | None = Field(
        None, ge=0, description="The process's resident memory; null where it cannot be read."
    )
    jobs_failed: int = Field(0, ge=0, description="Job failures since the process started.")
    decode_failures: int = Field(
        0, ge=0, description="Records sent to the DLQ since the process started."
    )


RUNTIME_TYPES = frozenset({"agent.heartbeat"})
"""The runtime event types; like identity events they belong on wrench.admin."""
