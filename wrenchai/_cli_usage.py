"""``wrenchai usage``: LLM usage reports from the CostGuard's ledger, and what the same
history would have cost under another price table, from the log."""

from __future__ import annotations

import csv
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, get_args

import click

from wrenchai._cli_common import command_settings, run
from wrenchai.settings import Settings

GROUPS = ("model", "user", "key", "task", "playbook", "day")
# Short headings, so a report fits a terminal; CSV keeps the full names.
_TITLES = {
    "input_tokens": "in",
    "output_tokens": "out",
    "cached_tokens": "cached",
    "reasoning_tokens": "reasoning",
    "total_tokens": "tokens",
    "cost_usd": "USD",
    "unpriced_calls": "unpriced",
    "estimated_calls": "estimated",
    "recorded_usd": "USD then",
    "repriced_usd": "USD now",
    "difference_usd": "change",
    "unpriced_recorded": "unpriced then",
    "unpriced_repriced": "unpriced now",
    "price_versions": "priced with",
}


def _instant(value: str | None, name: str) -> datetime | None:
    """An ISO 8601 instant with its zone (a date alone is its UTC midnight)."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value if "T" in value else f"{value}T00:00:00+00:00")
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time", param_hint=name) from exc
    if parsed.tzinfo is None:
        raise click.BadParameter("give the time zone (e.g. 2026-11-01T00:00:00Z)", param_hint=name)
    return parsed


def _print(rows: list[dict[str, Any]], columns: list[str], as_csv: bool, title: str) -> None:
    if as_csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows({c: row.get(c) for c in columns} for row in rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(
            _TITLES.get(column, column),
            justify="left" if column in ("key", "model", "price_versions") else "right",
        )
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    Console().print(table)


@click.group()
def usage() -> None:
    """LLM usage and cost: reports and repricing."""


@usage.command()
@click.option("--from", "start", default=None, help="From this time on (ISO 8601, inclusive).")
@click.option("--to", "end", default=None, help="Up to this time (ISO 8601, exclusive).")
@click.option(
    "--group-by", type=click.Choice(GROUPS), default="model", show_default=True,
    help="What to group the usage by.",
)  # fmt: skip
@click.option("--tenant", default=None, help="One tenant's usage (every tenant's without it).")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV instead of a table.")
def report(
    start: str | None, end: str | None, group_by: str, tenant: str | None, as_csv: bool
) -> None:
    """Calls, tokens of each kind and dollars per group, from the CostGuard's ledger."""
    from api._cost import usage_report
    from api.cost_models import GroupBy
    from projections import connect

    assert group_by in get_args(GroupBy)
    since, until = _instant(start, "--from"), _instant(end, "--to")
    settings = command_settings("usage")

    async def main() -> Any:
        conn = await connect(settings)
        try:
            return await usage_report(conn, tenant, group_by, since, until)  # type: ignore[arg-type]
        finally:
            await conn.close()

    found = run(main)
    columns = [
        "key", "calls", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens",
        "total_tokens", "cost_usd", "unpriced_calls", "estimated_calls",
    ]  # fmt: skip
    rows = [g.model_dump() for g in found.groups]
    rows.append({**found.total.model_dump(), "key": "TOTAL"})
    _print(rows, columns, as_csv, f"LLM usage by {group_by}")


@usage.command()
@click.option(
    "--price-table", "price_table", required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The price table to price the history with (YAML, as WRENCH_PRICE_TABLE).",
)  # fmt: skip
@click.option("--from", "start", default=None, help="From this time on (ISO 8601, inclusive).")
@click.option("--to", "end", default=None, help="Up to this time (ISO 8601, exclusive).")
@click.option("--tenant", default=None, help="One tenant's usage (every tenant's without it).")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV instead of a table.")
def reprice(
    price_table: Path, start: str | None, end: str | None, tenant: str | None, as_csv: bool
) -> None:
    """What the usage in [--from, --to) cost as recorded and would have cost under
    --price-table, per model: read from the log, nothing is called."""
    from processors.shared.pricing import load_price_table
    from wrenchai.errors import WrenchError

    since, until = _instant(start, "--from"), _instant(end, "--to")
    try:
        table = load_price_table(price_table)
    except WrenchError as exc:
        raise click.BadParameter(exc.message, param_hint="--price-table") from exc
    settings = command_settings("usage")
    rows = run(lambda: repriced(settings, table, since, until, tenant))
    columns = [
        "model", "calls", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens",
        "recorded_usd", "repriced_usd", "difference_usd", "unpriced_recorded",
        "unpriced_repriced", "price_versions",
    ]  # fmt: skip
    _print(rows, columns, as_csv, f"Usage repriced with table {table.version}")


@usage.command()
@click.option("--batch", default=500, show_default=True, help="Usage events per transaction.")
def rebuild(batch: int) -> None:
    """Enter in the CostGuard's ledger every usage event of the log it lacks (after its
    database was restored from an older backup, say), each once; nothing is published."""
    settings = command_settings("usage")
    added, seen = run(lambda: rebuild_ledger(settings, batch))
    click.echo(f"{seen} usage event(s) on the log, {added} added to the ledger")


async def rebuild_ledger(settings: Settings, batch: int = 500) -> tuple[int, int]:
    """(events added, events seen): the log's usage metered into the ledger in log order
    per partition; events already there are left as they are, so the totals never count one
    twice. The verdicts of the added events are on the log already: none is published."""
    from processors.cost import meter
    from processors.cost.reprice import logged_usage
    from projections import connect

    conn = await connect(settings)
    added = seen = 0
    try:
        before = int(await conn.fetchval("SELECT count(*) FROM cost_ledger"))
        pending: list[Any] = []

        async def flush() -> None:
            async with conn.transaction():
                await meter(conn, pending)
            pending.clear()

        async for found in logged_usage(settings):
            pending.append(found)
            seen += 1
            if len(pending) >= batch:
                await flush()
        if pending:
            await flush()
        added = int(await conn.fetchval("SELECT count(*) FROM cost_ledger")) - before
    finally:
        await conn.close()
    return added, seen


async def repriced(
    settings: Settings, table: Any, start: datetime | None, end: datetime | None, tenant: str | None
) -> list[dict[str, Any]]:
    """The rows of ``wrenchai usage reprice``, the totals last."""
    from processors.cost.reprice import reprice as price_again
    from processors.cost.reprice import usage_from_log

    events = [e async for e in usage_from_log(settings, start, end, tenant)]
    found = price_again(events, table)
    rows: list[dict[str, Any]] = []
    for r in found:
        rows.append(
            {
                **{k: v for k, v in vars(r).items() if k != "price_versions"},
                "difference_usd": r.difference_usd,
                "price_versions": ",".join(sorted(r.price_versions)),
            }
        )
    total: dict[str, Any] = {"model": "TOTAL", "price_versions": ""}
    for key in (
        "calls", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens",
        "unpriced_recorded", "unpriced_repriced",
    ):  # fmt: skip
        total[key] = sum(row[key] for row in rows)
    for key in ("recorded_usd", "repriced_usd", "difference_usd"):
        total[key] = round(sum(row[key] for row in rows), 8)
    return [*rows, total]
