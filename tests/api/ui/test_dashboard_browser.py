"""The dashboard in a real Chromium against the real API, projector, broker and Postgres:
signing in with an API key, a refused key, submitting a task and watching its row change
live, without a reload, when it is cancelled."""

from __future__ import annotations

import signal
from pathlib import Path

import asyncpg
import httpx
import pytest
from playwright.async_api import Browser, expect

from events import EventProducer
from tests.api._support import seed_api_key
from tests.api.ui.browser import accessibility_violations, screenshot
from tests.events.execution_samples import Story, search_retried
from tests.events.planning_samples import planning_events
from tests.processors.super.test_super_agent_worker import WorkerProcess
from tests.projections.conftest import submitted
from wrenchai.settings import Settings

pytestmark = pytest.mark.usefixtures("topics", "projector")

PASSWORD = "correct horse battery staple"
RESEARCH = "Research how WrenchAI recovers from errors and write a short report"


async def test_sign_in_submit_and_watch_a_task_change_live(
    chromium: Browser, served: str, db: asyncpg.Connection, settings: Settings
) -> None:
    key = await seed_api_key(db, settings, key_id="ui-admin")
    page = await chromium.new_page()
    await page.goto(f"{served}/ui")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await screenshot(page, "sign-in")
    assert await accessibility_violations(page) == []

    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
    assert page.url.endswith("/ui/tasks")

    await page.get_by_label("Description").fill("Watch me from the dashboard")
    await page.get_by_role("button", name="Submit", exact=True).click()
    row = page.locator("tr", has_text="Watch me from the dashboard")
    await expect(row).to_be_visible(timeout=20_000)
    await expect(row.locator(".badge")).to_have_text("submitted")
    await screenshot(page, "tasks")
    assert await accessibility_violations(page) == []

    # Cancelled from its row: the row turns cancelled on the live stream, no reload.
    await row.get_by_role("button", name="Cancel task Watch me from the dashboard").click()
    await expect(row.locator(".badge")).to_have_text("cancelled", timeout=20_000)
    await expect(row.get_by_role("button")).to_have_count(0)


async def test_a_refused_key_says_so_and_shows_nothing(chromium: Browser, served: str) -> None:
    page = await chromium.new_page()
    await page.goto(f"{served}/ui/tasks")
    await page.get_by_label("API key").fill("wk_not-a-real-key")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_have_text("That credential was not accepted.")
    await expect(page.get_by_role("heading", name="Tasks")).to_have_count(0)


async def test_the_page_loads_nothing_from_elsewhere(chromium: Browser, served: str) -> None:
    """Offline like the rest: every request the page makes is to its own origin, and its
    policy forbids any other."""
    page = await chromium.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    response = await page.goto(f"{served}/ui")
    assert response is not None
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    await page.wait_for_load_state("networkidle")
    assert requested and all(url.startswith(served) for url in requested), requested


async def test_a_tasks_plan_is_drawn_and_its_stages_turn_completed_live(
    chromium: Browser, served: str, db: asyncpg.Connection, settings: Settings,
    producer: EventProducer,
) -> None:  # fmt: skip
    """The task page draws the plan's stages as a graph; as the stages run, the graph and
    the steps change on the task's live events, with no reload."""
    key = await seed_api_key(db, settings, key_id="ui-admin")
    task = submitted("Draw my plan", tenant_id="default")
    await producer.publish_many([task, *planning_events(task)])
    page = await chromium.new_page()
    await page.goto(f"{served}/ui")
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
    await page.goto(f"{served}/ui/tasks/{task.task_id}")
    search = page.locator('.task-plan svg.plan rect[data-stage="search"]')
    await expect(search).to_have_attribute("data-status", "pending", timeout=20_000)
    await expect(page.locator('.task-plan svg.plan rect[data-stage="write"]')).to_be_visible()
    await screenshot(page, "task-planned")

    story = Story(task)
    search_retried(story)
    await producer.publish_many(story.events)
    await expect(search).to_have_attribute("data-status", "completed", timeout=20_000)
    step = page.get_by_role("table", name="Steps").locator('tr[data-stage="search"]')
    await expect(step.locator(".badge")).to_have_text("completed")
    await expect(step).to_contain_text("TOOL_TIMEOUT")  # the first attempt's failure, kept
    await screenshot(page, "task-running")


async def test_a_narrow_screen_folds_the_tables_and_never_scrolls_sideways(
    chromium: Browser, served: str, db: asyncpg.Connection, settings: Settings,
    producer: EventProducer,
) -> None:  # fmt: skip
    """On a phone's width the tables become one block per row, labelled, and the page is no
    wider than the screen: only the plan's graph scrolls inside its own box."""
    key = await seed_api_key(db, settings, key_id="ui-narrow")
    task = submitted("Read me on a phone", tenant_id="default")
    story = Story(task)
    search_retried(story)
    await producer.publish_many([task, *planning_events(task), *story.events])
    page = await chromium.new_page(viewport={"width": 390, "height": 844})
    await page.goto(f"{served}/ui")
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    row = page.locator("tr", has_text="Read me on a phone")
    await expect(row).to_be_visible(timeout=20_000)
    await expect(row.locator('td[data-label="Status"]')).to_have_css("display", "block")
    await screenshot(page, "tasks-narrow")
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390

    await page.goto(f"{served}/ui/tasks/{task.task_id}")
    steps = page.get_by_role("table", name="Steps")
    await expect(steps.locator('tr[data-stage="search"] .badge')).to_have_text(
        "completed", timeout=20_000
    )
    await screenshot(page, "task-narrow")
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    assert await accessibility_violations(page) == []


async def test_the_offline_research_task_submitted_from_the_page_completes_live(
    chromium: Browser, served: str, db: asyncpg.Connection, settings: Settings, tmp_path: Path
) -> None:
    """The real agents run the offline research task submitted from the page. They start
    only once the task's page is open, so the page sees the task planned and its stages
    complete on its live stream alone: the page is never reloaded."""
    key = await seed_api_key(db, settings, key_id="ui-research")
    page = await chromium.new_page()
    await page.goto(f"{served}/ui")
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_label("Description").fill(RESEARCH)
    await page.get_by_label("Playbook (optional)").fill("research_report")
    await page.get_by_role("button", name="Submit", exact=True).click()
    await page.get_by_role("link", name=RESEARCH).click()
    await expect(page.get_by_role("heading", name=RESEARCH)).to_be_visible()
    await expect(page.get_by_text("Not planned yet.")).to_be_visible()
    await page.evaluate("window.sameDocument = true")

    agents = [
        WorkerProcess(settings, tmp_path / f"{name}.out", name=name)
        for name in ("super-agent", "journey-agent", "inspector-agent")
    ]
    try:
        stages = page.locator(".task-plan svg.plan rect")
        await expect(stages).to_have_count(3, timeout=90_000)
        for stage in ("search", "summarize", "report"):
            rect = page.locator(f'.task-plan svg.plan rect[data-stage="{stage}"]')
            await expect(rect).to_have_attribute("data-status", "completed", timeout=90_000)
        await expect(page.locator("h1 + p .badge")).to_have_text("completed", timeout=30_000)
        await expect(page.locator("details.evaluation")).to_have_count(3, timeout=30_000)
        await expect(page.locator(".report h1")).to_be_visible()
        assert await page.evaluate("window.sameDocument") is True
        await screenshot(page, "task-completed")
    finally:
        for agent in agents:
            agent.stop(signal.SIGKILL)


async def test_a_user_signs_in_with_a_password_and_a_viewer_may_not_submit(
    chromium: Browser, served: str, db: asyncpg.Connection, settings: Settings
) -> None:
    key = await seed_api_key(db, settings, key_id="ui-users")
    async with httpx.AsyncClient(base_url=served, headers={"X-API-Key": key}) as client:
        created = await client.post(
            "/users",
            json={"username": "viewer@example.com", "password": PASSWORD, "role": "viewer"},
        )
        assert created.status_code == 201, created.text
    page = await chromium.new_page()
    await page.goto(f"{served}/ui")
    # Signed out, the page offers nothing but signing in.
    await expect(page.get_by_role("navigation", name="Sections")).to_be_hidden()
    await expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
    await page.get_by_role("tab", name="User and password").click()
    await page.get_by_label("User name").fill("viewer@example.com")
    await page.get_by_label("Password").fill("not the password")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_have_text("That credential was not accepted.")

    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
    await expect(page.locator("#principal")).to_have_text("default · viewer")
    await page.get_by_label("Description").fill("A viewer's attempt")
    await page.get_by_role("button", name="Submit", exact=True).click()
    refusal = page.get_by_role("form", name="Submit a task").get_by_role("alert")
    await expect(refusal).to_contain_text("tasks:write")
