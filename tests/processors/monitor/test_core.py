"""The ResourceMonitor's pure core: raise once above a threshold, clear once back at or
below the clear line, never flap around the threshold, clear what is no longer reported,
and keep what could not be read."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from events import SYSTEM_TENANT, AlertCleared, AlertCode, AlertRaised
from processors.monitor import (
    Limit,
    MonitorState,
    Reading,
    Window,
    alert_events,
    alert_id,
    decide,
    limits_from_settings,
)
from processors.monitor.core import restore
from wrenchai.settings import Settings

LIMITS: dict[AlertCode, Limit] = {
    "CONSUMER_LAG": Limit.of(100, 0.8),
    "MEMORY_HIGH": Limit.of(1_024, 0.8),
    "ERROR_RATE": Limit.of(6, 0.8),
    "DLQ_GROWTH": Limit.of(20, 0.8),
}
GROUP = "wrench-journey-agent"


def lag(value: float | None, subject: str = GROUP) -> dict[AlertCode, list[Reading]]:
    return {"CONSUMER_LAG": [Reading("CONSUMER_LAG", subject, value)]}


def run(values: list[float | None]) -> tuple[MonitorState, list[AlertRaised | AlertCleared]]:
    state, out = MonitorState(), []
    for value in values:
        state, transitions = decide(state, lag(value), LIMITS)
        out += transitions
    return state, out


def test_an_alert_is_raised_once_while_the_figure_stays_above_the_threshold() -> None:
    state, out = run([50, 150, 300, 120])
    assert [type(t) for t in out] == [AlertRaised]
    raised = out[0]
    assert isinstance(raised, AlertRaised)
    assert raised.code == "CONSUMER_LAG" and raised.level == "warning"
    assert raised.alert_id == f"platform:CONSUMER_LAG:{GROUP}:1"
    assert raised.details["value"] == 150 and raised.details["threshold"] == 100
    assert raised.details["subject"] == GROUP and raised.details["episode"] == 1
    assert state.open == {("CONSUMER_LAG", GROUP): raised.alert_id}


def test_the_threshold_itself_is_not_above_it() -> None:
    assert run([100, 100])[1] == []


def test_an_alert_clears_once_back_at_or_below_the_clear_line() -> None:
    state, out = run([150, 80, 10, 50])
    assert [type(t) for t in out] == [AlertRaised, AlertCleared]
    cleared = out[1]
    assert isinstance(cleared, AlertCleared)
    assert cleared.alert_id == out[0].alert_id and "80" in cleared.reason
    assert state.open == {}


def test_a_figure_hovering_at_the_threshold_does_not_flap() -> None:
    """Between the clear line (80) and the threshold (100) nothing changes either way."""
    _, out = run([101, 99, 95, 101, 85, 99, 101, 90])
    assert [type(t) for t in out] == [AlertRaised]


def test_the_next_episode_gets_the_next_id() -> None:
    _, out = run([150, 10, 150])
    ids = [t.alert_id for t in out]
    assert ids == [alert_id("CONSUMER_LAG", GROUP, 1)] * 2 + [alert_id("CONSUMER_LAG", GROUP, 2)]


def test_a_figure_that_could_not_be_read_changes_nothing() -> None:
    state, out = run([150, None, None])
    assert [type(t) for t in out] == [AlertRaised]
    state, more = decide(state, {}, LIMITS)  # the code was not read at all
    assert more == [] and state.open


def test_an_alert_whose_subject_is_no_longer_reported_is_cleared() -> None:
    state, _ = run([150])
    state, out = decide(state, {"CONSUMER_LAG": []}, LIMITS)
    assert len(out) == 1 and isinstance(out[0], AlertCleared)
    assert out[0].reason == "no longer reported" and state.open == {}


def test_subjects_and_codes_are_independent() -> None:
    readings: dict[AlertCode, list[Reading]] = {
        "CONSUMER_LAG": [Reading("CONSUMER_LAG", "a", 500), Reading("CONSUMER_LAG", "b", 5)],
        "MEMORY_HIGH": [Reading("MEMORY_HIGH", "a", 2_000)],
    }
    _, out = decide(MonitorState(), readings, LIMITS)
    assert [(t.code, t.alert_id) for t in out] == [
        ("CONSUMER_LAG", "platform:CONSUMER_LAG:a:1"),
        ("MEMORY_HIGH", "platform:MEMORY_HIGH:a:1"),
    ]


def test_a_long_subject_is_hashed_into_an_id_that_fits() -> None:
    found = alert_id("MEMORY_HIGH", "journey-agent@" + "h" * 250 + ":1", 3)
    assert len(found) <= 200 and found.startswith("platform:MEMORY_HIGH:")
    assert found.endswith(":3")


def test_events_are_platform_alerts_with_ids_from_the_alert() -> None:
    """Tenant _system, no task; the same transition always gets the same event id."""
    _, out = run([150, 10])
    now = datetime(2026, 3, 1, tzinfo=UTC)
    events = alert_events(out, now)
    assert [e.type for e in events] == ["alert.raised", "alert.cleared"]
    assert all(e.tenant_id == SYSTEM_TENANT and e.task_id is None for e in events)
    assert [e.id for e in alert_events(out, now)] == [e.id for e in events]
    assert len({e.id for e in events}) == 2 and all(isinstance(e.id, uuid.UUID) for e in events)


def test_restored_state_continues_where_the_read_model_stands() -> None:
    """An open alert is not raised again after a restart; the next episode follows the last."""
    state = restore([("CONSUMER_LAG", GROUP, 1, False), ("CONSUMER_LAG", GROUP, 2, True)])
    state, out = decide(state, lag(500), LIMITS)
    assert out == []
    state, out = decide(state, lag(0), LIMITS)
    assert out[0].alert_id == alert_id("CONSUMER_LAG", GROUP, 2)
    _, out = decide(state, lag(500), LIMITS)
    assert out[0].alert_id == alert_id("CONSUMER_LAG", GROUP, 3)


def test_a_window_counts_the_rises_within_it_and_survives_a_counter_restart() -> None:
    window = Window(60)
    for at, value in [(0, 0), (10, 5), (20, 8), (30, 2), (40, 4)]:
        window = window.add(at, value)
    assert window.increase == 5 + 3 + 2 + 2  # 8 -> 2 is a restart: counts from there
    window = window.add(95, 4)  # samples before 35 leave, but one stays to measure from
    assert window.samples == ((30, 2), (40, 4), (95, 4)) and window.increase == 2
    assert window.add(200, 4).increase == 0
    assert Window(300).add(0, 0).add(10, 30).per_minute() == 6


def test_limits_come_from_the_settings() -> None:
    limits = limits_from_settings(Settings(monitor_lag_records=500, monitor_clear_ratio=0.5))
    assert limits["CONSUMER_LAG"] == Limit(500, 250)
    assert limits["DLQ_GROWTH"].raise_above == Settings().monitor_dlq_growth
