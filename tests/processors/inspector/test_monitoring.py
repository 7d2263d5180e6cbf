"""Progress monitoring, without Kafka: the conditions that hold for a task's folded view at a
given time, and the alert events they call for."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from events import AlertCleared, AlertRaised, Event, TaskCompleted, UsageRecorded
from processors.inspector.monitoring import (
    MIN_ESTIMATE_S,
    AlertThresholds,
    Condition,
    OpenAlerts,
    TaskWatch,
    alert_event,
    alert_transitions,
    evolve,
    monitor_progress,
    parse_overrides,
    watch,
)
from tests.events.execution_samples import SEARCH_TIMEOUT, Story
from tests.events.inspection_samples import INSPECTOR, evaluation
from tests.events.planning_samples import PLAN, planning_events
from tests.projections.conftest import submitted

LIMITS = AlertThresholds(
    stall_after_s=120.0, overrun_factor=1.5, low_quality_score=0.4, repeated_failures=3
)
# The same, with time overruns out of the way of the tests about stalls.
QUIET = replace(LIMITS, overrun_factor=1_000.0)


def fold(events: Iterable[Event], view: TaskWatch | None = None) -> TaskWatch:
    for event in events:
        view = evolve(view, event)
    assert view is not None
    return view


def planned(constraints: dict[str, object] | None = None) -> tuple[Event, TaskWatch]:
    first = submitted()
    if constraints is not None:
        first = first.model_copy(
            update={"payload": first.payload.model_copy(update={"constraints": constraints})}
        )
    return first, fold([first, *planning_events(first)])


def codes(conditions: Iterable[Condition]) -> list[str]:
    return [c.code for c in conditions]


def after(view: TaskWatch, seconds: float) -> datetime:
    assert view.last_event_at is not None
    return view.last_event_at + timedelta(seconds=seconds)


def apply(view: TaskWatch, cause: Event, payloads: list[AlertRaised | AlertCleared]) -> TaskWatch:
    """The view once the emitted alerts came back through the log."""
    at = view.last_event_at
    assert at is not None
    return fold([alert_event(cause, p, at, INSPECTOR) for p in payloads], view)


def test_a_fresh_task_has_no_condition() -> None:
    """Just planned, nothing late, nothing failed: nothing to say."""
    _, view = planned()
    assert monitor_progress(view, after(view, 1), LIMITS) == []
    assert view.stages_total == 2 and view.estimated_s == PLAN.critical_path_seconds


def test_stalled_is_found_by_time_alone() -> None:
    """No event is needed: the same view is fine at 119 s and STALLED at 120 s."""
    _, view = planned()
    assert monitor_progress(view, after(view, 119), QUIET) == []
    [stalled] = monitor_progress(view, after(view, 120), QUIET)
    assert (stalled.code, stalled.level) == ("STALLED", "warning")
    assert stalled.details["stall_after_s"] == 120.0


def test_alert_events_do_not_count_as_activity() -> None:
    """The STALLED alert itself must not end the stall it reports (or it would flap)."""
    first, view = planned()
    now = after(view, 130)
    raised = watch(view, now, QUIET)
    view = fold([alert_event(first, p, now, INSPECTOR) for p in raised], view)
    assert codes(monitor_progress(view, now + timedelta(seconds=1), QUIET)) == ["STALLED"]
    assert watch(view, now + timedelta(seconds=1), QUIET) == []


def test_a_planned_backoff_extends_the_quiet_time() -> None:
    """A retry waiting out a 100 s backoff is not stalled 120 s after the recovery."""
    first, view = planned()
    story = Story(first)
    story.started("search", 1, "web.search", "1.2.0")
    story.failed("search", 1, SEARCH_TIMEOUT, duration_s=1)
    story.recovery("search", 1, SEARCH_TIMEOUT, "retry", reason="transient", delay_s=100)
    view = fold(story.events[:-1], view)  # planned, not yet executed
    assert monitor_progress(view, after(view, 150), QUIET) == []
    assert codes(monitor_progress(view, after(view, 221), QUIET)) == ["STALLED"]


def test_overrun_time_uses_the_critical_path_with_a_floor() -> None:
    """The 25 s plan may take 1.5 x 30 s (the floor) before OVERRUN_TIME, counted from the
    plan; a plan with no time estimate never overruns."""
    _, view = planned()
    assert view.planned_at is not None
    limit = LIMITS.overrun_factor * max(PLAN.critical_path_seconds, MIN_ESTIMATE_S)
    relaxed = AlertThresholds(stall_after_s=100_000)
    assert monitor_progress(view, view.planned_at + timedelta(seconds=limit), relaxed) == []
    [late] = monitor_progress(view, view.planned_at + timedelta(seconds=limit + 1), relaxed)
    assert late.code == "OVERRUN_TIME" and late.details["limit_s"] == limit
    unestimated = TaskWatch("t", "acme", planned_at=view.planned_at, last_event_at=view.planned_at)
    assert monitor_progress(unestimated, view.planned_at + timedelta(hours=9), relaxed) == []


def test_overrun_tokens_counts_each_usage_once() -> None:
    """900 estimated tokens (floored to 1000) x 1.5: 1500 is fine, 1501 overruns; the same
    usage.recorded delivered twice counts once. Planning's own usage counts too."""
    first, view = planned()
    planning_tokens = view.tokens
    assert planning_tokens > 0
    usage = first.derive(
        UsageRecorded(
            operation="execute",
            model="gpt-4o-mini",
            input_tokens=1000 - planning_tokens,
            output_tokens=500,
            total_tokens=1500 - planning_tokens,
        ),
        step="usage/1",
        actor=INSPECTOR,
    )
    view = fold([usage, usage], view)
    assert view.tokens == 1500 and monitor_progress(view, after(view, 1), LIMITS) == []
    more = first.derive(
        UsageRecorded(
            operation="evaluate",
            model="gpt-4o-mini",
            input_tokens=1,
            output_tokens=0,
            total_tokens=1,
        ),
        step="usage/2",
        actor=INSPECTOR,
    )
    [over] = monitor_progress(fold([more], view), after(view, 1), LIMITS)
    assert over.code == "OVERRUN_TOKENS" and over.details["tokens"] == 1501


def test_low_quality_follows_the_latest_evaluation() -> None:
    """A 0.2 score is LOW_QUALITY; a later 0.8 ends it."""
    first, view = planned()
    view = fold([evaluation(first, passed=0, failed=3, decision="retry")], view)
    [low] = monitor_progress(view, after(view, 1), LIMITS)
    assert (low.code, low.details["quality_score"]) == ("LOW_QUALITY", 0.2)
    view = fold([evaluation(first, attempt=2, passed=3, seconds=11)], view)
    assert monitor_progress(view, after(view, 1), LIMITS) == []


def test_repeated_failures_is_critical_and_counts_distinct_attempts() -> None:
    """Three failed attempts (one delivered twice still counts once) is critical."""
    first, view = planned()
    story = Story(first)
    for attempt in (1, 2, 3):
        story.started("search", attempt, "web.search", "1.2.0")
        story.failed("search", attempt, SEARCH_TIMEOUT, duration_s=1)
    view = fold(story.events[:4], view)
    view = fold(story.events[3:4], view)
    assert monitor_progress(view, after(view, 1), LIMITS) == []
    [failures] = monitor_progress(fold(story.events[4:], view), after(view, 2), LIMITS)
    assert (failures.code, failures.level) == ("REPEATED_FAILURES", "critical")
    assert failures.details["failed_attempts"] == 3 and failures.details["retries"] == 2


def test_per_task_overrides_replace_the_settings() -> None:
    """constraints.alerts = {stall_after_s: 30, overrun_factor: 2} applies to that task only."""
    _, view = planned({"alerts": {"stall_after_s": 30, "overrun_factor": 2}})
    assert codes(monitor_progress(view, after(view, 31), LIMITS)) == ["STALLED"]
    assert view.planned_at is not None
    at = view.planned_at + timedelta(seconds=2 * MIN_ESTIMATE_S + 1)
    assert codes(monitor_progress(view, at, AlertThresholds(stall_after_s=999))) == [
        "STALLED",
        "OVERRUN_TIME",
    ]
    _, plain = planned()
    assert monitor_progress(plain, after(plain, 31), LIMITS) == []


def test_overrides_are_validated() -> None:
    """Bad overrides are refused with the field named (the API's check), and dropped one by
    one when a task on the log carries them."""
    assert parse_overrides(None) == parse_overrides({}) == parse_overrides({"alerts": None})
    assert parse_overrides({"alerts": {"repeated_failures": 5}}).repeated_failures == 5
    with pytest.raises(ValueError, match=r"constraints\.alerts\.overrun_factor"):
        parse_overrides({"alerts": {"overrun_factor": 0.5}})
    with pytest.raises(ValueError, match=r"constraints\.alerts\.loudness"):
        parse_overrides({"alerts": {"loudness": 11}})
    with pytest.raises(ValueError, match="must be an object"):
        parse_overrides({"alerts": [30]})
    _, view = planned({"alerts": {"stall_after_s": 30, "overrun_factor": 0.5, "x": 1}})
    assert view.overrides.stall_after_s == 30 and view.overrides.overrun_factor is None


def test_an_alert_fires_once_while_its_condition_holds() -> None:
    """The first look raises STALLED with id TASK:STALLED:1; once that raise is on the log,
    further looks emit nothing."""
    first, view = planned()
    now = after(view, 200)
    [raise_] = watch(view, now, QUIET)
    assert isinstance(raise_, AlertRaised)
    assert raise_.alert_id == f"{first.task_id}:STALLED:1" and raise_.level == "warning"
    view = apply(view, first, [raise_])
    assert watch(view, now + timedelta(seconds=5), QUIET) == []
    assert watch(view, now + timedelta(seconds=500), QUIET) == []


def test_an_alert_clears_and_is_raised_again_with_a_new_id() -> None:
    """STALLED, then an event arrives (cleared), then the task stalls again: the second
    alert is TASK:STALLED:2."""
    first, view = planned()
    view = apply(view, first, watch(view, after(view, 200), QUIET))
    story = Story(first)
    started = story.started("search", 1, "web.search", "1.2.0")
    started = started.model_copy(update={"occurred_at": after(view, 201)})
    view = fold([started], view)
    [clear] = watch(view, after(view, 1), QUIET)
    assert isinstance(clear, AlertCleared) and clear.alert_id.endswith(":STALLED:1")
    view = apply(view, started, [clear])
    assert view.alerts.open == {}
    [again] = watch(view, after(view, 121), QUIET)
    assert isinstance(again, AlertRaised) and again.alert_id == f"{first.task_id}:STALLED:2"


def test_a_closed_task_clears_every_open_alert() -> None:
    """When the task ends, its open alerts clear with that reason, and nothing is raised."""
    first, view = planned()
    view = apply(view, first, watch(view, after(view, 200), QUIET))
    done = Story(first).add(TaskCompleted(output=None, summary="done"), "completed")
    view = fold([done], view)
    assert not view.is_open and monitor_progress(view, after(view, 999), QUIET) == []
    [clear] = watch(view, after(view, 999), QUIET)
    assert isinstance(clear, AlertCleared) and clear.reason == "the task ended"
    view = apply(view, done, [clear])
    assert view.alerts.open == {} and watch(view, after(view, 9999), QUIET) == []


def test_transitions_are_deterministic_and_ordered() -> None:
    """Clears first, then raises, each in code order; the n of an id continues the count."""
    open_alerts = OpenAlerts(
        "t1", open={"LOW_QUALITY": "t1:LOW_QUALITY:2"}, raised={"LOW_QUALITY": 2, "STALLED": 4}
    )
    conditions = [
        Condition("REPEATED_FAILURES", "critical", "3 failed attempts", {}),
        Condition("STALLED", "warning", "no event", {}),
    ]
    out = alert_transitions(open_alerts, conditions, task_closed=False)
    assert [(type(p).__name__, p.alert_id) for p in out] == [
        ("AlertCleared", "t1:LOW_QUALITY:2"),
        ("AlertRaised", "t1:STALLED:5"),
        ("AlertRaised", "t1:REPEATED_FAILURES:1"),
    ]
    assert out == alert_transitions(open_alerts, conditions, task_closed=False)


def test_replayed_alert_events_give_the_same_ids() -> None:
    """Folding the same history twice and deciding at the same time emits the same events."""
    first, view = planned()
    now = after(view, 300)
    one = [alert_event(first, p, now, INSPECTOR) for p in watch(view, now, LIMITS)]
    _, again = planned()
    again = fold([first, *planning_events(first)])
    two = [alert_event(first, p, now, INSPECTOR) for p in watch(again, now, LIMITS)]
    assert [e.id for e in one] == [e.id for e in two] and len(one) == 2  # stalled, overrun


def test_thresholds_come_from_settings() -> None:
    """WRENCH_STALL_AFTER_S and friends are the platform's thresholds."""
    from wrenchai.settings import Settings

    limits = AlertThresholds.from_settings(Settings(stall_after_s=9, repeated_failures=7))
    assert (limits.stall_after_s, limits.repeated_failures) == (9, 7)
