"""Bodies of the inspection endpoints: alerts, a task's evaluations, quality insights.
Frozen, as in api.models."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api import _examples as ex
from events import AlertCode, AlertLevel, Decision

MAX_NOTE = 2_000
MAX_ALERT_ID = 200

AlertStatus = Literal["open", "cleared"]


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Alert(_Body):
    """One alert about a task: raised while its condition held, ``cleared`` once it stopped
    (or the task ended), and acknowledged by the first person who said so. The platform's
    own alerts (tenant ``_system``: CONSUMER_LAG, MEMORY_HIGH, ERROR_RATE, DLQ_GROWTH) have
    no task."""

    alert_id: str = Field(examples=["5f0c…:STALLED:1"])
    task_id: uuid.UUID | None = Field(description="The task; null for a platform alert.")
    level: AlertLevel
    code: AlertCode
    message: str
    details: dict[str, Any]
    status: AlertStatus
    raised_at: datetime
    cleared_at: datetime | None
    clear_reason: str | None
    acknowledged: bool
    acknowledged_at: datetime | None
    acknowledged_by: str | None = Field(description="The user who acknowledged it.")
    note: str | None = Field(description="What the acknowledging user wrote.")
    position: str = Field(description="Log position of the alert.raised event.")


class AlertPage(_Body):
    """One page of alerts, newest first; pass ``next_cursor`` back as ``cursor`` for the next."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.ALERT_PAGE))

    alerts: list[Alert]
    next_cursor: str | None


class AcknowledgeAlert(_Body):
    """An optional note for whoever looks at the alert next."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.ACKNOWLEDGE_ALERT))

    note: str | None = Field(None, max_length=MAX_NOTE)


class AlertAccepted(_Body):
    """An acknowledgement the log accepted; wait for ``position`` with ``?wait_for=``."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.ALERT_ACCEPTED))

    alert_id: str
    task_id: uuid.UUID | None
    status: Literal["acknowledging"]
    position: str = Field(examples=["2:41"])


class Check(_Body):
    """One binary observation about an output."""

    name: str
    passed: bool
    detail: str


class Prior(_Body):
    """The Beta prior the evaluation started from, and where it came from ('default' or the
    fit_id of a quality fit)."""

    alpha: float
    beta: float
    source: str


class Evaluation(_Body):
    """The verdict on one completed attempt of a stage: quality_score is the mean of the
    Beta posterior, interval its central 90% credible interval, confidence
    P(quality > threshold)."""

    stage_id: str
    attempt: int
    role: str
    tool: str
    model: str | None
    checks: list[Check]
    prior: Prior
    quality_score: float
    interval: list[float] = Field(min_length=2, max_length=2)
    confidence: float
    threshold: float
    decision: Decision
    reason: str
    suggestions: list[str]
    occurred_at: datetime
    position: str = Field(description="Log position of the evaluation.recorded event.")


class TaskEvaluations(_Body):
    """Every evaluation of one task, in log order."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.TASK_EVALUATIONS))

    task_id: uuid.UUID
    evaluations: list[Evaluation]


class QualityGroup(_Body):
    """The quality of one (role, tool, model) group as the newest converged fit that had it
    estimated: a Beta(alpha, beta) with its mean and central 90% interval."""

    role: str
    tool: str
    model: str | None
    alpha: float
    beta: float
    mean: float
    interval: list[float] = Field(min_length=2, max_length=2)
    evaluations: int = Field(description="The caller's tenant's evaluations of the group.")
    fit_id: str
    r_hat: float
    ess: float
    fitted_at: datetime


class QualityFit(_Body):
    """One fit of the hierarchical quality model and whether it converged (a fit that did
    not is recorded and never used)."""

    fit_id: str
    converged: bool
    reason: str
    r_hat_max: float
    ess_min: float
    seconds: float
    evaluations: int
    groups: int
    fitted_at: datetime


class QualityInsights(_Body):
    """The quality posteriors per role, tool and model, and the latest fit. Fits pool the
    evaluations of every tenant (they describe roles, tools and models, not a tenant's
    work), but a tenant sees only the groups its own evaluations touched, and every count
    is of its own evaluations."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.QUALITY_INSIGHTS))

    groups: list[QualityGroup]
    last_fit: QualityFit | None = Field(description="The latest fit, converged or not.")
