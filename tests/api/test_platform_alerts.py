"""The platform's own alerts at GET /alerts and POST /alerts/{alert_id}/ack: the
ResourceMonitor's alerts (tenant _system, no task) are listed with ``platform=true`` to the
platform's admin (tenants:admin) only, never among a tenant's own alerts."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import httpx
import pytest

from events import EventProducer, role_scopes
from processors.monitor import MonitorState, Reading, alert_events, decide, limits_from_settings
from tests.api._support import seed_api_key, serve
from wrenchai.settings import Settings

pytestmark = pytest.mark.usefixtures("topics", "projector")


async def _raise_platform_alert(producer: EventProducer, settings: Settings) -> tuple[str, str]:
    """Publish a CONSUMER_LAG raise as the monitor does; its alert id and log position."""
    readings = {"CONSUMER_LAG": [Reading("CONSUMER_LAG", "wrench-journey-agent", 50_000.0)]}
    _, transitions = decide(MonitorState(), readings, limits_from_settings(settings))  # type: ignore[arg-type]
    (event,) = alert_events(transitions, datetime.now(UTC))
    position = await producer.publish(event)
    return transitions[0].alert_id, str(position)


async def test_platform_alerts_are_for_the_platform_admin_only(
    settings: Settings, db: asyncpg.Connection, producer: EventProducer
) -> None:
    alert_id, position = await _raise_platform_alert(producer, settings)
    admin = await seed_api_key(
        db, settings, scopes=sorted(role_scopes("admin") | {"tenants:admin"})
    )
    operator = await seed_api_key(db, settings, scopes=sorted(role_scopes("admin")))
    async with serve(settings) as client:

        async def listing(key: str, **params: str) -> httpx.Response:
            return await client.get(
                "/alerts", params={"wait_for": position, **params}, headers={"X-API-Key": key}
            )

        platform = await listing(admin, platform="true")
        assert platform.status_code == 200
        (alert,) = platform.json()["alerts"]
        assert alert["alert_id"] == alert_id and alert["task_id"] is None
        assert alert["code"] == "CONSUMER_LAG" and alert["status"] == "open"
        # Not among the admin's own tenant's alerts, and not for a tenant's admin at all.
        assert (await listing(admin)).json()["alerts"] == []
        refused = await listing(operator, platform="true")
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "FORBIDDEN"

        ack = await client.post(
            f"/alerts/{alert_id}/ack",
            params={"platform": "true"},
            json={"note": "scaling the journey agents"},
            headers={"X-API-Key": admin},
        )
        assert ack.status_code == 202 and ack.json()["task_id"] is None
        seen = await listing(admin, platform="true", wait_for=ack.json()["position"])
        assert seen.json()["alerts"][0]["acknowledged"] is True
