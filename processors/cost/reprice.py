"""What a stretch of history would have cost under other prices, from the log alone.

Every usage.recorded keeps its token counts by kind and the price table it was priced with,
so the same calls can be priced again under any table without calling anything: read the
log's usage events in [from, to), price each under the other table, and set the two totals
side by side per model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from aiokafka import TopicPartition

from events import (
    Event,
    EventDecodeError,
    Position,
    UsageRecorded,
    codec_from_settings,
    create_consumer,
    kafka_headers,
    log_end_offsets,
)
from processors.shared.pricing import PriceTable
from wrenchai.settings import Settings

USAGE = UsageRecorded.event_type.encode()


@dataclass
class Repriced:
    """One model's calls priced as recorded and under the other table. Calls without a
    price under a table are counted apart; their dollars are in neither total."""

    model: str
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    recorded_usd: float = 0.0
    repriced_usd: float = 0.0
    unpriced_recorded: int = 0
    unpriced_repriced: int = 0
    price_versions: set[str] = field(default_factory=set)

    @property
    def difference_usd(self) -> float:
        return round(self.repriced_usd - self.recorded_usd, 8)


def reprice(usages: Iterable[Event], table: PriceTable) -> list[Repriced]:
    """Per model, costliest under ``table`` first."""
    found: dict[str, Repriced] = {}
    for event in usages:
        p = event.payload
        if not isinstance(p, UsageRecorded):
            continue
        row = found.setdefault(p.model, Repriced(p.model))
        row.calls += 1
        row.input_tokens += p.input_tokens
        row.output_tokens += p.output_tokens
        row.cached_tokens += p.cached_tokens
        row.reasoning_tokens += p.reasoning_tokens
        if p.price_version:
            row.price_versions.add(p.price_version)
        if p.cost_usd is None:
            row.unpriced_recorded += 1
        else:
            row.recorded_usd = round(row.recorded_usd + p.cost_usd, 8)
        again = table.cost(
            p.model, p.input_tokens, p.output_tokens, p.cached_tokens, p.reasoning_tokens
        )
        if again is None:
            row.unpriced_repriced += 1
        else:
            row.repriced_usd = round(row.repriced_usd + again, 8)
    return sorted(found.values(), key=lambda r: (-r.repriced_usd, r.model))


async def usage_from_log(
    settings: Settings,
    start: datetime | None = None,
    end: datetime | None = None,
    tenant_id: str | None = None,
) -> AsyncIterator[Event]:
    """Every usage.recorded on wrench.events (up to its end when called) that occurred in
    [start, end), of ``tenant_id`` when given. Records that cannot be decoded are skipped:
    they are on wrench.dlq."""
    async for event, _ in logged_usage(settings, start, end, tenant_id):
        yield event


async def logged_usage(
    settings: Settings,
    start: datetime | None = None,
    end: datetime | None = None,
    tenant_id: str | None = None,
) -> AsyncIterator[tuple[Event, Position]]:
    """:func:`usage_from_log`, each event with its position on the log."""
    topic = settings.topic("events")
    ends = await log_end_offsets(settings, topic)
    codec = codec_from_settings(settings)
    consumer = create_consumer(settings)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p, end_offset in ends.items() if end_offset > 0]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        left = {tp: ends[tp.partition] for tp in tps}
        while left:
            batch = await consumer.getmany(*left, timeout_ms=500, max_records=2000)
            # Usage carries no encrypted field today; a tenant's keys load only if one does.
            await codec.prepare_records(r.value for rs in batch.values() for r in rs)
            for tp, records in batch.items():
                for record in records:
                    if record.offset >= left.get(tp, -1):
                        continue
                    if dict(record.headers).get("type") != USAGE:
                        continue
                    try:
                        event = codec.decode(record.value, kafka_headers(record.headers))
                    except EventDecodeError:
                        continue
                    if tenant_id is not None and event.tenant_id != tenant_id:
                        continue
                    if start is not None and event.occurred_at < start:
                        continue
                    if end is not None and event.occurred_at >= end:
                        continue
                    yield event, Position(record.partition, record.offset)
                if records and records[-1].offset >= left[tp] - 1:
                    del left[tp]
    finally:
        await consumer.stop()
