"""Queries on the inspection read models: alerts, evaluations, quality fits and posteriors.

Alerts and evaluations are scoped by tenant, as in api._readmodels. Quality fits are
platform-wide (see projections._inspection_models) and read the same for every tenant.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from api._keyset import Conditions, Order, PageCursor, keyset_rows
from api.inspection_models import (
    Alert,
    AlertStatus,
    Evaluation,
    Prior,
    QualityFit,
    QualityGroup,
)
from events import AlertCode, AlertLevel, Position

_ALERT_COLUMNS = """alert_id, task_id, level, code, message, details, status, raised_at,
    cleared_at, clear_reason, acknowledged_at, acknowledged_by, note, partition, "offset\""""


def _alert(row: Mapping[str, Any]) -> Alert:
    fields = {k: v for k, v in row.items() if k not in ("partition", "offset")}
    return Alert(
        **fields,
        acknowledged=row["acknowledged_at"] is not None,
        position=str(Position(row["partition"], row["offset"])),
    )


async def fetch_alert(conn: asyncpg.Connection, tenant_id: str, alert_id: str) -> Alert | None:
    """The alert, or None."""
    row = await conn.fetchrow(
        f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE alert_id = $1 AND tenant_id = $2",
        alert_id,
        tenant_id,
    )
    return None if row is None else _alert(row)


ALERT_ORDERS = ("-raised_at", "raised_at")
"""The orders GET /alerts can list in: newest or oldest first."""
ALERT_DEFAULT_ORDER = Order("raised_at")


async def list_alerts(
    conn: asyncpg.Connection,
    tenant_id: str,
    *,
    level: AlertLevel | Sequence[AlertLevel] | None = None,
    code: AlertCode | Sequence[AlertCode] | None = None,
    task_id: uuid.UUID | None = None,
    status: AlertStatus | Sequence[AlertStatus] | None = None,
    raised_after: datetime | None = None,
    raised_before: datetime | None = None,
    order: Order = ALERT_DEFAULT_ORDER,
    limit: int = 50,
    after: PageCursor | None = None,
) -> tuple[list[Alert], PageCursor | None]:
    """One page of the tenant's alerts in ``order`` (keyset on raised_at, alert_id), and the
    cursor of the next page (None on the last one). Filters combine with AND; each of
    ``level``, ``code`` and ``status`` takes one value or several (any of them);
    ``raised_at`` falls in [``raised_after``, ``raised_before``)."""
    where = Conditions()
    where.add("tenant_id = {}", tenant_id)
    for column, value in (("level", level), ("code", code), ("status", status)):
        if value is not None:
            where.add(
                f"{column} = ANY({{}}::text[])", [value] if isinstance(value, str) else list(value)
            )
    if task_id is not None:
        where.add("task_id = {}", task_id)
    if raised_after is not None:
        where.add("raised_at >= {}", raised_after)
    if raised_before is not None:
        where.add("raised_at < {}", raised_before)
    rows, more = await keyset_rows(
        conn,
        table="alerts",
        columns=_ALERT_COLUMNS,
        id_column="alert_id",
        conditions=where,
        order=order,
        after=(after.at, after.id) if after is not None else None,
        limit=limit,
    )
    alerts = [_alert(row) for row in rows]
    if not more:
        return alerts, None
    return alerts, PageCursor(order, alerts[-1].raised_at, alerts[-1].alert_id)


async def fetch_evaluations(
    conn: asyncpg.Connection, tenant_id: str, task_id: uuid.UUID
) -> list[Evaluation]:
    """The task's evaluations in log order (a task's events share one partition)."""
    rows = await conn.fetch(
        """SELECT stage_id, attempt, role, tool, model, checks, prior_alpha, prior_beta,
               prior_source, quality_score, interval_low, interval_high, confidence, threshold,
               decision, reason, suggestions, occurred_at, partition, "offset"
           FROM evaluations WHERE task_id = $1 AND tenant_id = $2
           ORDER BY partition, "offset"
        """,
        task_id,
        tenant_id,
    )
    return [
        Evaluation(
            stage_id=r["stage_id"],
            attempt=r["attempt"],
            role=r["role"],
            tool=r["tool"],
            model=r["model"],
            checks=r["checks"],
            prior=Prior(alpha=r["prior_alpha"], beta=r["prior_beta"], source=r["prior_source"]),
            quality_score=r["quality_score"],
            interval=[r["interval_low"], r["interval_high"]],
            confidence=r["confidence"],
            threshold=r["threshold"],
            decision=r["decision"],
            reason=r["reason"],
            suggestions=r["suggestions"],
            occurred_at=r["occurred_at"],
            position=str(Position(r["partition"], r["offset"])),
        )
        for r in rows
    ]


async def fetch_quality(
    conn: asyncpg.Connection, tenant_id: str, *, role: str | None, tool: str | None
) -> tuple[list[QualityGroup], QualityFit | None]:
    """The latest converged posterior of each group the tenant's own evaluations touched
    (optionally of one role or tool), by role, tool and model; and the latest fit, converged
    or not.

    The fit pools every tenant's evaluations (the model learns how good roles, tools and
    models are), but a tenant sees only its own groups, and every count it reads is of its
    own evaluations: how much other tenants run is not its business.
    """
    args: list[Any] = [tenant_id]
    conditions = ["true"]
    for column, value in (("role", role), ("tool", tool)):
        if value is not None:
            args.append(value)
            conditions.append(f"q.{column} = ${len(args)}")
    rows = await conn.fetch(
        f"""SELECT q.role, q.tool, q.model, q.alpha, q.beta, q.mean, q.interval_low,
               q.interval_high, own.evaluations, q.fit_id, q.r_hat, q.ess, q.fitted_at
           FROM quality_posteriors q
           JOIN (SELECT role, tool, COALESCE(model, '') AS model, count(*) AS evaluations
                 FROM evaluations WHERE tenant_id = $1 GROUP BY 1, 2, 3) own
             ON own.role = q.role AND own.tool = q.tool AND own.model = q.model
           WHERE {" AND ".join(conditions)}
           ORDER BY q.role, q.tool, q.model""",
        *args,
    )
    groups = [
        QualityGroup(
            **{k: v for k, v in r.items() if k not in ("interval_low", "interval_high", "model")},
            model=r["model"] or None,
            interval=[r["interval_low"], r["interval_high"]],
        )
        for r in rows
    ]
    fit = await conn.fetchrow(
        """SELECT f.fit_id, f.converged, f.reason, f.r_hat_max, f.ess_min, f.seconds,
               (SELECT count(*) FROM evaluations WHERE tenant_id = $1) AS evaluations,
               (SELECT count(DISTINCT (role, tool, model)) FROM evaluations
                 WHERE tenant_id = $1) AS groups,
               f.fitted_at
           FROM quality_fits f ORDER BY f.fitted_at DESC, f.fit_id DESC LIMIT 1""",
        tenant_id,
    )
    return groups, None if fit is None else QualityFit.model_validate(dict(fit))
