"""The audit trail's listing: a tenant's events from the archive, oldest first, a page at a
time.

Both logs are archived in ``event_log`` (wrench.events and wrench.admin); a page reads the
raw bytes that were logged and decodes them as a task's history is decoded (decrypted and
upcast). The order is total and stable, ``(occurred_at, topic, partition, offset)``, and a
page starts after the previous page's last key (keyset pagination): records archived
between two pages neither repeat one nor hide one that was already listed.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, get_args

import asyncpg
import orjson

from api.audit_models import AuditEvent
from events import Actor, Codec, Position
from projections import headers_from_json

_NOT_OURS = "not a cursor from this API; pass next_cursor back as is"
ACTOR_KINDS: tuple[str, ...] = get_args(Actor.model_fields["kind"].annotation)


@dataclass(frozen=True)
class EventCursor:
    """Where a page of events ended: its last record's key in the listing's order."""

    occurred_at: datetime
    topic: str
    partition: int
    offset: int

    def encode(self) -> str:
        """The opaque form handed to clients: base64url of a small JSON array."""
        raw = orjson.dumps([self.occurred_at.isoformat(), self.topic, self.partition, self.offset])
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> EventCursor:
        """Read a cursor this API issued; ValueError for anything else."""
        try:
            raw = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
            at, topic, partition, offset = raw
            if not isinstance(topic, str) or type(partition) is not int or type(offset) is not int:
                raise ValueError(raw)
            cursor = cls(datetime.fromisoformat(at), topic, partition, offset)
        except (binascii.Error, orjson.JSONDecodeError, TypeError, ValueError) as exc:
            raise ValueError(_NOT_OURS) from exc
        if (
            cursor.occurred_at.tzinfo is None
            or not 0 <= partition < 2**31
            or not 0 <= offset < 2**63
        ):
            raise ValueError(_NOT_OURS)
        return cursor


@dataclass(frozen=True)
class ActorFilter:
    """Who caused the events: ``KIND`` or ``KIND:ID``, as the envelope's actor says
    (``user:<user id>``, ``user:apikey:<key id>`` for a key no user owns,
    ``agent:journey-agent``, ``system:api``)."""

    kind: str
    id: str | None = None

    @classmethod
    def parse(cls, text: str) -> ActorFilter:
        """Read ``KIND[:ID]``; ValueError says what was wrong."""
        kind, sep, actor_id = text.partition(":")
        # Postgres text holds no NUL, and no actor id has a control character.
        printable = all(ch >= " " for ch in actor_id)
        if kind not in ACTOR_KINDS or (sep and not actor_id) or not printable:
            raise ValueError(
                f"actor is KIND or KIND:ID with KIND one of {', '.join(ACTOR_KINDS)} "
                f"(e.g. agent:journey-agent or user:<user id>), not {text!r}"
            )
        return cls(kind, actor_id or None)


@dataclass(frozen=True)
class EventFilters:
    """What a listing keeps; None (or empty) is no filter. ``start`` is inclusive and
    ``end`` exclusive."""

    start: datetime | None = None
    end: datetime | None = None
    types: Sequence[str] = ()
    actor: ActorFilter | None = None
    task_id: uuid.UUID | None = None


# The actor is in the logged envelope, never encrypted: read from the bytes as JSON.
_ACTOR = "(convert_from(raw_value, 'UTF8')::jsonb -> 'actor')"


async def list_events(
    conn: asyncpg.Connection,
    codec: Codec,
    *,
    tenant_id: str,
    topics: Sequence[str],
    filters: EventFilters,
    limit: int,
    after: EventCursor | None,
) -> tuple[list[AuditEvent], EventCursor | None]:
    """One page of the tenant's events, oldest first, and the cursor of the next page
    (None on the last one)."""
    args: list[Any] = [tenant_id, list(topics)]
    conditions = ["tenant_id = $1", "topic = ANY($2::text[])", "status = 'applied'"]

    def where(template: str, *values: Any) -> None:
        places = []
        for value in values:
            args.append(value)
            places.append(f"${len(args)}")
        conditions.append(template.format(*places))

    if filters.start is not None:
        where("occurred_at >= {}", filters.start)
    if filters.end is not None:
        where("occurred_at < {}", filters.end)
    if filters.types:
        where("type = ANY({}::text[])", list(filters.types))
    if filters.task_id is not None:
        where("task_id = {}", filters.task_id)
    if filters.actor is not None:
        where(f"{_ACTOR} ->> 'kind' = {{}}", filters.actor.kind)
        if filters.actor.id is not None:
            where(f"{_ACTOR} ->> 'id' = {{}}", filters.actor.id)
    if after is not None:
        where(
            '(occurred_at, topic, partition, "offset") > ({}, {}, {}, {})',
            after.occurred_at,
            after.topic,
            after.partition,
            after.offset,
        )
    args.append(limit + 1)  # one more than asked tells whether a next page exists
    rows = await conn.fetch(
        f"""SELECT topic, partition, "offset", occurred_at, raw_value, raw_headers
            FROM event_log WHERE {" AND ".join(conditions)}
            ORDER BY occurred_at, topic, partition, "offset" LIMIT ${len(args)}""",
        *args,
    )
    page, more = rows[:limit], len(rows) > limit
    events = await decode_events(codec, page)
    last = page[-1] if page else None
    next_cursor = (
        EventCursor(last["occurred_at"], last["topic"], last["partition"], last["offset"])
        if more and last is not None
        else None
    )
    return events, next_cursor


async def decode_events(codec: Codec, rows: Sequence[asyncpg.Record]) -> list[AuditEvent]:
    """Each archived record's event as it is read today: decrypted and upcast from the bytes
    that were logged (the ``payload`` column holds ciphertext and the first version)."""
    await codec.prepare_records(row["raw_value"] for row in rows)
    events = []
    for row in rows:
        event = codec.decode(row["raw_value"], headers_from_json(list(row["raw_headers"])))
        events.append(
            AuditEvent.model_validate(
                {
                    **event.model_dump(mode="json"),
                    "position": str(Position(row["partition"], row["offset"])),
                    "topic": row["topic"],
                }
            )
        )
    return events
