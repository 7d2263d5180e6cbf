"""Tool usage: what the log says about each tool, and which tool a stage should call.

- :class:`ToolStats` folds tool.returned events into success rate, latency and cost per
  tool and task type (the task type is the plan's playbook).
- :class:`CircuitBreaker` opens a tool's circuit after ``threshold`` consecutive failures
  and keeps it open for ``cooldown_s``; after that calls may try it again (half-open): a
  success closes it, and one more failure opens it again at once. Time is the events'
  ``occurred_at``, so replaying old failures after a restart does not open a circuit that
  has long cooled down.
- :func:`optimize_tool_usage` orders a stage's candidate tools (its tool, then its
  alternates) by observed success rate for the task type, then speed, keeping the plan's
  order where the history says nothing, and puts tools with an open circuit last.
- :func:`input_hash` is the cache key of a call: identical input to an idempotent tool
  within one task reuses the earlier result instead of calling again.

A worker folds these from the partitions it owns; with several workers each sees its share,
which is a sample of the same traffic.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

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


class CircuitBreaker:
    """Per-tool circuit: closed, open for a cool-down after repeated failures, half-open."""

    def __init__(
        self, threshold: int = BREAKER_THRESHOLD, cooldown_s: float = BREAKER_COOLDOWN_S
    ) -> None:
        self.threshold = threshold
        self.cooldown = timedelta(seconds=cooldown_s)
        self._failures: dict[str, int] = {}
        self._opened: dict[str, datetime] = {}

    def observe(self, event: Event) -> None:
        """Count a tool.returned: a success closes the circuit, a failure may open it."""
        payload = event.payload
        if not isinstance(payload, ToolReturned) or payload.cached:
            return
        tool = payload.tool
        if payload.outcome == "ok":
            self._failures.pop(tool, None)
            self._opened.pop(tool, None)
            return
        if _refused(payload):
            return  # a refusal by the breaker itself is not a failure of the tool
        self._failures[tool] = self._failures.get(tool, 0) + 1
        if self._failures[tool] >= self.threshold:
            self._opened[tool] = event.occurred_at

    def is_open(self, tool: str, now: datetime) -> bool:
        """Whether calls to ``tool`` are refused at ``now``. After the cool-down the circuit
        is half-open: calls pass, and the next failure opens it again at once."""
        opened = self._opened.get(tool)
        return opened is not None and now < opened + self.cooldown

    def open_tools(self, now: datetime) -> set[str]:
        """Every tool whose circuit is open at ``now``."""
        return {tool for tool in self._opened if self.is_open(tool, now)}


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
