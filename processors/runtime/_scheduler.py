"""Which jobs of which tasks run: the scheduling every worker, and the tests' driver, use.

A processor's ``decide(state, now)`` lists the jobs a task's state calls for; a job is
known by its ``key`` within its task. :class:`Jobs` keeps, per task, the jobs running, the
jobs done (while ``decide`` still lists them: their events are on their way back through
the log) and the jobs waiting to be tried again, and on every :meth:`Jobs.schedule`:

- starts each listed job that is neither running, done nor waiting, as an asyncio task
  holding one of ``concurrency`` slots while it runs (never while it waits);
- cancels running jobs, and forgets waiting ones, that the state no longer lists (the task
  was cancelled or timed out);
- keeps one wake-up time per task: the state's own deadline (a timeout) or the earliest
  retry of a failed job, whichever comes first; :meth:`Jobs.due` hands out the tasks whose
  time has come.

A job that raises is tried again on a schedule (exponential backoff with jitter, at most
``RETRY_MAX_S`` apart), never dropped: after ``ALERT_AFTER`` failures in a row ``on_failing``
is told once (the worker raises an alert), and ``on_recovered`` when it succeeds at last. A
job that fails for want of the broker is retried the same way without counting as a failure.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, Protocol, TypeVar

import structlog

from events import BrokerUnavailable, Event

log = structlog.get_logger(__name__)

RETRY_BASE_S = 0.5
RETRY_MAX_S = 30.0
ALERT_AFTER = 3


class Job(Protocol):
    """One piece of work a state calls for; ``key`` names it within its task."""

    @property
    def key(self) -> str: ...


S = TypeVar("S")
J = TypeVar("J", bound=Job)
Emit = Callable[[Event], Awaitable[None]]
"""How a job records what it did: one event at a time, in order."""
Run = Callable[[J, Emit], Awaitable[None]]
Send = Callable[[Event], Awaitable[Awaitable[object] | None]]
"""How the events a job emits leave: handed over in order, each returning what to await
for its delivery (the broker's ack), or None when there is nothing to wait for."""


@dataclass
class Failing:
    """A job that raised and waits to be tried again at ``retry_at``."""

    retry_at: datetime
    failures: int
    error: BaseException
    alerted: bool = False


class Failures(Protocol):
    """Who hears about jobs that keep failing (the worker: heartbeat and alert)."""

    def failed(self, task_id: uuid.UUID, key: str, error: BaseException, failures: int) -> None:
        """``key`` of ``task_id`` raised for the ``failures``-th time in a row."""

    def failing(self, task_id: uuid.UUID, key: str, error: BaseException, failures: int) -> None:
        """``key`` has failed ``ALERT_AFTER`` times in a row (told once per streak)."""

    def recovered(self, task_id: uuid.UUID, key: str, failures: int) -> None:
        """``key`` succeeded after a streak it was alerted for."""


class Jobs(Generic[S, J]):
    """The jobs of every task a worker holds (see the module's docstring)."""

    def __init__(
        self,
        decide: Callable[[S, datetime], list[J]],
        run: Run[J],
        *,
        concurrency: int,
        clock: Callable[[], datetime],
        deadline: Callable[[S], datetime | None] | None = None,
        failures: Failures | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.decide, self.run, self.deadline = decide, run, deadline
        self.clock = clock
        self.failures = failures
        self.rng = rng or random.Random()
        self.running: dict[uuid.UUID, dict[str, asyncio.Task[None]]] = {}
        self.done: dict[uuid.UUID, set[str]] = {}
        self.waiting: dict[uuid.UUID, dict[str, Failing]] = {}
        self._slots = asyncio.Semaphore(concurrency) if concurrency > 0 else None
        # (when, task) wake-ups; an entry is stale when _wake_of no longer says ``when``.
        self._wakes: list[tuple[datetime, uuid.UUID]] = []
        self._wake_of: dict[uuid.UUID, datetime] = {}

    # -- deciding ----------------------------------------------------------------------
    def schedule(self, task_id: uuid.UUID, state: S, send: Send) -> int:
        """Bring ``task_id``'s jobs in line with what ``state`` lists now; how many jobs it
        lists."""
        now = self.clock()
        jobs = self.decide(state, now)
        listed = {job.key for job in jobs}
        running = self.running.get(task_id, {})
        for key in [key for key in running if key not in listed]:
            # Out of the table at once: if the state lists the key again before the
            # cancelled task has unwound, a new run starts.
            running.pop(key).cancel()
        done = self.done.get(task_id)
        if done:
            done &= listed
        waiting = self.waiting.get(task_id)
        if waiting:
            for key in [key for key in waiting if key not in listed]:
                del waiting[key]
        retry_at: datetime | None = None
        for job in jobs:
            key = job.key
            if key in running or (done and key in done):
                continue
            failing = waiting.get(key) if waiting else None
            if failing is not None and failing.retry_at > now:
                retry_at = min(retry_at or failing.retry_at, failing.retry_at)
                continue
            self._start(task_id, job, send)
        when = self.deadline(state) if self.deadline is not None else None
        # A deadline already passed was part of this decision; only future ones wake.
        if when is not None and when <= now:
            when = None
        if retry_at is not None:
            when = retry_at if when is None else min(when, retry_at)
        self._wake(task_id, when)
        self._tidy(task_id)
        return len(listed)

    def due(self, now: datetime) -> list[uuid.UUID]:
        """The tasks whose deadline or retry has come, each once."""
        found: list[uuid.UUID] = []
        while self._wakes and self._wakes[0][0] <= now:
            when, task_id = heapq.heappop(self._wakes)
            if self._wake_of.get(task_id) != when:
                continue  # superseded
            del self._wake_of[task_id]
            found.append(task_id)
        return found

    def _wake(self, task_id: uuid.UUID, when: datetime | None) -> None:
        if when is None:
            self._wake_of.pop(task_id, None)
        elif self._wake_of.get(task_id) != when:
            self._wake_of[task_id] = when
            heapq.heappush(self._wakes, (when, task_id))

    # -- what is held ------------------------------------------------------------------
    def active(self, task_id: uuid.UUID) -> bool:
        """Whether any job of the task runs or waits to be tried again."""
        return bool(self.running.get(task_id) or self.waiting.get(task_id))

    def jobs_running(self) -> list[tuple[uuid.UUID, str]]:
        """(task, key) of every running job."""
        return [(task_id, key) for task_id, jobs in self.running.items() for key in jobs]

    def forget(self, task_id: uuid.UUID) -> None:
        """Cancel the task's jobs and drop all that is known of them."""
        for task in self.running.pop(task_id, {}).values():
            task.cancel()
        self.done.pop(task_id, None)
        self.waiting.pop(task_id, None)
        self._wake_of.pop(task_id, None)

    def tasks(self) -> list[asyncio.Task[None]]:
        """Every running job's asyncio task."""
        return [task for jobs in self.running.values() for task in jobs.values()]

    def _tidy(self, task_id: uuid.UUID) -> None:
        for table in (self.running, self.done, self.waiting):
            if task_id in table and not table[task_id]:
                del table[task_id]

    # -- running -----------------------------------------------------------------------
    def _start(self, task_id: uuid.UUID, job: J, send: Send) -> None:
        task = asyncio.create_task(self._perform(task_id, job, send))
        self.running.setdefault(task_id, {})[job.key] = task

    async def _perform(self, task_id: uuid.UUID, job: J, send: Send) -> None:
        key = job.key
        try:
            if self._slots is None:
                await self._run(job, send)
            else:
                async with self._slots:
                    await self._run(job, send)
        except asyncio.CancelledError:
            self._ended(task_id, key)
            raise
        except Exception as exc:
            self._drop(task_id, key)
            self._failed(task_id, key, exc)
            return
        self.done.setdefault(task_id, set()).add(key)
        waiting = self.waiting.get(task_id)
        failing = waiting.pop(key, None) if waiting else None
        if failing is not None and failing.alerted and self.failures is not None:
            self.failures.recovered(task_id, key, failing.failures)
        self._ended(task_id, key)

    async def _run(self, job: J, send: Send) -> None:
        """Run ``job``; its events leave as they are emitted, and it is done once every
        one of them is delivered."""
        deliveries: list[Awaitable[object]] = []

        async def emit(event: Event) -> None:
            delivery = await send(event)
            if delivery is not None:
                deliveries.append(delivery)

        await self.run(job, emit)
        for delivery in deliveries:
            await delivery

    def _ended(self, task_id: uuid.UUID, key: str) -> None:
        self._drop(task_id, key)
        self._tidy(task_id)

    def _drop(self, task_id: uuid.UUID, key: str) -> None:
        jobs = self.running.get(task_id)
        if jobs is not None and jobs.get(key) is asyncio.current_task():
            del jobs[key]

    def _failed(self, task_id: uuid.UUID, key: str, exc: Exception) -> None:
        waiting = self.waiting.setdefault(task_id, {})
        before = waiting.get(key)
        broker = isinstance(exc, BrokerUnavailable)
        failures = (before.failures if before else 0) + (0 if broker else 1)
        delay = min(RETRY_BASE_S * 2 ** max(failures, 1), RETRY_MAX_S)
        retry_at = self.clock() + timedelta(seconds=self.rng.uniform(delay / 2, delay))
        failing = Failing(retry_at, failures, exc, alerted=before.alerted if before else False)
        waiting[key] = failing
        bound = log.bind(task_id=str(task_id), job=key, failures=failures)
        if isinstance(exc, BrokerUnavailable):
            bound.warning("broker unavailable; the job is tried again", error=exc.message)
        else:
            bound.error("job failed; it is tried again", exc_info=exc)
        if self.failures is not None:
            self.failures.failed(task_id, key, exc, failures)
            if failures >= ALERT_AFTER and not failing.alerted:
                failing.alerted = True
                self.failures.failing(task_id, key, exc, failures)
        self._wake(task_id, min(retry_at, self._wake_of.get(task_id, retry_at)))
