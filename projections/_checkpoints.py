"""Signed checkpoints of the archive's chain heads (docs/audit.md, "Tamper evidence").

Anyone who can write to the database can rewrite a record and recompute the chain after it,
or cut the tail, and the chain alone still verifies. So the projector signs each partition's
chain head every ``checkpoint_every_records`` records or ``checkpoint_interval_s`` seconds
(only heads that moved), keeps the signatures in ``chain_checkpoints`` and publishes them as
one chain.checkpoint on wrench.admin, whence they can be kept outside the database. A
rewritten or shortened archive no longer matches a head signed before the attack.

Checkpoint events are records on wrench.admin too: a head that moved only by checkpoint
records is not signed again, or the checkpoints would feed themselves forever.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import structlog
from pydantic import ValidationError

from events import (
    SYSTEM,
    SYSTEM_TENANT,
    BrokerUnavailable,
    ChainCheckpoint,
    Event,
    EventProducer,
    SignedHead,
)
from projections._db import connect
from projections._signing import Signer, sign_head, signer_from_settings
from projections._streams import STREAMS
from wrenchai.errors import WrenchError
from wrenchai.settings import Settings

log = structlog.get_logger(__name__)

CHECKPOINT_TYPE = "chain.checkpoint"
# One checkpointer signs at a time, whatever the number of projector processes.
CHECKPOINT_LOCK = 0x5752454E43480008

_MOVED_HEADS = """
WITH heads AS (
    SELECT o.topic, o.partition, o.next_offset - 1 AS head
    FROM consumer_offsets o
    JOIN unnest($1::text[], $2::text[]) AS s (group_id, topic)
      ON s.group_id = o.group_id AND s.topic = o.topic
    WHERE o.next_offset > 0
)
SELECT h.topic, h.partition, e."offset", e.hash, e.chain_version
FROM heads h
JOIN event_log e ON e.topic = h.topic AND e.partition = h.partition AND e."offset" = h.head
LEFT JOIN LATERAL (
    SELECT c."offset" FROM chain_checkpoints c
    WHERE c.topic = h.topic AND c.partition = h.partition
    ORDER BY c."offset" DESC LIMIT 1
) last ON true
WHERE EXISTS (
    SELECT 1 FROM event_log m
    WHERE m.topic = h.topic AND m.partition = h.partition
      AND m."offset" > coalesce(last."offset", -1) AND m."offset" <= h.head
      AND m.type IS DISTINCT FROM 'chain.checkpoint'
)
ORDER BY h.topic, h.partition
"""


# The heads of a chain.checkpoint's payload; none when an edited payload holds no list.
_HEADS = (
    "CASE WHEN jsonb_typeof(payload -> 'heads') = 'array' THEN payload -> 'heads' "
    "ELSE '[]'::jsonb END"
)


def head_from_row(row: asyncpg.Record) -> SignedHead:
    """A chain_checkpoints row as the signed head it stores."""
    return SignedHead(
        topic=row["topic"],
        partition=row["partition"],
        offset=row["offset"],
        hash=bytes(row["hash"]).hex(),
        chain_version=row["chain_version"],
        signed_at=row["signed_at"],
        algorithm=row["algorithm"],
        key_id=row["key_id"],
        signature=base64.b64encode(bytes(row["signature"])).decode(),
    )


async def store_heads(
    conn: asyncpg.Connection, heads: Iterable[SignedHead], event_id: uuid.UUID | None
) -> None:
    """Insert signed heads into chain_checkpoints (a head already there is left as it is)."""
    await conn.executemany(
        """INSERT INTO chain_checkpoints (topic, partition, "offset", hash, chain_version,
               signed_at, algorithm, key_id, signature, event_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING""",
        [
            (
                h.topic,
                h.partition,
                h.offset,
                bytes.fromhex(h.hash),
                h.chain_version,
                h.signed_at,
                h.algorithm,
                h.key_id,
                base64.b64decode(h.signature),
                event_id,
            )
            for h in heads
        ],
    )


async def stored_checkpoints(
    conn: asyncpg.Connection, topic: str | None = None, partition: int | None = None
) -> list[SignedHead]:
    """The signed heads in chain_checkpoints (of one partition, when given), by topic,
    partition and offset."""
    rows = await conn.fetch(
        """SELECT * FROM chain_checkpoints
           WHERE ($1::text IS NULL OR topic = $1) AND ($2::int IS NULL OR partition = $2)
           ORDER BY topic, partition, "offset", signed_at""",
        topic,
        partition,
    )
    return [head_from_row(r) for r in rows]


async def archived_checkpoints(
    conn: asyncpg.Connection, topic: str | None = None, partition: int | None = None
) -> list[SignedHead]:
    """The signed heads (of one partition, when given) in the chain.checkpoint events the
    archive holds (wrench.admin is archived like wrench.events): a second copy, which an
    attacker has to rewrite too."""
    rows = await conn.fetch(
        f"""SELECT head FROM event_log, jsonb_array_elements({_HEADS}) AS head
           WHERE type = $1 AND status = 'applied'
             AND ($2::text IS NULL OR head ->> 'topic' = $2)
             AND ($3::int IS NULL OR head ->> 'partition' = $3::int::text)""",
        CHECKPOINT_TYPE,
        topic,
        partition,
    )
    heads: list[SignedHead] = []
    for row in rows:
        try:
            heads.append(SignedHead.model_validate(row["head"]))
        except ValidationError:
            continue  # the archive's own check reports a payload that disagrees with its record
    return heads


async def checkpointed_partitions(conn: asyncpg.Connection) -> set[tuple[str, int]]:
    """Every (topic, partition) some stored or archived checkpoint signs a head of."""
    rows = await conn.fetch(
        f"""SELECT DISTINCT topic, partition FROM chain_checkpoints
           UNION
           SELECT DISTINCT head ->> 'topic', (head ->> 'partition')::int
           FROM event_log, jsonb_array_elements({_HEADS}) AS head
           WHERE type = $1 AND status = 'applied'
             AND head ->> 'partition' ~ '^[0-9]{1, 9}$'""",
        CHECKPOINT_TYPE,
    )
    return {(r["topic"], r["partition"]) for r in rows}


def checkpoints_from_lines(lines: Iterable[str]) -> list[SignedHead]:
    """Signed heads from a file an auditor kept: JSON lines, each a checkpoint line of an
    export or of ``wrenchai audit checkpoints`` (``"kind": "checkpoint"``), or a
    chain.checkpoint event as JSON. Other lines are skipped; a malformed checkpoint is a
    ValueError naming its line."""
    heads: list[SignedHead] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"line {number} is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            continue
        try:
            if data.get("kind") == "checkpoint":
                heads.append(SignedHead.model_validate(_head_fields(data)))
            elif data.get("type") == CHECKPOINT_TYPE and isinstance(data.get("payload"), dict):
                heads += ChainCheckpoint.model_validate(data["payload"]).heads
        except ValidationError as exc:
            raise ValueError(f"line {number} is not a valid checkpoint: {exc}") from exc
    return heads


def head_line(head: SignedHead, source: str) -> dict[str, Any]:
    """One signed head as a JSON line of an export or of ``audit checkpoints``."""
    return {
        "kind": "checkpoint",
        "source": source,
        "position": f"{head.partition}:{head.offset}",
        **head.model_dump(mode="json"),
    }


def _head_fields(line: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in line.items() if k in SignedHead.model_fields}


class Checkpointer:
    """Signs the chain heads that moved, stores and publishes them; see the module's doc."""

    def __init__(self, settings: Settings, signer: Signer, producer: EventProducer) -> None:
        self.settings = settings
        self.signer = signer
        self.producer = producer
        self.pending = 0
        self._due = asyncio.Event()
        self._streams = [(s.group(settings), s.topic(settings)) for s in STREAMS]

    @classmethod
    def from_settings(cls, settings: Settings, producer: EventProducer) -> Checkpointer | None:
        """The checkpointer of these settings, or None (warned) when no key is configured."""
        signer = signer_from_settings(settings)
        if signer is None:
            log.warning(
                "no checkpoint key configured: the archive's chain heads are not signed, so "
                "a rewrite of the database goes unnoticed; set WRENCH_CHECKPOINT_SIGNING_KEY "
                "(or WRENCH_CHECKPOINT_HMAC_KEY), or their _FILE"
            )
            return None
        return cls(settings, signer, producer)

    def saw(self, records: int) -> None:
        """The projector archived ``records`` more; a checkpoint is due after enough."""
        self.pending += records
        if self.pending >= self.settings.checkpoint_every_records:
            self._due.set()

    async def checkpoint(self, conn: asyncpg.Connection) -> list[SignedHead]:
        """Sign every chain head that moved since its last checkpoint, store the signatures,
        then publish them as one chain.checkpoint. Returns what was signed (nothing when no
        head moved, or when another process is signing at this moment)."""
        self.pending = 0
        signed_at = datetime.now(UTC)
        async with conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", CHECKPOINT_LOCK):
                return []
            rows = await conn.fetch(
                _MOVED_HEADS, [g for g, _ in self._streams], [t for _, t in self._streams]
            )
            heads = [
                sign_head(
                    self.signer,
                    r["topic"],
                    r["partition"],
                    r["offset"],
                    bytes(r["hash"]),
                    r["chain_version"],
                    signed_at,
                )
                for r in rows
            ]
            if not heads:
                return []
            event = Event.new(
                ChainCheckpoint(heads=heads),
                tenant_id=SYSTEM_TENANT,
                actor=SYSTEM,
                event_id=uuid.uuid5(
                    uuid.NAMESPACE_URL, f"wrench:chain.checkpoint:{heads[0].signature}"
                ),
                occurred_at=signed_at,
            )
            await store_heads(conn, heads, event.id)
        try:
            await self.producer.publish(event)
        except BrokerUnavailable as exc:
            # The table holds them; the next checkpoint is published with its own heads.
            log.warning("chain.checkpoint not published", error=exc.message)
        log.info("chain heads signed", heads=len(heads), key_id=self.signer.key_id)
        return heads

    async def run(self, stop: asyncio.Event) -> None:
        """Sign every ``checkpoint_interval_s`` (or sooner, after enough records) until
        ``stop`` is set."""
        conn = await connect(self.settings)
        loop = asyncio.get_running_loop()
        last = loop.time()
        try:
            while not stop.is_set():
                remaining = self.settings.checkpoint_interval_s - (loop.time() - last)
                await _first_of(stop, self._due, max(remaining, 0.0))
                if stop.is_set():
                    return
                self._due.clear()
                try:
                    await self.checkpoint(conn)
                except (asyncpg.PostgresError, WrenchError) as exc:
                    log.warning("checkpoint failed; the next one tries again", error=str(exc))
                last = loop.time()
        finally:
            await conn.close()


async def _first_of(stop: asyncio.Event, due: asyncio.Event, timeout_s: float) -> None:
    """Wait until either event is set or ``timeout_s`` has passed."""
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(due.wait())]
    try:
        await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
