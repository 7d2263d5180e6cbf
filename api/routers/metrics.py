"""/metrics: the API process's Prometheus metrics, to a credential holding ``metrics:read``.

Why a scope rather than an open route or a port of its own: the API is the one WrenchAI
process that faces the network, and its metrics name event types, models and tenants'
budgets. A Prometheus server scrapes it with an API key issued with ``metrics:read`` (a
bearer token, ``authorization: credentials_file:`` in its scrape config); see
docs/operations.md, "Metrics".
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi.responses import Response

from api.deps import Principal, require
from wrenchai.metrics import CONTENT_TYPE, exposition

router = APIRouter(tags=["operations"])

EXAMPLE = """\
# HELP wrench_events_produced_total Events a process appended to the log and the broker \
acknowledged, by the processor that appended them (api, super-agent, journey-agent, \
inspector-agent, cost-guard, projector, cli) and event type.
# TYPE wrench_events_produced_total counter
wrench_events_produced_total{processor="api",type="task.submitted"} 42.0
# HELP wrench_stream_connections Streams this API process has open, by protocol \
(websocket, sse).
# TYPE wrench_stream_connections gauge
wrench_stream_connections{protocol="websocket"} 3.0
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 1.2345344e+08
"""


@router.get(
    "/metrics",
    summary="Prometheus metrics of this API process",
    response_class=Response,
    responses={
        200: {
            "description": "The Prometheus text exposition (format 0.0.4).",
            "content": {CONTENT_TYPE: {"schema": {"type": "string"}, "example": EXAMPLE}},
        }
    },
)
async def metrics(principal: Annotated[Principal, require("metrics:read")]) -> Response:
    """What this API process counts: events it produced, streams open, process CPU and
    memory. A series labelled with a tenant (a budget's spend ratio) shows only the caller's
    own tenant, unless the caller is the platform's bootstrap admin (``tenants:admin``).

    Each API process answers for itself: scrape every instance, not the load balancer."""
    tenant = None if principal.holds("tenants:admin") else principal.tenant_id
    return Response(exposition(tenant), media_type=CONTENT_TYPE)


__all__ = ["router"]
