"""OpenTelemetry spans from WrenchAI's ids and times: the trace and span ids a task's spans
get, nanosecond times, and the one way a span is made (with what every span carries)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event as SpanEvent
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from events import Event

SCOPE = InstrumentationScope("wrenchai.tracing", "1")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
Attrs = dict[str, Any]


def trace_id(task_id: uuid.UUID) -> int:
    """The trace of a task: its id's 128 bits."""
    return task_id.int


def span_id(task_id: uuid.UUID, *key: object) -> int:
    """The 64-bit id of the span at ``key`` in the task's trace (never 0, which OTLP
    reserves)."""
    digest = hashlib.sha256(task_id.bytes + "/".join(map(str, key)).encode()).digest()
    return int.from_bytes(digest[:8], "big") or 1


def nanos(at: datetime) -> int:
    """``at`` as nanoseconds since the epoch, exact to the microsecond it carries."""
    return (at - _EPOCH) // timedelta(microseconds=1) * 1_000


@dataclass(frozen=True)
class Spans:
    """Makes the spans of one event's task, all under one resource."""

    resource: Resource
    event: Event

    def span(
        self,
        name: str,
        key: Sequence[str],
        parent: Sequence[str] | int | None,
        start: datetime,
        end: datetime,
        attributes: Attrs,
        *,
        error: str | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        events: Sequence[SpanEvent] = (),
    ) -> ReadableSpan:
        task_id = self.event.task_id
        assert task_id is not None
        trace = trace_id(task_id)

        def context(at: Sequence[str] | int) -> SpanContext:
            span = at if isinstance(at, int) else span_id(task_id, *at)
            return SpanContext(trace, span, is_remote=False, trace_flags=_SAMPLED)

        common = {
            "wrench.task_id": str(task_id),
            "wrench.tenant_id": self.event.tenant_id,
            "wrench.agent": self.event.actor.id,
            "wrench.event_id": str(self.event.id),
        }
        if self.event.causation_id is not None:
            common["wrench.causation_id"] = str(self.event.causation_id)
        # ReadableSpan made here rather than through a Tracer: the SDK's tracer picks its
        # own ids and times, and these spans must carry the log's.
        return ReadableSpan(
            name=name,
            context=context(key),
            parent=context(parent) if parent is not None else None,
            resource=self.resource,
            attributes={**common, **clean(attributes)},
            events=tuple(events),
            kind=kind,
            status=Status(StatusCode.ERROR, error) if error else Status(StatusCode.UNSET),
            start_time=nanos(start),
            end_time=nanos(max(start, end)),
            instrumentation_scope=SCOPE,
        )

    def note(self, name: str, attributes: Attrs) -> SpanEvent:
        """A span event at this event's time."""
        return SpanEvent(name, clean(attributes), nanos(self.event.occurred_at))


def clean(attributes: Mapping[str, Any]) -> Attrs:
    """Attributes OTLP can carry: no nulls, lists of one type as tuples."""
    out: Attrs = {}
    for name, value in attributes.items():
        if value is None:
            continue
        out[name] = tuple(value) if isinstance(value, list) else value
    return out


def since(event: Event, duration_s: float) -> datetime:
    return event.occurred_at - timedelta(seconds=duration_s)


__all__ = ["SCOPE", "Attrs", "Spans", "clean", "nanos", "since", "span_id", "trace_id"]
