"""`wrenchai usage report` and `wrenchai usage reprice` as a user runs them: a process with
settings from WRENCH_ variables, on the real broker and Postgres. The repriced totals are
checked against sums worked by hand."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from events import Event, EventProducer, UsageRecorded
from processors.cost import CostGuard
from tests.processors.cost.test_cost_guard import AGENT, meter, usage
from wrenchai.settings import Settings

DAY = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
TABLE = """version: "negotiated-2027"
default_model: gpt-4o-mini
models:
  gpt-4o-mini: {input_per_million: 0.10, cached_input_per_million: 0.05, output_per_million: 0.40}
  house-llm: {input_per_million: 1.0, output_per_million: 2.0}
"""


async def _wrenchai(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings.to_env(), "WRENCH_LOG_LEVEL": "warning"}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "wrenchai", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _call(
    task: uuid.UUID,
    at: datetime,
    model: str,
    tokens_in: int,
    tokens_out: int,
    *,
    cached: int = 0,
    cost_usd: float | None,
) -> Event:
    payload = UsageRecorded(
        operation="execute", model=model, input_tokens=tokens_in, output_tokens=tokens_out,
        cached_tokens=cached, total_tokens=tokens_in + tokens_out, cost_usd=cost_usd,
        price_version="2026-11",
    )  # fmt: skip
    return Event.new(payload, tenant_id="acme", actor=AGENT, task_id=task, occurred_at=at)


def _rows(output: str) -> dict[str, dict[str, str]]:
    return {row.get("model") or row["key"]: row for row in csv.DictReader(io.StringIO(output))}


async def test_reprice_prices_the_logged_history_under_another_table(
    settings: Settings, producer: EventProducer, tmp_path: Path
) -> None:
    """Two gpt-4o-mini calls (1,000 input of which 400 cached, 500 output; then 2,000 input,
    1,000 output) and one house-llm call (unpriced when it ran: 3,000 in, 1,000 out), and one
    call outside the range, repriced with a table that knows both models."""
    task = uuid.uuid4()
    calls = [
        _call(task, DAY, "gpt-4o-mini", 1000, 500, cached=400, cost_usd=0.00051),
        _call(task, DAY + timedelta(hours=1), "gpt-4o-mini", 2000, 1000, cost_usd=0.0009),
        _call(task, DAY + timedelta(hours=2), "house-llm", 3000, 1000, cost_usd=None),
        _call(task, DAY - timedelta(days=3), "gpt-4o-mini", 10, 0, cost_usd=5.0),
    ]
    await producer.publish_many(calls)
    table = tmp_path / "prices.yaml"
    table.write_text(TABLE)

    done = await _wrenchai(
        settings, "usage", "reprice", "--price-table", str(table),
        "--from", "2026-11-02", "--to", "2026-11-03T00:00:00Z", "--csv",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = _rows(done.stdout)
    # 600 x 0.10 + 400 x 0.05 + 500 x 0.40 = 280 per million; 2,000 x 0.10 + 1,000 x 0.40 = 600.
    assert rows["gpt-4o-mini"]["calls"] == "2"
    assert float(rows["gpt-4o-mini"]["recorded_usd"]) == 0.00141
    assert float(rows["gpt-4o-mini"]["repriced_usd"]) == 0.00088
    assert float(rows["gpt-4o-mini"]["difference_usd"]) == -0.00053
    # 3,000 x 1.0 + 1,000 x 2.0 = 5,000 per million: priced now, unpriced when it ran.
    assert float(rows["house-llm"]["repriced_usd"]) == 0.005
    assert (rows["house-llm"]["unpriced_recorded"], rows["house-llm"]["unpriced_repriced"]) == (
        "1",
        "0",
    )
    assert float(rows["TOTAL"]["repriced_usd"]) == 0.00588
    assert rows["TOTAL"]["calls"] == "3"

    refused = await _wrenchai(settings, "usage", "reprice", "--price-table", str(tmp_path / "no"))
    assert refused.returncode == 2 and "does not exist" in refused.stderr
    table.write_text("version: x\ndefault_model: m\nmodels: {}\n")
    bad = await _wrenchai(settings, "usage", "reprice", "--price-table", str(table))
    assert bad.returncode == 2 and "default_model 'm' has no price" in bad.stderr


async def test_report_groups_the_ledger_as_asked(
    settings: Settings, db: asyncpg.Connection, topics: dict[str, int]
) -> None:
    guard = CostGuard(settings)
    try:
        task = uuid.uuid4()
        await meter(
            guard,
            [
                usage(task, DAY, cost_usd=0.5, tokens=100),
                usage(task, DAY, cost_usd=0.25, tokens=50, user_id="bob"),
                usage(task, DAY, cost_usd=1.0, tokens=10, tenant_id="globex"),
            ],
        )
    finally:
        await guard.close()
    done = await _wrenchai(
        settings, "usage", "report", "--group-by", "user", "--tenant", "acme", "--csv"
    )
    assert done.returncode == 0, done.stderr
    rows = _rows(done.stdout)
    assert {k: (r["calls"], r["total_tokens"], r["cost_usd"]) for k, r in rows.items()} == {
        "alice": ("1", "100", "0.5"),
        "bob": ("1", "50", "0.25"),
        "TOTAL": ("2", "150", "0.75"),
    }
    everyone = await _wrenchai(settings, "usage", "report", "--csv")
    assert _rows(everyone.stdout)["TOTAL"]["cost_usd"] == "1.75"
    table = await _wrenchai(settings, "usage", "report", "--from", "2026-11-03")
    assert table.returncode == 0 and "TOTAL" in table.stdout
    naive = await _wrenchai(settings, "usage", "report", "--from", "2026-11-03T00:00:00")
    assert naive.returncode == 2 and "time zone" in naive.stderr


async def test_rebuild_enters_what_the_ledger_lacks_and_counts_nothing_twice(
    settings: Settings, db: asyncpg.Connection, producer: EventProducer
) -> None:
    """A ledger that lost rows (restored from an older backup) gets them back from the log;
    the rows it kept stay as they are, and a second rebuild adds nothing."""
    task = uuid.uuid4()
    calls = [_call(task, DAY + timedelta(minutes=i), "gpt-4o-mini", 100, 10, cost_usd=0.001)
             for i in range(5)]  # fmt: skip
    await producer.publish_many(calls)
    guard = CostGuard(settings)
    try:
        await meter(guard, calls[:2])
    finally:
        await guard.close()
    done = await _wrenchai(settings, "usage", "rebuild")
    assert done.returncode == 0, done.stderr
    assert "5 usage event(s) on the log, 3 added to the ledger" in done.stdout
    row = await db.fetchrow("SELECT count(*) AS n, sum(total_tokens) AS t FROM cost_ledger")
    assert (row["n"], row["t"]) == (5, 550)
    again = await _wrenchai(settings, "usage", "rebuild")
    assert "0 added" in again.stdout
