"""The dashboard's alerts and agents pages in a real Chromium against the real API, projector,
broker and Postgres: alerts acknowledged with a note, raised and cleared live, never another
tenant's; each agent's state, partitions, lag and tasks in flight from the heartbeats, and
the events it emits, live."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from playwright.async_api import Browser, Locator, Page, ViewportSize, expect

from events import (
    SYSTEM_TENANT,
    Actor,
    AgentError,
    AgentHeartbeat,
    Event,
    EventProducer,
    PartitionLag,
    TasksInFlight,
    role_scopes,
)
from processors.monitor import MonitorState, Reading, alert_events, decide, limits_from_settings
from tests.api._support import seed_api_key
from tests.api.ui.browser import accessibility_violations, screenshot
from tests.events.inspection_samples import cleared, raised
from tests.projections.conftest import eventually, submitted
from wrenchai.settings import Settings

pytestmark = pytest.mark.usefixtures("topics", "projector")

TENANT = "default"
LIVE = 20_000  # ms: how long a page may take to show what the projector has just applied
NARROW: ViewportSize = {"width": 400, "height": 900}


async def signed_in(chromium: Browser, served: str, key: str, path: str) -> Page:
    """A page signed in with ``key``, then at ``path``."""
    page = await chromium.new_page(viewport={"width": 1280, "height": 900})
    await page.goto(f"{served}/ui")
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
    await page.goto(f"{served}{path}")
    return page


async def publish(producer: EventProducer, *events: Event) -> str:
    """Publishes one task's events in order; returns the last one's position."""
    positions = await producer.publish_many(events)
    return str(positions[-1])


async def projected(served: str, key: str, *positions: str) -> None:
    """Waits until the API reads what is at each position (?wait_for=)."""
    async with httpx.AsyncClient(base_url=served, headers={"X-API-Key": key}) as http:
        for position in positions:
            response = await http.get("/alerts", params={"wait_for": position, "limit": 1})
            assert response.status_code == 200, response.text


def alert_row(page: Page, alert: Event) -> Locator:
    return page.locator(f'tr[data-alert-id="{alert.payload.alert_id}"]')  # type: ignore[attr-defined]


async def check_page(page: Page, name: str) -> None:
    """Screenshots wide and narrow, and no serious accessibility violation."""
    await screenshot(page, name)
    assert await accessibility_violations(page) == []
    await page.set_viewport_size(NARROW)
    await screenshot(page, f"{name}-narrow")
    assert await accessibility_violations(page) == []


async def test_an_alert_is_acknowledged_with_a_note_and_shows_so_without_a_reload(
    chromium: Browser, served: str, db: asyncpg.Connection, settings: Settings,
    producer: EventProducer,
) -> None:  # fmt: skip
    """Acknowledge, write a note, send: the row says who acknowledged it and shows the note
    (the list is read again after the acknowledgement's position), and the API agrees."""
    key = await seed_api_key(db, settings, key_id="ui-admin")
    task = submitted("A stalled task", tenant_id=TENANT)
    stalled = raised(task, "STALLED", 1)
    failing = raised(task, "REPEATED_FAILURES", 1, level="critical", seconds=30)
    await projected(served, key, await publish(producer, task, stalled, failing))
    page = await signed_in(chromium, served, key, "/ui/alerts")
    row = alert_row(page, stalled)
    await expect(row).to_contain_text("stalled for the sample task")
    await expect(row.get_by_role("link")).to_have_attribute("href", f"/ui/tasks/{task.task_id}")
    await expect(row.locator('td[data-label="Acknowledged"]')).to_have_text("No")

    note = row.get_by_label("Note (optional)")
    await expect(note).to_be_hidden()
    await row.get_by_role("button", name="Acknowledge STALLED").click()
    await expect(note).to_be_focused()
    await note.fill("Restarted the search worker")
    await row.get_by_role("button", name="Send acknowledgement").click()
    acked = row.locator('td[data-label="Acknowledged"]')
    await expect(acked).to_contain_text("Yes, by apikey:ui-admin", timeout=LIVE)
    await expect(acked).to_contain_text("Restarted the search worker")
    await expect(row.get_by_role("button")).to_have_count(0)
    await expect(page.get_by_role("status")).to_have_text("Alert STALLED acknowledged.")
    other = alert_row(page, failing)
    await expect(other.get_by_role("button", name="Acknowledge REPEATED_FAILURES")).to_be_visible()
    await expect(other.get_by_label("Note (optional)")).to_be_hidden()

    async with httpx.AsyncClient(base_url=served, headers={"X-API-Key": key}) as http:
        body = (await http.get("/alerts", params={"code": "STALLED"})).json()
    [alert] = body["alerts"]
    assert alert["acknowledged"] is True
    assert alert["note"] == "Restarted the search worker"
    assert alert["acknowledged_by"] == "apikey:ui-admin"
    await check_page(page, "alerts")


async def test_an_acknowledgement_refused_says_why(
    chromium: Browser, served: str, db: asyncpg.Connection, settings: Settings,
    producer: EventProducer,
) -> None:  # fmt: skip
    """A viewer may read alerts but not acknowledge them: the refusal is shown as an alert
    and the row stays unacknowledged."""
    viewer = await seed_api_key(
        db, settings, key_id="ui-viewer", scopes=sorted(role_scopes("viewer"))
    )
    task = submitted("A slow task", tenant_id=TENANT)
    slow = raised(task, "OVERRUN_TIME", 1, level="info")
    await projected(served, viewer, await publish(producer, task, slow))
    page = await signed_in(chromium, served, viewer, "/ui/alerts")
    row = alert_row(page, slow)
    await row.get_by_role("button", name="Acknowledge OVERRUN_TIME").click()
    await row.get_by_role("button", name="Send acknowledgement").click()
    await expect(row.get_by_role("alert")).to_contain_text("You may not acknowledge alerts")
    await expect(row.locator('td[data-label="Acknowledged"]')).to_have_text("No")


async def test_alerts_raised_and_cleared_after_the_page_opened_show_live(
    chromium: Browser, served: str, db: asyncpg.Connection, settings: Settings,
    producer: EventProducer,
) -> None:  # fmt: skip
    """With every status shown, an alert raised while the page is open appears, open, and
    turns cleared with its reason when alert.cleared follows; no reload. A note being
    written when the row changes is kept, with its focus."""
    key = await seed_api_key(db, settings, key_id="ui-admin")
    page = await signed_in(chromium, served, key, "/ui/alerts")
    await expect(page.get_by_role("heading", name="Alerts")).to_be_visible()
    await page.get_by_label("Status").select_option("all")
    await page.get_by_role("button", name="Show").click()
    assert page.url.endswith("/ui/alerts?status=all")
    await expect(page.get_by_text("No alerts here.")).to_be_visible()

    task = submitted("A task going quiet", tenant_id=TENANT)
    up = raised(task, "STALLED", 1)
    await publish(producer, task, up)
    row = alert_row(page, up)
    await expect(row.locator('td[data-label="Status"]')).to_have_text("open", timeout=LIVE)
    await row.get_by_role("button", name="Acknowledge STALLED").click()
    note = row.get_by_label("Note (optional)")
    await note.fill("Half a thought")
    await publish(producer, cleared(up))
    status = row.locator('td[data-label="Status"]')
    await expect(status).to_contain_text("cleared", timeout=LIVE)
    await expect(status).to_contain_text("the condition no longer holds")
    await expect(note).to_have_value("Half a thought")
    await expect(note).to_be_focused()

    # The open alerts alone no longer list it.
    await page.get_by_label("Status").select_option("open")
    await page.get_by_role("button", name="Show").click()
    await expect(page.get_by_text("No alerts here.")).to_be_visible()
    await expect(row).to_have_count(0)


async def test_another_tenants_alerts_never_show(
    chromium: Browser, served: str, db: asyncpg.Connection, settings: Settings,
    producer: EventProducer,
) -> None:  # fmt: skip
    """Signed in as one tenant, an alert of another tenant is neither listed when the page
    opens nor brought in by a live read."""
    key = await seed_api_key(db, settings, key_id="ui-admin")
    theirs = submitted("Another tenant's task", tenant_id="globex")
    mine = submitted("My task", tenant_id=TENANT)
    their_alert, my_alert = raised(theirs, "STALLED", 1), raised(mine, "LOW_QUALITY", 1)
    await projected(
        served,
        key,
        await publish(producer, theirs, their_alert),
        await publish(producer, mine, my_alert),
    )
    page = await signed_in(chromium, served, key, "/ui/alerts?status=all")
    await expect(alert_row(page, my_alert)).to_be_visible()
    await expect(alert_row(page, their_alert)).to_have_count(0)

    # A later alert of each tenant: the page reads again for its own, and only its own shows.
    their_later, my_later = raised(theirs, "OVERRUN_TIME", 2), raised(mine, "OVERRUN_TOKENS", 2)
    await projected(served, key, await publish(producer, their_later))
    await publish(producer, my_later)
    await expect(alert_row(page, my_later)).to_be_visible(timeout=LIVE)
    await expect(page.locator("tr[data-alert-id]")).to_have_count(2)
    await expect(alert_row(page, their_alert)).to_have_count(0)
    await expect(alert_row(page, their_later)).to_have_count(0)


async def test_the_platform_admin_switches_to_the_platform_alerts_and_acknowledges_one(
    chromium: Browser, served: str, db: asyncpg.Connection, settings: Settings,
    producer: EventProducer,
) -> None:  # fmt: skip
    """With tenants:admin, a "Platform alerts" switch lists the platform's own alerts (no
    task) and acknowledges them as the platform's; a tenant's admin has no such switch."""
    readings = {"CONSUMER_LAG": [Reading("CONSUMER_LAG", "wrench-journey-agent", 50_000.0)]}
    _, transitions = decide(MonitorState(), readings, limits_from_settings(settings))  # type: ignore[arg-type]
    (lagging,) = alert_events(transitions, datetime.now(UTC))
    position = str(await producer.publish(lagging))
    platform_admin = await seed_api_key(
        db, settings, key_id="ui-platform", scopes=sorted(role_scopes("admin") | {"tenants:admin"})
    )
    tenant_admin = await seed_api_key(db, settings, key_id="ui-admin")
    await projected(served, tenant_admin, position)

    page = await signed_in(chromium, served, tenant_admin, "/ui/alerts")
    await expect(page.get_by_text("No alerts here.")).to_be_visible()
    await expect(page.get_by_label("Platform alerts")).to_have_count(0)
    await page.close()

    page = await signed_in(chromium, served, platform_admin, "/ui/alerts")
    await expect(page.get_by_text("No alerts here.")).to_be_visible()
    await page.get_by_label("Platform alerts").check()
    await page.get_by_role("button", name="Show").click()
    await expect(page.get_by_role("heading", name="Platform alerts")).to_be_visible()
    row = alert_row(page, lagging)
    await expect(row.locator('td[data-label="Task"]')).to_have_text("platform")
    await row.get_by_role("button", name="Acknowledge CONSUMER_LAG").click()
    await row.get_by_label("Note (optional)").fill("Scaling the journey agents")
    await row.get_by_role("button", name="Send acknowledgement").click()
    acked = row.locator('td[data-label="Acknowledged"]')
    await expect(acked).to_contain_text("Yes, by apikey:ui-platform", timeout=LIVE)
    await expect(acked).to_contain_text("Scaling the journey agents")


def heartbeat(agent_id: str, *, tasks: list[uuid.UUID], partitions: tuple[int, ...]) -> Event:
    """A heartbeat sent now by one instance of ``agent_id``: ``tasks`` of the test's tenant in
    flight, lag 2, 5, ... on ``partitions``, and a failed job of the tenant as its last error."""
    now = datetime.now(UTC)
    payload = AgentHeartbeat(
        agent_id=agent_id,
        instance="host-a:41",
        started_at=now - timedelta(minutes=30),
        interval_s=60.0,  # up for three intervals: longer than the test
        partitions=list(partitions),
        lag=[
            PartitionLag(
                partition=p, committed=100 * p, high_watermark=100 * p + 2 + 3 * i, lag=2 + 3 * i
            )
            for i, p in enumerate(partitions)
        ],
        jobs_running=len(tasks),
        tasks_in_flight={TENANT: TasksInFlight(count=len(tasks), task_ids=sorted(tasks))},
        last_error=AgentError(
            code="JOB_FAILED",
            message="a job failed with ToolTimeout (attempt 1 of 3); it is retried",
            task_id=tasks[0],
            tenant_id=TENANT,
            at=now - timedelta(seconds=20),
        ),
    )
    return Event.new(
        payload, tenant_id=SYSTEM_TENANT, actor=Actor(kind="agent", id=agent_id), occurred_at=now
    )


async def heard_from(db: asyncpg.Connection, *agents: str) -> None:
    """Waits until the projector holds a heartbeat of each agent."""

    async def held() -> bool:
        rows = await db.fetch("SELECT DISTINCT agent_id FROM agent_instances")
        return set(agents) <= {r["agent_id"] for r in rows}

    await eventually(held)


def agent(page: Page, agent_id: str) -> Locator:
    return page.locator(f'section[data-agent="{agent_id}"]')


async def test_agents_show_their_state_lag_tasks_and_events_live(
    chromium: Browser, served: str, db: asyncpg.Connection, settings: Settings,
    producer: EventProducer,
) -> None:  # fmt: skip
    """From the heartbeats: journey-agent up, with its partitions' lag, its tasks in flight
    as links and its last error; cost-guard never heard from reads not seen. An agent whose
    first heartbeat comes while the page is open turns up on the next status read, and an
    event an agent emits for the tenant is listed under it as it comes."""
    key = await seed_api_key(db, settings, key_id="ui-admin")
    tasks = [uuid.uuid4(), uuid.uuid4()]
    await producer.publish_many([heartbeat("journey-agent", tasks=tasks, partitions=(0, 2))])
    await heard_from(db, "journey-agent")
    page = await signed_in(chromium, served, key, "/ui/agents")

    journey = agent(page, "journey-agent")
    await expect(journey.locator("[data-state]")).to_have_attribute(
        "data-state", "up", timeout=LIVE
    )
    await expect(journey.get_by_role("heading", level=2)).to_have_text("journey-agent up")
    await expect(journey).to_contain_text("1 instance up · 2 tasks in flight · total lag 7")
    lag = journey.get_by_role("table", name="Lag of journey-agent per partition")
    await expect(lag.locator('tr[data-partition="0"] td[data-label="Lag"]')).to_have_text("2")
    await expect(lag.locator('tr[data-partition="2"] td[data-label="Lag"]')).to_have_text("5")
    for task_id in tasks:
        await expect(journey.get_by_role("link", name=str(task_id))).to_have_attribute(
            "href", f"/ui/tasks/{task_id}"
        )
    await expect(journey.locator(".last-error")).to_contain_text("JOB_FAILED")
    await expect(journey.locator(".last-error")).to_contain_text("ToolTimeout")

    guard = agent(page, "cost-guard")
    await expect(guard.locator("[data-state]")).to_have_attribute("data-state", "not_seen")
    await expect(guard.get_by_role("heading", level=2)).to_have_text("cost-guard not seen")
    await expect(guard).to_contain_text("no heartbeat from this agent in the last day")
    await expect(guard.get_by_role("heading", name="Lag")).to_be_hidden()

    # A first heartbeat while the page is open: the periodic status read picks it up.
    await producer.publish_many([heartbeat("super-agent", tasks=[tasks[0]], partitions=(1,))])
    await expect(agent(page, "super-agent").locator("[data-state]")).to_have_attribute(
        "data-state", "up", timeout=LIVE
    )

    # The inspector raises an alert for one of the tenant's tasks: listed under it, live.
    task = submitted("Watched by the inspector", tenant_id=TENANT)
    await publish(producer, task, raised(task, "STALLED", 1))
    inspector = agent(page, "inspector-agent")
    event = inspector.locator('ol.events li[data-type="alert.raised"]')
    await expect(event).to_be_visible(timeout=LIVE)
    await expect(event.get_by_role("link")).to_have_attribute("href", f"/ui/tasks/{task.task_id}")
    await check_page(page, "agents")
