"""Read models of inspection: evaluations, alerts, and the quality model's fits and posteriors.

Every statement is safe to apply twice: evaluations and fits are keyed by what wrote them,
an alert row is keyed by its alert id and only moves forward (open to cleared, acknowledged
once), and a posterior is replaced only by a newer fit.

quality.fitted belongs to no task and to the platform rather than a tenant: a fit pools
every tenant's evaluations (the InspectorAgent publishes it under its own tenant, a copy on
every partition with one event id). Its rows carry no tenant scope; what they hold is the
quality of roles, tools and models, never a tenant's content.
"""

from __future__ import annotations

from collections.abc import Mapping

from events import AlertAcknowledged, AlertCleared, AlertRaised, EvaluationRecorded, QualityFitted
from projections._read_model_types import Applied, Statement


class EvaluationsModel:
    """One row per evaluation.recorded."""

    tables: tuple[str, ...] = ("evaluations",)
    event_types: tuple[str, ...] = (EvaluationRecorded.event_type,)

    def statements(self, applied: Applied, names: Mapping[str, str]) -> list[Statement]:
        event, pos = applied.event, applied.position
        p = event.payload
        if not isinstance(p, EvaluationRecorded) or event.task_id is None:
            return []
        sql = f"""INSERT INTO {names["evaluations"]} (event_id, task_id, tenant_id, stage_id,
                attempt, role, tool, model, checks, prior_alpha, prior_beta, prior_source,
                quality_score, interval_low, interval_high, confidence, threshold, decision,
                reason, suggestions, occurred_at, partition, "offset")
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                $18, $19, $20, $21, $22, $23)
            ON CONFLICT (event_id) DO NOTHING"""
        checks = [c.model_dump(mode="json") for c in p.checks]
        return [
            (
                sql,
                (
                    event.id,
                    event.task_id,
                    event.tenant_id,
                    p.stage_id,
                    p.attempt,
                    p.role,
                    p.tool,
                    p.model,
                    checks,
                    p.prior_alpha,
                    p.prior_beta,
                    p.prior_source,
                    p.quality_score,
                    p.interval[0],
                    p.interval[1],
                    p.confidence,
                    p.threshold,
                    p.decision,
                    p.reason,
                    p.suggestions,
                    event.occurred_at,
                    pos.partition,
                    pos.offset,
                ),
            )
        ]


class AlertsModel:
    """One row per alert, from alert.raised, moved on by alert.cleared and
    alert.acknowledged. A clear or an acknowledgement names the alert by id and must come
    from its tenant; the first of each wins. A platform alert (the ResourceMonitor's, tenant
    ``_system``) has no task: its row's task_id is null."""

    tables: tuple[str, ...] = ("alerts",)
    event_types: tuple[str, ...] = (
        AlertRaised.event_type,
        AlertCleared.event_type,
        AlertAcknowledged.event_type,
    )

    def statements(self, applied: Applied, names: Mapping[str, str]) -> list[Statement]:
        event, pos = applied.event, applied.position
        p = event.payload
        table = names["alerts"]
        if isinstance(p, AlertRaised):
            sql = f"""INSERT INTO {table} (alert_id, task_id, tenant_id, level, code, message,
                    details, status, raised_at, event_id, partition, "offset")
                VALUES ($1, $2, $3, $4, $5, $6, $7, 'open', $8, $9, $10, $11)
                ON CONFLICT (alert_id) DO NOTHING"""
            args = (
                p.alert_id,
                event.task_id,
                event.tenant_id,
                p.level,
                p.code,
                p.message,
                p.details,
                event.occurred_at,
                event.id,
                pos.partition,
                pos.offset,
            )
            return [(sql, args)]
        if isinstance(p, AlertCleared):
            sql = f"""UPDATE {table} SET status = 'cleared', cleared_at = $3, clear_reason = $4
                WHERE alert_id = $1 AND tenant_id = $2 AND status = 'open'"""
            return [(sql, (p.alert_id, event.tenant_id, event.occurred_at, p.reason))]
        if isinstance(p, AlertAcknowledged):
            sql = f"""UPDATE {table} SET acknowledged_at = $3, acknowledged_by = $4, note = $5
                WHERE alert_id = $1 AND tenant_id = $2 AND acknowledged_at IS NULL"""
            return [(sql, (p.alert_id, event.tenant_id, event.occurred_at, event.actor.id, p.note))]
        return []


class QualityModel:
    """Every quality.fitted in quality_fits, and each group's posterior from the newest
    converged fit that had it in quality_posteriors.

    "Newest" is by the fit's time, then its id: the copies of a fit sit on every partition
    and a rebuild may read partitions in another order than the projector did, so log order
    cannot decide between two fits.
    """

    tables: tuple[str, ...] = ("quality_fits", "quality_posteriors")
    event_types: tuple[str, ...] = (QualityFitted.event_type,)

    def statements(self, applied: Applied, names: Mapping[str, str]) -> list[Statement]:
        event = applied.event
        p = event.payload
        if not isinstance(p, QualityFitted):
            return []
        fit_sql = f"""INSERT INTO {names["quality_fits"]} (fit_id, event_id, tenant_id,
                evaluations, groups, mu, kappa, r_hat_max, ess_min, converged, draws, chains,
                seconds, reason, fitted_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
            ON CONFLICT (fit_id) DO NOTHING"""
        out: list[Statement] = [
            (
                fit_sql,
                (
                    p.fit_id,
                    event.id,
                    event.tenant_id,
                    p.evaluations,
                    len(p.groups),
                    p.mu,
                    p.kappa,
                    p.r_hat_max,
                    p.ess_min,
                    p.converged,
                    p.draws,
                    p.chains,
                    p.seconds,
                    p.reason,
                    event.occurred_at,
                ),
            )
        ]
        if not p.converged:
            return out  # a fit that has not converged is recorded, never used
        table = names["quality_posteriors"]
        group_sql = f"""INSERT INTO {table} AS q (role, tool, model, alpha, beta, mean,
                interval_low, interval_high, evaluations, fit_id, r_hat, ess, fitted_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
            ON CONFLICT (role, tool, model) DO UPDATE SET alpha = EXCLUDED.alpha,
                beta = EXCLUDED.beta, mean = EXCLUDED.mean,
                interval_low = EXCLUDED.interval_low, interval_high = EXCLUDED.interval_high,
                evaluations = EXCLUDED.evaluations, fit_id = EXCLUDED.fit_id,
                r_hat = EXCLUDED.r_hat, ess = EXCLUDED.ess, fitted_at = EXCLUDED.fitted_at
            WHERE (q.fitted_at, q.fit_id) < (EXCLUDED.fitted_at, EXCLUDED.fit_id)"""
        out += [
            (
                group_sql,
                (
                    g.role,
                    g.tool,
                    g.model or "",
                    g.alpha,
                    g.beta,
                    g.mean,
                    g.interval[0],
                    g.interval[1],
                    g.evaluations,
                    p.fit_id,
                    g.r_hat,
                    g.ess,
                    event.occurred_at,
                ),
            )
            for g in p.groups
        ]
        return out
