"""What ``wrenchai watch`` shows, folded from the messages of ``WS /ws/tasks/{task_id}``.

:func:`fold` is pure: ``fold(view, message) -> view``, with no clock, terminal or socket, so
a recorded message sequence replays to the same view. The command's shell
(:mod:`wrenchai._cli_watch`) owns the socket and the screen.

Two kinds of repeat are left out. A message at a position the view has already passed is
one the server sent again (after a reconnection, say): :func:`accepts` says no and the fold
leaves the view as it was, position and all. An event whose id the view has seen at another
position is one the log holds twice (delivery is at-least-once and ids are deterministic):
its position counts, its content does not, so no token or dollar is counted twice.

Payloads are read leniently, as the API serves them (a newer API may add fields, a shredded
tenant's content reads ``[shredded]``): a field of the wrong shape is shown as unknown rather
than stopping the view.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from events import END_STATUS

TaskStatus = Literal["connecting", "submitted", "running", "completed", "failed", "cancelled"]
StageStatus = Literal["pending", "running", "completed", "failed", "recovering", "skipped"]

EXIT_STATUS: dict[str, int] = {"completed": 0, "failed": 1, "cancelled": 2}
"""How ``wrenchai watch`` exits for each way a task ends."""
NOT_WATCHED = 3
"""Exit status when the task could not be watched: no connection, a credential the API
refused, or a task it does not know (or another tenant's)."""

_ENDINGS: dict[object, TaskStatus] = {
    "completed": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
}
# How far along its attempt a running stage is, for its bar: the step has started, its tool
# has been called, the tool has answered.
_PHASES = {"started": 0.15, "calling": 0.4, "returned": 0.75}
MAX_EVALUATIONS = 50


@dataclass(frozen=True)
class Stage:
    """One stage of the plan as far as the stream has told."""

    id: str
    role: str = "?"
    tool: str = "?"
    model: str | None = None
    optional: bool = False
    status: StageStatus = "pending"
    attempt: int = 0
    phase: str = ""
    error: str | None = None
    recovery: str | None = None
    score: float | None = None
    interval: tuple[float, float] | None = None
    decision: str | None = None

    @property
    def fraction(self) -> float:
        """How much of the stage is done, 0 to 1, for its progress bar."""
        if self.status in ("completed", "skipped"):
            return 1.0
        if self.status == "running":
            return _PHASES.get(self.phase, 0.0)
        return 0.0


@dataclass(frozen=True)
class Evaluation:
    """The InspectorAgent's verdict on one attempt of a stage."""

    stage_id: str
    attempt: int
    score: float
    interval: tuple[float, float]
    confidence: float | None
    decision: str


@dataclass(frozen=True)
class Alert:
    """An alert of the task; ``cleared`` once its condition no longer holds."""

    alert_id: str
    level: str
    code: str
    message: str
    cleared: bool = False
    acknowledged: bool = False


@dataclass(frozen=True)
class WatchView:
    """Everything the watch screen shows about one task."""

    task_id: str
    status: TaskStatus = "connecting"
    description: str | None = None
    playbook: str | None = None
    roles: tuple[str, ...] = ()
    stages: tuple[Stage, ...] = ()
    tokens: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tool_cost_usd: float = 0.0
    reported_cost_usd: float = 0.0
    estimated_tokens: int = 0
    estimated_cost_usd: float = 0.0
    estimated_seconds: float = 0.0
    elapsed_s: float | None = None
    evaluations: tuple[Evaluation, ...] = ()
    alerts: tuple[Alert, ...] = ()
    outcome: str | None = None
    position: str | None = None
    events: int = 0
    live: bool = False
    ended: bool = False
    seen: frozenset[str] = field(default_factory=frozenset, repr=False)

    @property
    def cost_usd(self) -> float:
        """Dollars spent so far: what the tool calls cost, or what the JourneyAgent last
        reported when it counted more."""
        return max(self.tool_cost_usd, self.reported_cost_usd)

    @property
    def attempts(self) -> int:
        """Attempts started over all stages."""
        return sum(stage.attempt for stage in self.stages)

    @property
    def running(self) -> tuple[Stage, ...]:
        """The stages running now: the current steps."""
        return tuple(stage for stage in self.stages if stage.status == "running")

    @property
    def active_alerts(self) -> tuple[Alert, ...]:
        return tuple(alert for alert in self.alerts if not alert.cleared)

    @property
    def exit_status(self) -> int | None:
        """0 completed, 1 failed, 2 cancelled; None while the task has not ended."""
        return EXIT_STATUS.get(self.status)


def parse_position(text: object) -> tuple[int, int] | None:
    """``"PARTITION:OFFSET"`` as two numbers; None for anything else."""
    if not isinstance(text, str):
        return None
    partition, sep, offset = text.partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        return None
    return int(partition), int(offset)


def accepts(view: WatchView, message: Mapping[str, Any]) -> bool:
    """Whether ``message`` is an event the view has not had yet. A task's events are all on
    one partition, so an offset at or before the last one received is a repeat."""
    if not isinstance(message.get("event"), Mapping):
        return False
    here = parse_position(message.get("position"))
    if here is None:
        return False
    last = parse_position(view.position)
    return last is None or here[0] != last[0] or here[1] > last[1]


def fold(view: WatchView, message: Mapping[str, Any]) -> WatchView:
    """``view`` after one message of the stream (an event, ``live``, ``end``; pings and
    errors change nothing)."""
    kind = message.get("type")
    if kind == "live":
        return replace(view, live=True)
    if kind == "end":
        status = _ENDINGS.get(message.get("status"))
        return replace(view, ended=True, status=status or view.status)
    if not accepts(view, message):
        return view
    event: Mapping[str, Any] = message["event"]
    view = replace(view, position=message["position"], events=view.events + 1)
    event_id = str(event.get("id", ""))
    if event_id and event_id in view.seen:
        return view
    view = replace(view, seen=view.seen | {event_id} if event_id else view.seen)
    payload = event.get("payload")
    return apply_event(
        view, str(event.get("type", "")), payload if isinstance(payload, Mapping) else {}
    )


def apply_event(view: WatchView, kind: str, payload: Mapping[str, Any]) -> WatchView:
    """``view`` after one event of type ``kind``."""
    if kind in END_STATUS:
        return replace(view, status=END_STATUS[kind], outcome=_outcome(kind, payload))
    handler = _HANDLERS.get(kind)
    return handler(view, payload) if handler else view


# -- one function per event type -------------------------------------------------------------
def _submitted(view: WatchView, payload: Mapping[str, Any]) -> WatchView:
    description = payload.get("description")
    constraints = payload.get("constraints")
    chosen = constraints.get("playbook") if isinstance(constraints, Mapping) else None
    playbook = chosen if isinstance(chosen, str) else _text(chosen, "name") if chosen else None
    return replace(
        view,
        status="submitted" if view.status == "connecting" else view.status,
        description=description if isinstance(description, str) else view.description,
        playbook=view.playbook or playbook,
    )


def _roles(view: WatchView, payload: Mapping[str, Any]) -> WatchView:
    roles = payload.get("roles")
    names = [_text(role, "name") for role in roles] if isinstance(roles, list) else []
    return replace(view, roles=tuple(name for name in names if name))


def _plan(view: WatchView, payload: Mapping[str, Any]) -> WatchView:
    stages = payload.get("stages")
    planned = tuple(
        Stage(
            id=str(stage.get("id")),
            role=_text(stage, "role") or "?",
            tool=_first(stage.get("tools")) or "?",
            model=_text(stage, "model"),
            optional=bool(stage.get("optional", False)),
        )
        for stage in (stages if isinstance(stages, list) else [])
        if isinstance(stage, Mapping) and stage.get("id") is not None
    )
    total = payload.get("total")
    total = total if isinstance(total, Mapping) else {}
    return replace(
        view,
        status="running" if view.status in ("connecting", "submitted") else view.status,
        playbook=_text(payload, "playbook") or view.playbook,
        stages=planned or view.stages,
        estimated_tokens=_int(total.get("tokens")),
        estimated_cost_usd=_float(total.get("cost_usd")),
        estimated_seconds=_float(payload.get("critical_path_seconds"))
        or _float(total.get("seconds")),
    )


def _started(view: WatchView, payload: Mapping[str, Any]) -> WatchView:
    attempt = _int(payload.get("attempt"))
    view = _stage(
        view,
        payload,
        lambda s: s.attempt <= attempt,
        status="running",
        attempt=attempt,
        phase="started",
        tool=_text(payload, "tool") or "?",
        model=_text(payload, "model"),
        error=None,
        recovery=None,
    )
    return replace(
        view, status="running" if view.status in ("connecting", "submitted") else view.status
    )


def _called(view: WatchView, payload: Mapping[str, Any]) -> WatchView:
    return _current(view, payload, phase="calling", tool=_text(payload, "tool") or "?")


def _returned(view: WatchView, payload: Mapping[str, Any]) -> WatchView:
    error = payload.get("error")
    code = _text(error, "code") if payload.get("outcome") == "error" else None
    view = replace(view, tool_cost_usd=view.tool_cost_usd + _float(payload.get("cost_usd")))
    return _current(view, payload, phase="returned", **({"error": code} if code else {}))


def _completed(view: WatchView, payload: Mapping[str, Any]) -> WatchView:
    return _current(view, payload, status="completed", phase="")


def _failed(view: WatchView, payload: Mapping[str, Any]) -> WatchView:
    code = _text(payload.get("error"), "code") or "failed"
    return _current(view, payload, status="failed", phase="", error=code)


def _recovery_planned(view: WatchView, payload: Mapping[str, Any]) -> WatchView:
    action = _text(payload, "action")
    return _current(view, payload, status="recovering", recovery=action)


def _recovery_executed(view: WatchView, payload: Mapping[str, Any]) -> WatchView:
    action = _text(payload, "action")
    if action == "skip":
        return _current(view, payload, status="skipped", recovery=action)
    if action == "escalate":
        return _current(view, payload, status="failed", recovery=action)
    return view


def _usage(view: WatchView, payload: Mapping[str, Any]) -> WatchView:
    return replace(
        view,
        tokens=view.tokens + _int(payload.get("total_tokens")),
        # v2's input and output tokens; a v1 record (upcast on the server) never reaches here.
        prompt_tokens=view.prompt_tokens + _int(payload.get("input_tokens")),
        completion_tokens=view.completion_tokens + _int(payload.get("output_tokens")),
    )


def _progress(view: WatchView, payload: Mapping[str, Any]) -> WatchView:
    return replace(
        view,
        reported_cost_usd=max(view.reported_cost_usd, _float(payload.get("cost_usd"))),
        elapsed_s=_float(payload.get("elapsed_s")),
        estimated_seconds=_float(payload.get("estimated_s")) or view.estimated_seconds,
    )


def _evaluation(view: WatchView, payload: Mapping[str, Any]) -> WatchView:
    interval = payload.get("interval")
    low, high = (
        (_float(interval[0]), _float(interval[1]))
        if isinstance(interval, list) and len(interval) == 2
        else (0.0, 1.0)
    )
    confidence = payload.get("confidence")
    verdict = Evaluation(
        stage_id=_text(payload, "stage_id") or "?",
        attempt=_int(payload.get("attempt")),
        score=_float(payload.get("quality_score")),
        interval=(low, high),
        confidence=_float(confidence) if confidence is not None else None,
        decision=_text(payload, "decision") or "?",
    )
    view = replace(view, evaluations=(*view.evaluations, verdict)[-MAX_EVALUATIONS:])
    stages = tuple(
        replace(s, score=verdict.score, interval=verdict.interval, decision=verdict.decision)
        if s.id == verdict.stage_id and verdict.attempt >= s.attempt
        else s
        for s in view.stages
    )
    return replace(view, stages=stages)


def _alert_raised(view: WatchView, payload: Mapping[str, Any]) -> WatchView:
    alert = Alert(
        alert_id=_text(payload, "alert_id") or "?",
        level=_text(payload, "level") or "warning",
        code=_text(payload, "code") or "?",
        message=_text(payload, "message") or "",
    )
    others = tuple(a for a in view.alerts if a.alert_id != alert.alert_id)
    return replace(view, alerts=(*others, alert))


def _alert_cleared(view: WatchView, payload: Mapping[str, Any]) -> WatchView:
    return _alert(view, _text(payload, "alert_id"), cleared=True)


def _alert_acknowledged(view: WatchView, payload: Mapping[str, Any]) -> WatchView:
    return _alert(view, _text(payload, "alert_id"), acknowledged=True)


_HANDLERS = {
    "task.submitted": _submitted,
    "roles.assigned": _roles,
    "plan.created": _plan,
    "step.started": _started,
    "tool.called": _called,
    "tool.returned": _returned,
    "step.completed": _completed,
    "step.failed": _failed,
    "recovery.planned": _recovery_planned,
    "recovery.executed": _recovery_executed,
    "usage.recorded": _usage,
    "progress.updated": _progress,
    "evaluation.recorded": _evaluation,
    "alert.raised": _alert_raised,
    "alert.cleared": _alert_cleared,
    "alert.acknowledged": _alert_acknowledged,
}


# -- helpers ---------------------------------------------------------------------------------
def _stage(view: WatchView, payload: Mapping[str, Any], applies: Any, **changes: Any) -> WatchView:
    stage_id = payload.get("stage_id")
    if not isinstance(stage_id, str):
        return view
    stages = list(view.stages)
    found = [i for i, stage in enumerate(stages) if stage.id == stage_id]
    if not found:
        # A stage the view never saw planned (a shredded plan, say): shown as it runs.
        stages.append(Stage(id=stage_id))
        found = [len(stages) - 1]
    index = found[0]
    if not applies(stages[index]):
        return view
    stages[index] = replace(stages[index], **changes)
    return replace(view, stages=tuple(stages))


def _current(view: WatchView, payload: Mapping[str, Any], **changes: Any) -> WatchView:
    """``changes`` applied to the stage when ``payload`` is about its latest attempt (a late
    event of an earlier attempt changes nothing)."""
    attempt = _int(payload.get("attempt"))
    return _stage(view, payload, lambda s: s.attempt == attempt, **changes)


def _alert(view: WatchView, alert_id: str | None, **changes: Any) -> WatchView:
    return replace(
        view,
        alerts=tuple(replace(a, **changes) if a.alert_id == alert_id else a for a in view.alerts),
    )


def _outcome(kind: str, payload: Mapping[str, Any]) -> str | None:
    if kind == "task.completed":
        return _text(payload, "summary")
    if kind == "task.failed":
        reason, message = _text(payload, "reason"), _text(payload, "message")
        return f"{reason}: {message}" if reason and message else reason or message
    return _text(payload, "reason")


def _text(value: object, key: str) -> str | None:
    found = value.get(key) if isinstance(value, Mapping) else None
    return found if isinstance(found, str) else None


def _first(value: object) -> str | None:
    return value[0] if isinstance(value, list) and value and isinstance(value[0], str) else None


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _float(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
