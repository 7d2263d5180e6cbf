"""The agents' pure cores run together on an in-memory log, as their workers run them.

Each event appended to the log is folded into every processor's state of its task; then the
worker's own scheduling (:class:`processors.runtime._scheduler.Jobs`) starts, cancels and retries
the jobs ``decide(state, now)`` lists, and their events are appended to the log. The clock
moves only when a test moves it, or when nothing runs and a stage waits out a recovery's
backoff (it jumps to the end of the wait); tasks whose deadline has come are decided again
every ``TICK_S``, as the worker's timer does. A job that raises fails the test.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from events import Actor, Event, EventPayload, TaskCancelled, TaskSubmitted
from processors.inspector import agent as inspector_agent
from processors.inspector.agent import InspectorAgent
from processors.journey import execution
from processors.journey.agent import CLOSING_TYPES, JourneyAgent
from processors.runtime._scheduler import Jobs
from processors.super import agent as super_agent
from processors.super.agent import PLAN_TYPES, SuperAgent

S = TypeVar("S")
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
USER = Actor(kind="user", id="alice")
TICK_S = 0.05
MAX_EVENTS = 500


@dataclass
class Clock:
    """A clock that stands still until it is moved."""

    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Processor(Generic[S]):
    """One agent's core and what its worker keeps: states by task, running and done jobs."""

    folded_types: frozenset[str]
    evolve: Callable[[S | None, Event], S]
    decide: Callable[[S, datetime], list[Any]]
    run: Callable[[Any, Callable[[Event], Awaitable[None]]], Awaitable[None]]
    observe: Callable[[Event], None] | None = None
    suppress: Callable[[S, Event], bool] | None = None
    deadline: Callable[[S], datetime | None] | None = None
    retry_at: Callable[[S], datetime | None] | None = None
    states: dict[uuid.UUID, S] = field(default_factory=dict)
    jobs: Jobs[S, Any] | None = None

    def scheduler(self) -> Jobs[S, Any]:
        assert self.jobs is not None
        return self.jobs


def planner(agent: SuperAgent) -> Processor[Any]:
    """The SuperAgent as its worker runs it."""
    core, observe = super_agent, agent.observe
    return Processor(core.FOLDED_TYPES, core.evolve, core.decide, agent.run, observe, _plan_late)


def _plan_late(state: super_agent.TaskState, event: Event) -> bool:
    return event.type in PLAN_TYPES and state.closed is not None


def executor(agent: JourneyAgent, require_acceptance: bool = False) -> Processor[Any]:
    """The JourneyAgent as its worker runs it (waiting for verdicts when
    ``require_acceptance``)."""

    def decide(journey: execution.Journey, now: datetime) -> list[Any]:
        return execution.decide(journey, now, 4, require_acceptance)

    return Processor(
        execution.FOLDED_TYPES,
        execution.evolve,
        decide,
        agent.run,
        observe=agent.observe,
        suppress=lambda journey, event: journey.closed is not None and event.type in CLOSING_TYPES,
        deadline=execution.deadline,
        retry_at=execution.next_retry,
    )


def inspector(agent: InspectorAgent) -> Processor[Any]:
    """The InspectorAgent as its worker runs it."""
    return Processor(
        inspector_agent.FOLDED_TYPES,
        inspector_agent.evolve,
        inspector_agent.decide_inspection,
        agent.run,
        observe=agent.observe,
    )


class _Raise:
    """A job that raises fails the test: settle() raises the first error."""

    def __init__(self, errors: list[BaseException]) -> None:
        self.errors = errors

    def failed(self, task_id: uuid.UUID, key: str, error: BaseException, failures: int) -> None:
        self.errors.append(error)

    def failing(self, task_id: uuid.UUID, key: str, error: BaseException, failures: int) -> None:
        pass

    def recovered(self, task_id: uuid.UUID, key: str, failures: int) -> None:
        pass


class Driver:
    """``processors`` over one in-memory log; ``history`` is replayed first, as after a crash."""

    def __init__(
        self,
        *processors: Processor[Any],
        clock: Clock | None = None,
        history: Iterable[Event] = (),
    ) -> None:
        self.processors = processors
        self.clock = clock or Clock()
        self.log: list[Event] = list(history)
        self.errors: list[BaseException] = []
        self._wake = asyncio.Event()
        for proc in processors:
            proc.jobs = Jobs(
                proc.decide,
                proc.run,
                concurrency=0,
                clock=self.clock,
                deadline=proc.deadline,
                failures=_Raise(self.errors),
            )
        for event in self.log:
            self._fold(event, live=False)
        self._folded = len(self.log)
        self._decide_all()

    def append(self, payload: EventPayload, task_id: uuid.UUID | None) -> Event:
        """A user's event for ``task_id``, at the clock's time."""
        event = Event.new(
            payload, tenant_id="acme", actor=USER, task_id=task_id, occurred_at=self.clock()
        )
        self.log.append(event)
        self._wake.set()
        return event

    def submit(
        self,
        description: str,
        constraints: Any = None,
        *,
        grants: Sequence[str] = (),
        **more: Any,
    ) -> Event:
        """task.submitted for a new task (``timeout`` may be given in ``more``). ``grants``
        is what its submitter allowed it to run: none unless given, as for a viewer's key."""
        payload = TaskSubmitted(
            description=description, constraints=constraints, grants=list(grants), **more
        )
        return self.append(payload, uuid.uuid4())

    def cancel(self, task_id: uuid.UUID | None, reason: str = "no longer needed") -> Event:
        return self.append(TaskCancelled(reason=reason), task_id)

    async def advance(self, seconds: float) -> None:
        """Move the clock, then decide again for every task (the worker's deadline timer)."""
        self.clock.advance(seconds)
        self._decide_all()
        await self.settle()

    async def settle(self) -> list[Event]:
        """Fold the log and run what it calls for until nothing is due; the new events."""
        start = self._folded
        while True:
            while self._folded < len(self.log):
                assert self._folded < MAX_EVENTS, f"over {MAX_EVENTS} events: a runaway loop?"
                self._folded += 1
                self._fold(self.log[self._folded - 1], live=True)
            if self.errors:
                raise self.errors[0]
            tasks = [task for proc in self.processors for task in proc.scheduler().tasks()]
            if not tasks:
                if self._backoff_over():
                    continue
                return self.log[start:]
            self._wake.clear()
            waiter = asyncio.ensure_future(self._wake.wait())
            done, _ = await asyncio.wait(
                [waiter, *tasks], timeout=TICK_S, return_when="FIRST_COMPLETED"
            )
            waiter.cancel()
            if not done:
                self._backoff_over()  # the running jobs wait for something: time passes
            self._decide_all(due_only=True)

    def _backoff_over(self) -> bool:
        """Let the earliest recovery backoff pass at once."""
        waits = [
            when
            for proc in self.processors
            if proc.retry_at is not None
            for state in proc.states.values()
            if (when := proc.retry_at(state)) is not None and when > self.clock()
        ]
        if not waits:
            return False
        self.clock.now = min(waits)
        self._decide_all(due_only=True)
        return True

    def state(self, processor: int, task_id: uuid.UUID | None) -> Any:
        assert task_id is not None
        return self.processors[processor].states[task_id]

    def _fold(self, event: Event, *, live: bool) -> None:
        for proc in self.processors:
            if event.type not in proc.folded_types:
                continue
            if proc.observe is not None:
                proc.observe(event)
            if event.task_id is None:
                continue
            proc.states[event.task_id] = proc.evolve(proc.states.get(event.task_id), event)
            if live:
                self._schedule(proc, event.task_id)

    def _decide_all(self, *, due_only: bool = False) -> None:
        """Decide for every task, or only for those whose deadline has come (the ticker)."""
        for proc in self.processors:
            due = set(proc.scheduler().due(self.clock())) if due_only else None
            for task_id in list(proc.states):
                if due is None or task_id in due:
                    self._schedule(proc, task_id)

    def _schedule(self, proc: Processor[Any], task_id: uuid.UUID) -> None:
        async def send(event: Event) -> None:
            state = proc.states.get(task_id)
            if proc.suppress is None or state is None or not proc.suppress(state, event):
                self.log.append(event)
                self._wake.set()

        proc.scheduler().schedule(task_id, proc.states[task_id], send)
