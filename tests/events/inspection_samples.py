"""Inspection events shared by the processors, projections and API tests: evaluations of the
two-stage plan of planning_samples, alerts raised, cleared and acknowledged, and fits of the
quality model (platform-wide events with no task).

Task events are derived from the submitted one (deterministic ids) at a given number of
seconds after it, so tests can name each event's time.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from events import (
    Actor,
    AlertAcknowledged,
    AlertCleared,
    AlertCode,
    AlertLevel,
    AlertRaised,
    CheckResult,
    Decision,
    EvaluationRecorded,
    Event,
    GroupPosterior,
    QualityFitted,
)

INSPECTOR = Actor(kind="agent", id="inspector-agent")
PLATFORM_TENANT = "wrenchai"
FIT_TIME = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def _at(cause: Event, seconds: float) -> datetime:
    return cause.occurred_at + timedelta(seconds=seconds)


def evaluation(
    submitted: Event,
    stage_id: str = "search",
    attempt: int = 1,
    *,
    passed: int = 3,
    failed: int = 0,
    decision: Decision = "accept",
    seconds: float = 10.0,
    role: str = "researcher",
    tool: str = "web.search",
    model: str | None = None,
    prior_source: str = "default",
) -> Event:
    """evaluation.recorded for an attempt with ``passed`` and ``failed`` checks, scored as
    the conjugate update of a Beta(1, 1) prior."""
    checks = [CheckResult(name=f"check-{i}", passed=True) for i in range(passed)] + [
        CheckResult(name=f"check-{passed + i}", passed=False, detail="fewer than three sources")
        for i in range(failed)
    ]
    alpha, beta = 1 + passed, 1 + failed
    mean = alpha / (alpha + beta)
    payload = EvaluationRecorded(
        stage_id=stage_id,
        attempt=attempt,
        role=role,
        tool=tool,
        model=model,
        checks=checks,
        prior_alpha=1.0,
        prior_beta=1.0,
        prior_source=prior_source,
        quality_score=round(mean, 6),
        interval=[round(max(mean - 0.3, 0.0), 6), round(min(mean + 0.2, 1.0), 6)],
        confidence=0.9 if decision == "accept" else 0.2,
        threshold=0.6,
        decision=decision,
        reason=f"{passed} of {passed + failed} checks passed",
        suggestions=[] if decision == "accept" else ["cite at least three sources"],
    )
    return submitted.derive(
        payload,
        step=f"evaluation:{stage_id}:{attempt}",
        actor=INSPECTOR,
        occurred_at=_at(submitted, seconds),
    )


def raised(
    submitted: Event,
    code: AlertCode = "STALLED",
    n: int = 1,
    *,
    level: AlertLevel = "warning",
    seconds: float = 20.0,
) -> Event:
    """alert.raised: the ``n``-th alert of ``code`` for the task."""
    alert_id = f"{submitted.task_id}:{code}:{n}"
    payload = AlertRaised(
        alert_id=alert_id,
        level=level,
        code=code,
        message=f"{code.lower()} for the sample task",
        details={"seconds_since_last_event": 130.0, "stall_after_s": 120.0},
    )
    return submitted.derive(
        payload,
        step=f"alert:{alert_id}:raised",
        actor=INSPECTOR,
        occurred_at=_at(submitted, seconds),
    )


def cleared(raise_event: Event, *, seconds: float = 10.0) -> Event:
    """alert.cleared for a raised alert, ``seconds`` after it."""
    p = raise_event.payload
    assert isinstance(p, AlertRaised)
    payload = AlertCleared(alert_id=p.alert_id, code=p.code, reason="the condition no longer holds")
    return raise_event.derive(
        payload,
        step="cleared",
        actor=INSPECTOR,
        occurred_at=raise_event.occurred_at + timedelta(seconds=seconds),
    )


def acknowledged(
    raise_event: Event, *, note: str | None = "looking into it", user: str = "bob"
) -> Event:
    """alert.acknowledged of a raised alert by a user, as the API publishes it."""
    p = raise_event.payload
    assert isinstance(p, AlertRaised)
    return Event.new(
        AlertAcknowledged(alert_id=p.alert_id, note=note),
        tenant_id=raise_event.tenant_id,
        actor=Actor(kind="user", id=user),
        task_id=raise_event.task_id,
        occurred_at=raise_event.occurred_at + timedelta(seconds=5),
    )


def group(
    role: str = "researcher",
    tool: str = "web.search",
    model: str | None = None,
    *,
    alpha: float = 8.0,
    beta: float = 2.0,
    evaluations: int = 12,
) -> GroupPosterior:
    """One group's fitted posterior."""
    mean = alpha / (alpha + beta)
    return GroupPosterior(
        role=role,
        tool=tool,
        model=model,
        evaluations=evaluations,
        alpha=alpha,
        beta=beta,
        mean=mean,
        interval=[round(mean - 0.2, 6), round(min(mean + 0.1, 1.0), 6)],
        r_hat=1.004,
        ess=420.0,
    )


def fitted(
    fit_id: str,
    groups: list[GroupPosterior],
    *,
    converged: bool = True,
    minutes: float = 0.0,
    evaluations: int = 24,
) -> Event:
    """quality.fitted as the InspectorAgent publishes it: no task, the platform's tenant, and
    an id from the fit id (the same on every partition it is copied to)."""
    payload = QualityFitted(
        fit_id=fit_id,
        evaluations=evaluations,
        groups=groups,
        mu=0.7,
        kappa=12.0,
        r_hat_max=1.004 if converged else 1.31,
        ess_min=420.0 if converged else 35.0,
        converged=converged,
        draws=500,
        chains=2,
        seconds=4.5,
        reason="" if converged else "r_hat 1.31 > 1.01: not used",
    )
    return Event.new(
        payload,
        tenant_id=PLATFORM_TENANT,
        actor=INSPECTOR,
        event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"wrench:quality.fitted:{fit_id}"),
        occurred_at=FIT_TIME + timedelta(minutes=minutes),
    )
