"""Queries on the inspection read models: alerts, evaluations, quality fits and posteriors.

Alerts and evaluations are scoped by tenant, as in api._readmodels. Quality fits are
platform-wide (see projections._inspection_models) and read the same for every tenant.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from api._readmodels import keyset_page
from api.inspection_models import (
    Alert,
    AlertStatus,
    Evaluation,
    Prior,
    QualityFit,
    QualityGroup,
)
from events import AlertLevel, Position

_ALERT_COLUMNS = """alert_id, task_id, level, code, message, details, status, raised_at,
    cleared_at, clear_reason, acknowledged_at, acknowledged_by, note, partition, "offset\""""


@dataclass(frozen=True)
class AlertCursor:
    """Where a page of alerts ended: the last row's (raised_at, alert_id) listing key."""

    raised_at: datetime
    alert_id: str

    def encode(self) -> str:
        """The opaque form handed to clients: base64url of a small JSON array."""
        raw = orjson.dumps([self.raised_at.isoformat(), self.alert_id])
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> AlertCursor:
        """Read a cursor this API issued; ValueError for anything else."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            raised_at, alert_id = orjson.loads(raw)
            cursor = cls(datetime.fromisoformat(raised_at), str(alert_id))
        except (binascii.Error, orjson.JSONDecodeError, TypeError, ValueError) as exc:
            raise ValueError("not a cursor from this API; pass next_cursor back as is") from exc
        if cursor.raised_at.tzinfo is None:
            raise ValueError("not a cursor from this API; pass next_cursor back as is")
        return cursor


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


async def list_alerts(
    conn: asyncpg.Connection,
    tenant_id: str,
    *,
    level: AlertLevel | None,
    task_id: uuid.UUID | None,
    status: AlertStatus | None,
    limit: int,
    after: AlertCursor | None,
) -> tuple[list[Alert], AlertCursor | None]:
    """One page of the tenant's alerts, newest first (keyset on raised_at, alert_id), and
    the cursor of the next page (None on the last one)."""
    rows, more = await keyset_page(
        conn,
        table="alerts",
        columns=_ALERT_COLUMNS,
        key=("raised_at", "alert_id"),
        filters=[
            ("tenant_id", tenant_id),
            ("level", level),
            ("task_id", task_id),
            ("status", status),
        ],
        after=(after.raised_at, after.alert_id) if after is not None else None,
        limit=limit,
    )
    alerts = [_alert(row) for row in rows]
    next_cursor = AlertCursor(alerts[-1].raised_at, alerts[-1].alert_id) if more else None
    return alerts, next_cursor


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
