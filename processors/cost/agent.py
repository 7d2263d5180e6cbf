"""The CostGuard: counts every usage.recorded once, holds each budget's spend per window,
and says when a budget passes a soft threshold or its limit.

It reads wrench.events in batches (faust, consumer group ``cost-guard``) and keeps no task
state: a batch's usage events go into the ledger (Postgres, :mod:`processors.cost.ledger`)
in one transaction, whose spends decide the verdicts:

- ``budget.threshold_crossed`` once per budget, threshold and window, and
  ``budget.exceeded`` once per budget and window, each a task event of the task whose usage
  crossed the line, with ``alert.raised`` (BUDGET_THRESHOLD, warning; BUDGET_EXCEEDED,
  critical) for the alert handlers and the alerts read model;
- ``price.unknown`` on wrench.admin, once per model the price table lacks.

The verdicts are published (and acked by the broker) before the transaction commits, and
the batch is acked to faust after it: a crash anywhere meters the batch again, which finds
the same rows, the same spends and so the same verdicts, under the same derived ids, which
every consumer drops as duplicates. Nothing is counted twice and nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import faust
import structlog

from events import (
    Actor,
    AlertRaised,
    BudgetExceeded,
    BudgetThresholdCrossed,
    Event,
    EventDecodeError,
    EventProducer,
    Position,
    PriceUnknown,
    UsageRecorded,
    codec_from_settings,
)
from processors.cost.ledger import Spend, meter
from processors.inspector.alerts import AlertHandler, dispatch, handlers_from_settings
from processors.runtime import dead_letter, faust_app, record_of
from processors.runtime._heartbeat import Heartbeats
from processors.runtime._scheduler import ALERT_AFTER
from wrenchai import metrics
from wrenchai.settings import Settings

log = structlog.get_logger(__name__)

NAME = "cost-guard"
ACTOR = Actor(kind="agent", id=NAME)
USAGE = UsageRecorded.event_type
BATCH_MAX = 500
BATCH_WITHIN_S = 0.01
RETRY_BASE_S = 0.5
RETRY_MAX_S = 30.0
_PRICE_NAMESPACE = uuid.UUID("0b8f5d3e-93a1-4c3f-8f61-6c1bb2f5a7d0")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def verdicts(spends: Sequence[Spend]) -> list[Event]:
    """The budget events and alerts ``spends`` call for, derived from the usage event that
    moved each budget, so the same spend always gives the same ids."""
    out: list[Event] = []
    for spend in spends:
        budget, usage = spend.budget, spend.usage
        assert usage.task_id is not None
        window = budget.window_key(usage.task_id, usage.occurred_at)
        state: dict[str, Any] = {
            "scope": budget.scope,
            "scope_id": budget.scope_id,
            "window": budget.window,
            "window_start": spend.window_start,
            "window_end": spend.window_end,
            "spent_usd": round(spend.after_usd, 8),
            "spent_tokens": spend.after_tokens,
            "limit_usd": budget.limit_usd,
            "limit_tokens": budget.limit_tokens,
            "ratio": round(spend.after, 6),
            "usage_id": usage.id,
        }
        for line in spend.crossed():
            step = f"budget/{budget.scope}/{budget.scope_id}/{window}/{line:g}"
            alert_id = f"budget:{budget.scope}:{budget.scope_id}:{window}:{line:g}"[:200]
            what = f"the {budget.scope} budget of {budget.scope_id} ({budget.window} window)"
            if line >= 1.0:
                payload: BudgetExceeded | BudgetThresholdCrossed = BudgetExceeded(
                    **state, hard=budget.hard
                )
                alert = AlertRaised(
                    alert_id=alert_id,
                    level="critical",
                    code="BUDGET_EXCEEDED",
                    message=f"{what} is spent"
                    + (": further LLM calls it covers are refused" if budget.hard else ""),
                    details={"ratio": state["ratio"], "hard": budget.hard},
                )
            else:
                payload = BudgetThresholdCrossed(**state, threshold=line)
                alert = AlertRaised(
                    alert_id=alert_id,
                    level="warning",
                    code="BUDGET_THRESHOLD",
                    message=f"{what} passed {line:.0%} of its limit",
                    details={"ratio": state["ratio"], "threshold": line},
                )
            out.append(usage.derive(payload, step=step, actor=ACTOR))
            out.append(usage.derive(alert, step=f"{step}/alert", actor=ACTOR))
    return out


def unpriced(usages: Sequence[Event]) -> list[Event]:
    """One price.unknown per model and price table among ``usages`` that had no price; its
    id is derived from both, so every CostGuard announcing it announces the same event."""
    seen: dict[tuple[str, str, str], Event] = {}
    for event in usages:
        p = event.payload
        if not isinstance(p, UsageRecorded) or p.cost_usd is not None or not p.price_version:
            continue
        key = (event.tenant_id, p.model, p.price_version)
        if key not in seen:
            seen[key] = Event.new(
                PriceUnknown(model=p.model, price_version=p.price_version),
                tenant_id=event.tenant_id,
                actor=ACTOR,
                event_id=uuid.uuid5(_PRICE_NAMESPACE, "/".join(key)),
                occurred_at=event.occurred_at,
            )
    return list(seen.values())


@dataclass(frozen=True)
class _Held:
    """A partition the CostGuard reads: it holds no task of it (heartbeats ask)."""

    tenants: Mapping[uuid.UUID, str] = field(default_factory=dict)


class _NoJobs:
    """The CostGuard runs no jobs: it meters in the batch's own transaction."""

    def jobs_running(self) -> list[tuple[uuid.UUID, str]]:
        return []


class CostGuard:
    """Meters batches of wrench.events records into the ledger and publishes the verdicts;
    publishes agent.heartbeat like every worker (its partitions, their lag, its last
    error), so its status and lag are watched like theirs."""

    name = NAME

    def __init__(self, settings: Settings, clock: Callable[[], datetime] = _utcnow) -> None:
        self.settings = settings
        self.clock = clock
        self.group = settings.group(NAME)
        self.topic = settings.topic("events")
        self.codec = codec_from_settings(settings)
        self.producer = EventProducer(settings, self.codec, processor=NAME)
        self.handlers: list[AlertHandler] = handlers_from_settings(settings)
        self.consumed = metrics.consumed(NAME)
        self._pool: asyncpg.Pool | None = None
        self._announced: set[uuid.UUID] = set()
        self.partitions: dict[int, _Held] = {}
        self.jobs = _NoJobs()
        self.heartbeats = Heartbeats(self)

    async def _connect(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self.settings.database_dsn(), min_size=1, max_size=2
            )
        return self._pool

    async def decode(self, items: Sequence[tuple[int, int, Any]]) -> list[tuple[Event, Position]]:
        """The usage events among ``(partition, offset, record)``; a usage record that cannot
        be decoded goes to wrench.dlq."""
        usages = []
        counts: dict[str, int] = {}
        for partition, offset, record in items:
            kind = record.header("type")
            label = "unknown" if kind is None else kind.decode(errors="replace")
            counts[label] = counts.get(label, 0) + 1
            if label != USAGE:
                continue
            try:
                event = self.codec.decode(record.value, record.headers)
            except EventDecodeError as exc:
                dead = dead_letter(record, exc, self.topic, partition, offset, self.group)
                await self.producer.send_records(self.settings.topic("dlq"), [dead])
                self.heartbeats.decode_failed(partition, offset, exc.reason)
                log.warning("usage record sent to the DLQ", reason=exc.reason, offset=offset)
                continue
            usages.append((event, Position(partition, offset)))
        self.consumed.add_all(counts)
        return usages

    async def meter(self, usages: Sequence[tuple[Event, Position]]) -> list[Event]:
        """Enter ``usages`` in the ledger and publish their verdicts before committing."""
        if not usages:
            return []
        pool = await self._connect()
        async with pool.acquire() as conn, conn.transaction():
            spends = await meter(conn, usages)
            events = verdicts(spends)
            if events:
                await self.producer.publish_many(events, self.topic)
            fresh = [e for e in unpriced([e for e, _ in usages]) if e.id not in self._announced]
            if fresh:
                await self.producer.publish_many(fresh, self.settings.topic("admin"))
        self._announced.update(e.id for e in fresh)
        for spend in spends:
            b = spend.budget
            metrics.set_budget_ratio(b.tenant_id, b.scope, b.scope_id, spend.after)
        for event, _ in usages:
            _count(event)
        for event in events:
            dispatch(self.handlers, event)
        return events

    async def handle(self, items: Sequence[tuple[int, int, Any]]) -> None:
        """Meter one batch, trying again (never dropping it) until Postgres and the broker
        take it."""
        usages = await self.decode(items)
        delay, attempt = RETRY_BASE_S, 0
        while True:
            try:
                await self.meter(usages)
                return
            except Exception as exc:  # Postgres, the broker, or a bug: the batch waits
                attempt += 1
                first = usages[0][0] if usages else None
                self.heartbeats.job_failed(
                    exc,
                    attempt=attempt,
                    attempts=ALERT_AFTER,
                    task_id=first.task_id if first and first.task_id else uuid.UUID(int=0),
                    tenant_id=first.tenant_id if first else None,
                )
                log.warning("batch not metered; trying again", error=str(exc)[:200], in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    async def close(self) -> None:
        """Stop the heartbeats, flush the producer and close the pool."""
        await self.heartbeats.stop()
        await self.producer.stop()
        if self._pool is not None:
            await self._pool.close()

    def app(self) -> faust.App:
        """The faust app: one agent over wrench.events, acking each batch once metered."""
        app = faust_app(self.settings, self.group)
        topic = app.topic(
            self.topic, key_type=bytes, value_type=bytes, key_serializer="raw",
            value_serializer="raw",
        )  # fmt: skip

        async def consume(stream: Any) -> None:
            async for batch in stream.noack_take(BATCH_MAX, within=BATCH_WITHIN_S):
                items = [
                    (i.message.partition, i.message.offset, record_of(i.message)) for i in batch
                ]
                await self.handle(items)
                for item in batch:
                    item.ack()

        app.agent(topic, name=f"{self.group}.consume")(consume)

        async def heartbeats() -> None:
            self.heartbeats.start()

        app.task(heartbeats)

        # mode's signals call receivers as receiver(sender, *args, signal=..., **kwargs).
        async def assigned(sender: Any, *args: Any, **_: Any) -> None:
            mine = {tp.partition for tp in args[0] if tp.topic == self.topic}
            self.partitions = {number: _Held() for number in sorted(mine)}
            self.heartbeats.soon()

        async def shutdown(sender: Any, *_: Any, **__: Any) -> None:
            await self.close()

        app.on_partitions_assigned.connect(assigned, weak=False)  # type: ignore[arg-type]
        app.on_before_shutdown.connect(shutdown, weak=False)  # type: ignore[arg-type]
        return app

    def main(self) -> None:
        """Run until SIGTERM or SIGINT (``wrenchai worker cost-guard``)."""
        if self.settings.log_level != "debug":
            for name in ("faust", "mode", "aiokafka"):
                logging.getLogger(name).setLevel(logging.WARNING)
        metrics.serve_metrics(self.settings, NAME)
        worker = faust.Worker(
            self.app(), loglevel=self.settings.log_level.upper(), override_logging=False,
            quiet=True,
        )  # fmt: skip
        worker.execute_from_commandline()


def _count(event: Event) -> None:
    """The usage's tokens and dollars in the process's metrics."""
    p = event.payload
    if not isinstance(p, UsageRecorded):
        return
    metrics.record_tokens(p.model, "input", p.input_tokens)
    metrics.record_tokens(p.model, "output", p.output_tokens)
    metrics.record_tokens(p.model, "cached", p.cached_tokens)
    metrics.record_tokens(p.model, "reasoning", p.reasoning_tokens)
    if p.cost_usd is not None:
        metrics.record_cost(p.model, p.cost_usd)


def worker(settings: Settings) -> CostGuard:
    """The CostGuard as ``wrenchai worker cost-guard`` runs it."""
    return CostGuard(settings)


__all__ = ["ACTOR", "CostGuard", "unpriced", "verdicts", "worker"]
