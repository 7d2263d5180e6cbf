"""Traces: every task as one OpenTelemetry trace, derived from the log and exported over
OTLP/HTTP when ``WRENCH_OTLP_ENDPOINT`` is set. The mapping from events to spans is
:mod:`processors.tracing.spans`; the consumer that exports them, :mod:`processors.tracing.agent`.
"""

from processors.tracing.agent import Tracer, exporter_from_settings, otlp_headers, worker
from processors.tracing.spans import Traces, nanos, span_id, trace_id

__all__ = [
    "Tracer",
    "Traces",
    "exporter_from_settings",
    "nanos",
    "otlp_headers",
    "span_id",
    "trace_id",
    "worker",
]
