"""The event envelope: one immutable record of one fact, with a typed payload."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    field_validator,
    model_validator,
)

SENSITIVE_KEY = "x-sensitive"


def sensitive(default: Any = ..., **kwargs: Any) -> Any:
    """A payload field holding user content: the codec encrypts it before it reaches the broker."""
    return Field(default, json_schema_extra={SENSITIVE_KEY: True}, **kwargs)


class Actor(BaseModel):
    """Who caused an event: a user, an agent or the system itself."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["user", "agent", "system"]
    id: str = Field(min_length=1, max_length=200)


SYSTEM = Actor(kind="system", id="wrenchai")


class EventPayload(BaseModel):
    """Base of every payload model. Subclasses are registered with :func:`events.event`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]
    schema_version: ClassVar[int]

    @classmethod
    def sensitive_fields(cls) -> tuple[str, ...]:
        """Names of the top-level fields the codec encrypts."""
        # Asked for every event encoded, decoded or prepared: worked out once per class.
        found = cls.__dict__.get("_sensitive_fields")
        if found is None:
            found = tuple(
                name
                for name, info in cls.model_fields.items()
                if isinstance(info.json_schema_extra, dict)
                and info.json_schema_extra.get(SENSITIVE_KEY)
            )
            type.__setattr__(cls, "_sensitive_fields", found)
        return found


class Event(BaseModel):
    """An immutable fact on the log. ``task_id`` is the Kafka key: a task's events are ordered."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: uuid.UUID
    type: str
    schema_version: int = Field(ge=1)
    task_id: uuid.UUID | None
    tenant_id: str = Field(min_length=1, max_length=200)
    actor: Actor
    occurred_at: AwareDatetime
    correlation_id: uuid.UUID | None = None
    causation_id: uuid.UUID | None = None
    payload: SerializeAsAny[EventPayload]

    @field_validator("occurred_at")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        # One instant must have one byte form in canonical JSON, whatever offset it came with.
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _payload_matches_type(self) -> Event:
        kind = type(self.payload)
        if (kind.event_type, kind.schema_version) != (self.type, self.schema_version):
            raise ValueError(
                f"payload {kind.__name__} is {kind.event_type} v{kind.schema_version}, "
                f"but the envelope says {self.type} v{self.schema_version}"
            )
        return self

    @classmethod
    def new(
        cls,
        payload: EventPayload,
        *,
        tenant_id: str,
        actor: Actor,
        task_id: uuid.UUID | None = None,
        correlation_id: uuid.UUID | None = None,
        causation_id: uuid.UUID | None = None,
        event_id: uuid.UUID | None = None,
        occurred_at: datetime | None = None,
    ) -> Event:
        """A fresh event: a random id unless one is given, and the current UTC time."""
        return cls(
            id=event_id or uuid.uuid4(),
            type=payload.event_type,
            schema_version=payload.schema_version,
            task_id=task_id,
            tenant_id=tenant_id,
            actor=actor,
            occurred_at=occurred_at or datetime.now(UTC),
            correlation_id=correlation_id,
            causation_id=causation_id,
            payload=payload,
        )

    def derive(
        self, payload: EventPayload, *, step: str, actor: Actor, occurred_at: datetime | None = None
    ) -> Event:
        """An event caused by this one, with a deterministic id (uuid5 of this id and ``step``).

        Re-processing the same cause after a crash derives the same ids, so every consumer can
        drop the repeats.
        """
        return Event.new(
            payload,
            tenant_id=self.tenant_id,
            actor=actor,
            task_id=self.task_id,
            correlation_id=self.correlation_id or self.id,
            causation_id=self.id,
            event_id=derive_id(self.id, step),
            occurred_at=occurred_at,
        )

    @property
    def key(self) -> bytes:
        """The Kafka key: the task id, or the tenant for events outside any task."""
        return str(self.task_id if self.task_id is not None else self.tenant_id).encode()


def derive_id(cause: uuid.UUID, step: str) -> uuid.UUID:
    """The deterministic id of the event that ``step`` derives from the event ``cause``."""
    return uuid.uuid5(cause, step)


@dataclass(frozen=True, order=True)
class Position:
    """Where a record sits in a topic: partition and offset, written ``PARTITION:OFFSET``."""

    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.partition}:{self.offset}"

    @classmethod
    def parse(cls, text: str) -> Position:
        """Read ``PARTITION:OFFSET``; a ValueError says what was wrong."""
        partition, sep, offset = text.partition(":")
        if not sep or not partition.isdigit() or not offset.isdigit():
            raise ValueError(f"a position is PARTITION:OFFSET with two whole numbers, not {text!r}")
        return cls(int(partition), int(offset))
