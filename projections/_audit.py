"""``wrenchai audit verify``: recompute the archive's hash chain, hold it against the signed
checkpoints, and name the first broken link.

Each partition's chain starts at :data:`GENESIS_HASH`; every row must sit at the next offset,
carry the previous row's hash as ``prev_hash``, and hash to what its ``chain_version``'s rule
gives (projections._archive); a partition never goes back from version 2 to version 1. The
columns derived from the raw value (id, type, tenant, payload…) must still agree with it, so
editing any of them is caught too.

The chain alone cannot tell a rewrite whose author recomputed every later hash, nor a cut
tail. The signed checkpoints can: the record at each checkpointed position must still have the
signed hash, and every signed position must still be there. Checkpoints come from
``chain_checkpoints``, from the chain.checkpoint events in the archive itself, and from any
file an auditor kept (``--checkpoint``); the ones kept outside the database are what an
attacker who rewrites the database cannot reach.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg

from events import Codec, EventDecodeError, SignedHead, codec_from_settings
from projections._archive import GENESIS_HASH, headers_from_json, link_hash
from projections._checkpoints import (
    archived_checkpoints,
    checkpointed_partitions,
    stored_checkpoints,
)
from projections._db import connect
from projections._signing import Keyring, instant, keyring_from_settings
from projections._streams import STREAMS
from wrenchai.settings import Settings

_FETCH = 2_000


@dataclass(frozen=True)
class BrokenLink:
    """Where the chain breaks and why."""

    topic: str
    partition: int
    offset: int
    problem: str

    @property
    def position(self) -> str:
        """``PARTITION:OFFSET``, as the API and the export write positions."""
        return f"{self.partition}:{self.offset}"

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}] offset {self.offset}: {self.problem}"


@dataclass
class VerifyReport:
    """The outcome of a verification: how much was checked and the first broken link, if any."""

    checked: int = 0
    partitions: dict[str, int] = field(default_factory=dict)
    broken: BrokenLink | None = None
    checkpoints: int = 0
    """Signed checkpoints whose position was found with the signed hash."""
    signatures_checked: bool = False
    """Whether the checkpoints' signatures were verified (a key was at hand)."""

    @property
    def ok(self) -> bool:
        return self.broken is None

    def __str__(self) -> str:
        if self.broken is not None:
            return f"BROKEN after {self.checked} good record(s): {self.broken}"
        heads = ", ".join(f"{k} ({v} records)" for k, v in sorted(self.partitions.items()))
        text = f"OK: {self.checked} record(s) verified in {len(self.partitions)} partition(s)"
        text += f": {heads}" if heads else ""
        if self.checkpoints and self.signatures_checked:
            text += f"; {self.checkpoints} signed checkpoint(s) match"
        elif self.checkpoints:
            text += (
                f"; {self.checkpoints} checkpoint(s) match, their signatures NOT checked (no "
                "key: set WRENCH_CHECKPOINT_SIGNING_KEY or pass --public-key)"
            )
        else:
            text += "; no signed checkpoint to hold the chain against"
        return text


async def verify_chain(
    settings: Settings,
    *,
    keyring: Keyring | None = None,
    extra_checkpoints: Sequence[SignedHead] = (),
) -> VerifyReport:
    """Verify every partition of the archive against its checkpoints (those in the database
    and ``extra_checkpoints``, with ``keyring`` or the configured key); stops at the first
    broken link."""
    conn = await connect(settings)
    try:
        ends = await _projected_ends(conn, settings)
        return await verify_archive(
            conn,
            codec_from_settings(settings),
            keyring=keyring if keyring is not None else keyring_from_settings(settings),
            extra_checkpoints=extra_checkpoints,
            projected_ends=ends,
        )
    finally:
        await conn.close()


async def verify_archive(
    conn: asyncpg.Connection,
    codec: Codec,
    *,
    keyring: Keyring | None = None,
    extra_checkpoints: Sequence[SignedHead] = (),
    projected_ends: dict[tuple[str, int], int] | None = None,
) -> VerifyReport:
    """Verify the archive reachable through ``conn``. ``projected_ends`` are the next offsets
    the projector stored per (topic, partition): an archive shorter than them lost its tail."""
    report = VerifyReport(signatures_checked=bool(keyring))
    rows = await conn.fetch("SELECT DISTINCT topic, partition FROM event_log")
    ends = projected_ends or {}
    partitions = sorted(
        {(r["topic"], r["partition"]) for r in rows}
        | await checkpointed_partitions(conn)
        | {(h.topic, h.partition) for h in extra_checkpoints}
        | {key for key, end in ends.items() if end > 0}
    )
    for topic, partition in partitions:
        signed = _distinct(
            [
                *await stored_checkpoints(conn, topic, partition),
                *await archived_checkpoints(conn, topic, partition),
                *(h for h in extra_checkpoints if (h.topic, h.partition) == (topic, partition)),
            ]
        )
        broken = _forged(signed, keyring)
        count = 0
        if broken is None:
            check = _PartitionCheck(topic, partition, signed, codec)
            broken = await check.run(conn, report, ends.get((topic, partition), 0))
            count = check.count
        report.partitions[f"{topic}[{partition}]"] = count
        if broken is not None:
            report.broken = broken
            break
    return report


def _forged(heads: list[SignedHead], keyring: Keyring | None) -> BrokenLink | None:
    """The first signed head whose signature does not verify (none without keys to check)."""
    if keyring is None or not keyring:
        return None
    for head in heads:
        problem = keyring.check_head(head)
        if problem is not None:
            return BrokenLink(
                head.topic,
                head.partition,
                head.offset,
                f"the checkpoint signed at {instant(head.signed_at)}: {problem}",
            )
    return None


def _distinct(heads: list[SignedHead]) -> list[SignedHead]:
    unique = {(h.topic, h.partition, h.offset, h.signature): h for h in heads}
    return sorted(unique.values(), key=lambda h: (h.topic, h.partition, h.offset, h.signed_at))


async def _projected_ends(
    conn: asyncpg.Connection, settings: Settings
) -> dict[tuple[str, int], int]:
    """The next offset the projector stored per (topic, partition) of each stream."""
    streams = [(s.group(settings), s.topic(settings)) for s in STREAMS]
    rows = await conn.fetch(
        """SELECT o.topic, o.partition, o.next_offset FROM consumer_offsets o
           JOIN unnest($1::text[], $2::text[]) AS s (group_id, topic)
             ON s.group_id = o.group_id AND s.topic = o.topic""",
        [g for g, _ in streams],
        [t for _, t in streams],
    )
    return {(r["topic"], r["partition"]): r["next_offset"] for r in rows}


class _PartitionCheck:
    """One partition's rows in offset order, against its chain rule and its checkpoints."""

    def __init__(self, topic: str, partition: int, signed: list[SignedHead], codec: Codec) -> None:
        self.topic = topic
        self.partition = partition
        self.codec = codec
        self.signed: dict[int, list[SignedHead]] = {}
        for head in signed:
            self.signed.setdefault(head.offset, []).append(head)
        self.count = 0
        self.confirmed = -1  # the last offset a checkpoint confirmed

    def _broken(self, offset: int, problem: str) -> BrokenLink:
        return BrokenLink(self.topic, self.partition, offset, problem)

    async def run(
        self, conn: asyncpg.Connection, report: VerifyReport, projected_end: int
    ) -> BrokenLink | None:
        expected, prev, version = 0, GENESIS_HASH, 1
        async with conn.transaction(readonly=True, isolation="repeatable_read"):
            cursor = conn.cursor(
                'SELECT * FROM event_log WHERE topic = $1 AND partition = $2 ORDER BY "offset"',
                self.topic,
                self.partition,
                prefetch=_FETCH,
            )
            async for row in cursor:
                problem = _check_row(row, expected, prev, version, self.codec)
                if problem is None:
                    problem = self._against_checkpoints(row, report)
                if problem is not None:
                    return self._broken(row["offset"], problem)
                prev, expected = row["hash"], expected + 1
                version = row["chain_version"]
                self.count += 1
                report.checked += 1
        return self._tail(expected, projected_end)

    def _against_checkpoints(self, row: asyncpg.Record, report: VerifyReport) -> str | None:
        for head in self.signed.get(row["offset"], []):
            if bytes(row["hash"]).hex() != head.hash or row["chain_version"] != head.chain_version:
                since = f" (after offset {self.confirmed}, the last a checkpoint confirms)"
                return (
                    f"the record's hash differs from the checkpoint signed at "
                    f"{instant(head.signed_at)}: a record at or before this offset"
                    f"{since if self.confirmed >= 0 else ''} was rewritten and the chain "
                    "recomputed after it"
                )
            report.checkpoints += 1
            self.confirmed = row["offset"]
        return None

    def _tail(self, end: int, projected_end: int) -> BrokenLink | None:
        """Every signed offset, and every offset the projector stored, must be archived."""
        beyond = [h for offset, hs in self.signed.items() if offset >= end for h in hs]
        if beyond:
            head = max(beyond, key=lambda h: h.offset)
            return self._broken(
                end,
                f"the archive ends at offset {end - 1} but the checkpoint signed at "
                f"{instant(head.signed_at)} covers offset {head.offset}: records were "
                "removed from the end",
            )
        if projected_end > end:
            return self._broken(
                end,
                f"the archive ends at offset {end - 1} but the projector's stored offsets say "
                f"it archived up to offset {projected_end - 1}: records were removed from the end",
            )
        return None


def _check_row(
    row: asyncpg.Record, offset: int, prev: bytes, version: int, codec: Codec
) -> str | None:
    if row["offset"] != offset:
        return f"gap: expected offset {offset}, found {row['offset']}"
    if row["prev_hash"] != prev:
        return "prev_hash does not match the previous record's hash"
    if row["chain_version"] < version:
        return (
            f"chain_version goes back from {version} to {row['chain_version']}: a record "
            "archived under the newer rule was relabelled"
        )
    computed = link_hash(
        row["chain_version"],
        prev,
        row["raw_key"],
        headers_from_json(row["raw_headers"]),
        row["raw_value"],
    )
    if row["hash"] != computed:
        covered = "raw_value" if row["chain_version"] == 1 else "raw_key, raw_headers, raw_value"
        return (
            f"hash does not match chain v{row['chain_version']} of prev_hash and {covered}: "
            "the record was altered"
        )
    return _check_columns(row, codec)


def _check_columns(row: asyncpg.Record, codec: Codec) -> str | None:
    """The columns derived from raw_value must still say what raw_value says."""
    if row["status"] == "poison":
        return None
    try:
        stored = codec.parse(row["raw_value"], headers_from_json(row["raw_headers"]))
    except EventDecodeError as exc:
        return f"a {row['status']} record no longer parses: {exc.message}"
    expected: dict[str, object] = {
        "type": stored.get("type"),
        "schema_version": stored.get("schema_version"),
        "tenant_id": stored.get("tenant_id"),
        "task_id": stored.get("task_id"),
    }
    if row["status"] == "applied":
        expected.update(id=stored.get("id"), payload=stored.get("payload"))
    for column, value in expected.items():
        actual = row[column]
        if column in ("id", "task_id") and actual is not None:
            actual = str(actual)
        if actual != value:
            return f"column {column} differs from the logged record"
    return None
