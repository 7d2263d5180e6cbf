"""The ResourceMonitor's decisions: which platform alerts to raise and clear, from the
figures of one check and the thresholds. Plain functions and frozen values; the loop around
them (:mod:`processors.monitor.loop`) reads the figures and publishes what they decide.

=============== ======== ============================================================
code            subject  figure
=============== ======== ============================================================
CONSUMER_LAG    group    records the consumer group is behind, summed over partitions
MEMORY_HIGH     process  a worker process's resident memory, MiB
ERROR_RATE      process  a worker process's failed jobs and undecodable records per
                         minute, averaged over the window
DLQ_GROWTH      topic    records added to wrench.dlq within the window
=============== ======== ============================================================

An alert is raised once when its figure goes above the threshold, and cleared once when the
figure is back at or below ``clear_ratio`` times the threshold (hysteresis: a figure that
hovers at the line raises one alert, not one per check). It is also cleared when its subject
is no longer reported (the process stopped, the group has no live worker). A figure that
could not be read at a check changes nothing.

Ids are deterministic: the ``n``-th alert of a code and subject is
``platform:CODE:subject:n``, and its events' ids are derived from that id, so two monitors,
or one restarted before the projector caught up, publish the same events, which every
consumer drops as repeats.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from events import SYSTEM_TENANT, Actor, AlertCleared, AlertCode, AlertRaised, Event
from events._inspection import MAX_NAME
from wrenchai.settings import Settings

MONITOR_CODES: tuple[AlertCode, ...] = ("CONSUMER_LAG", "MEMORY_HIGH", "ERROR_RATE", "DLQ_GROWTH")
"""The codes the ResourceMonitor raises, in the order it reports them."""
ACTOR = Actor(kind="system", id="resource-monitor")
_IDS = uuid.UUID("5b1f2a9c-7d0e-4c63-9e85-2f4a6b8c1d37")
MIB = 1024 * 1024


@dataclass(frozen=True)
class Limit:
    """Raise above ``raise_above``; clear at or below ``clear_at`` (never above the raise)."""

    raise_above: float
    clear_at: float

    @classmethod
    def of(cls, threshold: float, clear_ratio: float) -> Limit:
        return cls(threshold, threshold * clear_ratio)


def limits_from_settings(settings: Settings) -> dict[AlertCode, Limit]:
    """Each code's limit from the WRENCH_MONITOR_* settings."""
    ratio = settings.monitor_clear_ratio
    return {
        "CONSUMER_LAG": Limit.of(settings.monitor_lag_records, ratio),
        "MEMORY_HIGH": Limit.of(settings.monitor_memory_mb, ratio),
        "ERROR_RATE": Limit.of(settings.monitor_error_rate_per_min, ratio),
        "DLQ_GROWTH": Limit.of(settings.monitor_dlq_growth, ratio),
    }


@dataclass(frozen=True)
class Reading:
    """One figure about one subject at one check; ``value`` None when it could not be read.
    ``details`` go into the alert (no user content: ids, offsets, counts)."""

    code: AlertCode
    subject: str
    value: float | None
    details: Mapping[str, Any] = field(default_factory=dict)


Key = tuple[AlertCode, str]


@dataclass(frozen=True)
class MonitorState:
    """The open alerts by (code, subject), and how many alerts each has had (open or not)."""

    open: Mapping[Key, str] = field(default_factory=dict)
    raised: Mapping[Key, int] = field(default_factory=dict)


def alert_id(code: AlertCode, subject: str, n: int) -> str:
    """The id of the ``n``-th alert of ``code`` about ``subject``; a subject too long for
    an alert id is replaced by its hash."""
    found = f"platform:{code}:{subject}:{n}"
    if len(found) <= MAX_NAME:
        return found
    return f"platform:{code}:{hashlib.sha256(subject.encode()).hexdigest()[:32]}:{n}"


def decide(
    state: MonitorState,
    readings: Mapping[AlertCode, Sequence[Reading]],
    limits: Mapping[AlertCode, Limit],
) -> tuple[MonitorState, list[AlertRaised | AlertCleared]]:
    """The state after one check and the alert events it calls for: clears first, then
    raises, each in code then subject order. ``readings`` holds, for each code that was
    read, every subject there is: an open alert of such a code whose subject is missing is
    cleared. A code missing from ``readings`` was not read, and its alerts stay as they are.
    """
    opened, raised = dict(state.open), dict(state.raised)
    clears: list[AlertRaised | AlertCleared] = []
    raises: list[AlertRaised | AlertCleared] = []
    for code in MONITOR_CODES:
        if code not in readings or code not in limits:
            continue
        limit = limits[code]
        seen = {r.subject: r for r in readings[code]}
        for (kind, subject), open_id in sorted(state.open.items()):
            if kind == code and subject not in seen:
                clears.append(_cleared(open_id, code, "no longer reported"))
                del opened[(code, subject)]
        for subject, reading in sorted(seen.items()):
            key, value = (code, subject), reading.value
            if value is None:
                continue
            if key in opened and value <= limit.clear_at:
                reason = f"back at {value:g} (clears at or below {limit.clear_at:g})"
                clears.append(_cleared(opened.pop(key), code, reason))
            elif key not in opened and value > limit.raise_above:
                n = raised.get(key, 0) + 1
                raised[key] = n
                opened[key] = alert_id(code, subject, n)
                raises.append(_raised(opened[key], reading, limit, n))
    return MonitorState(opened, raised), clears + raises


def _cleared(open_id: str, code: AlertCode, reason: str) -> AlertCleared:
    return AlertCleared(alert_id=open_id, code=code, reason=reason)


_WHAT: Mapping[AlertCode, str] = {
    "CONSUMER_LAG": "consumer group {subject} is {value:g} records behind (limit {limit:g})",
    "MEMORY_HIGH": "process {subject} holds {value:.0f} MiB resident (limit {limit:g} MiB)",
    "ERROR_RATE": "process {subject} fails {value:.2f} times a minute (limit {limit:g})",
    "DLQ_GROWTH": "{subject} grew by {value:g} records within the window (limit {limit:g})",
}


def _raised(identifier: str, reading: Reading, limit: Limit, n: int) -> AlertRaised:
    assert reading.value is not None
    message = _WHAT[reading.code].format(
        subject=reading.subject, value=reading.value, limit=limit.raise_above
    )
    return AlertRaised(
        alert_id=identifier,
        level="warning",
        code=reading.code,
        message=message,
        details={
            **reading.details,
            "subject": reading.subject,
            "episode": n,
            "value": reading.value,
            "threshold": limit.raise_above,
            "clears_at": limit.clear_at,
        },
    )


def alert_events(transitions: Sequence[AlertRaised | AlertCleared], now: datetime) -> list[Event]:
    """The events of ``transitions``: tenant ``_system``, no task (so every platform alert
    is on one partition, in order), ids derived from the alert id and the transition."""
    return [
        Event.new(
            t,
            tenant_id=SYSTEM_TENANT,
            actor=ACTOR,
            event_id=uuid.uuid5(
                _IDS, f"{t.alert_id}:{'raised' if isinstance(t, AlertRaised) else 'cleared'}"
            ),
            occurred_at=now,
        )
        for t in transitions
    ]


@dataclass(frozen=True)
class Window:
    """Samples of a counter that only grows (or restarts from zero) over time, kept for
    ``seconds``: its increase is the sum of the rises between samples, so a restart of the
    counter counts what came after it, not a drop."""

    seconds: float
    samples: tuple[tuple[float, float], ...] = ()

    def add(self, at: float, value: float) -> Window:
        """The window with the sample ``value`` at ``at`` (seconds), older samples dropped
        (one is kept from before the window, so the window's first rise counts)."""
        kept = (*self.samples, (at, value))
        start = at - self.seconds
        while len(kept) > 1 and kept[1][0] <= start:
            kept = kept[1:]
        return Window(self.seconds, kept)

    @property
    def increase(self) -> float:
        """How much the counter rose within the window."""
        pairs = zip(self.samples, self.samples[1:], strict=False)
        # A counter that went down restarted from zero: all of its new value is new.
        return sum(
            after - before if after >= before else after for (_, before), (_, after) in pairs
        )

    def per_minute(self) -> float:
        """The increase per minute, over the whole window (a rate that a burst just after a
        start does not inflate)."""
        return self.increase * 60.0 / self.seconds


def restore(alerts: Collection[tuple[AlertCode, str, int, bool]]) -> MonitorState:
    """The state the alerts read model holds: ``(code, subject, episode, open)`` for each of
    the monitor's alerts there."""
    opened: dict[Key, str] = {}
    raised: dict[Key, int] = {}
    for code, subject, episode, is_open in alerts:
        key = (code, subject)
        raised[key] = max(raised.get(key, 0), episode)
        if is_open:
            opened[key] = alert_id(code, subject, episode)
    return MonitorState(opened, raised)
