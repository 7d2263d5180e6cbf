"""A task's page in a real Chromium against the real API, projector, broker and Postgres:
its evaluations with their intervals, the SuperAgent's thoughts, its cost against the
estimate, its report rendered safely, its history and the time-travel slider, and another
tenant's task refused."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from events import EvaluationRecorded, EventProducer, TaskCompleted
from tests.api._support import seed_api_key
from tests.api.ui.browser import accessibility_violations, screenshot
from tests.events.execution_samples import Story, search_retried
from tests.events.inspection_samples import cleared, evaluation, raised
from tests.events.planning_samples import planning_events
from tests.projections.conftest import eventually, submitted
from wrenchai.settings import Settings

pytestmark = pytest.mark.usefixtures("topics", "projector")

REPORT = """# Churn report

Churn **doubled** to 7.4% in Q3.

<script>window.injected = "script"</script>
<img src="x" onerror="window.injected = 'img'">

[the minutes](javascript:window.injected='link')

1. board minutes
"""


async def signed_in(chromium: Browser, served: str, key: str) -> Page:
    page = await chromium.new_page()
    await page.goto(f"{served}/ui")
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
    return page


async def test_a_finished_tasks_page_shows_its_evaluations_thoughts_cost_and_report(
    chromium: Browser, served: str, db: asyncpg.Connection, settings: Settings,
    producer: EventProducer,
) -> None:  # fmt: skip
    key = await seed_api_key(db, settings, key_id="ui-task")
    task = submitted("Report on churn", tenant_id="default")
    story = Story(task)
    search_retried(story)
    judged = evaluation(task, "search", 2, passed=2, failed=1, decision="retry", seconds=9)
    story.add(TaskCompleted(output={"final": {"markdown": REPORT}}, summary="one stage"), "done")
    await producer.publish_many([task, *planning_events(task), *story.events, judged])

    page = await signed_in(chromium, served, key)
    await page.goto(f"{served}/ui/tasks/{task.task_id}")
    await expect(page.get_by_role("heading", name="Report on churn")).to_be_visible()
    await expect(page.locator("h1 + p .badge")).to_have_text("completed", timeout=20_000)

    # The evaluation, opened: its score and 90% interval drawn, the failed check, and the
    # suggestion carried into the retry.
    item = page.locator('details[data-evaluation="search:2"]')
    await expect(item).to_be_visible(timeout=20_000)
    await item.locator("summary").click()
    assert isinstance(judged.payload, EvaluationRecorded)
    score, (low, high) = judged.payload.quality_score, judged.payload.interval
    await expect(item.locator("svg.interval .mean")).to_have_attribute("data-score", str(score))
    await expect(item.locator("svg.interval .band")).to_have_attribute("data-low", str(low))
    await expect(item.locator("svg.interval .band")).to_have_attribute("data-high", str(high))
    await expect(item.get_by_role("heading", name="Checks that failed (1 of 3)")).to_be_visible()
    await expect(item.locator("li.failed")).to_contain_text("fewer than three sources")
    carried = item.get_by_role("heading", name="Suggestions carried into the retry")
    await expect(carried).to_be_visible()
    await expect(item.locator("ul.suggestions")).to_have_text("cite at least three sources")
    await screenshot(page, "task-evaluation")

    # The SuperAgent's thoughts, in order.
    thoughts = page.locator("ol.thoughts > li")
    await expect(thoughts.first).to_contain_text("the task asks for figures")
    await expect(page.locator("ol.thoughts")).to_contain_text("search before writing")

    # Cost against the plan's estimate, per stage.
    async with httpx.AsyncClient(base_url=served, headers={"X-API-Key": key}) as client:
        cost = (await client.get(f"/tasks/{task.task_id}/cost")).json()
    cost_table = page.get_by_role("table", name="Cost per stage")
    for stage in cost["stages"]:
        await expect(cost_table.locator(f'tr[data-stage="{stage["stage_id"]}"]')).to_contain_text(
            f"{stage['estimated']['tokens']:,}"
        )

    # The report, rendered as markdown with nothing in it allowed to run.
    report = page.locator(".report")
    await expect(report.get_by_role("heading", name="Churn report")).to_be_visible()
    await expect(report.locator("strong")).to_have_text("doubled")
    assert await report.locator("script").count() == 0
    assert await report.locator("[onerror]").count() == 0
    assert await report.locator("a[href^='javascript']").count() == 0
    assert await page.evaluate("window.injected") is None
    await screenshot(page, "task-report")
    assert await accessibility_violations(page) == []


async def test_the_time_travel_slider_shows_the_task_as_of_any_event(
    chromium: Browser, served: str, db: asyncpg.Connection, settings: Settings,
    producer: EventProducer,
) -> None:  # fmt: skip
    key = await seed_api_key(db, settings, key_id="ui-travel")
    task = submitted("Travel in time", tenant_id="default")
    planned = planning_events(task)
    story = Story(task)
    search_retried(story)
    published = [task, *planned, *story.events]
    await producer.publish_many(published)
    history: list[dict[str, Any]] = []

    async def archived() -> bool:
        nonlocal history
        async with httpx.AsyncClient(base_url=served, headers={"X-API-Key": key}) as client:
            response = await client.get(f"/tasks/{task.task_id}/events")
        history = response.json().get("events", [])
        return len(history) == len(published)

    await eventually(archived)

    page = await signed_in(chromium, served, key)
    await page.goto(f"{served}/ui/tasks/{task.task_id}")
    rows = page.get_by_role("table", name="History").locator("tbody tr")
    await expect(rows).to_have_count(len(history), timeout=20_000)
    await expect(rows.first).to_contain_text(history[0]["position"])
    slider = page.get_by_label("Show the task as of event")
    # At the last event it follows the task: the state as of then is the task's now.
    await expect(slider).to_have_value(str(len(history)))
    await expect(page.locator("[data-as-of-status]")).to_have_attribute(
        "data-as-of-status", "running"
    )

    # To the first event (the keyboard's Home key): only the submission.
    await slider.focus()
    await page.keyboard.press("Home")
    await expect(page.locator("output.as-of")).to_contain_text(
        f"event 1 of {len(history)}: task.submitted at {history[0]['position']}"
    )
    await expect(page.locator("[data-as-of-status]")).to_have_attribute(
        "data-as-of-status", "submitted"
    )
    await expect(page.locator(".as-of-state svg.plan")).to_have_count(0)
    await expect(rows.first).to_have_attribute("aria-current", "true")

    # Once the plan is made: its stages drawn, none run yet.
    plan_at = next(i for i, e in enumerate(history) if e["type"] == "plan.created") + 1
    for _ in range(plan_at - 1):
        await page.keyboard.press("ArrowRight")
    await expect(page.locator("output.as-of")).to_contain_text(f"event {plan_at} of")
    then = page.locator('.as-of-state svg.plan rect[data-stage="search"]')
    await expect(then).to_have_attribute("data-status", "pending")
    await screenshot(page, "task-history")

    # A new event does not move a slider that was put somewhere else.
    completed = Story(task)
    completed.add(TaskCompleted(output={"final": {"markdown": "done"}}, summary="done"), "end")
    await producer.publish_many(completed.events)
    await expect(rows).to_have_count(len(history) + 1, timeout=20_000)
    await expect(slider).to_have_value(str(plan_at))
    assert await accessibility_violations(page) == []


async def test_another_tenants_task_is_refused(
    chromium: Browser, served: str, db: asyncpg.Connection, settings: Settings,
    producer: EventProducer,
) -> None:  # fmt: skip
    key = await seed_api_key(db, settings, key_id="ui-mine")
    theirs = submitted("Someone else's secret plan", tenant_id="rival")
    mine = submitted("My own task", tenant_id="default")
    await producer.publish_many([theirs, *planning_events(theirs), mine])

    page = await signed_in(chromium, served, key)
    await expect(page.locator("tr", has_text="My own task")).to_be_visible(timeout=20_000)
    await expect(page.locator("tr", has_text="Someone else's secret plan")).to_have_count(0)
    await page.goto(f"{served}/ui/tasks/{theirs.task_id}")
    await expect(page.get_by_role("alert")).to_have_text("No such task in your tenant (yet).")
    await expect(page.get_by_text("Someone else's secret plan")).to_have_count(0)
    await expect(page.locator("svg.plan")).to_have_count(0)
    await screenshot(page, "task-refused")


async def test_the_tasks_list_counts_open_alerts_and_links_to_them(
    chromium: Browser, served: str, db: asyncpg.Connection, settings: Settings,
    producer: EventProducer,
) -> None:  # fmt: skip
    key = await seed_api_key(db, settings, key_id="ui-alerted")
    alarmed = submitted("Stalled somewhere", tenant_id="default")
    quiet = submitted("Nothing wrong here", tenant_id="default")
    stalled, lagging = raised(alarmed, "STALLED"), raised(alarmed, "OVERRUN_TOKENS")
    await producer.publish_many([alarmed, quiet, stalled, lagging, cleared(lagging)])

    page = await signed_in(chromium, served, key)
    row = page.locator("tr", has_text="Stalled somewhere")
    await expect(row.locator('td[data-label="Open alerts"]')).to_have_text("1 open", timeout=20_000)
    await expect(
        page.locator("tr", has_text="Nothing wrong here").locator('td[data-label="Open alerts"]')
    ).to_have_text("none")
    await row.get_by_role("link", name="1 open").click()
    await expect(page.get_by_role("heading", name="Alerts")).to_be_visible()
    alerts = page.get_by_role("table", name="Alerts").locator("tbody tr")
    await expect(alerts).to_have_count(1, timeout=20_000)
    await expect(alerts.first).to_contain_text("STALLED")
