"""Tool usage: what the log says about each tool, and which tool a stage should call.

- :class:`ToolStats` holds success rate, latency and cost per tool and task type (the task
  type is the plan's playbook), counted from tool.returned events.
- :class:`CircuitBreaker` opens a tool's circuit after ``threshold`` consecutive failures
  and keeps it open for ``cooldown_s``; after that calls may try it again (half-open): a
  success closes it, and one more failure opens it again at once. Calls are ordered by the
  events' ``occurred_at``, so replaying old failures after a restart does not open a
  circuit that has long cooled down, and each call counts once however often it is seen.
- :func:`optimize_tool_usage` orders a stage's candidate tools (its tool, then its
  alternates) by observed success rate for the task type, then speed, keeping the plan's
  order where the history says nothing, and puts tools with an open circuit last.
- :func:`input_hash` is the cache key of a call: identical input to an idempotent tool
  within one task reuses the earlier result instead of calling again.

The agents load both from the read models of every partition (:mod:`processors.shared.statistics`),
so every worker of a kind ranks and refuses tools alike; a worker also records the calls it
sees on its own partitions in its breaker at once, which the next load does not count again.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from events import Event, ToolReturned, canonical_json

BREAKER_THRESHOLD = 5
BREAKER_COOLDOWN_S = 30.0
MIN_CALLS = 3


def input_hash(tool_input: Any) -> str:
    """sha256 of the canonical JSON of a tool's input."""
    return hashlib.sha256(canonical_json(tool_input)).hexdigest()


@dataclass
class Observed:
    """What the log shows of one tool for one task type."""

    calls: int = 0
    successes: int = 0
    seconds: float = 0.0
    cost_usd: float = 0.0

    @property
    def success_rate(self) -> float:
        """Laplace-smoothed: a tool with no history scores 0.5, not 0 or 1."""
        return (self.successes + 1) / (self.calls + 2)

    @property
    def mean_seconds(self) -> float:
        return self.seconds / self.calls if self.calls else 0.0


class ToolStats:
    """Success, latency and cost per (tool, task type), from tool.returned events."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str | None], Observed] = {}

    def observe(self, event: Event) -> None:
        """Count one tool.returned. Cached results and the breaker's refusals are not calls
        of the tool and are not counted."""
        payload = event.payload
        if not isinstance(payload, ToolReturned) or payload.cached or _refused(payload):
            return
        item = self._seen.setdefault((payload.tool, payload.task_type), Observed())
        item.calls += 1
        item.successes += payload.outcome == "ok"
        item.seconds += payload.duration_s
        item.cost_usd += payload.cost_usd

    def of(self, tool: str, task_type: str | None) -> Observed:
        """What is known of ``tool`` for ``task_type`` (empty when nothing is)."""
        return self._seen.get((tool, task_type), Observed())

    def load(self, seen: Mapping[tuple[str, str | None], Observed]) -> None:
        """Replace everything known with ``seen``: the totals of every partition."""
        self._seen = dict(seen)


class Outcome(NamedTuple):
    """One call that ran a tool, as its circuit sees it: the tool.returned's id and time,
    and whether the tool succeeded."""

    tool: str
    call_id: uuid.UUID
    occurred_at: datetime
    ok: bool


class CircuitBreaker:
    """Per-tool circuit: closed, open for a cool-down after repeated failures, half-open.

    It keeps each tool's last ``threshold`` calls, in the order they happened: the circuit
    is open while all of them failed and the last is younger than the cool-down. That is
    the same whatever order calls arrive in and however often one is seen, so calls read
    from Postgres and calls seen live on the log add up without counting one twice.
    """

    def __init__(
        self, threshold: int = BREAKER_THRESHOLD, cooldown_s: float = BREAKER_COOLDOWN_S
    ) -> None:
        self.threshold = threshold
        self.cooldown = timedelta(seconds=cooldown_s)
        self._recent: dict[str, list[Outcome]] = {}

    def observe(self, event: Event) -> None:
        """Record a tool.returned: a success closes the circuit, a failure may open it."""
        payload = event.payload
        if not isinstance(payload, ToolReturned) or payload.cached or _refused(payload):
            return  # a reused result, or a refusal by the breaker itself: the tool never ran
        self.record(Outcome(payload.tool, event.id, event.occurred_at, payload.outcome == "ok"))

    def record(self, outcome: Outcome) -> None:
        """Record one call; a call already recorded changes nothing."""
        recent = self._recent.setdefault(outcome.tool, [])
        if any(seen.call_id == outcome.call_id for seen in recent):
            return
        recent.append(outcome)
        recent.sort(key=lambda seen: (seen.occurred_at, seen.call_id))
        del recent[: -self.threshold]

    def record_all(self, outcomes: Iterable[Outcome]) -> None:
        """Record each of ``outcomes``."""
        for outcome in outcomes:
            self.record(outcome)

    def is_open(self, tool: str, now: datetime) -> bool:
        """Whether calls to ``tool`` are refused at ``now``. After the cool-down the circuit
        is half-open: calls pass, and the next failure opens it again at once."""
        recent = self._recent.get(tool, [])
        if len(recent) < self.threshold or any(seen.ok for seen in recent):
            return False
        return now < recent[-1].occurred_at + self.cooldown

    def open_tools(self, now: datetime) -> set[str]:
        """Every tool whose circuit is open at ``now``."""
        return {tool for tool in self._recent if self.is_open(tool, now)}


def _refused(payload: ToolReturned) -> bool:
    """Whether the call was refused by the circuit breaker, so the tool never ran."""
    return payload.error is not None and payload.error.code == "CIRCUIT_OPEN"


def optimize_tool_usage(
    candidates: Sequence[str],
    task_type: str | None,
    stats: ToolStats,
    breaker: CircuitBreaker,
    now: datetime,
) -> list[str]:
    """``candidates`` best first: closed circuits before open ones; then the higher smoothed
    success rate for this task type, then the faster mean, then the plan's order. A tool
    with fewer than MIN_CALLS calls counts as unknown (rate 0.5, no speed), so one lucky
    call does not reorder a plan."""

    def rank(item: tuple[int, str]) -> tuple[Any, ...]:
        position, tool = item
        seen = stats.of(tool, task_type)
        known = seen.calls >= MIN_CALLS
        return (
            breaker.is_open(tool, now),
            -seen.success_rate if known else -0.5,
            seen.mean_seconds if known else 0.0,
            position,
        )

    return [tool for _, tool in sorted(enumerate(candidates), key=rank)]
