"""The events package's error family."""

from __future__ import annotations

from wrenchai.errors import WrenchError


class EventsError(WrenchError):
    """Root of the errors raised by the log layer."""

    code = "EVENTS_ERROR"


class CatalogError(EventsError):
    """The catalog is used wrongly: a duplicate registration or a gap in an upcast chain."""

    code = "CATALOG_ERROR"


class EventDecodeError(EventsError):
    """A record cannot become an Event. ``reason`` is a stable word; the message says more."""

    code = "EVENT_DECODE_ERROR"

    def __init__(self, reason: str, message: str, **details: object) -> None:
        super().__init__(message, reason=reason, **details)
        self.reason = reason


class BrokerUnavailable(EventsError):
    """The broker did not take or give records in time; nothing was written."""

    code = "BROKER_UNAVAILABLE"


class TopicConfigError(EventsError):
    """A topic exists with settings WrenchAI cannot use (for example another partition count)."""

    code = "TOPIC_CONFIG_ERROR"
