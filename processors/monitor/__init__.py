"""The ResourceMonitor: platform alerts (CONSUMER_LAG, MEMORY_HIGH, ERROR_RATE, DLQ_GROWTH)
raised and cleared on the WRENCH_MONITOR_* thresholds, through the same alert events, read
model and handlers as a task's alerts. A pure core (:mod:`.core`), the figures it reads
(:mod:`.readings`) and the loop that runs in the projector process (:mod:`.loop`).
"""

from processors.monitor.core import (
    MONITOR_CODES,
    Limit,
    MonitorState,
    Reading,
    Window,
    alert_events,
    alert_id,
    decide,
    limits_from_settings,
)
from processors.monitor.loop import ResourceMonitor

__all__ = [
    "MONITOR_CODES",
    "Limit",
    "MonitorState",
    "Reading",
    "ResourceMonitor",
    "Window",
    "alert_events",
    "alert_id",
    "decide",
    "limits_from_settings",
]
