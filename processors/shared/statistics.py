"""The agents' decision statistics, read from the projector's read models: every partition,
all of history.

Some decisions rest on numbers across tasks: which tool a stage calls first (success rate,
latency and cost per tool and task type), whether a tool's circuit is open (its last calls),
what the quality model is fitted on (passed and failed checks per (role, tool, model)
group), and the newest fit. A worker holds only its partitions, and only their recent log
once it restores a snapshot of its tasks in flight, so it cannot fold those numbers itself
without each worker seeing a different share. The projector folds every partition into
Postgres, so the workers read them from there, every ``WRENCH_STATS_REFRESH_S``
(:func:`keep_fresh`), and every worker of a kind decides with the same numbers:

- ``tool_stats``, summed over tenants, gives calls, successes, seconds and cost per (tool,
  task type);
- ``tool_calls`` gives each tool's last :data:`~processors.shared.tool_usage.BREAKER_THRESHOLD`
  calls (the tool's own outcome and time; a reused result or a refusal by the breaker is no
  call of the tool);
- ``evaluations`` gives the evaluations and passed and failed checks per group;
- ``quality_fits`` and ``quality_posteriors`` give the newest converged fit, rebuilt as the
  quality.fitted it was, and how many evaluations the newest fit saw.

Tool calls and evaluations are read in full once; after that only the rows archived since
the previous read, found through ``event_log``'s (topic, partition, offset) key between the
projector's offsets then and now, both taken in one repeatable-read snapshot. Each row is
therefore counted once, and a refresh costs what was projected since the last one.

The statistics stay platform-wide, as they were when a worker folded every tenant's events:
the read models carry row-level security (migration 0007) for the API's role, and workers
connect with ``WRENCH_DATABASE_URL`` as the projector does, as the owner of the tables,
which that security does not restrict. A role it would confine sees no rows at all, so the
reader refuses one with an error that says so rather than decide on empty numbers. Nothing
here reads user content: only names, counts, outcomes, times and the pass flag of checks.

A read that fails (Postgres down, tables not migrated yet) changes nothing: the agents keep
the last numbers, :func:`keep_fresh` logs once, and the next read catches up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import structlog

from events import GroupPosterior, QualityFitted
from processors.shared.tool_usage import BREAKER_THRESHOLD, Observed, Outcome
from wrenchai.errors import WrenchError
from wrenchai.settings import Settings

log = structlog.get_logger(__name__)

GroupKey = tuple[str, str, str | None]
"""(role, tool, model): the unit the quality model pools over."""
Counts = tuple[int, int, int]
"""(evaluations, passed checks, failed checks) of one group."""

CONNECT_TIMEOUT_S = 5.0
QUERY_TIMEOUT_S = 30.0
READ_TABLES = (
    "event_log",
    "tool_stats",
    "tool_calls",
    "evaluations",
    "quality_fits",
    "quality_posteriors",
)
REFUSED = "CIRCUIT_OPEN"
"""The error code of a call the breaker refused: the tool never ran."""


class StatisticsUnavailable(WrenchError):
    """The statistics could not be read; the agents go on with the last numbers."""

    code = "STATISTICS_UNAVAILABLE"


@dataclass(frozen=True)
class Fit:
    """A quality.fitted and its event's ``occurred_at``. Of two fits the newer wins by
    (fitted_at, fit_id), as in ``quality_posteriors``, whether it came from the log or from
    the read models."""

    fitted: QualityFitted
    fitted_at: datetime

    @property
    def order(self) -> tuple[datetime, str]:
        return (self.fitted_at, self.fitted.fit_id)


class NewestFit:
    """The newest converged fit seen so far, from either source."""

    def __init__(self) -> None:
        self.fit: Fit | None = None

    def offer(self, fitted: QualityFitted, fitted_at: datetime) -> bool:
        """Keep ``fitted`` if it converged and is newer than the fit held; whether it was
        kept. An older fit read back after a newer one came through the log is ignored."""
        offered = Fit(fitted, fitted_at)
        if not fitted.converged or (self.fit is not None and offered.order <= self.fit.order):
            return False
        self.fit = offered
        return True


@dataclass(frozen=True)
class Statistics:
    """One read of the decision statistics, over every tenant and partition."""

    tools: Mapping[tuple[str, str | None], Observed] = field(default_factory=dict)
    """Totals per (tool, task type); task type None when the call named none."""
    outcomes: tuple[Outcome, ...] = ()
    """Calls archived since the previous read (on the first, each tool's last calls):
    :meth:`processors.shared.tool_usage.CircuitBreaker.record` takes each call once."""
    counts: Mapping[GroupKey, Counts] = field(default_factory=dict)
    """Totals per (role, tool, model) group."""
    fit: Fit | None = None
    """The newest converged fit."""
    fitted_evaluations: int = 0
    """The evaluations the newest fit saw, converged or not (0 before any)."""

    @property
    def evaluations(self) -> int:
        """Every evaluation of every group."""
        return sum(count[0] for count in self.counts.values())


class StatisticsReader:
    """Reads the statistics an agent asks for, with one small pool of its own.

    ``tools``: tool_stats; ``outcomes``: the circuit breakers' calls; ``evaluations``: the
    counts per group; ``fits``: the newest fit. One reader per worker process.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        tools: bool = False,
        outcomes: bool = False,
        evaluations: bool = False,
        fits: bool = False,
        per_tool: int = BREAKER_THRESHOLD,
    ) -> None:
        self.settings = settings
        self.tools, self.outcomes, self.evaluations, self.fits = tools, outcomes, evaluations, fits
        self.per_tool = per_tool
        self._pool: asyncpg.Pool | None = None
        self._positions: dict[int, int] | None = None
        self._counts: dict[GroupKey, Counts] = {}
        self._fit: Fit | None = None

    async def read(self) -> Statistics:
        """The statistics as the read models hold them now; StatisticsUnavailable when
        Postgres cannot answer (nothing of the reader's state moves then)."""
        try:
            pool = await self._open()
            async with (
                pool.acquire(timeout=CONNECT_TIMEOUT_S) as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                return await self._read(conn)
        except asyncpg.UndefinedTableError as exc:
            raise StatisticsUnavailable(
                "the read models do not exist yet; run `wrenchai migrate` (the projector and "
                "`wrenchai dev` run it at start)"
            ) from exc
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StatisticsUnavailable(
                f"cannot read the statistics from Postgres ({type(exc).__name__}: {exc}); "
                "check WRENCH_DATABASE_URL and that Postgres is up"
            ) from exc

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _open(self) -> asyncpg.Pool:
        if self._pool is None:
            pool = await asyncpg.create_pool(
                self.settings.database_dsn(),
                min_size=0,
                max_size=1,
                timeout=CONNECT_TIMEOUT_S,
                command_timeout=QUERY_TIMEOUT_S,
            )
            assert pool is not None
            try:
                await _check_unconfined(pool)
            except BaseException:
                await pool.close()
                raise
            self._pool = pool
        return self._pool

    async def _read(self, conn: asyncpg.Connection) -> Statistics:
        positions = await self._projected(conn) if self.outcomes or self.evaluations else {}
        ranges = _ranges(self._positions, positions)
        tools = await _tool_totals(conn) if self.tools else {}
        outcomes: tuple[Outcome, ...] = ()
        if self.outcomes:
            outcomes = await (
                _last_calls(conn, self.per_tool)
                if ranges is None
                else _calls_in(conn, self._topic, ranges)
            )
        counts = self._counts
        if self.evaluations:
            found = await (
                _group_counts(conn) if ranges is None else _group_counts(conn, self._topic, ranges)
            )
            counts = _added(self._counts if ranges is not None else {}, found)
        fit, fitted_evaluations = self._fit, 0
        if self.fits:
            fit, fitted_evaluations = await _newest_fit(conn, self._fit)
        # Only once every query has answered: a failed read moves nothing.
        self._positions, self._counts, self._fit = positions, counts, fit
        return Statistics(tools, outcomes, dict(counts), fit, fitted_evaluations)

    @property
    def _topic(self) -> str:
        return self.settings.topic("events")

    async def _projected(self, conn: asyncpg.Connection) -> dict[int, int]:
        """The projector's next offset per partition: the archive and the read models hold
        exactly the records before it, in this transaction's snapshot."""
        rows = await conn.fetch(
            "SELECT partition, next_offset FROM consumer_offsets "
            "WHERE group_id = $1 AND topic = $2",
            self.settings.group("projector"),
            self._topic,
        )
        return {row["partition"]: row["next_offset"] for row in rows}


async def keep_fresh(
    reader: StatisticsReader, apply: Callable[[Statistics], None], interval_s: float
) -> None:
    """Read and ``apply`` the statistics now and every ``interval_s`` until cancelled. A
    failed refresh keeps the last numbers; it is logged once, and once more when refreshes
    work again. Whatever fails, the loop goes on: decisions never wait for it."""
    failing = False
    try:
        while True:
            try:
                apply(await reader.read())
            except Exception as exc:
                if not failing:
                    known = exc if isinstance(exc, StatisticsUnavailable) else None
                    log.warning(
                        "statistics not refreshed; deciding with the last ones",
                        reason=known.message if known else repr(exc),
                        exc_info=known is None,
                    )
                failing = True
            else:
                if failing:
                    log.info("statistics refreshed again")
                failing = False
            await asyncio.sleep(interval_s)
    finally:
        await reader.close()


# -- queries ---------------------------------------------------------------------------------
Ranges = tuple[list[int], list[int], list[int]]
"""(partitions, from offsets, to offsets): what the projector archived between two reads."""


def _ranges(before: Mapping[int, int] | None, now: Mapping[int, int]) -> Ranges | None:
    """The offsets projected since ``before``; None when everything is to be read: on the
    first read, and when the projector's offsets went back (a database restored or
    rebuilt from an earlier state)."""
    if before is None or any(now.get(p, 0) < end for p, end in before.items()):
        return None
    moved = [(p, before.get(p, 0), end) for p, end in sorted(now.items()) if end > before.get(p, 0)]
    return [p for p, _, _ in moved], [s for _, s, _ in moved], [e for _, _, e in moved]


_ARCHIVED = """FROM unnest($2::int[], $3::bigint[], $4::bigint[]) AS r(partition, since, upto)
    JOIN event_log e ON e.topic = $1 AND e.partition = r.partition
        AND e."offset" >= r.since AND e."offset" < r.upto"""
"""The archived records projected between two reads (a range scan of event_log's key); the
query adds the type and joins the read model's row by event id. Each event id is applied
once, so repeats of an event on the log ('duplicate') never count."""


async def _check_unconfined(pool: asyncpg.Pool) -> None:
    """Refuse a role that row-level security confines: it would read no rows at all and the
    agents would decide as if nothing had ever happened."""
    confined = await pool.fetch(
        "SELECT name FROM unnest($1::text[]) AS name WHERE CASE "
        "WHEN to_regclass(name) IS NULL THEN false ELSE row_security_active(name) END",
        list(READ_TABLES),
    )
    if confined:
        tables = ", ".join(row["name"] for row in confined)
        raise StatisticsUnavailable(
            f"the database role of WRENCH_DATABASE_URL is confined by row-level security on "
            f"{tables}, so it would see no tenant's statistics; workers connect as the owner "
            "of the read models, as the projector does",
            tables=tables,
        )


async def _tool_totals(conn: asyncpg.Connection) -> dict[tuple[str, str | None], Observed]:
    rows = await conn.fetch(
        """SELECT tool, NULLIF(task_type, '') AS task_type, sum(calls)::bigint AS calls,
                  sum(successes)::bigint AS successes,
                  sum(total_duration_s)::float8 AS seconds, sum(total_cost_usd)::float8 AS cost
           FROM tool_stats GROUP BY tool, task_type"""
    )
    return {
        (row["tool"], row["task_type"]): Observed(
            row["calls"], row["successes"], row["seconds"], row["cost"]
        )
        for row in rows
    }


_CALL = "c.tool, c.event_id, c.occurred_at, c.outcome = 'ok' AS ok"
_RAN = f"""NOT c.cached AND c.error_code IS DISTINCT FROM '{REFUSED}'"""


async def _last_calls(conn: asyncpg.Connection, per_tool: int) -> tuple[Outcome, ...]:
    rows = await conn.fetch(
        f"""SELECT tool, event_id, occurred_at, ok FROM (
                SELECT {_CALL}, row_number() OVER (
                    PARTITION BY c.tool ORDER BY c.occurred_at DESC, c.event_id DESC) AS n
                FROM tool_calls c WHERE {_RAN}) AS recent
            WHERE n <= $1""",
        per_tool,
    )
    return _outcomes(rows)


async def _calls_in(conn: asyncpg.Connection, topic: str, ranges: Ranges) -> tuple[Outcome, ...]:
    if not ranges[0]:
        return ()
    rows = await conn.fetch(
        f"""SELECT {_CALL} {_ARCHIVED}
            JOIN tool_calls c ON c.event_id = e.id
            WHERE e.type = 'tool.returned' AND e.status = 'applied' AND {_RAN}""",
        topic,
        *ranges,
    )
    return _outcomes(rows)


def _outcomes(rows: Sequence[Any]) -> tuple[Outcome, ...]:
    return tuple(
        Outcome(row["tool"], row["event_id"], row["occurred_at"], row["ok"]) for row in rows
    )


# Counts only the pass flag of each check: a check's detail may quote the output.
_GROUP_COUNTS = """SELECT v.role, v.tool, v.model, count(*)::bigint AS evaluations,
        sum(v.passed)::bigint AS passed, sum(v.checks - v.passed)::bigint AS failed
    FROM (SELECT role, tool, model, jsonb_array_length(checks) AS checks,
                 (SELECT count(*) FROM jsonb_array_elements(checks) AS c
                  WHERE (c ->> 'passed')::boolean) AS passed
          {source}) AS v
    GROUP BY v.role, v.tool, v.model"""


async def _group_counts(
    conn: asyncpg.Connection, topic: str | None = None, ranges: Ranges | None = None
) -> dict[GroupKey, Counts]:
    """Counts per group of every evaluation, or of those in ``ranges``."""
    if ranges is None:
        rows = await conn.fetch(_GROUP_COUNTS.format(source="FROM evaluations"))
    elif not ranges[0]:
        return {}
    else:
        source = (
            f"{_ARCHIVED} JOIN evaluations v ON v.event_id = e.id "
            "WHERE e.type = 'evaluation.recorded' AND e.status = 'applied'"
        )
        rows = await conn.fetch(_GROUP_COUNTS.format(source=source), topic, *ranges)
    return {
        (row["role"], row["tool"], row["model"]): (
            row["evaluations"],
            row["passed"],
            row["failed"],
        )
        for row in rows
    }


def _added(
    before: Mapping[GroupKey, Counts], more: Mapping[GroupKey, Counts]
) -> dict[GroupKey, Counts]:
    total = dict(before)
    for key, (evaluations, passed, failed) in more.items():
        was = total.get(key, (0, 0, 0))
        total[key] = (was[0] + evaluations, was[1] + passed, was[2] + failed)
    return total


async def _newest_fit(conn: asyncpg.Connection, known: Fit | None) -> tuple[Fit | None, int]:
    """The newest converged fit (``known`` again when it still is), and the evaluations of
    the newest fit of all."""
    newest = await conn.fetchval(
        "SELECT evaluations FROM quality_fits ORDER BY fitted_at DESC, fit_id DESC LIMIT 1"
    )
    row = await conn.fetchrow(
        """SELECT fit_id, evaluations, mu, kappa, r_hat_max, ess_min, converged, draws, chains,
                  seconds, reason, fitted_at
           FROM quality_fits WHERE converged ORDER BY fitted_at DESC, fit_id DESC LIMIT 1"""
    )
    if row is None:
        return None, newest or 0
    if known is not None and known.order == (row["fitted_at"], row["fit_id"]):
        return known, newest or 0
    # In the order the fit listed its groups (sorted by role, tool, model as Python sorts),
    # so a fit read back equals the one on the log to the last bit.
    groups = await conn.fetch(
        """SELECT role, tool, NULLIF(model, '') AS model, evaluations, alpha, beta, mean,
                  interval_low, interval_high, r_hat, ess
           FROM quality_posteriors WHERE fit_id = $1
           ORDER BY role COLLATE "C", tool COLLATE "C", model COLLATE "C" """,
        row["fit_id"],
    )
    fitted = QualityFitted(
        fit_id=row["fit_id"],
        evaluations=row["evaluations"],
        groups=[
            GroupPosterior(
                role=g["role"],
                tool=g["tool"],
                model=g["model"],
                evaluations=g["evaluations"],
                alpha=g["alpha"],
                beta=g["beta"],
                mean=g["mean"],
                interval=[g["interval_low"], g["interval_high"]],
                r_hat=g["r_hat"],
                ess=g["ess"],
            )
            for g in groups
        ],
        mu=row["mu"],
        kappa=row["kappa"],
        r_hat_max=row["r_hat_max"],
        ess_min=row["ess_min"],
        converged=row["converged"],
        draws=row["draws"],
        chains=row["chains"],
        seconds=row["seconds"],
        reason=row["reason"],
    )
    return Fit(fitted, row["fitted_at"]), newest or 0


__all__ = [
    "Fit",
    "NewestFit",
    "Statistics",
    "StatisticsReader",
    "StatisticsUnavailable",
    "keep_fresh",
]
