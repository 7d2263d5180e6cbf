"""Progress monitoring: which alert conditions hold for a task, and which alerts to raise or
clear. Pure functions of a per-task view folded from the log and of the current time, so a
timer can find a stalled task when no event arrives, and a replay decides the same alerts.

Conditions and their levels (a level is fixed per code; an alert is raised once per task and
code while its condition holds):

=================== ======== ==========================================================
code                level    holds while
=================== ======== ==========================================================
STALLED             warning  the task is open and no event of it came for
                             ``stall_after_s`` (a planned recovery's backoff extends
                             the quiet time it is allowed)
OVERRUN_TIME        warning  time since the plan exceeds ``overrun_factor`` * the plan's
                             estimate, the estimate taken as at least
                             :data:`MIN_ESTIMATE_S` so that a tiny estimate does not
                             alert at once
OVERRUN_TOKENS      warning  tokens used exceed ``overrun_factor`` * the plan's token
                             estimate, taken as at least :data:`MIN_ESTIMATE_TOKENS`
LOW_QUALITY         warning  the latest evaluation's quality_score is below
                             ``low_quality_score``
REPEATED_FAILURES   critical the task has at least ``repeated_failures`` failed attempts
=================== ======== ==========================================================

A plan without an estimate (0 seconds or 0 tokens) has nothing to overrun. Thresholds come
from settings; a task may override them in its constraints::

    {"alerts": {"stall_after_s": 30, "overrun_factor": 2,
                "low_quality_score": 0.5, "repeated_failures": 5}}

Each override has the bounds of its setting; an override that is unknown or out of bounds
is ignored (the API refuses such a task at submission, see :func:`parse_overrides`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from events import (
    TERMINAL_TYPES,
    Actor,
    AlertCleared,
    AlertCode,
    AlertLevel,
    AlertRaised,
    EvaluationRecorded,
    Event,
    PlanCreated,
    ProgressUpdated,
    RecoveryPlanned,
    StepFailed,
    StepStarted,
    TaskSubmitted,
    UsageRecorded,
)
from events._inspection import MAX_DETAIL
from wrenchai.settings import Settings

MIN_ESTIMATE_S = 30.0
"""The smallest time estimate OVERRUN_TIME compares with: a plan estimated at 2 s is not
late after 3 s, since start-up and the hops through the log alone take about that long."""
MIN_ESTIMATE_TOKENS = 1_000
"""The smallest token estimate OVERRUN_TOKENS compares with, for the same reason: one judge
call or one retry of a tiny prompt is not an overrun."""

LEVELS: Mapping[AlertCode, AlertLevel] = {
    "STALLED": "warning",
    "OVERRUN_TIME": "warning",
    "OVERRUN_TOKENS": "warning",
    "LOW_QUALITY": "warning",
    "REPEATED_FAILURES": "critical",
}
CODES: tuple[AlertCode, ...] = get_args(AlertCode)
"""Every alert code, in the order conditions are reported and transitions emitted."""

ALERT_TYPES = frozenset({"alert.raised", "alert.cleared", "alert.acknowledged"})
# Events that say nothing about the task's work: an alert about a stall must not end it.
_NOT_ACTIVITY = ALERT_TYPES


class AlertOverrides(BaseModel):
    """The thresholds a task may set in ``constraints.alerts``, with the settings' bounds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stall_after_s: float | None = Field(None, gt=0)
    overrun_factor: float | None = Field(None, gt=1)
    low_quality_score: float | None = Field(None, gt=0, lt=1)
    repeated_failures: int | None = Field(None, ge=1)


def parse_overrides(constraints: Mapping[str, Any] | None) -> AlertOverrides:
    """The alert thresholds of a task's constraints; ValueError names the first bad one.

    ``constraints.alerts`` absent or null means no override.
    """
    raw = (constraints or {}).get("alerts")
    if raw is None:
        return AlertOverrides()
    if not isinstance(raw, Mapping):
        raise ValueError("constraints.alerts must be an object of thresholds")
    try:
        return AlertOverrides.model_validate(dict(raw))
    except ValidationError as exc:
        first = exc.errors(include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ValueError(f"constraints.alerts.{where}: {first['msg']}") from exc


def lenient_overrides(constraints: Mapping[str, Any] | None) -> AlertOverrides:
    """Like :func:`parse_overrides`, but keeps each valid override and drops the bad ones:
    a task already on the log is watched with what can be read of its constraints."""
    raw = (constraints or {}).get("alerts")
    if not isinstance(raw, Mapping):
        return AlertOverrides()
    kept: dict[str, Any] = {}
    for name in AlertOverrides.model_fields:
        if name in raw:
            try:
                AlertOverrides.model_validate({name: raw[name]})
            except ValidationError:
                continue
            kept[name] = raw[name]
    return AlertOverrides.model_validate(kept)


@dataclass(frozen=True)
class AlertThresholds:
    """When each condition holds. :meth:`from_settings`, then :meth:`for_task`."""

    stall_after_s: float = 120.0
    overrun_factor: float = 1.5
    low_quality_score: float = 0.4
    repeated_failures: int = 3

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertThresholds:
        """The platform's thresholds (the ``WRENCH_STALL_AFTER_S`` family)."""
        return cls(
            stall_after_s=settings.stall_after_s,
            overrun_factor=settings.overrun_factor,
            low_quality_score=settings.low_quality_score,
            repeated_failures=settings.repeated_failures,
        )

    def for_task(self, overrides: AlertOverrides) -> AlertThresholds:
        """These thresholds with a task's overrides applied."""
        changed = overrides.model_dump(exclude_none=True)
        return replace(self, **changed) if changed else self


class Condition(NamedTuple):
    """An alert condition that holds now."""

    code: AlertCode
    level: AlertLevel
    message: str
    details: dict[str, Any]


@dataclass(frozen=True)
class OpenAlerts:
    """A task's alerts as the log has them: the id of each open one by code, and how many
    times each code was raised (the ``n`` of the next alert id)."""

    task_id: str
    open: Mapping[AlertCode, str] = field(default_factory=dict)
    raised: Mapping[AlertCode, int] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskWatch:
    """What monitoring knows of one task, folded from its events by :func:`evolve`."""

    task_id: str
    tenant_id: str
    overrides: AlertOverrides = field(default_factory=AlertOverrides)
    submitted_at: datetime | None = None
    planned_at: datetime | None = None
    last_event_at: datetime | None = None
    quiet_until: datetime | None = None
    closed: str | None = None
    stages_total: int = 0
    stages_done: int = 0
    estimated_s: float = 0.0
    estimated_tokens: int = 0
    estimated_cost_usd: float = 0.0
    tokens: int = 0
    cost_usd: float = 0.0
    usage_ids: frozenset[str] = frozenset()
    failed_attempts: frozenset[tuple[str, int]] = frozenset()
    retries: frozenset[tuple[str, int]] = frozenset()
    last_quality: tuple[str, int, float] | None = None
    alerts: OpenAlerts = field(default_factory=lambda: OpenAlerts(""))

    @property
    def is_open(self) -> bool:
        """Whether the task still takes work: submitted (or seen) and not ended."""
        return self.closed is None


def evolve(view: TaskWatch | None, event: Event) -> TaskWatch:
    """``view`` after ``event``. A repeated event changes nothing: attempts are sets, usage is
    counted by event id, and progress takes the larger figure."""
    if view is None:
        task_id = str(event.task_id)
        view = TaskWatch(task_id=task_id, tenant_id=event.tenant_id, alerts=OpenAlerts(task_id))
    if event.type in ALERT_TYPES:
        return replace(view, alerts=_evolve_alerts(view.alerts, event))
    if view.closed is not None:
        return view
    at = event.occurred_at
    view = replace(view, last_event_at=max(at, view.last_event_at or at))
    if event.type in TERMINAL_TYPES:
        return replace(view, closed=event.type)
    return _evolve_work(view, event)


def _evolve_work(view: TaskWatch, event: Event) -> TaskWatch:
    p = event.payload
    if isinstance(p, TaskSubmitted) and view.submitted_at is None:
        return replace(
            view, submitted_at=event.occurred_at, overrides=lenient_overrides(p.constraints)
        )
    if isinstance(p, PlanCreated) and view.planned_at is None:
        # The critical path is the plan's wall time when stages run side by side; the
        # total's seconds is the sum of the stages, used when no critical path was given.
        estimate = p.critical_path_seconds or p.total.seconds
        return replace(
            view,
            planned_at=event.occurred_at,
            stages_total=len(p.stages),
            estimated_s=estimate,
            estimated_tokens=p.total.tokens,
            estimated_cost_usd=p.total.cost_usd,
        )
    if isinstance(p, ProgressUpdated):
        return replace(
            view,
            stages_done=max(view.stages_done, p.stages_done),
            stages_total=max(view.stages_total, p.stages_total),
            tokens=max(view.tokens, p.tokens),
            cost_usd=max(view.cost_usd, p.cost_usd),
            estimated_s=view.estimated_s or p.estimated_s,
            estimated_tokens=view.estimated_tokens or p.estimated_tokens,
        )
    if isinstance(p, UsageRecorded) and str(event.id) not in view.usage_ids:
        return replace(
            view, tokens=view.tokens + p.total_tokens, usage_ids=view.usage_ids | {str(event.id)}
        )
    if isinstance(p, StepFailed):
        return replace(view, failed_attempts=view.failed_attempts | {(p.stage_id, p.attempt)})
    if isinstance(p, StepStarted) and p.attempt > 1:
        return replace(view, retries=view.retries | {(p.stage_id, p.attempt)})
    if isinstance(p, RecoveryPlanned) and p.delay_s > 0:
        # A backoff is quiet on purpose; the stall clock starts when it is over.
        until = event.occurred_at + timedelta(seconds=p.delay_s)
        return replace(view, quiet_until=max(until, view.quiet_until or until))
    if isinstance(p, EvaluationRecorded):
        return replace(view, last_quality=(p.stage_id, p.attempt, p.quality_score))
    return view


def _evolve_alerts(alerts: OpenAlerts, event: Event) -> OpenAlerts:
    p = event.payload
    if isinstance(p, AlertRaised) and p.alert_id not in alerts.open.values():
        return replace(
            alerts,
            open={**alerts.open, p.code: p.alert_id},
            raised={**alerts.raised, p.code: max(alerts.raised.get(p.code, 0), _n(p.alert_id))},
        )
    if isinstance(p, AlertCleared) and alerts.open.get(p.code) == p.alert_id:
        return replace(alerts, open={k: v for k, v in alerts.open.items() if k != p.code})
    return alerts


def _n(alert_id: str) -> int:
    """The raise count an alert id ends with (``TASK:CODE:N``); 1 for a foreign id."""
    tail = alert_id.rpartition(":")[2]
    return int(tail) if tail.isdigit() else 1


# -- conditions ------------------------------------------------------------------------------
def monitor_progress(
    view: TaskWatch, now: datetime, thresholds: AlertThresholds
) -> list[Condition]:
    """The alert conditions that hold for the task at ``now``, in :data:`CODES` order.

    ``thresholds`` are the platform's; the task's own overrides are applied here. A closed
    task has no conditions.
    """
    if not view.is_open:
        return []
    limits = thresholds.for_task(view.overrides)
    found = [
        _stalled(view, now, limits),
        _overrun_time(view, now, limits),
        _overrun_tokens(view, limits),
        _low_quality(view, limits),
        _repeated_failures(view, limits),
    ]
    return [c for c in found if c is not None]


def _condition(code: AlertCode, message: str, **details: Any) -> Condition:
    return Condition(code, LEVELS[code], message[:MAX_DETAIL], details)


def _stalled(view: TaskWatch, now: datetime, limits: AlertThresholds) -> Condition | None:
    if view.last_event_at is None:
        return None
    since = max(view.last_event_at, view.quiet_until or view.last_event_at)
    quiet = (now - since).total_seconds()
    if quiet < limits.stall_after_s:
        return None
    return _condition(
        "STALLED",
        f"no event for {quiet:.0f} s (limit {limits.stall_after_s:g} s)",
        seconds_since_last_event=round(quiet, 3),
        stall_after_s=limits.stall_after_s,
        last_event_at=view.last_event_at.isoformat(),
        stages_done=view.stages_done,
        stages_total=view.stages_total,
    )


def _overrun_time(view: TaskWatch, now: datetime, limits: AlertThresholds) -> Condition | None:
    if view.planned_at is None or view.estimated_s <= 0:
        return None
    elapsed = (now - view.planned_at).total_seconds()
    limit = limits.overrun_factor * max(view.estimated_s, MIN_ESTIMATE_S)
    if elapsed <= limit:
        return None
    return _condition(
        "OVERRUN_TIME",
        f"running for {elapsed:.0f} s against an estimate of {view.estimated_s:g} s",
        elapsed_s=round(elapsed, 3),
        estimated_s=view.estimated_s,
        limit_s=limit,
        overrun_factor=limits.overrun_factor,
        stages_done=view.stages_done,
        stages_total=view.stages_total,
    )


def _overrun_tokens(view: TaskWatch, limits: AlertThresholds) -> Condition | None:
    if view.estimated_tokens <= 0:
        return None
    limit = limits.overrun_factor * max(view.estimated_tokens, MIN_ESTIMATE_TOKENS)
    if view.tokens <= limit:
        return None
    return _condition(
        "OVERRUN_TOKENS",
        f"{view.tokens} tokens used against an estimate of {view.estimated_tokens}",
        tokens=view.tokens,
        estimated_tokens=view.estimated_tokens,
        limit_tokens=limit,
        overrun_factor=limits.overrun_factor,
        cost_usd=view.cost_usd,
        estimated_cost_usd=view.estimated_cost_usd,
    )


def _low_quality(view: TaskWatch, limits: AlertThresholds) -> Condition | None:
    if view.last_quality is None or view.last_quality[2] >= limits.low_quality_score:
        return None
    stage_id, attempt, score = view.last_quality
    return _condition(
        "LOW_QUALITY",
        f"stage {stage_id} attempt {attempt} scored {score:.2f} "
        f"(below {limits.low_quality_score:g})",
        stage_id=stage_id,
        attempt=attempt,
        quality_score=score,
        low_quality_score=limits.low_quality_score,
    )


def _repeated_failures(view: TaskWatch, limits: AlertThresholds) -> Condition | None:
    failed = len(view.failed_attempts)
    if failed < limits.repeated_failures:
        return None
    return _condition(
        "REPEATED_FAILURES",
        f"{failed} failed attempts (limit {limits.repeated_failures})",
        failed_attempts=failed,
        retries=len(view.retries),
        repeated_failures=limits.repeated_failures,
        stages=sorted({stage for stage, _ in view.failed_attempts}),
    )


# -- transitions -----------------------------------------------------------------------------
def alert_id(task_id: str, code: AlertCode, n: int) -> str:
    """The id of the ``n``-th alert of ``code`` for a task: the same on every replay."""
    return f"{task_id}:{code}:{n}"


def alert_transitions(
    open_alerts: OpenAlerts, conditions: Sequence[Condition], task_closed: bool
) -> list[AlertRaised | AlertCleared]:
    """The alert events to emit: alert.raised for a condition with no open alert of its
    code, alert.cleared for an open alert whose condition no longer holds, and for every
    open alert once the task has ended. Clears come before raises, each in code order."""
    holding = {} if task_closed else {c.code: c for c in conditions}
    reason = "the task ended" if task_closed else "the condition no longer holds"
    out: list[AlertRaised | AlertCleared] = [
        AlertCleared(alert_id=open_alerts.open[code], code=code, reason=reason)
        for code in CODES
        if code in open_alerts.open and code not in holding
    ]
    for code in CODES:
        if code in holding and code not in open_alerts.open:
            c = holding[code]
            n = open_alerts.raised.get(code, 0) + 1
            out.append(
                AlertRaised(
                    alert_id=alert_id(open_alerts.task_id, code, n),
                    level=c.level,
                    code=code,
                    message=c.message,
                    details=c.details,
                )
            )
    return out


def watch(
    view: TaskWatch, now: datetime, thresholds: AlertThresholds
) -> list[AlertRaised | AlertCleared]:
    """The alert events due for the task at ``now``: conditions, then transitions."""
    return alert_transitions(
        view.alerts, monitor_progress(view, now, thresholds), task_closed=not view.is_open
    )


def alert_event(
    cause: Event, payload: AlertRaised | AlertCleared, now: datetime, actor: Actor
) -> Event:
    """``payload`` as an event derived from ``cause`` (the task's latest event), with an id
    from the alert id and the transition, so emitting it again yields the same event."""
    kind = "raised" if isinstance(payload, AlertRaised) else "cleared"
    return cause.derive(
        payload, step=f"alert:{payload.alert_id}:{kind}", actor=actor, occurred_at=now
    )
