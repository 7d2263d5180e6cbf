"""The dashboard's quality and cost pages in a real Chromium against the real API, projector,
broker and Postgres: the quality model's last fit and each group's interval, the tenant's
spend over time by model and by user as the CostGuard's ledger has it, budgets burning and a
new one appearing live, another tenant's figures never shown, and a credential without the
scopes told so."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from playwright.async_api import Browser, Locator, Page, ViewportSize, expect

from events import Actor, Event, EventProducer, Position, UsageRecorded
from processors.cost import CostGuard
from tests.api._support import seed_api_key
from tests.api.ui.browser import accessibility_violations, screenshot
from tests.events.inspection_samples import evaluation, fitted, group
from tests.projections.conftest import submitted
from wrenchai.settings import Settings

pytestmark = pytest.mark.usefixtures("topics", "projector")

NARROW: ViewportSize = {"width": 400, "height": 900}
"""A phone's width: the tables fold into a block per row and nothing scrolls sideways."""


async def _signed_in(page: Page, served: str, key: str, path: str) -> Page:
    """``page`` signed in with ``key`` on ``path``, which it shows once signed in."""
    await page.goto(f"{served}{path}")
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    return page


def _stream_live(page: Page) -> asyncio.Event:
    """Set once the page's event stream says it is live: events published after it reach
    the page. Listen before the page opens it."""
    live = asyncio.Event()

    def on_frame(payload: str | bytes) -> None:
        if '"type":"live"' in (payload if isinstance(payload, str) else payload.decode()):
            live.set()

    page.on("websocket", lambda socket: socket.on("framereceived", on_frame))
    return live


async def _number(locator: Locator, attribute: str) -> float:
    value = await locator.get_attribute(attribute)
    assert value is not None, attribute
    return float(value)


def _api(served: str, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=served, headers={"X-API-Key": key}, timeout=30)


# -- quality ----------------------------------------------------------------------------------
async def test_quality_shows_the_last_fit_and_each_groups_interval_live(
    chromium: Browser, served: str, db: asyncpg.Connection, settings: Settings,
    producer: EventProducer,
) -> None:  # fmt: skip
    """Before any fit the page says so. A fit that did not converge is named as such with its
    reason; the tenant's groups come from the converged fit before it, each drawn as a line
    from its interval's low to its high end with a dot at its mean, with the API's figures in
    text. The groups appear on the tenant's evaluation events, without a reload, and another
    tenant's group never shows."""
    key = await seed_api_key(db, settings, key_id="ui-quality")
    page = await chromium.new_page()
    live = _stream_live(page)
    await _signed_in(page, served, key, "/ui/quality")
    await expect(page.get_by_role("heading", name="No quality fit yet")).to_be_visible()
    await asyncio.wait_for(live.wait(), 20)

    fits = [
        fitted(
            "fit-1",
            [
                group(alpha=8, beta=2),
                group("writer", "llm.generate", "gpt-4o-mini", alpha=9, beta=1),
                group("analyst", "code.python"),
            ],
        ),
        fitted("fit-2", [group(alpha=1, beta=9)], minutes=10, converged=False),
    ]
    fitted_at = str(max(await producer.publish_many(fits)))
    mine, theirs = submitted("judged", tenant_id="default"), submitted("x", tenant_id="globex")
    await producer.publish_many([theirs, evaluation(theirs, role="analyst", tool="code.python")])
    async with _api(served, key) as http:
        waited = await http.get("/insights/quality", params={"wait_for": fitted_at})
        assert waited.json()["last_fit"]["fit_id"] == "fit-2"
        await producer.publish_many(
            [
                mine,
                evaluation(mine),
                evaluation(mine, "draft", role="writer", tool="llm.generate", model="gpt-4o-mini"),
            ]
        )
        rows = page.locator("table.quality-groups tbody tr")
        await expect(rows).to_have_count(2, timeout=20_000)
        body = (await http.get("/insights/quality")).json()

    fit = page.locator("section[data-converged]")
    await expect(fit).to_have_attribute("data-converged", "false")
    await expect(fit).to_contain_text("Did not converge.")
    await expect(fit).to_contain_text("r_hat 1.31 > 1.01: not used")
    await expect(fit).to_contain_text("fit-2")
    assert [g["role"] for g in body["groups"]] == ["researcher", "writer"]
    await expect(rows.nth(0)).to_have_attribute("data-role", "researcher")
    await expect(rows.nth(1)).to_have_attribute("data-role", "writer")
    axes: set[tuple[float, float]] = set()
    for g in body["groups"]:
        row = page.locator(f'tr[data-role="{g["role"]}"][data-tool="{g["tool"]}"]')
        await expect(row.locator("td.quality-mean-text")).to_have_text(f"{g['mean']:.3f}")
        low, high = g["interval"]
        await expect(row).to_contain_text(f"{low:.3f} \u2013 {high:.3f}")
        drawn = row.locator("svg.quality-interval")
        await expect(drawn).to_have_attribute("data-mean", str(g["mean"]))
        label = await drawn.get_attribute("aria-label")
        assert label is not None and f"mean {g['mean']:.3f}" in label, label
        assert f"90% interval {low:.3f} to {high:.3f}" in label, label
        # On the axis every row shares (its gridlines at 0 and 1), the line spans the
        # interval and the dot sits at the mean.
        grid = drawn.locator(".quality-grid")
        zero, one = await _number(grid.first, "x1"), await _number(grid.last, "x1")
        line = drawn.locator(".quality-range")
        drawn_at = [
            (await _number(line, "x1") - zero) / (one - zero),
            (await _number(drawn.locator(".quality-dot"), "cx") - zero) / (one - zero),
            (await _number(line, "x2") - zero) / (one - zero),
        ]
        assert drawn_at == pytest.approx([low, g["mean"], high])
        axes.add((zero, one))
    assert len(axes) == 1, "every group is drawn on the same axis"
    writer = page.locator('tr[data-role="writer"]')
    await expect(writer.locator('td[data-label="Model"]')).to_have_text("gpt-4o-mini")
    await expect(writer.locator('td[data-label="Evaluations"]')).to_have_text("1")
    await expect(page.locator('tr[data-role="analyst"]')).to_have_count(0)

    await screenshot(page, "quality")
    assert await accessibility_violations(page) == []
    await page.set_viewport_size(NARROW)
    await screenshot(page, "quality-narrow")
    assert await page.evaluate("document.documentElement.scrollWidth") <= NARROW["width"]
    assert await accessibility_violations(page) == []


# -- cost -------------------------------------------------------------------------------------
def _usage(task: Event, at: datetime, model: str, user: str, cost: float, tokens: int) -> Event:
    """usage.recorded of one LLM request of ``task`` at ``at``."""
    return task.derive(
        UsageRecorded(
            operation="plan", model=model, input_tokens=tokens, output_tokens=0,
            total_tokens=tokens, cost_usd=cost, price_version="2026-11", user_id=user,
            key_id="k1", playbook="research_report",
        ),
        step=f"usage/{uuid.uuid4()}",
        actor=Actor(kind="agent", id="journey_agent"),
        occurred_at=at,
    )  # fmt: skip


async def _metered(settings: Settings, events: list[Event]) -> None:
    """The CostGuard enters ``events`` in its ledger, as it does reading them from the log."""
    guard = CostGuard(settings)
    try:
        await guard.meter([(e, Position(0, i)) for i, e in enumerate(events)])
    finally:
        await guard.close()


def _hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_cost_shows_spend_over_time_and_budgets_burning_live(
    chromium: Browser, served: str, db: asyncpg.Connection, settings: Settings,
    producer: EventProducer,
) -> None:  # fmt: skip
    """Over the last 24 hours the page shows the totals, then each hour's spend by model and
    by user as the ledger has it (in the table under each chart too), and the budgets with
    their burn; a budget set while the page is open appears without a reload; the last 7
    days are a day a bar; another tenant's usage and budgets never show."""
    key = await seed_api_key(db, settings, key_id="ui-cost")
    other = await seed_api_key(db, settings, tenant_id="globex", key_id="globex-cost")
    ours, theirs = submitted("spend", tenant_id="default"), submitted("x", tenant_id="globex")
    await producer.publish_many([ours])
    now = datetime.now(UTC)
    busy, quiet = _hour(now - timedelta(hours=3)), _hour(now - timedelta(hours=5))
    days_ago = now - timedelta(days=3)
    await _metered(
        settings,
        [
            _usage(ours, busy + timedelta(minutes=10), "gpt-4o", "alice", 0.5, 200),
            _usage(ours, busy + timedelta(minutes=40), "gpt-4o-mini", "bob", 0.25, 300),
            _usage(ours, quiet + timedelta(minutes=5), "gpt-4o-mini", "alice", 0.125, 100),
            _usage(ours, days_ago, "gpt-4o", "alice", 1.0, 1000),
            _usage(theirs, busy + timedelta(minutes=15), "globex-model", "mallory", 9.0, 9000),
        ],
    )
    async with _api(served, key) as http, _api(served, other) as globex:
        set_ours = await http.put(
            f"/budgets/task/{ours.task_id}",
            json={"limit_usd": 2.5, "window": "task", "thresholds": [0.5, 0.8]},
        )
        set_theirs = await globex.put(
            "/budgets/model/globex-model", json={"limit_usd": 5, "window": "day"}
        )
        for client, put in ((http, set_ours), (globex, set_theirs)):
            assert put.status_code == 202, put.text
            await client.get("/budgets", params={"wait_for": put.json()["position"]})

        page = await _signed_in(await chromium.new_page(), served, key, "/ui/cost")
        await expect(page.get_by_label("Range")).to_have_value("24h")
        totals = page.locator("dl.cost-totals")
        await expect(totals.locator('[data-total="Spend"] dd')).to_have_text("$0.8750")
        await expect(totals.locator('[data-total="LLM calls"] dd')).to_have_text("3")
        await expect(totals.locator('[data-total="Tokens"] dd')).to_have_text("600")

        # Each hour with usage, per model and per user, as the ledger has it.
        expected = {
            "model": {busy: {"gpt-4o": "$0.5000", "gpt-4o-mini": "$0.2500", "(all)": "$0.7500"},
                      quiet: {"gpt-4o": "—", "gpt-4o-mini": "$0.1250", "(all)": "$0.1250"}},
            "user": {busy: {"alice": "$0.5000", "bob": "$0.2500", "(all)": "$0.7500"},
                     quiet: {"alice": "$0.1250", "bob": "—", "(all)": "$0.1250"}},
        }  # fmt: skip
        for group_by, hours in expected.items():
            table = page.locator(f'table.cost-table[data-group-by="{group_by}"]')
            await expect(table.locator("tbody tr")).to_have_count(2)
            for hour, cells in hours.items():
                row = table.locator(f'tbody tr[data-start="{_iso(hour)}"]')
                for column, text in cells.items():
                    cell = row.locator(f'td[data-key="{column}"]')
                    if text == "—":
                        await expect(cell).to_have_text("—")
                    else:
                        await expect(cell).to_contain_text(text)
            chart = page.locator(f'svg.cost-chart[data-group-by="{group_by}"]')
            await expect(chart.locator("rect.cost-bar")).to_have_count(3)
        busiest = page.locator(
            f'svg.cost-chart[data-group-by="model"] rect[data-start="{_iso(busy)}"]'
        )
        assert [await r.get_attribute("data-key") for r in await busiest.all()] == [
            "gpt-4o",
            "gpt-4o-mini",
        ]
        legend = page.locator('section#cost-by-user ul.cost-legend li[data-key="alice"]')
        await expect(legend).to_have_text("alice $0.6250 · 2 calls · 300 tokens")

        # The task's budget: 1.875 of 2.5 dollars, past its 50% mark.
        budget = page.locator(f'tr[data-scope="task"][data-scope-id="{ours.task_id}"]')
        burn = budget.locator("svg.cost-burn")
        await expect(burn).to_have_attribute("data-ratio", "0.75")
        await expect(burn.locator("line.cost-threshold")).to_have_count(2)
        await expect(budget.locator(".cost-burn-words")).to_have_text("75%: past 50%")
        await expect(budget.locator('td[data-label="Spent"]')).to_have_text(
            "$1.8750 · 1,600 tokens"
        )
        await expect(budget.locator('td[data-label="Remaining"]')).to_have_text("$0.6250")
        await expect(budget.locator('td[data-label="Kind"]')).to_have_text("hard: stops calls")
        await screenshot(page, "cost")
        assert await accessibility_violations(page) == []

        # Set while the page is open: it appears without a reload.
        put = await http.put(
            "/budgets/model/gpt-4o-mini",
            json={"limit_tokens": 1000, "window": "month", "hard": False},
        )
        assert put.status_code == 202, put.text
        added = page.locator('tr[data-scope="model"][data-scope-id="gpt-4o-mini"]')
        await expect(added).to_be_visible(timeout=30_000)
        await expect(added.locator('td[data-label="Limit"]')).to_have_text("1,000 tokens")
        await expect(added.locator('td[data-label="Kind"]')).to_have_text("soft: warns")

        # Another tenant's figures are nowhere on the page.
        content = await page.locator("main").inner_text()
        assert "globex" not in content and "mallory" not in content, content

        # The last 7 days: a bar a day, the older request included.
        await page.get_by_label("Range").select_option("7d")
        await expect(totals.locator('[data-total="Spend"] dd')).to_have_text("$1.8750")
        by_model = page.locator('table.cost-table[data-group-by="model"]')
        day = days_ago.replace(hour=0, minute=0, second=0, microsecond=0)
        await expect(
            by_model.locator(f'tbody tr[data-start="{_iso(day)}"] td[data-key="gpt-4o"]')
        ).to_contain_text("$1.0000")
        await expect(by_model.locator('tfoot td[data-key="(all)"]')).to_contain_text("$1.8750")
        assert page.url.endswith("/ui/cost?range=7d")
        await page.set_viewport_size(NARROW)
        await page.get_by_label("Range").select_option("24h")
        await expect(totals.locator('[data-total="Spend"] dd')).to_have_text("$0.8750")
        await screenshot(page, "cost-narrow")
        assert await page.evaluate("document.documentElement.scrollWidth") <= NARROW["width"]
        assert await accessibility_violations(page) == []


async def test_cost_says_what_a_credential_without_the_scopes_cannot_read(
    chromium: Browser, served: str, db: asyncpg.Connection, settings: Settings
) -> None:
    """A key that may read tasks but neither usage nor budgets gets the page with an alert
    for each, naming the scope it lacks, rather than a blank page."""
    key = await seed_api_key(db, settings, key_id="ui-reader", scopes=["tasks:read"])
    page = await _signed_in(await chromium.new_page(), served, key, "/ui/cost")
    alerts = page.get_by_role("alert")
    await expect(page.locator("#cost-totals [role=alert]")).to_have_text(
        "This credential cannot read usage: it needs the usage:read scope."
    )
    await expect(page.locator("#cost-budgets [role=alert]")).to_have_text(
        "This credential cannot read budgets: it needs the budgets:read scope."
    )
    await expect(alerts.filter(has_text="usage:read")).to_have_count(3)
    await expect(page.locator("svg.cost-chart")).to_have_count(0)
