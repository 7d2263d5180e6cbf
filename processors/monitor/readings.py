"""Where the ResourceMonitor's figures come from: the agent status read model (each worker
process's newest heartbeat), the broker's high watermarks, and the alerts read model for
what the monitor raised before it (re)started.

The row-to-figure functions are plain; the readers at the bottom talk to Postgres and the
broker. High watermarks come from fetch responses (:class:`LogPositions`), never from
ListOffsets, which under-reports on the embedded broker.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson

from events import SYSTEM_TENANT, AlertCode
from processors.monitor.core import MIB, MONITOR_CODES, Reading, Window
from processors.runtime._heartbeat import LogPositions
from wrenchai.settings import Settings

STALE_AFTER_INTERVALS = 3
"""A process whose newest heartbeat is older than this many of its intervals is not live
(the API calls it stale after as many): its figures no longer count."""

PROJECTOR_GROUPS: tuple[tuple[str, str], ...] = (
    ("events", "projector"),
    ("admin", "projector-admin"),
)
"""(topic, group) of the projector's streams (projections._streams.STREAMS): their lag is
measured here, since the projector publishes no heartbeat."""


@dataclass(frozen=True)
class Instance:
    """One worker process as its newest heartbeat described it."""

    agent_id: str
    instance: str
    heartbeat_at: datetime
    interval_s: float
    lag: Mapping[int, int | None]
    rss_bytes: int | None
    failures: int

    @property
    def subject(self) -> str:
        """How the process is named in an alert: ``agent_id@hostname:pid``."""
        return f"{self.agent_id}@{self.instance}"

    def live(self, now: datetime) -> bool:
        """Whether the process was heard from within its last few intervals."""
        return now - self.heartbeat_at <= timedelta(seconds=STALE_AFTER_INTERVALS * self.interval_s)


def lag_readings(instances: Iterable[Instance], settings: Settings) -> list[Reading]:
    """A worker kind's group lag: per partition the lag its newest live heartbeat gave,
    summed; None when no live process knew any."""
    newest: dict[str, dict[int, tuple[datetime, int | None]]] = {}
    for inst in instances:
        parts = newest.setdefault(inst.agent_id, {})
        for partition, lag in inst.lag.items():
            if partition not in parts or parts[partition][0] < inst.heartbeat_at:
                parts[partition] = (inst.heartbeat_at, lag)
    out = []
    for agent_id, parts in sorted(newest.items()):
        known = {p: lag for p, (_, lag) in sorted(parts.items()) if lag is not None}
        out.append(
            Reading(
                "CONSUMER_LAG",
                settings.group(agent_id),
                float(sum(known.values())) if known else None,
                {"agent_id": agent_id, "partitions": {str(p): n for p, n in known.items()}},
            )
        )
    return out


def memory_readings(instances: Iterable[Instance]) -> list[Reading]:
    """Each live worker process's resident memory in MiB (None when it did not say)."""
    return [
        Reading(
            "MEMORY_HIGH",
            inst.subject,
            None if inst.rss_bytes is None else inst.rss_bytes / MIB,
            {"agent_id": inst.agent_id, "instance": inst.instance, "rss_bytes": inst.rss_bytes},
        )
        for inst in instances
    ]


def error_readings(
    instances: Iterable[Instance], windows: Mapping[str, Window], window_s: float
) -> tuple[list[Reading], dict[str, Window]]:
    """Each live worker process's failures per minute over the window, and the windows
    with this check's samples (those of processes no longer live are dropped)."""
    kept: dict[str, Window] = {}
    out = []
    for inst in instances:
        window = windows.get(inst.subject, Window(window_s))
        window = kept[inst.subject] = window.add(inst.heartbeat_at.timestamp(), inst.failures)
        out.append(
            Reading(
                "ERROR_RATE",
                inst.subject,
                window.per_minute(),
                {
                    "agent_id": inst.agent_id,
                    "instance": inst.instance,
                    "failures_in_window": window.increase,
                    "window_s": window_s,
                },
            )
        )
    return out, kept


# -- readers ------------------------------------------------------------------------------
async def read_instances(conn: asyncpg.Connection) -> list[Instance]:
    """Every process in agent_instances (live or not)."""
    rows = await conn.fetch(
        """SELECT agent_id, instance, heartbeat_at, interval_s, lag, rss_bytes, jobs_failed,
            decode_failures FROM agent_instances ORDER BY agent_id, instance"""
    )
    return [
        Instance(
            agent_id=row["agent_id"],
            instance=row["instance"],
            heartbeat_at=row["heartbeat_at"],
            interval_s=row["interval_s"],
            lag={int(p["partition"]): p.get("lag") for p in _json(row["lag"])},
            rss_bytes=row["rss_bytes"],
            failures=row["jobs_failed"] + row["decode_failures"],
        )
        for row in rows
    ]


def _json(value: Any) -> Any:
    # asyncpg hands jsonb over as text unless the connection registered a codec for it.
    return orjson.loads(value) if isinstance(value, str | bytes) else value


async def read_alerts(conn: asyncpg.Connection) -> list[tuple[AlertCode, str, int, bool]]:
    """The monitor's alerts in the alerts read model: (code, subject, episode, open)."""
    rows = await conn.fetch(
        """SELECT code, details->>'subject' AS subject, (details->>'episode')::int AS episode,
            status = 'open' AS is_open
        FROM alerts
        WHERE tenant_id = $1 AND task_id IS NULL AND code = ANY($2::text[])
            AND details ? 'subject' AND details ? 'episode'""",
        SYSTEM_TENANT,
        list(MONITOR_CODES),
    )
    return [(row["code"], row["subject"], row["episode"], row["is_open"]) for row in rows]


class Marks:
    """High watermarks and committed offsets of the log, read from the broker with one
    consumer per (topic, group) that joins no group."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._positions: dict[tuple[str, str], LogPositions] = {}

    def _of(self, topic: str, group: str) -> LogPositions:
        key = (topic, group)
        if key not in self._positions:
            self._positions[key] = LogPositions(
                self.settings, self.settings.topic(topic), self.settings.group(group)
            )
        return self._positions[key]

    async def projector_lag(self) -> list[Reading]:
        """The lag of each of the projector's groups: every partition's high watermark minus
        the offset the projector committed (it mirrors to Kafka what it stores in Postgres)."""
        out = []
        partitions = range(self.settings.partitions)
        for topic, group in PROJECTOR_GROUPS:
            lags = await self._of(topic, group).lag(partitions)
            known = {p.partition: p.lag for p in lags if p.lag is not None}
            out.append(
                Reading(
                    "CONSUMER_LAG",
                    self.settings.group(group),
                    float(sum(known.values())) if len(known) == len(lags) else None,
                    {"agent_id": group, "partitions": {str(p): n for p, n in known.items()}},
                )
            )
        return out

    async def dlq_records(self) -> int | None:
        """How many records wrench.dlq holds (the sum of its high watermarks); None when
        the broker did not say for every partition."""
        lags = await self._of("dlq", "resource-monitor").lag(range(self.settings.partitions))
        marks = [p.high_watermark for p in lags]
        return None if any(m is None for m in marks) else sum(m or 0 for m in marks)

    async def close(self) -> None:
        """Disconnect every consumer."""
        for positions in self._positions.values():
            await positions.close()


def dlq_reading(topic: str, window: Window, records: int | None) -> Reading:
    """DLQ growth over the window, from the window's samples of the DLQ's record count."""
    return Reading(
        "DLQ_GROWTH",
        topic,
        window.increase if records is not None else None,
        {"records": records, "window_s": window.seconds},
    )


def live(instances: Sequence[Instance], now: datetime) -> list[Instance]:
    """The processes heard from recently."""
    return [inst for inst in instances if inst.live(now)]
