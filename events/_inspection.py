"""Payloads of inspection: judgements of outputs, the quality model's fits, and alerts.

evaluation.recorded judges one completed attempt of a stage against its success criteria
with the quality model (a Beta posterior per role, tool and model); quality.fitted records a
fit of the hierarchical model whose posteriors become the per-evaluation priors; alerts are
raised and cleared per task and code, and acknowledged by people.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from events._catalog import event
from events._envelope import EventPayload

MAX_NAME = 200
MAX_DETAIL = 2_000

Decision = Literal["accept", "retry", "escalate"]
AlertLevel = Literal["info", "warning", "critical"]
AlertCode = Literal[
    "STALLED",
    "OVERRUN_TIME",
    "OVERRUN_TOKENS",
    "LOW_QUALITY",
    "REPEATED_FAILURES",
    "JOB_FAILING",
    "BUDGET_THRESHOLD",
    "BUDGET_EXCEEDED",
    "CONSUMER_LAG",
    "MEMORY_HIGH",
    "ERROR_RATE",
    "DLQ_GROWTH",
]


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CheckResult(_Part):
    """One binary observation about an output: a check and whether it passed."""

    name: str = Field(min_length=1, max_length=MAX_NAME)
    passed: bool
    detail: str = Field("", max_length=MAX_DETAIL)


@event("evaluation.recorded", version=1)
class EvaluationRecorded(EventPayload):
    """The verdict on one completed attempt of a stage.

    Quality follows Beta(prior_alpha, prior_beta) for the (role, tool, model) group; each
    check is a Bernoulli observation, so the posterior is Beta(prior_alpha + passed,
    prior_beta + failed). ``quality_score`` is its mean, ``interval`` its central 90%
    credible interval, ``confidence`` P(quality > threshold).
    """

    stage_id: str = Field(min_length=1, max_length=MAX_NAME)
    attempt: int = Field(ge=1)
    role: str = Field(min_length=1, max_length=MAX_NAME)
    tool: str = Field(min_length=1, max_length=MAX_NAME)
    model: str | None = None
    checks: list[CheckResult] = Field(min_length=1)
    prior_alpha: float = Field(gt=0)
    prior_beta: float = Field(gt=0)
    prior_source: str = Field(
        description="Where the prior came from: 'default' or the fit_id of a quality.fitted."
    )
    quality_score: float = Field(ge=0, le=1)
    interval: list[float] = Field(
        min_length=2, max_length=2, description="Central 90% credible interval, low and high."
    )
    confidence: float = Field(ge=0, le=1, description="P(quality > threshold).")
    threshold: float = Field(ge=0, le=1)
    decision: Decision
    reason: str = Field(max_length=MAX_DETAIL)
    suggestions: list[str] = Field(default_factory=list)


class GroupPosterior(_Part):
    """The fitted quality of one (role, tool, model) group, as a Beta for the next prior."""

    role: str
    tool: str
    model: str | None = None
    evaluations: int = Field(ge=0)
    alpha: float = Field(gt=0)
    beta: float = Field(gt=0)
    mean: float = Field(ge=0, le=1)
    interval: list[float] = Field(min_length=2, max_length=2)
    r_hat: float
    ess: float


@event("quality.fitted", version=1)
class QualityFitted(EventPayload):
    """A fit of the hierarchical quality model on the evaluation history.

    Group quality ~ Beta(mu * kappa, (1 - mu) * kappa), partially pooled across groups. A fit
    that has not converged (r_hat or effective sample size out of bounds) is recorded with
    ``converged`` false and is not used.
    """

    fit_id: str = Field(min_length=1, max_length=MAX_NAME)
    evaluations: int = Field(ge=0, description="Evaluations the fit saw.")
    groups: list[GroupPosterior]
    mu: float = Field(ge=0, le=1)
    kappa: float = Field(gt=0)
    r_hat_max: float
    ess_min: float
    converged: bool
    draws: int = Field(ge=1)
    chains: int = Field(ge=1)
    seconds: float = Field(ge=0)
    reason: str = Field("", max_length=MAX_DETAIL)


@event("alert.raised", version=1)
class AlertRaised(EventPayload):
    """Something needs attention: a task (raised once per task and code until cleared), or
    the platform itself (tenant ``_system``, no task: the ResourceMonitor's CONSUMER_LAG,
    MEMORY_HIGH, ERROR_RATE and DLQ_GROWTH, raised once per code and subject until cleared)."""

    alert_id: str = Field(min_length=1, max_length=MAX_NAME)
    level: AlertLevel
    code: AlertCode
    message: str = Field(max_length=MAX_DETAIL)
    details: dict[str, Any] = Field(default_factory=dict)


@event("alert.cleared", version=1)
class AlertCleared(EventPayload):
    """The condition behind an alert no longer holds (or its task ended)."""

    alert_id: str = Field(min_length=1, max_length=MAX_NAME)
    code: AlertCode
    reason: str = Field(max_length=MAX_DETAIL)


@event("alert.acknowledged", version=1)
class AlertAcknowledged(EventPayload):
    """A person has seen the alert."""

    alert_id: str = Field(min_length=1, max_length=MAX_NAME)
    note: str | None = Field(None, max_length=MAX_DETAIL)
